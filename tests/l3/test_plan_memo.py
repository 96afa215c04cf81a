"""Incremental planning: over any sequence of cluster changes, a plan reusing the previous
plan's parts (`Memo`) equals the plan computed from scratch, for every node of the cluster."""

from __future__ import annotations

from dataclasses import replace
from types import MappingProxyType

from hypothesis import given, settings
from hypothesis import strategies as st

from ravend.l3.plan import LocalFacts, PlanCache, plan
from ravend.l3.plancache import Memo
from ravend.l3.probe import probe_targets
from ravend.l3.settings import L3Settings
from ravend.l3.targets import gateway_nodes, targets
from ravend.model import (
    GATEWAY_LABEL,
    ClusterView,
    Endpoint,
    EndpointType,
    Gateway,
    GatewaySpec,
    GatewayStatus,
    Node,
    ObjectMeta,
    RavenConfig,
)

POOLS, NODES = 4, 3
S = L3Settings(state_dir="/tmp/x")


def _ep(g: int, k: int, nat: bool, keyed: bool) -> Endpoint:
    cfg = MappingProxyType({"publicKey": f"key-{g}-{k}"} if keyed else {})
    public = "" if nat else f"198.51.100.{g * 10 + k}"
    return Endpoint(f"n{g}{k}", EndpointType.TUNNEL, 4500, nat, public, config=cfg)


def initial() -> ClusterView:
    gws, nodes = {}, {}
    for g in range(POOLS):
        cands = tuple(_ep(g, k, g != 0, True) for k in range(2))
        gws[f"gw{g}"] = Gateway(
            ObjectMeta(f"gw{g}"),
            GatewaySpec(endpoints=cands),
            GatewayStatus(active_endpoints=(cands[0],)),
        )
        for k in range(NODES):
            nodes[f"n{g}{k}"] = Node(
                ObjectMeta(f"n{g}{k}", labels=MappingProxyType({GATEWAY_LABEL: f"gw{g}"})),
                internal_ips=(f"172.16.{g}.{k + 1}",),
                pod_cidrs=(f"10.{g}.{k}.0/24",),
                ready=True,
            )
    cfg = RavenConfig(True, True, True)
    return ClusterView(MappingProxyType(gws), MappingProxyType(nodes), cfg, synced=True)


def _with_gw(v: ClusterView, name: str, gw: Gateway | None) -> ClusterView:
    gws = dict(v.gateways)
    if gw is None:
        gws.pop(name, None)
    else:
        gws[name] = gw
    return replace(v, gateways=MappingProxyType(gws), revision=v.revision + 1)


def _with_node(v: ClusterView, node: Node) -> ClusterView:
    nodes = {**v.nodes, node.name: node}
    return replace(v, nodes=MappingProxyType(nodes), revision=v.revision + 1)


def mutate(v: ClusterView, kind: str, g: int, k: int, x: int) -> ClusterView:
    """One cluster change; every other object stays the very same (as the informers do)."""
    name, node = f"gw{g}", f"n{g}{k}"
    gw = v.gateways.get(name)
    if kind == "switch" and gw is not None:
        ep = next((e for e in gw.spec.endpoints if e.node_name == f"n{g}{k % 2}"), None)
        return _with_gw(
            v, name, replace(gw, status=GatewayStatus(active_endpoints=(ep,) if ep else ()))
        )
    if kind == "nat" and gw is not None:
        eps = tuple(replace(e, under_nat=not e.under_nat) for e in gw.spec.endpoints)
        active = tuple(
            e for e in eps if e.node_name in {a.node_name for a in gw.status.active_endpoints}
        )
        return _with_gw(
            v,
            name,
            replace(
                gw,
                spec=replace(gw.spec, endpoints=eps),
                status=GatewayStatus(active_endpoints=active),
            ),
        )
    if kind == "key" and gw is not None:
        eps = tuple(
            _ep(g, i, e.under_nat, bool(x % 2)) if i == k % 2 else e
            for i, e in enumerate(gw.spec.endpoints)
        )
        act = tuple(
            eps[int(a.node_name[-1])]
            for a in gw.status.active_endpoints
            if int(a.node_name[-1]) < len(eps)
        )
        return _with_gw(
            v,
            name,
            replace(
                gw, spec=replace(gw.spec, endpoints=eps), status=GatewayStatus(active_endpoints=act)
            ),
        )
    if kind == "public" and gw is not None:
        # Listeners without a public IP are dialled at their Node's External/InternalIP.
        flip = {
            e.node_name: replace(e, public_ip="" if e.public_ip else f"198.51.100.{x}")
            for e in gw.spec.endpoints
        }
        act = tuple(flip.get(a.node_name, a) for a in gw.status.active_endpoints)
        return _with_gw(
            v,
            name,
            replace(
                gw,
                spec=replace(gw.spec, endpoints=tuple(flip.values())),
                status=GatewayStatus(active_endpoints=act),
            ),
        )
    if kind == "drop":
        return _with_gw(v, name, None)
    if kind == "restore":
        return _with_gw(v, name, initial().gateways[name])
    if kind == "cidr" and node in v.nodes:
        # Overlapping and IPv6 ranges too: claims and overlap reports must follow.
        # Some cover tunnel endpoint addresses (public, external and internal IPs).
        cidr = (
            f"10.{x % POOLS}.0.0/16",
            f"10.{g}.{k}.0/24",
            f"fd00:{g}:{x}::/64",
            "198.51.100.0/24",
            f"172.16.{x % POOLS}.0/24",
            "203.0.113.0/24",
        )[x % 6]
        return _with_node(v, replace(v.nodes[node], pod_cidrs=(cidr,)))
    if kind == "move" and node in v.nodes:
        labels = MappingProxyType({GATEWAY_LABEL: f"gw{x % POOLS}"})
        n = v.nodes[node]
        return _with_node(v, replace(n, meta=replace(n.meta, labels=labels)))
    if kind == "ip" and node in v.nodes:
        return _with_node(v, replace(v.nodes[node], external_ips=(f"203.0.113.{x}",)))
    return v


