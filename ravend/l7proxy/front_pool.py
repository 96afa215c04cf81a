"""Idle upstream connections kept for reuse, per (node, port, tls) key. I/O (closes pipes, timers).

A pooled connection is one whose last exchange ended exactly at a response boundary the front
end framed (front_framing), so the kubelet is waiting for the next request on it. Entries are
taken newest first (the least likely to have been closed by the peer's idle timer), each expires
after `idle_timeout` (closed by a periodic sweep), and at most `max_idle_per_key` wait per key.
Before use an entry is checked (`Pipe.reusable`: the peer has not closed, sent nothing
unsolicited, failed nothing); a connection
the peer closed between the check and our write is the caller's business to retry
(front_exchange retries idempotent requests once on a fresh connection).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class PoolSettings:
    """Upstream connection reuse at the front end."""

    idle_timeout: float = 30.0
    """Seconds an idle upstream connection is kept. Below Go's usual server idle timeouts, so
    the kubelet rarely closes one under us, and short enough that a quiet pool lets go of its
    edge-side kubelet connections soon."""
    max_idle_per_key: int = 32
    """Most idle connections kept per (node, port, tls); 0 disables reuse. 32 covers the
    kube-apiserver's concurrency towards one kubelet in the benchmarks; beyond, extras close."""


class PooledPipe(Protocol):
    def reusable(self) -> bool:
        """Still usable for another request (checked when released and when taken)."""
        ...

    def close(self) -> None: ...

    def abort(self) -> None: ...


@dataclass(eq=False, slots=True)
class _Entry:
    pipe: PooledPipe
    expires: float
    """Monotonic time after which the entry is closed instead of reused."""


SWEEPS_PER_TIMEOUT = 4
"""Expired entries are closed by a sweep every idle_timeout/4 (so within 1.25x idle_timeout),
one timer per pool instead of one per put: a timer per request was a measurable share of the
front end's per-request cost."""


class IdlePool:
    """Idle pipes by key; every method is synchronous and safe to call from any task."""

    def __init__(self, settings: PoolSettings | None = None) -> None:
        self.settings = settings or PoolSettings()
        self._idle: dict[Hashable, list[_Entry]] = {}
        """Oldest first: take() pops the newest, sweeps drop expired ones from the front."""
        self._closed = False
        self._sweeper: asyncio.TimerHandle | None = None
        self.reused = 0
        """Pipes handed out again (for tests and metrics)."""

    @property
    def idle(self) -> int:
        """Idle pipes held now."""
        return sum(len(entries) for entries in self._idle.values())

    def take(self, key: Hashable) -> PooledPipe | None:
        """The newest healthy idle pipe for `key`; stale or expired ones met are closed."""
        entries = self._idle.get(key)
        now = time.monotonic()
        while entries:
            entry = entries.pop()
            if entry.expires > now and entry.pipe.reusable():
                if not entries:
                    del self._idle[key]
                self.reused += 1
                return entry.pipe
            entry.pipe.close()
        self._idle.pop(key, None)
        return None

    def put(self, key: Hashable, pipe: PooledPipe) -> None:
        """Keep `pipe` for reuse, or close it (pool closed or full, or pipe no longer healthy)."""
        entries = self._idle.setdefault(key, [])
        limit = self.settings.max_idle_per_key
        if self._closed or len(entries) >= limit or not pipe.reusable():
            if not entries:
                del self._idle[key]
            pipe.close()
            return
        entries.append(_Entry(pipe, time.monotonic() + self.settings.idle_timeout))
        if self._sweeper is None:
            self._sweeper = asyncio.get_running_loop().call_later(
                self.settings.idle_timeout / SWEEPS_PER_TIMEOUT, self._sweep
            )

    def _sweep(self) -> None:
        self._sweeper = None
        now = time.monotonic()
        for key in list(self._idle):
            entries = self._idle[key]
            while entries and entries[0].expires <= now:
                entries.pop(0).pipe.close()
            if not entries:
                del self._idle[key]
        if self._idle and not self._closed:
            self._sweeper = asyncio.get_running_loop().call_later(
                self.settings.idle_timeout / SWEEPS_PER_TIMEOUT, self._sweep
            )

    def evict(self, keys: Callable[[Hashable], bool], count: int) -> int:
        """Drop up to `count` idle pipes whose key matches, oldest first (`abort`, so a tunnel
        stream is released at once, not after a FIN round trip); how many were dropped."""
        dropped = 0
        for key in [k for k in self._idle if keys(k)]:
            entries = self._idle[key]
            while entries and dropped < count:
                entries.pop(0).pipe.abort()
                dropped += 1
            if not entries:
                del self._idle[key]
        return dropped

    def close(self) -> None:
        """Close every idle pipe; later `put`s close theirs at once."""
        self._closed = True
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for entries in self._idle.values():
            for entry in entries:
                entry.pipe.close()
        self._idle.clear()
