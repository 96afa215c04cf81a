"""The L3 checks of `ravectl diagnose`: links, routing, MTU/MSS, tunnel handshakes (pure).

Split from `checks` to keep modules small; same conventions (see its docstring).
"""

from __future__ import annotations

from collections.abc import Sequence

from ravend.ctl.facts import (
    FWMARK,
    MEMBER_TABLE,
    TUNNEL_TABLE,
    VXLAN_LINK,
    WG_LINK,
    CheckResult,
    NodeFacts,
    Status,
    WgPeerFact,
)
from ravend.ctl.facts import (
    result as _r,
)

WG_OVERHEAD = 80
VXLAN_OVERHEAD = 50
HANDSHAKE_STALE_S = 180
"""WireGuard re-handshakes every 120 s on an active link; older than this means a dead link."""


def wanted_links(f: NodeFacts) -> tuple[str, ...]:
    if f.role == "gateway":
        return (WG_LINK, VXLAN_LINK) if f.has_members else (WG_LINK,)
    if f.role == "member":
        # A standby tunnel candidate keeps a warm WireGuard device (no routes) next to raven0,
        # so a failover to it moves routes only.
        return (VXLAN_LINK, WG_LINK) if f.standby else (VXLAN_LINK,)
    return ()


def check_links(f: NodeFacts) -> list[CheckResult]:
    """raven-wg0 on the gateway and on standby candidates (with a WireGuard device that
    answers), raven0 for members."""
    if f.role is None:
        return [_r(f, "links", Status.SKIP, "L3 does not run on this node")]
    if f.links is None:
        return [_r(f, "links", Status.WARN, "could not list links", "run diagnose on the node")]
    out = []
    for name in wanted_links(f):
        link = f.link(name)
        if link is None:
            fix = (
                f"the agent recreates {name} on its next pass (≤ 30 s); if it stays missing "
                "read the agent log (wireguard-go exited? backend unsupported?)"
            )
            out.append(_r(f, f"links/{name}", Status.FAIL, f"{name} is missing", fix))
        elif not link.up:
            out.append(
                _r(
                    f,
                    f"links/{name}",
                    Status.FAIL,
                    f"{name} is down",
                    f"ip link set {name} up; the agent should keep it up: read its log",
                )
            )
        else:
            out.append(
                _r(f, f"links/{name}", Status.OK, f"{name} ({link.kind}) up, mtu {link.mtu}")
            )
    if WG_LINK in wanted_links(f) and f.link(WG_LINK) is not None and f.wg_peers is None:
        out.append(
            _r(
                f,
                "links/wireguard-device",
                Status.FAIL,
                f"{WG_LINK} exists but its WireGuard interface does not answer",
                "wireguard-go is not running or its UAPI socket is gone: restart the "
                "ravend agent on this node",
            )
        )
    return out


def _diff_lines(planned: Sequence[str], present: Sequence[str]) -> list[str]:
    have = set(present)
    return [p for p in planned if p not in have]


def check_routing(f: NodeFacts) -> list[CheckResult]:
    """Planned vs present: the agent's own diff when it publishes one, else the essentials."""
    if f.role is None:
        return [_r(f, "routing", Status.SKIP, "L3 does not run on this node")]
    if f.planned is not None and f.present is not None:
        out = []
        for kind in sorted(f.planned):
            missing = _diff_lines(f.planned[kind], f.present.get(kind, ()))
            status = Status.FAIL if missing else Status.OK
            detail = (
                f"{len(missing)} planned {kind} missing: {'; '.join(missing[:5])}"
                if missing
                else f"all {len(f.planned[kind])} planned {kind} present"
            )
            fix = "the agent re-adds them within its resync period; if not, read its log"
            out.append(_r(f, f"routing/{kind}", status, detail, fix))
        return out
    if f.rules is None or f.routes is None:
        return [_r(f, "routing", Status.WARN, "could not read rules/routes", "run on the node")]
    return _routing_essentials(f)


