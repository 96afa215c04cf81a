"""Byte transports a tunnel session runs over: asyncio streams, or an aiohttp WebSocket. I/O.

The session needs only: read a chunk, write without awaiting (so sync calls like `reset()` can
send), wait for the peer to absorb what was written, and close. `StreamTransport` writes straight
into the socket buffer; `WebSocketTransport` needs a pump task because aiohttp only sends from
coroutines, so the session runs `pump()` next to its read loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections import deque
from typing import Protocol

import aiohttp
from aiohttp import web

_CLOSE_WAIT = 1.0


class ByteTransport(Protocol):
    async def read(self) -> bytes:
        """The next chunk from the peer; b"" once the connection is over."""
        ...

    def write(self, data: bytes) -> None: ...

    async def drain(self) -> None:
        """Return once the write buffer is below its high-water mark."""
        ...

    async def pump(self) -> None:
        """Run for the transport's lifetime if it needs a writer task; else return at once."""
        ...

    def abort(self) -> None:
        """Drop the connection now (dead peer, protocol error)."""
        ...

    async def aclose(self) -> None: ...


def set_nodelay(writer: asyncio.StreamWriter) -> None:
    # Without TCP_NODELAY small frames wait for ACKs (OpenSSH showed a 40 ms tail).
    sock = writer.get_extra_info("socket")
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class StreamTransport:
    """Over an asyncio (reader, writer) pair, TLS or not."""

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, chunk: int = 256 * 1024
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._chunk = chunk
        self._pending: list[bytes] = []
        set_nodelay(writer)

    async def read(self) -> bytes:
        try:
            return await self._reader.read(self._chunk)
        except (ConnectionError, OSError):
            return b""

    def write(self, data: bytes) -> None:
        # Cork: writes made in one loop iteration go out as one TLS record and one syscall,
        # which matters when many streams answer at once.
        self._pending.append(data)
        if len(self._pending) == 1:
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        data = b"".join(self._pending)
        self._pending.clear()
        if not self._writer.is_closing():
            self._writer.write(data)

    async def drain(self) -> None:
        # Corked data is not flushed here (that would undo the corking); it is bounded by the
        # flow-control windows and goes out on the next loop iteration.
        with contextlib.suppress(ConnectionError, OSError):
            await self._writer.drain()

    async def pump(self) -> None:
        return None

    def abort(self) -> None:
        self._writer.transport.abort()

    async def aclose(self) -> None:
        if self._pending:
            self._flush()
        if not self._writer.is_closing():
            self._writer.close()
        # A TLS close waits for the peer's close_notify; a dead peer never sends it, and
        # asyncio.Server.wait_closed() waits for every transport: so always end with abort()
        # (a no-op once the close completed), also when cancelled or timed out.
        try:
            async with asyncio.timeout(_CLOSE_WAIT):
                await self._writer.wait_closed()
        except (TimeoutError, ConnectionError, OSError):
            pass
        finally:
            self._writer.transport.abort()


class WebSocketTransport:
    """Over an aiohttp WebSocket (client or server side), one binary message per flush."""

    def __init__(
        self, ws: aiohttp.ClientWebSocketResponse | web.WebSocketResponse, high_water: int = 1 << 20
    ) -> None:
        self._ws = ws
        self._queue: deque[bytes] = deque()
        self._queued = 0
        self._high_water = high_water
        self._wake = asyncio.Event()
        self._drained = asyncio.Event()
        self._drained.set()

    async def read(self) -> bytes:
        while True:
            msg = await self._ws.receive()
            if msg.type is aiohttp.WSMsgType.BINARY:
                data: bytes = msg.data
                return data
            if msg.type in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.PING):
                continue
            return b""

    def write(self, data: bytes) -> None:
        self._queue.append(data)
        self._queued += len(data)
        if self._queued >= self._high_water:
            self._drained.clear()
        self._wake.set()

    async def drain(self) -> None:
        await self._drained.wait()

    async def pump(self) -> None:
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
