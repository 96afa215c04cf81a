"""Table-driven tests of the pure L3 planner over Raven's manual topology and variations."""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import replace
from types import MappingProxyType

import pytest

from ravend.l3.addressing import mac_for
from ravend.l3.plan import LocalFacts, plan
from ravend.l3.settings import L3Settings
from ravend.l3.state import L3State, Role, Route, Rule, WgPeer
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
HUB_IP = "203.0.113.10"
# name -> (gateway, internal ip, pod cidrs)
NODES: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "cloud-gw": ("gw-cloud", "192.168.0.195", ("10.244.0.0/24",)),
    "cloud-w": ("gw-cloud", "192.168.0.196", ("10.244.1.0/24",)),
    "hz-gw": ("gw-hangzhou", "172.16.2.103", ("10.244.2.0/24",)),
    "hz-w": ("gw-hangzhou", "172.16.2.104", ("10.244.3.0/24",)),
    "qd-gw": ("gw-qingdao", "172.16.1.90", ("10.244.4.0/24",)),
    "qd-w": ("gw-qingdao", "172.16.1.89", ("10.244.5.0/24",)),
}
GATEWAYS = {
    "gw-cloud": ("cloud-gw", False),
    "gw-hangzhou": ("hz-gw", True),
    "gw-qingdao": ("qd-gw", True),
}


def key_of(node: str) -> str:
    return f"key-{node}"


def tunnel_ep(node: str, nat: bool, key: str | None, public_ip: str = "") -> Endpoint:
    cfg: Mapping[str, str] = MappingProxyType({"publicKey": key} if key else {})
    return Endpoint(node, EndpointType.TUNNEL, 4500, under_nat=nat, public_ip=public_ip, config=cfg)


def view(
    nodes: Mapping[str, tuple[str, str, tuple[str, ...]]] = NODES,
    gateways: Mapping[str, tuple[str, bool]] = GATEWAYS,
    *,
    l3: bool = True,
    no_key: frozenset[str] = frozenset(),
) -> ClusterView:
    gws = {}
    for name, (gw_node, nat) in gateways.items():
        ep = tunnel_ep(gw_node, nat, None if gw_node in no_key else key_of(gw_node))
        if not nat:
            ep = replace(ep, public_ip=HUB_IP)
        gws[name] = Gateway(
            ObjectMeta(name), GatewaySpec(endpoints=(ep,)), GatewayStatus(active_endpoints=(ep,))
        )
    ns = {
        n: Node(
            ObjectMeta(n, labels=MappingProxyType({GATEWAY_LABEL: g} if g else {})),
            internal_ips=(ip,),
            pod_cidrs=cidrs,
            ready=True,
        )
        for n, (g, ip, cidrs) in nodes.items()
    }
    cfg = RavenConfig(l3_enabled=l3, l7_enabled=True, present=True)
    return ClusterView(
        gateways=MappingProxyType(gws), nodes=MappingProxyType(ns), raven_cfg=cfg, synced=True
    )


def facts(node: str, nodes: Mapping[str, tuple[str, str, tuple[str, ...]]] = NODES) -> LocalFacts:
    return LocalFacts(public_key=key_of(node), underlay_mtu=1500, node_ip=nodes[node][1])


def run(
    node: str,
    v: ClusterView | None = None,
    nodes: Mapping[str, tuple[str, str, tuple[str, ...]]] = NODES,
) -> L3State:
    return plan(v or view(nodes), node, S, facts(node, nodes))


def peers_by_gateway(state: L3State) -> dict[str, WgPeer]:
    assert state.wireguard is not None
    return {p.gateway: p for p in state.wireguard.peers}


CLOUD = ("10.244.0.0/24", "10.244.1.0/24", "192.168.0.195/32", "192.168.0.196/32")
HZ = ("10.244.2.0/24", "10.244.3.0/24", "172.16.2.103/32", "172.16.2.104/32")
QD = ("10.244.4.0/24", "10.244.5.0/24", "172.16.1.89/32", "172.16.1.90/32")


