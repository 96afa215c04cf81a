"""Sans-IO multiplexing connection of the L7 tunnel (no sockets, no asyncio, no clock).

`Connection` turns bytes from the peer into events (`receive_data`) and API calls into bytes to
send (`data_to_send`), in the style of h2. Its flow control is what keeps one slow reader from
stalling the others (the flaw of konnectivity's single gRPC stream): a stream's window is only
reopened when its consumer calls `acknowledge_received`, so unread bytes pile up against that
stream's window only, and never beyond it.

Faults by the peer in one stream's frame reset that stream; faults that leave the byte stream or
the shared state in doubt (garbage, connection window overflow, unknown streams) queue a GOAWAY
and raise RemoteProtocolError, after which the connection is dead.

Small requests make the per-frame Python work a large share of the proxy's CPU, so the DATA
frame has fast paths here (`send_data`, `_handle_frames`, `acknowledge_received`): the same
checks inline, falling back to the general code for anything unusual. protocol_inbound holds
that general receive path; tests/l7proxy/test_fast_paths.py holds the two to the same results.
"""

from __future__ import annotations

from ravend.l7proxy import protocol_frames as F
from ravend.l7proxy.protocol_errors import LocalProtocolError, RemoteProtocolError
from ravend.l7proxy.protocol_events import DataReceived, Event
from ravend.l7proxy.protocol_frames import ErrorCode, FrameType, ProtocolSettings, Target
from ravend.l7proxy.protocol_inbound import InboundFrames
from ravend.l7proxy.protocol_state import (
    RECEIVING,
    SENDING,
    Role,
    StreamInput,
    StreamRecord,
    StreamState,
)
from ravend.l7proxy.protocol_state import next_state as _next_state

__all__ = ["Connection", "Role"]

_SEND_FIN = StreamInput.SEND_FIN
_DATA = int(FrameType.DATA)
_HEADER_SIZE = F.HEADER_SIZE
_pack_header = F.HEADER.pack
_unpack_header = F.HEADER.unpack_from


