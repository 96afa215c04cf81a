"""Small asyncio building blocks shared by the planes (no network or kernel I/O).

`Latest` is how state flows through ravend: a producer (the informers) publishes immutable
snapshots, consumers wait for "anything newer than what I last planned from". A burst of
publications collapses into one wake-up, which is what a reconcile loop wants (house style 2).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Generic, TypeVar

T = TypeVar("T")


class Latest(Generic[T]):
    """A value cell that consumers can await changes of; only the newest value is kept."""

    def __init__(self, initial: T) -> None:
        self._value = initial
        self._version = 0
        # One Event per version: publish() sets it and installs a fresh one, so waking waiters
        # needs no lock and no task, and publish() can be called from plain sync code.
        self._next = asyncio.Event()

    @property
    def value(self) -> T:
        return self._value

    @property
    def version(self) -> int:
        return self._version

    def publish(self, value: T) -> None:
        """Replace the value and wake every waiter."""
        self._value = value
        self._version += 1
        fired, self._next = self._next, asyncio.Event()
        fired.set()

    async def wait_newer(self, seen_version: int) -> tuple[int, T]:
        """Return (version, value) as soon as the version is greater than `seen_version`."""
        while self._version <= seen_version:
            await self._next.wait()
        return self._version, self._value

    async def updates(self) -> AsyncIterator[T]:
        """Yield the current value, then every newer one (intermediate values may be skipped)."""
        seen = self._version
        yield self._value
        while True:
            seen, value = await self.wait_newer(seen)
            yield value


class Trigger:
    """A level-triggered wake-up: many `set()` calls before a `wait()` collapse into one."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def set(self) -> None:
        self._event.set()

    async def wait(self, timeout: float | None = None) -> bool:
        """Wait for a trigger (True) or the timeout (False); clears the trigger either way.

        Uses `asyncio.timeout`, not `wait_for`: on Python 3.11 `wait_for` can swallow the
        caller's own cancellation when it races with the wake-up, which hangs shutdown.
        """
        try:
            async with asyncio.timeout(timeout):
                await self._event.wait()
            return True
        except TimeoutError:
            return False
        finally:
            self._event.clear()
