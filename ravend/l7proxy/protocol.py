"""Sans-IO multiplexing connection of the L7 tunnel (no sockets, no asyncio, no clock).

`Connection` turns bytes from the peer into events (`receive_data`) and API calls into bytes to
send (`data_to_send`), in the style of h2. Its flow control is what keeps one slow reader from
stalling the others (the flaw of konnectivity's single gRPC stream): a stream's window is only
reopened when its consumer calls `acknowledge_received`, so unread bytes pile up against that
stream's window only, and never beyond it.

Faults by the peer in one stream's frame reset that stream; faults that leave the byte stream or
the shared state in doubt (garbage, connection window overflow, unknown streams) queue a GOAWAY
and raise RemoteProtocolError, after which the connection is dead.
"""

from __future__ import annotations

from ravend.l7proxy import protocol_frames as F
from ravend.l7proxy.protocol_errors import LocalProtocolError, RemoteProtocolError
from ravend.l7proxy.protocol_events import (
    ConnectionTerminated,
    DataReceived,
    Event,
    GoAwayReceived,
    PingReceived,
    PongReceived,
    SettingsReceived,
    StreamHalfClosed,
    StreamOpened,
    StreamReset,
    WindowUpdated,
)
from ravend.l7proxy.protocol_frames import ErrorCode, FrameType, ProtocolSettings, Target
from ravend.l7proxy.protocol_state import (
    Role,
    StreamInput,
    StreamRecord,
    StreamState,
    can_receive,
    can_send,
)
from ravend.l7proxy.protocol_state import next_state as _next_state

__all__ = ["Connection", "Role"]

_SEND_FIN, _RECV_FIN = StreamInput.SEND_FIN, StreamInput.RECV_FIN