def _routing_essentials(f: NodeFacts) -> list[CheckResult]:
    out = []
    if f.role == "member":
        rule = any(FWMARK in r and str(MEMBER_TABLE) in r for r in f.rules or ())
        out.append(
            _r(
                f,
                "routing/rule",
                Status.OK if rule else Status.FAIL,
                f"fwmark {FWMARK} -> table {MEMBER_TABLE}" + ("" if rule else " missing"),
                "the agent re-adds it on its next pass; if not, read its log",
            )
        )
        default = any(r.startswith("default") for r in (f.routes or {}).get(MEMBER_TABLE, ()))
        out.append(
            _r(
                f,
                "routing/routes",
                Status.OK if default else Status.FAIL,
                f"table {MEMBER_TABLE} default route via the gateway"
                + ("" if default else " missing"),
                "the agent re-adds it on its next pass; check the Gateway has an active "
                "tunnel endpoint (ravectl status)",
            )
        )
        return out
    rule = any(f"lookup {TUNNEL_TABLE}" in r for r in f.rules or ())
    out.append(
        _r(
            f,
            "routing/rule",
            Status.OK if rule else Status.FAIL,
            f"rule lookup {TUNNEL_TABLE}" + ("" if rule else " missing"),
            "the agent re-adds it on its next pass; if not, read its log",
        )
    )
    lines = (f.routes or {}).get(TUNNEL_TABLE, ())
    missing = [s for s in f.remote_subnets if not any(line.startswith(s) for line in lines)]
    out.append(
        _r(
            f,
            "routing/routes",
            Status.FAIL if missing else Status.OK,
            f"table {TUNNEL_TABLE}: "
            + (
                f"no route to {', '.join(missing)}"
                if missing
                else f"{len(f.remote_subnets)} remote subnets routed"
            ),
            "the agent re-adds them on its next pass; check the remote Gateway's status "
            "lists its nodes and subnets",
        )
    )
    return out


def check_mtu_mss(f: NodeFacts) -> list[CheckResult]:
    """Tunnel MTUs leave room for the encapsulation, and MSS clamping is installed."""
    if f.role is None or f.links is None:
        return [_r(f, "mtu", Status.SKIP, "L3 does not run here or links unknown")]
    out = []
    for name, overhead in ((WG_LINK, WG_OVERHEAD), (VXLAN_LINK, VXLAN_OVERHEAD)):
        link = f.link(name)
        if link is None or f.underlay_mtu is None:
            continue
        limit = f.underlay_mtu - overhead
        ok = link.mtu <= limit
        out.append(
            _r(
                f,
                f"mtu/{name}",
                Status.OK if ok else Status.FAIL,
                f"{name} mtu {link.mtu} (underlay {f.underlay_mtu}, limit {limit})",
                f"ip link set {name} mtu {limit}; larger packets are fragmented or dropped",
            )
        )
    if f.nft is None:
        out.append(_r(f, "mtu/mss-clamp", Status.WARN, "could not read nftables", "run as root"))
    else:
        ok = "maxseg" in f.nft
        out.append(
            _r(
                f,
                "mtu/mss-clamp",
                Status.OK if ok else Status.FAIL,
                "TCP MSS clamping " + ("installed" if ok else "missing"),
                "the agent installs table inet ravend; `nft list table inet ravend` "
                "should show `tcp option maxseg size set N`",
            )
        )
    return out


def check_handshakes(f: NodeFacts) -> list[CheckResult]:
    """Every WireGuard peer of a gateway handshook recently."""
    if f.role != "gateway" or f.wg_peers is None or f.now is None:
        return [_r(f, "tunnels", Status.SKIP, "not a gateway, or its device does not answer")]
    if not f.wg_peers:
        return [
            _r(
                f,
                "tunnels",
                Status.FAIL,
                f"{WG_LINK} has no peers",
                "the other Gateways need an active tunnel endpoint with a publicKey: "
                "check ravectl status",
            )
        ]
    now = f.now.timestamp()
    return [_handshake(f, p, now) for p in f.wg_peers]


def _handshake(f: NodeFacts, p: WgPeerFact, now: float) -> CheckResult:
    age = now - p.latest_handshake if p.latest_handshake else None
    when = "never" if age is None else f"{age:.0f} s ago"
    check = f"tunnels/{p.public_key[:8]}"
    if age is not None and age <= HANDSHAKE_STALE_S:
        return _r(f, check, Status.OK, f"peer {p.endpoint or '(dials us)'} last handshake {when}")
    if p.allowed_ips == ():
        # A warm standby of another Gateway: listed without AllowedIPs so a failover moves
        # routes only. It carries no traffic, so a stale session is not an outage today.
        return _r(
            f,
            check,
            Status.WARN,
            f"standby peer {p.endpoint or '(dials us)'} (no AllowedIPs) last handshake {when}",
            "not an outage: it carries traffic only once elected. Without a fresh session a "
            "failover to it waits for a first handshake; check UDP 4500 to it and its NAT",
        )
    return _r(
        f,
        check,
        Status.FAIL,
        f"peer {p.endpoint or '(dials us)'} last handshake {when}",
        "check UDP reachability of the peer's endpoint port (4500) and its NAT; "
        "keepalives must be < 30 s",
    )
