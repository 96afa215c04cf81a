"""`LeaderElector`: the read-decide-write loop over the controller Lease (does I/O via the port).

Every eligible ravend runs one. Each round reads the Lease, asks `leadership.decide`, and writes
what it returns; a 409 means another candidate won the race, so we follow. Leadership is
published as `Latest[bool]` (the role adjuster follows it). The leader also offers a *barrier*:
`request_renew()` makes it renew at once, and `sent_times()` tells the pickup controller when
each of its writes was sent, so the echo in the watch proves the view is fresh (health.py).
On cancellation (graceful shutdown) a leader releases the Lease so a peer takes over at once.

Given the ClusterView, the elector also checks that its own renewals come back through the
Lease watch. A leader whose watch stalled while its writes still succeed would otherwise keep
leading for ever while the pickup (rightly) refuses to call any heartbeat expired: no failover
at all. After `view_echo_timeout_s` without an echo it steps down, releases the Lease, and
competes again only once its view shows the controller Lease change.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping
from types import MappingProxyType

from ravend.election.api import ElectionApi
from ravend.election.leadership import (
    Action,
    Observation,
    decide,
    released,
    still_leading,
    wall_now,
)
from ravend.election.settings import ElectionSettings
from ravend.kube import errors
from ravend.model import ClusterView, Lease
from ravend.runtime import Latest

log = logging.getLogger(__name__)

_SENT_MEMORY = 64
"""How many of our own renewal stamps to remember (a few seconds' worth is plenty)."""

RELEASE_TIMEOUT_S = 1.0
"""Upper bound on the release write during shutdown (the shutdown deadline is global)."""


class LeaderElector:
    """Competes for the controller Lease and publishes whether this process leads."""

    def __init__(
        self,
        api: ElectionApi,
        me: str,
        leader: Latest[bool],
        settings: ElectionSettings,
        *,
        eligible: Callable[[], bool] = lambda: True,
        clock: Callable[[], float] = time.monotonic,
        view: Latest[ClusterView] | None = None,
    ) -> None:
        """`view` None skips the echo check (tests of the Lease protocol alone)."""
        self._api = api
        self._me = me
        self._leader = leader
        self._settings = settings
        self._eligible = eligible
        self._clock = clock
        self._memory: Observation | None = None
        self._last_ok = -float("inf")
        self._held: Lease | None = None
        self._wake = asyncio.Event()
        self._sent: OrderedDict[str, float] = OrderedDict()
        self._view = view
        self._unechoed: deque[float] = deque(maxlen=_SENT_MEMORY)
        """Send times of our successful writes not yet seen in the view, oldest first."""
        self._stale_at: tuple[str, str] | None = None
        """While stepped down for a stale view: the controller Lease as that view shows it."""

    def request_renew(self) -> None:
        """Renew now instead of at the next period (used as a fresh-view barrier)."""
        self._wake.set()

    async def _sleep(self, delay: float) -> None:
        # asyncio.timeout rather than asyncio.wait_for: on Python 3.11 wait_for can swallow a
        # cancellation when the wake-up races with it (seen: a barrier request during shutdown).
        try:
            async with asyncio.timeout(delay):
                await self._wake.wait()
        except TimeoutError:
            pass
        self._wake.clear()

    def sent_times(self) -> Mapping[str, float]:
        """Our recent writes -> monotonic time each was sent.

        Keyed by the renewTime we stamped (known before sending, so an echo that overtakes the
        response still counts) and by the resourceVersion the server returned.
        """
        return MappingProxyType(self._sent)

    @property
    def leading(self) -> bool:
        return self._leader.value

    async def run(self) -> None:
        """Run until cancelled; release the Lease on the way out if we hold it."""
        try:
            while True:
                delay = await self.round()
                await self._sleep(delay)
        finally:
            await self._release()

    async def round(self) -> float:
        """One read-decide-write round; returns how long to wait before the next one.

        The round is bounded by the retry period, so a hung request cannot keep us publishing
        leadership past the renew deadline (+ one period, still below the lease duration).
        """
        s = self._settings
        try:
            async with asyncio.timeout(s.controller_retry_period_s):
                return await self._round()
        except (errors.KubeError, TimeoutError) as exc:
            log.warning("controller lease round failed: %r", exc)
            self._publish(still_leading(self._last_ok, self._clock(), s))
            return s.controller_retry_period_s

    async def _round(self) -> float:
        s = self._settings
        if not self._eligible():
            await self._release()
            return s.controller_retry_period_s
        if not await self._view_fresh():
            return s.controller_retry_period_s
        observed = await self._api.get_lease(s.namespace, s.controller_lease)
        wall = wall_now()
        now = self._clock()
        decision = decide(observed, now, self._me, self._memory, settings=s, wall=wall)
        self._memory = decision.observation
        if decision.action == Action.FOLLOW or decision.lease is None:
            self._held = None
            self._publish(False)
            wait = decision.wake_at - now if decision.action == Action.FOLLOW else float("inf")
            return max(0.0, min(s.controller_retry_period_s, wait))
        await self._write(decision.lease, create=observed is None, wall=wall)
        return s.controller_retry_period_s

    async def _write(self, lease: Lease, *, create: bool, wall: str) -> None:
        sent = self._clock()  # before the request: a lower bound of the commit time
        self._remember(wall, sent)
        try:
            if create:
                stored = await self._api.create_lease(lease)
            else:
                stored = await self._api.replace_lease(lease)
        except (errors.Conflict, errors.AlreadyExists):
            log.info("controller lease taken by another candidate; following")
            self._held = None
            self._publish(False)
            return
        # Also by resourceVersion, in case a server re-formats the MicroTime we sent.
        self._remember(stored.meta.resource_version, sent)
        if self._held is None:
            self._unechoed.clear()  # a new term: older writes say nothing about this one
        self._unechoed.append(sent)
        self._held = stored
        self._last_ok = sent
        self._publish(True)

    def _seen_record(self) -> tuple[str, str]:
        """The controller Lease (renewTime, resourceVersion) in our view; empty if absent."""
        assert self._view is not None
        lease = self._view.value.leases.get(self._settings.controller_lease)
        return (lease.renew_time, lease.meta.resource_version) if lease else ("", "")

    async def _view_fresh(self) -> bool:
        """Whether to take part in this round; steps down when our writes stopped echoing."""
        if self._view is None:
            return True
        seen = self._seen_record()
        echoed = self._sent.get(seen[0]) if seen[0] else None
        if echoed is None and seen[1]:
            echoed = self._sent.get(seen[1])
        while echoed is not None and self._unechoed and self._unechoed[0] <= echoed:
            self._unechoed.popleft()
        if self._stale_at is not None:
            if seen == self._stale_at:
                return False  # our watch still shows nothing new: stay out
            log.info("controller lease: the watch delivers again; %s competes again", self._me)
            self._stale_at = None
            self._unechoed.clear()
            return True
        waited = self._clock() - self._unechoed[0] if self._unechoed else 0.0
        if self._held is None or waited <= self._settings.view_echo_timeout_s:
            return True
        log.warning(
            "controller lease: a renewal sent %.1f s ago has not come back through the watch; "
            "%s steps down (a stale view cannot prove any heartbeat expired)",
            waited,
            self._me,
        )
        self._stale_at = seen
        self._unechoed.clear()
        await self._release()
        return False

    def _remember(self, key: str, sent: float) -> None:
        self._sent[key] = sent
        while len(self._sent) > _SENT_MEMORY:
            self._sent.popitem(last=False)

    def _publish(self, leading: bool) -> None:
        if leading != self._leader.value:
            log.info("controller leadership %s (%s)", "acquired" if leading else "lost", self._me)
            self._leader.publish(leading)

    async def _release(self) -> None:
        held, self._held = self._held, None
        self._publish(False)
        if held is None:
            return
        try:
            async with asyncio.timeout(RELEASE_TIMEOUT_S):
                await self._api.replace_lease(released(held, self._settings, wall_now()))
            log.info("controller lease released by %s", self._me)
        except (errors.KubeError, TimeoutError) as exc:
            log.warning("controller lease release failed (peers wait for expiry): %s", exc)
