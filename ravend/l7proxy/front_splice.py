"""Byte pipes (socket or tunnel stream), `splice` (the relay both ways), and the one-shot
exchange built on it (`relay_one_shot`) with the refusal answer (`refuse`). I/O.

After routing on the request head, the proxy only moves bytes: requests, chunked log streams,
WebSocket and SPDY/3.1 sessions after a 101 and port-forward data alike, with no HTTP parsing.

Half-close: end-of-stream on one side is passed on as end-of-stream where the other side can
carry it (plain TCP, tunnel streams). TLS over asyncio cannot half-close, so an EOF that cannot
be passed on ends the whole exchange: a TLS caller that stops sending is gone (Go's TLS clients
never half-close a kubelet connection), and a TLS kubelet that finished its response is done.
A caller's EOF is passed upstream where possible, but the kubelet's EOF always ends the exchange
at the front end (HTTP: the server's close ends a `Connection: close` exchange).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from typing import Protocol

from ravend.l7proxy.http_reply import simple_response
from ravend.l7proxy.routing import Refusal
from ravend.l7proxy.tunnel_stream import Stream, TunnelError

log = logging.getLogger(__name__)

READ_SIZE = 256 * 1024


class Pipe(Protocol):
    """One side of a relay."""

    async def read(self) -> bytes:
        """Some bytes; b"" at end of stream."""
        ...

    async def write(self, data: bytes) -> None: ...

    def write_eof(self) -> bool:
        """Pass on end-of-stream; False when this side cannot half-close (TLS)."""
        ...

    def close(self) -> None:
        """Finish: flush what is buffered, then close."""
        ...

    def abort(self) -> None:
        """Drop now: the peer sees a reset, not a clean end."""
        ...

    def reusable(self) -> bool:
        """Idle and healthy: the peer has not closed, failed or sent anything unasked."""
        ...


class SocketPipe:
    """An asyncio stream pair (plain TCP or TLS).

    `half_close=False` makes an EOF towards this side end the whole exchange: the front end
    uses it for callers, because when the kubelet has finished its `Connection: close` response
    the exchange is over, whether or not the caller ever closes its side.
    """

    __slots__ = ("half_close", "reader", "writer")

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, half_close: bool = True
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.half_close = half_close

    async def read(self) -> bytes:
        return await self.reader.read(READ_SIZE)

    async def write(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    def write_eof(self) -> bool:
        if not self.half_close or self.writer.is_closing() or not self.writer.can_write_eof():
            return False
        self.writer.write_eof()
        return True

    def close(self) -> None:
        self.writer.close()

    def abort(self) -> None:
        self.writer.transport.abort()

    def reusable(self) -> bool:
        # StreamReader keeps received bytes in `_buffer` (no public accessor); anything there
        # on an idle connection is unsolicited and would be taken for the next response.
        buffered = getattr(self.reader, "_buffer", None)
        return not (
            self.writer.is_closing()
            or self.reader.exception() is not None
            or self.reader.at_eof()
            or buffered
        )


class StreamPipe:
    """A tunnel stream."""

    __slots__ = ("stream",)

    def __init__(self, stream: Stream) -> None:
        self.stream = stream

    async def read(self) -> bytes:
        return await self.stream.read(READ_SIZE)

    async def write(self, data: bytes) -> None:
        await self.stream.write(data)

    def write_eof(self) -> bool:
        self.stream.write_eof()
        return True

    def close(self) -> None:
        self.stream.close()

    def abort(self) -> None:
        self.stream.reset(reason="relay aborted")

    def reusable(self) -> bool:
        return self.stream.idle


@dataclass
class SpliceResult:
    """What went through; `failed` names the side whose error ended the relay, if any."""

    a_to_b: int = 0
    b_to_a: int = 0
    error: BaseException | None = None
    failed: str = ""


class _EndOfExchange(Exception):
    """An EOF that cannot be passed on: the exchange is over."""


async def _pump(src: Pipe, dst: Pipe, result: SpliceResult, down: bool) -> None:
    src_name, dst_name = ("b", "a") if down else ("a", "b")
    while True:
        try:
            data = await src.read()
        except (OSError, TunnelError):
            result.failed = result.failed or src_name
            raise
        if not data:
            break
        if down:
            result.b_to_a += len(data)
        else:
            result.a_to_b += len(data)
        try:
            await dst.write(data)
        except (OSError, TunnelError):
            result.failed = result.failed or dst_name
            raise
    if not dst.write_eof():
        raise _EndOfExchange


async def splice(a: Pipe, b: Pipe) -> SpliceResult:
    """Relay until both directions ended (or one failed); never closes the pipes itself.

    Errors (OSError, TunnelError) are returned in the result, not raised, so the caller can
    answer "502" when nothing came back yet or just drop the connection when something did.
    """
    result = SpliceResult()
    try:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(_pump(a, b, result, False))
            tg.create_task(_pump(b, a, result, True))
    except* _EndOfExchange:
        pass
    except* (OSError, TunnelError) as group:
        result.error = group.exceptions[0]
    return result


async def refuse(client: Pipe, refusal: Refusal) -> str:
    """Answer `refusal` (a short text response that closes); its counter label."""
    log.info("L7 request refused: %d %s", refusal.status, refusal.reason)
    with contextlib.suppress(OSError):
        await client.write(simple_response(refusal.status, refusal.reason))
    return str(refusal.status)


async def relay_one_shot(client: Pipe, upstream: Pipe, first: bytes) -> str:
    """Send `first` upstream, splice both ways, then close or drop the upstream: the one-shot
    form (upgrades, HTTP/1.0, unframed requests). Returns the counter label."""
    try:
        try:
            await upstream.write(first)
        except (OSError, ConnectionError) as exc:
            return await refuse(client, Refusal(502, f"upstream failed: {exc}"))
        result = await splice(client, upstream)
    except BaseException:
        upstream.abort()
        raise
    if result.error is None:
        upstream.close()
        return "ok"
    upstream.abort()
    if result.failed == "b" and result.b_to_a == 0:
        return await refuse(client, Refusal(502, f"upstream failed: {result.error}"))
    client.abort()
    return "upstream-error" if result.failed == "b" else "caller-gone"
