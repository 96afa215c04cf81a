"""Gateway pickup: which candidate endpoints are active, Raven-compatible (pure, no I/O).

Raven's rules (raven-reference section 3): per enabled type (raven-cfg `enable-l7-proxy` ->
proxy, `enable-l3-tunnel` -> tunnel; an absent ConfigMap means both off), keep the current active
endpoints that are still healthy (sticky, so a recovered node never takes the role back), then
fill free slots up to Replicas from `spec.endpoints` in list order with healthy member nodes.
Active endpoints are copies of the spec entries (so publicIP/publicKey changes flow through) with
`enable-l3-tunnel`/`enable-l7-proxy` set in their config, sorted by node name then type.

ravend's difference is only the health input: a HealthView (heartbeats + NodeReady + probes)
instead of NodeReady alone.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType

from ravend.election.health import HealthView
from ravend.model import (
    KEY_L3,
    KEY_L7,
    ClusterView,
    Endpoint,
    EndpointType,
    Gateway,
    GatewayStatus,
    Node,
    NodeInfo,
)

REASON_ELECTED = "ActiveEndpointElected"
REASON_LOST = "ActiveEndpointLost"

_ENABLE_KEY = {EndpointType.PROXY: KEY_L7, EndpointType.TUNNEL: KEY_L3}


class EventType(StrEnum):
    NORMAL = "Normal"
    WARNING = "Warning"


@dataclass(frozen=True)
class PickupEvent:
    """A Kubernetes Event to emit on the Gateway (involvedObject = the Gateway)."""

    gateway: str
    type: EventType
    reason: str
    message: str


@dataclass(frozen=True)
class PickupResult:
    statuses: Mapping[str, GatewayStatus]
    """Only the Gateways whose status must change (status is written only on change)."""
    events: tuple[PickupEvent, ...] = ()


def enabled_types(view: ClusterView) -> tuple[EndpointType, ...]:
    """Endpoint types switched on by raven-cfg, in the order Raven elects them."""
    cfg = view.raven_cfg
    kinds = []
    if cfg.l7_enabled:
        kinds.append(EndpointType.PROXY)
    if cfg.l3_enabled:
        kinds.append(EndpointType.TUNNEL)
    return tuple(kinds)


def members_by_gateway(nodes: Mapping[str, Node]) -> dict[str, list[Node]]:
    """Nodes grouped by their gateway label, each list sorted by node name."""
    groups: dict[str, list[Node]] = {}
    for node in nodes.values():
        gw = node.gateway
        if gw is not None:
            groups.setdefault(gw, []).append(node)
    for members in groups.values():
        members.sort(key=lambda n: n.name)
    return groups


def _activated(ep: Endpoint) -> Endpoint:
    config = dict(ep.config)
    config[_ENABLE_KEY[ep.type]] = "true"
    return Endpoint(
        node_name=ep.node_name,
        type=ep.type,
        port=ep.port,
        under_nat=ep.under_nat,
        public_ip=ep.public_ip,
        public_port=ep.public_port,
        nat_type=ep.nat_type,
        config=MappingProxyType(config),
    )


def _replicas(gw: Gateway, kind: EndpointType) -> int:
    if kind == EndpointType.PROXY:
        return gw.spec.proxy_config.replicas
    return gw.spec.tunnel_config.replicas


def _elect_type(
    gw: Gateway, kind: EndpointType, members: set[str], health: HealthView, now: float
) -> list[Endpoint]:
    replicas = _replicas(gw, kind)
    candidates = [e for e in gw.spec.endpoints if e.type == kind]
    by_node = {e.node_name: e for e in candidates}

    def eligible(node: str) -> bool:
        return node in members and health.healthy(node, now)

    chosen: list[Endpoint] = []
    # Sticky first: the current holders keep their slots while healthy (no flapping).
    for cur in gw.status.active_endpoints:
        spec_ep = by_node.get(cur.node_name) if cur.type == kind else None
        if (
            len(chosen) < replicas
            and spec_ep is not None
            and spec_ep not in chosen
            and eligible(cur.node_name)
        ):
            chosen.append(spec_ep)
    for ep in candidates:
        if len(chosen) >= replicas:
            break
        if ep not in chosen and eligible(ep.node_name):
            chosen.append(ep)
    return chosen


def elect_gateway(
    gw: Gateway,
    members: list[Node],
    kinds: tuple[EndpointType, ...],
    health: HealthView,
    now: float,
) -> GatewayStatus:
    """The desired status of one Gateway; `members` are its labelled nodes sorted by name."""
    names = {n.name for n in members}
    active: list[Endpoint] = []
    for kind in kinds:
        active.extend(_activated(e) for e in _elect_type(gw, kind, names, health, now))
    active.sort(key=lambda e: (e.node_name, e.type))
    nodes = tuple(NodeInfo(n.name, n.private_ip, n.pod_cidrs) for n in members)
    return GatewayStatus(nodes=nodes, active_endpoints=tuple(active))


def _lost_reason(
    ep: Endpoint, gw: Gateway, kinds: tuple[EndpointType, ...], health: HealthView, now: float
) -> str:
    if ep.type not in kinds:
        return f"endpoint type {ep.type} disabled in raven-cfg"
    if not any(e.key == ep.key for e in gw.spec.endpoints):
        return "no longer a candidate in spec.endpoints"
    reason = health.reason(ep.node_name, now)
    return reason or "node left the gateway or replicas reduced"


def _events(
    gw: Gateway,
    new: GatewayStatus,
    kinds: tuple[EndpointType, ...],
    health: HealthView,
    now: float,
) -> list[PickupEvent]:
    old_keys = {e.key: e for e in gw.status.active_endpoints}
    new_keys = {e.key for e in new.active_endpoints}
    events = [
        PickupEvent(
            gw.name,
            EventType.WARNING,
            REASON_LOST,
            f"{ep.type} endpoint on node {ep.node_name} lost: "
            f"{_lost_reason(ep, gw, kinds, health, now)}",
        )
        for key, ep in sorted(old_keys.items())
        if key not in new_keys
    ]
    events.extend(
        PickupEvent(
            gw.name,
            EventType.NORMAL,
            REASON_ELECTED,
            f"node {ep.node_name} elected as active {ep.type} endpoint",
        )
        for ep in new.active_endpoints
        if ep.key not in old_keys
    )
    return events


def elect(view: ClusterView, health: HealthView, now: float) -> PickupResult:
    """Desired status of every valid Gateway whose status differs from the observed one."""
    kinds = enabled_types(view)
    groups = members_by_gateway(view.nodes)
    statuses: dict[str, GatewayStatus] = {}
    events: list[PickupEvent] = []
    for name in sorted(view.gateways):
        if name in view.invalid_gateways:
            continue
        gw = view.gateways[name]
        new = elect_gateway(gw, groups.get(name, []), kinds, health, now)
        if new != gw.status:
            statuses[name] = new
            events.extend(_events(gw, new, kinds, health, now))
    return PickupResult(MappingProxyType(statuses), tuple(events))


def unconfirmed_actives(view: ClusterView, health: HealthView, now: float) -> frozenset[str]:
    """Active endpoint nodes whose heartbeat looks expired but awaits a fresh-view barrier."""
    pending = health.unconfirmed(now)
    if not pending:
        return frozenset()
    return frozenset(
        e.node_name
        for gw in view.gateways.values()
        for e in gw.status.active_endpoints
        if e.node_name in pending
    )
