"""Where one HTTP/1.1 message ends in a byte stream: body framing and response heads. Pure.

Keep-alive at the front end needs exactly one thing beyond the request head: where the request
body ends (so the next request head can be routed again) and where the kubelet's response ends
(so the caller may send the next request and the upstream connection may be pooled). Nothing is
copied or rewritten; the trackers only count: `feed(data)` says how many leading bytes of `data`
belong to the message, and `done` says it is complete. Bytes are relayed unchanged.

The rules are RFC 9112 section 6, applied strictly so we never disagree with the kubelet (Go's
net/http) about a boundary: requests are framed by Content-Length or by `Transfer-Encoding:
chunked` alone (anything else is `None`: not framed, the connection is not reused); responses to
HEAD, 1xx, 204 and 304 have no body, then chunked, then Content-Length, else they run until the
connection closes. Chunk sizes are hex without sign or whitespace, lines end in CRLF, and size
lines and trailers are bounded. A framing error is raised as `FramingError`.
"""

from __future__ import annotations

from enum import Enum

from ravend.l7proxy.http_head import (
    DEFAULT_LIMITS,
    END,
    OWS,
    HeadError,
    HeadLimits,
    RequestHead,
    ResponseHead,
    head_end,
    parse_response_head,
)

MAX_CHUNK_LINE = 4096
"""Longest chunk-size line (with extensions) or trailer line, in bytes."""
MAX_TRAILERS = 16 * 1024
"""Most trailer bytes after the last chunk."""
_HEX = frozenset(b"0123456789abcdefABCDEF")


class FramingError(ValueError):
    """The bytes do not frame a message the way RFC 9112 requires."""


class _Chunk(Enum):
    SIZE = 1
    DATA = 2
    DATA_END = 3
    TRAILER = 4
    DONE = 5


class ChunkedBody:
    """Tracks a chunked body; `feed` returns how many bytes belong to it (all until the end)."""

    __slots__ = ("_line", "_remaining", "_state", "_trailer_bytes")

    def __init__(self) -> None:
        self._state = _Chunk.SIZE
        self._line = bytearray()
        self._remaining = 0
        self._trailer_bytes = 0

    @property
    def done(self) -> bool:
        return self._state is _Chunk.DONE

    def feed(self, data: bytes | bytearray | memoryview) -> int:
        pos, size = 0, len(data)
        while pos < size and self._state is not _Chunk.DONE:
            if self._state is _Chunk.DATA:
                # Bulk of the bytes: pure arithmetic, no copy.
                take = min(self._remaining, size - pos)
                pos += take
                self._remaining -= take
                if not self._remaining:
                    self._state = _Chunk.DATA_END
                continue
            pos = self._feed_line(data, pos)
        return pos

    def _feed_line(self, data: bytes | bytearray | memoryview, pos: int) -> int:
        """Collect one CRLF-terminated line (size, data end or trailer) and act on it."""
        end = bytes(data[pos : pos + MAX_CHUNK_LINE + 2]).find(b"\n")
        if end < 0:
            self._line += data[pos:]
            if len(self._line) > MAX_CHUNK_LINE:
                raise FramingError("chunk line too long")
            return len(data)
        self._line += data[pos : pos + end + 1]
        line = bytes(self._line)
        self._line.clear()
        if len(line) > MAX_CHUNK_LINE + 2 or not line.endswith(b"\r\n") or b"\r" in line[:-2]:
            raise FramingError("chunk line must end in CRLF")
        self._on_line(line[:-2])
        return pos + end + 1

    def _on_line(self, line: bytes) -> None:
        if self._state is _Chunk.DATA_END:
            if line:
                raise FramingError("chunk data longer than its size")
            self._state = _Chunk.SIZE
        elif self._state is _Chunk.SIZE:
            digits = line.split(b";", 1)[0]
            if not digits or len(digits) > 16 or not set(digits) <= _HEX:
                raise FramingError(f"bad chunk size {line[:20]!r}")
            self._remaining = int(digits, 16)
            self._state = _Chunk.DATA if self._remaining else _Chunk.TRAILER
        else:  # trailer section: lines until an empty one
            self._trailer_bytes += len(line) + 2
            if self._trailer_bytes > MAX_TRAILERS:
                raise FramingError("trailer section too large")
            if not line:
                self._state = _Chunk.DONE


class LengthBody:
    """A body of exactly `length` bytes."""

    __slots__ = ("done", "remaining")

    def __init__(self, length: int) -> None:
        self.remaining = length
        self.done = not length
        """An attribute kept by `feed`, not a property: it is read several times per request."""

    def feed(self, data: bytes | bytearray | memoryview) -> int:
        remaining, size = self.remaining, len(data)
        take = remaining if remaining < size else size  # min() without the builtin call
        self.remaining = remaining = remaining - take
        self.done = not remaining
        return take


class UntilClose:
    """A response body that ends when the connection does (never `done` by counting)."""

    __slots__ = ()
    done = False

    def feed(self, data: bytes | bytearray | memoryview) -> int:
        return len(data)


Body = ChunkedBody | LengthBody | UntilClose


