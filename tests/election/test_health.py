"""Health tracking (pure): own-clock expiry, the fresh-view watermark, readiness, probes."""

from __future__ import annotations

import math

import pytest

from ravend.election.examples import node
from ravend.election.health import (
    REASON_HEARTBEAT_EXPIRED,
    REASON_NO_HEARTBEAT,
    REASON_NOT_READY,
    REASON_PROBE_FAILED,
    HealthTracker,
)
from ravend.election.settings import ElectionSettings
from ravend.model import Lease, ObjectMeta

S = ElectionSettings()


def hb(node_name: str, renew: str, duration: int = 2, holder: str | None = None) -> Lease:
    name = S.heartbeat_lease(node_name)
    return Lease(
        ObjectMeta(name), node_name if holder is None else holder, duration, renew_time=renew
    )


def ctl(renew: str, rv: str = "") -> Lease:
    meta = ObjectMeta(S.controller_lease, resource_version=rv)
    return Lease(meta, "leader", 6, renew_time=renew)


def leases(*items: Lease) -> dict[str, Lease]:
    return {lease.meta.name: lease for lease in items}


NODES = {"a": node("a", "gw"), "b": node("b", "gw")}


def test_expiry_counts_from_our_observation_not_remote_time() -> None:
    t = HealthTracker(S)
    t.confirm(math.inf)
    # The remote renewTime is an hour old (skewed clock): irrelevant, we saw it at 100.
    t.observe(leases(hb("a", "2020-01-01T00:00:00.000000Z")), now=100.0)
    view = t.evaluate(NODES)
    assert view.healthy("a", 101.9)
    assert view.reason("a", 102.0) == REASON_HEARTBEAT_EXPIRED
    assert view.next_deadline(100.5) == 102.0


def test_renewal_restarts_the_clock_and_same_record_does_not() -> None:
    t = HealthTracker(S)
    t.confirm(math.inf)
    t.observe(leases(hb("a", "r1")), now=0.0)
    t.observe(leases(hb("a", "r1")), now=1.5)  # unrelated view change: same record
    assert t.evaluate(NODES).reason("a", 2.0) == REASON_HEARTBEAT_EXPIRED
    t.observe(leases(hb("a", "r2")), now=1.9)
    assert t.evaluate(NODES).healthy("a", 3.8)


def test_restarting_duration_extends_grace() -> None:
    t = HealthTracker(S)
    t.confirm(math.inf)
    t.observe(leases(hb("a", "r1")), now=0.0)
    t.observe(leases(hb("a", "r2", duration=S.restart_grace_s)), now=0.5)
    view = t.evaluate(NODES)
    assert view.healthy("a", 9.0)
    assert not view.healthy("a", 10.5)


def test_expiry_needs_a_fresh_view_watermark() -> None:
    """A leader whose watch stalled must not declare anyone dead."""
    t = HealthTracker(S)
    t.observe(leases(hb("a", "r1"), ctl("c1")), now=0.0, own_writes={"c1": 0.0})
    view = t.evaluate(NODES)
    assert view.healthy("a", 5.0)  # deadline 2.0 passed on our clock, view only fresh to 0.0
    assert view.unconfirmed(5.0) == {"a"}
    # Our barrier write sent at 4.0 comes back through the watch: expiry is now real.
    t.observe(leases(hb("a", "r1"), ctl("c2")), now=5.1, own_writes={"c2": 4.0})
    view = t.evaluate(NODES)
    assert view.reason("a", 5.1) == REASON_HEARTBEAT_EXPIRED
    assert view.unconfirmed(5.1) == frozenset()


def test_echo_matched_by_resource_version_when_time_is_reformatted() -> None:
    t = HealthTracker(S)
    t.observe(leases(ctl("2026-01-01T00:00:00.000001+00:00", rv="42")), 1.0, {"42": 0.5})
    assert t.confirmed_until == 0.5


def test_foreign_controller_writes_do_not_confirm() -> None:
    t = HealthTracker(S)
    t.observe(leases(hb("a", "r1"), ctl("someone-else")), now=0.0, own_writes={"c1": 9.0})
    assert t.confirmed_until == -math.inf


def test_watermark_never_moves_back() -> None:
    t = HealthTracker(S)
    t.confirm(5.0)
    t.confirm(3.0)
    assert t.confirmed_until == 5.0


@pytest.mark.parametrize(
    ("ready", "probe_failed", "require", "has_lease", "want"),
    [
        (False, False, False, True, REASON_NOT_READY),
        (True, True, False, True, REASON_PROBE_FAILED),
        (True, False, True, False, REASON_NO_HEARTBEAT),
        (True, False, False, False, None),  # Raven fallback: readiness only
        (True, False, False, True, None),
    ],
)
def test_reasons(
    ready: bool, probe_failed: bool, require: bool, has_lease: bool, want: str | None
) -> None:
    t = HealthTracker(ElectionSettings(require_heartbeat=require))
    if has_lease:
        t.observe(leases(hb("a", "r1")), now=0.0)
    nodes = {"a": node("a", "gw", ready=ready)}
    view = t.evaluate(nodes, probe_failed=frozenset({"a"}) if probe_failed else frozenset())
    assert view.reason("a", 1.0) == want


def test_deleted_lease_forgotten_and_released_lease_is_dead() -> None:
    t = HealthTracker(S)
    t.observe(leases(hb("a", "r1"), hb("b", "r1", holder="")), now=0.0)
    assert t.evaluate(NODES).reason("b", 0.0) == REASON_HEARTBEAT_EXPIRED
    t.observe({}, now=1.0)
    assert t.evaluate(NODES).deadlines == {}
