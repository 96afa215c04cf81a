"""Best-effort core/v1 Event recording with client-go style de-duplication (does I/O).

A repeated (object, type, reason, message) bumps `count` and `lastTimestamp` of the Event
already written instead of creating a new one, so a flapping gateway cannot flood etcd. Failures
are logged and swallowed: an Event is never worth failing a reconcile for.
"""

from __future__ import annotations

import logging
import secrets
from collections import OrderedDict
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from ravend.kube import errors
from ravend.kube.models import ObjectRef
from ravend.kube.resources import EVENTS

if TYPE_CHECKING:
    from ravend.kube.client import KubeClient

log = logging.getLogger(__name__)

_CACHE_SIZE = 512
"""Distinct events remembered for de-duplication (LRU); client-go keeps 4096."""

_Key = tuple[str, str, str, str, str, str]


class EventRecorder:
    def __init__(self, client: KubeClient, component: str = "ravend") -> None:
        self._client = client
        self._component = component
        self._seen: OrderedDict[_Key, tuple[str, str, int]] = OrderedDict()
        """key -> (namespace, event name, count)"""

    async def emit(self, involved: ObjectRef, type: str, reason: str, message: str) -> None:
        # Events about cluster-scoped objects (Gateways, Nodes) live in "default", as in client-go.
        namespace = involved.namespace or "default"
        key = (involved.kind, namespace, involved.name, type, reason, message)
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        try:
            seen = self._seen.get(key)
            if seen is not None and await self._bump(seen, key, now):
                return
            name = f"{involved.name}.{secrets.token_hex(8)}"
            body = {
                "apiVersion": "v1",
                "kind": "Event",
                "metadata": {"name": name, "namespace": namespace},
                "involvedObject": involved.to_json(),
                "type": type,
                "reason": reason,
                "message": message,
                "source": {"component": self._component},
                "reportingComponent": self._component,
                "firstTimestamp": now,
                "lastTimestamp": now,
                "count": 1,
            }
            await self._client.create(EVENTS, body)
            self._remember(key, (namespace, name, 1))
        except errors.KubeError as exc:
            log.warning(
                "cannot record event %s/%s on %s %s: %s",
                type,
                reason,
                involved.kind,
                involved.name,
                exc,
            )

    async def _bump(self, seen: tuple[str, str, int], key: _Key, now: str) -> bool:
        namespace, name, count = seen
        patch = {"count": count + 1, "lastTimestamp": now}
        try:
            await self._client.patch(EVENTS, name, patch, namespace)
        except errors.NotFound:
            return False  # expired (events have a TTL): write a fresh one
        self._remember(key, (namespace, name, count + 1))
        return True

    def _remember(self, key: _Key, value: tuple[str, str, int]) -> None:
        self._seen[key] = value
        self._seen.move_to_end(key)
        while len(self._seen) > _CACHE_SIZE:
            self._seen.popitem(last=False)
