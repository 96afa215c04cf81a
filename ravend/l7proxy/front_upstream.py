"""A pooled tunnel stream at the front end, read through loop callbacks. I/O (the stream).

Framed exchanges over a tunnel stream are relayed from the session's callbacks (the stream's
`StreamSink` mode, as the edge's splice does): no reading task, no future per read. The pipe is
the stream's sink for its whole life and passes what arrives to the `UpstreamConsumer` of the
exchange in progress (front_relay). Flow control is the stream's own: while the consumer's
caller cannot take more, `pause_receiving` holds the window, so the edge stops after at most one
window, exactly as when a reader stops reading.

Between exchanges (idle in the pool) nobody consumes: a byte, EOF or reset that arrives then
spoils the pipe (`reusable` is False; the bytes are dropped and the window is held, so the
peer cannot send more than one window), and the pool closes it instead of reusing it, as it
would close a stream with unread bytes. One-shot exchanges (splice) keep `StreamPipe`.
"""

from __future__ import annotations

from typing import Protocol

from ravend.l7proxy.tunnel_stream import Stream, TunnelError


class UpstreamConsumer(Protocol):
    """The exchange reading a `TunnelPipe` now."""

    def upstream_data(self, data: bytes) -> None: ...

    def upstream_eof(self) -> None: ...

    def upstream_failed(self, error: TunnelError) -> None: ...

    def upstream_writable(self) -> None:
        """The send window grew: `send_nowait` may take more."""


class TunnelPipe:
    """A tunnel stream for framed (poolable) exchanges; the stream's sink."""

    __slots__ = ("_consumer", "_paused", "_spoiled", "stream")

    def __init__(self, stream: Stream) -> None:
        self.stream = stream
        self._consumer: UpstreamConsumer | None = None
        self._paused = False
        self._spoiled = False
        """Something arrived while no exchange was reading: never reuse."""
        stream.attach(self)

    def consume(self, consumer: UpstreamConsumer | None) -> None:
        """Deliver to `consumer` from now on (None: the exchange is over)."""
        self._consumer = consumer
        if consumer is None and self._paused:  # resume_receiving, without a call per exchange
            self.resume_receiving()

    def pause_receiving(self) -> None:
        if not self._paused:
            self._paused = True
            self.stream.pause_receiving()

    def resume_receiving(self) -> None:
        if self._paused and not self._spoiled:
            self._paused = False
            self.stream.resume_receiving()

    def send_nowait(self, data: bytes | memoryview) -> int:
        """What the windows take of `data` now (see `upstream_writable`). Raises TunnelError."""
        # (Not the stream's bound method stored at __init__, which would save a call per
        # request: stand-in streams of the front end's tests have no send_nowait.)
        return self.stream.send_nowait(data)

    async def write(self, data: bytes) -> None:
        await self.stream.write(data)

    def write_eof(self) -> bool:
        self.stream.write_eof()
        return True

    def close(self) -> None:
        self.stream.detach()  # we attached ourselves: a cycle a full collection would break
        self.stream.close()

    def abort(self) -> None:
        self.stream.detach()
        self.stream.reset(reason="relay aborted")

    def reusable(self) -> bool:
        return not self._spoiled and self.stream.idle

    # ---- StreamSink ----------------------------------------------------------------------

    def stream_data(self, data: bytes) -> None:
        consumer = self._consumer
        if consumer is not None:
            consumer.upstream_data(data)
            return
        self._spoiled = True  # unsolicited: held (not acknowledged), dropped, never reused
        if not self._paused:
            self._paused = True
            self.stream.pause_receiving()

    def stream_eof(self) -> None:
        if self._consumer is not None:
            self._consumer.upstream_eof()
        else:
            self._spoiled = True

    def stream_failed(self, error: TunnelError) -> None:
        if self._consumer is not None:
            self._consumer.upstream_failed(error)
        else:
            self._spoiled = True

    def stream_writable(self) -> None:
        if self._consumer is not None:
            self._consumer.upstream_writable()
