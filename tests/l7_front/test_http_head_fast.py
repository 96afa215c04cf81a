"""The head parser's fast path (one regex over the decoded head) against its per-line path and
a reference built from the generated fields; the caller's own bytes forwarded when nothing
changes; hostile bytes only ever refused with HeadError."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ravend.l7proxy.front_framing import LengthBody, request_body
from ravend.l7proxy.http_head import (
    HeadError,
    HeadLimits,
    RequestHead,
    ResponseHead,
    _request_by_lines,
    _response_by_lines,
    for_upstream,
    parse_request_head,
    parse_response_head,
    render_request_head,
)

TCHARS = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
KNOWN = ["Host", "Connection", "Upgrade", "Content-Length", "Transfer-Encoding", "Keep-Alive"]
VCHARS = "".join(map(chr, range(0x21, 0x7F))) + "\x80\xa0\xb2\xe9\xff"
VERSIONS = ["HTTP/1.1", "HTTP/1.0"]
BAD_VERSIONS = ["HTTP/2.0", "HTTP/1.2", "http/1.1", "HTTP/1.10", "HTTP/1.1 "]
OWS = st.text(" \t", max_size=3)
HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection"}
Tuple3 = tuple[str, str, str]
"""A generated field: name, value as sent with its optional whitespace, value as parsed."""


def rarely(draw: st.DrawFn) -> bool:
    """True now and then: each kind of fault then shows up alone in an otherwise valid head."""
    return draw(st.integers(0, 14)) == 0


def text(draw: st.DrawFn, good: str, bad: str, min_size: int = 0, max_size: int = 20) -> str:
    """Mostly from `good`, rarely from `good + bad` (which must not split a line or field)."""
    alphabet = good + bad if rarely(draw) else good
    return draw(st.text(alphabet, min_size=min_size, max_size=max_size))


def version(draw: st.DrawFn) -> str:
    return draw(st.sampled_from(BAD_VERSIONS if rarely(draw) else VERSIONS))


@st.composite
def names(draw: st.DrawFn) -> str:
    if draw(st.booleans()):
        known = draw(st.sampled_from(KNOWN))
        return "".join(c.upper() if draw(st.booleans()) else c.lower() for c in known)
    return text(draw, TCHARS, " \t@\x00\x80", min_size=1, max_size=12)


@st.composite
def fields(draw: st.DrawFn) -> list[Tuple3]:
    out = []
    for _ in range(draw(st.integers(0, 6))):
        core = text(draw, VCHARS + " \t", "\x00\x01\x1f\x7f\n")
        sent = draw(OWS) + core + draw(OWS)
        out.append((draw(names()), sent, sent.strip(" \t")))
    if draw(st.booleans()):
        out.append(("Host", draw(OWS) + "edge-1:10250" + draw(OWS), "edge-1:10250"))
    return draw(st.permutations(out))


def block(lines: list[Tuple3]) -> bytes:
    return "".join(f"{n}:{sent}\r\n" for n, sent, _ in lines).encode("latin-1") + b"\r\n"


@st.composite
def request_bytes(draw: st.DrawFn) -> tuple[bytes, list[Tuple3]]:
    method = text(draw, TCHARS, "@\x80", min_size=1, max_size=8)
    start = draw(st.sampled_from(["", "*", "http://x/"])) if rarely(draw) else "/"
    target = start + text(draw, VCHARS, " \t\x00\x7f", max_size=40)
    line = f"{method} {target} {version(draw)}\r\n"
    lines = draw(fields())
    return line.encode("latin-1") + block(lines), lines


@st.composite
def response_bytes(draw: st.DrawFn) -> tuple[bytes, list[Tuple3]]:
    status = draw(st.text("0123456789x ", max_size=4) if rarely(draw) else st.just("200"))
    reason = draw(st.none() | st.text(VCHARS + " \t\x01\x7f", max_size=12))
    line = f"{version(draw)} {status}"
    line += "" if reason is None else f" {reason}"
    lines = draw(fields())
    return f"{line}\r\n".encode("latin-1") + block(lines), lines


Outcome = tuple[object, ...]


def outcome(parse: Callable[[bytes, HeadLimits], object], data: bytes) -> Outcome:
    limits = HeadLimits(max_head_bytes=400, max_target_bytes=30, max_headers=5)
    try:
        head = parse(data, limits)
    except HeadError as exc:
        return ("refused", exc.status, exc.reason)
    assert isinstance(head, RequestHead | ResponseHead)
    return ("parsed", head, head.headers)


SPLICES = [b" ", b"\t", b"\r", b"\n", b"\r\n", b":", b",", b"\x00", b"\x7f", b"\xb2", b"", b"a"]


@st.composite
def mutated(draw: st.DrawFn, valid: st.SearchStrategy[tuple[bytes, object]]) -> bytes:
    """A valid head with a few bytes replaced, inserted or removed: near misses of the regex."""
    data, _ = draw(valid)
    for _ in range(draw(st.integers(0, 3))):
        at = draw(st.sampled_from(range(len(data) + 1)))  # uniform: not only near the ends
        cut = draw(st.integers(0, 2))
        data = data[:at] + draw(st.sampled_from(SPLICES)) + data[at + cut :]
    return data


@settings(max_examples=300)
@given(request_bytes())
def test_fast_request_path_sees_the_generated_fields(case: tuple[bytes, list[Tuple3]]) -> None:
    data, lines = case
    fast = outcome(parse_request_head, data)
    assert fast == outcome(_request_by_lines, data)
    if fast[0] == "parsed":
        assert fast[2] == tuple((name, seen) for name, _, seen in lines)


@settings(max_examples=300)
@given(response_bytes())
def test_fast_response_path_sees_the_generated_fields(case: tuple[bytes, list[Tuple3]]) -> None:
    data, lines = case
    fast = outcome(parse_response_head, data)
    assert fast == outcome(_response_by_lines, data)
    if fast[0] == "parsed":
        assert fast[2] == tuple((name, seen) for name, _, seen in lines)


@settings(max_examples=500)
@given(mutated(request_bytes()))
def test_near_miss_requests_get_the_per_line_decision(data: bytes) -> None:
    assert outcome(parse_request_head, data) == outcome(_request_by_lines, data)


@settings(max_examples=500)
@given(mutated(response_bytes()))
def test_near_miss_responses_get_the_per_line_decision(data: bytes) -> None:
    assert outcome(parse_response_head, data) == outcome(_response_by_lines, data)


@settings(max_examples=300)
@given(mutated(request_bytes()) | st.binary(max_size=200))
def test_hostile_requests_only_raise_head_error(data: bytes) -> None:
    try:
        head = parse_request_head(data)
    except HeadError as exc:
        assert exc.status in (400, 414, 431, 505)
        return
    request_body(head)  # an accepted head never makes the framing code raise
    assert render_request_head(head) == data


@settings(max_examples=300)
@given(request_bytes())
def test_an_unchanged_head_is_forwarded_as_its_own_bytes(case: tuple[bytes, list[Tuple3]]) -> None:
    data, _ = case
    try:
        head = parse_request_head(data)
    except HeadError:
        return
    assert head.raw == data and render_request_head(head) == data
    upstream = for_upstream(head, keep_alive=True)
    hop = HOP_BY_HOP & {name.lower() for name, _ in head.headers}
    assert (upstream is head) is (head.is_upgrade or not hop)
    if upstream is not head:  # fields dropped: a new head, rendered from its fields
        assert upstream.raw is None
        assert parse_request_head(render_request_head(upstream)) == upstream


# ---- raw forwarding rules ------------------------------------------------------------------

ODD = b"GET /a?b=1 HTTP/1.1\r\nhost:n  \r\nAccept:\t*/* \r\nX-Empty:\r\n\r\n"


def test_unchanged_head_keeps_the_callers_whitespace() -> None:
    head = parse_request_head(ODD)
    assert head.headers == (("host", "n"), ("Accept", "*/*"), ("X-Empty", ""))
    assert render_request_head(for_upstream(head, keep_alive=True)) == ODD


@pytest.mark.parametrize(
    ("raw", "keep_alive", "expected"),
    [
        (
            b"GET /a HTTP/1.1\r\nHost:n\r\nConnection: keep-alive\r\nAccept: x\r\n\r\n",
            True,
            b"GET /a HTTP/1.1\r\nHost: n\r\nAccept: x\r\n\r\n",
        ),
        (
            b"GET /a HTTP/1.1\r\nHost:n\r\nProxy-Connection: x\r\n\r\n",
            True,
            b"GET /a HTTP/1.1\r\nHost: n\r\n\r\n",
        ),
        (
            b"GET /a HTTP/1.1\r\nHost:n\r\n\r\n",
            False,
            b"GET /a HTTP/1.1\r\nHost: n\r\nConnection: close\r\n\r\n",
        ),
    ],
)
def test_a_changed_head_is_rendered_from_its_fields(
    raw: bytes, keep_alive: bool, expected: bytes
) -> None:
    upstream = for_upstream(parse_request_head(raw), keep_alive=keep_alive)
    assert upstream.raw is None
    assert render_request_head(upstream) == expected


def test_upgrade_is_forwarded_as_sent() -> None:
    raw = b"GET /attach HTTP/1.1\r\nHost: n\r\nConnection:Upgrade\r\nUpgrade: websocket\r\n\r\n"
    head = parse_request_head(raw)
    assert head.is_upgrade and for_upstream(head) is head
    assert render_request_head(for_upstream(head)) == raw


def test_a_built_head_has_no_raw_bytes_and_equals_the_parsed_one() -> None:
    built = RequestHead("GET", "/a", "HTTP/1.1", (("Host", "n"),))
    parsed = parse_request_head(b"GET /a HTTP/1.1\r\nHost:   n\r\n\r\n")
    assert built.raw is None and parsed.raw is not None
    assert built == parsed and hash(built) == hash(parsed) and repr(built) == repr(parsed)
    assert render_request_head(built) == b"GET /a HTTP/1.1\r\nHost: n\r\n\r\n"
    assert built != ResponseHead("HTTP/1.1", 200, "OK", (("Host", "n"),))


def test_non_ascii_digits_are_not_a_content_length() -> None:
    # "²".isdigit() is True and int("²") raises: refused at parse, not a crash in framing.
    with pytest.raises(HeadError) as err:
        parse_request_head(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: \xb2\r\n\r\n")
    assert err.value.status == 400
    head = parse_request_head(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 07\r\n\r\n")
    body = request_body(head)
    assert isinstance(body, LengthBody) and body.remaining == 7


@pytest.mark.parametrize("parse", [parse_request_head, _request_by_lines])
def test_limits_are_exact_on_both_paths(parse: Callable[[bytes, HeadLimits], RequestHead]) -> None:
    limits = HeadLimits(max_head_bytes=200, max_target_bytes=10, max_headers=3)
    at_limit = b"GET /" + b"a" * 9 + b" HTTP/1.1\r\nHost: a\r\nX: 1\r\nY: 2\r\n\r\n"
    assert parse(at_limit, limits).target == "/" + "a" * 9
    with pytest.raises(HeadError) as err:
        parse(at_limit.replace(b"/a", b"/aa"), limits)
    assert err.value.status == 414
    with pytest.raises(HeadError) as err:
        parse(at_limit.replace(b"X: 1\r\n", b"X: 1\r\nZ: 3\r\n"), limits)
    assert err.value.status == 431
    with pytest.raises(HeadError) as err:
        parse(at_limit.replace(b"Y: 2", b"Y: " + b"2" * 200), limits)
    assert err.value.status == 431
