"""diff(): converges in one pass, is idempotent, repairs drift, removes only what it owns."""

from __future__ import annotations

import ipaddress
import itertools
from collections.abc import Mapping
from dataclasses import replace
from types import MappingProxyType

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ravend.l3 import ops as o
from ravend.l3.diff import diff
from ravend.l3.memkernel import MemoryKernel
from ravend.l3.plan import LocalFacts, plan
from ravend.l3.settings import L3Settings
from ravend.l3.state import EMPTY, L3State, Role, Route, WgPeer, WgPeerState
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

S = L3Settings()


def _view(nat_edges: int = 2, v6: bool = False) -> ClusterView:
    gws, nodes = {}, {}
    for i, name in enumerate(["cloud", *[f"edge{j}" for j in range(nat_edges)]]):
        nat = name != "cloud"
        ep = Endpoint(
            f"{name}-gw",
            EndpointType.TUNNEL,
            4500,
            under_nat=nat,
            public_ip="" if nat else "198.51.100.1",
            config=MappingProxyType({"publicKey": f"k-{name}"}),
        )
        gws[name] = Gateway(
            ObjectMeta(name), GatewaySpec(endpoints=(ep,)), GatewayStatus(active_endpoints=(ep,))
        )
        for k, role in enumerate(["gw", "w"]):
            cidrs = (f"10.{i}.{k}.0/24", f"fd00:{i}:{k}::/64") if v6 else (f"10.{i}.{k}.0/24",)
            nodes[f"{name}-{role}"] = Node(
                ObjectMeta(f"{name}-{role}", labels=MappingProxyType({GATEWAY_LABEL: name})),
                internal_ips=(f"172.20.{i}.{k + 1}",),
                pod_cidrs=cidrs,
                ready=True,
            )
    return ClusterView(
        gateways=MappingProxyType(gws),
        nodes=MappingProxyType(nodes),
        raven_cfg=RavenConfig(True, True, True),
        synced=True,
    )


def _plan(node: str, v: ClusterView | None = None) -> L3State:
    v = v or _view()
    ip = v.nodes[node].internal_ips[0]
    return plan(v, node, S, LocalFacts(f"k-{node.rsplit('-', 1)[0]}", 1500, ip))


def _converge(k: MemoryKernel, desired: L3State) -> list[o.Op]:
    first = diff(desired, k.snapshot(), S)
    k.apply(first)
    assert diff(desired, k.snapshot(), S) == [], "not idempotent after one pass"
    return first


@pytest.mark.parametrize("node", ["cloud-gw", "cloud-w", "edge0-gw", "edge1-w"])
@pytest.mark.parametrize("v6", [False, True])
def test_one_pass_converges_from_empty_and_back(node: str, v6: bool) -> None:
    desired = _plan(node, _view(v6=v6))
    k = MemoryKernel(desired.wireguard.public_key if desired.wireguard else "")
    ops = _converge(k, desired)
    assert ops, "a fresh node needs changes"
    assert set(k.snapshot().routes) == set(desired.routes)
    assert set(k.snapshot().rules) == set(desired.rules)
    _converge(k, EMPTY)
    snap = k.snapshot()
    assert (snap.links, snap.routes, snap.rules, snap.nft_digest, snap.wireguard) == (
        {},
        (),
        (),
        None,
        None,
    )


def test_route_deleted_behind_our_back_is_re_added_alone() -> None:
    desired = _plan("edge0-w")
    k = MemoryKernel()
    _converge(k, desired)
    victim = desired.routes[0]
    k.snap = replace(k.snap, routes=tuple(r for r in k.snap.routes if r != victim))
    assert diff(desired, k.snapshot(), S) == [o.AddRoute(victim)]


def test_changed_next_hop_replaces_route_and_stale_route_is_removed() -> None:
    k = MemoryKernel()
    _converge(k, _plan("edge0-w"))
    stale = Route(S.member_table, "10.99.0.0/16", S.vxlan_link, "240.0.0.9")
    k.snap = replace(k.snap, routes=(*k.snap.routes, stale))
    ops = diff(_plan("edge0-w"), k.snapshot(), S)
    assert ops == [o.DelRoute(stale)]


