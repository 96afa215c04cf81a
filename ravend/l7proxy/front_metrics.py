"""The front ends' request counter. No I/O.

`ravend_l7_requests_total` is counted in plain dicts and read at scrape time: the count is taken
once per request, and a prometheus_client Counter's inc() (a lock, about 1 us on the benchmark
machine) cost more than the rest of the counting.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import REGISTRY
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector


class Tallies(Collector):
    """Counts by front end and outcome. Only the L7 loop's thread writes; a scrape from another
    thread copies each dict in one C-level call, under the GIL."""

    def __init__(self) -> None:
        self._fronts: dict[str, dict[str, int]] = {}

    def front(self, name: str) -> dict[str, int]:
        """The outcome -> count dict of front end `name` (shared by front ends of that name)."""
        return self._fronts.setdefault(name, {})

    def collect(self) -> Iterator[CounterMetricFamily]:
        family = CounterMetricFamily(
            "ravend_l7_requests",
            "Kubelet requests at the L7 front ends",
            labels=["front", "outcome"],
        )
        for front, counts in list(self._fronts.items()):
            for outcome, n in dict(counts).items():
                family.add_metric([front, outcome], n)
        yield family


REQUESTS = Tallies()
REGISTRY.register(REQUESTS)
