"""Link probes as failover evidence for the election: which peer gateway nodes are down (pure).

The election's health input `probes` (a set of node names, `HealthView.probe_failed`) makes a
node ineligible as an active endpoint. Probe results are one-sided: a gateway that cannot reach a
peer does not know which side is at fault. The rule that keeps this safe:

1. Only this process's own L3 agent is consulted, and the election acts on it only while this
   process leads. Evidence exists only while this node is its pool's active gateway, so it is
   always "the leader's own pool gateway" looking at the peers it tunnels to. Edge nodes never
   lead, so a partition between two edges is never reported by anyone.
2. A peer counts only after `evidence_after` probes without an answer for `down_after_s`
   (a newly elected peer first needs its handshake).
3. Quorum on the observer: at least one judged peer answers and no fewer answer than are down.
   A gateway whose own uplink failed sees every peer down and so reports nobody; with a single
   peer the observer can never tell, and heartbeats alone decide (the previous behaviour).
4. A node reported down stays reported for `evidence_hold_s` after it was last seen down, so it
   does not regain its slot the moment it is no longer probed (no swapping between two
   unreachable candidates faster than the hold).

`ProbeVerdict` is sans-IO: the caller passes the prober's health and monotonic time.
"""

from __future__ import annotations

from collections.abc import Mapping

from ravend.l3.probe import PeerHealth, ProbeSettings


class ProbeVerdict:
    """Turns successive prober health maps into the set of peer nodes to report as failed."""

    def __init__(self, settings: ProbeSettings | None = None) -> None:
        self.s = settings or ProbeSettings()
        self._last_down: dict[str, float] = {}

    def observe(
        self, health: Mapping[str, PeerHealth], observer_is_gateway: bool, now: float
    ) -> frozenset[str]:
        """Failed peer nodes after taking in `health` (gateway name -> PeerHealth) at `now`."""
        if observer_is_gateway:
            for node in self._fresh_evidence(health):
                self._last_down[node] = now
        hold = self.s.evidence_hold_s
        self._last_down = {n: t for n, t in self._last_down.items() if now - t <= hold}
        return frozenset(self._last_down)

    def _fresh_evidence(self, health: Mapping[str, PeerHealth]) -> list[str]:
        judged = [
            h for h in health.values() if h.target and h.node and h.sent >= self.s.evidence_after
        ]
        up = [h for h in judged if h.up]
        down = [h for h in judged if not h.up]
        if not up or len(up) < len(down):
            return []  # the observer's own path is not shown to work (rule 3)
        return sorted(h.node for h in down)

    def clear(self) -> None:
        """Forget everything (L3 stopped here: no evidence at all)."""
        self._last_down.clear()


__all__ = ["ProbeVerdict"]