def test_gateway_failover_turns_member_into_gateway_without_touching_vxlan_link() -> None:
    v = _view()
    k = MemoryKernel("k-edge0")
    _converge(k, _plan("edge0-w", v))
    gw = v.gateways["edge0"]
    ep = replace(gw.status.active_endpoints[0], node_name="edge0-w")
    v2 = replace(
        v,
        gateways=MappingProxyType(
            {**v.gateways, "edge0": replace(gw, status=GatewayStatus(active_endpoints=(ep,)))}
        ),
    )
    ops = _converge(k, _plan("edge0-w", v2))
    assert o.CreateWireGuard(S.wireguard_link) in ops
    assert not any(isinstance(op, o.DeleteLink | o.CreateVxlan) for op in ops)


def test_unchanged_wireguard_is_not_rewritten_and_learnt_endpoint_kept() -> None:
    desired = _plan("cloud-gw")
    k = MemoryKernel("k-cloud")
    _converge(k, desired)
    assert k.snap.wireguard is not None
    # Edges dial in; their endpoint is learnt from the handshake and must not count as drift.
    roamed = tuple(replace(p, endpoint="192.0.2.7:61000") for p in k.snap.wireguard.peers)
    k.snap = replace(k.snap, wireguard=replace(k.snap.wireguard, peers=roamed))
    assert diff(desired, k.snapshot(), S) == []


def test_wireguard_change_touches_only_the_changed_peer() -> None:
    desired = _plan("cloud-gw")
    k = MemoryKernel("k-cloud")
    _converge(k, desired)
    assert k.snap.wireguard is not None and desired.wireguard is not None
    extra = WgPeerState("k-gone", None, ("10.200.0.0/24",), 5)
    changed = replace(k.snap.wireguard.peers[0], allowed_ips=("10.0.0.0/8",))
    peers = (changed, *k.snap.wireguard.peers[1:], extra)
    k.snap = replace(k.snap, wireguard=replace(k.snap.wireguard, peers=peers))
    ops = diff(desired, k.snapshot(), S)
    assert ops == [
        o.ConfigureWireGuard(
            S.wireguard_link, None, None, (desired.wireguard.peers[0],), ("k-gone",)
        )
    ]


def test_wrong_private_key_is_reloaded_from_the_key_file() -> None:
    desired = _plan("cloud-gw")
    k = MemoryKernel("k-cloud")
    _converge(k, desired)
    assert k.snap.wireguard is not None
    k.snap = replace(k.snap, wireguard=replace(k.snap.wireguard, public_key="other"))
    (op,) = diff(desired, k.snapshot(), S)
    assert (
        isinstance(op, o.ConfigureWireGuard)
        and op.private_key_path == "/var/lib/raven/wireguard.key"
    )
    assert op.upsert == () and op.remove == ()


def test_vxlan_with_wrong_vni_is_rebuilt_with_its_entries() -> None:
    desired = _plan("edge0-w")
    k = MemoryKernel()
    _converge(k, desired)
    k.snap = replace(
        k.snap, links=MappingProxyType({S.vxlan_link: replace(k.snap.links[S.vxlan_link], vni=7)})
    )
    ops = diff(desired, k.snapshot(), S)
    assert ops[:2] == [o.DeleteLink(S.vxlan_link), o.CreateVxlan(desired.vxlan)]  # type: ignore[arg-type]
    assert sum(isinstance(op, o.AddRoute) for op in ops) == len(desired.routes)


def test_kernel_link_local_address_is_not_removed() -> None:
    desired = _plan("edge0-w")
    k = MemoryKernel()
    _converge(k, desired)
    link = k.snap.links[S.vxlan_link]
    k.snap = replace(
        k.snap,
        links=MappingProxyType(
            {S.vxlan_link: replace(link, addresses=(*link.addresses, "fe80::1/64"))}
        ),
    )
    assert diff(desired, k.snapshot(), S) == []


def test_nft_table_is_replaced_only_when_its_content_changes() -> None:
    k = MemoryKernel()
    _converge(k, _plan("edge0-w"))
    v = _view(nat_edges=3)  # a new pool appears: remote set grows
    ops = diff(_plan("edge0-w", v), k.snapshot(), S)
    assert [type(op) for op in ops] == [o.ReplaceNft]


# ---- warm standby: a failover moves AllowedIPs and routes, never peers -----------------------


