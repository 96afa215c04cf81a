"""Topology format: the embedded default is Raven's manual example; validation catches mistakes."""

from __future__ import annotations

from pathlib import Path

import pytest

from ravend.model import EDGE_WORKER_LABEL, GATEWAY_LABEL
from ravend.sim.topology import TopologyError, parse_topology
from ravend.sim.topology_default import (
    COLLIDE_TOPOLOGY_YAML,
    DEFAULT_TOPOLOGY_YAML,
    collide_topology,
    default_topology,
)

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "topologies"

MANUAL_NODES = {  # raven-reference.md section 8
    "izwz9dohcv74iegqecp4axz": ("cloud", "192.168.0.195", "gw-cloud"),
    "izwz9ey0js5z7mornclpd6z": ("cloud", "192.168.0.196", "gw-cloud"),
    "izbp15inok0kbfkg3in52rz": ("hangzhou", "172.16.2.103", "gw-hangzhou"),
    "izbp15inok0kbfkg3in52sz": ("hangzhou", "172.16.2.104", "gw-hangzhou"),
    "izm5eb24dmjfimuaybpnqzz": ("qingdao", "172.16.1.89", "gw-qingdao"),
    "izm5eb24dmjfimuaybpnr0z": ("qingdao", "172.16.1.90", "gw-qingdao"),
}


def test_default_is_the_manual_example() -> None:
    topo = default_topology()
    assert {n.name: (n.region, n.ip, n.gateway) for n in topo.nodes} == MANUAL_NODES
    assert [(r.name, r.behind_nat) for r in topo.regions] == [
        ("cloud", False),
        ("hangzhou", True),
        ("qingdao", True),
    ]
    for n in topo.nodes:
        assert n.labels[GATEWAY_LABEL] == n.gateway
        assert (n.labels.get(EDGE_WORKER_LABEL) == "true") == (n.region != "cloud")
        assert bool(n.wan_ip) == (n.region == "cloud")
    assert len({n.pod_cidr for n in topo.nodes}) == 6
    assert dict(topo.raven_cfg or {}) == {"enable-l3-tunnel": "true", "enable-l7-proxy": "true"}


def test_default_gateways_match_the_manual_with_public_ip_resolved() -> None:
    topo = default_topology()
    gws = {g.name: g.manifest() for g in topo.gateways}
    assert sorted(gws) == ["gw-cloud", "gw-hangzhou", "gw-qingdao"]
    cloud = gws["gw-cloud"]["spec"]
    assert cloud["exposeType"] == "PublicIP"
    assert cloud["proxyConfig"] == {
        "Replicas": 1,
        "proxyHTTPPort": "10255,9445",
        "proxyHTTPSPort": "10250,9100",
    }
    wan_ip = topo.node("izwz9dohcv74iegqecp4axz").wan_ip
    assert [(e["type"], e["port"], e["publicIP"]) for e in cloud["endpoints"]] == [
        ("proxy", 10262, wan_ip),
        ("tunnel", 4500, wan_ip),
    ]
    qingdao = gws["gw-qingdao"]["spec"]["endpoints"]
    assert [(e["nodeName"], e["type"], e["underNAT"]) for e in qingdao] == [
        ("izm5eb24dmjfimuaybpnqzz", "proxy", True),
        ("izm5eb24dmjfimuaybpnr0z", "tunnel", True),
    ]
    assert gws["gw-hangzhou"]["apiVersion"] == "raven.openyurt.io/v1beta1"


def test_manifest_is_a_copy() -> None:
    gw = default_topology().gateways[0]
    gw.manifest()["spec"]["endpoints"].clear()
    assert gw.manifest()["spec"]["endpoints"]


def test_examples_match_embedded_constants() -> None:
    assert (EXAMPLES / "default.yaml").read_text() == DEFAULT_TOPOLOGY_YAML
    assert (EXAMPLES / "collide.yaml").read_text() == COLLIDE_TOPOLOGY_YAML


def test_collide_reuses_lan_and_node_ips_across_edge_regions() -> None:
    topo = collide_topology()
    hz, qd = topo.region("hangzhou"), topo.region("qingdao")
    assert hz.lan == qd.lan
    assert [n.ip for n in topo.nodes_in("hangzhou")] == [n.ip for n in topo.nodes_in("qingdao")]
    assert hz.public_ip != qd.public_ip


