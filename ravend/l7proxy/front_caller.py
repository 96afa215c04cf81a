"""The caller's connection at a front end, as an asyncio.Protocol (a `Pipe`). I/O.

Why not StreamReader/StreamWriter: on the keep-alive hot path the front end must watch the
caller while a response runs (pipelined bytes, or an EOF that means a TLS caller is gone and
the upstream must be dropped at once). With streams that takes a reading task per request;
here the transport's callbacks do it: received bytes land in a bounded buffer (reading pauses
above `limit`), and a `watch` callback is told about EOF or loss as it happens. One wake-up per
read, no per-request task, no copy into a second buffer. The keep-alive lane (front_lane) goes
further: `listen` tells it of received bytes, `take` hands them over and `write_nowait` answers,
all from callbacks.

Half-close: callers never get a write_eof (a TLS caller cannot have one, and a plain caller's
exchange ends when the kubelet's does); a plain-TCP caller's own EOF is reported and the front
end may still answer what it sent (`can_half_close`).
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Callable

from ravend.l7proxy.tunnel_transport import set_nodelay


class CallerConnection(asyncio.Protocol):
    """One accepted caller connection. `on_open(self)` runs when it is established."""

    def __init__(self, on_open: Callable[[CallerConnection], None], limit: int) -> None:
        self._on_open = on_open
        self._limit = limit
        self._buf = bytearray()
        self._eof = False
        self._error: Exception | None = None
        """What the connection was lost with (None for a clean close)."""
        self._closed = False
        self._paused_reading = False
        self._paused_writing = False
        self._read_waiter: asyncio.Future[None] | None = None
        self._drain_waiter: asyncio.Future[None] | None = None
        self._watcher: Callable[[], None] | None = None
        self._listener: Callable[[], None] | None = None
        self._writable: Callable[[], None] | None = None
        self.transport: asyncio.Transport | None = None

    # ---- asyncio.Protocol ----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport; they implement it.
        self.transport = transport  # type: ignore[assignment]
        set_nodelay(transport)  # small responses go out at once
        self._on_open(self)

    def data_received(self, data: bytes) -> None:
        self._buf += data
        if len(self._buf) > self._limit and not self._paused_reading:
            self._paused_reading = True
            assert self.transport is not None
            self.transport.pause_reading()
        _wake(self._read_waiter)
        if self._listener is not None:
            self._listener()

    def eof_received(self) -> bool:
        self._eof = True
        _wake(self._read_waiter)
        self._notify()
        # Plain TCP: keep the write side open, the response may still be wanted. (TLS closes
        # either way; returning True there only earns a warning.)
        return self.transport is not None and self.transport.can_write_eof()

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        # Without its traceback: asyncio's holds the read buffer's frames, and the error is
        # held by this connection (a cycle kept until a full collection, with the TLS buffers).
        self._error = None if exc is None else exc.with_traceback(None)
        self._eof = True
        _wake(self._read_waiter)
        if self._drain_waiter is not None and not self._drain_waiter.done():
            self._drain_waiter.set_exception(exc or ConnectionResetError("caller went away"))
        self._notify()

    def pause_writing(self) -> None:
        self._paused_writing = True

    def resume_writing(self) -> None:
        self._paused_writing = False
        _wake(self._drain_waiter)
        if self._writable is not None:
            self._writable()

    # ---- the Pipe the front end uses -----------------------------------------------------

    @property
    def ended(self) -> bool:
        """The caller sent EOF or the connection is gone (nothing more will be read)."""
        return self._eof

    def get_extra_info(self, name: str) -> object:
        return self.transport.get_extra_info(name) if self.transport is not None else None

    def can_half_close(self) -> bool:
        """Plain TCP (a caller's EOF still wants its response), not TLS."""
        return self.transport is not None and self.transport.can_write_eof() and not self._closed

    def watch(self, callback: Callable[[], None] | None) -> None:
        """Call `callback` on the caller's EOF or loss (at once if it already happened)."""
        self._watcher = callback
        if callback is not None and self._eof:
            callback()

    def listen(self, callback: Callable[[], None] | None) -> None:
        """Call `callback` after each received chunk is buffered (the keep-alive lane reads
        through `take` from loop callbacks instead of awaiting `read`)."""
        self._listener = callback

    def take(self) -> bytes:
        """Everything buffered now, without waiting (b"" when nothing is)."""
        if not self._buf:
            return b""
        data = bytes(self._buf)
        self._buf.clear()
        if self._paused_reading and self.transport is not None and not self._closed:
            self._paused_reading = False
            self.transport.resume_reading()
        return data

    @property
    def writing_paused(self) -> bool:
        """The transport's write buffer is above its high-water mark."""
        return self._paused_writing

    def on_writable(self, callback: Callable[[], None] | None) -> None:
        """Call `callback` when a paused transport takes writes again."""
        self._writable = callback

    def write_nowait(self, data: bytes) -> bool:
        """`write` without waiting for the buffer to drain (see `writing_paused`); False, and
        nothing written, when the connection is closed."""
        if self._closed or self.transport is None or self.transport.is_closing():
            return False
        self.transport.write(data)
        return True

    async def read(self) -> bytes:
        """Everything buffered (waiting for some); b"" at EOF. Raises the connection's error
        only when the connection was lost with nothing left to read."""
        while not self._buf:
            if self._eof:
                if self._error is not None:
                    # A copy: raising the stored error would put this frame (which holds the
                    # connection) on its traceback while the connection holds it.
                    raise _copy_of(self._error)
                return b""
            self._read_waiter = asyncio.get_running_loop().create_future()
            try:
                await self._read_waiter
            finally:
                self._read_waiter = None
        return self.take()

    async def write(self, data: bytes) -> None:
        if not self.write_nowait(data):
            raise ConnectionResetError("caller connection closed")
        if self._paused_writing:
            self._drain_waiter = asyncio.get_running_loop().create_future()
            try:
                await self._drain_waiter
            finally:
                self._drain_waiter = None

    def write_eof(self) -> bool:
        return False  # see the module docstring: a caller's exchange ends with the kubelet's

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def reusable(self) -> bool:
        return False  # callers are never pooled

    def _notify(self) -> None:
        if self._watcher is not None:
            self._watcher()


def _wake(waiter: asyncio.Future[None] | None) -> None:
    if waiter is not None and not waiter.done():
        waiter.set_result(None)


def _copy_of(error: Exception) -> Exception:
    """A fresh exception like `error` (copy.copy; a ConnectionError when it cannot be copied)."""
    try:
        return copy.copy(error)
    except Exception:
        return ConnectionError(str(error) or type(error).__name__)
