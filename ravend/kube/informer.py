"""List+watch informers and the ClusterView they publish (does I/O: API calls).

`Informer` keeps a dict store of one resource current: list, then watch from the list's
resourceVersion (with bookmarks so a quiet watch still advances it), relist on 410 Gone and
periodically, and back off exponentially with full jitter on errors so an unavailable API server
is never hammered. A watchdog abandons a watch that delivers neither an event nor a bookmark
for `watch_silence_s` and re-watches from the last resourceVersion: a stream that stalled
while the connection looks open would otherwise freeze the view until the watch's timeout.
`ClusterInformers` runs the four ravend needs and turns their stores into one
immutable `ClusterView` per burst of changes (built purely from the stores by `build_view`),
published into a `Latest` cell. A malformed Gateway is recorded in `invalid_gateways` with the
reason and never breaks the view.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import random
import time
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any, Generic, TypeVar

from ravend.kube import codec, errors
from ravend.kube.client import KubeClient
from ravend.kube.resources import CONFIGMAPS, GATEWAYS, LEASES, NODES, Resource
from ravend.kube.settings import KubeSettings
from ravend.model import ClusterView, Gateway, Lease, Node
from ravend.observe.metrics import INFORMER_WATCH_RESTARTS
from ravend.runtime import Latest, Trigger

log = logging.getLogger(__name__)

JSON = dict[str, Any]
Store = dict[str, JSON]
"""Objects by key: "name" for cluster-scoped, "namespace/name" for namespaced resources."""


class Backoff:
    """Exponential backoff with full jitter (AWS style): never a busy loop, capped."""

    def __init__(self, initial_s: float, max_s: float) -> None:
        self._initial = initial_s
        self._max = max_s
        self.failures = 0

    def next_delay(self) -> float:
        ceiling = min(self._max, self._initial * 2.0 ** min(self.failures, 30))
        self.failures += 1
        # Half fixed, half random: keeps a floor so retries never come in a tight burst.
        return ceiling / 2 + random.uniform(0, ceiling / 2)

    def reset(self) -> None:
        self.failures = 0


def object_key(obj: Mapping[str, Any]) -> str:
    meta = obj.get("metadata") or {}
    namespace = meta.get("namespace")
    name = str(meta.get("name") or "")
    return f"{namespace}/{name}" if namespace else name


class Informer:
    """Keeps `store` equal to the server's view of one (filtered) resource."""

    def __init__(
        self,
        client: KubeClient,
        resource: Resource,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
        *,
        on_change: Callable[[], None] = lambda: None,
        settings: KubeSettings | None = None,
    ) -> None:
        self._client = client
        self.resource = resource
        self._namespace = namespace
        self._labels = label_selector
        self._fields = field_selector
        self._on_change = on_change
        self.store: Store = {}
        self.synced = False
        """True once the first list completed (the store is then a real picture)."""
        self.resource_version = ""
        self.lists = 0
        """Completed lists (first list, relists after 410/errors, resyncs): for tests/metrics."""
        settings = settings or client.settings
        self._settings = settings
        self._backoff = Backoff(settings.backoff_initial_s, settings.backoff_max_s)
        self._resync_s = settings.resync_period_s

    @property
    def name(self) -> str:
        where = f" in {self._namespace}" if self._namespace else ""
        sel = " ".join(s for s in (self._labels, self._fields) if s)
        return f"{self.resource.kind}{where}{f' [{sel}]' if sel else ''}"

    async def run(self) -> None:
        """List and watch forever; only cancellation ends it."""
        last_gone = -1e9
        while True:
            try:
                await self._list()
                await self._watch_until_resync()
            except errors.Gone as exc:
                # Normal after a long disconnect: relist at once, but back off if the fresh
                # list is itself "too old" again right away (a server compacting constantly).
                log.info("informer %s: watch expired (%s); relisting", self.name, exc)
                now = time.monotonic()
                if now - last_gone < 1.0:
                    await self._pause_after(exc)
                last_gone = now
            except errors.KubeError as exc:
                await self._pause_after(exc)
            except Exception as exc:
                # A bug or an object we cannot digest must not kill the agent's view for good:
                # log it loudly and retry like any other failure (still with backoff).
                log.exception("informer %s: unexpected error", self.name)
                await self._pause_after(errors.KubeError(repr(exc)))

    async def _pause_after(self, exc: errors.KubeError) -> None:
        delay = self._backoff.next_delay()
        level = logging.INFO if self._backoff.failures <= 1 else logging.WARNING
        log.log(
            level,
            "informer %s: %s (%s); retry in %.1fs (failure %d)",
            self.name,
            type(exc).__name__,
            exc,
            delay,
            self._backoff.failures,
        )
        await asyncio.sleep(delay)

    async def _list(self) -> None:
        items, rv = await self._client.list(
            self.resource, self._namespace, label_selector=self._labels, field_selector=self._fields
        )
        fresh = {object_key(o): o for o in items}
        changed = fresh != self.store or not self.synced
        self.store = fresh
        self.resource_version = rv
        self.synced = True
        self.lists += 1
        self._backoff.reset()
        log.debug("informer %s: listed %d objects at rv %s", self.name, len(fresh), rv)
        if changed:
            self._on_change()

    async def _watch_until_resync(self) -> None:
        """Watch from the last resourceVersion, reconnecting, until the resync period ends.

        410 Gone and other errors propagate to `run` (relist after backoff); a watch the server
        closes normally is resumed from the last seen resourceVersion without a relist.
        """
        deadline = time.monotonic() + self._resync_s * random.uniform(0.9, 1.1)
        while (remaining := deadline - time.monotonic()) > 0:
            timeout = max(1, min(self._settings.watch_timeout_s, int(remaining)))
            started = time.monotonic()
            events = await self._watch_once(timeout)
            if events is None:
                continue  # went silent: re-watch at once (a silence already took the limit)
            if events == 0 and time.monotonic() - started < 1.0:
                # A server (or proxy) that closes watches at once must not make us spin.
                await asyncio.sleep(self._backoff.next_delay())
            else:
                self._backoff.reset()

    async def _watch_once(self, timeout_s: int) -> int | None:
        """One watch request from `resource_version`: the events it delivered, None if silent.

        The watchdog: every event or bookmark re-arms a `watch_silence_s` timer; when it
        expires the stream is closed (which drops its connection) and None is returned, so the
        caller re-watches from the last resourceVersion; a 410 on that re-watch relists as
        usual. Errors propagate to `run`. Every end is counted by reason.
        """
        limit = self._settings.watch_silence_s
        loop = asyncio.get_running_loop()
        last = loop.time()
        events = 0
        silence = asyncio.timeout_at(last + limit if limit > 0 else None)
        stream = self._client.watch(
            self.resource,
            self._namespace,
            resource_version=self.resource_version,
            label_selector=self._labels,
            field_selector=self._fields,
            timeout_s=timeout_s,
        )
        try:
            # The timer wraps the whole stream: a request whose headers never come is silent too.
            async with silence, contextlib.aclosing(stream):
                async for kind, obj in stream:
                    last = loop.time()
                    if limit > 0:
                        silence.reschedule(last + limit)
                    self._apply(kind, obj)
                    events += 1
        except TimeoutError:
            if not silence.expired():
                raise
            self._watch_ended("silent")
            log.warning(
                "informer %s: watch silent for %.1f s (no event, no bookmark; limit %.1f s); "
                "re-watching from resourceVersion %s",
                self.name,
                loop.time() - last,
                limit,
                self.resource_version,
            )
            return None
        except errors.Gone:
            self._watch_ended("expired")
            raise
        except Exception:
            self._watch_ended("error")
            raise
        self._watch_ended("closed")
        return events

    def _watch_ended(self, reason: str) -> None:
        INFORMER_WATCH_RESTARTS.labels(resource=self.resource.plural, reason=reason).inc()

    def _apply(self, kind: str, obj: JSON) -> None:
        rv = str((obj.get("metadata") or {}).get("resourceVersion") or "")
        if rv:
            self.resource_version = rv
        if kind == "BOOKMARK":
            return
        key = object_key(obj)
        if kind in ("ADDED", "MODIFIED"):
            self.store[key] = obj
        elif kind == "DELETED":
            self.store.pop(key, None)
        else:
            log.warning("informer %s: unknown watch event type %r", self.name, kind)
            return
        self._on_change()


