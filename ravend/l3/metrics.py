"""Prometheus metrics of the L3 plane (no I/O at import; values set by the agent and prober).

Per-peer gauges carry `gateway` (this node's Gateway) and `peer` (the peer Gateway) labels, so
one query shows the whole mesh from every side. Reconcile passes and errors are counted in the
shared `ravend_reconciles_total` / `ravend_errors_total` with subsystem="l3".
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable

from prometheus_client import Counter, Gauge, Histogram

from ravend.l3.probe import PeerHealth

PEER_RTT = Gauge(
    "ravend_l3_peer_rtt_seconds", "Smoothed probe round trip to a peer gateway", ["gateway", "peer"]
)
PEER_LOSS = Gauge(
    "ravend_l3_peer_loss_ratio", "Share of lost probes in the window", ["gateway", "peer"]
)
PEER_HANDSHAKE_AGE = Gauge(
    "ravend_l3_peer_handshake_age_seconds",
    "Seconds since the last WireGuard handshake with a peer (+Inf: never)",
    ["gateway", "peer"],
)
PEER_UP = Gauge("ravend_l3_peer_up", "1 while probes to the peer are answered", ["gateway", "peer"])
OPS_APPLIED = Counter("ravend_l3_ops_applied_total", "Kernel ops applied by kind", ["op"])
OPS_FAILED = Counter("ravend_l3_ops_failed_total", "Kernel ops that failed by kind", ["op"])
PASS_SECONDS = Histogram(
    "ravend_l3_reconcile_seconds",
    "Duration of one L3 reconcile pass (plan, snapshot, diff, apply)",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)

_PEER_GAUGES = (PEER_RTT, PEER_LOSS, PEER_HANDSHAKE_AGE, PEER_UP)


def export_peers(
    gateway: str, peers: Iterable[PeerHealth], previous: set[tuple[str, str]]
) -> set[tuple[str, str]]:
    """Set the per-peer gauges; drop series that went away. Returns the (gateway, peer) seen."""
    seen = set()
    for h in peers:
        seen.add((gateway, h.gateway))
        PEER_RTT.labels(gateway, h.gateway).set(
            h.rtt_ewma_s if h.rtt_ewma_s is not None else float("nan")
        )
        PEER_LOSS.labels(gateway, h.gateway).set(h.loss)
        age = h.handshake_age_s if h.handshake_age_s is not None else float("inf")
        PEER_HANDSHAKE_AGE.labels(gateway, h.gateway).set(age)
        PEER_UP.labels(gateway, h.gateway).set(1 if h.up else 0)
    for labels in previous - seen:
        for g in _PEER_GAUGES:
            with contextlib.suppress(KeyError):
                g.remove(*labels)
    return seen
