"""Plain values of the L3 plane: the desired state, the kernel snapshot and the ops (pure, no I/O).

`plan()` produces an `L3State`; the netlink/UAPI adapters read a `KernelSnapshot` holding only
objects ravend owns; `diff()` turns the pair into `Op`s that the adapters apply. Every collection
is a sorted tuple so two plans from the same view compare equal and print identically.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType


class Role(StrEnum):
    """What this node does in L3: tunnel endpoint of its pool, member routing via it, or nothing."""

    GATEWAY = "gateway"
    MEMBER = "member"
    NONE = "none"


@dataclass(frozen=True, order=True)
class WgPeer:
    """One WireGuard peer as ravend wants it (keys are standard base64)."""

    public_key: str
    endpoint: str | None
    """"host:port" or "[v6]:port" to dial; None when the peer dials us (it is under NAT)."""
    allowed_ips: tuple[str, ...]
    keepalive_s: int
    gateway: str = field(default="", compare=False)
    """Gateway name the peer stands for (logs, probes); not a kernel attribute."""


@dataclass(frozen=True)
class WgDevice:
    """The desired `raven-wg0`: our key (by reference), port, MTU and peers sorted by key.

    A gateway has one with routes into it; a standby candidate (role MEMBER) has the same device
    with no route into it, so promotion changes routes and peers' AllowedIPs, never the peers.
    """

    name: str
    public_key: str
    """Public key of the private key at `private_key_path`; compared with the device's key."""
    private_key_path: str
    listen_port: int
    mtu: int
    peers: tuple[WgPeer, ...]
    """Active endpoints of the peer Gateways: they own the AllowedIPs (and are probed)."""
    standby_peers: tuple[WgPeer, ...] = ()
    """Warm standby candidates of peer Gateways: key and endpoint, no AllowedIPs, so handshakes
    stay fresh and a failover only moves AllowedIPs. Disjoint from `peers` by key."""

    @property
    def all_peers(self) -> tuple[WgPeer, ...]:
        """Every peer the device holds, sorted by key."""
        return tuple(sorted((*self.peers, *self.standby_peers)))


@dataclass(frozen=True, order=True)
class FdbEntry:
    """A static VXLAN forwarding entry: frames for `mac` go to underlay address `dst`."""

    mac: str
    dst: str


@dataclass(frozen=True, order=True)
class Neighbour:
    """A permanent neighbour entry on the VXLAN link: overlay `ip` has link address `mac`."""

    ip: str
    mac: str


@dataclass(frozen=True)
class VxlanDevice:
    """The desired `raven0`: static FDB and neighbours, no learning."""

    name: str
    vni: int
    port: int
    local_ip: str
    mtu: int
    mac: str
    addresses: tuple[str, ...]
    """Overlay addresses with prefix length, e.g. "240.0.1.5/8"."""
    fdb: tuple[FdbEntry, ...]
    neighbours: tuple[Neighbour, ...]


@dataclass(frozen=True, order=True)
class Route:
    """A route ravend owns (always stamped with its protocol number)."""

    table: int
    dst: str
    """Normalised CIDR; a default route is "0.0.0.0/0" or "::/0"."""
    dev: str
    via: str | None = None
    mtu: int = 0
    """Route MTU (0 = none), so TCP on the node picks the tunnel's MSS."""


def route_order(r: Route) -> tuple[int, str, str, str, int]:
    """Sort key giving `Route`'s own order (a hub sorts ~4,000 routes: the dataclass's
    generated comparisons made that ~6x slower)."""
    return (r.table, r.dst, r.dev, r.via or "", r.mtu)


@dataclass(frozen=True, order=True)
class Rule:
    """A policy routing rule ravend owns."""

    family: int
    """4 or 6."""
    priority: int
    table: int
    fwmark: int = 0
    fwmask: int = 0
    iif: str = ""


@dataclass(frozen=True, order=True)
class Sysctl:
    """A /proc/sys value, `path` relative to /proc/sys with slashes ("net/ipv4/ip_forward")."""

    path: str
    value: str


@dataclass(frozen=True)
class NftRuleset:
    """Complete text of ravend's nftables table; replaced as a whole when its digest changes."""

    table: str
    body: str
    """The statements inside `table inet <table> { ... }`, without the comment line."""

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.body.encode()).hexdigest()[:16]

    def script(self) -> str:
        """An `nft -f` script replacing the table atomically (one transaction)."""
        return (
            f"table inet {self.table} {{}}\ndelete table inet {self.table}\n"
            f'table inet {self.table} {{\n  comment "ravend {self.digest}"\n{self.body}}}\n'
        )


@dataclass(frozen=True, order=True)
class Skipped:
    """Something the plan left out, with the reason (reported in status and logs)."""

    subject: str
    reason: str


@dataclass(frozen=True)
class L3State:
    """Everything this node's kernel should hold for L3; `EMPTY` removes all ravend objects."""

    role: Role = Role.NONE
    gateway: str = ""
    """Name of this node's Gateway ("" if none)."""
    wireguard: WgDevice | None = None
    vxlan: VxlanDevice | None = None
    routes: tuple[Route, ...] = ()
    rules: tuple[Rule, ...] = ()
    sysctls: tuple[Sysctl, ...] = ()
    nft: NftRuleset | None = None
    remote_subnets: tuple[str, ...] = ()
    """Every CIDR reached through the tunnels (what probes and diagnostics cover)."""
    skipped: tuple[Skipped, ...] = ()


EMPTY = L3State()


@dataclass(frozen=True)
class WgPeerState:
    """A peer as the WireGuard device reports it."""

    public_key: str
    endpoint: str | None = None
    allowed_ips: tuple[str, ...] = ()
    keepalive_s: int = 0
    last_handshake_ns: int = 0
    """Wall-clock time of the last handshake in ns since the epoch (0 = never)."""
    rx_bytes: int = 0
    tx_bytes: int = 0


@dataclass(frozen=True)
class WgDeviceState:
    """A WireGuard device as reported by the kernel or wireguard-go."""

    public_key: str = ""
    """Derived from the device's private key ("" if it has none)."""
    listen_port: int = 0
    fwmark: int = 0
    peers: tuple[WgPeerState, ...] = ()


@dataclass(frozen=True)
class LinkState:
    """An owned link as the kernel reports it (vxlan fields are 0/"" for other kinds)."""

    name: str
    kind: str
    mtu: int
    mac: str = ""
    up: bool = False
    addresses: tuple[str, ...] = ()
    vni: int = 0
    port: int = 0
    local_ip: str = ""


@dataclass(frozen=True)
class KernelSnapshot:
    """What the kernel holds of ravend's objects (its links, tables, protocol), read fresh."""

    links: Mapping[str, LinkState] = field(default_factory=lambda: MappingProxyType({}))
    routes: tuple[Route, ...] = ()
    rules: tuple[Rule, ...] = ()
    fdb: tuple[FdbEntry, ...] = ()
    """Entries on the VXLAN link with a unicast dst (the all-zero flood entry is ignored)."""
    neighbours: tuple[Neighbour, ...] = ()
    """Permanent neighbours on the VXLAN link."""
    sysctls: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    """Current values of the paths asked for (missing path = absent key)."""
    nft_digest: str | None = None
    """Digest in the comment of ravend's nft table; None if the table does not exist."""
    wireguard: WgDeviceState | None = None
    """State of the WireGuard device, None if it is not running."""
    underlay_mtu: int = 0
    """MTU of the link holding the node IP, read with the links (0 = not read or not found)."""
