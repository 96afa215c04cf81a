"""Simulated multi-region topology: file format, parser and validator (pure, no I/O).

A topology describes regions (network domains), the nodes in them and the Raven objects the
simulated cluster starts with. It is parsed once into frozen dataclasses; the network builder
(`netns_plan`) and the cluster seeding (`topology_k8s`) only read those values.

YAML format (keys in camelCase, like Kubernetes objects):

    wan: {cidr: 198.18.0.0/24}          # optional; the simulated internet, only inside our netns
    ravenCfg: {enable-l3-tunnel: "true", enable-l7-proxy: "true"}   # omit = no ConfigMap
    regions:
    - name: hangzhou
      behindNat: true                   # a NAT router masquerades the LAN to its WAN address
      lan: 172.16.2.0/24
      routerIP: 172.16.2.1              # optional, default: first host of `lan`
      publicIP: 198.18.0.11             # optional WAN address of the NAT router
      edge: true                        # optional, default = behindNat: openyurt edge label
      nodes:
      - {name: n1, ip: 172.16.2.103, podCIDR: 10.244.2.0/24, podCIDRv6: fd00:10:244:2::/64,
         gateway: gw-hangzhou, labels: {a: b}, wanIP: ...}   # wanIP only in public regions
    gateways:                           # v1beta1 Gateway objects (metadata.name + spec)
    - metadata: {name: gw-hangzhou}
      spec: {...}                       # `publicIP: auto` = the named node's WAN address

Two regions may use the same LAN CIDR and node IPs (each region's LAN lives in its own
namespaces); pod CIDRs must be unique cluster-wide because the L3 plane routes them.
"""

from __future__ import annotations

import copy
import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import yaml

from ravend.model import EDGE_WORKER_LABEL, GATEWAY_LABEL
from ravend.sim.topology_checks import (
    TopologyError,
    address,
    as_bool,
    as_list,
    as_mapping,
    check_host_in,
    check_unique,
    dns_name,
    network,
    str_map,
)

__all__ = ["GatewayDef", "Region", "SimNode", "Topology", "TopologyError", "parse_topology"]

DEFAULT_WAN_CIDR = "198.18.0.0/24"
"""RFC 2544 benchmarking range: never routed on the host, so it exists only inside our netns."""

AUTO_PUBLIC_IP = "auto"
"""`spec.endpoints[].publicIP` placeholder resolved to the endpoint node's WAN address."""

_NAT_ROUTER_BASE = 10
"""WAN host number of the first NAT router (.1 = WAN router, .2 = API server)."""
_PUBLIC_NODE_BASE = 100
"""WAN host number of the first public node."""


@dataclass(frozen=True)
class Region:
    """A network domain: one LAN, either public (nodes have WAN addresses) or behind a NAT."""

    name: str
    """Region name, a DNS label; also used in status output."""
    behind_nat: bool
    """True: nodes reach the WAN only through a masquerading router (no inbound connections)."""
    lan: str
    """LAN CIDR, e.g. "172.16.2.0/24"; may repeat in other regions (colliding IPs)."""
    router_ip: str
    """LAN address of the region's router (NAT regions: the nodes' default gateway)."""
    public_ip: str = ""
    """WAN address of the NAT router (empty for public regions)."""
    edge: bool = False
    """Nodes get the label openyurt.io/is-edge-worker=true."""


