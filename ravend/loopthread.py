"""An event loop in a thread of its own, and the bridges between it and the agent's loop.

Why: the L7 data path (front ends, tunnel server and clients, edge splices) is latency-bound
work on many sockets, while the agent's loop also runs L3 reconcile passes, informer decodes and
the election. On one loop, a 0.5 s L3 pass at a hub stalls every kubelet request for 0.5 s; in
its own thread the data path gets the interpreter at least every switch interval (5 ms). And
uvloop, which cannot open pyroute2's netlink sockets (so the agent's loop stays asyncio), costs
measurably less per request (bench/l7_proxy: floor-uvloop vs floor).

`LoopThread.run(factory)` runs a coroutine there and waits for it from the calling loop;
cancelling the caller cancels the remote task and waits until it has finished its own cleanup
(an L7 drain), so the composition root's ordered shutdown still holds. `mirror` republishes a
`Latest` into the thread, `on_loop` and `soon_on_loop` call back into a given loop. Does I/O
only in the sense of owning a thread; no sockets here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, ParamSpec, TypeVar

from ravend.runtime import Latest

log = logging.getLogger(__name__)

T = TypeVar("T")
P = ParamSpec("P")
LOOP_KINDS = ("asyncio", "uvloop")


def new_loop(kind: str) -> asyncio.AbstractEventLoop:
    """A new event loop of `kind` ("asyncio" or "uvloop")."""
    if kind == "uvloop":
        import uvloop

        loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
        return loop
    if kind != "asyncio":
        raise ValueError(f"unknown event loop kind {kind!r}; expected one of {LOOP_KINDS}")
    return asyncio.new_event_loop()


class LoopThread:
    """`async with LoopThread("l7", "uvloop") as lt: await lt.run(factory)`."""

    def __init__(self, name: str, kind: str = "asyncio") -> None:
        self.name, self.kind = name, kind
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        """Tasks started by `run`: the loop itself keeps only weak references."""

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            raise RuntimeError(f"loop thread {self.name} is not running")
        return self._loop

    async def __aenter__(self) -> LoopThread:
        self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.to_thread(self.stop)

    def start(self) -> None:
        """Start the thread; returns once its loop runs (raises if the loop cannot be made)."""
        started = threading.Event()
        failure: list[BaseException] = []

        def main() -> None:
            try:
                loop = new_loop(self.kind)
            except BaseException as exc:
                failure.append(exc)
                started.set()
                return
            asyncio.set_event_loop(loop)
            self._loop = loop
            loop.call_soon(started.set)
            try:
                loop.run_forever()
            finally:
                _close(loop)

        self._thread = threading.Thread(target=main, name=f"loop-{self.name}", daemon=True)
        self._thread.start()
        started.wait()
        if failure:
            raise failure[0]
        log.info("event loop thread %s started (%s)", self.name, self.kind)

    def stop(self, timeout: float = 10.0) -> None:
        """Cancel what still runs there, stop the loop and join the thread (blocking)."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        with contextlib.suppress(RuntimeError):  # already closed
            loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout)
        if thread.is_alive():
            log.error("event loop thread %s did not stop within %.0f s", self.name, timeout)
        self._loop = self._thread = None

    def call(self, fn: Callable[P, object], *args: P.args, **kwargs: P.kwargs) -> None:
        """Call `fn` soon on the thread's loop (from any thread)."""
        self.loop.call_soon_threadsafe(lambda: fn(*args, **kwargs))

    async def run(self, factory: Callable[[], Coroutine[Any, Any, T]]) -> T:
        """Run `factory()` on the thread's loop; return its result or raise its exception here.

        If this caller is cancelled, the remote task is cancelled and awaited to its end
        before the CancelledError goes on (it may be draining connections)."""
        here = asyncio.get_running_loop()
        done: asyncio.Future[T] = here.create_future()
        box: list[asyncio.Task[T]] = []

        def start() -> None:
            try:
                task = self.loop.create_task(factory())
            except BaseException as exc:  # factory() itself failed: the caller must hear it
                _settle_soon(here, done, exc)
                return
            box.append(task)
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            task.add_done_callback(lambda t: _settle_soon(here, done, t))

        self.call(start)
        try:
            return await asyncio.shield(done)
        except asyncio.CancelledError:

            def cancel() -> None:  # FIFO: `start` has run on that loop before this runs there
                if box:
                    box[0].cancel()

            with contextlib.suppress(RuntimeError):  # the loop has stopped: nothing to cancel
                self.call(cancel)
            while not done.done() and self.alive:
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.wait([done], timeout=1.0)
            raise

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()


