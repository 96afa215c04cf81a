"""Watch fan-out and the bounded event history behind resourceVersion resumes (no I/O).

Each resource keeps the last `history_limit` events. A watch from resourceVersion R replays the
events after R, then follows live ones; if R is older than the window, kube-apiserver answers
with an ERROR event carrying a 410 "Expired" Status, and so does this. Selector transitions are
reported like the watch cache does: an object that stops matching arrives as DELETED, one that
starts matching as ADDED.
"""

from __future__ import annotations

import asyncio
import copy
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ravend.sim.apiserver.errors import ApiError, expired

JsonObj = dict[str, Any]
Filter = Callable[[Mapping[str, Any]], bool]
MAX_BACKLOG = 10_000
"""A watcher this far behind is closed (the client relists), like kube's slow-watcher cut-off."""


@dataclass(frozen=True)
class Event:
    """One change of one object, in storage version."""

    type: str
    """ADDED, MODIFIED or DELETED."""
    rv: int
    obj: JsonObj
    old: JsonObj | None = None
    """Previous state for MODIFIED (to detect selector transitions)."""


class Watcher:
    """One open watch: a queue of filtered events; None in the queue means "closed"."""

    def __init__(self, namespace: str | None, match: Filter) -> None:
        self.namespace = namespace
        self.match = match
        self.queue: asyncio.Queue[tuple[str, JsonObj] | None] = asyncio.Queue()
        self.closed = False
        self.silent = False
        """Fault hook: the stream stays open but sends nothing more (no events, no bookmarks),
        like a connection a middlebox stopped forwarding; only its timeout or a drop ends it."""

    def _in_scope(self, obj: Mapping[str, Any]) -> bool:
        ns = obj.get("metadata", {}).get("namespace")
        return (self.namespace is None or ns == self.namespace) and self.match(obj)

    def offer(self, event: Event) -> None:
        if self.closed:
            return
        now = self._in_scope(event.obj)
        before = event.old is not None and self._in_scope(event.old)
        if event.type == "MODIFIED" and now != before:
            kind = "ADDED" if now else "DELETED"
        elif now:
            kind = event.type
        else:
            return
        self.queue.put_nowait((kind, event.obj))
        if self.queue.qsize() > MAX_BACKLOG:
            self.close()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.queue.put_nowait(None)


class History:
    """Events of one resource within the retained window, and its live watchers."""

    def __init__(self, limit: int, start_rv: int) -> None:
        self.events: deque[Event] = deque()
        self.limit = limit
        self.window_start = start_rv
        """Every event with rv > window_start is still retained."""
        self.watchers: set[Watcher] = set()

    def record(self, event: Event) -> None:
        self.events.append(event)
        while len(self.events) > self.limit:
            self.window_start = self.events.popleft().rv
        for watcher in list(self.watchers):
            watcher.offer(event)
            if watcher.closed:
                self.watchers.discard(watcher)

    def since(self, rv: int) -> list[Event]:
        """Events after rv; ApiError 410 when rv fell out of the window."""
        if rv < self.window_start:
            raise expired(f"too old resource version: {rv} ({self.window_start})")
        return [e for e in self.events if e.rv > rv]


def expired_event(error: ApiError) -> JsonObj:
    return {"type": "ERROR", "object": error.status()}


def snapshot(obj: Mapping[str, Any]) -> JsonObj:
    return copy.deepcopy(dict(obj))
