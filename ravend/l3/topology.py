"""Who tunnels to whom: pools, the relay hub and per-peer AllowedIPs (pure, no I/O).

Rules kept from Raven (raven-reference.md section 4): the elected tunnel endpoint of each Gateway
is its gateway node; a link exists between two gateways when at least one of them is not under
NAT (the NATed side dials, the other listens); traffic between two NATed pools relays through the
hub, the last non-NATed gateway by name ("central"). So the hub's AllowedIPs for an edge hold only
that edge's subnets, while an edge's entry for the hub holds the hub's subnets plus every pool the
edge cannot reach directly. An IP range can belong to one WireGuard peer only, so overlaps are
dropped (first pool by name wins) and reported instead of silently mis-routed.

Warm standbys (peers.md): every other tunnel candidate of a directly linked Gateway is a peer
too, with its published key, an endpoint when it listens, and *no* AllowedIPs. The handshake and
the NAT mapping stay warm, while every range keeps exactly one owner (the active endpoint). A
failover then moves AllowedIPs from one existing peer to another: no key exchange and no first
handshake that could be dropped and retried only after WireGuard's 5 s REKEY_TIMEOUT.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from functools import partial

from ravend.l3.addressing import endpoint_text, host_cidr, is_valid_cidr, sort_cidrs
from ravend.l3.claims import Claims
from ravend.l3.plancache import Memo, memo_get
from ravend.l3.settings import L3Settings
from ravend.l3.state import Skipped, WgPeer
from ravend.model import (
    CONFIG_PUBLIC_KEY,
    KEY_L3,
    ClusterView,
    Endpoint,
    EndpointType,
    Gateway,
    Node,
)


@dataclass(frozen=True)
class PoolNode:
    name: str
    ip: str
    """Underlay (private) IP: the VXLAN tunnel address inside the pool."""
    pod_cidrs: tuple[str, ...]


@dataclass(frozen=True)
class Candidate:
    """A tunnel endpoint candidate of a Gateway other than its elected gateway node."""

    node: str
    public_key: str
    """"" until the node's agent publishes it (peers then leave the candidate out)."""
    address: str
    """Host to dial when the pool is not under NAT: publicIP, else ExternalIP, else InternalIP."""
    port: int
    """Its WireGuard port (also its listen port once promoted)."""


@dataclass(frozen=True)
class Pool:
    """A Gateway with an elected tunnel endpoint, as L3 sees it."""

    name: str
    gateway_node: str
    under_nat: bool
    public_key: str
    """"" when the gateway node has not published a key yet (the pool is then unreachable)."""
    address: str
    """Host other gateways dial ("" if none): publicIP, else ExternalIP, else InternalIP."""
    port: int
    nodes: tuple[PoolNode, ...]
    standbys: tuple[Candidate, ...] = ()
    """The pool's other tunnel candidates (sorted by node), kept warm as AllowedIPs-less peers."""

    def standby(self, node: str) -> Candidate | None:
        return next((c for c in self.standbys if c.node == node), None)

    def subnets(self, forward_node_ip: bool) -> tuple[str, ...]:
        cidrs = [c for n in self.nodes for c in n.pod_cidrs]
        if forward_node_ip:
            cidrs += [host_cidr(n.ip) for n in self.nodes if n.ip]
        return sort_cidrs(cidrs)


def _enabled(ep: Endpoint) -> bool:
    return ep.type == EndpointType.TUNNEL and ep.config.get(KEY_L3, "true") != "false"


def _tunnel_endpoint(gw: Gateway) -> Endpoint | None:
    # Several active tunnel endpoints are allowed by the CRD; the first by node name leads so
    # every node of the cluster picks the same one without talking to the others.
    active = sorted((e for e in gw.active(EndpointType.TUNNEL) if _enabled(e)), key=_node)
    return active[0] if active else None


def _node(ep: Endpoint) -> str:
    return ep.node_name