def test_hub_listens_and_gives_each_edge_only_its_own_subnets() -> None:
    st = run("cloud-gw")
    assert st.role is Role.GATEWAY and st.gateway == "gw-cloud"
    peers = peers_by_gateway(st)
    assert set(peers) == {"gw-hangzhou", "gw-qingdao"}
    assert peers["gw-hangzhou"] == WgPeer(key_of("hz-gw"), None, HZ, 5, "gw-hangzhou")
    assert peers["gw-qingdao"].allowed_ips == QD and peers["gw-qingdao"].endpoint is None
    assert (
        st.wireguard is not None and st.wireguard.listen_port == 4500 and st.wireguard.mtu == 1420
    )
    assert Route(9028, "10.244.2.0/24", "raven-wg0") in st.routes
    # Tunnel ingress for the cloud worker returns over raven0 to its overlay address.
    assert Route(9027, "10.244.1.0/24", "raven0", "240.168.0.196") in st.routes
    assert Rule(4, 101, 9028) in st.rules and Rule(4, 100, 9027, iif="raven-wg0") in st.rules


def test_natted_edge_dials_hub_and_relays_other_edge_through_it() -> None:
    st = run("hz-gw")
    peers = peers_by_gateway(st)
    assert set(peers) == {"gw-cloud"}, "two NATed pools cannot reach each other directly"
    hub = peers["gw-cloud"]
    assert hub.endpoint == f"{HUB_IP}:4500" and hub.keepalive_s == 5
    assert set(hub.allowed_ips) == {*CLOUD, *QD}
    assert set(st.remote_subnets) == {*CLOUD, *QD}
    assert "net/ipv4/conf/all/send_redirects" in {s.path for s in st.sysctls}


def test_member_steers_remote_traffic_to_its_gateway_over_vxlan() -> None:
    st = run("hz-w")
    assert st.role is Role.MEMBER and st.wireguard is None
    assert st.vxlan is not None
    assert st.vxlan.fdb[0].dst == "172.16.2.103" and st.vxlan.fdb[0].mac == mac_for("172.16.2.103")
    assert st.vxlan.addresses == ("240.16.2.104/8",) and st.vxlan.mtu == 1450
    assert st.routes == (Route(9027, "0.0.0.0/0", "raven0", "240.16.2.103", 1420),)
    assert st.rules == (Rule(4, 100, 9027, 0x40, 0x40),)
    assert st.nft is not None
    assert "meta mark set meta mark | 0x40" in st.nft.body
    assert "10.244.4.0/24" in st.nft.body and "maxseg size set 1380" in st.nft.body
    # Host-originated traffic from a non-cluster source (a second, public uplink) is given the
    # node's InternalIP before it enters the tunnel, or the far side could not answer it.
    assert "ip daddr @remote4 ip saddr != @cluster4 snat ip to 172.16.2.104" in st.nft.body
    # The local pool is never in the remote set: traffic inside a pool is not touched.
    assert "10.244.3.0/24" not in st.remote_subnets
    assert {s.path: s.value for s in st.sysctls}["net/ipv4/conf/raven0/rp_filter"] == "2"


def test_pool_with_one_node_has_no_vxlan() -> None:
    nodes = {k: v for k, v in NODES.items() if k != "qd-w"}
    st = run("qd-gw", nodes=nodes)
    assert st.role is Role.GATEWAY and st.vxlan is None
    assert all(r.table == 9028 for r in st.routes) and all(r.iif == "" for r in st.rules)
    assert "net/ipv4/conf/raven0/rp_filter" not in {s.path for s in st.sysctls}


@pytest.mark.parametrize(
    ("node", "v", "reason"),
    [
        ("lonely", view({**NODES, "lonely": ("", "10.9.9.9", ())}), "not in any Gateway"),
        ("hz-w", view(l3=False), "enable-l3-tunnel is off in raven-cfg"),
    ],
)
def test_empty_state_when_l3_does_not_apply(node: str, v: ClusterView, reason: str) -> None:
    nodes = {**NODES, "lonely": ("", "10.9.9.9", ())}
    st = plan(v, node, S, facts(node, nodes))
    assert (st.role, st.wireguard, st.vxlan, st.routes, st.rules, st.nft) == (
        Role.NONE,
        None,
        None,
        (),
        (),
        None,
    )
    assert [s.reason for s in st.skipped] == [reason]


