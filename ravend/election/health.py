"""Health of candidate gateway nodes as the leader sees it (pure, sans-IO, no clock reads).

Inputs are what the leader observes: heartbeat Lease renewals (via the informer), NodeReady, and
optionally link probes from the L3 plane. Every time is the caller's monotonic clock.

Two rules make the verdict safe (docs/failover.md has the argument):

1. Expiry is measured from when *this* process saw a heartbeat change, never from the remote
   renewTime (client-go's rule): node clocks may disagree, our own clock is all we trust.
2. An expiry only counts once the view is known to be complete past the deadline. The leader
   learns that when its own controller-Lease write, sent at monotonic time w, comes back through
   the watch: Lease events arrive in resourceVersion order, so every heartbeat committed before
   that write is visible too. A leader cut off from the apiserver sees no such echo and so never
   declares anyone dead; `confirmed_until` carries that watermark.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from ravend.election.settings import ElectionSettings
from ravend.model import Lease, Node

REASON_NOT_READY = "NodeNotReady"
REASON_HEARTBEAT_EXPIRED = "HeartbeatExpired"
REASON_NO_HEARTBEAT = "NoHeartbeat"
REASON_PROBE_FAILED = "LinkProbeFailed"


@dataclass(frozen=True)
class HealthView:
    """A snapshot of what the leader knows about node health; query it at any `now`."""

    deadlines: Mapping[str, float] = field(default_factory=lambda: MappingProxyType({}))
    """Node name -> monotonic time at which its heartbeat expires unless renewed."""
    confirmed_until: float = math.inf
    """Expiries at or before this monotonic time are backed by a complete view (rule 2)."""
    not_ready: frozenset[str] = frozenset()
    """Nodes whose NodeReady condition is not True (Raven's signal, kept as a fallback)."""
    probe_failed: frozenset[str] = frozenset()
    """Nodes the data plane reports unreachable (optional input from the L3 link probes)."""
    require_heartbeat: bool = False
    """Whether a node without any heartbeat Lease counts as unhealthy."""

    def reason(self, node: str, now: float) -> str | None:
        """Why `node` must not be an active endpoint at `now`, or None if it may be."""
        if node in self.not_ready:
            return REASON_NOT_READY
        if node in self.probe_failed:
            return REASON_PROBE_FAILED
        deadline = self.deadlines.get(node)
        if deadline is None:
            return REASON_NO_HEARTBEAT if self.require_heartbeat else None
        if deadline <= now and deadline <= self.confirmed_until:
            return REASON_HEARTBEAT_EXPIRED
        return None

    def healthy(self, node: str, now: float) -> bool:
        return self.reason(node, now) is None

    def unconfirmed(self, now: float) -> frozenset[str]:
        """Nodes whose heartbeat deadline has passed but is not yet backed by a fresh view."""
        return frozenset(n for n, d in self.deadlines.items() if self.confirmed_until < d <= now)

    def next_deadline(self, now: float) -> float | None:
        """The earliest heartbeat deadline after `now`: when the verdict may next change."""
        future = [d for d in self.deadlines.values() if d > now]
        return min(future) if future else None


@dataclass
class _Seen:
    record: tuple[str, str, int]
    observed_at: float


class HealthTracker:
    """Turns a stream of observed Leases into HealthViews (sans-IO: the caller passes `now`)."""

    def __init__(self, settings: ElectionSettings) -> None:
        self._settings = settings
        self._seen: dict[str, _Seen] = {}
        self._confirmed = -math.inf

    @property
    def confirmed_until(self) -> float:
        return self._confirmed

    def confirm(self, mono: float) -> None:
        """Record that the view is complete up to monotonic time `mono` (never moves back)."""
        self._confirmed = max(self._confirmed, mono)

    def observe(
        self,
        leases: Mapping[str, Lease],
        now: float,
        own_writes: Mapping[str, float] = MappingProxyType({}),
    ) -> None:
        """Take in the Leases of a new view.

        `own_writes` maps our own controller-Lease writes (by renewTime stamp or by
        resourceVersion) to the monotonic time each was *sent*; seeing one echoed back confirms
        the view up to then.
        """
        s = self._settings
        present: set[str] = set()
        for name, lease in leases.items():
            if name == s.controller_lease:
                sent = own_writes.get(lease.renew_time)
                if sent is None:
                    sent = own_writes.get(lease.meta.resource_version)
                if sent is not None:
                    self.confirm(sent)
                continue
            node = s.node_of_heartbeat(name)
            if node is None:
                continue
            present.add(node)
            record = (lease.holder, lease.renew_time, lease.lease_duration_seconds)
            seen = self._seen.get(node)
            if seen is None or seen.record != record:
                # A change restarts the clock from *our* observation (rule 1).
                self._seen[node] = _Seen(record, now)
        for gone in self._seen.keys() - present:
            del self._seen[gone]

    def evaluate(
        self,
        nodes: Mapping[str, Node],
        probe_failed: frozenset[str] = frozenset(),
    ) -> HealthView:
        """The current HealthView for `nodes` (readiness from the same view as the leases)."""
        deadlines = {
            node: seen.observed_at + seen.record[2]
            for node, seen in self._seen.items()
            if seen.record[0]  # an empty holder is a released heartbeat: no promise at all
        }
        released = {node for node, seen in self._seen.items() if not seen.record[0]}
        for node in released:
            deadlines[node] = -math.inf
        return HealthView(
            deadlines=MappingProxyType(deadlines),
            confirmed_until=self._confirmed,
            not_ready=frozenset(n for n, node in nodes.items() if not node.ready),
            probe_failed=probe_failed,
            require_heartbeat=self._settings.require_heartbeat,
        )
