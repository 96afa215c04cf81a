"""diff(): converges in one pass, is idempotent, repairs drift, removes only what it owns."""

from __future__ import annotations

from dataclasses import replace
from types import MappingProxyType

import pytest

from ravend.l3 import ops as o
from ravend.l3.diff import diff
from ravend.l3.memkernel import MemoryKernel
from ravend.l3.plan import LocalFacts, plan
from ravend.l3.settings import L3Settings
from ravend.l3.state import EMPTY, L3State, Route, WgPeerState
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