def _address(view: ClusterView, ep: Endpoint) -> str:
    node = view.nodes.get(ep.node_name)
    ext = node.external_ips[0] if node and node.external_ips else ""
    internal = node.private_ip if node else ""
    return ep.public_ip or ext or internal


def _port(ep: Endpoint, settings: L3Settings) -> int:
    return ep.public_port or ep.port or settings.listen_port


def _standbys(
    view: ClusterView, gw: Gateway, leader: str, members: tuple[PoolNode, ...], s: L3Settings
) -> tuple[Candidate, ...]:
    # Spec candidates plus any other active endpoint (Replicas > 1), each node once; only
    # members of the pool, since only they plan themselves as this pool's standby.
    names = {n.name for n in members}
    seen: dict[str, Candidate] = {}
    for ep in sorted((*gw.spec.endpoints, *gw.status.active_endpoints), key=_node):
        if not _enabled(ep) or ep.node_name == leader or ep.node_name not in names:
            continue
        if ep.node_name not in seen:
            key = _public_key(gw, ep)
            seen[ep.node_name] = Candidate(ep.node_name, key, _address(view, ep), _port(ep, s))
    return tuple(seen[n] for n in sorted(seen))


def _public_key(gw: Gateway, ep: Endpoint) -> str:
    # Status copies the spec at election time; the agent publishes its key into the spec later,
    # so the spec entry is the fresher source when the status copy has none.
    if ep.config.get(CONFIG_PUBLIC_KEY):
        return ep.config[CONFIG_PUBLIC_KEY]
    for spec_ep in gw.spec.endpoints:
        if spec_ep.key == ep.key and spec_ep.config.get(CONFIG_PUBLIC_KEY):
            return spec_ep.config[CONFIG_PUBLIC_KEY]
    return ""


def _by_gateway(view: ClusterView) -> dict[str, list[Node]]:
    # One pass over the nodes instead of one per Gateway (2,000 nodes x 200 Gateways).
    out: dict[str, list[Node]] = {}
    for n in view.nodes.values():
        if n.gateway is not None:
            out.setdefault(n.gateway, []).append(n)
    return out


def _nodes(live: list[Node], gw: Gateway) -> tuple[PoolNode, ...]:
    # Live Node objects are fresher than status.nodes (written by the controller); the status
    # is the fallback for a view that does not carry the pool's Node objects.
    if live:
        raw = [(n.name, n.private_ip, n.pod_cidrs) for n in live]
    else:
        raw = [(n.node_name, n.private_ip, n.subnets) for n in gw.status.nodes]
    return tuple(
        PoolNode(name, ip, tuple(c for c in cidrs if is_valid_cidr(c)))
        for name, ip, cidrs in sorted(raw)
    )


def pools(
    view: ClusterView, settings: L3Settings, memo: Memo | None = None
) -> tuple[dict[str, Pool], list[Skipped]]:
    """Every Gateway with an elected tunnel endpoint, keyed by name; the others are reported.
    With `memo`, a Gateway whose object, member Nodes and endpoint Nodes are unchanged keeps
    its previous `Pool` (a switch rebuilds one pool, not 200), and asking again for the same
    view returns the same result (do not mutate it)."""
    inputs = (view.gateways, view.nodes, settings)
    return memo_get(memo, "pools", inputs, partial(_pools, view, settings, memo))


def _pools(
    view: ClusterView, settings: L3Settings, memo: Memo | None
) -> tuple[dict[str, Pool], list[Skipped]]:
    found: dict[str, Pool] = {}
    skipped: list[Skipped] = []
    members = _by_gateway(view)
    for name in sorted(view.gateways):
        gw = view.gateways[name]
        live = tuple(members.get(name, ()))
        # Everything _pool reads: the Gateway, its member Nodes, the Nodes its endpoints
        # name (addresses come from them) and the settings (default port).
        inputs = (gw, live, _endpoint_nodes(view, gw), settings)
        pool = memo_get(
            memo, f"pool/{name}", inputs, partial(_pool, view, name, gw, live, settings)
        )
        if pool is None:
            skipped.append(Skipped(f"gateway/{name}", "no active tunnel endpoint"))
        else:
            found[name] = pool
    if memo is not None:
        memo.keep_only("pool/", {f"pool/{n}" for n in view.gateways})
    return found, skipped


