"""Node heartbeat: the agent side of fast failover.

Every node that is a candidate endpoint of some Gateway renews Lease
kube-system/ravend-node-<node>: fast while it is an active endpoint, slowly while only a standby,
not at all otherwise. The pure part (`plan_heartbeat`, `heartbeat_lease`) decides the rhythm from
the ClusterView; `Heartbeat.run()` is the thin loop that writes through the kube client.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from ravend.election.api import ElectionApi
from ravend.election.leadership import wall_now
from ravend.election.settings import MANAGED_BY_LABEL, MANAGED_BY_VALUE, ElectionSettings
from ravend.kube import errors
from ravend.model import ClusterView, Lease, ObjectMeta
from ravend.runtime import Latest

log = logging.getLogger(__name__)

WRITE_TIMEOUT_S = 1.0
"""Upper bound on one heartbeat write; a slower write is useless (the duration is ~2 s)."""


class Mode(StrEnum):
    NONE = "none"
    """Not a candidate anywhere (or raven-cfg off): no heartbeat writes."""
    STANDBY = "standby"
    ACTIVE = "active"


@dataclass(frozen=True)
class HeartbeatPlan:
    mode: Mode
    period_s: float
    """Seconds between renewals (inf when mode is NONE)."""
    duration_s: int
    """leaseDurationSeconds to write."""


def plan_heartbeat(view: ClusterView, me: str, settings: ElectionSettings) -> HeartbeatPlan:
    """How this node should heartbeat, given the Gateways that name it.

    Types are not filtered by raven-cfg: turning a type on must find heartbeats already flowing,
    and a candidate of a disabled type costs one slow write per standby period.
    """
    candidate = active = False
    for gw in view.gateways.values():
        if any(e.node_name == me for e in gw.status.active_endpoints):
            active = True
            break
        if any(e.node_name == me for e in gw.spec.endpoints):
            candidate = True
    if active:
        return HeartbeatPlan(
            Mode.ACTIVE, settings.active_renew_period_s, settings.active_lease_duration_s
        )
    if candidate:
        return HeartbeatPlan(
            Mode.STANDBY, settings.standby_renew_period_s, settings.standby_lease_duration_s
        )
    return HeartbeatPlan(Mode.NONE, float("inf"), settings.standby_lease_duration_s)


def heartbeat_lease(
    me: str, duration_s: int, wall: str, settings: ElectionSettings, base: Lease | None
) -> Lease:
    """The heartbeat Lease to write: `base` (as last read, keeps resourceVersion) or a new one."""
    if base is None:
        meta = ObjectMeta(
            name=settings.heartbeat_lease(me),
            namespace=settings.namespace,
            labels={MANAGED_BY_LABEL: MANAGED_BY_VALUE},
        )
        return Lease(meta, me, duration_s, acquire_time=wall, renew_time=wall)
    return Lease(
        base.meta,
        holder=me,
        lease_duration_seconds=duration_s,
        acquire_time=base.acquire_time or wall,
        renew_time=wall,
        lease_transitions=base.lease_transitions,
    )


class Heartbeat:
    """Agent-side loop: renews this node's heartbeat Lease in the rhythm `plan_heartbeat` says.

    Writes when the mode changes (standby -> active renews at once) or when the period elapsed;
    the ClusterView only decides the mode, so cluster-wide Lease churn costs no extra writes.
    On cancellation it writes the longer `restart_grace_s` duration: a quick restart of ravend
    is then not a failover, while a crash (no write at all) still is, after ~2 s.
    """

    def __init__(
        self,
        api: ElectionApi,
        me: str,
        view: Latest[ClusterView],
        settings: ElectionSettings,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._api = api
        self._me = me
        self._view = view
        self._settings = settings
        self._clock = clock
        self._lease: Lease | None = None
        self.writes = 0
        """Successful writes so far (tests and metrics read it)."""

    async def run(self) -> None:
        seen = -1
        mode = Mode.NONE
        due = 0.0
        try:
            while True:
                seen, view = self._view.version, self._view.value
                plan = plan_heartbeat(view, self._me, self._settings)
                now = self._clock()
                if plan.mode != Mode.NONE and (plan.mode != mode or now >= due):
                    ok = await self.beat(plan.duration_s)
                    # A failed write is retried soon: the lease is about to expire otherwise.
                    due = now + (plan.period_s if ok else min(plan.period_s, 0.2))
                mode = plan.mode
                timeout = None if mode == Mode.NONE else max(0.0, due - self._clock())
                await _wait_newer(self._view, seen, timeout)
        finally:
            if mode != Mode.NONE and self._lease is not None:
                await self._say_restarting()

    async def beat(self, duration_s: int) -> bool:
        """Write one renewal; True on success. Conflicts re-read (we are the only writer)."""
        try:
            async with asyncio.timeout(WRITE_TIMEOUT_S):
                await self._write(duration_s)
            self.writes += 1
            return True
        except (errors.KubeError, TimeoutError) as exc:
            log.warning("heartbeat write failed for %s: %r", self._me, exc)
            return False

    async def _write(self, duration_s: int) -> None:
        s = self._settings
        if self._lease is None:
            self._lease = await self._api.get_lease(s.namespace, s.heartbeat_lease(self._me))
        lease = heartbeat_lease(self._me, duration_s, wall_now(), s, self._lease)
        try:
            if self._lease is None:
                self._lease = await self._api.create_lease(lease)
            else:
                self._lease = await self._api.replace_lease(lease)
        except (errors.Conflict, errors.AlreadyExists, errors.NotFound):
            self._lease = None  # someone edited or deleted it: re-read on the next beat
            raise

    async def _say_restarting(self) -> None:
        log.info(
            "heartbeat of %s: announcing restart (%ss)", self._me, self._settings.restart_grace_s
        )
        await self.beat(self._settings.restart_grace_s)


async def _wait_newer(latest: Latest[ClusterView], seen: int, timeout: float | None) -> None:
    try:
        async with asyncio.timeout(timeout):
            await latest.wait_newer(seen)
    except TimeoutError:
        pass
