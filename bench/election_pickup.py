"""Benchmark: pure gateway pickup over 1,000 Gateways x 20 nodes (goal: < 1 s per pass).

Prints JSON lines (one per measured case) and a table. No I/O besides stdout.
"""

from __future__ import annotations

import json
import statistics
import time
from dataclasses import replace

from ravend.election.examples import ep, gateway, node, view
from ravend.election.health import HealthView
from ravend.election.pickup import elect
from ravend.model import ClusterView, EndpointType

GATEWAYS = 1000
NODES_PER_GATEWAY = 20
CANDIDATES = 4
REPEAT = 5


def build() -> ClusterView:
    gws, nodes = [], []
    for g in range(GATEWAYS):
        name = f"gw-{g:04d}"
        members = [f"n-{g:04d}-{i:02d}" for i in range(NODES_PER_GATEWAY)]
        nodes += [
            node(m, name, ip=f"10.{g // 250}.{g % 250}.{i + 1}", cidrs=[f"10.{g}.{i}.0/24"])
            for i, m in enumerate(members)
        ]
        eps = [ep(m, k) for m in members[:CANDIDATES] for k in EndpointType]
        gws.append(gateway(name, eps, proxy_replicas=2))
    return view(gws, nodes)


def timed(v: ClusterView, health: HealthView) -> tuple[float, int]:
    samples, changed = [], 0
    for _ in range(REPEAT):
        t0 = time.perf_counter()
        changed = len(elect(v, health, 0.0).statuses)
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples), changed


def main() -> None:
    v = build()
    cold, changed_cold = timed(v, HealthView())
    result = elect(v, HealthView(), 0.0)
    settled = replace(
        v,
        gateways={n: replace(g, status=result.statuses[n]) for n, g in v.gateways.items()},
    )
    steady, changed_steady = timed(settled, HealthView())
    down = frozenset(f"n-{g:04d}-00" for g in range(GATEWAYS))
    failover, changed_fail = timed(settled, HealthView(not_ready=down))
    rows = [
        ("first election", cold, changed_cold),
        ("steady state (no change)", steady, changed_steady),
        ("one active down per gateway", failover, changed_fail),
    ]
    for case, secs, changed in rows:
        print(
            json.dumps(
                {
                    "bench": "election_pickup",
                    "case": case,
                    "gateways": GATEWAYS,
                    "nodes": GATEWAYS * NODES_PER_GATEWAY,
                    "median_s": round(secs, 4),
                    "changed": changed,
                }
            )
        )
    print(f"\n{'case':32} {'median s':>9} {'changed':>8}")
    for case, secs, changed in rows:
        print(f"{case:32} {secs:9.3f} {changed:8d}")


if __name__ == "__main__":
    main()