T = TypeVar("T")


class _ParseCache(Generic[T]):
    """Parsed objects by (key, resourceVersion): a resync or a burst re-parses only what changed."""

    def __init__(self, parse: Callable[[Mapping[str, Any]], T]) -> None:
        self._parse = parse
        self._cache: dict[str, tuple[str, T | ValueError]] = {}

    def parse_all(self, store: Store) -> dict[str, T | ValueError]:
        fresh: dict[str, tuple[str, T | ValueError]] = {}
        for key, obj in store.items():
            rv = str((obj.get("metadata") or {}).get("resourceVersion") or "")
            hit = self._cache.get(key)
            if hit is not None and hit[0] == rv and rv:
                fresh[key] = hit
                continue
            try:
                fresh[key] = (rv, self._parse(obj))
            except ValueError as exc:  # CodecError and conversion errors
                fresh[key] = (rv, exc)
        self._cache = fresh
        return {k: v for k, (_, v) in fresh.items()}


class ClusterInformers:
    """Runs the informers and publishes a `ClusterView` after each burst of changes."""

    def __init__(self, client: KubeClient, settings: KubeSettings, view: Latest[ClusterView]):
        self._settings = settings
        self._view = view
        self._changed = Trigger()
        ns = settings.namespace
        notify = self._changed.set
        self.gateways = Informer(client, GATEWAYS, on_change=notify, settings=settings)
        self.nodes = Informer(client, NODES, on_change=notify, settings=settings)
        self.raven_cfg = Informer(
            client,
            CONFIGMAPS,
            ns,
            field_selector=f"metadata.name={settings.raven_cfg_name}",
            on_change=notify,
            settings=settings,
        )
        self.leases = Informer(
            client, LEASES, ns, settings.lease_selector, on_change=notify, settings=settings
        )
        self._gateway_cache: _ParseCache[Gateway] = _ParseCache(codec.gateway_from_json)
        self._node_cache: _ParseCache[Node] = _ParseCache(codec.node_from_json)
        self._lease_cache: _ParseCache[Lease] = _ParseCache(codec.lease_from_json)

    @property
    def informers(self) -> tuple[Informer, ...]:
        return (self.gateways, self.nodes, self.raven_cfg, self.leases)

    async def run(self) -> None:
        """Run forever under the caller's TaskGroup; returns only by cancellation."""
        async with asyncio.TaskGroup() as tg:
            for inf in self.informers:
                tg.create_task(inf.run(), name=f"informer {inf.name}")
            tg.create_task(self._publish_loop(), name="cluster-view publisher")
        raise RuntimeError("cluster informers stopped")  # unreachable: the tasks never return

    async def _publish_loop(self) -> None:
        while True:
            await self._changed.wait()
            # Coalesce: a relist or a rollout produces many events; plan once for all of them.
            await asyncio.sleep(self._settings.coalesce_s)
            self.publish_now()

    def publish_now(self) -> None:
        """Build a view from the stores and publish it if it differs from the current one."""
        current = self._view.value
        new = self.build_view(current.revision + 1)
        if dataclasses.replace(new, revision=current.revision) == current:
            return
        self._view.publish(new)
        log.debug(
            "cluster view r%d: %d gateways (%d invalid), %d nodes, %d leases, synced=%s",
            new.revision,
            len(new.gateways),
            len(new.invalid_gateways),
            len(new.nodes),
            len(new.leases),
            new.synced,
        )

    def build_view(self, revision: int) -> ClusterView:
        gateways: dict[str, Gateway] = {}
        invalid: dict[str, str] = {}
        for key, gw in self._gateway_cache.parse_all(self.gateways.store).items():
            if isinstance(gw, ValueError):
                invalid[key] = str(gw)
            else:
                gateways[gw.name] = gw
        nodes = {n.name: n for n in _valid(self._node_cache.parse_all(self.nodes.store), "Node")}
        leases = {
            lease.meta.name: lease
            for lease in _valid(self._lease_cache.parse_all(self.leases.store), "Lease")
        }
        cfg = next(iter(self.raven_cfg.store.values()), None)
        return ClusterView(
            gateways=MappingProxyType(gateways),
            nodes=MappingProxyType(nodes),
            raven_cfg=codec.raven_config_from_configmap(cfg),
            leases=MappingProxyType(leases),
            invalid_gateways=MappingProxyType(invalid),
            synced=all(inf.synced for inf in self.informers),
            revision=revision,
        )


def _valid(parsed: Mapping[str, T | ValueError], kind: str) -> list[T]:
    out = []
    for key, value in parsed.items():
        if isinstance(value, ValueError):
            # A real API server never sends these; skip rather than break every plane.
            log.warning("skipping malformed %s %s: %s", kind, key, value)
        else:
            out.append(value)
    return out
