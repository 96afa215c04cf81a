"""`ravectl status` as a pure function: ClusterView + agents' /debug/state -> report (no I/O).

Roles come from the same code the agent uses (`ravend.roles.wanted_roles`) plus the Gateway
status, so what ravectl shows is what the agents decide; per-link health and L7 edges come from
the agents' /debug/state (keys in `statekeys`) and show "-" when an agent is unreachable or does
not provide them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ravend.ctl import statekeys as k
from ravend.ctl.output import section, table
from ravend.model import ClusterView, Endpoint, EndpointType, Gateway
from ravend.roles import Role, wanted_roles

AgentStates = Mapping[str, Mapping[str, Any] | None]
"""Node name -> its agent's /debug/state, or None when it could not be read."""


@dataclass(frozen=True)
class GatewayRow:
    name: str
    expose_type: str
    proxy_active: tuple[str, ...]
    tunnel_active: tuple[str, ...]
    proxy_candidates: tuple[str, ...]
    tunnel_candidates: tuple[str, ...]
    nodes: int


@dataclass(frozen=True)
class NodeRow:
    name: str
    gateway: str | None
    ready: bool
    l3_role: str | None
    """"gateway" (active tunnel endpoint), "member", or None when L3 is off for the node."""
    l7_role: str | None
    """"proxy-server", "proxy-client" or None."""
    agent: str
    """"ready", "not-ready" or "unreachable"."""


@dataclass(frozen=True)
class LinkRow:
    node: str
    peer_gateway: str | None
    peer_node: str | None
    endpoint: str | None
    rtt_ms: float | None
    loss: float | None
    handshake_age_s: float | None


@dataclass(frozen=True)
class EdgeRow:
    server: str
    edge: str | None
    gateway: str | None
    remote: str | None
    since_s: float | None
    streams: float | None


@dataclass(frozen=True)
class StatusReport:
    gateways: tuple[GatewayRow, ...]
    nodes: tuple[NodeRow, ...]
    links: tuple[LinkRow, ...]
    edges: tuple[EdgeRow, ...]
    l3_enabled: bool
    l7_enabled: bool


def _names(eps: tuple[Endpoint, ...]) -> tuple[str, ...]:
    return tuple(e.node_name for e in eps)


def gateway_row(gw: Gateway) -> GatewayRow:
    cands = gw.spec.endpoints
    return GatewayRow(
        name=gw.name,
        expose_type=gw.spec.expose_type.value,
        proxy_active=_names(gw.active(EndpointType.PROXY)),
        tunnel_active=_names(gw.active(EndpointType.TUNNEL)),
        proxy_candidates=_names(tuple(e for e in cands if e.type == EndpointType.PROXY)),
        tunnel_candidates=_names(tuple(e for e in cands if e.type == EndpointType.TUNNEL)),
        nodes=len(gw.status.nodes),
    )


def l3_role(view: ClusterView, node: str) -> str | None:
    """gateway / member per the view, None when L3 does not run on the node."""
    if Role.L3 not in wanted_roles(view, node, leader=False):
        return None
    gw = view.gateway_of(node)
    if gw is not None and node in _names(gw.active(EndpointType.TUNNEL)):
        return "gateway"
    return "member"


def l7_role(view: ClusterView, node: str) -> str | None:
    roles = wanted_roles(view, node, leader=False)
    if Role.L7_SERVER in roles:
        return "proxy-server"
    if Role.L7_CLIENT in roles:
        return "proxy-client"
    return None


def _agent_word(state: Mapping[str, Any] | None) -> str:
    if state is None:
        return "unreachable"
    return "ready" if k.dig(state, k.READINESS, "ready") is True else "not-ready"


def link_rows(node: str, state: Mapping[str, Any] | None) -> list[LinkRow]:
    return [
        LinkRow(
            node=node,
            peer_gateway=_opt_str(p.get(k.PEER_GATEWAY)),
            peer_node=_opt_str(p.get(k.PEER_NODE)),
            endpoint=_opt_str(p.get(k.PEER_ENDPOINT)),
            rtt_ms=k.number(p.get(k.PEER_RTT_MS)),
            loss=k.number(p.get(k.PEER_LOSS)),
            handshake_age_s=k.number(p.get(k.PEER_HANDSHAKE_AGE_S)),
        )
        for p in k.dig_list(state, k.L3, k.L3_PEERS)
    ]


def edge_rows(node: str, state: Mapping[str, Any] | None) -> list[EdgeRow]:
    return [
        EdgeRow(
            server=node,
            edge=_opt_str(e.get(k.EDGE_NODE)),
            gateway=_opt_str(e.get(k.EDGE_GATEWAY)),
            remote=_opt_str(e.get(k.EDGE_REMOTE)),
            since_s=k.number(e.get(k.EDGE_SINCE_S)),
            streams=k.number(e.get(k.EDGE_STREAMS)),
        )
        for e in k.dig_list(state, k.L7, k.L7_EDGES)
    ]


def _opt_str(value: object) -> str | None:
    return None if value is None or value == "" else str(value)


def build_status(view: ClusterView, states: AgentStates) -> StatusReport:
    """The whole report; nodes sorted by name, links and edges in the agents' order."""
    nodes, links, edges = [], [], []
    for name in sorted(view.nodes):
        node, state = view.nodes[name], states.get(name)
        nodes.append(
            NodeRow(
                name=name,
                gateway=node.gateway,
                ready=node.ready,
                l3_role=l3_role(view, name),
                l7_role=l7_role(view, name),
                agent=_agent_word(state),
            )
        )
        links += link_rows(name, state)
        edges += edge_rows(name, state)
    return StatusReport(
        gateways=tuple(gateway_row(view.gateways[n]) for n in sorted(view.gateways)),
        nodes=tuple(nodes),
        links=tuple(links),
        edges=tuple(edges),
        l3_enabled=view.raven_cfg.l3_enabled,
        l7_enabled=view.raven_cfg.l7_enabled,
    )


def render_status(report: StatusReport) -> str:
    """The tables `ravectl status` prints."""
    on = {True: "on", False: "off"}
    gws = table(
        [
            "gateway",
            "expose",
            "proxy active",
            "tunnel active",
            "proxy cand.",
            "tunnel cand.",
            "nodes",
        ],
        [
            (
                g.name,
                g.expose_type,
                g.proxy_active,
                g.tunnel_active,
                g.proxy_candidates,
                g.tunnel_candidates,
                g.nodes,
            )
            for g in report.gateways
        ],
    )
    nodes = table(
        ["node", "gateway", "ready", "l3 role", "l7 role", "agent"],
        [(n.name, n.gateway, n.ready, n.l3_role, n.l7_role, n.agent) for n in report.nodes],
    )
    links = table(
        ["node", "peer gateway", "peer node", "endpoint", "rtt ms", "loss", "handshake age s"],
        [
            (x.node, x.peer_gateway, x.peer_node, x.endpoint, x.rtt_ms, x.loss, x.handshake_age_s)
            for x in report.links
        ],
    )
    edges = table(
        ["proxy server", "edge node", "gateway", "remote", "connected s", "streams"],
        [(e.server, e.edge, e.gateway, e.remote, e.since_s, e.streams) for e in report.edges],
    )
    head = f"raven-cfg: l3 tunnel {on[report.l3_enabled]}, l7 proxy {on[report.l7_enabled]}\n"
    return "\n".join(
        [
            head,
            section("GATEWAYS", gws if report.gateways else ""),
            section("NODES", nodes if report.nodes else ""),
            section("TUNNEL LINKS", links if report.links else ""),
            section("L7 EDGES", edges if report.edges else ""),
        ]
    )