class Connection:
    """One multiplexed tunnel connection, either end. Not thread-safe; no I/O."""

    def __init__(self, role: Role, settings: ProtocolSettings | None = None) -> None:
        self.role = role
        self.local_settings = settings or ProtocolSettings()
        self.remote_settings: ProtocolSettings | None = None
        self.goaway_received: int | None = None
        """The last stream id the peer said it processed, once it sent GOAWAY."""
        self.goaway_sent = False
        self.closed = False
        self._out: list[bytes | memoryview] = [F.encode_hello(self.local_settings)]
        self._reader = F.FrameReader(self.local_settings.max_frame_size)
        self._streams: dict[int, StreamRecord] = {}
        self._next_id = 1 if role is Role.CLIENT else 2
        self._highest_remote = 0
        self._open = [0, 0]
        """Streams not CLOSED, indexed by "opened by us" (False: by the peer, True: by us)."""
        # Until the peer's HELLO says otherwise, it has granted us nothing.
        self._send_window = 0
        self._recv_window = self.local_settings.connection_window
        self._conn_to_grant = 0

    # ---- introspection -------------------------------------------------------------------

    @property
    def connection_send_window(self) -> int:
        return self._send_window

    def send_window(self, stream_id: int) -> int:
        """How many bytes `send_data` would take right now on this stream."""
        stream = self._streams.get(stream_id)
        if stream is None or not can_send(stream.state):
            return 0
        return min(stream.send_window, self._send_window)

    def stream_state(self, stream_id: int) -> StreamState | None:
        stream = self._streams.get(stream_id)
        return stream.state if stream else None

    def open_stream_count(self, *, local: bool) -> int:
        # Counted as streams open and close, not by a scan: asked on every open_stream, with
        # up to max_concurrent_streams (1024) streams alive.
        return self._open[local]

    @property
    def can_open_stream(self) -> bool:
        limit = self.remote_settings.max_concurrent_streams if self.remote_settings else None
        return (
            not self.closed
            and self.goaway_received is None
            and (limit is None or self.open_stream_count(local=True) < limit)
        )

    # ---- sending side --------------------------------------------------------------------

    def data_to_send(self) -> bytes:
        """Everything queued for the peer since the last call (may be empty)."""
        return b"".join(self.data_to_send_parts())

    def data_to_send_parts(self) -> list[bytes | memoryview]:
        """Like `data_to_send`, as the queued pieces: a transport that batches several calls
        into one write joins them once, instead of once here and again there."""
        out, self._out = self._out, []
        return out

    def open_stream(self, target: Target) -> int:
        if not self.can_open_stream:
            raise LocalProtocolError("cannot open a stream now (closed, going away or at limit)")
        try:
            payload, flags = F.encode_open_payload(target)
        except ValueError as exc:
            raise LocalProtocolError(str(exc)) from None
        if len(payload) > self._peer_max_frame:
            raise LocalProtocolError("OPEN metadata larger than the peer's max frame size")
        stream_id = self._next_id
        if stream_id > F.MAX_STREAM_ID:
            raise LocalProtocolError("stream ids exhausted; open a new connection")
        self._next_id += 2
        peer_window = self.remote_settings.initial_window if self.remote_settings else 0
        self._streams[stream_id] = StreamRecord(
            StreamState.OPEN, peer_window, self.local_settings.initial_window
        )
        self._open[True] += 1
        self._out.append(F.encode_frame(FrameType.OPEN, stream_id, payload, flags))
        return stream_id

    def send_data(self, stream_id: int, data: bytes | bytearray | memoryview) -> int:
        """Queue as much of `data` as the windows allow; return how many bytes were taken."""
        stream = self._sendable(stream_id)
        taken = min(len(data), stream.send_window, self._send_window)
        if taken == 0:
            return 0
        stream.send_window -= taken
        self._send_window -= taken
        size = self._peer_max_frame
        if taken == len(data) <= size:  # the common case: one frame, no slicing
            whole = data if isinstance(data, bytes) else bytes(data)
            self._out += (F.HEADER.pack(taken, FrameType.DATA, 0, stream_id), whole)
            return taken
        view = memoryview(data)
        # Slices of immutable bytes can be queued as views (one copy less, in the final join);
        # a mutable buffer must be copied now, since the caller may reuse it.
        immutable = isinstance(data, bytes) or (view.readonly and isinstance(view.obj, bytes))
        for start in range(0, taken, size):
            piece = view[start : min(start + size, taken)]
            chunk = piece if immutable else bytes(piece)
            self._out += (F.encode_header(len(chunk), FrameType.DATA, 0, stream_id), chunk)
        return taken

    def acknowledge_received(self, stream_id: int, count: int) -> None:
        """The consumer has used `count` bytes of the stream: reopen the windows by as much.

        Bytes of a stream that was reset were already returned to the connection window, so
        acknowledging them afterwards is a harmless no-op.
        """
        if count < 0:
            raise LocalProtocolError("cannot acknowledge a negative count")
        stream = self._streams.get(stream_id)
        if stream is None or count == 0:
            return
        if count > stream.unacked:
            raise LocalProtocolError(f"stream {stream_id}: acknowledging more than received")
        stream.unacked -= count
        stream.to_grant += count
        # Batch updates so a stream of small reads costs one WINDOW_UPDATE per quarter window.
        if can_receive(stream.state) and stream.to_grant >= self.local_settings.initial_window // 4:
            stream.recv_window += stream.to_grant
            self._out.append(
                F.encode_frame(FrameType.WINDOW_UPDATE, stream_id, F.encode_u32(stream.to_grant))
            )
            stream.to_grant = 0
        self._credit_connection(count)
        self._forget_if_done(stream_id, stream)

    def half_close(self, stream_id: int) -> None:
        stream = self._stream_for_local(stream_id)
        self._set_state(stream_id, stream, _next_state(stream_id, stream.state, _SEND_FIN))
        self._out.append(F.encode_frame(FrameType.HALF_CLOSE, stream_id))
        self._forget_if_done(stream_id, stream)

    def reset(self, stream_id: int, code: int = ErrorCode.CANCEL, reason: str = "") -> None:
        """Abort a stream both ways; a no-op on a stream that is already gone."""
        stream = self._streams.get(stream_id)
        if stream is None or self.closed:
            return
        if stream.state is not StreamState.CLOSED:
            self._out.append(F.encode_reset(stream_id, code, reason))
        self._drop(stream_id)

    def ping(self, payload: bytes) -> None:
        if len(payload) != F.PING_SIZE:
            raise LocalProtocolError("ping payload must be 8 bytes")
        self._out.append(F.encode_frame(FrameType.PING, 0, payload))

    def go_away(self, code: int = ErrorCode.NO_ERROR, reason: str = "") -> None:
        """Refuse new streams from now on; with an error code, also end the connection."""
        if self.closed:
            return
        self.goaway_sent = True
        self._out.append(F.encode_goaway(self._highest_remote, code, reason))
        if code != ErrorCode.NO_ERROR:
            self.closed = True
            self._forget_all()

    # ---- receiving side ------------------------------------------------------------------

    def receive_data(self, data: bytes | bytearray | memoryview) -> list[Event]:
        """Feed bytes from the peer; return the events they complete (possibly none).

        `data` is only read during the call (a transport may reuse its buffer afterwards).
        Raises RemoteProtocolError (with `events_before`) on a connection-fatal fault, after
        queueing a GOAWAY that explains it. Bytes received after the end are ignored.
        """
        events: list[Event] = []
        if self.closed:
            return events
        try:
            self._handle_all(data, events)
        except RemoteProtocolError as exc:
            self.go_away(exc.code or ErrorCode.PROTOCOL_ERROR, str(exc))
            self._reader.clear()
            exc.events_before = list(events)
            raise
        return events

    def _handle_all(self, data: bytes | bytearray | memoryview, events: list[Event]) -> None:
        for ftype, flags, sid, payload, _ in self._reader.frames(data, self._expect_hello):
            self._handle(ftype, flags, sid, payload, events)
            if self.closed:
                return  # a GOAWAY with an error: the rest is not looked at

    def _expect_hello(self) -> bool:
        return self.remote_settings is None

    def _handle(self, ftype: int, flags: int, sid: int, payload: bytes, ev: list[Event]) -> None:
        if ftype == FrameType.DATA:
            self._on_data(sid, payload, ev)
        elif ftype == FrameType.WINDOW_UPDATE:
            self._on_window_update(sid, payload, ev)
        elif ftype == FrameType.OPEN:
            self._on_open(sid, flags, payload, ev)
        elif ftype == FrameType.HALF_CLOSE:
            self._on_half_close(sid, payload, ev)
        elif ftype == FrameType.RESET:
            code, reason = F.decode_reset(payload)
            stream = self._known_stream(sid)
            if stream is not None and stream.state is not StreamState.CLOSED:
                ev.append(StreamReset(sid, code, reason, remote=True))
            if stream is not None:
                self._drop(sid)
        elif ftype in (FrameType.PING, FrameType.PONG):
            if len(payload) != F.PING_SIZE:
                raise RemoteProtocolError(
                    "PING payload must be 8 bytes", ErrorCode.FRAME_SIZE_ERROR
                )
            if ftype == FrameType.PING:
                self._out.append(F.encode_frame(FrameType.PONG, 0, payload))
                ev.append(PingReceived(payload))
            else:
                ev.append(PongReceived(payload))
        elif ftype == FrameType.GOAWAY:
            self._on_goaway(payload, ev)
        else:
            self._on_hello(payload, ev)

    def _on_hello(self, payload: bytes, ev: list[Event]) -> None:
        settings = F.decode_hello(payload)
        self.remote_settings = settings
        self._send_window = settings.connection_window
        for stream in self._streams.values():
            stream.send_window += settings.initial_window
        ev.append(SettingsReceived(settings))

    def _on_open(self, sid: int, flags: int, payload: bytes, ev: list[Event]) -> None:
        if self._is_local_id(sid) or sid <= self._highest_remote:
            raise RemoteProtocolError(f"OPEN with invalid or reused stream id {sid}")
        self._highest_remote = sid
        try:
            target = F.decode_open_payload(payload, flags)
        except RemoteProtocolError as exc:
            self._out.append(F.encode_reset(sid, exc.code, str(exc)))
            return
        limit = self.local_settings.max_concurrent_streams
        if self.goaway_sent or self.open_stream_count(local=False) >= limit:
            self._out.append(F.encode_reset(sid, ErrorCode.REFUSED_STREAM, "stream refused"))
            return
        assert self.remote_settings is not None  # guaranteed by _next_frame
        self._streams[sid] = StreamRecord(
            StreamState.OPEN,
            self.remote_settings.initial_window,
            self.local_settings.initial_window,
        )
        self._open[False] += 1
        ev.append(StreamOpened(sid, target))

    def _on_data(self, sid: int, payload: bytes, ev: list[Event]) -> None:
        size = len(payload)
        if size > self._recv_window:
            raise RemoteProtocolError("connection window exceeded", ErrorCode.FLOW_CONTROL_ERROR)
        self._recv_window -= size
        stream = self._known_stream(sid)
        if stream is None or not can_receive(stream.state) or size > stream.recv_window:
            # Nobody will consume these bytes: give them back to the connection at once.
            self._credit_connection(size)
            if stream is not None:
                code = ErrorCode.STREAM_CLOSED
                if can_receive(stream.state):
                    code = ErrorCode.FLOW_CONTROL_ERROR
                self._stream_error(sid, code, "DATA beyond window or after FIN", ev)
            return
        if size:
            stream.recv_window -= size
            stream.unacked += size
            ev.append(DataReceived(sid, payload))

    def _on_window_update(self, sid: int, payload: bytes, ev: list[Event]) -> None:
        increment = F.decode_u32(payload, "WINDOW_UPDATE")
        if sid == 0:
            self._send_window += increment
            if increment == 0 or self._send_window > F.MAX_WINDOW:
                raise RemoteProtocolError(
                    "bad connection WINDOW_UPDATE", ErrorCode.FLOW_CONTROL_ERROR
                )
            ev.append(WindowUpdated(0, increment))
            return
        stream = self._known_stream(sid)
        if stream is None:
            return
        stream.send_window += increment
        if increment == 0 or stream.send_window > F.MAX_WINDOW:
            self._stream_error(sid, ErrorCode.FLOW_CONTROL_ERROR, "bad WINDOW_UPDATE", ev)
        elif can_send(stream.state):
            ev.append(WindowUpdated(sid, increment))

    def _on_half_close(self, sid: int, payload: bytes, ev: list[Event]) -> None:
        stream = self._known_stream(sid)
        if stream is None:
            return
        if payload:
            self._stream_error(sid, ErrorCode.FRAME_SIZE_ERROR, "HALF_CLOSE with payload", ev)
            return
        try:
            self._set_state(sid, stream, _next_state(sid, stream.state, _RECV_FIN))
        except RemoteProtocolError as exc:
            self._stream_error(sid, exc.code, str(exc), ev)
            return
        ev.append(StreamHalfClosed(sid))
        self._forget_if_done(sid, stream)

    def _on_goaway(self, payload: bytes, ev: list[Event]) -> None:
        last, code, reason = F.decode_goaway(payload)
        self.goaway_received = (
            last if self.goaway_received is None else min(last, self.goaway_received)
        )
        ev.append(GoAwayReceived(last, code, reason))
        for sid in [s for s in self._streams if self._is_local_id(s) and s > last]:
            ev.append(StreamReset(sid, ErrorCode.REFUSED_STREAM, "not processed before GOAWAY"))
            self._drop(sid)
        if code != ErrorCode.NO_ERROR:
            for sid, stream in self._streams.items():
                if stream.state is not StreamState.CLOSED:
                    ev.append(StreamReset(sid, code, reason))
            ev.append(ConnectionTerminated(code, reason))
            self.closed = True
            self._forget_all()

    # ---- helpers -------------------------------------------------------------------------

    @property
    def _peer_max_frame(self) -> int:
        return self.remote_settings.max_frame_size if self.remote_settings else F.MIN_FRAME_SIZE

    def _is_local_id(self, sid: int) -> bool:
        return (sid % 2 == 1) == (self.role is Role.CLIENT)

    def _known_stream(self, sid: int) -> StreamRecord | None:
        """The stream, or None if it existed once; a never-opened id is a connection fault."""
        stream = self._streams.get(sid)
        if stream is None:
            seen = sid < self._next_id if self._is_local_id(sid) else sid <= self._highest_remote
            if not seen:
                raise RemoteProtocolError(f"frame for idle stream {sid}")
        return stream

    def _sendable(self, sid: int) -> StreamRecord:
        stream = self._stream_for_local(sid)
        if not can_send(stream.state):
            raise LocalProtocolError(f"stream {sid} is {stream.state.name}; cannot send")
        return stream

    def _stream_for_local(self, sid: int) -> StreamRecord:
        stream = self._streams.get(sid)
        if stream is None or self.closed:
            raise LocalProtocolError(f"stream {sid} is not open")
        return stream

    def _stream_error(self, sid: int, code: int, reason: str, ev: list[Event]) -> None:
        self._out.append(F.encode_reset(sid, code, reason))
        ev.append(StreamReset(sid, code, reason, remote=False))
        self._drop(sid)

    def _set_state(self, sid: int, stream: StreamRecord, state: StreamState) -> None:
        if state is StreamState.CLOSED and stream.state is not StreamState.CLOSED:
            self._open[self._is_local_id(sid)] -= 1
        stream.state = state

    def _forget_all(self) -> None:
        self._streams.clear()
        self._open = [0, 0]

    def _drop(self, sid: int) -> None:
        stream = self._streams.pop(sid)
        if stream.state is not StreamState.CLOSED:
            self._open[self._is_local_id(sid)] -= 1
        # Unread bytes of a dead stream will never be acknowledged: release them now.
        self._credit_connection(stream.unacked)

    def _forget_if_done(self, sid: int, stream: StreamRecord) -> None:
        if stream.state is StreamState.CLOSED and stream.unacked == 0:
            del self._streams[sid]

    def _credit_connection(self, count: int) -> None:
        self._conn_to_grant += count
        if self._conn_to_grant >= self.local_settings.connection_window // 4 and not self.closed:
            self._recv_window += self._conn_to_grant
            self._out.append(
                F.encode_frame(FrameType.WINDOW_UPDATE, 0, F.encode_u32(self._conn_to_grant))
            )
            self._conn_to_grant = 0
