"""`ravectl status` from a view and agents' /debug/state: roles, links, edges, tolerance."""

from __future__ import annotations

import json
from dataclasses import replace
from types import MappingProxyType
from typing import Any

from ravend.ctl.output import cell, dumps, table
from ravend.ctl.status import build_status, render_status
from ravend.election.examples import ep, manual_view
from ravend.model import ClusterView, EndpointType, Gateway, GatewayStatus

HZ, HZ2 = "izbp15inok0kbfkg3in52rz", "izbp15inok0kbfkg3in52sz"
CLOUD, CLOUD2 = "izwz9dohcv74iegqecp4axz", "izwz9ey0js5z7mornclpd6z"


def elected(view: ClusterView) -> ClusterView:
    """The manual's view with every Gateway's first candidates active."""
    gws: dict[str, Gateway] = {}
    for name, gw in view.gateways.items():
        active = tuple(
            next(e for e in gw.spec.endpoints if e.type == kind)
            for kind in EndpointType
            if any(e.type == kind for e in gw.spec.endpoints)
        )
        gws[name] = replace(gw, status=GatewayStatus(active_endpoints=active))
    return replace(view, gateways=MappingProxyType(gws))


STATE: dict[str, Any] = {
    "readiness": {"ready": True},
    "l3": {
        "role": "gateway",
        "peers": [
            {"gateway": "gw-cloud", "node": CLOUD, "endpoint": "198.18.0.2:4500",
             "rtt_ms": 1.25, "loss": 0.0, "handshake_age_s": 12},
            {"gateway": "gw-qingdao", "rtt_ms": "bogus"},
            "not a mapping",
        ],
    },
}  # fmt: skip
SERVER_STATE: dict[str, Any] = {
    "readiness": {"ready": False},
    "l7": {"edges": [{"node": HZ, "gateway": "gw-hangzhou", "since_s": 30.0, "streams": 2}]},
}


def test_roles_follow_gateway_status_and_raven_cfg() -> None:
    report = build_status(elected(manual_view()), {})
    roles = {n.name: (n.l3_role, n.l7_role) for n in report.nodes}
    assert roles[HZ] == ("gateway", "proxy-client")
    assert roles[HZ2] == ("member", None)
    assert roles[CLOUD] == ("gateway", "proxy-server")
    assert roles[CLOUD2] == ("member", None)
    assert {n.agent for n in report.nodes} == {"unreachable"}
    off = replace(
        elected(manual_view()), raven_cfg=replace(manual_view().raven_cfg, l3_enabled=False)
    )
    assert {n.l3_role for n in build_status(off, {}).nodes} == {None}


def test_gateway_rows_list_active_and_candidates() -> None:
    view = elected(manual_view())
    hz = view.gateways["gw-hangzhou"]
    extra = replace(hz.spec, endpoints=(*hz.spec.endpoints, ep(HZ2, EndpointType.TUNNEL)))
    view = replace(view, gateways={**view.gateways, "gw-hangzhou": replace(hz, spec=extra)})
    rows = {g.name: g for g in build_status(view, {}).gateways}
    assert rows["gw-hangzhou"].tunnel_active == (HZ,)
    assert rows["gw-hangzhou"].tunnel_candidates == (HZ, HZ2)
    assert rows["gw-cloud"].expose_type == "PublicIP"
    assert [g.name for g in build_status(view, {}).gateways] == sorted(rows)


def test_links_and_edges_from_agent_state_tolerate_bad_values() -> None:
    report = build_status(elected(manual_view()), {HZ: STATE, CLOUD: SERVER_STATE, CLOUD2: None})
    good, partial = report.links
    assert (good.node, good.peer_gateway, good.rtt_ms, good.handshake_age_s) == (
        HZ, "gw-cloud", 1.25, 12.0,
    )  # fmt: skip
    assert (partial.peer_gateway, partial.rtt_ms, partial.endpoint) == ("gw-qingdao", None, None)
    (edge,) = report.edges
    assert (edge.server, edge.edge, edge.streams) == (CLOUD, HZ, 2.0)
    agents = {n.name: n.agent for n in report.nodes}
    assert (agents[HZ], agents[CLOUD], agents[CLOUD2]) == ("ready", "not-ready", "unreachable")


def test_render_shows_dash_for_missing_and_json_round_trips() -> None:
    report = build_status(elected(manual_view()), {HZ: STATE})
    text = render_status(report)
    assert "raven-cfg: l3 tunnel on, l7 proxy on" in text
    for title in ("GATEWAYS", "NODES", "TUNNEL LINKS", "L7 EDGES"):
        assert title in text
    line = next(x for x in text.splitlines() if "gw-qingdao" in x and HZ in x)
    assert line.split()[2:] == ["-", "-", "-", "-", "-"]
    assert "L7 EDGES\n  (none)" in text
    doc = json.loads(dumps(report))
    assert doc["links"][0]["rtt_ms"] == 1.25
    assert doc["nodes"][0]["name"] == sorted(manual_view().nodes)[0]


def test_table_and_cell_formatting() -> None:
    values: list[object] = [None, "", [], True, 1.234, 12.34, ("a", "b"), 3]
    assert [cell(v) for v in values] == [
        "-", "-", "-", "yes", "1.23", "12.3", "a,b", "3",
    ]  # fmt: skip
    assert table(["a", "long header"], [("xx", None)]).splitlines() == [
        "A    LONG HEADER",
        "xx   -",
    ]
