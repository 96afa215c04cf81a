"""Heartbeat rhythm (pure): fast when active, slow when standby, silent otherwise."""

from __future__ import annotations

from ravend.election.examples import ep, gateway, node, view
from ravend.election.heartbeat import Mode, heartbeat_lease, plan_heartbeat
from ravend.election.settings import ElectionSettings

S = ElectionSettings()


def test_modes() -> None:
    gw = gateway("gw", [ep("a"), ep("b")], active=[ep("a")])
    v = view([gw], [node(n, "gw") for n in "abc"])
    a, b, c = (plan_heartbeat(v, n, S) for n in "abc")
    assert (a.mode, a.period_s, a.duration_s) == (Mode.ACTIVE, 0.7, 2)
    assert (b.mode, b.period_s, b.duration_s) == (Mode.STANDBY, 3.0, 10)
    assert c.mode == Mode.NONE


def test_steady_state_write_rate_is_bounded() -> None:
    """One active + three standbys: about 1.4 + 3 x 0.33 = 2.4 writes/s; the active dominates."""
    rate = 1 / S.active_renew_period_s + 3 / S.standby_renew_period_s
    assert rate < 2.5
    assert 1 / S.active_renew_period_s <= 1.5


def test_lease_keeps_metadata_and_acquire_time() -> None:
    first = heartbeat_lease("a", 2, "t1", S, None)
    assert first.meta.name == "ravend-node-a" and first.holder == "a"
    assert first.meta.labels["app.kubernetes.io/managed-by"] == "ravend"
    again = heartbeat_lease("a", 10, "t2", S, first)
    assert again.acquire_time == "t1" and again.renew_time == "t2"
    assert again.lease_duration_seconds == 10 and again.meta == first.meta
