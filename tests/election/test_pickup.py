"""Gateway pickup (pure): Raven's rules, stickiness, raven-cfg gating, status shape, events."""

from __future__ import annotations

from dataclasses import dataclass, replace

import pytest

from ravend.election.examples import (
    CLOUD_PUBLIC_IP,
    ep,
    gateway,
    manual_view,
    node,
    view,
)
from ravend.election.health import HealthView
from ravend.election.pickup import (
    REASON_ELECTED,
    REASON_LOST,
    EventType,
    elect,
    unconfirmed_actives,
)
from ravend.model import ClusterView, Endpoint, EndpointType, GatewayStatus, NodeInfo

P, T = EndpointType.PROXY, EndpointType.TUNNEL
OK = HealthView()


def active_keys(status: GatewayStatus) -> list[tuple[str, str]]:
    return [(e.node_name, str(e.type)) for e in status.active_endpoints]


def test_manual_example_expected_status() -> None:
    result = elect(manual_view(), OK, 0.0)
    cloud = result.statuses["gw-cloud"]
    cp = "izwz9dohcv74iegqecp4axz"
    assert [dict(e.config) for e in cloud.active_endpoints] == [
        {"enable-l7-proxy": "true"},
        {"enable-l3-tunnel": "true"},
    ]
    assert active_keys(cloud) == [(cp, "proxy"), (cp, "tunnel")]
    assert all(e.public_ip == CLOUD_PUBLIC_IP for e in cloud.active_endpoints)
    assert cloud.nodes == (
        NodeInfo(cp, "192.168.0.195", ("10.244.0.0/24",)),
        NodeInfo("izwz9ey0js5z7mornclpd6z", "192.168.0.196", ("10.244.1.0/24",)),
    )
    qd = result.statuses["gw-qingdao"]
    assert active_keys(qd) == [
        ("izm5eb24dmjfimuaybpnqzz", "proxy"),
        ("izm5eb24dmjfimuaybpnr0z", "tunnel"),
    ]
    assert {e.reason for e in result.events} == {REASON_ELECTED}
    assert len(result.events) == 6


def test_status_written_only_on_change() -> None:
    v = manual_view()
    first = elect(v, OK, 0.0)
    gws = {n: replace(g, status=first.statuses[n]) for n, g in v.gateways.items()}
    again = elect(replace(v, gateways=gws), OK, 0.0)
    assert dict(again.statuses) == {}
    assert again.events == ()


@dataclass(frozen=True)
class Case:
    name: str
    endpoints: tuple[Endpoint, ...]
    active: tuple[Endpoint, ...]
    down: frozenset[str]
    want: list[tuple[str, str]]
    tunnel_replicas: int = 1
    proxy_replicas: int = 1
    l3: bool = True
    l7: bool = True


