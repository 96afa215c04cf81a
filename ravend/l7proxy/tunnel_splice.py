"""Splice a tunnel stream to a socket with loop callbacks only: no tasks, no StreamReader. I/O.

The edge's half of every kubelet exchange. Bytes from the socket go straight into the stream's
send window from the protocol callback; bytes from the stream go straight into the socket's
transport from the session's callback. Back-pressure is the flow control itself: when the
stream's window is used up the socket stops being read, and while the socket's write buffer is
above its high-water mark the stream's window is not reopened, so the peer stops after at most
one window (a slow kubelet never slows the other streams).

End of stream follows front_splice.splice: an EOF is passed on where the other side can carry
it (TCP, tunnel streams); TLS cannot half-close, so the stream's EOF towards a TLS socket ends
the exchange, and a TLS socket's EOF (its close) ends it too once passed on to the stream.
"""

from __future__ import annotations

import asyncio
from typing import cast

from ravend.l7proxy.protocol_frames import ErrorCode
from ravend.l7proxy.tunnel_stream import Stream, TunnelError
from ravend.l7proxy.tunnel_transport import set_nodelay


class SocketLink(asyncio.Protocol):
    """The socket side of one spliced stream; also the stream's sink once `start()`ed."""

    def __init__(self, stream: Stream) -> None:
        self._stream = stream
        self._transport: asyncio.Transport | None = None
        self._tls = False
        self._pending: memoryview | None = None
        """Socket bytes the stream's window has not taken yet (reading is paused meanwhile)."""
        self._socket_eof = False
        self._socket_eof_sent = False
        self._stream_eof = False
        self._lost = False
        self.done: asyncio.Future[BaseException | None] = asyncio.get_running_loop().create_future()
        """None once both directions ended cleanly, else the error that ended the splice."""

    def start(self) -> None:
        self._stream.attach(self)

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()

    async def run(self) -> None:
        """Splice until both directions end; an error resets the stream (CANCEL), and a
        cancelled caller aborts the socket so the peer sees the splice end at once."""
        self.start()
        try:
            error = await self.done
        except BaseException:
            self.abort()
            raise
        if error is not None:
            self._stream.reset(ErrorCode.CANCEL, str(error))

    def _finish(self, error: BaseException | None) -> None:
        # The splice is over: drop the stream's way back to us and the error's traceback. Both
        # are reference cycles through this link (whose frames are on the traceback), and a
        # cycle keeps the socket (a TLS transport: a 256 KiB buffer plus OpenSSL's) until the
        # next full garbage collection: RSS grew by hundreds of MiB under connection churn.
        self._stream.detach()
        if not self.done.done():
            self.done.set_result(None if error is None else error.with_traceback(None))
        if self._transport is not None:
            if error is not None:
                self._transport.abort()
            elif not self._transport.is_closing():
                self._transport.close()  # flushes what is buffered first

    # ---- the socket (asyncio.Protocol) ---------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A cast: uvloop's TLS transport is no asyncio.Transport subclass.
        self._transport = cast(asyncio.Transport, transport)
        self._tls = transport.get_extra_info("sslcontext") is not None
        set_nodelay(transport)

    def data_received(self, data: bytes | memoryview) -> None:
        # Straight into the stream (also the rest of a partly taken chunk, from
        # stream_writable): the edge's send path per response, so no helper call.
        try:
            taken = self._stream.send_nowait(data)
        except TunnelError as exc:
            self._finish(exc)
            return
        if taken < len(data):
            self._pending = memoryview(data)[taken:]
            if self._transport is not None and not self._transport.is_closing():
                self._transport.pause_reading()

    def eof_received(self) -> bool:
        self._socket_eof = True
        if self._pending is None:
            self._pass_socket_eof()
        # TCP: keep the socket open for writing. TLS cannot (asyncio closes it; saying so
        # would only log a warning). Known from connection_made: asyncio's TLS transport has
        # no extra info left once closed (the EOF can come after our close).
        return not self._tls

    def connection_lost(self, exc: Exception | None) -> None:
        if exc is not None:
            self._stream.reset(ErrorCode.CANCEL, f"connection lost: {exc}")
            self._finish(exc)
            return
        # Closed (TLS closes on EOF): over once the socket's last bytes and EOF are passed on.
        self._lost = self._socket_eof = True
        if self._pending is None:
            self._pass_socket_eof()

    def pause_writing(self) -> None:
        self._stream.pause_receiving()

    def resume_writing(self) -> None:
        self._stream.resume_receiving()

    # ---- the stream (StreamSink) ---------------------------------------------------------

    def stream_data(self, data: bytes) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(data)

    def stream_eof(self) -> None:
        self._stream_eof = True
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        if transport.can_write_eof():
            transport.write_eof()
            if self._socket_eof_sent:
                self._pass_socket_eof()
        else:
            # TLS cannot carry a half-close: the exchange ends here (front_splice semantics).
            self._stream.close()
            self._finish(None)

    def stream_failed(self, error: TunnelError) -> None:
        self._finish(error)

    def stream_writable(self) -> None:
        pending, self._pending = self._pending, None
        if pending is None:
            return
        if self._transport is not None and not self._transport.is_closing():
            self._transport.resume_reading()
        self.data_received(pending)
        if self._pending is None and self._socket_eof:
            self._pass_socket_eof()

    # ---- internals ----------------------------------------------------------------------

    def _pass_socket_eof(self) -> None:
        if not self._socket_eof_sent:
            self._socket_eof_sent = True
            try:
                self._stream.write_eof()
            except TunnelError as exc:
                self._finish(exc)
                return
        if self._stream_eof or self._lost:
            self._stream.close()  # a closed socket takes no more: drop what still comes
            self._finish(None)
