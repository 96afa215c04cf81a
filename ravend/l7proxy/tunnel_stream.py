"""One multiplexed stream of a tunnel session, as an async byte pipe. I/O through the session.

A `Stream` buffers what the peer sent until `read()` takes it; only then is the peer allowed to
send more (the protocol's per-stream window), so a stream nobody reads costs at most one window
of memory and never slows its neighbours. Errors are per stream: a reset raises here only.
"""

from __future__ import annotations

import asyncio
import copy
from collections import deque
from types import TracebackType
from typing import TYPE_CHECKING, Protocol

from ravend.l7proxy.protocol_frames import ErrorCode, Target

if TYPE_CHECKING:
    from ravend.l7proxy.tunnel_session import TunnelSession


class TunnelError(ConnectionError):
    """Base of the tunnel's runtime errors."""


class TunnelClosed(TunnelError):
    """The tunnel connection carrying the stream is gone."""


class StreamResetError(TunnelError):
    """The stream was aborted, by the peer or because it broke the protocol."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"stream reset ({code}): {reason}")
        self.code = code
        self.reason = reason

    def __reduce__(self) -> tuple[type[StreamResetError], tuple[int, str]]:
        return type(self), (self.code, self.reason)  # copy.copy() (Stream._raised) and pickle


class StreamSink(Protocol):
    """Receives a stream's events as loop callbacks, after `Stream.attach` (no reader task)."""

    def stream_data(self, data: bytes) -> None:
        """Bytes from the peer. They count as consumed (window reopened) when this returns,
        unless `Stream.pause_receiving` was called: then when `resume_receiving` is."""

    def stream_eof(self) -> None:
        """The peer will send no more."""

    def stream_failed(self, error: TunnelError) -> None:
        """Reset by either side, or the tunnel is gone; the stream is dead."""

    def stream_writable(self) -> None:
        """The send window grew: `send_nowait` may take more now."""


