"""Byte transports a tunnel session runs over: a socket protocol, or an aiohttp WebSocket. I/O.

The session needs only: hand every received chunk to it, write without awaiting (so sync calls
like `reset()` can send), wait for the peer to absorb what was written, and close.

`TunnelProtocol` is the one used on the wire (TCP or TLS): an `asyncio.BufferedProtocol`, so TLS
decrypts straight into one reused buffer and the sans-IO `Connection` parses frames out of it
from the loop's callback, with no reader task, no StreamReader and no copy in between. Writes
made during one loop iteration are corked into one transport write (one TLS record batch, one
syscall). `WebSocketTransport` carries the same sessions as binary WebSocket messages (kept for
the comparison in bench/l7_tunnel.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections import deque
from collections.abc import Callable
from typing import Protocol, cast

import aiohttp
from aiohttp import web

_CLOSE_WAIT = 1.0
HEAD_END = b"\r\n\r\n"

Receiver = Callable[[memoryview], None]
"""Takes received bytes; the view is only valid during the call (its buffer is reused)."""
Chunk = bytes | memoryview


class ByteTransport(Protocol):
    async def run(self, receive: Receiver) -> None:
        """Pass everything the peer sends to `receive` until the connection is over."""
        ...

    def write(self, parts: list[Chunk]) -> None:
        """Queue bytes (in order); never blocks. Immutable parts are not copied before the
        write goes out, so only pass views of bytes objects nobody will change."""
        ...

    async def drain(self) -> None:
        """Return once the write buffer is below its high-water mark."""
        ...

    def abort(self) -> None:
        """Drop the connection now (dead peer, protocol error)."""
        ...

    async def aclose(self) -> None: ...


def set_nodelay(writer: asyncio.StreamWriter | asyncio.BaseTransport) -> None:
    """Small writes go out at once: without TCP_NODELAY they wait for ACKs (OpenSSH without it
    showed a 40 ms tail, environment.md). Every TCP socket of the L7 path sets it."""
    sock = writer.get_extra_info("socket")
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class HeadError(ConnectionError):
    """The connection ended, or sent too much, before the upgrade head was complete."""


class TunnelProtocol(asyncio.BufferedProtocol):
    """One tunnel socket, from the upgrade head to the end. Create it through the loop
    (`create_connection` / `create_server`); `read_head()` first, then `run()`."""

    def __init__(self, chunk: int = 256 * 1024, high_water: int = 1024 * 1024) -> None:
        self._view = memoryview(bytearray(chunk))
        self._high_water = high_water
        self._early = bytearray()
        """Bytes received before `run()`: the upgrade head, and whatever followed it."""
        self._receive: Receiver | None = None
        self._transport: asyncio.Transport | None = None
        self._lost: asyncio.Future[None] | None = None
        self._arrived: asyncio.Future[None] | None = None
        self._drained: asyncio.Future[None] | None = None
        self._paused = False
        self._pending: list[Chunk] = []
        self._wrote_this_tick = False
        self._loop = asyncio.get_running_loop()  # protocols are made by the running loop

    @property
    def transport(self) -> asyncio.Transport:
        assert self._transport is not None, "not connected"
        return self._transport

    # ---- asyncio.BufferedProtocol callbacks ----------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # Not an isinstance check: uvloop's TLS transport is no asyncio.Transport subclass.
        self._transport = transport = cast(asyncio.Transport, transport)
        self._lost = self._loop.create_future()
        set_nodelay(transport)
        # A high mark well above one TLS record batch: bulk writers pause less often.
        transport.set_write_buffer_limits(high=self._high_water)

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._view

    def buffer_updated(self, nbytes: int) -> None:
        if self._receive is not None:
            self._receive(self._view[:nbytes])
            return
        self._early += self._view[:nbytes]
        _wake(self._arrived)

    def eof_received(self) -> bool | None:
        return None  # close: the tunnel has no use for a half-open connection

    def connection_lost(self, exc: Exception | None) -> None:
        _wake(self._lost)
        _wake(self._arrived)
        _wake(self._drained)

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        _wake(self._drained)

    # ---- the handshake, then the session ------------------------------------------------

    async def read_head(self, max_size: int) -> bytes:
        """The upgrade head, up to and including the blank line; the rest stays for `run()`."""
        loop = asyncio.get_running_loop()
        while (end := self._early.find(HEAD_END)) < 0:
            if len(self._early) > max_size:
                raise HeadError("upgrade head too large")
            if self._lost is None or self._lost.done():
                raise HeadError("connection closed during the upgrade")
            self._arrived = loop.create_future()
            try:
                await self._arrived
            finally:
                self._arrived = None
        end += len(HEAD_END)
        head = bytes(self._early[:end])
        del self._early[:end]
        return head

    async def run(self, receive: Receiver) -> None:
        early, self._early = self._early, bytearray()
        self._receive = receive
        if early:
            with memoryview(early) as view:
                receive(view)
        if self._lost is not None:
            # Shielded: cancelling run() must not look like the connection being lost.
            await asyncio.shield(self._lost)

    # ---- writing ------------------------------------------------------------------------

    def write(self, parts: list[Chunk]) -> None:
        # The first write of a loop iteration goes out at once (a lone request/response pays
        # no extra iteration); later ones in the same iteration are corked and go out as one
        # TLS record batch and one syscall at its end, which matters when many streams
        # answer at once.
        if self._pending or self._wrote_this_tick:
            if not self._pending:
                self._loop.call_soon(self._flush)
            self._pending += parts
            return
        self._wrote_this_tick = True
        self._loop.call_soon(self._new_tick)
        transport = self._transport  # _send, inlined: this runs for every DATA frame sent
        if transport is not None and not transport.is_closing():
            transport.write(b"".join(parts))  # a lone bytes part is returned as it is

    def write_now(self, data: bytes) -> None:
        self._pending.append(data)
        self._flush()

    def _new_tick(self) -> None:
        self._wrote_this_tick = False

    def _flush(self) -> None:
        if self._pending:
            data = b"".join(self._pending)
            self._pending.clear()
            self._send(data)

    def _send(self, data: bytes) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(data)

    async def drain(self) -> None:
        # Corked data is not flushed here (that would undo the corking); it is bounded by the
        # flow-control windows and goes out on the next loop iteration.
        while self._paused and self._lost is not None and not self._lost.done():
            self._drained = asyncio.get_running_loop().create_future()
            try:
                await self._drained
            finally:
                self._drained = None

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()

    async def aclose(self) -> None:
        self._flush()
        if self._transport is None:
            return
        self._transport.close()
        # A TLS close waits for the peer's close_notify; a dead peer never sends it, and
        # Server.wait_closed() waits for every transport: so always end with abort() (a no-op
        # once the close completed), also when cancelled or timed out.
        try:
            if self._lost is not None:
                async with asyncio.timeout(_CLOSE_WAIT):
                    await asyncio.shield(self._lost)
        except TimeoutError:
            pass
        finally:
            self._transport.abort()


def _wake(waiter: asyncio.Future[None] | None) -> None:
    if waiter is not None and not waiter.done():
        waiter.set_result(None)


class WebSocketTransport:
    """Over an aiohttp WebSocket (client or server side), one binary message per flush."""

    def __init__(
        self, ws: aiohttp.ClientWebSocketResponse | web.WebSocketResponse, high_water: int = 1 << 20
    ) -> None:
        self._ws = ws
        self._queue: deque[Chunk] = deque()
        self._queued = 0
        self._high_water = high_water
        self._wake = asyncio.Event()
        self._drained = asyncio.Event()
        self._drained.set()

    async def run(self, receive: Receiver) -> None:
        async with asyncio.TaskGroup() as tg:
            pump = tg.create_task(self._pump())
            try:
                while True:
                    msg = await self._ws.receive()
                    if msg.type is aiohttp.WSMsgType.BINARY:
                        with memoryview(msg.data) as view:
                            receive(view)
                    elif msg.type not in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.PING):
                        return
            finally:
                pump.cancel()

    def write(self, parts: list[Chunk]) -> None:
        for part in parts:
            self._queue.append(part)
            self._queued += len(part)
        if self._queued >= self._high_water:
            self._drained.clear()
        self._wake.set()

    async def drain(self) -> None:
        await self._drained.wait()

    async def _pump(self) -> None:
        while not self._ws.closed:
            await self._wake.wait()
            self._wake.clear()
            while self._queue:
                data = b"".join(self._queue)
                self._queue.clear()
                self._queued = 0
                self._drained.set()
                await self._ws.send_bytes(data)

    def abort(self) -> None:
        self._drained.set()
        self._wake.set()
        self._queue.clear()
        if isinstance(self._ws, aiohttp.ClientWebSocketResponse):
            # The client response owns its connection: closing it drops the socket at once.
            self._ws._response.close()

    async def aclose(self) -> None:
        self._drained.set()
        self._wake.set()
        with contextlib.suppress(ConnectionError, OSError):
            async with asyncio.timeout(_CLOSE_WAIT):
                await self._ws.close()
