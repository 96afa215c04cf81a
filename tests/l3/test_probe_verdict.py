"""Link probes as election evidence: the safety rule of `ProbeVerdict` and its effect on pickup
(pure: no sockets, times are plain numbers)."""

from __future__ import annotations

import pytest

from ravend.election.examples import ep, gateway, node, view
from ravend.election.health import REASON_PROBE_FAILED, HealthTracker
from ravend.election.pickup import PickupResult, elect
from ravend.election.settings import ElectionSettings
from ravend.l3.probe import PeerHealth, ProbeSettings
from ravend.l3.probe_verdict import ProbeVerdict
from ravend.model import ClusterView, EndpointType

S = ProbeSettings(evidence_after=10, evidence_hold_s=30.0)


def peer(gw: str, up: bool, sent: int = 20, target: str = "10.0.0.9") -> PeerHealth:
    return PeerHealth(gw, f"{gw}-node", target, up, sent=sent, received=sent if up else 0)


def health(*peers: PeerHealth) -> dict[str, PeerHealth]:
    return {p.gateway: p for p in peers}


def test_a_silent_peer_is_reported_while_the_others_answer() -> None:
    v = ProbeVerdict(S)
    got = v.observe(health(peer("a", True), peer("b", True), peer("c", False)), True, 0.0)
    assert got == {"c-node"}


@pytest.mark.parametrize(
    ("peers", "why"),
    [
        ((peer("a", False), peer("b", False), peer("c", False)), "observer's own uplink is down"),
        ((peer("a", True), peer("b", False), peer("c", False)), "more down than up: suspect us"),
        ((peer("a", False),), "one peer: cannot tell which side is at fault"),
        ((peer("a", True), peer("b", False, sent=9)), "new peer still handshaking"),
        ((peer("a", True), peer("b", False, target="")), "peer that cannot be probed"),
    ],
)
def test_no_evidence_when_the_observer_cannot_tell(peers: tuple[PeerHealth, ...], why: str) -> None:
    assert ProbeVerdict(S).observe(health(*peers), True, 0.0) == frozenset(), why


def test_only_a_gateway_observes() -> None:
    # A member does not probe peer gateways; its (empty or stale) health is never evidence.
    got = ProbeVerdict(S).observe(health(peer("a", True), peer("b", False)), False, 0.0)
    assert got == frozenset()


def test_a_reported_node_is_held_then_released() -> None:
    v = ProbeVerdict(S)
    assert v.observe(health(peer("a", True), peer("b", False)), True, 0.0) == {"b-node"}
    # b lost its slot and is no longer probed: still reported until the hold ends.
    assert v.observe(health(peer("a", True)), True, 29.0) == {"b-node"}
    assert v.observe(health(peer("a", True)), True, 31.0) == frozenset()
    # Seen down again: the hold restarts from the newest observation.
    v.observe(health(peer("a", True), peer("b", False)), True, 40.0)
    assert v.observe(health(peer("a", True)), True, 65.0) == {"b-node"}
    v.clear()
    assert v.observe({}, True, 66.0) == frozenset()


HUB, QD_A, QD_B, HZ = "cloud-gw", "qd-a", "qd-b", "hz-gw"
T = EndpointType.TUNNEL


def cluster() -> ClusterView:
    return view(
        [
            gateway("gw-cloud", [ep(HUB, T, "203.0.113.10")], active=[ep(HUB, T, "203.0.113.10")]),
            gateway("gw-hz", [ep(HZ, T, under_nat=True)], active=[ep(HZ, T, under_nat=True)]),
            gateway(
                "gw-qd",
                [ep(QD_A, T, under_nat=True), ep(QD_B, T, under_nat=True)],
                active=[ep(QD_A, T, under_nat=True)],
            ),
        ],
        [node(HUB, "gw-cloud"), node(HZ, "gw-hz"), node(QD_A, "gw-qd"), node(QD_B, "gw-qd")],
    )


def test_the_hub_sees_an_edge_gateway_down_and_the_leader_moves_it() -> None:
    v = cluster()
    hub_health = health(
        PeerHealth("gw-hz", HZ, "172.16.2.1", True, sent=20, received=20),
        PeerHealth("gw-qd", QD_A, "172.16.1.1", False, sent=20, received=3),
    )
    failed = ProbeVerdict(S).observe(hub_health, True, 0.0)
    tracker = HealthTracker(ElectionSettings())
    tracker.confirm(float("inf"))
    hv = tracker.evaluate(v.nodes, failed)
    assert hv.reason(QD_A, 0.0) == REASON_PROBE_FAILED
    after = active(v, elect(v, hv, 0.0))
    assert after == {"gw-cloud": [HUB], "gw-hz": [HZ], "gw-qd": [QD_B]}  # only qd moves
    # The same probes seen from a node that is not a gateway (e.g. a cloud worker leading):
    # no evidence, heartbeats alone decide, nothing moves.
    quiet = ProbeVerdict(S).observe(hub_health, False, 0.0)
    assert active(v, elect(v, tracker.evaluate(v.nodes, quiet), 0.0))["gw-qd"] == [QD_A]


def active(v: ClusterView, result: PickupResult) -> dict[str, list[str]]:
    """Active tunnel nodes per Gateway after applying `result` to `v`."""
    out = {}
    for name, gw in v.gateways.items():
        status = result.statuses.get(name, gw.status)
        out[name] = [e.node_name for e in status.active_endpoints if e.type == T]
    return out