class Stream:
    """Bytes both ways to `target`; use as `async with stream:` to close it on exit."""

    __slots__ = (
        "_buf",
        "_buffered",
        "_discard",
        "_eof",
        "_error",
        "_held",
        "_read_waiter",
        "_sent_fin",
        "_session",
        "_sink",
        "_write_waiter",
        "id",
        "target",
    )

    def __init__(self, session: TunnelSession, stream_id: int, target: Target) -> None:
        self.id = stream_id
        self.target = target
        self._session = session
        # Received chunks kept as they came: a read of a whole chunk hands it over uncopied.
        self._buf: deque[bytes] = deque()
        self._buffered = 0
        self._eof = False
        self._sent_fin = False
        self._discard = False
        self._error: TunnelError | None = None
        # Futures are created only while someone waits: an idle stream stays small.
        self._read_waiter: asyncio.Future[None] | None = None
        self._write_waiter: asyncio.Future[None] | None = None
        self._sink: StreamSink | None = None
        self._held: int | None = None
        """Bytes given to the sink but not acknowledged (None: not paused)."""

    def __repr__(self) -> str:
        return f"<Stream {self.id} to {self.target.node}:{self.target.port}>"

    @property
    def finished(self) -> bool:
        """Both directions are over (or the stream failed)."""
        return self._error is not None or (self._eof and self._sent_fin)

    @property
    def idle(self) -> bool:
        """Healthy, open both ways, nothing received and unread: fit to carry a new exchange.

        For connection pools (the front end keeps idle streams to reuse them): a stream the
        peer closed, reset or sent unasked bytes on is not idle.
        """
        return self._error is None and not (self._eof or self._sent_fin or self._buf)

    async def read(self, max_bytes: int = 256 * 1024) -> bytes:
        """Up to `max_bytes` bytes; b"" at end of stream. Raises StreamResetError/TunnelClosed."""
        while not self._buf:
            if self._error is not None:
                raise self._raised(self._error)
            if self._eof:
                return b""
            self._read_waiter = asyncio.get_running_loop().create_future()
            try:
                await self._read_waiter
            finally:
                self._read_waiter = None
        if self._error is not None:
            raise self._raised(self._error)  # a reset discards unread data, as TCP does
        chunk = self._buf.popleft()
        if len(chunk) > max_bytes:
            chunk, rest = chunk[:max_bytes], chunk[max_bytes:]
            self._buf.appendleft(rest)
        self._buffered -= len(chunk)
        self._session._consumed(self.id, len(chunk))
        return chunk

    async def write(self, data: bytes | bytearray | memoryview) -> None:
        """Send all of `data`, waiting for window (this stream's only) and socket buffer."""
        if self._error is not None:
            raise self._raised(self._error)
        # First try without a view: most writes fit the window whole.
        taken = self._session._send(self.id, data)
        if taken < len(data):
            await self._write_rest(memoryview(data)[taken:])
        await self._session._drain()

    async def _write_rest(self, view: memoryview) -> None:
        while view:
            self._write_waiter = asyncio.get_running_loop().create_future()
            try:
                await self._write_waiter
            finally:
                self._write_waiter = None
            if self._error is not None:
                raise self._raised(self._error)
            view = view[self._session._send(self.id, view) :]

    def write_eof(self) -> None:
        """Tell the peer we will send no more (it reads end of stream); reading goes on."""
        if self._error is not None:
            raise self._raised(self._error)
        if not self._sent_fin:
            self._sent_fin = True
            self._session._half_close(self.id)

    def reset(self, code: int = ErrorCode.CANCEL, reason: str = "") -> None:
        """Abort both directions now; unread and unsent data is dropped."""
        if self._error is None:
            self._session._reset(self.id, code, reason)
            self._fail(StreamResetError(code, f"reset locally: {reason}"))

    def close(self) -> None:
        """Finish gracefully: send end of stream and ignore whatever the peer still sends."""
        if self._error is not None:
            return
        if not self._sent_fin:
            self.write_eof()
        if not self._eof:
            self._discard = True
            unread, self._buffered = self._buffered, 0
            self._buf.clear()
            self._session._consumed(self.id, unread)

    async def __aenter__(self) -> Stream:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is None:
            self.close()
        else:
            self.reset(ErrorCode.CANCEL, f"{exc_type.__name__ if exc_type else 'error'}")

    # ---- callback mode (a splice without tasks) ------------------------------------------

    def attach(self, sink: StreamSink) -> None:
        """Deliver everything from now on to `sink` instead of `read()` (buffered data first)."""
        self._sink = sink
        while self._buf and self._error is None:
            chunk = self._buf.popleft()
            self._buffered -= len(chunk)
            self._deliver(chunk)
        if self._error is not None:
            sink.stream_failed(self._error)
        elif self._eof:
            sink.stream_eof()

    def detach(self) -> None:
        """Call the sink no more (its splice is over). The sink holds the stream, so keeping it
        would be a reference cycle that outlives the exchange until a full garbage collection."""
        self._sink = None

    def send_nowait(self, data: bytes | bytearray | memoryview) -> int:
        """Queue what the windows allow of `data` now; return how much. When less than all,
        the sink's `stream_writable` says when to try again. Raises like `write`."""
        if self._error is not None:
            raise self._raised(self._error)
        return self._session._send(self.id, data)

    def pause_receiving(self) -> None:
        """Stop reopening the window for what the sink is given (its consumer is full): the
        peer stops after at most one window."""
        if self._held is None:
            self._held = 0

    def resume_receiving(self) -> None:
        held, self._held = self._held, None
        if held and self._error is None:
            self._session._consumed(self.id, held)

    def _deliver(self, data: bytes) -> None:
        assert self._sink is not None
        self._sink.stream_data(data)
        if self._held is not None:
            self._held += len(data)
        elif self._error is None:
            self._session._consumed(self.id, len(data))

    # ---- called by the session ---------------------------------------------------------

    def _feed(self, data: bytes) -> bool:
        """Take data from the peer. True when it is consumed already (given to a sink that is
        not paused) or dropped (discarding, failed): the caller acknowledges it then, in the
        same receive call, which saves a call back into the session per DATA frame. (Data
        buffered before `attach` goes through _deliver, which acknowledges it itself.)"""
        if self._discard or self._error is not None:
            return True
        sink = self._sink
        if sink is None:
            self._buf.append(data)
            self._buffered += len(data)
            _wake(self._read_waiter)
            return False
        sink.stream_data(data)
        if self._held is None:
            return True  # (if the sink reset the stream meanwhile, acknowledging is a no-op)
        self._held += len(data)
        return False

    def _feed_eof(self) -> None:
        self._eof = True
        _wake(self._read_waiter)
        if self._sink is not None:
            self._sink.stream_eof()

    def _window_opened(self) -> None:
        _wake(self._write_waiter)
        if self._sink is not None and self._error is None:
            self._sink.stream_writable()

    @staticmethod
    def _raised(error: TunnelError) -> TunnelError:
        """A copy of the stream's error for each raise. Raising the stored one would put the
        raising frames, which hold this stream, on its traceback while the stream holds it: a
        reference cycle that keeps the stream, its sink and their sockets (a TLS transport keeps
        a 256 KiB buffer and OpenSSL's) until the next full garbage collection, which a busy
        proxy reaches only after hundreds of MiB. (Each raise would also lengthen the traceback.)
        """
        return copy.copy(error)

    def _fail(self, error: TunnelError) -> None:
        first = self._error is None
        if first:
            self._error = error
            self._buf.clear()
            self._buffered = 0
        _wake(self._read_waiter)
        _wake(self._write_waiter)
        if first and self._sink is not None:
            self._sink.stream_failed(error)


def _wake(waiter: asyncio.Future[None] | None) -> None:
    if waiter is not None and not waiter.done():
        waiter.set_result(None)
