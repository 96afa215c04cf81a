"""The callback paths of keep-alive: TunnelPipe, ResponseRelay (unit) and the lane (component)."""

from __future__ import annotations

from collections.abc import Callable
from typing import cast

from ravend.l7proxy.front_framing import ResponseFramer
from ravend.l7proxy.front_relay import Caller, CallerPipe, ResponseRelay, Run
from ravend.l7proxy.front_upstream import TunnelPipe
from ravend.l7proxy.frontend import FrontEnd, FrontSettings
from ravend.l7proxy.tunnel_stream import Stream, StreamSink

from .conftest import KeepAliveCaller, Rig

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


class FakeStream:
    def __init__(self) -> None:
        self.sink: StreamSink | None = None
        self.paused = False
        self.sent = b""
        self.reset_called = False

    @property
    def idle(self) -> bool:
        return not self.reset_called

    def attach(self, sink: StreamSink) -> None:
        self.sink = sink

    def detach(self) -> None:
        self.sink = None

    def pause_receiving(self) -> None:
        self.paused = True

    def resume_receiving(self) -> None:
        self.paused = False

    def send_nowait(self, data: bytes | memoryview) -> int:
        self.sent += bytes(data)
        return len(data)

    def reset(self, code: int = 0, reason: str = "") -> None:
        self.reset_called = True


class FakeCaller:
    def __init__(self, half_close: bool = False) -> None:
        self.out = b""
        self.paused = False
        self.half_close = half_close
        self.watcher: Callable[[], None] | None = None
        self.writable: Callable[[], None] | None = None

    def can_half_close(self) -> bool:
        return self.half_close

    def watch(self, callback: Callable[[], None] | None) -> None:
        self.watcher = callback

    def write_nowait(self, data: bytes) -> bool:
        self.out += data
        return True

    @property
    def writing_paused(self) -> bool:
        return self.paused

    def on_writable(self, callback: Callable[[], None] | None) -> None:
        self.writable = callback


def relay(half_close: bool = False) -> tuple[FakeStream, TunnelPipe, FakeCaller, Caller, list[Run]]:
    stream, fake = FakeStream(), FakeCaller(half_close)
    pipe = TunnelPipe(cast(Stream, stream))
    caller = Caller(cast(CallerPipe, fake))
    done: list[Run] = []
    ResponseRelay(caller, pipe, Run(ResponseFramer("GET")), done.append).start(b"GET / ...")
    return stream, pipe, fake, caller, done


def test_relay_ends_at_the_framing_and_leaves_later_bytes_unsolicited() -> None:
    stream, pipe, fake, _, done = relay()
    assert stream.sent == b"GET / ..." and stream.sink is pipe
    pipe.stream_data(OK[:10])
    assert not done and fake.out == OK[:10]
    pipe.stream_data(OK[10:] + b"extra")
    assert fake.out == OK and len(done) == 1
    run = done[0]
    assert run.unsolicited and run.to_caller == len(OK) and run.upstream_error is None
    assert fake.watcher is None and fake.writable is None  # detached
    assert pipe.reusable()


def test_a_full_caller_holds_the_upstream_window_until_it_drains() -> None:
    stream, pipe, fake, _, done = relay()
    fake.paused = True
    pipe.stream_data(OK[:10])
    assert stream.paused and fake.writable is not None
    fake.paused = False
    fake.writable()
    assert (stream.paused, done) == (False, [])


def test_a_tls_caller_leaving_drops_the_upstream_at_once() -> None:
    stream, _, fake, _, done = relay(half_close=False)
    assert fake.watcher is not None
    fake.watcher()
    assert stream.reset_called and len(done) == 1 and done[0].caller_error is not None


def test_a_plain_caller_half_close_still_gets_its_response() -> None:
    stream, pipe, fake, caller, done = relay(half_close=True)
    assert fake.watcher is not None
    fake.watcher()
    assert caller.ended and not stream.reset_called and not done
    pipe.stream_data(OK)
    assert len(done) == 1 and done[0].caller_error is None and fake.out == OK


def test_upstream_end_before_the_framing_end_is_an_upstream_error() -> None:
    _, pipe, _, _, done = relay()
    pipe.stream_data(OK[:5])
    pipe.stream_eof()
    assert len(done) == 1 and isinstance(done[0].upstream_error, ConnectionError)


def test_bytes_on_an_idle_pipe_spoil_it_and_hold_the_window() -> None:
    stream = FakeStream()
    pipe = TunnelPipe(cast(Stream, stream))
    assert pipe.reusable()
    pipe.stream_data(b"HTTP/1.1 200 OK\r\n")
    assert not pipe.reusable() and stream.paused


async def test_lane_serves_up_to_the_request_limit_then_closes(rig: Rig) -> None:
    settings = FrontSettings(max_requests_per_connection=3, keepalive_idle_timeout=5.0)
    front = FrontEnd(
        me="cloud-1",
        view=rig.view,
        pods=lambda ns, name: _none(),
        upstreams=rig.dialer,
        ssl_context=None,
        host="127.0.0.1",
        settings=settings,
    )
    async with front:
        caller = await KeepAliveCaller.connect(front.port, None)
        try:
            for _ in range(3):  # tunnel route: the 2nd and 3rd come through the lane
                head, body = await caller.get(f"edge-2:{rig.plain_port}", "/healthz")
                assert (head.status, head.get("x-sim-node"), body) == (200, "edge-2", b"ok")
            assert await caller.closed_by_peer(timeout=1.0)
        finally:
            caller.close()
    assert rig.dialer.dials == 1  # one tunnel stream, pooled and reused by the lane


async def test_lane_refuses_a_bad_head_on_a_kept_connection(rig: Rig) -> None:
    caller = await KeepAliveCaller.connect(rig.http.port, None)
    try:
        assert (await caller.get(f"edge-2:{rig.plain_port}", "/healthz"))[0].status == 200
        caller.writer.write(b"GET /healthz HTTP/1.1\r\nHost: edge-2\r\nBad Name: x\r\n\r\n")
        head, _ = await caller.response()
        assert head.status == 400
        assert await caller.closed_by_peer(timeout=1.0)
    finally:
        caller.close()


async def test_lane_hands_a_partial_head_to_the_head_timeout(rig: Rig) -> None:
    caller = await KeepAliveCaller.connect(rig.http.port, None)
    try:
        assert (await caller.get(f"edge-2:{rig.plain_port}", "/healthz"))[0].status == 200
        caller.writer.write(b"GET /healthz HTTP/1.1\r\nHost: ed")
        head, _ = await caller.response()  # head_timeout is 1 s in the rig
        assert head.status == 408
    finally:
        caller.close()


async def _none() -> str | None:
    return None