def test_v6_pod_cidr_and_explicit_addresses() -> None:
    topo = parse_topology(
        """
regions:
- name: a
  behindNat: true
  lan: 10.0.0.0/24
  routerIP: 10.0.0.254
  publicIP: 198.18.0.50
  nodes:
  - {name: n1, ip: 10.0.0.1, podCIDR: 10.9.0.0/26, podCIDRv6: "fd00:9::/64"}
- name: b
  lan: 10.1.0.0/24
  nodes: [{name: n2, ip: 10.1.0.2, podCIDR: 10.9.1.0/26, wanIP: 198.18.0.77}]
"""
    )
    n1 = topo.node("n1")
    assert (n1.pod_ip, n1.pod_ip_v6, n1.pod_cidrs) == (
        "10.9.0.2",
        "fd00:9::2",
        ("10.9.0.0/26", "fd00:9::/64"),
    )
    assert topo.region("a").router_ip == "10.0.0.254"
    assert topo.region("a").public_ip == "198.18.0.50"
    assert topo.node("n2").wan_ip == "198.18.0.77"
    assert topo.raven_cfg is None and topo.gateways == ()


BASE = """
regions:
- name: a
  behindNat: {nat}
  lan: 10.0.0.0/24
  nodes:
  - {{name: n1, ip: {ip1}, podCIDR: {pod1}, gateway: {gw}}}
  - {{name: {name2}, ip: 10.0.0.3, podCIDR: 10.9.1.0/24{extra2}}}
gateways:
- metadata: {{name: gw-a}}
  spec:
    endpoints: [{{nodeName: n1, type: tunnel, publicIP: {pub}}}]
"""
OK = {
    "nat": "false",
    "ip1": "10.0.0.2",
    "pod1": "10.9.0.0/24",
    "gw": "gw-a",
    "name2": "n2",
    "extra2": "",
    "pub": "auto",
}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"name2": "n1"}, "duplicate node name"),
        ({"ip1": "10.0.1.2"}, "not a host address"),
        ({"ip1": "10.0.0.3"}, "duplicate LAN address"),
        ({"ip1": "10.0.0.1"}, "duplicate LAN address"),  # the router's
        ({"pod1": "10.9.1.0/25"}, "overlaps node n1"),
        ({"pod1": "10.0.0.0/25"}, "overlaps region a lan"),
        ({"pod1": "10.9.0.0/31"}, "too small"),
        ({"pod1": "10.9.0.1/24"}, "not a CIDR"),
        ({"gw": "gw-b"}, "not defined"),
        ({"nat": "true"}, "publicIP auto"),
        ({"nat": "true", "extra2": ", wanIP: 198.18.0.9", "pub": "1.2.3.4"}, "wanIP is only"),
        ({"extra2": ", wanIP: 198.18.0.1"}, "already used"),
        ({"extra2": ", wanIP: 8.8.8.8"}, "not in the WAN"),
        ({"name2": "N2"}, "DNS name"),
    ],
)
def test_validation_errors(change: dict[str, str], message: str) -> None:
    parse_topology(BASE.format(**OK))  # the base itself is valid
    with pytest.raises(TopologyError, match=message):
        parse_topology(BASE.format(**{**OK, **change}))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("regions: [", "not valid YAML"),
        ("[]", "must be a mapping"),
        ("regions: []", "at least one region"),
        ("regions: [{name: a, lan: 10.0.0.0/24, nodes: {}}]", "must be a list"),
        ("wan: {cidr: 198.18.0.0/25}\nregions: []", "/24 or larger"),
        ("regions: [{name: a, lan: 198.18.0.0/24, behindNat: true, nodes: []}]",
         "overlaps the WAN"),
        ("ravenCfg: {enable-l3-tunnel: true}\nregions: [{name: a, lan: 10.0.0.0/24, nodes: []}]",
         "quote them"),
    ],
)  # fmt: skip
def test_document_errors(text: str, message: str) -> None:
    with pytest.raises(TopologyError, match=message):
        parse_topology(text)