@dataclass(frozen=True)
class SimNode:
    """One simulated node: a network namespace on its region's LAN plus one pod namespace."""

    name: str
    """Kubernetes node name."""
    region: str
    """Name of the region the node is in."""
    ip: str
    """LAN address, the node's InternalIP."""
    pod_cidr: str
    """IPv4 pod CIDR (spec.podCIDR); .1 is the node's pod bridge, .2 the pod."""
    pod_cidr_v6: str = ""
    """Optional IPv6 pod CIDR (second entry of spec.podCIDRs)."""
    gateway: str = ""
    """Gateway name (label raven.openyurt.io/gateway); empty = not in any Gateway."""
    labels: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    """All node labels, including the gateway and edge-worker labels derived from the file."""
    wan_ip: str = ""
    """WAN address (public regions only): the address other regions can connect to."""

    @property
    def pod_gateway_ip(self) -> str:
        """Address of the node's pod bridge: the pod's default route."""
        return str(_host(self.pod_cidr, 1))

    @property
    def pod_ip(self) -> str:
        """IPv4 address of the node's pod."""
        return str(_host(self.pod_cidr, 2))

    @property
    def pod_ip_v6(self) -> str:
        """IPv6 address of the node's pod, or "" without a v6 pod CIDR."""
        return str(_host(self.pod_cidr_v6, 2)) if self.pod_cidr_v6 else ""

    @property
    def pod_cidrs(self) -> tuple[str, ...]:
        """spec.podCIDRs: v4 first, then the optional v6 CIDR."""
        return (self.pod_cidr, self.pod_cidr_v6) if self.pod_cidr_v6 else (self.pod_cidr,)


@dataclass(frozen=True)
class GatewayDef:
    """A Gateway to create at start-up (v1beta1), placeholders already resolved."""

    name: str
    spec: Mapping[str, Any]
    """v1beta1 `spec` as JSON-compatible data (deep copy on every `manifest()` call)."""

    def manifest(self) -> dict[str, Any]:
        """The full API object to POST."""
        return {
            "apiVersion": "raven.openyurt.io/v1beta1",
            "kind": "Gateway",
            "metadata": {"name": self.name},
            "spec": copy.deepcopy(dict(self.spec)),
        }


@dataclass(frozen=True)
class Topology:
    """A validated topology; nodes are in file order (regions first to last)."""

    regions: tuple[Region, ...]
    nodes: tuple[SimNode, ...]
    gateways: tuple[GatewayDef, ...] = ()
    raven_cfg: Mapping[str, str] | None = None
    """Data of ConfigMap kube-system/raven-cfg; None = do not create it (both planes off)."""
    wan_cidr: str = DEFAULT_WAN_CIDR
    """The simulated internet; .1 is the WAN router, .2 the API server."""

    @property
    def wan_router_ip(self) -> str:
        return str(_host(self.wan_cidr, 1))

    @property
    def api_ip(self) -> str:
        """WAN address of the API server namespace."""
        return str(_host(self.wan_cidr, 2))

    def region(self, name: str) -> Region:
        for r in self.regions:
            if r.name == name:
                return r
        raise KeyError(name)

    def node(self, name: str) -> SimNode:
        for n in self.nodes:
            if n.name == name:
                return n
        raise KeyError(name)

    def nodes_in(self, region: str) -> tuple[SimNode, ...]:
        return tuple(n for n in self.nodes if n.region == region)


def _host(cidr: str, index: int) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    return ipaddress.ip_network(cidr, strict=False).network_address + index


