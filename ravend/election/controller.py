"""`PickupController`: the leader-only loop that writes Gateway status (does I/O via the port).

While this process leads, each pass: feed the newest ClusterView's Leases to the HealthTracker,
ask `pickup.elect` for the statuses that must change, write each one conditionally on the
resourceVersion it was computed from (a 409 means the view is stale: wait for the newer one),
then emit the events of the writes that landed. Between passes it sleeps until the view changes,
leadership changes, or the next heartbeat deadline, whichever comes first.

A heartbeat deadline that passes is only acted on once the leader's own controller-Lease write
has come back through the watch (`request_renew` + `sent_times`, see health.py): a leader whose
watch stalled, or who is cut off, never flips anyone.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Protocol

from ravend.election.api import ElectionApi
from ravend.election.health import HealthTracker
from ravend.election.pickup import PickupResult, elect, unconfirmed_actives
from ravend.election.settings import ElectionSettings
from ravend.kube import errors
from ravend.model import ClusterView, Endpoint
from ravend.runtime import Latest

log = logging.getLogger(__name__)

RESYNC_S = 10.0
"""Re-run the pickup at least this often even when nothing seems to change."""

UNCONFIRMED_WARN_S = 1.0
"""Warn when an active node's heartbeat expiry has waited this long for confirmation."""

RETRY_S = 0.2
"""Wait before retrying after a status write failed with Unavailable."""


class Barrier(Protocol):
    """What the pickup needs from the elector to prove its view is fresh."""

    def request_renew(self) -> None: ...

    def sent_times(self) -> Mapping[str, float]: ...


class PickupController:
    def __init__(
        self,
        api: ElectionApi,
        view: Latest[ClusterView],
        leader: Latest[bool],
        settings: ElectionSettings,
        barrier: Barrier | None,
        *,
        probes: Latest[frozenset[str]] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """`barrier` None trusts the local clock alone (tests of the pure timing only)."""
        self._api = api
        self._view = view
        self._leader = leader
        self._settings = settings
        self._barrier = barrier
        self._probes = probes
        self._clock = clock
        self.passes = 0
        self.writes = 0
        self._warned: set[str] = set()

    async def run(self) -> None:
        while True:
            if not self._leader.value:
                await self._leader.wait_newer(self._leader.version)
                continue
            await self._lead()

    async def _lead(self) -> None:
        """Passes while leading; a fresh tracker per term (observations start at takeover)."""
        tracker = HealthTracker(self._settings)
        self._warned = set()
        if self._barrier is None:
            tracker.confirm(float("inf"))
        seen_view, seen_leader = -1, self._leader.version
        while self._leader.value:
            seen_view, view = self._view.version, self._view.value
            now = self._clock()
            sent = self._barrier.sent_times() if self._barrier else {}
            tracker.observe(view.leases, now, sent)
            timeout = RESYNC_S
            if view.synced:
                timeout = await self._pass(view, tracker, now)
            await self._wait(seen_view, seen_leader, timeout)

    async def _pass(self, view: ClusterView, tracker: HealthTracker, now: float) -> float:
        probes = self._probes.value if self._probes else frozenset()
        health = tracker.evaluate(view.nodes, probes)
        pending = unconfirmed_actives(view, health, now) if self._barrier else frozenset()
        if self._barrier and pending:
            self._barrier.request_renew()
            self._warn_unconfirmed(pending, health.deadlines, now)
        result = elect(view, health, now)
        self.passes += 1
        retry = await self._write(view, result)
        deadline = health.next_deadline(now)
        timeout = RESYNC_S if deadline is None else max(0.0, deadline - self._clock())
        return min(timeout, RESYNC_S, RETRY_S if retry else RESYNC_S)

    def _warn_unconfirmed(
        self, pending: frozenset[str], deadlines: Mapping[str, float], now: float
    ) -> None:
        """Say once per node when an expiry waits long for the fresh-view barrier (its echo)."""
        for node in sorted(pending - self._warned):
            late = now - deadlines[node]
            if late > UNCONFIRMED_WARN_S:
                self._warned.add(node)
                log.warning(
                    "heartbeat of %s expired %.1f s ago, but this leader has not seen its own "
                    "controller-Lease renewal come back through the watch: not failing over yet",
                    node,
                    late,
                )

    async def _write(self, view: ClusterView, result: PickupResult) -> bool:
        """Write changed statuses; True if some write should be retried soon."""
        retry = False
        for name, status in result.statuses.items():
            if not self._leader.value:
                return False
            gw = view.gateways[name]
            try:
                await self._api.write_gateway_status(replace(gw, status=status))
            except errors.Conflict:
                log.debug("status of %s changed under us; waiting for the newer view", name)
                continue
            except errors.NotFound:
                continue
            except errors.KubeError as exc:
                log.warning("status write for gateway %s failed: %s", name, exc)
                retry = True
                continue
            self.writes += 1
            log.info("gateway %s status: %s", name, _describe(status.active_endpoints))
            for event in result.events:
                if event.gateway == name:
                    await self._api.emit_event(gw, event)
        return retry

    async def _wait(self, seen_view: int, seen_leader: int, timeout: float) -> None:
        waits = [
            asyncio.ensure_future(self._view.wait_newer(seen_view)),
            asyncio.ensure_future(self._leader.wait_newer(seen_leader)),
        ]
        try:
            await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for fut in waits:
                fut.cancel()
            # gather, not `suppress(CancelledError)` around each await: that would also swallow
            # a cancellation of *this* task arriving meanwhile (the loop would never stop).
            await asyncio.gather(*waits, return_exceptions=True)


def _describe(endpoints: tuple[Endpoint, ...]) -> str:
    return ", ".join(f"{e.node_name}/{e.type}" for e in endpoints) or "no active endpoints"
