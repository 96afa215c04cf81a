"""Plan of the simulated network: namespaces, links, addresses, routes, sysctls, nftables (pure).

`plan_network(topology, prefix, host)` turns a Topology into plain command lists that
`ravend.sim.netns` executes (`ip -batch` lines, `sysctl` settings, nft rulesets). Layout:

    root ns --veth /30-- api ns (API server, WAN .2)
                           |
    wan ns: bridge br0 = the internet (WAN .1 router), ports to:
      - api ns
      - every NAT region's router ns (wan0 = region public IP; nft masquerade LAN -> wan0 and
        no inbound connections)
      - every node of a public region (wan0 = node WAN IP, default route via the WAN)
    region ns r<i>: bridge br0 = the region's LAN; NAT regions also route (LAN .1 by default)
    node ns n<i>: eth0 on its region's LAN, bridge cni0 = pod CIDR .1, routes to same-region
                  nodes' pod CIDRs via their LAN IP (what a CNI does inside a pool)
    pod ns p<i>:  eth0 = pod CIDR .2, default via the node

Every LAN lives in its own namespaces, so regions may reuse the same CIDR and node IPs. Links
are created directly inside their namespaces (`ip link add ... netns X type veth peer ... netns
Y`), so link names never touch the root namespace except the one host link named <prefix>h.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from ravend.sim.topology import SimNode, Topology

BRIDGE_SYSCTLS = (
    # bridged frames would otherwise traverse the IP forward hook (environment.md)
    "net.bridge.bridge-nf-call-iptables=0",
    "net.bridge.bridge-nf-call-ip6tables=0",
    "net.bridge.bridge-nf-call-arptables=0",
)
COMMON_SYSCTLS = (
    # loose reverse-path filter: strict mode drops tunnel ingress once fwmark routing is used
    "net.ipv4.conf.all.rp_filter=2",
    "net.ipv4.conf.default.rp_filter=2",
    # a relaying hub must not tell edges to talk directly (send_redirects is OR-ed all/iface)
    "net.ipv4.conf.all.send_redirects=0",
    "net.ipv4.conf.default.send_redirects=0",
    # v6 addresses usable at once: DAD would delay them and nothing else uses these subnets
    "net.ipv6.conf.all.accept_dad=0",
    "net.ipv6.conf.default.accept_dad=0",
)
FORWARD_SYSCTLS = ("net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1")

NAT_RULESET = """\
table ip ravensim {
  chain postrouting {
    type nat hook postrouting priority srcnat; policy accept;
    oifname "wan0" masquerade
  }
  chain forward {
    type filter hook forward priority filter; policy accept;
    iifname "wan0" ct state established,related accept
    iifname "wan0" drop
  }
}
"""
"""A home/carrier NAT: LAN -> WAN masqueraded, nothing initiated from the WAN gets in."""

UPLINKS = ("eth0", "wan0")
"""Node-namespace links that leave the node (cut by `cut_links`)."""


@dataclass(frozen=True)
class HostLink:
    """The veth between the root namespace and the API namespace (a dedicated /30)."""

    root_name: str
    """Link name in the root namespace (<prefix>h, <= 15 chars)."""
    network: str
    """The /30, e.g. "198.19.3.4/30"; .1 is the root side, .2 the API namespace."""

    @property
    def root_ip(self) -> str:
        return str(ipaddress.ip_network(self.network).network_address + 1)

    @property
    def api_ip(self) -> str:
        return str(ipaddress.ip_network(self.network).network_address + 2)


@dataclass(frozen=True)
class NetPlan:
    """Everything to create, in order; names are all derived from `prefix`."""

    prefix: str
    namespaces: tuple[str, ...]
    """Every namespace, in creation order (teardown deletes them all)."""
    sysctls: Mapping[str, tuple[str, ...]]
    """Namespace -> "key=value" settings, applied before any link exists in it."""
    root_batch: tuple[str, ...]
    """`ip -batch` lines run in the root namespace: all veth pairs and the host link address."""
    ns_batches: Mapping[str, tuple[str, ...]]
    """Namespace -> `ip -batch` lines run inside it (bridges, addresses, routes)."""
    nft: Mapping[str, str]
    """Namespace -> nftables ruleset (`nft -f -`)."""
    host: HostLink
    wan_ns: str
    api_ns: str
    region_ns: Mapping[str, str] = field(default_factory=dict)
    """Region name -> namespace holding its LAN bridge (and router for NAT regions)."""
    node_ns: Mapping[str, str] = field(default_factory=dict)
    """Node name -> node namespace."""
    pod_ns: Mapping[str, str] = field(default_factory=dict)
    """Node name -> namespace of the node's pod."""


def plan_network(topo: Topology, prefix: str, host: HostLink) -> NetPlan:
    """The full build plan; deterministic for a given topology, prefix and host link."""
    b = _Builder(topo, prefix)
    b.wan()
    b.api(host)
    for i, region in enumerate(topo.regions):
        b.region(i, region.name)
    for i, node in enumerate(topo.nodes):
        b.node(i, node)
    return NetPlan(
        prefix=prefix,
        namespaces=tuple(b.batches),
        sysctls=MappingProxyType(b.sysctls),
        root_batch=tuple(b.root),
        ns_batches=MappingProxyType({ns: tuple(v) for ns, v in b.batches.items()}),
        nft=MappingProxyType(b.nft),
        host=host,
        wan_ns=b.wan_ns,
        api_ns=b.api_ns,
        region_ns=MappingProxyType(b.region_ns),
        node_ns=MappingProxyType(b.node_ns),
        pod_ns=MappingProxyType(b.pod_ns),
    )


