"""Reads ravend's kernel objects over rtnetlink (I/O; the only pyroute2 user, house style 5).

Only what ravend owns is returned: its two links, routes carrying its protocol number, rules
carrying its protocol number or pointing at its tables, and the permanent FDB and neighbour
entries of its VXLAN link. Writes go through `ravend.l3.kernel` (`ip -batch`, measured faster
than one pyroute2 request per object); link-kind probing for kernel WireGuard lives here.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pyroute2 import AsyncIPRoute
from pyroute2.netlink import rtnl
from pyroute2.netlink.exceptions import NetlinkError

from ravend.l3.settings import L3Settings
from ravend.l3.state import FdbEntry, LinkState, Neighbour, Route, Rule

log = logging.getLogger(__name__)

_AF = {2: 4, 10: 6}
_NUD_PERMANENT = 0x80
_ENOENT, _EOPNOTSUPP = 2, 95


@dataclass(frozen=True)
class NetlinkObjects:
    links: dict[str, LinkState]
    routes: tuple[Route, ...]
    rules: tuple[Rule, ...]
    fdb: tuple[FdbEntry, ...]
    neighbours: tuple[Neighbour, ...]
    underlay_mtu: int = 0
    """MTU of the link holding the `node_ip` asked for (0 = none asked or none has it)."""


def _vxlan_fields(msg: Any) -> tuple[str, int, int, str]:
    info = msg.get("IFLA_LINKINFO")
    kind = (info.get("IFLA_INFO_KIND") if info else None) or ""
    data = info.get("IFLA_INFO_DATA") if info else None
    if kind != "vxlan" or not data:
        return kind, 0, 0, ""
    return (
        kind,
        data.get("IFLA_VXLAN_ID") or 0,
        data.get("IFLA_VXLAN_PORT") or 0,
        data.get("IFLA_VXLAN_LOCAL") or data.get("IFLA_VXLAN_LOCAL6") or "",
    )


async def _links(
    ipr: Any, names: tuple[str, ...], node_ip: str = ""
) -> tuple[dict[str, LinkState], dict[int, str], int]:
    links: dict[str, LinkState] = {}
    index: dict[int, str] = {}
    mtus: dict[int, int] = {}
    async for msg in await ipr.link("dump"):
        mtus[msg["index"]] = msg.get("mtu") or 0
        name = msg.get("ifname")
        if name not in names:
            continue
        kind, vni, port, local = _vxlan_fields(msg)
        index[msg["index"]] = name
        links[name] = LinkState(
            name=name,
            kind=kind,
            mtu=msg.get("mtu") or 0,
            mac=msg.get("address") or "",
            up=bool(msg["flags"] & 1),
            vni=vni,
            port=port,
            local_ip=local,
        )
    addrs: dict[str, list[str]] = {n: [] for n in links}
    underlay = 0
    async for msg in await ipr.addr("dump"):
        if (name := index.get(msg["index"])) is not None:
            addrs[name].append(f"{msg.get('address')}/{msg['prefixlen']}")
        if node_ip and msg.get("address") == node_ip:
            # The tunnels' underlay (as `underlay_mtu()` finds it), read from the same dumps.
            underlay = mtus.get(msg["index"], 0)
    for name, link in links.items():
        links[name] = LinkState(**{**link.__dict__, "addresses": tuple(sorted(addrs[name]))})
    return links, index, underlay


def _dst(msg: Any) -> str:
    fam = _AF[msg["family"]]
    dst = msg.get("dst") or ("0.0.0.0" if fam == 4 else "::")
    return str(ipaddress.ip_network(f"{dst}/{msg['dst_len']}", strict=False))


async def _routes(ipr: Any, s: L3Settings, index: dict[int, str]) -> tuple[Route, ...]:
    routes = []
    for family in (2, 10):
        async for msg in await ipr.route("dump", family=family):
            if msg["proto"] != s.route_proto:
                continue
            metrics = msg.get("RTA_METRICS")
            mtu = (metrics.get("RTAX_MTU") if metrics else 0) or 0
            routes.append(
                Route(
                    table=msg.get("table") or msg["table"],
                    dst=_dst(msg),
                    dev=index.get(msg.get("oif") or 0, f"#{msg.get('oif')}"),
                    via=msg.get("gateway"),
                    mtu=mtu,
                )
            )
    return tuple(sorted(routes))


async def _rules(ipr: Any, s: L3Settings) -> tuple[Rule, ...]:
    rules = []
    async for msg in await ipr.rule("dump"):
        table = msg.get("table") or msg["table"]
        if msg.get("FRA_PROTOCOL") != s.route_proto and table not in s.owned_tables:
            continue
        rules.append(
            Rule(
                family=_AF[msg["family"]],
                priority=msg.get("priority") or 0,
                table=table,
                fwmark=msg.get("fwmark") or 0,
                fwmask=msg.get("fwmask") or 0,
                iif=msg.get("iifname") or "",
            )
        )
    return tuple(sorted(rules))


async def _neighbours(
    ipr: Any, vx_index: int | None
) -> tuple[tuple[FdbEntry, ...], tuple[Neighbour, ...]]:
    if vx_index is None:
        return (), ()
    fdb, neigh = [], []
    async for msg in await ipr.fdb("dump"):
        mac, dst = msg.get("lladdr"), msg.get("dst")
        if msg["ifindex"] == vx_index and dst and mac and mac != "00:00:00:00:00:00":
            fdb.append(FdbEntry(mac, dst))
    async for msg in await ipr.neigh("dump"):
        if msg["ifindex"] == vx_index and msg["state"] & _NUD_PERMANENT and msg.get("lladdr"):
            neigh.append(Neighbour(msg.get("dst"), msg.get("lladdr")))
    return tuple(sorted(fdb)), tuple(sorted(neigh))


async def read_objects(
    s: L3Settings, netns: str | None = None, *, routes: bool = True, node_ip: str = ""
) -> NetlinkObjects:
    """Dump ravend's links, routes (unless `routes=False`: the kernel adapter reads them with
    `ip -j`, much faster at thousands), rules, FDB and neighbours from the kernel, and the MTU
    of the link holding `node_ip` if one is given."""
    async with AsyncIPRoute(**({"netns": netns} if netns else {})) as ipr:
        links, index, underlay = await _links(ipr, s.owned_links, node_ip)
        vx_index = next((i for i, n in index.items() if n == s.vxlan_link), None)
        routes_ = await _routes(ipr, s, index) if routes else ()
        rules = await _rules(ipr, s)
        fdb, neigh = await _neighbours(ipr, vx_index)
    return NetlinkObjects(links, routes_, rules, fdb, neigh, underlay)


async def kernel_wireguard_available(netns: str | None = None) -> bool:
    """Probe for the WireGuard module: creating a link of that kind fails with EOPNOTSUPP
    (or ENOENT) without it. The probe link is removed at once."""
    probe = "ravend-wgprobe"
    async with AsyncIPRoute(**({"netns": netns} if netns else {})) as ipr:
        try:
            await ipr.link("add", ifname=probe, kind="wireguard")
        except NetlinkError as e:
            if e.code in (_EOPNOTSUPP, _ENOENT):
                return False
            if e.code != 17:  # EEXIST: a previous probe left it; the kind exists
                raise
        try:
            await ipr.link("del", ifname=probe)
        except NetlinkError as e:
            log.warning("could not remove WireGuard probe link: %s", e)
    return True


async def underlay_mtu(node_ip: str, netns: str | None = None, default: int = 1500) -> int:
    """MTU of the link holding `node_ip` (the tunnels' underlay); `default` if none has it."""
    async with AsyncIPRoute(**({"netns": netns} if netns else {})) as ipr:
        index = None
        async for msg in await ipr.addr("dump"):
            if msg.get("address") == node_ip:
                index = msg["index"]
                break
        if index is None:
            return default
        async for msg in await ipr.link("dump"):
            if msg["index"] == index:
                return int(msg.get("mtu") or default)
    return default


class EventsLost(OSError):
    """The event socket overflowed (or failed): some changes were never announced."""


_SO_RCVBUFFORCE = 33  # Linux; the socket module does not name it
_EVENT_BUFFER = 16 << 20


_GROUPS = (
    rtnl.RTMGRP_LINK
    | rtnl.RTMGRP_NEIGH  # FDB entries too
    | rtnl.RTMGRP_IPV4_IFADDR
    | rtnl.RTMGRP_IPV6_IFADDR
    | rtnl.RTMGRP_IPV4_ROUTE
    | rtnl.RTMGRP_IPV6_ROUTE
    | rtnl.RTMGRP_IPV4_RULE
    | rtnl.RTMGRP_IPV6_RULE
)
"""Every kind of object a `KernelSnapshot` holds that the kernel announces (WireGuard peers,
nft and sysctls announce nothing; the periodic resync reads them). The named constants, not
hand-written masks: rules are groups 8 and 19 (0x80, 0x40000), not what their order suggests."""


def _owned_event(msg: Any, s: L3Settings, owned: set[int]) -> bool:
    """Whether `msg` changes an object ravend owns; keeps `owned` (ifindexes of ravend's
    links) current, since address, neighbour and FDB events name the link by index only."""
    event = msg.get("event") or ""
    if event.endswith("LINK"):
        if msg.get("ifname") not in s.owned_links:
            return False
        (owned.discard if event == "RTM_DELLINK" else owned.add)(msg["index"])
        return True
    if event.endswith("ADDR"):
        return msg.get("index") in owned
    if event.endswith("NEIGH"):
        return msg.get("ifindex") in owned
    table = msg.get("table") or msg.get("RTA_TABLE") or 0
    if event.endswith("ROUTE"):
        return msg.get("proto") == s.route_proto or table in s.owned_tables
    if event.endswith("RULE"):
        return table in s.owned_tables or msg.get("FRA_PROTOCOL") == s.route_proto
    return False


async def _owned_indexes(s: L3Settings, netns: str | None) -> set[int]:
    async with AsyncIPRoute(**({"netns": netns} if netns else {})) as ipr:
        return {
            m["index"] async for m in await ipr.link("dump") if m.get("ifname") in s.owned_links
        }


async def watch_owned(
    s: L3Settings,
    netns: str | None,
    notify: Callable[[], None],
    subscribed: Callable[[], None] | None = None,
) -> None:
    """Call `notify()` for every kernel change to ravend's links, addresses, neighbours, FDB
    entries, routes or rules (runs until cancelled or the socket fails, then raises).
    Someone deleting a route or link gets it re-added within one pass, without waiting for
    the periodic resync; ravend's own changes notify too (one more pass, which finds nothing).

    `subscribed()` is called once events flow: from then on, a change the caller has not been
    told about has not happened (the agent then trusts its last snapshot, `SnapshotCache`)."""
    async with AsyncIPRoute(**({"netns": netns} if netns else {})) as ipr:
        # Our own 4,000-route initial pass announces itself faster than Python decodes it;
        # the default buffer (capped by rmem_max) overflows and events are lost (EventsLost).
        with contextlib.suppress(OSError):  # needs CAP_NET_ADMIN, which L3 has anyway
            ipr.setsockopt(socket.SOL_SOCKET, _SO_RCVBUFFORCE, _EVENT_BUFFER)
        await ipr.bind(groups=_GROUPS)
        # Indexes read after binding: a link created in between is announced by an event.
        owned = await _owned_indexes(s, netns)
        if subscribed is not None:
            subscribed()
        while True:
            async for msg in ipr.get():
                if (err := msg["header"].get("error")) is not None:
                    # ENOBUFS: events were dropped, so silence no longer means "no change".
                    raise EventsLost(f"netlink event socket: {err}")
                if _owned_event(msg, s, owned):
                    notify()
