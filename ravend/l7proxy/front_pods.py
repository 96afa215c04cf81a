"""Pod -> node lookups for pod subresource requests, cached briefly. I/O (kube API GETs).

`kubectl exec/logs/attach/port-forward` reach the front end as `/exec/<ns>/<pod>/...`; the node
comes from the Pod's `spec.nodeName`. A pod never moves between nodes (a new pod gets a new UID
and usually a new name), so a few seconds of caching is safe and saves an API round trip for the
WebSocket-then-SPDY retry of `kubectl exec`. Misses are cached too, shorter, so a burst of
requests for a missing pod does not become a burst of GETs.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from ravend.kube.errors import NotFound
from ravend.kube.resources import PODS

if TYPE_CHECKING:
    from ravend.kube.client import KubeClient

PodLookup = Callable[[str, str], Awaitable[str | None]]
"""(namespace, pod) -> name of the node it runs on; None if absent or not scheduled."""


class PodNodeCache:
    """A `PodLookup` over the kube API with a small TTL cache."""

    def __init__(
        self,
        client: KubeClient,
        ttl: float = 10.0,
        negative_ttl: float = 1.0,
        max_entries: int = 4096,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = client
        self._ttl = ttl
        self._negative_ttl = negative_ttl
        self._max = max_entries
        self._clock = clock
        self._cache: dict[tuple[str, str], tuple[float, str | None]] = {}
        self.api_calls = 0
        """GETs sent (for tests and metrics)."""

    async def __call__(self, namespace: str, name: str) -> str | None:
        key = (namespace, name)
        now = self._clock()
        hit = self._cache.get(key)
        if hit is not None and hit[0] > now:
            return hit[1]
        node = await self._fetch(namespace, name)
        if len(self._cache) >= self._max:
            self._cache = {k: v for k, v in self._cache.items() if v[0] > now}
            if len(self._cache) >= self._max:
                self._cache.clear()
        self._cache[key] = (now + (self._ttl if node else self._negative_ttl), node)
        return node

    async def _fetch(self, namespace: str, name: str) -> str | None:
        self.api_calls += 1
        try:
            pod = await self._client.get(PODS, name, namespace)
        except NotFound:
            return None
        node = pod.get("spec", {}).get("nodeName")
        return node if isinstance(node, str) and node else None
