"""Scripted exchanges between two sans-IO tunnel connections joined by a byte pipe."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from ravend.l7proxy import protocol_frames as F
from ravend.l7proxy.protocol import Connection, Role
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
from ravend.l7proxy.protocol_state import StreamState

Pump = Callable[[Connection, Connection], tuple[list[Event], list[Event]]]
Pair = Callable[..., tuple[Connection, Connection]]
KUBELET = Target("edge-1", 10250, tls=True, metadata=b"\x01trace")


def data_of(events: list[Event], sid: int) -> bytes:
    return b"".join(e.data for e in events if isinstance(e, DataReceived) and e.stream_id == sid)


def test_hello_exchange_reports_peer_settings() -> None:
    client = Connection(Role.CLIENT, ProtocolSettings(max_concurrent_streams=7))
    server = Connection(Role.SERVER)
    events = server.receive_data(client.data_to_send())
    assert events == [SettingsReceived(ProtocolSettings(max_concurrent_streams=7))]
    assert server.connection_send_window == ProtocolSettings().connection_window


def test_echo_round_trip_with_half_close(pair: Pair, pump: Pump) -> None:
    client, server = pair()
    sid = client.open_stream(KUBELET)
    assert client.send_data(sid, b"GET /pods HTTP/1.1\r\n\r\n") == 22
    client.half_close(sid)
    _, srv_events = pump(client, server)
    assert srv_events[0] == StreamOpened(sid, KUBELET)
    assert data_of(srv_events, sid) == b"GET /pods HTTP/1.1\r\n\r\n"
    assert srv_events[-1] == StreamHalfClosed(sid)
    server.acknowledge_received(sid, 22)
    server.send_data(sid, b"HTTP/1.1 200 OK\r\n\r\n")
    server.half_close(sid)
    cli_events, _ = pump(client, server)
    assert data_of(cli_events, sid) == b"HTTP/1.1 200 OK\r\n\r\n"
    assert cli_events[-1] == StreamHalfClosed(sid)
    client.acknowledge_received(sid, 19)
    # Both directions finished and every byte consumed: nothing is retained for the stream.
    assert client.stream_state(sid) is None
    assert server.stream_state(sid) is None


def test_both_sides_open_streams_with_disjoint_ids(pair: Pair, pump: Pump) -> None:
    client, server = pair()
    ids = [client.open_stream(KUBELET), server.open_stream(KUBELET), client.open_stream(KUBELET)]
    assert ids == [1, 2, 3]
    cli_events, srv_events = pump(client, server)
    assert [e.stream_id for e in srv_events if isinstance(e, StreamOpened)] == [1, 3]
    assert [e.stream_id for e in cli_events if isinstance(e, StreamOpened)] == [2]


def test_no_data_is_taken_before_the_peer_hello() -> None:
    client = Connection(Role.CLIENT)
    sid = client.open_stream(KUBELET)
    assert client.send_data(sid, b"early") == 0
    server = Connection(Role.SERVER)
    client.receive_data(server.data_to_send())
    assert client.send_data(sid, b"early") == 5


def test_large_write_is_split_into_frames_of_peer_max_size(pair: Pair, pump: Pump) -> None:
    client, server = pair(server_settings=ProtocolSettings(max_frame_size=4096))
    sid = client.open_stream(KUBELET)
    payload = bytes(range(256)) * 100
    assert client.send_data(sid, payload) == len(payload)
    _, events = pump(client, server)
    chunks = [e for e in events if isinstance(e, DataReceived)]
    assert max(len(c.data) for c in chunks) == 4096
    assert data_of(events, sid) == payload


def test_slow_reader_stalls_only_its_own_stream(pair: Pair, pump: Pump) -> None:
    window = 64 * 1024
    settings = ProtocolSettings(initial_window=window, connection_window=4 * window)
    client, server = pair(server_settings=settings)
    slow, bulk = client.open_stream(KUBELET), client.open_stream(KUBELET)
    assert client.send_data(slow, b"x" * (10 * window)) == window  # never read by the server
    moved = 0
    for _ in range(40):  # 40 windows through the bulk stream while `slow` stays full
        moved += client.send_data(bulk, b"y" * window)
        _, events = pump(client, server)
        server.acknowledge_received(bulk, len(data_of(events, bulk)))
        pump(client, server)
    assert moved >= 39 * window
    assert client.send_window(slow) == 0


def test_window_reopens_only_when_consumed(pair: Pair, pump: Pump) -> None:
    settings = ProtocolSettings(initial_window=4096)
    client, server = pair(server_settings=settings)
    sid = client.open_stream(KUBELET)
    assert client.send_data(sid, b"a" * 10_000) == 4096
    pump(client, server)
    assert client.send_window(sid) == 0
    server.acknowledge_received(sid, 4096)
    cli_events, _ = pump(client, server)
    assert WindowUpdated(sid, 4096) in cli_events
    assert client.send_window(sid) == 4096


def test_excess_streams_are_refused_without_hurting_the_connection(pump: Pump) -> None:
    client = Connection(Role.CLIENT)
    server = Connection(Role.SERVER, ProtocolSettings(max_concurrent_streams=2))
    # Opened before the server's HELLO arrived, so the client could not know the limit.
    sids = [client.open_stream(KUBELET) for _ in range(3)]
    cli_events, srv_events = pump(client, server)
    assert [e.stream_id for e in srv_events if isinstance(e, StreamOpened)] == sids[:2]
    assert StreamReset(sids[2], ErrorCode.REFUSED_STREAM, "stream refused") in cli_events
    assert not client.can_open_stream  # now it knows the limit
    client.reset(sids[0])
    pump(client, server)
    assert client.open_stream(KUBELET) == 7
    assert client.send_data(sids[1], b"still fine") == 10


def test_data_beyond_stream_window_resets_only_that_stream(pair: Pair, pump: Pump) -> None:
    client, server = pair(server_settings=ProtocolSettings(initial_window=1024))
    bad, good = client.open_stream(KUBELET), client.open_stream(KUBELET)
    pump(client, server)
    # A misbehaving client ignores the window: hand-craft an oversized DATA frame.
    rogue = F.encode_frame(FrameType.DATA, bad, b"z" * 2000)
    events = server.receive_data(rogue)
    assert events == [StreamReset(bad, ErrorCode.FLOW_CONTROL_ERROR, events[0].reason, False)]  # type: ignore[attr-defined]
    cli_events, _ = pump(client, server)
    assert any(isinstance(e, StreamReset) and e.stream_id == bad for e in cli_events)
    client.send_data(good, b"ok")
    _, srv_events = pump(client, server)
    assert data_of(srv_events, good) == b"ok"


def test_data_after_fin_resets_the_stream(pair: Pair, pump: Pump) -> None:
    client, server = pair()
    sid = client.open_stream(KUBELET)
    client.half_close(sid)
    pump(client, server)
    events = server.receive_data(F.encode_frame(FrameType.DATA, sid, b"late"))
    assert [type(e) for e in events] == [StreamReset]
    assert events[0].code == ErrorCode.STREAM_CLOSED  # type: ignore[attr-defined]


def test_garbage_terminates_with_goaway(pair: Pair) -> None:
    client, server = pair()
    with pytest.raises(RemoteProtocolError):
        server.receive_data(b"\x00\x00\x00\x00\xee\x00\x00\x00\x00\x00")
    assert server.closed
    events = client.receive_data(server.data_to_send())
    assert isinstance(events[0], GoAwayReceived)
    assert events[-1] == ConnectionTerminated(ErrorCode.PROTOCOL_ERROR, events[0].reason)
    assert server.receive_data(b"more garbage") == []


def test_frame_for_unopened_stream_is_a_connection_error(pair: Pair) -> None:
    _, server = pair()
    with pytest.raises(RemoteProtocolError, match="idle stream"):
        server.receive_data(F.encode_frame(FrameType.DATA, 99, b"x"))


def test_oversized_frame_is_rejected_from_its_header(pair: Pair) -> None:
    _, server = pair(server_settings=ProtocolSettings(max_frame_size=2048))
    header = F.encode_header(4096, FrameType.DATA, 0, 1)
    with pytest.raises(RemoteProtocolError) as info:
        server.receive_data(header)  # the payload never needs to arrive
    assert info.value.code == ErrorCode.FRAME_SIZE_ERROR


def test_connection_window_overflow_is_fatal(pair: Pair) -> None:
    _, server = pair()
    huge = F.encode_frame(FrameType.WINDOW_UPDATE, 0, F.encode_u32(F.MAX_WINDOW))
    with pytest.raises(RemoteProtocolError) as info:
        server.receive_data(huge)
    assert info.value.code == ErrorCode.FLOW_CONTROL_ERROR


def test_events_before_a_fault_are_kept(pair: Pair) -> None:
    client, server = pair()
    client.ping(b"12345678")
    with pytest.raises(RemoteProtocolError) as info:
        server.receive_data(client.data_to_send() + b"\xff" * 10)
    assert info.value.events_before == [PingReceived(b"12345678")]


def test_ping_is_answered(pair: Pair, pump: Pump) -> None:
    client, server = pair()
    client.ping(b"abcdefgh")
    cli_events, srv_events = pump(client, server)
    assert srv_events == [PingReceived(b"abcdefgh")]
    assert cli_events == [PongReceived(b"abcdefgh")]


def test_goaway_refuses_unprocessed_streams_and_new_ones(pair: Pair, pump: Pump) -> None:
    client, server = pair()
    first = client.open_stream(KUBELET)
    pump(client, server)
    server.go_away(ErrorCode.NO_ERROR, "restarting")
    second = client.open_stream(KUBELET)  # crosses the GOAWAY on the wire
    cli_events, srv_events = pump(client, server)
    assert GoAwayReceived(first, ErrorCode.NO_ERROR, "restarting") in cli_events
    assert (
        StreamReset(second, ErrorCode.REFUSED_STREAM, "not processed before GOAWAY") in cli_events
    )
    assert not any(isinstance(e, StreamOpened) for e in srv_events)
    with pytest.raises(LocalProtocolError):
        client.open_stream(KUBELET)
    client.send_data(first, b"existing streams keep working")
    _, srv_events = pump(client, server)
    assert data_of(srv_events, first) == b"existing streams keep working"


def test_goaway_with_error_resets_everything(pair: Pair, pump: Pump) -> None:
    client, server = pair()
    sid = client.open_stream(KUBELET)
    pump(client, server)
    server.go_away(ErrorCode.INTERNAL_ERROR, "bye")
    cli_events, _ = pump(client, server)
    assert StreamReset(sid, ErrorCode.INTERNAL_ERROR, "bye") in cli_events
    assert cli_events[-1] == ConnectionTerminated(ErrorCode.INTERNAL_ERROR, "bye")
    assert client.closed


def test_reset_returns_unread_bytes_to_the_connection_window(pair: Pair, pump: Pump) -> None:
    settings = ProtocolSettings(initial_window=8192, connection_window=8192)
    client, server = pair(server_settings=settings)
    sid = client.open_stream(KUBELET)
    assert client.send_data(sid, b"q" * 8192) == 8192
    pump(client, server)
    assert client.connection_send_window == 0
    server.reset(sid, ErrorCode.CANCEL, "reader gone")
    server.acknowledge_received(sid, 8192)  # late acknowledgement: harmless no-op
    cli_events, _ = pump(client, server)
    assert StreamReset(sid, ErrorCode.CANCEL, "reader gone") in cli_events
    assert client.connection_send_window == 8192
    other = client.open_stream(KUBELET)
    assert client.send_data(other, b"r" * 8192) == 8192


def test_api_misuse_raises_local_errors(pair: Pair, pump: Pump) -> None:
    client, server = pair()
    sid = client.open_stream(KUBELET)
    client.half_close(sid)
    with pytest.raises(LocalProtocolError):
        client.send_data(sid, b"after fin")
    with pytest.raises(LocalProtocolError):
        client.half_close(sid)
    with pytest.raises(LocalProtocolError):
        client.send_data(12345, b"no such stream")
    with pytest.raises(LocalProtocolError):
        client.ping(b"short")
    with pytest.raises(LocalProtocolError):
        client.open_stream(Target("", 1))
    pump(client, server)
    server.send_data(sid, b"abc")
    pump(client, server)
    with pytest.raises(LocalProtocolError):
        client.acknowledge_received(sid, 4)
    assert client.stream_state(sid) is StreamState.HALF_CLOSED_LOCAL