def _endpoint_nodes(view: ClusterView, gw: Gateway) -> tuple[Node | None, ...]:
    return tuple(
        view.nodes.get(ep.node_name) for ep in (*gw.spec.endpoints, *gw.status.active_endpoints)
    )


def _pool(
    view: ClusterView, name: str, gw: Gateway, live: tuple[Node, ...], settings: L3Settings
) -> Pool | None:
    ep = _tunnel_endpoint(gw)
    if ep is None:
        return None
    nodes = _nodes(list(live), gw)
    return Pool(
        name=name,
        gateway_node=ep.node_name,
        under_nat=ep.under_nat,
        public_key=_public_key(gw, ep),
        address=_address(view, ep),
        port=_port(ep, settings),
        nodes=nodes,
        standbys=_standbys(view, gw, ep.node_name, nodes, settings),
    )


def hub(all_pools: Iterable[Pool]) -> Pool | None:
    """Raven's "central": the last gateway by name that is not under NAT and has a key."""
    candidates = [p for p in all_pools if not p.under_nat and p.public_key and p.address]
    return max(candidates, key=lambda p: p.name) if candidates else None


@dataclass(frozen=True)
class TunnelPlan:
    peers: tuple[WgPeer, ...]
    standby_peers: tuple[WgPeer, ...]
    """Warm standbys of directly linked Gateways, AllowedIPs always empty (module docstring)."""
    remote: tuple[str, ...]
    skipped: tuple[Skipped, ...]


@dataclass(frozen=True)
class _Routing:
    """Which peer carries which ranges: the costly, key-independent part of a tunnel plan."""

    allowed: tuple[tuple[str, tuple[str, ...]], ...]
    """(Gateway whose active endpoint is the peer, its sorted AllowedIPs), one per peer."""
    remote: tuple[str, ...]
    skipped: tuple[Skipped, ...]


def _routing_inputs(p: Pool) -> tuple[object, ...]:
    # Everything of a pool that decides routing, and nothing else: keys only by presence
    # (a switch changes a key, not who routes what), addresses only of pools not under NAT
    # (nobody dials or claims a NATed one), subnets through the nodes.
    listens = not p.under_nat
    return (
        p.name,
        p.under_nat,
        bool(p.public_key),
        p.address if listens else None,
        tuple(c.address for c in p.standbys) if listens else None,
        p.nodes,
    )


def tunnel_plan(
    all_pools: dict[str, Pool], mine: Pool, settings: L3Settings, memo: Memo | None = None
) -> TunnelPlan:
    """Peers and AllowedIPs of `mine`'s tunnel candidates; the pool's members use `remote` only.

    Nothing here depends on which candidate of `mine` is elected, so a standby plans the very
    device it will have once promoted. With `memo`, the routing (claims, overlaps, relays) is
    recomputed only when a pool's routing inputs change; keys and endpoints are re-read.
    """
    central = hub(all_pools.values())
    inputs = (
        mine.name,
        central.name if central else None,
        settings.forward_node_ip,
        tuple(_routing_inputs(p) for p in all_pools.values()),
    )
    routing = memo_get(
        memo, "routing", inputs, partial(_routing, all_pools, mine, central, settings)
    )
    skipped = list(routing.skipped)
    peers = tuple(
        sorted(
            _peer(q, q.public_key, q.address, q.port, cidrs, settings=settings)
            for q, cidrs in ((all_pools[n], c) for n, c in routing.allowed)
        )
    )
    linked = [all_pools[n] for n, _ in routing.allowed]
    standby = _standby_peers(mine, linked, {p.public_key for p in peers}, settings, skipped)
    return TunnelPlan(peers, standby, routing.remote, tuple(sorted(set(skipped))))


