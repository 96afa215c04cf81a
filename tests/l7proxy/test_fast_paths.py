"""The per-frame fast paths of the tunnel: they must be indistinguishable from the general ones.

`Connection.send_data` and the receive loop handle the common DATA frame inline; everything else
goes through the general code. These tests pin that the two give the same bytes, the same
events and the same windows, and that flow control still stops a sender at exactly the window.
`TunnelProtocol.write` corks writes made in one loop iteration: order and flushing are checked.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, cast

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ravend.l7proxy import protocol_frames as F
from ravend.l7proxy.protocol import Connection, Role
from ravend.l7proxy.protocol_errors import RemoteProtocolError
from ravend.l7proxy.protocol_events import DataReceived, Event, StreamOpened, StreamReset
from ravend.l7proxy.protocol_frames import ErrorCode, FrameType, ProtocolSettings, Target
from ravend.l7proxy.protocol_inbound import InboundFrames
from ravend.l7proxy.tunnel_stream import Stream, TunnelError
from ravend.l7proxy.tunnel_transport import TunnelProtocol

if TYPE_CHECKING:
    from ravend.l7proxy.tunnel_session import TunnelSession

SMALL = ProtocolSettings(max_frame_size=1024, initial_window=4096, connection_window=10_000)
NODE = Target("edge-1", 10250)


def hello_pair(server_settings: ProtocolSettings = SMALL) -> tuple[Connection, Connection]:
    client, server = Connection(Role.CLIENT), Connection(Role.SERVER, server_settings)
    server.receive_data(client.data_to_send())
    client.receive_data(server.data_to_send())
    return client, server


def state(conn: Connection, sids: list[int]) -> tuple[object, ...]:
    """What a Connection would do next: its windows and stream states, seen from outside."""
    streams = tuple((conn.stream_state(s), conn.send_window(s)) for s in sids)
    return (conn.connection_send_window, conn.closed, streams, conn.data_to_send())


def frames_of(wire: bytes) -> list[tuple[int, int, int, bytes]]:
    out, pos = [], 0
    while pos < len(wire):
        length, ftype, flags, sid = F.HEADER.unpack_from(wire, pos)
        out.append((ftype, flags, sid, wire[pos + F.HEADER_SIZE : pos + F.HEADER_SIZE + length]))
        pos += F.HEADER_SIZE + length
    return out


# ---- sending --------------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.integers(0, 3000), min_size=1, max_size=12),
    st.sampled_from([bytes, bytearray, memoryview]),
)
def test_sent_bytes_are_frames_of_the_peer_max_size_up_to_the_window(
    sizes: list[int], kind: type[Any]
) -> None:
    """Whichever path send_data takes, the wire holds DATA frames of at most the peer's frame
    size, carrying exactly the bytes taken, and the windows shrink by exactly as much."""
    client, _ = hello_pair()
    sid = client.open_stream(NODE)
    client.data_to_send()
    window, sent = SMALL.initial_window, b""
    for n, size in enumerate(sizes):
        payload = bytes([n % 251]) * size
        buffer = kind(bytearray(payload) if kind is not bytes else payload)
        taken = client.send_data(sid, buffer)
        assert taken == min(size, window)
        if isinstance(buffer, bytearray):
            buffer[:] = b"\xff" * len(buffer)  # the caller reuses its buffer: already copied
        window -= taken
        sent += payload[:taken]
        assert client.send_window(sid) == window
    frames = frames_of(client.data_to_send())
    assert all(f[:3] == (FrameType.DATA, 0, sid) for f in frames)
    assert all(0 < len(f[3]) <= SMALL.max_frame_size for f in frames)
    assert b"".join(f[3] for f in frames) == sent


def test_a_write_of_exactly_the_window_is_taken_and_one_byte_more_stops_there() -> None:
    client, _ = hello_pair()
    first, second = client.open_stream(NODE), client.open_stream(NODE)
    assert client.send_data(first, b"a" * 1000) == 1000  # one frame: the fast path
    assert client.send_data(first, b"b" * (SMALL.initial_window - 1000)) == 3096
    assert client.send_data(first, b"c") == 0
    # The connection window (10 000) is the limit now, for another stream: 4096 + 5904.
    assert client.send_data(second, b"d" * 1024) == 1024
    assert client.send_data(second, b"e" * 3072) == 3072
    assert client.connection_send_window == 10_000 - 4096 - 4096
    assert client.send_data(client.open_stream(NODE), b"f" * 5000) == 1808


# ---- receiving ------------------------------------------------------------------------------

op = st.one_of(
    st.tuples(st.just("send"), st.integers(0, 2), st.integers(0, 2500)),
    st.tuples(st.just("fin"), st.integers(0, 2), st.just(0)),
    st.tuples(st.just("reset"), st.integers(0, 2), st.just(0)),
    st.tuples(st.just("rogue"), st.integers(0, 2), st.integers(0, 5000)),
)


def script(ops: list[tuple[str, int, int]]) -> tuple[bytes, list[int]]:
    """A client's bytes for `ops`, including DATA frames that break the windows or the state
    (hand-made: the client's own API would refuse them)."""
    client = Connection(Role.CLIENT)
    client.receive_data(Connection(Role.SERVER, SMALL).data_to_send())
    wire = client.data_to_send()  # its HELLO
    sids = [client.open_stream(NODE) for _ in range(3)]
    for kind, index, size in ops:
        sid = sids[index]
        if kind == "send" and client.send_window(sid):
            client.send_data(sid, b"s" * size)
        elif kind == "fin" and client.send_window(sid):
            client.half_close(sid)
        elif kind == "reset":
            client.reset(sid)
        elif kind == "rogue":
            wire += client.data_to_send() + F.encode_frame(FrameType.DATA, sid, b"r" * size)
    return wire + client.data_to_send(), sids


def receive(chunks: list[bytes]) -> tuple[list[Event], Connection]:
    server = Connection(Role.SERVER, ProtocolSettings(max_frame_size=4096, initial_window=4096))
    events: list[Event] = []
    try:
        for chunk in chunks:
            events += server.receive_data(chunk)
    except RemoteProtocolError as exc:
        events += [*exc.events_before, StreamReset(0, exc.code, "connection fault")]  # type: ignore[list-item]
    return events, server


@settings(max_examples=300, deadline=None)
@given(st.lists(op, max_size=25))
def test_inline_data_path_equals_the_general_path(ops: list[tuple[str, int, int]]) -> None:
    """One chunk takes the inline DATA path; byte by byte every frame is completed from the
    kept partial and handled by the general path (_on_data). Same events, frame for frame,
    and the same state and bytes to send afterwards, also when a DATA frame breaks a rule."""
    wire, sids = script(ops)
    whole, fast = receive([wire])
    pieces, slow = receive([wire[i : i + 1] for i in range(len(wire))])
    assert sum(isinstance(e, StreamOpened) for e in whole) == 3  # no early connection fault
    assert whole == pieces
    # The bookkeeping behind the windows too (what the peer may still send, unacked bytes).
    assert fast._streams == slow._streams
    assert fast._recv_window == slow._recv_window
    for conn in (fast, slow):
        for event in whole:
            if isinstance(event, DataReceived) and conn.stream_state(event.stream_id):
                conn.acknowledge_received(event.stream_id, len(event.data))
    assert state(fast, sids) == state(slow, sids)


def test_the_inline_path_is_the_one_taken_for_admitted_data(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Guards the test above: it compares two different paths only if one chunk skips
    _on_data for DATA that the windows admit."""
    general: list[int] = []
    on_data = InboundFrames._on_data

    def counting(self: InboundFrames, sid: int, payload: bytes, ev: list[Event]) -> None:
        general.append(sid)
        on_data(self, sid, payload, ev)

    monkeypatch.setattr(InboundFrames, "_on_data", counting)
    wire, _ = script([("send", 0, 100), ("send", 1, 2000)])
    assert [e for e in receive([wire])[0] if isinstance(e, DataReceived)]
    assert general == []
    receive([wire[i : i + 1] for i in range(len(wire))])
    assert general


def test_data_of_exactly_the_window_is_taken_and_one_byte_more_resets() -> None:
    client, server = hello_pair()
    sid = client.open_stream(NODE)
    server.receive_data(client.data_to_send())
    exact = server.receive_data(F.encode_frame(FrameType.DATA, sid, b"x" * 1024) * 4)
    assert sum(len(e.data) for e in exact if isinstance(e, DataReceived)) == 4096
    over = server.receive_data(F.encode_frame(FrameType.DATA, sid, b"y"))
    assert [(type(e), e.code) for e in over] == [(StreamReset, ErrorCode.FLOW_CONTROL_ERROR)]  # type: ignore[attr-defined]


def test_data_before_the_peer_hello_is_a_fault_even_on_an_open_stream() -> None:
    server = Connection(Role.SERVER)
    sid = server.open_stream(NODE)  # allowed before the peer's HELLO; its DATA is not
    with pytest.raises(RemoteProtocolError, match="HELLO must come first"):
        server.receive_data(F.encode_frame(FrameType.DATA, sid, b"early"))


def test_acknowledge_says_when_it_queued_a_window_update() -> None:
    client, server = hello_pair()
    sid = client.open_stream(NODE)
    client.send_data(sid, b"z" * 4096)
    server.receive_data(client.data_to_send())
    server.data_to_send()
    assert server.acknowledge_received(sid, 1023) is False  # below a quarter window
    assert server.data_to_send() == b""
    assert server.acknowledge_received(sid, 1) is True
    assert frames_of(server.data_to_send()) == [
        (FrameType.WINDOW_UPDATE, 0, sid, F.encode_u32(1024))
    ]
    assert server.acknowledge_received(99, 5) is False  # a stream long gone: a no-op


# ---- corking --------------------------------------------------------------------------------


class RecordingTransport:
    def __init__(self) -> None:
        self.writes: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.writes.append(bytes(data))

    def is_closing(self) -> bool:
        return False

    def get_extra_info(self, name: str, default: object = None) -> object:
        return default

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass


async def test_writes_of_one_loop_iteration_are_corked_in_order_and_flushed() -> None:
    proto = TunnelProtocol()
    transport = RecordingTransport()
    proto.connection_made(transport)  # type: ignore[arg-type]
    proto.write([b"a"])  # the first of an iteration goes out at once
    proto.write([b"b", memoryview(b"c")])
    proto.write([b"d"])
    assert transport.writes == [b"a"]
    await asyncio.sleep(0)  # the end of the iteration flushes the corked ones, as one write
    assert transport.writes == [b"a", b"bcd"]
    await asyncio.sleep(0)
    proto.write([b"e"])  # a new iteration: at once again
    proto.write([b"f"])
    proto.write_now(b"g")  # the handshake path: whatever is corked goes first
    assert transport.writes == [b"a", b"bcd", b"e", b"fg"]
    await asyncio.sleep(0)
    assert transport.writes == [b"a", b"bcd", b"e", b"fg"]


# ---- a stream's share of the acknowledgements ----------------------------------------------


class ConsumedLog:
    """The part of a TunnelSession a Stream calls back when its consumer frees window."""

    def __init__(self) -> None:
        self.consumed: list[tuple[int, int]] = []

    def _consumed(self, stream_id: int, count: int) -> None:
        self.consumed.append((stream_id, count))

    def _half_close(self, stream_id: int) -> None:
        pass


class PausingSink:
    def __init__(self, stream: Stream, pause_after: int) -> None:
        self.stream, self.left, self.got = stream, pause_after, b""

    def stream_data(self, data: bytes) -> None:
        self.got += data
        self.left -= 1
        if self.left == 0:
            self.stream.pause_receiving()  # its consumer is full: hold the window from here

    def stream_eof(self) -> None: ...

    def stream_failed(self, error: TunnelError) -> None: ...

    def stream_writable(self) -> None: ...


def test_feed_says_whether_the_session_acknowledges_at_once() -> None:
    """The session acknowledges what `_feed` reports as consumed, in the same receive call
    (no call back per frame); what a paused sink holds waits for `resume_receiving`, and what
    a reader has not read yet waits for `read`."""
    log = ConsumedLog()
    reader = Stream(cast("TunnelSession", log), 1, NODE)
    assert reader._feed(b"unread") is False  # buffered for read(): acknowledged when read
    spliced = Stream(cast("TunnelSession", log), 3, NODE)
    sink = PausingSink(spliced, pause_after=2)
    spliced.attach(sink)
    assert spliced._feed(b"one") is True
    assert spliced._feed(b"two") is False  # the sink paused while taking it
    assert spliced._feed(b"three") is False
    assert (sink.got, log.consumed) == (b"onetwothree", [])
    spliced.resume_receiving()
    assert log.consumed == [(3, 8)]
    spliced.close()  # discarding from now on: dropped bytes are acknowledged at once
    assert spliced._feed(b"late") is True
    assert sink.got == b"onetwothree"