def _standby_view(active: Mapping[str, str], nat: Mapping[str, bool]) -> ClusterView:
    """Pools named in `nat`, two nodes each ("<pool>-gw", "<pool>-w"), both tunnel candidates
    with their own keys ("k-<node>"); `active[pool]` is the elected one."""
    gws, nodes = {}, {}
    for i, name in enumerate(sorted(nat)):
        pair = (f"{name}-gw", f"{name}-w")
        eps = tuple(
            Endpoint(
                n,
                EndpointType.TUNNEL,
                4500,
                under_nat=nat[name],
                public_ip="" if nat[name] else f"198.51.100.{i * 2 + k + 1}",
                config=MappingProxyType({"publicKey": f"k-{n}"}),
            )
            for k, n in enumerate(pair)
        )
        chosen = next(e for e in eps if e.node_name == active[name])
        gws[name] = Gateway(
            ObjectMeta(name), GatewaySpec(endpoints=eps), GatewayStatus(active_endpoints=(chosen,))
        )
        for k, n in enumerate(pair):
            nodes[n] = Node(
                ObjectMeta(n, labels=MappingProxyType({GATEWAY_LABEL: name})),
                internal_ips=(f"172.20.{i}.{k + 1}",),
                pod_cidrs=(f"10.{i}.{k}.0/24",),
                ready=True,
            )
    return ClusterView(
        gateways=MappingProxyType(gws),
        nodes=MappingProxyType(nodes),
        raven_cfg=RavenConfig(True, True, True),
        synced=True,
    )


def _plan_own_key(node: str, v: ClusterView) -> L3State:
    return plan(v, node, S, LocalFacts(f"k-{node}", 1500, v.nodes[node].internal_ips[0]))


NAT = {"cloud": False, "edge0": True, "edge1": True}
BEFORE = {"cloud": "cloud-gw", "edge0": "edge0-gw", "edge1": "edge1-gw"}


@pytest.mark.parametrize(("pool", "new"), [("edge0", "edge0-w"), ("cloud", "cloud-w")])
def test_promotion_moves_allowed_ips_between_existing_peers(pool: str, new: str) -> None:
    before, after = _standby_view(BEFORE, NAT), _standby_view({**BEFORE, pool: new}, NAT)
    moved: dict[str, tuple[WgPeer, ...]] = {}
    for node in sorted(before.nodes):
        k = MemoryKernel(f"k-{node}")
        _converge(k, _plan_own_key(node, before))
        ops = _converge(k, _plan_own_key(node, after))
        assert not any(isinstance(op, o.CreateWireGuard | o.DeleteWireGuard) for op in ops), node
        for op in ops:
            if isinstance(op, o.ConfigureWireGuard):
                assert (op.remove, op.private_key_path, op.listen_port) == ((), None, None), node
                moved[node] = op.upsert
    old = BEFORE[pool]
    # The promoted node already had the device it needs: only routes, rules, nft change.
    assert new not in moved and old not in moved
    peers_of = {n: {p.public_key: p.allowed_ips for p in u} for n, u in moved.items()}
    hub = "cloud-gw" if pool != "cloud" else None
    if hub:  # both hub candidates hand the edge's ranges from the old active to the standby
        assert set(moved) == {hub, "cloud-w"}, "the relayed edge's devices do not change"
        for n in moved:
            assert set(peers_of[n]) == {f"k-{old}", f"k-{new}"}
            assert peers_of[n][f"k-{old}"] == () and peers_of[n][f"k-{new}"]
    else:  # every edge node with a device (active and standby) re-points the hub's ranges
        for edge in ("edge0-gw", "edge0-w", "edge1-gw", "edge1-w"):
            assert peers_of[edge][f"k-{old}"] == () and peers_of[edge][f"k-{new}"], edge


def test_standby_member_converges_and_failover_needs_no_new_device() -> None:
    v = _standby_view(BEFORE, NAT)
    st = _plan_own_key("edge0-w", v)
    k = MemoryKernel("k-edge0-w")
    _converge(k, st)
    assert k.snap.wireguard is not None and {p.public_key for p in k.snap.wireguard.peers} == {
        "k-cloud-gw",
        "k-cloud-w",
    }
    assert not any(r.dev == S.wireguard_link for r in k.snap.routes)
    promoted = _converge(
        k, _plan_own_key("edge0-w", _standby_view({**BEFORE, "edge0": "edge0-w"}, NAT))
    )
    assert any(isinstance(op, o.AddRoute) and op.route.dev == S.wireguard_link for op in promoted)
    assert not any(isinstance(op, o.ConfigureWireGuard | o.CreateWireGuard) for op in promoted)


