"""`diff(desired, actual) -> ops`: what to change in the kernel (pure, no I/O).

`actual` is read from the kernel each pass and holds only ravend's objects (its links, its
tables, its route protocol), so anything missing is re-added and anything extra is removed
without ever touching objects of the CNI or the administrator. Ops come out in a safe order:
stale rules and routes go first, links are created before what hangs off them, and routes
and rules are added last, once their link and next hop exist.
"""

from __future__ import annotations

from collections.abc import Iterable

from ravend.l3.addressing import sort_cidrs
from ravend.l3.ops import (
    AddAddress,
    AddFdb,
    AddNeigh,
    AddRoute,
    AddRule,
    ConfigureWireGuard,
    CreateVxlan,
    CreateWireGuard,
    DelAddress,
    DeleteLink,
    DeleteNft,
    DeleteWireGuard,
    DelFdb,
    DelNeigh,
    DelRoute,
    DelRule,
    Op,
    ReplaceNft,
    SetLinkMtu,
    SetLinkUp,
    SetSysctl,
)
from ravend.l3.settings import L3Settings
from ravend.l3.state import (
    KernelSnapshot,
    L3State,
    LinkState,
    VxlanDevice,
    WgDevice,
    WgPeer,
    WgPeerState,
)


def diff(desired: L3State, actual: KernelSnapshot, settings: L3Settings) -> list[Op]:
    """Ops that turn `actual` into `desired`; empty when they already agree."""
    rebuilt: set[str] = set()
    ops: list[Op] = [DelRule(r) for r in sorted(set(actual.rules) - set(desired.rules))]
    # A hub holds ~4,000 routes and this runs twice per pass: when both sides hold the same
    # routes (the usual case) one tuple comparison settles it instead of hashing them all.
    same_routes = desired.routes == actual.routes
    if not same_routes:
        want_routes = {(r.table, r.dst): r for r in desired.routes}
        ops += [DelRoute(r) for r in actual.routes if want_routes.get((r.table, r.dst)) != r]
    ops += _vxlan_ops(desired.vxlan, actual, settings.vxlan_link, rebuilt)
    ops += _wireguard_ops(desired.wireguard, actual, settings.wireguard_link)
    if desired.nft is None and actual.nft_digest is not None:
        ops.append(DeleteNft(settings.nft_table))
    elif desired.nft is not None and actual.nft_digest != desired.nft.digest:
        ops.append(ReplaceNft(desired.nft))
    ops += [SetSysctl(s) for s in desired.sysctls if actual.sysctls.get(s.path) != s.value]
    if not same_routes or rebuilt:
        have_routes = {r for r in actual.routes if r.dev not in rebuilt}
        ops += [AddRoute(r) for r in desired.routes if r not in have_routes]
    ops += [AddRule(r) for r in desired.rules if r not in set(actual.rules)]
    return ops


def _link_basics(name: str, mtu: int, link: LinkState | None) -> list[Op]:
    ops: list[Op] = []
    if link is None or link.mtu != mtu:
        ops.append(SetLinkMtu(name, mtu))
    if link is None or not link.up:
        ops.append(SetLinkUp(name))
    return ops


def _own_addresses(link: LinkState | None) -> tuple[str, ...]:
    # The kernel adds an IPv6 link-local address to every link: not ours to remove.
    return tuple(a for a in link.addresses if not a.startswith("fe80:")) if link else ()


def _vxlan_ops(
    want: VxlanDevice | None, actual: KernelSnapshot, name: str, rebuilt: set[str]
) -> list[Op]:
    link = actual.links.get(name)
    if want is None:
        return [DeleteLink(name)] if link is not None else []
    if link is None or not _same_vxlan(want, link):
        rebuilt.add(name)
        ops: list[Op] = [DeleteLink(name)] if link is not None else []
        ops.append(CreateVxlan(want))
        ops += [AddAddress(name, a) for a in want.addresses]
        ops += [AddFdb(name, e) for e in want.fdb]
        ops += [AddNeigh(name, n) for n in want.neighbours]
        return ops
    ops = _link_basics(name, want.mtu, link)
    have = set(_own_addresses(link))
    ops += [DelAddress(name, a) for a in sorted(have - set(want.addresses))]
    ops += [AddAddress(name, a) for a in want.addresses if a not in have]
    ops += [DelFdb(name, e) for e in sorted(set(actual.fdb) - set(want.fdb))]
    ops += [AddFdb(name, e) for e in want.fdb if e not in set(actual.fdb)]
    ops += [DelNeigh(name, n) for n in sorted(set(actual.neighbours) - set(want.neighbours))]
    ops += [AddNeigh(name, n) for n in want.neighbours if n not in set(actual.neighbours)]
    return ops


def _same_vxlan(want: VxlanDevice, link: LinkState) -> bool:
    return (link.kind, link.vni, link.port, link.local_ip, link.mac) == (
        "vxlan",
        want.vni,
        want.port,
        want.local_ip,
        want.mac,
    )


def _wireguard_ops(want: WgDevice | None, actual: KernelSnapshot, name: str) -> list[Op]:
    link = actual.links.get(name)
    if want is None:
        exists = link is not None or actual.wireguard is not None
        return [DeleteWireGuard(name)] if exists else []
    ops: list[Op] = []
    if link is None or actual.wireguard is None:
        ops.append(CreateWireGuard(name))
    ops += _link_basics(name, want.mtu, link)
    dev = actual.wireguard
    have = {p.public_key: p for p in dev.peers} if dev else {}
    wanted = want.all_peers
    upsert = tuple(p for p in wanted if not _same_peer(p, have.get(p.public_key)))
    remove = tuple(sorted(set(have) - {p.public_key for p in wanted}))
    key = None if dev and dev.public_key == want.public_key else want.private_key_path
    port = None if dev and dev.listen_port == want.listen_port else want.listen_port
    if upsert or remove or key or port:
        ops.append(ConfigureWireGuard(name, key, port, upsert, remove))
    return ops


def _same_peer(want: WgPeer, have: WgPeerState | None) -> bool:
    if have is None:
        return False
    # A listener's peer endpoint is learnt from handshakes and roams with NAT: only an
    # endpoint we dial ourselves is compared.
    endpoint_ok = want.endpoint is None or want.endpoint == have.endpoint
    return (
        endpoint_ok
        and want.keepalive_s == have.keepalive_s
        and _same_cidrs(want.allowed_ips, have.allowed_ips)
    )


def _same_cidrs(want: tuple[str, ...], have: tuple[str, ...]) -> bool:
    # The device reports AllowedIPs normalised but in its own order: comparing sets settles
    # almost every peer without parsing; only a mismatch pays for normalising both sides.
    return set(want) == set(have) or _cidrs(want) == _cidrs(have)


def _cidrs(cidrs: Iterable[str]) -> tuple[str, ...]:
    return sort_cidrs(cidrs)
