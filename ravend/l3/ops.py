"""The operations `diff()` emits and the adapters apply (pure values, no I/O).

Each op is idempotent when applied: "already exists" on add and "not found" on delete count as
success, so re-applying a pass after a partial failure converges.
"""

from __future__ import annotations

from dataclasses import dataclass

from ravend.l3.state import (
    FdbEntry,
    Neighbour,
    NftRuleset,
    Route,
    Rule,
    Sysctl,
    VxlanDevice,
    WgPeer,
)


@dataclass(frozen=True)
class CreateVxlan:
    """Create the VXLAN link with its VNI, port, local IP, MAC and MTU, learning off, and up."""

    dev: VxlanDevice


@dataclass(frozen=True)
class DeleteLink:
    name: str


@dataclass(frozen=True)
class SetLinkMtu:
    name: str
    mtu: int


@dataclass(frozen=True)
class SetLinkUp:
    name: str


@dataclass(frozen=True)
class AddAddress:
    link: str
    cidr: str


@dataclass(frozen=True)
class DelAddress:
    link: str
    cidr: str


@dataclass(frozen=True)
class AddFdb:
    link: str
    entry: FdbEntry


@dataclass(frozen=True)
class DelFdb:
    link: str
    entry: FdbEntry


@dataclass(frozen=True)
class AddNeigh:
    link: str
    entry: Neighbour


@dataclass(frozen=True)
class DelNeigh:
    link: str
    entry: Neighbour


@dataclass(frozen=True)
class AddRoute:
    """Add or replace (same table and destination) a route, stamped with ravend's protocol."""

    route: Route


@dataclass(frozen=True)
class DelRoute:
    route: Route


@dataclass(frozen=True)
class AddRule:
    rule: Rule


@dataclass(frozen=True)
class DelRule:
    rule: Rule


@dataclass(frozen=True)
class SetSysctl:
    sysctl: Sysctl


@dataclass(frozen=True)
class ReplaceNft:
    ruleset: NftRuleset


@dataclass(frozen=True)
class DeleteNft:
    table: str


@dataclass(frozen=True)
class CreateWireGuard:
    """Bring the WireGuard link into existence (kernel link or wireguard-go), adopting one
    that already runs."""

    name: str


@dataclass(frozen=True)
class DeleteWireGuard:
    name: str


@dataclass(frozen=True)
class ConfigureWireGuard:
    """Incremental device update: untouched peers keep their sessions (no replace_peers)."""

    name: str
    private_key_path: str | None
    """Load and set the key from this file; None when the device already has the right key."""
    listen_port: int | None
    """None when unchanged."""
    upsert: tuple[WgPeer, ...]
    """Peers to add or update (AllowedIPs replaced); an endpoint of None is left as learnt."""
    remove: tuple[str, ...]
    """Public keys of peers to remove."""


Op = (
    CreateVxlan
    | DeleteLink
    | SetLinkMtu
    | SetLinkUp
    | AddAddress
    | DelAddress
    | AddFdb
    | DelFdb
    | AddNeigh
    | DelNeigh
    | AddRoute
    | DelRoute
    | AddRule
    | DelRule
    | SetSysctl
    | ReplaceNft
    | DeleteNft
    | CreateWireGuard
    | DeleteWireGuard
    | ConfigureWireGuard
)