CASES = [
    Case("first in spec order", (ep("b"), ep("a")), (), frozenset(), [("b", "tunnel")]),
    Case("skip unhealthy", (ep("a"), ep("b")), (), frozenset({"a"}), [("b", "tunnel")]),
    Case(
        "sticky: recovered a does not take back",
        (ep("a"), ep("b")),
        (ep("b"),),
        frozenset(),
        [("b", "tunnel")],
    ),
    Case(
        "failover to next",
        (ep("a"), ep("b"), ep("c")),
        (ep("a"),),
        frozenset({"a"}),
        [("b", "tunnel")],
    ),
    Case("nobody healthy", (ep("a"), ep("b")), (ep("a"),), frozenset({"a", "b"}), []),
    Case("removed from spec is dropped", (ep("b"),), (ep("a"),), frozenset(), [("b", "tunnel")]),
    Case(
        "two replicas, sorted by name",
        (ep("c"), ep("b"), ep("a")),
        (),
        frozenset(),
        [("b", "tunnel"), ("c", "tunnel")],
        tunnel_replicas=2,
    ),
    Case(
        "replicas reduced keeps sticky first",
        (ep("a"), ep("b")),
        (ep("b"), ep("a")),
        frozenset(),
        [("b", "tunnel")],
    ),
    Case("replicas zero", (ep("a"),), (), frozenset(), [], tunnel_replicas=0),
    Case(
        "both types on one node, name then type",
        (ep("a", T), ep("a", P)),
        (),
        frozenset(),
        [("a", "proxy"), ("a", "tunnel")],
    ),
    Case(
        "l7 off removes proxy",
        (ep("a", T), ep("a", P)),
        (ep("a", P),),
        frozenset(),
        [("a", "tunnel")],
        l7=False,
    ),
    Case(
        "l3 off removes tunnel",
        (ep("a", T), ep("a", P)),
        (ep("a", T),),
        frozenset(),
        [("a", "proxy")],
        l3=False,
    ),
    Case(
        "candidate not a member is skipped",
        (ep("stranger"), ep("a")),
        (),
        frozenset(),
        [("a", "tunnel")],
    ),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_election_table(case: Case) -> None:
    gw = gateway(
        "gw",
        case.endpoints,
        proxy_replicas=case.proxy_replicas,
        tunnel_replicas=case.tunnel_replicas,
        active=case.active,
    )
    members = [node(n, "gw") for n in ("a", "b", "c")] + [node("stranger", "other")]
    v = view([gw], members, l3=case.l3, l7=case.l7)
    health = HealthView(not_ready=case.down)
    status = elect(v, health, 0.0).statuses.get("gw", gw.status)
    assert active_keys(status) == case.want


def test_absent_raven_cfg_means_both_off_but_nodes_listed() -> None:
    v = manual_view()
    v = replace(
        v, raven_cfg=replace(v.raven_cfg, l3_enabled=False, l7_enabled=False, present=False)
    )
    status = elect(v, OK, 0.0).statuses["gw-qingdao"]
    assert status.active_endpoints == ()
    assert [n.node_name for n in status.nodes] == [
        "izm5eb24dmjfimuaybpnqzz",
        "izm5eb24dmjfimuaybpnr0z",
    ]


def test_active_copies_spec_and_adds_own_config() -> None:
    spec_ep = ep("a", T, public_ip="198.51.100.7", config={"publicKey": "k1"})
    stale = ep("a", T, public_ip="198.51.100.1", config={"publicKey": "old"})
    v = view([gateway("gw", [spec_ep], active=[stale])], [node("a", "gw")])
    (active,) = elect(v, OK, 0.0).statuses["gw"].active_endpoints
    assert active.public_ip == "198.51.100.7"
    assert dict(active.config) == {"publicKey": "k1", "enable-l3-tunnel": "true"}


def test_events_name_the_lost_and_the_elected() -> None:
    gw = gateway("gw", [ep("a"), ep("b")], active=[ep("a")])
    v = view([gw], [node("a", "gw", ready=False), node("b", "gw")])
    events = elect(v, HealthView(not_ready=frozenset({"a"})), 0.0).events
    lost, elected = events
    assert (lost.reason, lost.type) == (REASON_LOST, EventType.WARNING)
    assert "a" in lost.message and "NodeNotReady" in lost.message
    assert (elected.reason, elected.type) == (REASON_ELECTED, EventType.NORMAL)
    assert "node b" in elected.message


def test_invalid_gateways_are_skipped() -> None:
    v = view([gateway("gw", [ep("a")])], [node("a", "gw")])
    v = replace(v, invalid_gateways={"gw": "bad publicIP"})
    assert dict(elect(v, OK, 0.0).statuses) == {}


def test_heartbeat_expiry_fails_over_only_when_confirmed() -> None:
    gw = gateway("gw", [ep("a"), ep("b")], active=[ep("a")])
    v: ClusterView = view([gw], [node("a", "gw"), node("b", "gw")])
    deadlines = {"a": 5.0, "b": 50.0}
    unconfirmed = HealthView(deadlines=deadlines, confirmed_until=4.0)
    assert active_keys(elect(v, unconfirmed, 6.0).statuses["gw"]) == [("a", "tunnel")]
    assert unconfirmed_actives(v, unconfirmed, 6.0) == {"a"}
    confirmed = HealthView(deadlines=deadlines, confirmed_until=5.5)
    assert active_keys(elect(v, confirmed, 6.0).statuses["gw"]) == [("b", "tunnel")]
    assert unconfirmed_actives(v, confirmed, 6.0) == frozenset()