CHANGE = st.tuples(
    st.sampled_from(["switch", "nat", "key", "public", "drop", "restore", "cidr", "move", "ip"]),
    st.integers(0, POOLS - 1),
    st.integers(0, NODES - 1),
    st.integers(0, 50),
)


@settings(max_examples=120, deadline=None)
@given(st.lists(CHANGE, min_size=1, max_size=12), st.booleans())
def test_memoised_plans_equal_fresh_plans(
    changes: list[tuple[str, int, int, int]], fwd: bool
) -> None:
    _check(changes, replace(S, forward_node_ip=fwd))


Changes = list[tuple[str, int, int, int]]
SCENARIOS: list[Changes] = [
    [("key", 1, 0, 0)],  # the active endpoint's key is withdrawn: the pool is unreachable
    [("nat", 0, 0, 0), ("key", 0, 0, 0)],  # so is the only listener: no hub any more
    [("cidr", 1, 1, 3), ("public", 0, 0, 7)],  # a listener's new address leaves a claim
    [("cidr", 1, 1, 4), ("public", 0, 0, 7)],  # ... or lands on one (InternalIP)
    [("public", 0, 0, 7), ("cidr", 1, 1, 5), ("ip", 0, 1, 9)],  # standby's ExternalIP
    [("public", 0, 0, 7), ("move", 0, 0, 1), ("cidr", 1, 1, 5), ("ip", 0, 0, 9)],  # non-member
    [("move", 0, 2, 1), ("switch", 0, 1, 0)],  # the hub's members and elected node change
]


def _check(changes: Changes, s: L3Settings = S) -> None:
    views = [initial()]
    for change in changes:
        views.append(mutate(views[-1], *change))
    for g in range(POOLS):
        for k in range(NODES):
            me = f"n{g}{k}"
            # Our own key published for node 1 of each pool: standbys warm up too.
            facts = LocalFacts(f"key-{g}-{k}", 1500, f"172.16.{g}.{k + 1}")
            memo = Memo()
            for v in views:
                fresh = plan(v, me, s, facts)
                assert plan(v, me, s, facts, memo) == fresh, (me, changes)
                # Probe targets per peer from the memo equal the plain computation.
                want = probe_targets(fresh, gateway_nodes(v, s, Memo()))
                assert targets(fresh, gateway_nodes(v, s, memo), memo) == want, (me, changes)


def test_each_input_of_each_memoised_stage_is_seen() -> None:
    for changes in SCENARIOS:
        for fwd in (False, True):
            _check(changes, replace(S, forward_node_ip=fwd))


def test_a_memo_is_never_reused_for_another_node_or_other_facts() -> None:
    v, memo = initial(), Memo()
    hub = LocalFacts("key-0-0", 1500, "172.16.0.1")
    edge = LocalFacts("key-1-0", 1500, "172.16.1.1")
    assert plan(v, "n00", S, hub, memo) == plan(v, "n00", S, hub)
    assert plan(v, "n10", S, edge, memo) == plan(v, "n10", S, edge)
    low = replace(edge, underlay_mtu=1400)
    assert plan(v, "n10", S, low, memo) == plan(v, "n10", S, low)


def test_a_switch_reuses_everything_but_the_switched_pool() -> None:
    cache, v = PlanCache(), initial()
    facts = LocalFacts("key-0-0", 1500, "172.16.0.1")
    before = cache.plan(v, "n00", S, facts)
    misses = cache.memo.misses
    switched = mutate(v, "switch", 2, 1, 0)
    after = cache.plan(switched, "n00", S, facts)
    assert after == plan(switched, "n00", S, facts) and after != before
    # Rebuilt: the new view's pool map and the switched pool in it; the other 3 pools,
    # routing, routes and nft came from the memo.
    assert cache.memo.misses - misses == 2
    assert after.routes is before.routes and after.nft is before.nft
