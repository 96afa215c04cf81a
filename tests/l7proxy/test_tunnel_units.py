"""Pure parts of the tunnel transport: redial backoff, upgrade handshake, settings; a stream's
errors (no session, no I/O)."""

from __future__ import annotations

import gc
import random
import weakref
from typing import TYPE_CHECKING, cast

import pytest

from ravend.l7proxy.protocol_frames import ErrorCode, Target
from ravend.l7proxy.settings import L7TunnelSettings
from ravend.l7proxy.tunnel_client import backoff_delay
from ravend.l7proxy.tunnel_handshake import (
    HandshakeError,
    build_request,
    build_response,
    check_request,
    check_response,
)
from ravend.l7proxy.tunnel_stream import Stream, StreamResetError

if TYPE_CHECKING:
    from ravend.l7proxy.tunnel_session import TunnelSession


def test_backoff_doubles_up_to_the_cap_with_jitter() -> None:
    rng = random.Random(7)
    delays = [backoff_delay(n, 0.2, 10.0, rng) for n in range(12)]
    for attempt, delay in enumerate(delays):
        nominal = min(10.0, 0.2 * 2**attempt)
        assert nominal * 0.5 <= delay <= nominal
    assert max(delays) <= 10.0
    assert backoff_delay(10_000, 0.2, 10.0, rng) <= 10.0  # no overflow on long outages


def test_jitter_spreads_simultaneous_redials() -> None:
    rng = random.Random(1)
    delays = {round(backoff_delay(3, 0.2, 10.0, rng), 3) for _ in range(100)}
    assert len(delays) > 50


def test_handshake_round_trip() -> None:
    assert check_request(build_request("proxy.example")) is None
    check_response(build_response(101, "Switching Protocols"))


@pytest.mark.parametrize(
    "head",
    [
        b"GET / HTTP/1.1\r\nUpgrade: ravend-tunnel/1\r\n\r\n",
        b"GET /v1/tunnel HTTP/1.1\r\nUpgrade: websocket\r\n\r\n",
        b"POST /v1/tunnel HTTP/1.1\r\nUpgrade: ravend-tunnel/1\r\n\r\n",
        b"\xff\xfe garbage\r\n\r\n",
    ],
)
def test_server_refuses_other_requests(head: bytes) -> None:
    assert check_request(head) is not None


def test_client_sees_refusal() -> None:
    with pytest.raises(HandshakeError, match="403"):
        check_response(build_response(403, "certificate does not name a node"))
    with pytest.raises(HandshakeError):
        check_response(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\n\r\n")


def test_settings_map_onto_the_protocol() -> None:
    s = L7TunnelSettings(stream_window=4096, max_concurrent_streams=3)
    p = s.protocol_settings()
    assert (p.initial_window, p.max_concurrent_streams) == (4096, 3)
    with pytest.raises(ValueError):
        L7TunnelSettings(max_frame_size=10).protocol_settings()


class _Session:
    """What a Stream calls on its session, doing nothing (a weakref tells when it is freed)."""

    def _reset(self, stream_id: int, code: int, reason: str) -> None:
        pass


async def test_a_reset_stream_is_freed_without_the_cycle_collector() -> None:
    """Each raise is a copy of the stream's error: raising the stored one would hang the
    raising frames (which hold the stream) on an exception the stream holds, a cycle that
    keeps the stream and all it refers to until a full gc."""
    session = _Session()
    freed = weakref.ref(session)
    stream = Stream(cast("TunnelSession", session), 1, Target("edge-1", 10250, True))
    gc.disable()
    try:
        stream.reset(ErrorCode.CANCEL, "caller gone")
        raised = []
        for _ in range(3):
            with pytest.raises(StreamResetError) as caught:
                await stream.read()
            raised.append(caught.value)
            with pytest.raises(StreamResetError):
                stream.write_eof()
        assert {(e.code, str(e)) for e in raised} == {
            (ErrorCode.CANCEL, "stream reset (5): reset locally: caller gone")
        }
        del stream, session, raised, caught
        assert freed() is None
    finally:
        gc.enable()
