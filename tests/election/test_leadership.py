"""Controller leadership decision (pure): client-go semantics on our own monotonic clock."""

from __future__ import annotations

from dataclasses import replace

import pytest

from ravend.election.leadership import (
    Action,
    Decision,
    Observation,
    decide,
    released,
    still_leading,
)
from ravend.election.settings import ElectionSettings
from ravend.model import Lease

S = ElectionSettings()


def run(observed: Lease | None, now: float, me: str, memory: Observation | None) -> Decision:
    return decide(observed, now, me, memory, settings=S, wall=f"w{now}")


def test_absent_lease_is_created_with_our_label() -> None:
    d = run(None, 0.0, "n1", None)
    assert d.action == Action.ACQUIRE and d.lease is not None
    assert d.lease.holder == "n1" and d.lease.lease_duration_seconds == 6
    assert d.lease.meta.labels["app.kubernetes.io/managed-by"] == "ravend"
    assert d.lease.meta.namespace == "kube-system"


def test_follower_waits_full_duration_from_its_own_observation() -> None:
    lease = run(None, 0.0, "n1", None).lease
    assert lease is not None
    d = run(lease, 100.0, "n2", None)  # first seen at 100, whatever the renewTime says
    assert d.action == Action.FOLLOW and d.wake_at == 106.0
    d2 = run(lease, 105.9, "n2", d.observation)
    assert d2.action == Action.FOLLOW
    d3 = run(lease, 106.0, "n2", d2.observation)
    assert d3.action == Action.ACQUIRE and d3.lease is not None
    assert d3.lease.holder == "n2" and d3.lease.lease_transitions == 1


def test_renewal_observed_resets_the_follower_clock() -> None:
    lease = run(None, 0.0, "n1", None).lease
    assert lease is not None
    d = run(lease, 0.0, "n2", None)
    renewed = replace(lease, renew_time="later")
    d = run(renewed, 5.0, "n2", d.observation)
    assert run(renewed, 10.9, "n2", d.observation).action == Action.FOLLOW


def test_holder_renews() -> None:
    lease = run(None, 0.0, "n1", None).lease
    assert lease is not None
    d = run(lease, 1.0, "n1", None)
    assert d.action == Action.RENEW and d.lease is not None
    assert d.lease.renew_time == "w1.0" and d.lease.acquire_time == lease.acquire_time


def test_released_lease_is_taken_at_once() -> None:
    lease = run(None, 0.0, "n1", None).lease
    assert lease is not None
    d = run(lease, 0.0, "n2", None)
    rel = released(lease, S, "w0.5")
    assert rel.holder == "" and rel.lease_duration_seconds == 1
    assert run(rel, 0.6, "n2", d.observation).action == Action.ACQUIRE


@pytest.mark.parametrize(("since", "leading"), [(0.0, True), (3.9, True), (4.0, False)])
def test_leader_steps_down_before_followers_may_take_over(since: float, leading: bool) -> None:
    assert still_leading(10.0, 10.0 + since, S) is leading
    assert S.controller_renew_deadline_s < S.controller_lease_duration_s


def test_settings_reject_unsafe_timings() -> None:
    with pytest.raises(ValueError):
        ElectionSettings(controller_renew_deadline_s=6.0)
    with pytest.raises(ValueError):
        ElectionSettings(active_renew_period_s=2.0)


def test_eligibility_excludes_edge_workers_by_default() -> None:
    assert S.is_eligible({})
    assert not S.is_eligible({"openyurt.io/is-edge-worker": "true"})
    assert S.is_eligible({"openyurt.io/is-edge-worker": "false"})
    assert S.node_of_heartbeat("ravend-node-x") == "x"
    assert S.node_of_heartbeat("ravend-controller") is None
