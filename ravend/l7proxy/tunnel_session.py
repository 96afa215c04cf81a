"""A live tunnel connection: the sans-IO `Connection` driven over a byte transport. I/O.

`TunnelSession.run()` owns the connection for its whole life: it feeds received bytes to the
protocol, dispatches events to `Stream`s, pings the peer and declares it dead after
`keepalive_timeout` seconds of silence, drains after a GOAWAY, and runs the handlers of streams
the peer opens, supervised in its TaskGroup. It returns when the connection is over; every
stream still alive then fails with TunnelClosed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from ravend.l7proxy.protocol import Connection
from ravend.l7proxy.protocol_errors import LocalProtocolError, RemoteProtocolError
from ravend.l7proxy.protocol_events import (
    ConnectionTerminated,
    DataReceived,
    Event,
    GoAwayReceived,
    PongReceived,
    SettingsReceived,
    StreamHalfClosed,
    StreamOpened,
    StreamReset,
    WindowUpdated,
)
from ravend.l7proxy.protocol_frames import ErrorCode, Target
from ravend.l7proxy.settings import L7TunnelSettings
from ravend.l7proxy.tunnel_stream import Stream, StreamResetError, TunnelClosed, TunnelError
from ravend.l7proxy.tunnel_transport import ByteTransport

log = logging.getLogger(__name__)

StreamHandler = Callable[[Target, Stream], Awaitable[None]]
_PING = struct.Struct(">d")


class TunnelSession:
    """One tunnel connection with its streams. `name` is the peer, for logs."""

    def __init__(
        self,
        conn: Connection,
        transport: ByteTransport,
        settings: L7TunnelSettings,
        *,
        name: str,
        handler: StreamHandler | None = None,
    ) -> None:
        self.name = name
        self.conn = conn
        self.rtt: float | None = None
        """Last measured round-trip time in seconds (from keepalive PINGs)."""
        self.ready = asyncio.Event()
        """Set once the peer's HELLO arrived."""
        self.going_away = asyncio.Event()
        """Set when either side sent GOAWAY or the session ended: open new streams elsewhere."""
        self.closed = asyncio.Event()
        self._over = False
        """Whether `closed` is set, as a plain attribute: the per-frame paths test it."""
        self._transport = transport
        self._settings = settings
        self._handler = handler
        self._streams: dict[int, Stream] = {}
        self._blocked: set[Stream] = set()
        self._last_recv = time.monotonic()
        self._drain_deadline: float | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._group: asyncio.TaskGroup | None = None

    @property
    def stream_count(self) -> int:
        return len(self._streams)

    # ---- public API ---------------------------------------------------------------------

    async def run(self) -> None:
        """Serve the connection until it ends; never raises for network or peer faults."""
        self._flush()
        try:
            async with asyncio.TaskGroup() as tg:
                self._group = tg
                self._spawn(tg, self._keepalive())
                self._spawn(tg, self._receive())
                try:
                    await self.closed.wait()
                finally:
                    # Over before the group winds down (also when run() is cancelled): the
                    # transport still delivers bytes meanwhile, and _on_bytes drops them.
                    self._close()
                for task in self._tasks:
                    task.cancel()
        finally:
            self._shutdown("session ended")
            await self._transport.aclose()

    async def wait_ready(self) -> None:
        await self.ready.wait()

    def open_stream(self, target: Target) -> Stream:
        """Open a stream to `target` on the peer. Raises TunnelError if the tunnel cannot."""
        if self._over or not self.conn.can_open_stream:
            raise TunnelError(f"tunnel to {self.name} cannot take new streams now")
        try:
            stream_id = self.conn.open_stream(target)
        except LocalProtocolError as exc:
            raise TunnelError(str(exc)) from None
        stream = Stream(self, stream_id, target)
        self._streams[stream_id] = stream
        self._flush()
        return stream

    def go_away(self, reason: str = "shutting down") -> None:
        """Refuse new streams; let the open ones finish within `drain_timeout`."""
        if not self._over and not self.conn.goaway_sent:
            self.conn.go_away(ErrorCode.NO_ERROR, reason)
            self._flush()
            self._start_drain()

    def abort(self, reason: str) -> None:
        """End the session now, dropping whatever is not sent yet."""
        log.info("tunnel %s: aborting: %s", self.name, reason)
        self._transport.abort()
        self._close()

    def _end(self, reason: str) -> None:
        # Graceful: run() closes the transport, which first sends what is queued (the last
        # stream's tail and FIN must reach the peer).
        log.info("tunnel %s: closing: %s", self.name, reason)
        self._close()

    def _close(self) -> None:
        self._over = True
        self.closed.set()

    # ---- called by streams --------------------------------------------------------------

    def _send(self, stream_id: int, data: bytes | bytearray | memoryview) -> int:
        # Runs for every DATA frame sent: _flush is inlined.
        if self._over:
            raise TunnelClosed(f"tunnel to {self.name} closed")
        conn = self.conn
        try:
            taken = conn.send_data(stream_id, data)
        except LocalProtocolError as exc:
            raise StreamResetError(ErrorCode.STREAM_CLOSED, str(exc)) from None
        if taken < len(data):
            self._blocked.add(self._streams[stream_id])
        parts = conn.data_to_send_parts()
        if parts:
            self._transport.write(parts)
        return taken

    async def _drain(self) -> None:
        await self._transport.drain()

    def _consumed(self, stream_id: int, count: int) -> None:
        # Consuming never finishes a stream (only EOF, FIN and resets do, and each of those
        # forgets it): nothing to forget here. Most acknowledgements queue nothing to send.
        if not self._over and self.conn.acknowledge_received(stream_id, count):
            self._flush()

    def _half_close(self, stream_id: int) -> None:
        if self._over:
            raise TunnelClosed(f"tunnel to {self.name} closed")
        try:
            self.conn.half_close(stream_id)
        except LocalProtocolError as exc:
            raise StreamResetError(ErrorCode.STREAM_CLOSED, str(exc)) from None
        self._flush()
        self._forget_if_finished(stream_id)

    def _reset(self, stream_id: int, code: int, reason: str) -> None:
        if not self._over:
            self.conn.reset(stream_id, code, reason)
            self._flush()
        self._forget(stream_id)

    # ---- internals ----------------------------------------------------------------------

    def _spawn(self, tg: asyncio.TaskGroup, coro: Coroutine[Any, Any, None]) -> None:
        task = tg.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _flush(self) -> None:
        parts = self.conn.data_to_send_parts()
        if parts:
            self._transport.write(parts)

    async def _receive(self) -> None:
        try:
            await self._transport.run(self._on_bytes)
        finally:
            self._close()

    def _on_bytes(self, data: memoryview) -> None:
        """Called by the transport for each chunk received (no task per chunk or frame).
        What the events queue to send (window updates, PONGs) goes out in one write."""
        if self._over:
            return  # late bytes while run() winds down: its TaskGroup takes no handlers now
        self._last_recv = time.monotonic()
        conn = self.conn
        try:
            events = conn.receive_data(data)
        except RemoteProtocolError as exc:
            log.warning("tunnel %s: peer broke the protocol: %s", self.name, exc)
            self._dispatch(exc.events_before)  # type: ignore[arg-type]
            self._flush()  # the GOAWAY that explains it
            self._close()
            return
        self._dispatch(events)
        parts = conn.data_to_send_parts()
        if parts:
            self._transport.write(parts)
        if conn.closed:
            self._close()

    def _dispatch(self, events: list[Event]) -> None:
        for event in events:
            if isinstance(event, DataReceived):
                # What a stream consumed at once (or drops) is acknowledged here, not through
                # _consumed: any WINDOW_UPDATE joins the write at the end of _on_bytes.
                stream = self._streams.get(event.stream_id)
                if stream is None or stream._feed(event.data):
                    self.conn.acknowledge_received(event.stream_id, len(event.data))
            elif isinstance(event, WindowUpdated):
                self._wake_writers(event.stream_id)
            elif isinstance(event, StreamOpened):
                self._accept(event.stream_id, event.target)
            elif isinstance(event, StreamHalfClosed):
                if stream := self._streams.get(event.stream_id):
                    stream._feed_eof()
                    self._forget_if_finished(event.stream_id)
            elif isinstance(event, StreamReset):
                if stream := self._streams.get(event.stream_id):
                    stream._fail(StreamResetError(event.code, event.reason))
                    self._forget(event.stream_id)
            elif isinstance(event, PongReceived):
                self.rtt = time.monotonic() - _PING.unpack(event.payload)[0]
            elif isinstance(event, SettingsReceived):
                # Writes attempted before the peer's HELLO found no window: release them.
                self.ready.set()
                self._wake_writers(0)
            elif isinstance(event, GoAwayReceived):
                log.info("tunnel %s: peer going away: %s", self.name, event.reason)
                self._start_drain()
            elif isinstance(event, ConnectionTerminated):
                self._close()

    def _accept(self, stream_id: int, target: Target) -> None:
        if self._handler is None or self._group is None:
            self.conn.reset(stream_id, ErrorCode.REFUSED_STREAM, "this side accepts no streams")
            return
        stream = Stream(self, stream_id, target)
        handling = self._supervise(self._handler, stream)
        try:
            self._spawn(self._group, handling)
        except RuntimeError:  # the TaskGroup is shutting down (a task of it failed)
            handling.close()
            self.conn.reset(stream_id, ErrorCode.REFUSED_STREAM, "tunnel shutting down")
            return
        self._streams[stream_id] = stream

    async def _supervise(self, handler: StreamHandler, stream: Stream) -> None:
        # One handler's failure resets its own stream, never the session or other streams.
        try:
            await handler(stream.target, stream)
        except TunnelError as exc:
            log.debug("tunnel %s: %r ended: %s", self.name, stream, exc)
            stream.reset(ErrorCode.CANCEL, str(exc))
        except Exception as exc:
            log.exception("tunnel %s: handler for %r failed", self.name, stream)
            stream.reset(ErrorCode.INTERNAL_ERROR, type(exc).__name__)
        else:
            with contextlib.suppress(TunnelError):
                stream.close()

    def _wake_writers(self, stream_id: int) -> None:
        if stream_id == 0:
            blocked, self._blocked = self._blocked, set()
            for waiting in blocked:
                waiting._window_opened()
        elif stream := self._streams.get(stream_id):
            self._blocked.discard(stream)
            stream._window_opened()

    def _forget_if_finished(self, stream_id: int) -> None:
        stream = self._streams.get(stream_id)
        if stream is not None and stream.finished:
            self._forget(stream_id)

    def _forget(self, stream_id: int) -> None:
        stream = self._streams.pop(stream_id, None)
        if stream is not None:
            self._blocked.discard(stream)
        if self._drain_deadline is not None and not self._streams:
            self._end("drained after GOAWAY")

    def _start_drain(self) -> None:
        self.going_away.set()
        if self._drain_deadline is None:
            self._drain_deadline = time.monotonic() + self._settings.drain_timeout
            if not self._streams:
                self._end("GOAWAY with no open streams")

    async def _keepalive(self) -> None:
        settings = self._settings
        while True:
            await asyncio.sleep(settings.keepalive_interval)
            now = time.monotonic()
            if now - self._last_recv > settings.keepalive_timeout:
                self.abort(f"no data for {now - self._last_recv:.1f} s: peer dead")
                return
            if self._drain_deadline is not None and now > self._drain_deadline:
                self.abort("drain timeout after GOAWAY")
                return
            self.conn.ping(_PING.pack(now))
            self._flush()

    def _shutdown(self, reason: str) -> None:
        self._close()
        self.going_away.set()
        streams, self._streams = list(self._streams.values()), {}
        for stream in streams:
            stream._fail(TunnelClosed(f"tunnel to {self.name}: {reason}"))
