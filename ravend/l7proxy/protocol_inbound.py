"""How each received frame changes a tunnel `Connection`: the general receive path. Pure, no I/O.

`InboundFrames` is the base of `protocol.Connection`: the state both share is declared here,
set up by `Connection.__init__`. `Connection` takes the bytes apart and handles the common DATA
frame inline; every other frame, and every DATA frame that breaks a rule, comes here, where the
faults are judged: a stream-level fault resets the stream (RESET queued, StreamReset event), a
connection-level one raises RemoteProtocolError.
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
from ravend.l7proxy.protocol_frames import ErrorCode, FrameType, ProtocolSettings
from ravend.l7proxy.protocol_state import (
    RECEIVING,
    SENDING,
    Role,
    StreamInput,
    StreamRecord,
    StreamState,
)
from ravend.l7proxy.protocol_state import next_state as _next_state

_RECV_FIN = StreamInput.RECV_FIN


class InboundFrames:
    """Frame handlers and shared helpers of `Connection` (see there for the attributes)."""

    role: Role
    local_settings: ProtocolSettings
    remote_settings: ProtocolSettings | None
    goaway_received: int | None
    goaway_sent: bool
    closed: bool
    _out: list[bytes | memoryview]
    _streams: dict[int, StreamRecord]
    _next_id: int
    _highest_remote: int
    _open: list[int]
    _send_window: int
    _peer_max_frame: int
    _recv_window: int
    _conn_to_grant: int
    _conn_grant_at: int

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
        self._peer_max_frame = settings.max_frame_size
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
        if self.goaway_sent or self._open[False] >= limit:
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
        if stream is None or stream.state not in RECEIVING or size > stream.recv_window:
            # Nobody will consume these bytes: give them back to the connection at once.
            self._credit_connection(size)
            if stream is not None:
                code = ErrorCode.STREAM_CLOSED
                if stream.state in RECEIVING:
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
        elif stream.state in SENDING:
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

    # ---- helpers (of both sides) -----------------------------------------------------------

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
        if stream.state not in SENDING:
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
        if self._conn_to_grant >= self._conn_grant_at and not self.closed:
            self._grant_connection()

    def _grant_connection(self) -> None:
        self._recv_window += self._conn_to_grant
        self._out.append(
            F.encode_frame(FrameType.WINDOW_UPDATE, 0, F.encode_u32(self._conn_to_grant))
        )
        self._conn_to_grant = 0

    def _grant_stream(self, sid: int, stream: StreamRecord) -> None:
        stream.recv_window += stream.to_grant
        self._out.append(
            F.encode_frame(FrameType.WINDOW_UPDATE, sid, F.encode_u32(stream.to_grant))
        )
        stream.to_grant = 0