def parse_topology(text: str) -> Topology:
    """Parse and validate a YAML topology document."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise TopologyError(f"not valid YAML: {exc}") from exc
    return topology_from_dict(data)


def topology_from_dict(data: object) -> Topology:
    """Validate decoded YAML/JSON data into a Topology (raises TopologyError)."""
    doc = as_mapping(data, "topology")
    wan = as_mapping(doc.get("wan", {}), "wan")
    wan_cidr = network(str(wan.get("cidr", DEFAULT_WAN_CIDR)), "wan.cidr", version=4)
    if wan_cidr.num_addresses < 256:
        raise TopologyError("wan.cidr must be a /24 or larger")
    wan_alloc = _WanAllocator(wan_cidr)
    regions: list[Region] = []
    nodes: list[SimNode] = []
    for i, raw in enumerate(as_list(doc.get("regions"), "regions")):
        region, region_nodes = _parse_region(as_mapping(raw, f"regions[{i}]"), wan_alloc)
        regions.append(region)
        nodes.extend(region_nodes)
    if not regions:
        raise TopologyError("at least one region is required")
    check_unique([r.name for r in regions], "region name")
    check_unique([n.name for n in nodes], "node name")
    _check_pod_cidrs(nodes, regions, wan_cidr)
    wan_by_node = {n.name: n.wan_ip for n in nodes if n.wan_ip}
    gateways = [_parse_gateway(g, i, wan_by_node) for i, g in enumerate(_gateway_list(doc))]
    check_unique([g.name for g in gateways], "gateway name")
    known = {g.name for g in gateways}
    for n in nodes:
        if n.gateway and n.gateway not in known:
            raise TopologyError(f"node {n.name}: gateway {n.gateway!r} is not defined")
    cfg = doc.get("ravenCfg")
    raven_cfg = None if cfg is None else str_map(cfg, "ravenCfg")
    return Topology(
        regions=tuple(regions),
        nodes=tuple(nodes),
        gateways=tuple(gateways),
        raven_cfg=raven_cfg,
        wan_cidr=str(wan_cidr),
    )


class _WanAllocator:
    """Hands out WAN addresses: explicit ones are reserved, the rest counted up from a base."""

    def __init__(self, cidr: ipaddress.IPv4Network) -> None:
        self.cidr = cidr
        self.used = {cidr.network_address + 1, cidr.network_address + 2}
        self.next_router = _NAT_ROUTER_BASE
        self.next_node = _PUBLIC_NODE_BASE

    def take(self, explicit: object, what: str, *, router: bool) -> str:
        if explicit is not None:
            addr = address(str(explicit), what, version=4)
            if addr not in self.cidr:
                raise TopologyError(f"{what}: {addr} is not in the WAN {self.cidr}")
        else:
            addr = self._next(router=router)
        if addr in self.used or addr in (self.cidr.network_address, self.cidr.broadcast_address):
            raise TopologyError(f"{what}: WAN address {addr} is already used or reserved")
        self.used.add(addr)
        return str(addr)

    def _next(self, *, router: bool) -> ipaddress.IPv4Address:
        while True:
            index = self.next_router if router else self.next_node
            if router:
                self.next_router += 1
            else:
                self.next_node += 1
            if index >= self.cidr.num_addresses - 1:
                raise TopologyError("the WAN has no free address left")
            addr = self.cidr.network_address + index
            if addr not in self.used:
                return addr


def _parse_region(raw: Mapping[str, Any], alloc: _WanAllocator) -> tuple[Region, list[SimNode]]:
    name = dns_name(raw.get("name"), "region name")
    where = f"region {name}"
    behind_nat = as_bool(raw.get("behindNat", False), f"{where}.behindNat")
    lan = network(str(raw.get("lan", "")), f"{where}.lan", version=4)
    if lan.num_addresses < 4:
        raise TopologyError(f"{where}: lan {lan} is too small")
    if behind_nat and lan.overlaps(alloc.cidr):
        raise TopologyError(f"{where}: lan {lan} overlaps the WAN {alloc.cidr}")
    router = address(str(raw.get("routerIP", lan.network_address + 1)), f"{where}.routerIP", 4)
    check_host_in(router, lan, f"{where}.routerIP")
    if not behind_nat and raw.get("publicIP") is not None:
        raise TopologyError(f"{where}: publicIP is only for NAT regions (set wanIP on nodes)")
    public_ip = (
        alloc.take(raw.get("publicIP"), f"{where}.publicIP", router=True) if behind_nat else ""
    )
    region = Region(
        name=name,
        behind_nat=behind_nat,
        lan=str(lan),
        router_ip=str(router),
        public_ip=public_ip,
        edge=as_bool(raw.get("edge", behind_nat), f"{where}.edge"),
    )
    nodes = [
        _parse_node(as_mapping(n, f"{where}.nodes[{i}]"), region, alloc)
        for i, n in enumerate(as_list(raw.get("nodes"), f"{where}.nodes"))
    ]
    check_unique([n.ip for n in nodes] + [str(router)], f"LAN address in {where}")
    return region, nodes


def _parse_node(raw: Mapping[str, Any], region: Region, alloc: _WanAllocator) -> SimNode:
    name = dns_name(raw.get("name"), "node name")
    where = f"node {name}"
    lan = ipaddress.IPv4Network(region.lan)
    ip = address(str(raw.get("ip", "")), f"{where}.ip", version=4)
    check_host_in(ip, lan, f"{where}.ip")
    pod = network(str(raw.get("podCIDR", "")), f"{where}.podCIDR", version=4)
    pod6 = raw.get("podCIDRv6")
    pod_v6 = str(network(str(pod6), f"{where}.podCIDRv6", version=6)) if pod6 else ""
    if pod.prefixlen > 30:
        raise TopologyError(f"{where}: podCIDR {pod} is too small (needs /30 or larger)")
    gateway = str(raw.get("gateway") or "")
    labels = dict(str_map(raw.get("labels", {}), f"{where}.labels"))
    if gateway:
        labels[GATEWAY_LABEL] = gateway
    if region.edge:
        labels.setdefault(EDGE_WORKER_LABEL, "true")
    if region.behind_nat and raw.get("wanIP") is not None:
        raise TopologyError(f"{where}: wanIP is only for nodes of public regions")
    wan_ip = (
        "" if region.behind_nat else alloc.take(raw.get("wanIP"), f"{where}.wanIP", router=False)
    )
    return SimNode(
        name=name,
        region=region.name,
        ip=str(ip),
        pod_cidr=str(pod),
        pod_cidr_v6=pod_v6,
        gateway=gateway,
        labels=MappingProxyType(labels),
        wan_ip=wan_ip,
    )


def _gateway_list(doc: Mapping[str, Any]) -> list[object]:
    raw = doc.get("gateways", [])
    return [] if raw is None else as_list(raw, "gateways")


def _parse_gateway(raw: object, index: int, wan_by_node: Mapping[str, str]) -> GatewayDef:
    obj = as_mapping(raw, f"gateways[{index}]")
    version = obj.get("apiVersion", "raven.openyurt.io/v1beta1")
    if version != "raven.openyurt.io/v1beta1":
        raise TopologyError(f"gateways[{index}]: only raven.openyurt.io/v1beta1 is supported")
    meta = as_mapping(obj.get("metadata", {}), f"gateways[{index}].metadata")
    name = dns_name(meta.get("name"), f"gateways[{index}].metadata.name")
    spec = copy.deepcopy(dict(as_mapping(obj.get("spec", {}), f"gateway {name}.spec")))
    endpoints = spec.get("endpoints", [])
    for j, ep_raw in enumerate(as_list(endpoints, f"gateway {name}.spec.endpoints")):
        ep = as_mapping(ep_raw, f"gateway {name}.spec.endpoints[{j}]")
        if ep.get("publicIP") == AUTO_PUBLIC_IP:
            node = str(ep.get("nodeName", ""))
            if node not in wan_by_node:
                raise TopologyError(
                    f"gateway {name}: publicIP auto needs {node!r} to be a node of a public region"
                )
            endpoints[j] = {**ep, "publicIP": wan_by_node[node]}
    return GatewayDef(name=name, spec=MappingProxyType(spec))


def _check_pod_cidrs(
    nodes: list[SimNode], regions: list[Region], wan: ipaddress.IPv4Network
) -> None:
    seen: list[tuple[str, ipaddress.IPv4Network | ipaddress.IPv6Network]] = []
    underlay = [(f"region {r.name} lan", ipaddress.ip_network(r.lan)) for r in regions]
    underlay.append(("the WAN", wan))
    for n in nodes:
        for cidr in n.pod_cidrs:
            net = ipaddress.ip_network(cidr)
            for owner, other in [*seen, *underlay]:
                if net.version == other.version and net.overlaps(other):
                    raise TopologyError(f"node {n.name}: pod CIDR {net} overlaps {owner} ({other})")
            seen.append((f"node {n.name}", net))