def test_node_switch_off_gives_empty_state() -> None:
    st = plan(view(), "hz-gw", replace(S, enabled=False), facts("hz-gw"))
    assert st.role is Role.NONE and st.wireguard is None


def test_dual_stack_pods_get_v6_routes_rules_and_overlay() -> None:
    nodes = {n: (g, ip, (*c, f"fd00:{i}::/64")) for i, (n, (g, ip, c)) in enumerate(NODES.items())}
    gw = run("hz-gw", nodes=nodes)
    assert "fd00::/64" in peers_by_gateway(gw)["gw-cloud"].allowed_ips
    assert Rule(6, 101, 9028) in gw.rules and Rule(6, 100, 9027, iif="raven-wg0") in gw.rules
    member = run("hz-w", nodes=nodes)
    assert member.vxlan is not None
    assert "fd52:6176:656e:3030::ac10:268/64" in member.vxlan.addresses
    assert Route(9027, "::/0", "raven0", "fd52:6176:656e:3030::ac10:267", 1420) in member.routes
    assert "ip6 daddr @remote6 meta mark set" in (member.nft.body if member.nft else "")
    assert {"net/ipv6/conf/all/forwarding"} <= {s.path for s in member.sysctls}


def test_peer_without_public_key_is_skipped_with_reason() -> None:
    st = run("cloud-gw", view(no_key=frozenset({"qd-gw"})))
    assert set(peers_by_gateway(st)) == {"gw-hangzhou"}
    assert any(s.subject == "gateway/gw-qingdao" and "public key" in s.reason for s in st.skipped)
    assert not set(QD) & set(st.remote_subnets)


def test_public_key_from_spec_when_status_copy_lacks_it() -> None:
    v = view(no_key=frozenset({"qd-gw"}))
    gw = v.gateways["gw-qingdao"]
    spec = replace(gw.spec, endpoints=(tunnel_ep("qd-gw", True, "late-key"),))
    v = replace(v, gateways=MappingProxyType({**v.gateways, "gw-qingdao": replace(gw, spec=spec)}))
    assert peers_by_gateway(run("cloud-gw", v))["gw-qingdao"].public_key == "late-key"


def test_two_natted_pools_without_hub_are_reported_unreachable() -> None:
    gws = {k: v for k, v in GATEWAYS.items() if k != "gw-cloud"}
    st = run("hz-gw", view(gateways=gws))
    assert st.wireguard is not None and st.wireguard.peers == ()
    assert any("no hub" in s.reason for s in st.skipped)


def test_unnatted_gateway_without_public_ip_is_dialled_on_internal_ip() -> None:
    v = view()
    gw = v.gateways["gw-cloud"]
    ep = tunnel_ep("cloud-gw", False, key_of("cloud-gw"))
    gw = replace(gw, status=GatewayStatus(active_endpoints=(ep,)))
    v = replace(v, gateways=MappingProxyType({**v.gateways, "gw-cloud": gw}))
    hub = peers_by_gateway(run("hz-gw", v))["gw-cloud"]
    assert hub.endpoint == "192.168.0.195:4500"
    # The endpoint's own /32 must not be routed into the tunnel (it would loop).
    assert "192.168.0.195/32" not in hub.allowed_ips
    assert "10.244.0.0/24" in hub.allowed_ips


def test_overlapping_remote_subnet_is_dropped_not_misrouted() -> None:
    nodes = {**NODES, "qd-w": ("gw-qingdao", "172.16.1.89", ("10.244.2.128/25",))}
    st = run("cloud-gw", nodes=nodes)
    assert "10.244.2.128/25" not in peers_by_gateway(st)["gw-qingdao"].allowed_ips
    assert any("10.244.2.128/25" in s.subject and "gw-hangzhou" in s.reason for s in st.skipped)


