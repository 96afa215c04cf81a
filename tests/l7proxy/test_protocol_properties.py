"""Property tests of the sans-IO tunnel protocol: chunking, fuzzing, flow-control invariants."""

from __future__ import annotations

from collections import defaultdict

from hypothesis import given, settings
from hypothesis import strategies as st

from ravend.l7proxy import protocol_frames as F
from ravend.l7proxy.protocol import Connection, Role
from ravend.l7proxy.protocol_errors import RemoteProtocolError
from ravend.l7proxy.protocol_events import DataReceived, Event
from ravend.l7proxy.protocol_frames import ProtocolSettings, Target
from ravend.l7proxy.protocol_state import StreamState

SMALL = ProtocolSettings(max_frame_size=1024, initial_window=4096, connection_window=10_000)

op = st.one_of(
    st.tuples(st.just("open"), st.integers(1, 300)),
    st.tuples(st.just("send"), st.integers(0, 7), st.binary(max_size=3000)),
    st.tuples(st.just("fin"), st.integers(0, 7)),
    st.tuples(st.just("reset"), st.integers(0, 7)),
    st.tuples(st.just("ping"), st.binary(min_size=8, max_size=8)),
)


def client_bytes(ops: list[tuple[object, ...]]) -> bytes:
    """Everything a client sends for a script of API calls (skipping calls the state forbids)."""
    client = Connection(Role.CLIENT)
    client.receive_data(Connection(Role.SERVER, SMALL).data_to_send())
    streams: list[int] = []
    for kind, arg, *rest in ops:
        if kind == "open":
            streams.append(client.open_stream(Target(f"node-{arg}", 10250, metadata=b"m")))
        elif kind == "ping":
            client.ping(arg)  # type: ignore[arg-type]
        elif streams and isinstance(arg, int):
            sid = streams[arg % len(streams)]
            if client.send_window(sid) == 0 and kind != "reset":
                continue
            if kind == "send":
                client.send_data(sid, rest[0])  # type: ignore[arg-type]
            elif kind == "fin":
                client.half_close(sid)
            else:
                client.reset(sid)
    return client.data_to_send()


def feed(chunks: list[bytes]) -> list[Event]:
    server = Connection(Role.SERVER, SMALL)
    events: list[Event] = []
    for chunk in chunks:
        events += server.receive_data(chunk)
    return merged(events)


def merged(events: list[Event]) -> list[Event]:
    """Coalesce adjacent DataReceived of one stream: frame boundaries are not semantics."""
    out: list[Event] = []
    for event in events:
        last = out[-1] if out else None
        if (
            isinstance(event, DataReceived)
            and isinstance(last, DataReceived)
            and last.stream_id == event.stream_id
        ):
            out[-1] = DataReceived(event.stream_id, last.data + event.data)
        else:
            out.append(event)
    return out


@settings(max_examples=150, deadline=None)
@given(st.lists(op, max_size=30), st.lists(st.integers(0, 10**6), max_size=20))
def test_any_chunking_yields_the_same_events(
    ops: list[tuple[object, ...]], cuts: list[int]
) -> None:
    wire = client_bytes(ops)
    points = sorted({c % (len(wire) + 1) for c in cuts})
    chunks = [wire[a:b] for a, b in zip([0, *points], [*points, len(wire)], strict=True)]
    assert feed(chunks) == feed([wire])
    assert feed([wire[i : i + 1] for i in range(len(wire))]) == feed([wire])


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400), st.booleans())
def test_random_bytes_only_raise_remote_protocol_error(junk: bytes, after_hello: bool) -> None:
    server = Connection(Role.SERVER)
    prefix = Connection(Role.CLIENT).data_to_send() if after_hello else b""
    try:
        server.receive_data(prefix + junk)
    except RemoteProtocolError:
        assert server.closed
        assert server.data_to_send()  # a GOAWAY explains why


frame = st.builds(
    lambda t, flags, sid, payload: F.HEADER.pack(len(payload), t, flags, sid) + payload,
    st.integers(0, 9),
    st.integers(0, 3),
    st.integers(0, 6),
    st.binary(max_size=40),
)


