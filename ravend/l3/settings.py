"""L3 settings: one frozen group of values for tunnels, routing and probing (pure, no I/O).

Defaults keep Raven's kernel conventions (link names, VNI, ports, tables, fwmark) so an operator
who knows Raven finds the same objects; everything ravend adds (route protocol, nft table name,
MTU overheads) is documented here, in one place.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class WireGuardBackend(StrEnum):
    """Which WireGuard implementation drives `raven-wg0`."""

    AUTO = "auto"
    """Kernel module if netlink reports it, else wireguard-go (raven#193: kernels without it)."""
    KERNEL = "kernel"
    USERSPACE = "userspace"


RAVEND_ROUTE_PROTO = 76
"""rtnetlink protocol number stamped on every route and rule ravend installs (0x4c, "L").

Unassigned in /etc/iproute2/rt_protos and by the kernel (which reserves < 4 and uses well-known
daemon numbers such as 186 bgp, 188 ospf). It is how ravend recognises its own objects after a
restart without any state on disk: `ip route show proto 76` lists exactly what ravend owns."""


@dataclass(frozen=True)
class L3Settings:
    """Everything the L3 plane needs besides the cluster view; built once at start-up."""

    enabled: bool = True
    """Node-local kill switch; the cluster-wide switch is raven-cfg `enable-l3-tunnel`."""
    wireguard_backend: WireGuardBackend = WireGuardBackend.AUTO
    """Kernel WireGuard or wireguard-go; `auto` probes the kernel once at start-up."""
    wireguard_go_binary: str = "wireguard-go"
    """Path or name of the userspace daemon, started as `wireguard-go -f <ifname>`."""
    listen_port: int = 4500
    """UDP port WireGuard listens on (Raven's tunnel endpoint port) when the endpoint has none."""
    keepalive_s: int = 5
    """Persistent keepalive, seconds: well under the 30 s unreplied-UDP conntrack timeout of NAT
    routers, and short enough that a roaming NAT mapping is re-learnt within one interval."""
    vxlan_vni: int = 200
    """VXLAN network identifier of `raven0` (Raven's value)."""
    vxlan_port: int = 4472
    """UDP destination port of `raven0` (Raven's value; not 4789, which the CNI may use)."""
    wg_overhead: int = 80
    """Bytes WireGuard adds in the worst case (IPv6 outer header 40 + UDP 8 + WG 32)."""
    vxlan_overhead: int = 50
    """Bytes VXLAN adds over IPv4 (outer IP 20 + UDP 8 + VXLAN 8 + inner Ethernet 14)."""
    route_proto: int = RAVEND_ROUTE_PROTO
    """Protocol number marking ravend-owned routes and rules (see RAVEND_ROUTE_PROTO)."""
    member_table: int = 9027
    """Routing table of traffic leaving a pool member towards its gateway (and, on the gateway,
    of traffic coming out of the tunnel towards members): Raven's number."""
    tunnel_table: int = 9028
    """Routing table on the gateway sending remote subnets into `raven-wg0`: Raven's number."""
    tunnel_rule_priority: int = 101
    """`ip rule` priority of the `lookup tunnel_table` rule (Raven's value)."""
    member_rule_priority: int = 100
    """`ip rule` priority of the fwmark / iif rules that select `member_table`."""
    fwmark: int = 0x40
    """Mark bit set on packets to remote subnets; only this bit is set and matched (mask ==
    mark) so marks of the CNI or kube-proxy (0x4000, 0x8000) are left untouched."""
    nft_table: str = "ravend"
    """Name of the nftables `inet` table ravend owns and replaces as a whole."""
    forward_node_ip: bool = True
    """Also route remote nodes' private IPs (/32, /128) through the tunnel, so host-to-host
    traffic works (Raven's --forward-node-ip). Colliding IPs are dropped with a reason."""
    overlay_v4_prefix: str = "240.0.0.0/8"
    """IPv4 overlay of `raven0`: the low 24 bits of the node IP go in it (Raven's scheme)."""
    overlay_v6_prefix: str = "fd52:6176:656e:3030::/64"
    """IPv6 overlay of `raven0` (ULA, "Raven00"): the low 64 bits of the node IP go in it."""
    probe_interval_s: float = 1.0
    """Seconds between link probes through each tunnel (health, RTT, loss)."""
    resync_period_s: float = 30.0
    """Seconds between full reconcile passes even without a trigger, to repair drift."""
    vxlan_link: str = "raven0"
    """Name of the VXLAN link; overridable because tests run many nodes on one host."""
    wireguard_link: str = "raven-wg0"
    """Name of the WireGuard link; overridable because /var/run/wireguard/<name>.sock is shared
    by every network namespace, so two wireguard-go instances of one name collide."""
    state_dir: str = "/var/lib/raven"
    """Directory for the persistent WireGuard private key (file `wireguard.key`, mode 0600)."""

    @property
    def owned_tables(self) -> tuple[int, int]:
        return (self.member_table, self.tunnel_table)

    @property
    def owned_links(self) -> tuple[str, str]:
        return (self.vxlan_link, self.wireguard_link)