def test_failover_moves_member_next_hop_to_new_gateway() -> None:
    v = view()
    gw = v.gateways["gw-hangzhou"]
    ep = tunnel_ep("hz-w", True, key_of("hz-w"))
    v = replace(
        v,
        gateways=MappingProxyType(
            {**v.gateways, "gw-hangzhou": replace(gw, status=GatewayStatus(active_endpoints=(ep,)))}
        ),
    )
    assert run("hz-w", v).role is Role.GATEWAY
    old = run("hz-gw", v)
    assert old.role is Role.MEMBER and old.routes[0].via == "240.16.2.104"
    assert peers_by_gateway(run("cloud-gw", v))["gw-hangzhou"].public_key == key_of("hz-w")


def test_plan_is_deterministic_whatever_the_input_order() -> None:
    items = list(NODES.items())
    for node in NODES:
        results = set()
        for seed in range(5):
            random.Random(seed).shuffle(items)
            gws = list(GATEWAYS.items())
            random.Random(seed).shuffle(gws)
            results.add(repr(run(node, view(dict(items), dict(gws)))))
        assert len(results) == 1, node


def test_plan_cache_replans_only_when_what_l3_reads_changes() -> None:
    from ravend.l3.plan import PlanCache
    from ravend.model import Lease

    cache, v = PlanCache(), view()
    first = cache.plan(v, "cloud-gw", S, facts("cloud-gw"))
    assert first == run("cloud-gw")
    # A heartbeat Lease renewal: a new view with new maps holding the same objects.
    lease = Lease(ObjectMeta("ravend-node-x"), holder="x", renew_time="t1")
    renewed = replace(
        v,
        gateways=MappingProxyType(dict(v.gateways)),
        nodes=MappingProxyType(dict(v.nodes)),
        leases=MappingProxyType({"ravend-node-x": lease}),
        revision=v.revision + 1,
    )
    assert cache.plan(renewed, "cloud-gw", S, facts("cloud-gw")) is first
    assert cache.hits == 1
    # The edge pools lose their gateways' keys: a real input change, replanned.
    keyless = view(no_key=frozenset({"hz-gw", "qd-gw"}))
    again = cache.plan(keyless, "cloud-gw", S, facts("cloud-gw"))
    assert again == run("cloud-gw", keyless) and again != first
    assert cache.hits == 1
    # So do this node's own facts (e.g. the underlay MTU).
    lower = replace(facts("cloud-gw"), underlay_mtu=1400)
    assert cache.plan(keyless, "cloud-gw", S, lower).wireguard != again.wireguard


# ---- warm standby candidates ----------------------------------------------------------------


def candidates(
    v: ClusterView,
    gateway: str,
    nodes: tuple[str, ...],
    active: str,
    public_ips: Mapping[str, str] = MappingProxyType({}),
) -> ClusterView:
    """`gateway` with tunnel candidates `nodes` in its spec (keys published), `active` elected."""
    nat = v.gateways[gateway].spec.endpoints[0].under_nat
    eps = tuple(tunnel_ep(n, nat, key_of(n), public_ips.get(n, "")) for n in nodes)
    chosen = next(e for e in eps if e.node_name == active)
    gw = Gateway(
        ObjectMeta(gateway), GatewaySpec(endpoints=eps), GatewayStatus(active_endpoints=(chosen,))
    )
    return replace(v, gateways=MappingProxyType({**v.gateways, gateway: gw}))


HZ_PAIR = ("hz-gw", "hz-w")


def test_natted_standby_keeps_the_gateway_device_warm_with_no_route_into_it() -> None:
    v = candidates(view(), "gw-hangzhou", HZ_PAIR, active="hz-gw")
    st = run("hz-w", v)
    # Still a member for forwarding: remote traffic goes to the active gateway over raven0.
    assert st.role is Role.MEMBER
    assert st.routes == (Route(9027, "0.0.0.0/0", "raven0", "240.16.2.103", 1420),)
    assert st.rules == (Rule(4, 100, 9027, 0x40, 0x40),)
    assert all(r.dev != "raven-wg0" for r in st.routes)
    # ... and it dials the hub with keepalive, holding the AllowedIPs it will need once active.
    assert st.wireguard is not None
    (hub,) = st.wireguard.peers
    assert hub == WgPeer(key_of("cloud-gw"), f"{HUB_IP}:4500", tuple(sorted({*CLOUD, *QD})), 5)
    assert hub.gateway == "gw-cloud"
    assert st.wireguard.standby_peers == () and st.wireguard.listen_port == 4500
    assert "net/ipv4/conf/raven-wg0/rp_filter" in {s.path for s in st.sysctls}