def _content_length(values: tuple[str, ...]) -> int | None:
    """The one Content-Length of a message (identical repeats allowed, as in Go). Only SP and
    HTAB may pad it: `str.strip` would also take NBSP (0xA0 in latin-1), which Go refuses."""
    text = values[0].strip(OWS)
    if len(values) > 1 and any(v.strip(OWS) != text for v in values):
        return None
    # ASCII digits only: "²" passes `str.isdigit` and then makes `int` raise.
    return int(text) if text.isdigit() and text.isascii() and len(text) <= 18 else None


def request_body(head: RequestHead) -> Body | None:
    """The framing of a request's body; None when it cannot be framed for keep-alive."""
    fields = head.by_name
    codings = fields.get("transfer-encoding")
    if codings:
        # Only exactly "chunked" (what Go's server accepts); gzip,chunked etc. stay one-shot.
        if len(codings) != 1:
            return None
        return ChunkedBody() if head.tokens("transfer-encoding") == {"chunked"} else None
    values = fields.get("content-length")
    if not values:
        return LengthBody(0)
    length = _content_length(values)
    return None if length is None else LengthBody(length)


def response_body(method: str, head: ResponseHead) -> Body:
    """RFC 9112 6.3 for a final (non-1xx) response to `method`."""
    if method == "HEAD" or head.status in (204, 304):
        return LengthBody(0)
    codings = head.by_name.get("transfer-encoding")
    if codings:
        # Chunked only when it is the last coding applied (an empty last token is not).
        last = codings[-1].rpartition(",")[2]
        return ChunkedBody() if last.strip(OWS).lower() == "chunked" else UntilClose()
    values = head.by_name.get("content-length")
    if values:
        length = _content_length(values)
        return UntilClose() if length is None else LengthBody(length)
    return UntilClose()


def allows_reuse(version: str, connection: frozenset[str]) -> bool:
    """May the connection carry another message after this one (HTTP/1.1 persistence)?"""
    if "close" in connection:
        return False
    return version == "HTTP/1.1" or "keep-alive" in connection


class ResponseFramer:
    """Follows one response to `method` in the upstream byte stream, 1xx interim ones included.

    `feed(data)` returns how many leading bytes belong to the response; after `done`, any further
    byte the upstream sends is unsolicited (the connection must not be reused). A 101 ends the
    tracking with `upgraded`: what follows is not HTTP.
    """

    __slots__ = ("_buf", "_limits", "body", "done", "head", "method", "upgraded")

    def __init__(self, method: str, limits: HeadLimits = DEFAULT_LIMITS) -> None:
        self.method = method
        self.head: ResponseHead | None = None
        """The final response head once it arrived (interim 1xx heads are passed over)."""
        self.body: Body | None = None
        self.upgraded = False
        self.done = False
        """Upgraded, or the body is complete: kept by `feed` (read several times per request)."""
        self._limits = limits
        self._buf = bytearray()

    @property
    def reusable(self) -> bool:
        """Complete, framed by itself (not by a close) and the upstream allows another request."""
        head = self.head
        if head is None or self.upgraded or not self.done:
            return False
        return allows_reuse(head.version, head.tokens("connection"))

    def feed(self, data: bytes | bytearray | memoryview) -> int:
        body = self.body
        if body is not None:
            used = body.feed(data)  # past the head: only the body counts
            self.done = body.done
            return used
        used = self._feed_heads(data)
        body = self.body
        self.done = self.upgraded or (body is not None and body.done)
        return used

    def _feed_heads(self, data: bytes | bytearray | memoryview) -> int:
        """Consume interim and final heads, then what of the body is in `data`."""
        pos = 0
        while not self.upgraded:
            got = self._feed_head(data, pos)
            if got is None:
                return len(data)
            pos = got
            body = self.body
            if body is not None:
                return pos if pos == len(data) else pos + body.feed(data[pos:])
        return pos

    def _feed_head(self, data: bytes | bytearray | memoryview, pos: int) -> int | None:
        """Consume head bytes from `pos`; the position after a complete head, else None."""
        if not self._buf and not pos and isinstance(data, bytes):
            # The usual case: the whole head came in this read; parse it in place, no copy.
            found = data.find(END, 0, self._limits.max_head_bytes + len(END))
            if found >= 0:
                return self._on_head(data[: found + len(END)], found + len(END))
        start = len(self._buf)
        self._buf += data[pos : pos + self._limits.max_head_bytes + len(END)]
        try:
            end = head_end(self._buf, self._limits)
        except HeadError as exc:
            raise FramingError(f"response head: {exc.reason}") from exc
        if end is None:
            return None
        raw = bytes(self._buf[:end])
        self._buf.clear()
        return self._on_head(raw, pos + end - start)

    def _on_head(self, raw: bytes, consumed: int) -> int:
        """A complete head `raw` that ends `consumed` bytes into the current data."""
        try:
            head = parse_response_head(raw, self._limits)
        except HeadError as exc:
            raise FramingError(f"response head: {exc.reason}") from exc
        if head.status == 101:
            self.head, self.upgraded = head, True
        elif head.status >= 200:
            self.head, self.body = head, response_body(self.method, head)
        # else: an interim 1xx response (100 Continue, 103 Early Hints): another head follows.
        return consumed