@settings(max_examples=500, deadline=None)
@given(st.lists(frame, max_size=15))
def test_well_framed_nonsense_only_raises_remote_protocol_error(frames: list[bytes]) -> None:
    client = Connection(Role.CLIENT)
    server = Connection(Role.SERVER)
    client.receive_data(server.data_to_send())
    client.open_stream(Target("n", 1))  # give the fuzzer a live stream (id 1) to hit
    wire = client.data_to_send() + b"".join(frames)
    try:
        server.receive_data(wire)
    except RemoteProtocolError:
        assert server.closed


flow_op = st.one_of(
    st.tuples(st.just("send"), st.integers(0, 3), st.integers(1, 9000)),
    st.tuples(st.just("ack"), st.integers(0, 3), st.floats(0, 1)),
    st.tuples(st.just("deliver"), st.just(0), st.just(0)),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(flow_op, max_size=60))
def test_bytes_in_flight_never_exceed_the_windows(ops: list[tuple[str, int, float]]) -> None:
    client = Connection(Role.CLIENT)
    server = Connection(Role.SERVER, SMALL)
    client.receive_data(server.data_to_send())
    sids = [client.open_stream(Target("n", 1)) for _ in range(4)]
    sent: dict[int, int] = defaultdict(int)
    received: dict[int, int] = defaultdict(int)
    acked: dict[int, int] = defaultdict(int)
    for kind, index, amount in ops:
        sid = sids[index]
        if kind == "send":
            sent[sid] += client.send_data(sid, b"d" * int(amount))
        elif kind == "ack":
            count = int((received[sid] - acked[sid]) * amount)
            server.acknowledge_received(sid, count)
            acked[sid] += count
        else:
            for event in server.receive_data(client.data_to_send()):
                if isinstance(event, DataReceived):
                    received[event.stream_id] += len(event.data)
            client.receive_data(server.data_to_send())
        # Unconsumed bytes (in flight or buffered at the reader) stay within the windows.
        for s in sids:
            assert sent[s] - acked[s] <= SMALL.initial_window
        assert sum(sent[s] - acked[s] for s in sids) <= SMALL.connection_window


life_op = st.tuples(
    st.sampled_from(["open", "fin_client", "fin_server", "reset_client", "reset_server", "sync"]),
    st.integers(0, 7),
)


def scanned_open_count(conn: Connection, sids: list[int]) -> int:
    return sum(1 for sid in sids if conn.stream_state(sid) not in (None, StreamState.CLOSED))


@settings(max_examples=200, deadline=None)
@given(st.lists(life_op, max_size=60))
def test_open_stream_counts_follow_every_way_a_stream_ends(ops: list[tuple[str, int]]) -> None:
    """The counted open streams (the concurrency limit) equal a scan of the stream states."""
    client = Connection(Role.CLIENT, ProtocolSettings(max_concurrent_streams=6))
    server = Connection(Role.SERVER, ProtocolSettings(max_concurrent_streams=5))
    client.receive_data(server.data_to_send())
    server.receive_data(client.data_to_send())
    client.receive_data(server.data_to_send())
    sids: list[int] = []
    for kind, index in ops:
        sid = sids[index % len(sids)] if sids else 0
        if kind == "open" and client.can_open_stream:
            sids.append(client.open_stream(Target("n", 1)))
        elif kind == "sync" or not sids:
            server.receive_data(client.data_to_send())
            client.receive_data(server.data_to_send())
        elif kind.startswith("fin"):
            side = client if kind == "fin_client" else server
            if side.stream_state(sid) in (StreamState.OPEN, StreamState.HALF_CLOSED_REMOTE):
                side.half_close(sid)
        else:
            (client if kind == "reset_client" else server).reset(sid)
        assert client.open_stream_count(local=True) == scanned_open_count(client, sids)
        assert server.open_stream_count(local=False) == scanned_open_count(server, sids)
        assert client.open_stream_count(local=True) <= 6