def _routing(
    all_pools: dict[str, Pool], mine: Pool, central: Pool | None, settings: L3Settings
) -> _Routing:
    fwd = settings.forward_node_ip
    claimed = _claims(all_pools, mine, fwd)
    skipped: list[Skipped] = []
    via_of: dict[str, Pool] = {}
    for q in (all_pools[n] for n in sorted(all_pools) if n != mine.name):
        via = _route_via(mine, q, central, skipped)
        if via is not None:
            via_of[q.name] = via
    allowed: dict[str, list[str]] = {}
    for q_name, via in via_of.items():
        allowed.setdefault(via.name, [])  # the peer exists even if all its ranges are dropped
        for cidr in all_pools[q_name].subnets(fwd):
            owner = claimed.owner_of_overlap(cidr)
            if owner is not None:
                skipped.append(Skipped(f"gateway/{q_name} {cidr}", f"overlaps {owner}"))
                continue
            claimed.add(cidr, f"gateway/{q_name}")
            allowed[via.name].append(cidr)
    remote = sort_cidrs(c for cidrs in allowed.values() for c in cidrs)
    per_peer = tuple((n, sort_cidrs(allowed[n])) for n in sorted(allowed))
    return _Routing(per_peer, remote, tuple(skipped))


def _claims(all_pools: dict[str, Pool], mine: Pool, fwd: bool) -> Claims:
    # Ranges already spoken for: our own pool, and every address some gateway dials, the
    # standbys' included (routing an endpoint into the tunnel would loop the tunnel's own UDP
    # packets back into itself).
    claimed = Claims()
    for c in mine.subnets(fwd):
        claimed.add(c, "the local pool")
    for p in all_pools.values():
        if p.under_nat:
            continue
        for addr in (p.address, *(c.address for c in p.standbys)):
            if addr:
                claimed.add(host_cidr(addr), "a tunnel endpoint")
    return claimed


def _standby_peers(
    mine: Pool, linked: list[Pool], taken: set[str], s: L3Settings, skipped: list[Skipped]
) -> tuple[WgPeer, ...]:
    out: dict[str, WgPeer] = {}
    for q in linked:
        for c in q.standbys:
            subject = f"node/{c.node}"
            if not c.public_key:
                why = "standby tunnel candidate has no WireGuard public key yet"
                skipped.append(Skipped(subject, why))
            elif c.public_key in taken or c.public_key in out:
                skipped.append(Skipped(subject, "standby shares its WireGuard key with a peer"))
            elif mine.under_nat and not c.address:
                skipped.append(Skipped(subject, "standby not under NAT but has no address"))
            else:
                out[c.public_key] = _peer(q, c.public_key, c.address, c.port, (), settings=s)
    return tuple(sorted(out.values()))


def _route_via(mine: Pool, q: Pool, central: Pool | None, skipped: list[Skipped]) -> Pool | None:
    subject = f"gateway/{q.name}"
    if not q.public_key:
        skipped.append(Skipped(subject, "no WireGuard public key published"))
        return None
    if not (mine.under_nat and q.under_nat):
        if mine.under_nat and not q.address:
            skipped.append(Skipped(subject, "not under NAT but has no address to dial"))
            return None
        return q
    if central is not None and central.name not in (mine.name, q.name):
        return central
    skipped.append(Skipped(subject, "both pools under NAT and no hub gateway to relay through"))
    return None


def _peer(
    p: Pool, key: str, address: str, port: int, allowed: tuple[str, ...], *, settings: L3Settings
) -> WgPeer:
    """`allowed` must be sorted and normalised already (`sort_cidrs`)."""
    # The NATed side dials; a listener leaves the endpoint unset and learns it from the
    # handshake (and re-learns it when the NAT mapping roams). Keepalive on every peer keeps
    # NAT mappings open from both sides and gives probes fresh handshakes.
    dial = not p.under_nat and bool(address)
    return WgPeer(
        public_key=key,
        endpoint=endpoint_text(address, port) if dial else None,
        allowed_ips=allowed,
        keepalive_s=settings.keepalive_s,
        gateway=p.name,
    )
