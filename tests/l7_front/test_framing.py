"""Message boundaries for keep-alive (front_framing), the pool, and the framed exchange's
retry rules, without sockets."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ravend.l7proxy.front_dial import Lease
from ravend.l7proxy.front_exchange import Caller, Settled, framed_exchange
from ravend.l7proxy.front_framing import (
    ChunkedBody,
    FramingError,
    LengthBody,
    ResponseFramer,
    UntilClose,
    request_body,
)
from ravend.l7proxy.front_pool import IdlePool, PoolSettings
from ravend.l7proxy.http_head import parse_request_head
from ravend.l7proxy.routing import Direct, Refusal, Route


def chunked(pieces: list[bytes], trailer: bytes = b"") -> bytes:
    out = b"".join(b"%x;ext=1\r\n%s\r\n" % (len(p), p) for p in pieces if p)
    return out + b"0\r\n" + trailer + b"\r\n"


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    bounds = [0, *points, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


def feed_all(tracker: ChunkedBody | ResponseFramer, parts: list[bytes]) -> int:
    """Bytes the tracker claims for its message, fed in `parts`."""
    total = 0
    for part in parts:
        used = tracker.feed(part)
        total += used
        if used < len(part):
            break
    return total


@given(
    st.lists(st.binary(max_size=300), max_size=6),
    st.lists(st.integers(min_value=0), max_size=8),
    st.binary(max_size=50),
)
def test_chunked_body_ends_at_its_end_for_any_split(
    pieces: list[bytes], cuts: list[int], after: bytes
) -> None:
    body = chunked(pieces, b"X-Trailer: 1\r\n")
    tracker = ChunkedBody()
    assert feed_all(tracker, split(body + after, cuts)) == len(body)
    assert tracker.done


@given(st.lists(st.integers(min_value=0), max_size=8), st.sampled_from(["GET", "HEAD"]))
def test_response_framer_any_split(cuts: list[int], method: str) -> None:
    body = b"x" * 1000
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n"
    interim = b"HTTP/1.1 100 Continue\r\n\r\n"
    message = interim + head + (body if method == "GET" else b"")
    framer = ResponseFramer(method)
    assert feed_all(framer, split(message + b"HTTP/1.1 200 OK\r\n", cuts)) == len(message)
    assert framer.done and framer.reusable and framer.head is not None
    assert framer.head.status == 200


@pytest.mark.parametrize(
    ("response", "method", "reusable", "kind"),
    [
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", "GET", None, ChunkedBody),
        (b"HTTP/1.1 200 OK\r\n\r\n", "GET", None, UntilClose),
        (b"HTTP/1.1 204 No Content\r\n\r\n", "GET", True, LengthBody),
        (b"HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n", "GET", True, LengthBody),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n", "GET", False, None),
        (b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", "GET", False, None),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 1, 2\r\n\r\n", "GET", None, UntilClose),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", "GET", None, UntilClose),
    ],
)
def test_response_body_rules(
    response: bytes, method: str, reusable: bool | None, kind: type | None
) -> None:
    framer = ResponseFramer(method)
    assert framer.feed(response) == len(response)
    if kind is not None:
        assert isinstance(framer.body, kind)
    if reusable is not None:
        assert framer.done and framer.reusable is reusable
    else:
        assert not framer.done and not framer.reusable


def test_upgrade_is_never_reusable() -> None:
    framer = ResponseFramer("GET")
    data = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n\x81\x00"
    assert framer.feed(data) == len(data) - 2
    assert framer.upgraded and framer.done and not framer.reusable


@pytest.mark.parametrize(
    "bad",
    [b"zz\r\n", b"5\nhello\r\n", b"-5\r\n", b"5\r\nhelloX\r\n", b"1" * 5000, b"3 \r\nabc\r\n"],
)
def test_malformed_chunking_is_an_error(bad: bytes) -> None:
    with pytest.raises(FramingError):
        ChunkedBody().feed(bad)


@pytest.mark.parametrize(
    ("head", "framed"),
    [
        (b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", LengthBody),
        (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n", LengthBody),
        (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n", ChunkedBody),
        (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", None),
        (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: identity\r\n\r\n", None),
    ],
)
def test_request_body_framing(head: bytes, framed: type | None) -> None:
    body = request_body(parse_request_head(head))
    assert (body is None) if framed is None else isinstance(body, framed)


# ---- the pool ------------------------------------------------------------------------------


@dataclass
class FakePipe:
    healthy: bool = True
    closed: bool = False

    def reusable(self) -> bool:
        return self.healthy and not self.closed

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True


async def test_pool_takes_newest_skips_stale_bounds_and_expires() -> None:
    pool = IdlePool(PoolSettings(idle_timeout=0.05, max_idle_per_key=2))
    a, b, c = FakePipe(), FakePipe(), FakePipe()
    pool.put("k", a)
    pool.put("k", b)
    pool.put("k", c)  # over the limit: closed
    assert c.closed and pool.idle == 2
    b.healthy = False  # the peer closed it while idle
    assert pool.take("k") is a and b.closed
    pool.put("k", a)
    await asyncio.sleep(0.1)
    assert a.closed and pool.idle == 0 and pool.take("k") is None


async def test_pool_evicts_oldest_of_matching_keys_only() -> None:
    pool = IdlePool()
    old, new, other = FakePipe(), FakePipe(), FakePipe()
    pool.put(("via-1", "n"), old)
    pool.put(("via-1", "n"), new)
    pool.put(("via-2", "n"), other)
    via_1 = ("via-1", "n").__eq__
    assert pool.evict(via_1, 1) == 1
    assert [p.closed for p in (old, new, other)] == [True, False, False]
    assert pool.evict(via_1, 5) == 1
    assert [p.closed for p in (old, new, other)] == [True, True, False]
    assert pool.idle == 1 and pool.take(("via-2", "n")) is not None


# ---- retry on a stale pooled upstream --------------------------------------------------------


@dataclass
class ScriptedPipe:
    """An upstream that answers with `reply` (b"" = closed at once) and records what it got."""

    reply: bytes
    got: bytearray = field(default_factory=bytearray)
    aborted: bool = False

    async def read(self) -> bytes:
        data, self.reply = self.reply, b""
        return data

    async def write(self, data: bytes) -> None:
        self.got += data

    def write_eof(self) -> bool:
        return True

    def close(self) -> None:
        pass

    def abort(self) -> None:
        self.aborted = True

    def reusable(self) -> bool:
        return True


class CallerPipe:
    """The caller side: nothing more to read until the test ends; writes are collected."""

    def __init__(self) -> None:
        self.out = bytearray()

    def can_half_close(self) -> bool:
        return False

    def watch(self, callback: Callable[[], None] | None) -> None:
        pass

    def write_nowait(self, data: bytes) -> bool:
        self.out += data
        return True

    @property
    def writing_paused(self) -> bool:
        return False

    def on_writable(self, callback: Callable[[], None] | None) -> None:
        pass

    def get_extra_info(self, name: str) -> object:
        return None

    def write_eof(self) -> bool:
        return False

    def close(self) -> None:
        pass

    def abort(self) -> None:
        pass

    def reusable(self) -> bool:
        return False

    async def read(self) -> bytes:
        await asyncio.Event().wait()
        return b""

    async def write(self, data: bytes) -> None:
        self.out += data


class Leases:
    def __init__(self, stale: ScriptedPipe, fresh: ScriptedPipe) -> None:
        self.stale, self.fresh = stale, fresh
        self.released: list[object] = []

    async def lease(self, route: Route, fresh: bool = False) -> Lease | Refusal:
        pipe = self.fresh if fresh else self.stale
        return Lease(pipe, "k", reused=not fresh)  # type: ignore[arg-type]

    def release(self, lease: Lease) -> None:
        self.released.append(lease.pipe)


OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
ROUTE = Direct("n", "127.0.0.1", 10250, True)


async def exchange(request: bytes) -> tuple[Settled | Refusal, Leases, CallerPipe]:
    head_end = request.index(b"\r\n\r\n") + 4
    head = parse_request_head(request[:head_end])
    body = request_body(head)
    assert body is not None
    pipe = CallerPipe()
    caller = Caller(pipe, bytearray(request[head_end:]))
    leases = Leases(ScriptedPipe(b""), ScriptedPipe(OK))
    return await framed_exchange(caller, head, body, ROUTE, leases), leases, pipe


async def test_idempotent_request_is_retried_once_on_a_fresh_upstream() -> None:
    settled, leases, caller = await exchange(b"GET /healthz HTTP/1.1\r\nHost: n\r\n\r\n")
    assert isinstance(settled, Settled) and settled.keep_caller and settled.reuse_upstream
    assert bytes(caller.out) == OK
    assert leases.stale.aborted and leases.released == [leases.fresh]
    assert b"Connection" not in leases.fresh.got  # keep-alive upstream: no close rewrite


async def test_non_idempotent_request_is_not_retried() -> None:
    request = b"POST /run/a/b/c HTTP/1.1\r\nHost: n\r\nContent-Length: 3\r\n\r\nabc"
    settled, leases, caller = await exchange(request)
    assert isinstance(settled, Refusal) and settled.status == 502
    assert leases.fresh.got == b"" and caller.out == b""
