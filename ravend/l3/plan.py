"""L3 planning: `plan(view, me, settings, local) -> L3State` (pure, no I/O).

Decides this node's role (gateway of its pool, member routing through the gateway, or nothing)
and every kernel object that follows from it. A member that is also a tunnel candidate of its
Gateway is a warm standby: besides its member routes it keeps the WireGuard device it would have
as the gateway (same port, peers, AllowedIPs) with no route into it, so a promotion only adds
routes here and moves AllowedIPs on the peers (`ravend.l3.topology`).

The result is deterministic (sorted tuples) so the reconcile loop can compare plans and `diff()`
can compare them with the kernel.

The caller must only plan from a synced view: an unsynced view looks like "no Gateways" and its
plan is the empty state, which removes every tunnel.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePosixPath

from ravend.l3.addressing import bare, family, host_cidr, mac_for, overlay_v4, overlay_v6
from ravend.l3.nftgen import ruleset
from ravend.l3.plancache import Memo, memo_get
from ravend.l3.settings import L3Settings
from ravend.l3.state import (
    EMPTY,
    FdbEntry,
    L3State,
    Neighbour,
    NftRuleset,
    Role,
    Route,
    Rule,
    Skipped,
    Sysctl,
    VxlanDevice,
    WgDevice,
    route_order,
)
from ravend.l3.topology import Pool, PoolNode, TunnelPlan, pools, tunnel_plan
from ravend.model import ClusterView

KEY_FILE = "wireguard.key"
_DEFAULT = {4: "0.0.0.0/0", 6: "::/0"}


@dataclass(frozen=True)
class LocalFacts:
    """What only this node knows about itself."""

    public_key: str
    """Base64 WireGuard public key of the persisted private key."""
    underlay_mtu: int
    """MTU of the link carrying the node IP (the tunnels' underlay)."""
    node_ip: str
    """The node's underlay IP (its InternalIP): VXLAN local address, overlay address source."""


def plan(
    view: ClusterView,
    me: str,
    settings: L3Settings,
    local: LocalFacts,
    memo: Memo | None = None,
) -> L3State:
    """The complete desired L3 state of node `me`. `memo` (kept by `PlanCache`) lets a plan
    reuse the unchanged parts of the previous one; the result is the same either way."""
    if memo is not None:
        memo.bind((me, settings, local))
    if not settings.enabled:
        return L3State(skipped=(Skipped("l3", "disabled on this node"),))
    if not view.raven_cfg.l3_enabled:
        return L3State(skipped=(Skipped("l3", "enable-l3-tunnel is off in raven-cfg"),))
    node = view.nodes.get(me)
    if node is None or node.gateway is None:
        return L3State(skipped=(Skipped(f"node/{me}", "not in any Gateway"),))
    all_pools, skipped = pools(view, settings, memo)
    mine = all_pools.get(node.gateway)
    if mine is None:
        reason = "no active tunnel endpoint" if node.gateway in view.gateways else "no such Gateway"
        return L3State(gateway=node.gateway, skipped=(Skipped(f"gateway/{node.gateway}", reason),))
    tp = tunnel_plan(all_pools, mine, settings, memo)
    notes = tuple(sorted({*skipped, *tp.skipped}))
    if mine.gateway_node == me:
        return _gateway(mine, tp, settings, local, notes=notes, memo=memo)
    gw_node = next((n for n in mine.nodes if n.name == mine.gateway_node), None)
    if gw_node is None or not gw_node.ip or family(gw_node.ip) != family(local.node_ip):
        why = "gateway node has no underlay IP of this node's family"
        return L3State(gateway=mine.name, skipped=(*notes, Skipped(f"node/{me}", why)))
    # Warm only once our key is published: every peer lists us from that same view change, and
    # an initiation that beats the peer's configuration is dropped and retried only after 5 s.
    standby = mine.standby(me)
    warm = standby is not None and standby.public_key == local.public_key
    wg = _wg_device(standby.port, tp, settings, local) if standby and warm else None
    return _member(mine, gw_node, tp, settings, local, wg=wg, notes=notes, memo=memo)


class PlanCache:
    """`plan()` memoised on what it reads: Gateways, Nodes, raven-cfg, `me`, settings, facts.

    Heartbeat Leases give the cluster view a new revision every second; they must not cost a
    replan (~40 ms at 2,000 nodes / 4,000 subnets). The informers rebuild the maps per view but
    keep the same objects when unchanged, so comparing the key is cheap (identity first). When
    the key does change, `memo` makes the replan redo only what the change touches.
    """

    def __init__(self) -> None:
        self._key: tuple[object, ...] | None = None
        self._out: L3State = EMPTY
        self.memo = Memo()
        self.hits = 0
        """Passes that reused the previous plan (for tests and the bench)."""

    def plan(self, view: ClusterView, me: str, settings: L3Settings, local: LocalFacts) -> L3State:
        key = (view.gateways, view.nodes, view.raven_cfg, me, settings, local)
        if self._key is not None and self._key == key:
            self.hits += 1
            return self._out
        self._out, self._key = plan(view, me, settings, local, self.memo), key
        return self._out

    def clear(self) -> None:
        self._key, self._out = None, EMPTY
        self.memo.clear()


def _fams(cidrs: tuple[str, ...]) -> tuple[int, ...]:
    return tuple(sorted({4, *(family(c) for c in cidrs)}))


def _overlays(ip: str, fams: tuple[int, ...], s: L3Settings) -> dict[int, str]:
    out = {4: overlay_v4(ip, s.overlay_v4_prefix)}
    if 6 in fams:
        out[6] = overlay_v6(ip, s.overlay_v6_prefix)
    return out


def _vxlan(
    peer_ips: list[str], fams: tuple[int, ...], s: L3Settings, lf: LocalFacts
) -> VxlanDevice:
    # Static FDB per peer MAC and permanent neighbours: no flooding, no learning, nothing to
    # converge; an IPv6 underlay costs 20 bytes more than the IPv4 figure in the settings.
    outer_extra = 20 if family(lf.node_ip) == 6 else 0
    neigh = [
        Neighbour(bare(addr), mac_for(ip))
        for ip in peer_ips
        for addr in _overlays(ip, fams, s).values()
    ]
    return VxlanDevice(
        name=s.vxlan_link,
        vni=s.vxlan_vni,
        port=s.vxlan_port,
        local_ip=lf.node_ip,
        mtu=lf.underlay_mtu - s.vxlan_overhead - outer_extra,
        mac=mac_for(lf.node_ip),
        addresses=tuple(sorted(_overlays(lf.node_ip, fams, s).values())),
        fdb=tuple(sorted(FdbEntry(mac_for(ip), ip) for ip in peer_ips)),
        neighbours=tuple(sorted(neigh)),
    )


def _sysctls(links: list[str], fams: tuple[int, ...], gateway: bool) -> tuple[Sysctl, ...]:
    # Loose rp_filter on ravend's links: replies come back on raven0/raven-wg0 while the main
    # table would send to the source elsewhere, which strict mode drops. A relaying gateway sends
    # packets out of the interface they came in on, so redirects must be off (they are ORed
    # between "all" and the device, hence both).
    out = [Sysctl("net/ipv4/ip_forward", "1")]
    if 6 in fams:
        out.append(Sysctl("net/ipv6/conf/all/forwarding", "1"))
    for link in links:
        out.append(Sysctl(f"net/ipv4/conf/{link}/rp_filter", "2"))
        if gateway:
            out.append(Sysctl(f"net/ipv4/conf/{link}/send_redirects", "0"))
    if gateway:
        out.append(Sysctl("net/ipv4/conf/all/send_redirects", "0"))
    return tuple(sorted(out))


def _local_cidrs(pool: Pool, s: L3Settings) -> tuple[str, ...]:
    return pool.subnets(s.forward_node_ip)


def _gateway(
    mine: Pool,
    tp: TunnelPlan,
    s: L3Settings,
    lf: LocalFacts,
    *,
    notes: tuple[Skipped, ...],
    memo: Memo | None,
) -> L3State:
    local = _local_cidrs(mine, s)
    fams = memo_get(memo, "fams", (tp.remote, local), lambda: _fams((*tp.remote, *local)))
    path_mtu = lf.underlay_mtu - s.wg_overhead
    members, odd = _members(mine, lf)
    wg = _wg_device(mine.port, tp, s, lf)
    rules = [Rule(f, s.tunnel_rule_priority, s.tunnel_table) for f in fams]
    links = [s.wireguard_link]
    vx = None
    if members:
        vx = _vxlan([m.ip for m in members], fams, s, lf)
        links.append(s.vxlan_link)
        # Tunnel ingress for members goes back over raven0, symmetric with their egress, so
        # the member sees it on the link its replies leave by (and the CNI never sees it).
        rules += [
            Rule(f, s.member_rule_priority, s.member_table, iif=s.wireguard_link) for f in fams
        ]
    # One route per remote subnet: ~4,000 on a hub, rebuilt only when they or the members change.
    routes = memo_get(
        memo,
        "gateway-routes",
        (tp.remote, tuple(members), fams),
        lambda: _gateway_routes(tp.remote, members, fams, s),
    )
    return L3State(
        role=Role.GATEWAY,
        gateway=mine.name,
        wireguard=wg,
        vxlan=vx,
        routes=routes,
        rules=tuple(sorted(rules)),
        sysctls=_sysctls(links, fams, gateway=True),
        nft=_nft(memo, tp.remote, local, path_mtu=path_mtu, mark=None, s=s, lf=lf),
        remote_subnets=tp.remote,
        skipped=tuple(sorted({*notes, *odd})),
    )


def _gateway_routes(
    remote: tuple[str, ...], members: list[PoolNode], fams: tuple[int, ...], s: L3Settings
) -> tuple[Route, ...]:
    routes = [Route(s.tunnel_table, c, s.wireguard_link) for c in remote]
    return tuple(sorted([*routes, *_member_return_routes(members, fams, s)], key=route_order))


def _nft(
    memo: Memo | None,
    remote: tuple[str, ...],
    local: tuple[str, ...],
    *,
    path_mtu: int,
    mark: int | None,
    s: L3Settings,
    lf: LocalFacts,
) -> NftRuleset:
    # The table text holds every remote subnet in its sets: rebuilt only when they change.
    inputs = (remote, local, path_mtu, mark)
    return memo_get(
        memo,
        "nft",
        inputs,
        lambda: ruleset(s.nft_table, remote, local, path_mtu, mark, node_ip=lf.node_ip),
    )


def _wg_device(port: int, tp: TunnelPlan, s: L3Settings, lf: LocalFacts) -> WgDevice:
    # Built the same way for the gateway and for a standby candidate: equal devices are what
    # makes a promotion free of peer changes (and of a first handshake racing the hub).
    return WgDevice(
        name=s.wireguard_link,
        public_key=lf.public_key,
        private_key_path=str(PurePosixPath(s.state_dir) / KEY_FILE),
        listen_port=s.listen_port if port <= 0 else port,
        mtu=lf.underlay_mtu - s.wg_overhead,
        peers=tp.peers,
        standby_peers=tp.standby_peers,
    )


def _members(mine: Pool, lf: LocalFacts) -> tuple[list[PoolNode], list[Skipped]]:
    members, odd = [], []
    for n in mine.nodes:
        if n.name == mine.gateway_node:
            continue
        if not n.ip or family(n.ip) != family(lf.node_ip):
            odd.append(Skipped(f"node/{n.name}", "no underlay IP of the gateway's family"))
        else:
            members.append(n)
    return members, odd


def _member_return_routes(
    members: list[PoolNode], fams: tuple[int, ...], s: L3Settings
) -> list[Route]:
    routes = []
    for m in members:
        via = _overlays(m.ip, fams, s)
        cidrs = [*m.pod_cidrs, host_cidr(m.ip)] if s.forward_node_ip else list(m.pod_cidrs)
        for c in cidrs:
            if family(c) in via:
                routes.append(Route(s.member_table, c, s.vxlan_link, bare(via[family(c)])))
    return routes


def _member(
    mine: Pool,
    gw_node: PoolNode,
    tp: TunnelPlan,
    s: L3Settings,
    lf: LocalFacts,
    *,
    wg: WgDevice | None,
    notes: tuple[Skipped, ...],
    memo: Memo | None,
) -> L3State:
    local = _local_cidrs(mine, s)
    fams = memo_get(memo, "fams", (tp.remote, local), lambda: _fams((*tp.remote, *local)))
    path_mtu = lf.underlay_mtu - s.wg_overhead
    via = _overlays(gw_node.ip, fams, s)
    routes = [
        Route(s.member_table, _DEFAULT[f], s.vxlan_link, bare(via[f]), path_mtu) for f in fams
    ]
    rules = [Rule(f, s.member_rule_priority, s.member_table, s.fwmark, s.fwmark) for f in fams]
    # A standby's device gets no route and no rule: its member routes carry its traffic until
    # the election promotes it.
    links = [s.vxlan_link, *([s.wireguard_link] if wg else [])]
    return L3State(
        role=Role.MEMBER,
        gateway=mine.name,
        wireguard=wg,
        vxlan=_vxlan([gw_node.ip], fams, s, lf),
        routes=tuple(sorted(routes)),
        rules=tuple(sorted(rules)),
        sysctls=_sysctls(links, fams, gateway=False),
        nft=_nft(memo, tp.remote, local, path_mtu=path_mtu, mark=s.fwmark, s=s, lf=lf),
        remote_subnets=tp.remote,
        skipped=notes,
    )


__all__ = ["EMPTY", "LocalFacts", "PlanCache", "plan"]