def _settle_soon(
    here: asyncio.AbstractEventLoop,
    done: asyncio.Future[T],
    outcome: asyncio.Task[T] | BaseException,
) -> None:
    """Copy a finished remote task's outcome (or the error that kept it from starting) into
    `done`, on `done`'s own loop (if that loop still runs)."""

    def settle() -> None:
        if done.done():
            return
        if isinstance(outcome, BaseException):
            done.set_exception(outcome)
        elif outcome.cancelled():
            done.cancel()
        elif (exc := outcome.exception()) is not None:
            done.set_exception(exc)
        else:
            done.set_result(outcome.result())

    with contextlib.suppress(RuntimeError):  # the calling loop is closed: nobody waits
        here.call_soon_threadsafe(settle)


def _close(loop: asyncio.AbstractEventLoop) -> None:
    """Cancel leftover tasks, let them finish, close the loop (on the thread, after stop)."""
    pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
    for task in pending:
        task.cancel()
    if pending:
        loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
    loop.run_until_complete(loop.shutdown_asyncgens())
    loop.close()


async def mirror(source: Latest[T], target: Latest[T], thread: LoopThread) -> None:
    """Republish every value of `source` (on this loop) into `target` (used on `thread`'s
    loop); runs until cancelled. Only newest values matter, so skipped ones are fine."""
    async for value in source.updates():
        thread.call(target.publish, value)


def on_loop(
    loop: asyncio.AbstractEventLoop, fn: Callable[P, Awaitable[T]]
) -> Callable[P, Coroutine[Any, Any, T]]:
    """`fn` made callable from another loop: each call runs on `loop` and is awaited there;
    cancelling the caller cancels the call."""

    async def call(*args: P.args, **kwargs: P.kwargs) -> T:
        async def job() -> T:
            return await fn(*args, **kwargs)

        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(job(), loop))

    return call


async def loop_lag(thread: LoopThread, limit: float) -> float | None:
    """Seconds until a callback scheduled now on `thread`'s loop ran there: how long that loop
    keeps work waiting. None when it did not run within `limit` (a wedged or stopped loop)."""
    here = asyncio.get_running_loop()
    ran: asyncio.Future[float] = here.create_future()
    start = time.monotonic()

    def arrived(stamp: float) -> None:
        if not ran.done():
            ran.set_result(stamp)

    def probe() -> None:  # on the probed loop
        stamp = time.monotonic()
        with contextlib.suppress(RuntimeError):  # the prober's loop is closed
            here.call_soon_threadsafe(arrived, stamp)

    try:
        thread.call(probe)
        async with asyncio.timeout(limit):
            return (await ran) - start
    except (TimeoutError, RuntimeError):  # RuntimeError: the loop is not running
        return None
    finally:
        ran.cancel()


def soon_on_loop(loop: asyncio.AbstractEventLoop, fn: Callable[[], object]) -> Callable[[], None]:
    """A plain callback that runs `fn` soon on `loop`, whichever thread calls it."""

    def call() -> None:
        with contextlib.suppress(RuntimeError):  # that loop is closed: the agent is exiting
            loop.call_soon_threadsafe(fn)

    return call
