"""LoopThread and its bridges: results and errors come back, cancellation waits for the remote
cleanup, values are mirrored, callbacks land on the right loop, and work on the thread keeps
going while the caller's loop is blocked (what the L7 data path relies on). Loopback I/O."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Coroutine
from typing import Any

import pytest

from ravend.loopthread import LoopThread, loop_lag, mirror, new_loop, on_loop, soon_on_loop
from ravend.runtime import Latest

KINDS = ["asyncio", "uvloop"]


@pytest.mark.parametrize("kind", KINDS)
async def test_run_returns_result_and_raises_errors(kind: str) -> None:
    async with LoopThread("t", kind) as lt:

        async def where() -> str:
            await asyncio.sleep(0)
            return threading.current_thread().name

        assert await lt.run(where) == "loop-t"

        async def fail() -> None:
            raise ValueError("boom")

        with pytest.raises(ValueError, match="boom"):
            await lt.run(fail)

        def no_coroutine() -> Coroutine[Any, Any, None]:
            raise ValueError("factory failed")

        with pytest.raises(ValueError, match="factory failed"):
            await asyncio.wait_for(lt.run(no_coroutine), 5)


async def test_cancel_waits_for_remote_cleanup() -> None:
    cleaned = threading.Event()
    started = asyncio.Event()
    here = asyncio.get_running_loop()

    async def drains() -> None:
        here.call_soon_threadsafe(started.set)
        try:
            await asyncio.Event().wait()
        finally:
            await asyncio.sleep(0.2)  # a drain that takes a while
            cleaned.set()

    async with LoopThread("t") as lt:
        task = asyncio.create_task(lt.run(drains))
        await started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert cleaned.is_set(), "the caller's cancellation ended before the remote cleanup"


async def test_stop_cancels_what_still_runs() -> None:
    cleaned = threading.Event()
    lt = LoopThread("t")
    lt.start()

    async def forever() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            cleaned.set()

    lt.call(lambda: lt.loop.create_task(forever()))
    await asyncio.sleep(0.05)
    await asyncio.to_thread(lt.stop)
    assert cleaned.is_set()
    assert not lt.alive


async def test_mirror_and_callbacks_cross_loops() -> None:
    here = asyncio.get_running_loop()
    source: Latest[int] = Latest(0)
    async with LoopThread("t") as lt:
        target: Latest[int] = Latest(-1)
        forward = asyncio.create_task(mirror(source, target, lt))

        async def wait_for(value: int) -> int:
            seen = -1
            while True:
                seen, got = await target.wait_newer(seen)
                if got == value:
                    return got

        source.publish(7)
        assert await lt.run(lambda: wait_for(7)) == 7
        forward.cancel()

        async def on_main() -> str:
            assert asyncio.get_running_loop() is here
            return threading.current_thread().name

        bridged = on_loop(here, on_main)
        assert await lt.run(bridged) == threading.current_thread().name

        fired = asyncio.Event()
        lt.call(soon_on_loop(here, fired.set))
        await asyncio.wait_for(fired.wait(), 5)


async def test_thread_serves_while_the_callers_loop_is_blocked() -> None:
    """An echo server on the loop thread answers a client (in a third thread) while this loop
    is stuck in a synchronous 1.5 s pass: the answer comes before the pass ends."""

    async def echo(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        w.write(await r.readexactly(4))
        await w.drain()
        w.close()

    async def listen() -> int:
        server = await asyncio.start_server(echo, "127.0.0.1", 0)
        servers.append(server)
        return int(server.sockets[0].getsockname()[1])

    servers: list[asyncio.Server] = []
    answered: list[float] = []
    async with LoopThread("t") as lt:
        port = await lt.run(listen)

        def client() -> None:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
                s.sendall(b"ping")
                assert s.recv(4) == b"ping"
                answered.append(time.monotonic())

        caller = threading.Thread(target=client)
        caller.start()
        time.sleep(1.5)  # noqa: ASYNC251 - the point: this loop is blocked, the thread is not
        blocked_until = time.monotonic()
        await asyncio.to_thread(caller.join, 5)
        lt.call(servers[0].close)
    assert answered and answered[0] < blocked_until


def test_unknown_loop_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown event loop kind"):
        new_loop("trio")


async def test_loop_lag_sees_a_wedged_loop() -> None:
    """A responsive loop answers at once; one stuck in a synchronous call (a blocking bug in
    the data path) does not answer within the limit; a stopped one neither."""
    async with LoopThread("t") as lt:
        lag = await loop_lag(lt, 5.0)
        assert lag is not None and lag < 1.0
        release = threading.Event()
        lt.call(release.wait, 10)  # the loop thread blocks here
        try:
            assert await loop_lag(lt, 0.3) is None
        finally:
            release.set()
        lag = await loop_lag(lt, 5.0)
        assert lag is not None
    assert await loop_lag(lt, 0.3) is None