def _plen(cidr: str) -> int:
    return ipaddress.ip_network(cidr).prefixlen


class _Builder:
    """Accumulates per-namespace command lists; one method per kind of namespace."""

    def __init__(self, topo: Topology, prefix: str) -> None:
        self.topo = topo
        self.prefix = prefix
        self.wan_ns = f"{prefix}wan"
        self.api_ns = f"{prefix}api"
        self.wan_len = _plen(topo.wan_cidr)
        self.root: list[str] = []
        self.batches: dict[str, list[str]] = {}
        self.sysctls: dict[str, tuple[str, ...]] = {}
        self.nft: dict[str, str] = {}
        self.region_ns: dict[str, str] = {}
        self.node_ns: dict[str, str] = {}
        self.pod_ns: dict[str, str] = {}

    def _ns(self, name: str, sysctls: tuple[str, ...]) -> list[str]:
        self.sysctls[name] = COMMON_SYSCTLS + sysctls
        lines = self.batches[name] = ["link set lo up"]
        return lines

    def _veth(self, ns_a: str, a: str, ns_b: str, b: str) -> None:
        self.root.append(f"link add name {a} netns {ns_a} type veth peer name {b} netns {ns_b}")

    @staticmethod
    def _bridge(lines: list[str], name: str) -> None:
        # forward_delay 0: ports forward at once (STP is off by default)
        lines += [f"link add {name} type bridge forward_delay 0", f"link set {name} up"]

    @staticmethod
    def _port(lines: list[str], bridge: str, port: str) -> None:
        lines += [f"link set {port} master {bridge}", f"link set {port} up"]

    def wan(self) -> None:
        lines = self._ns(self.wan_ns, BRIDGE_SYSCTLS + FORWARD_SYSCTLS)
        self._bridge(lines, "br0")
        lines.append(f"addr add {self.topo.wan_router_ip}/{self.wan_len} dev br0")

    def _wan_leg(self, ns: str, port: str, lines: list[str], ip: str) -> None:
        """A veth from `ns` (wan0) to the WAN bridge, addressed, default route via the WAN."""
        self._veth(ns, "wan0", self.wan_ns, port)
        self._port(self.batches[self.wan_ns], "br0", port)
        lines += [
            f"addr add {ip}/{self.wan_len} dev wan0",
            "link set wan0 up",
            f"route add default via {self.topo.wan_router_ip} dev wan0",
        ]

    def api(self, host: HostLink) -> None:
        lines = self._ns(self.api_ns, ())
        self._wan_leg(self.api_ns, "api", lines, self.topo.api_ip)
        self.root.append(
            f"link add name {host.root_name} type veth peer name host0 netns {self.api_ns}"
        )
        self.root += [
            f"addr add {host.root_ip}/30 dev {host.root_name}",
            f"link set {host.root_name} up",
        ]
        lines += [f"addr add {host.api_ip}/30 dev host0", "link set host0 up"]

    def region(self, index: int, name: str) -> None:
        region = self.topo.region(name)
        ns = self.region_ns[name] = f"{self.prefix}r{index}"
        extra = BRIDGE_SYSCTLS + (FORWARD_SYSCTLS if region.behind_nat else ())
        lines = self._ns(ns, extra)
        self._bridge(lines, "br0")
        if region.behind_nat:
            lines.append(f"addr add {region.router_ip}/{_plen(region.lan)} dev br0")
            self._wan_leg(ns, f"r{index}", lines, region.public_ip)
            self.nft[ns] = NAT_RULESET

    def node(self, index: int, node: SimNode) -> None:
        region = self.topo.region(node.region)
        ns = self.node_ns[node.name] = f"{self.prefix}n{index}"
        pod = self.pod_ns[node.name] = f"{self.prefix}p{index}"
        lines = self._ns(ns, BRIDGE_SYSCTLS + FORWARD_SYSCTLS)
        region_ns = self.region_ns[node.region]
        self._veth(ns, "eth0", region_ns, f"n{index}")
        self._port(self.batches[region_ns], "br0", f"n{index}")
        lines += [f"addr add {node.ip}/{_plen(region.lan)} dev eth0", "link set eth0 up"]
        if node.wan_ip:
            self._wan_leg(ns, f"n{index}", lines, node.wan_ip)
        else:
            lines.append(f"route add default via {region.router_ip} dev eth0")
        self._pod(ns, pod, node, lines)
        for peer in self.topo.nodes_in(node.region):
            if peer.name != node.name:
                # in-pool routing a CNI (flannel host-gw, calico) would install
                lines.append(f"route add {peer.pod_cidr} via {peer.ip} dev eth0")

    def _pod(self, node_ns: str, pod_ns: str, node: SimNode, lines: list[str]) -> None:
        self._bridge(lines, "cni0")
        lines.append(f"addr add {node.pod_gateway_ip}/{_plen(node.pod_cidr)} dev cni0")
        self._veth(node_ns, "pod0", pod_ns, "eth0")
        self._port(lines, "cni0", "pod0")
        pod_lines = self._ns(pod_ns, ())
        pod_lines += [
            f"addr add {node.pod_ip}/{_plen(node.pod_cidr)} dev eth0",
            "link set eth0 up",
            f"route add default via {node.pod_gateway_ip} dev eth0",
        ]
        if node.pod_cidr_v6:
            v6len = _plen(node.pod_cidr_v6)
            gw6 = ipaddress.ip_network(node.pod_cidr_v6).network_address + 1
            lines.append(f"addr add {gw6}/{v6len} dev cni0 nodad")
            pod_lines += [
                f"addr add {node.pod_ip_v6}/{v6len} dev eth0 nodad",
                f"route add ::/0 via {gw6} dev eth0",
            ]