def test_hub_lists_the_active_edge_and_its_standby_without_allowed_ips() -> None:
    v = candidates(view(), "gw-hangzhou", HZ_PAIR, active="hz-gw")
    st = run("cloud-gw", v)
    assert st.wireguard is not None
    assert peers_by_gateway(st)["gw-hangzhou"] == WgPeer(key_of("hz-gw"), None, HZ, 5)
    # The standby dials in (NATed): no endpoint here, learnt from its handshakes, and no range
    # that the active endpoint owns.
    assert st.wireguard.standby_peers == (WgPeer(key_of("hz-w"), None, (), 5, "gw-hangzhou"),)
    assert [p.public_key for p in st.wireguard.all_peers] == sorted(
        key_of(n) for n in ("hz-gw", "hz-w", "qd-gw")
    )
    # The relaying edge lists no standby of a pool it reaches only through the hub.
    qd = run("qd-gw", v)
    assert qd.wireguard is not None and qd.wireguard.standby_peers == ()


def test_standby_without_published_key_is_left_out_and_reported() -> None:
    v = candidates(view(), "gw-hangzhou", HZ_PAIR, active="hz-gw")
    gw = v.gateways["gw-hangzhou"]
    eps = (gw.spec.endpoints[0], tunnel_ep("hz-w", True, None))
    v = replace(
        v,
        gateways=MappingProxyType(
            {**v.gateways, "gw-hangzhou": replace(gw, spec=replace(gw.spec, endpoints=eps))}
        ),
    )
    st = run("cloud-gw", v)
    assert st.wireguard is not None and st.wireguard.standby_peers == ()
    assert any(s.subject == "node/hz-w" and "public key" in s.reason for s in st.skipped)
    # Nor does the candidate dial yet: the hub would drop its handshake (and WireGuard retries
    # only after 5 s), so it waits for the view in which both sides see its key.
    assert run("hz-w", v).wireguard is None


def test_standby_of_the_hub_listens_and_edges_dial_it() -> None:
    pair = ("cloud-gw", "cloud-w")
    v = candidates(view(), "gw-cloud", pair, active="cloud-gw", public_ips={"cloud-gw": HUB_IP})
    st = run("cloud-w", v)
    assert st.role is Role.MEMBER and st.wireguard is not None
    assert {p.gateway: (p.endpoint, p.allowed_ips) for p in st.wireguard.peers} == {
        "gw-hangzhou": (None, HZ),
        "gw-qingdao": (None, QD),
    }
    assert st.wireguard.listen_port == 4500
    hz = run("hz-gw", v)
    assert hz.wireguard is not None
    # No publicIP on the standby's endpoint: it is dialled on its InternalIP, and that /32
    # must stay out of the tunnel (the dial itself would loop into raven-wg0).
    assert hz.wireguard.standby_peers == (
        WgPeer(key_of("cloud-w"), "192.168.0.196:4500", (), 5, "gw-cloud"),
    )
    hub = peers_by_gateway(hz)["gw-cloud"]
    assert "192.168.0.196/32" not in hub.allowed_ips and "10.244.1.0/24" in hub.allowed_ips
    assert not any(r.dst == "192.168.0.196/32" for r in hz.routes)


def test_inactive_candidate_with_l3_disabled_is_no_standby() -> None:
    v = candidates(view(), "gw-hangzhou", HZ_PAIR, active="hz-gw")
    gw = v.gateways["gw-hangzhou"]
    off = replace(gw.spec.endpoints[1], config=MappingProxyType({"enable-l3-tunnel": "false"}))
    gw = replace(gw, spec=replace(gw.spec, endpoints=(gw.spec.endpoints[0], off)))
    v = replace(v, gateways=MappingProxyType({**v.gateways, "gw-hangzhou": gw}))
    assert run("hz-w", v).wireguard is None
    cloud = run("cloud-gw", v).wireguard
    assert cloud is not None and cloud.standby_peers == ()
