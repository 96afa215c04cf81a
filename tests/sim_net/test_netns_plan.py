"""The network plan: names fit the kernel, the root namespace is untouched, routing is CNI-like."""

from __future__ import annotations

import re

from ravend.sim.netns_plan import NAT_RULESET, HostLink, NetPlan, plan_network
from ravend.sim.topology_default import collide_topology, default_topology

PREFIX = "rv0a1b2c-"
HOST = HostLink(root_name=f"{PREFIX}h", network="198.19.0.4/30")


def _plan() -> NetPlan:
    return plan_network(default_topology(), PREFIX, HOST)


def _link_names(plan: NetPlan) -> set[str]:
    names: set[str] = set()
    for line in plan.root_batch:
        names.update(re.findall(r"(?:name) (\S+)", line))
    for lines in plan.ns_batches.values():
        for line in lines:
            names.update(re.findall(r"(?:dev|master|link set|link add) (\S+)", line))
    return names


def test_names_are_prefixed_unique_and_fit_ifnamsiz() -> None:
    plan = _plan()
    assert len(set(plan.namespaces)) == len(plan.namespaces) == 2 + 3 + 6 + 6
    assert all(ns.startswith(PREFIX) for ns in plan.namespaces)
    assert all(len(name) <= 15 for name in _link_names(plan))


def test_root_namespace_only_gets_the_host_link() -> None:
    plan = _plan()
    root_only = [ln for ln in plan.root_batch if " netns " not in ln.split(" type ")[0]]
    # every veth end except the host link is created directly inside a namespace
    assert root_only == [
        f"link add name {HOST.root_name} type veth peer name host0 netns {PREFIX}api",
        f"addr add 198.19.0.5/30 dev {HOST.root_name}",
        f"link set {HOST.root_name} up",
    ]


def test_every_node_routes_same_region_pod_cidrs_only() -> None:
    topo = default_topology()
    plan = _plan()
    for node in topo.nodes:
        routes = {
            ln.split()[2]: ln.split()[4]
            for ln in plan.ns_batches[plan.node_ns[node.name]]
            if ln.startswith("route add 10.")
        }
        peers = {p.pod_cidr: p.ip for p in topo.nodes_in(node.region) if p.name != node.name}
        assert routes == peers


def test_nat_only_in_edge_region_routers_and_nodes_default_route() -> None:
    topo = default_topology()
    plan = _plan()
    nat_ns = {plan.region_ns[r.name] for r in topo.regions if r.behind_nat}
    assert set(plan.nft) == nat_ns
    assert all(rules == NAT_RULESET for rules in plan.nft.values())
    for node in topo.nodes:
        lines = plan.ns_batches[plan.node_ns[node.name]]
        default = next(ln for ln in lines if ln.startswith("route add default"))
        region = topo.region(node.region)
        via = topo.wan_router_ip if not region.behind_nat else region.router_ip
        assert f"via {via} " in default


def test_sysctls_per_environment_notes() -> None:
    topo = default_topology()
    plan = _plan()
    forwarders = [plan.wan_ns, *plan.node_ns.values()]
    forwarders += [plan.region_ns[r.name] for r in topo.regions if r.behind_nat]
    for ns in forwarders:
        assert "net.ipv4.ip_forward=1" in plan.sysctls[ns]
    for ns, lines in plan.ns_batches.items():
        has_bridge = any("type bridge" in ln for ln in lines)
        assert ("net.bridge.bridge-nf-call-iptables=0" in plan.sysctls[ns]) == has_bridge
        assert "net.ipv4.conf.all.rp_filter=2" in plan.sysctls[ns]
        assert "net.ipv4.conf.default.send_redirects=0" in plan.sysctls[ns]
    for ns in plan.pod_ns.values():
        assert "net.ipv4.ip_forward=1" not in plan.sysctls[ns]


def test_colliding_regions_get_separate_namespaces_with_the_same_addresses() -> None:
    topo = collide_topology()
    plan = plan_network(topo, PREFIX, HOST)
    hz = [plan.node_ns[n.name] for n in topo.nodes_in("hangzhou")]
    qd = [plan.node_ns[n.name] for n in topo.nodes_in("qingdao")]
    assert not set(hz) & set(qd)
    for a, b in zip(hz, qd, strict=True):
        addr_a = [ln for ln in plan.ns_batches[a] if ln.endswith("dev eth0") and "addr" in ln]
        addr_b = [ln for ln in plan.ns_batches[b] if ln.endswith("dev eth0") and "addr" in ln]
        assert addr_a == addr_b


def test_plan_is_deterministic() -> None:
    assert _plan() == _plan()