# ---- property: one owner per range, and failovers never add or remove peers -----------------

CIDRS = ("10.0.0.0/24", "10.0.1.0/24", "10.0.0.128/25", "10.1.0.0/16", "10.2.0.0/24", "10.3.0.0/24")


@st.composite
def topologies(draw: st.DrawFn) -> tuple[ClusterView, str, str]:
    """A random cluster with tunnel candidates, plus (pool, candidate) to promote in it."""
    gws, nodes = {}, {}
    for i in range(draw(st.integers(1, 4))):
        name, nat = f"p{i}", draw(st.booleans())
        names = [f"p{i}n{k}" for k in range(draw(st.integers(1, 3)))]
        cands = draw(st.lists(st.sampled_from(names), min_size=1, unique=True))
        eps = tuple(
            Endpoint(
                n,
                EndpointType.TUNNEL,
                4500,
                under_nat=nat,
                public_ip="" if nat or draw(st.booleans()) else f"198.51.100.{i * 4 + k}",
                config=MappingProxyType({"publicKey": f"k-{n}"}),
            )
            for k, n in enumerate(cands)
        )
        active = draw(st.sampled_from(eps))
        gws[name] = Gateway(
            ObjectMeta(name), GatewaySpec(endpoints=eps), GatewayStatus(active_endpoints=(active,))
        )
        for k, n in enumerate(names):
            nodes[n] = Node(
                ObjectMeta(n, labels=MappingProxyType({GATEWAY_LABEL: name})),
                internal_ips=(f"172.20.{i}.{k + 1}",),
                pod_cidrs=(draw(st.sampled_from(CIDRS)),),
                ready=True,
            )
    v = ClusterView(
        gateways=MappingProxyType(gws),
        nodes=MappingProxyType(nodes),
        raven_cfg=RavenConfig(True, True, True),
        synced=True,
    )
    pool = draw(st.sampled_from(sorted(gws)))
    return v, pool, draw(st.sampled_from([e.node_name for e in gws[pool].spec.endpoints]))


def _promote(v: ClusterView, pool: str, node: str) -> ClusterView:
    gw = v.gateways[pool]
    ep = next(e for e in gw.spec.endpoints if e.node_name == node)
    gw = replace(gw, status=GatewayStatus(active_endpoints=(ep,)))
    return replace(v, gateways=MappingProxyType({**v.gateways, pool: gw}))


def _check_device(st_: L3State) -> None:
    wg = st_.wireguard
    if wg is None:
        return
    keys = [p.public_key for p in wg.all_peers]
    assert len(keys) == len(set(keys))
    assert all(p.allowed_ips == () for p in wg.standby_peers)
    owned = [ipaddress.ip_network(c) for p in wg.peers for c in p.allowed_ips]
    for a, b in itertools.combinations(owned, 2):
        assert not a.overlaps(b), f"{a} and {b} routed to two peers"
    dialled = [
        ipaddress.ip_address(p.endpoint.rsplit(":", 1)[0]) for p in wg.all_peers if p.endpoint
    ]
    assert not any(ip in net for ip in dialled for net in owned), "an endpoint inside the tunnel"
    if st_.role is Role.MEMBER:
        assert all(r.dev != wg.name for r in st_.routes)


@settings(max_examples=150, deadline=None)
@given(topologies())
def test_allowed_ips_never_overlap_and_promotion_keeps_every_peer(
    case: tuple[ClusterView, str, str],
) -> None:
    before, pool, new = case
    after = _promote(before, pool, new)
    for node in sorted(before.nodes):
        a, b = _plan_own_key(node, before), _plan_own_key(node, after)
        _check_device(a)
        _check_device(b)
        wa, wb = a.wireguard, b.wireguard
        assert (wa is None) == (wb is None), node
        if wa is not None and wb is not None:
            assert {p.public_key for p in wa.all_peers} == {p.public_key for p in wb.all_peers}
            assert (wa.listen_port, wa.mtu) == (wb.listen_port, wb.mtu)
        if node == new:
            assert wa == wb, "the promoted candidate already had its gateway device"