class Connection(InboundFrames):
    """One multiplexed tunnel connection, either end. Not thread-safe; no I/O.

    The API, and the per-frame fast paths (sending and receiving DATA); the general receive
    path, for every other frame, is the base class (protocol_inbound)."""

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
        self._peer_max_frame = F.MIN_FRAME_SIZE
        self._recv_window = self.local_settings.connection_window
        self._conn_to_grant = 0
        # Window updates are batched: one per quarter window consumed (see acknowledge_received).
        self._stream_grant_at = self.local_settings.initial_window // 4
        self._conn_grant_at = self.local_settings.connection_window // 4

    # ---- introspection -------------------------------------------------------------------

    @property
    def connection_send_window(self) -> int:
        return self._send_window

    def send_window(self, stream_id: int) -> int:
        """How many bytes `send_data` would take right now on this stream."""
        stream = self._streams.get(stream_id)
        if stream is None or stream.state not in SENDING:
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
        stream = self._streams.get(stream_id)
        size = len(data)
        # The common case inline, as it runs for every DATA frame: an open stream, and all of
        # `data` fits both windows and one frame. Anything else takes the general path.
        if (
            stream is not None
            and 0 < size <= stream.send_window
            and size <= self._send_window
            and size <= self._peer_max_frame
            and stream.state in SENDING
            and not self.closed
        ):
            stream.send_window -= size
            self._send_window -= size
            whole = data if isinstance(data, bytes) else bytes(data)
            self._out += (_pack_header(size, _DATA, 0, stream_id), whole)
            return size
        return self._send_data_split(stream_id, data)

    def _send_data_split(self, stream_id: int, data: bytes | bytearray | memoryview) -> int:
        """`send_data` in general: partly (a window is short), or in several frames."""
        stream = self._sendable(stream_id)
        taken = min(len(data), stream.send_window, self._send_window)
        if taken == 0:
            return 0
        stream.send_window -= taken
        self._send_window -= taken
        size = self._peer_max_frame
        view = memoryview(data)
        # Slices of immutable bytes can be queued as views (one copy less, in the final join);
        # a mutable buffer must be copied now, since the caller may reuse it.
        immutable = isinstance(data, bytes) or (view.readonly and isinstance(view.obj, bytes))
        for start in range(0, taken, size):
            piece = view[start : min(start + size, taken)]
            chunk = piece if immutable else bytes(piece)
            self._out += (_pack_header(len(chunk), _DATA, 0, stream_id), chunk)
        return taken

    def acknowledge_received(self, stream_id: int, count: int) -> bool:
        """The consumer has used `count` bytes of the stream: reopen the windows by as much.
        Returns whether that queued a WINDOW_UPDATE (something for `data_to_send`).

        Bytes of a stream that was reset were already returned to the connection window, so
        acknowledging them afterwards is a harmless no-op.
        """
        stream = self._streams.get(stream_id)
        if stream is None or count <= 0:
            if count < 0:
                raise LocalProtocolError("cannot acknowledge a negative count")
            return False
        if count > stream.unacked:
            raise LocalProtocolError(f"stream {stream_id}: acknowledging more than received")
        stream.unacked -= count
        stream.to_grant += count
        self._conn_to_grant += count
        # Batched so that a stream of small reads costs one WINDOW_UPDATE per quarter window:
        # most calls end after these two comparisons (this runs for every DATA frame).
        queued = False
        if stream.to_grant >= self._stream_grant_at and stream.state in RECEIVING:
            self._grant_stream(stream_id, stream)
            queued = True
        if self._conn_to_grant >= self._conn_grant_at and not self.closed:
            self._grant_connection()
            queued = True
        if stream.state is StreamState.CLOSED and not stream.unacked:
            del self._streams[stream_id]
        return queued

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
        reader = self._reader
        try:
            with memoryview(data) as view:
                pos = self._complete_partial(view, events) if reader.partial else 0
                end = len(view)
                if pos < end and not self.closed:
                    pos = self._handle_frames(view, pos, events)
                    if pos < end and not self.closed:
                        reader.keep(view[pos:])
        except RemoteProtocolError as exc:
            self.go_away(exc.code or ErrorCode.PROTOCOL_ERROR, str(exc))
            reader.clear()
            exc.events_before = list(events)
            raise
        return events

    def _complete_partial(self, view: memoryview, events: list[Event]) -> int:
        """Complete the frame the last chunk left incomplete; return the bytes used (all of
        `view` while the frame is still incomplete)."""
        used, frame = self._reader.complete(view, self.remote_settings is None)
        if frame is not None:
            self._handle(frame[0], frame[1], frame[2], frame[3], events)
        return used

    def _handle_frames(self, view: memoryview, pos: int, events: list[Event]) -> int:
        """Handle the complete frames of `view` from `pos`; return where the rest starts.

        A DATA frame that an open stream's windows admit is handled inline, in this loop: the
        same checks and bookkeeping as parse_frame and _on_data, without their calls (the
        per-frame cost that dominates small requests). Every other frame takes the general
        path, which also raises the errors. A GOAWAY with an error ends the loop: the rest
        is not looked at.
        """
        end = len(view)
        limit = self._reader.max_frame_size
        streams = self._streams
        while end - pos >= _HEADER_SIZE:
            length, ftype, flags, sid = _unpack_header(view, pos)
            stop = pos + _HEADER_SIZE + length
            if (
                ftype == _DATA
                and stop <= end
                and 0 < length <= limit
                and length <= self._recv_window
                and (stream := streams.get(sid)) is not None
                and length <= stream.recv_window
                and stream.state in RECEIVING
                and self.remote_settings is not None  # else: DATA before HELLO, a fault
            ):
                self._recv_window -= length
                stream.recv_window -= length
                stream.unacked += length
                # The one copy: the payload must outlive a reused receive buffer.
                events.append(DataReceived(sid, bytes(view[pos + _HEADER_SIZE : stop])))
                pos = stop
                continue
            frame = F.parse_frame(view, pos, limit, self.remote_settings is None)
            if frame is None:
                return pos
            self._handle(ftype, flags, sid, frame[3], events)
            if self.closed:
                return end
            pos = stop
        return pos
