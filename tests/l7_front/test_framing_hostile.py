"""Framing facts read once per head, against the generic per-field rules written out plainly;
hostile upstream bytes only ever raise FramingError."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ravend.l7proxy.front_framing import (
    Body,
    ChunkedBody,
    FramingError,
    LengthBody,
    ResponseFramer,
    UntilClose,
    request_body,
    response_body,
)
from ravend.l7proxy.http_head import HeadError, RequestHead, ResponseHead, parse_request_head

FRAMING_NAMES = ["Content-Length", "content-length", "Transfer-Encoding", "TRANSFER-ENCODING"]
FRAMING_VALUES = ["0", "2", " 2", "07", "1,2", "", "-1", "\xb2", "chunked", "gzip, chunked"]
FRAMING_VALUES += ["chunked, gzip", "chunked,", "Chunked", "identity", "x" * 3, "9" * 19]
FRAMING_VALUES += ["2\xa0", "\xa02", "chunked\xa0", "2\t"]  # only SP/HTAB are whitespace
FIELD = st.tuples(
    st.sampled_from([*FRAMING_NAMES, "Connection", "X-A"]), st.sampled_from(FRAMING_VALUES)
)


def kind(body: Body | None) -> tuple[str, int] | None:
    if body is None:
        return None
    return (type(body).__name__, body.remaining if isinstance(body, LengthBody) else -1)


def reference_length(values: list[str]) -> int | None:
    """The one Content-Length: identical repeats allowed, 1-18 ASCII digits."""
    lengths = {v.strip(" \t") for v in values}
    if len(lengths) != 1:
        return None
    text = lengths.pop()
    if not text or len(text) > 18 or any(c not in "0123456789" for c in text):
        return None
    return int(text)


def reference_request_body(head: RequestHead) -> Body | None:
    """RFC 9112 6.1-6.3 for requests as the per-field rules say it (slow and plain)."""
    codings = head.get_all("transfer-encoding")
    if codings:
        tokens = {t.strip(" \t").lower() for v in codings for t in v.split(",") if t.strip(" \t")}
        return ChunkedBody() if len(codings) == 1 and tokens == {"chunked"} else None
    lengths = head.get_all("content-length")
    if not lengths:
        return LengthBody(0)
    length = reference_length(lengths)
    return None if length is None else LengthBody(length)


def reference_response_body(method: str, head: ResponseHead) -> Body:
    if method == "HEAD" or head.status in (204, 304):
        return LengthBody(0)
    codings = [
        t.strip(" \t").lower() for v in head.get_all("transfer-encoding") for t in v.split(",")
    ]
    if codings:
        return ChunkedBody() if codings[-1] == "chunked" else UntilClose()
    lengths = head.get_all("content-length")
    length = reference_length(lengths) if lengths else None
    return UntilClose() if length is None else LengthBody(length)


@settings(max_examples=300)
@given(st.lists(FIELD, max_size=4))
def test_request_body_follows_the_plain_rules(fields: list[tuple[str, str]]) -> None:
    raw = "POST /x HTTP/1.1\r\nHost: n\r\n" + "".join(f"{n}: {v}\r\n" for n, v in fields)
    try:
        head = parse_request_head((raw + "\r\n").encode("latin-1"))
    except HeadError:
        return
    assert kind(request_body(head)) == kind(reference_request_body(head))


@settings(max_examples=300)
@given(st.lists(FIELD, max_size=4), st.sampled_from(["GET", "HEAD"]), st.sampled_from([200, 204]))
def test_response_body_follows_the_plain_rules(
    fields: list[tuple[str, str]], method: str, status: int
) -> None:
    head = ResponseHead("HTTP/1.1", status, "", tuple(fields))
    expected = kind(reference_response_body(method, head))
    assert kind(response_body(method, head)) == expected
    framer = ResponseFramer(method)  # the same through the framer's own parse
    lines = "".join(f"{name}: {value}\r\n" for name, value in fields)
    raw = f"HTTP/1.1 {status} \r\n{lines}\r\n".encode("latin-1")
    assert framer.feed(raw) == len(raw) and kind(framer.body) == expected


def pieces(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    return [data[a:b] for a, b in itertools.pairwise([0, *points, len(data)])]


RESPONSE_START = st.sampled_from([b"", b"HTTP/1.1 200 OK\r\n", b"HTTP/1.1 100 Continue\r\n\r\n"])
SCRAPS = [b"\r\n", b":", b" ", b"0", b"a", b"\xb2", b"Content-Length: ", b"Transfer-Encoding: "]
SCRAPS += [b"chunked", b"\r\n0\r\n", b"HTTP/1.1 101 x\r\n", b","]


@settings(max_examples=500)
@given(
    RESPONSE_START,
    st.binary(max_size=200)
    | st.lists(st.sampled_from(SCRAPS)).map(b"".join)
    | st.lists(FIELD).map(lambda fs: "".join(f"{n}: {v}\r\n" for n, v in fs).encode("latin-1")),
    st.lists(st.integers(min_value=0), max_size=6),
)
def test_hostile_responses_only_raise_framing_error(
    start: bytes, rest: bytes, cuts: list[int]
) -> None:
    framer = ResponseFramer("GET")
    data = start + rest + b"\r\n\r\n"
    try:
        for part in pieces(data, cuts):
            used = framer.feed(part)
            assert 0 <= used <= len(part)
            if used < len(part):
                assert framer.done
                break
    except FramingError:
        return
    _ = framer.reusable


@settings(max_examples=200)
@given(
    st.lists(st.sampled_from(["Date: x", "Content-Type: a/b  ", "Server:k"]), max_size=4),
    st.binary(max_size=40),
    st.lists(st.integers(min_value=0), max_size=6),
)
def test_a_whole_response_is_framed_the_same_in_any_pieces(
    fields: list[str], body: bytes, cuts: list[int]
) -> None:
    head = "".join(f"{f}\r\n" for f in fields) + f"Content-Length: {len(body)}\r\n"
    message = b"HTTP/1.1 200 OK\r\n" + head.encode() + b"\r\n" + body
    whole = ResponseFramer("GET")
    assert whole.feed(message + b"HTTP/1.1") == len(message) and whole.reusable
    split = ResponseFramer("GET")
    used = sum(split.feed(part) for part in pieces(message, cuts))
    assert used == len(message) and split.reusable and split.head == whole.head


@pytest.mark.parametrize(
    ("value", "framed"),
    [
        ("2", ("LengthBody", 2)),
        ("07", ("LengthBody", 7)),
        ("\xb2", ("UntilClose", -1)),  # a digit to str.isdigit, not to int()
        ("2\xa0", ("UntilClose", -1)),  # NBSP is whitespace to str.strip, not to HTTP (nor Go)
        ("1,2", ("UntilClose", -1)),
        ("9" * 19, ("UntilClose", -1)),
        ("", ("UntilClose", -1)),
    ],
)
def test_response_content_length(value: str, framed: tuple[str, int]) -> None:
    head = ResponseHead("HTTP/1.1", 200, "OK", (("Content-Length", value),))
    assert kind(response_body("GET", head)) == framed
    framer = ResponseFramer("GET")
    raw = f"HTTP/1.1 200 OK\r\nContent-Length: {value}\r\n\r\n".encode("latin-1")
    assert framer.feed(raw) == len(raw) and kind(framer.body) == framed
