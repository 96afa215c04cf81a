"""The request-head parser: accepted forms, refusals with their status, and properties."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ravend.l7proxy.http_head import (
    HeadError,
    HeadLimits,
    RequestHead,
    for_upstream,
    head_end,
    parse_request_head,
    parse_response_head,
    render_request_head,
)

EXEC = (
    b"POST /exec/default/web-0/app?command=sh&input=1 HTTP/1.1\r\n"
    b"Host: edge-1:10250\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n"
    b"X-Stream-Protocol-Version: v5.channel.k8s.io, v4.channel.k8s.io\r\n\r\n"
)


def test_parses_a_kubectl_exec_spdy_request() -> None:
    head = parse_request_head(EXEC)
    assert (head.method, head.path, head.host) == (
        "POST",
        "/exec/default/web-0/app",
        "edge-1:10250",
    )
    assert head.query == {"command": ["sh"], "input": ["1"]}
    assert head.is_upgrade
    assert head.tokens("x-stream-protocol-version") == {"v5.channel.k8s.io", "v4.channel.k8s.io"}


def test_upstream_head_closes_plain_requests_and_keeps_upgrades() -> None:
    plain = parse_request_head(
        b"GET /metrics HTTP/1.1\r\nHost: n:10250\r\nConnection: keep-alive\r\n"
        b"Keep-Alive: timeout=5\r\nAccept: */*\r\n\r\n"
    )
    rewritten = parse_request_head(render_request_head(for_upstream(plain)))
    assert rewritten.get_all("connection") == ["close"]
    assert rewritten.get("keep-alive") is None and rewritten.get("accept") == "*/*"
    upgrade = parse_request_head(EXEC)
    assert for_upstream(upgrade) == upgrade


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (b"GET /x HTTP/1.1\r\n\r\n", 400),  # no Host
        (b"GET /x HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
        (b"GET /x HTTP/1.1\r\nHost: a\r\n folded\r\n\r\n", 400),
        (b"GET /x HTTP/1.1\r\nHost : a\r\n\r\n", 400),
        (b"GET /x HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", 400),
        (b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 1\xa0\r\n\r\n", 400),  # NBSP
        (
            b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n",
            400,
        ),
        (b"GET http://evil/x HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        (b"GET /x HTTP/2.0\r\nHost: a\r\n\r\n", 505),
        (b"GET /x\nHTTP/1.1\r\nHost: a\r\n\r\n", 400),
        (b"GET /x HTTP/1.1\r\nHost: a\x00b\r\n\r\n", 400),
        (b"GET  /x HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    ],
)
def test_refuses_ambiguous_heads(raw: bytes, status: int) -> None:
    with pytest.raises(HeadError) as err:
        parse_request_head(raw)
    assert err.value.status == status


def test_limits() -> None:
    limits = HeadLimits(max_head_bytes=200, max_target_bytes=50, max_headers=3)
    with pytest.raises(HeadError) as err:
        parse_request_head(b"GET /" + b"a" * 60 + b" HTTP/1.1\r\nHost: a\r\n\r\n", limits)
    assert err.value.status == 414
    many = b"GET / HTTP/1.1\r\nHost: a\r\n" + b"X: 1\r\n" * 3 + b"\r\n"
    with pytest.raises(HeadError) as err:
        parse_request_head(many, limits)
    assert err.value.status == 431
    assert head_end(b"GET / HTTP/1.1\r\n" + b"x" * 100, limits) is None
    with pytest.raises(HeadError) as err:
        head_end(b"GET / HTTP/1.1\r\n" + b"x" * 300, limits)
    assert err.value.status == 431


def test_response_head() -> None:
    head = parse_response_head(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: SPDY/3.1\r\n\r\n")
    assert head.status == 101 and head.get("upgrade") == "SPDY/3.1"


# ---- properties ------------------------------------------------------------------------------

TOKEN = st.text(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-", min_size=1, max_size=12
)
VALUE = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=30)
PATH = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=40)


@st.composite
def heads(draw: st.DrawFn) -> RequestHead:
    names = draw(st.lists(TOKEN, max_size=8))
    fields = [(n, draw(VALUE)) for n in names if n.lower() not in ("host", "content-length")]
    method = draw(st.sampled_from(["GET", "POST", "PUT", "DELETE"]))
    return RequestHead(method, "/" + draw(PATH), "HTTP/1.1", (("Host", draw(TOKEN)), *fields))


@given(heads())
def test_render_then_parse_round_trips(head: RequestHead) -> None:
    assert parse_request_head(render_request_head(head)) == head


@given(heads(), st.binary(max_size=50), st.lists(st.integers(0, 400), max_size=5))
def test_any_chunking_finds_the_same_head(head: RequestHead, body: bytes, cuts: list[int]) -> None:
    raw = render_request_head(head)
    stream = raw + body
    buf = bytearray()
    found = None
    points = sorted({min(c, len(stream)) for c in cuts} | {len(stream)})
    start = 0
    for point in points:
        buf += stream[start:point]
        start = point
        found = head_end(buf)
        if found is not None:
            break
    assert found == len(raw)
    assert parse_request_head(bytes(buf[:found])) == head


@given(st.binary(max_size=300))
def test_garbage_only_ever_raises_head_error(data: bytes) -> None:
    try:
        parse_request_head(data)
    except HeadError as exc:
        assert 400 <= exc.status < 600


def test_keep_alive_upstream_head_drops_only_hop_by_hop_fields() -> None:
    plain = parse_request_head(b"GET /a HTTP/1.1\r\nHost: n\r\nAccept: x\r\n\r\n")
    assert for_upstream(plain, keep_alive=True) == plain
    hop = parse_request_head(
        b"GET /a HTTP/1.1\r\nHost: n\r\nConnection: keep-alive\r\n"
        b"Keep-Alive: 5\r\nAccept: x\r\n\r\n"
    )
    assert for_upstream(hop, keep_alive=True).headers == (("Host", "n"), ("Accept", "x"))
