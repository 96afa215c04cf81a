"""Controller leadership over Lease kube-system/ravend-controller: the pure decision.

Semantics follow client-go's leaderelection: a candidate remembers the last Lease record it saw
and *when it saw it change* on its own monotonic clock; the holder is presumed alive until that
observation time + leaseDurationSeconds. Remote renewTime values are only compared for equality,
never against our clock, so clock skew between nodes cannot cause a takeover. No I/O here: the
loop in `elector.py` reads the Lease, calls `decide`, and writes what it returns.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from enum import StrEnum

from ravend.election.settings import MANAGED_BY_LABEL, MANAGED_BY_VALUE, ElectionSettings
from ravend.model import Lease, ObjectMeta

LeaseRecord = Lease
"""The Lease as the election sees it (holder, duration, times, transitions)."""


class Action(StrEnum):
    ACQUIRE = "acquire"
    """Write ourselves as holder (create if `observed` was None, else replace)."""
    RENEW = "renew"
    """We hold it: write a fresh renewTime."""
    FOLLOW = "follow"
    """Someone else holds a live Lease: do nothing until `wake_at`."""


@dataclass(frozen=True)
class Observation:
    """What a candidate remembers between rounds: the record and when it last changed."""

    record: tuple[str, str, int, int]
    observed_at: float

    @property
    def expires_at(self) -> float:
        return self.observed_at + self.record[2]


@dataclass(frozen=True)
class Decision:
    action: Action
    observation: Observation | None
    """Memory to pass to the next `decide` call."""
    lease: Lease | None = None
    """The Lease to write for ACQUIRE/RENEW (create when the observed one was None)."""
    wake_at: float = math.inf
    """For FOLLOW: monotonic time at which the holder's claim expires."""


def wall_now() -> str:
    """RFC 3339 MicroTime as the API stores it (wall clock is only for the API, house style 7)."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _record(lease: Lease) -> tuple[str, str, int, int]:
    return (lease.holder, lease.renew_time, lease.lease_duration_seconds, lease.lease_transitions)


def observe(observed: Lease | None, now: float, memory: Observation | None) -> Observation | None:
    """Update the memory: the clock restarts only when the record actually changed."""
    if observed is None:
        return None
    rec = _record(observed)
    if memory is not None and memory.record == rec:
        return memory
    return Observation(rec, now)


def decide(
    observed: LeaseRecord | None,
    now_mono: float,
    me: str,
    memory: Observation | None,
    *,
    settings: ElectionSettings,
    wall: str,
) -> Decision:
    """One round of leader election.

    `observed` is the Lease as just read (None if absent), `memory` the previous Decision's
    observation, `wall` the RFC 3339 time to stamp into the Lease if we write.
    """
    obs = observe(observed, now_mono, memory)
    duration = math.ceil(settings.controller_lease_duration_s)
    if observed is None or obs is None:
        meta = ObjectMeta(
            name=settings.controller_lease,
            namespace=settings.namespace,
            labels={MANAGED_BY_LABEL: MANAGED_BY_VALUE},
        )
        lease = Lease(meta, me, duration, acquire_time=wall, renew_time=wall)
        return Decision(Action.ACQUIRE, None, lease)
    if observed.holder == me:
        return Decision(
            Action.RENEW,
            obs,
            replace(observed, lease_duration_seconds=duration, renew_time=wall),
        )
    if observed.holder and now_mono < obs.expires_at:
        return Decision(Action.FOLLOW, obs, wake_at=obs.expires_at)
    lease = replace(
        observed,
        holder=me,
        lease_duration_seconds=duration,
        acquire_time=wall,
        renew_time=wall,
        lease_transitions=observed.lease_transitions + 1,
    )
    return Decision(Action.ACQUIRE, obs, lease)


def released(lease: Lease, settings: ElectionSettings, wall: str) -> Lease:
    """The Lease to write on graceful shutdown: no holder, shortest duration."""
    return replace(
        lease, holder="", lease_duration_seconds=settings.release_duration_s, renew_time=wall
    )


def still_leading(last_renew_sent: float, now_mono: float, settings: ElectionSettings) -> bool:
    """A leader stops leading once its last successful renewal is older than the renew deadline.

    Measured from the *send* time of that renewal: followers started their clocks after it was
    committed, so we stop strictly before any of them may take over (the split-brain bound).
    """
    return now_mono - last_renew_sent < settings.controller_renew_deadline_s
