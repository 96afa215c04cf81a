"""A small, strict HTTP/1.1 message-head parser and writer. Pure, no I/O.

The L7 front end routes on the request head only and then splices bytes (environment.md: a
full HTTP framework per request costs ~8x a byte relay, and cannot hand over the socket after an
arbitrary 101). So the only HTTP it parses is one head: request line + header fields, with hard
limits, refusing anything ambiguous that could make us and the kubelet disagree on what the
request is (obs-fold, whitespace before the colon, duplicate Host, bad tokens, bare LF).

Errors carry the HTTP status to answer with (400, 414, 431, 505). The same code parses response
heads for the fake kubelet client and the benchmarks.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

CRLF = b"\r\n"
END = b"\r\n\r\n"

_TOKEN = re.compile(rb"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
_VERSION = re.compile(r"^HTTP/1\.[01]$")
# Field values: visible ASCII, obs-text, SP and HTAB; no CR, LF or NUL (smuggling vectors).
_BAD_VALUE = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
_BAD_IN_BLOCK = re.compile(rb"[\x00-\x08\x0b-\x1f\x7f]")
"""The same over joined lines, where CR/LF can no longer occur (checked before)."""


@dataclass(frozen=True)
class HeadLimits:
    """Bounds that keep one slow or hostile caller from holding much memory."""

    max_head_bytes: int = 64 * 1024
    """Request line plus all header fields, in bytes (Go's kubelet allows 1 MiB; kube-apiserver
    requests to kubelets carry a few hundred bytes)."""
    max_target_bytes: int = 8 * 1024
    """Longest request target (path + query) in bytes; longer is 414."""
    max_headers: int = 100
    """Most header fields in one head; more is 431."""


DEFAULT_LIMITS = HeadLimits()


class HeadError(ValueError):
    """The peer sent a head we refuse; `status` is the HTTP status to answer with."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"{status} {reason}")
        self.status = status
        self.reason = reason


Headers = tuple[tuple[str, str], ...]


def _index(headers: Headers) -> dict[str, tuple[str, ...]]:
    """Lowercased name -> values in order: built once per head, so every lookup on the hot
    path (Host, framing fields, Connection) is one dict access instead of a scan."""
    out: dict[str, tuple[str, ...]] = {}
    for name, value in headers:
        low = name.lower()
        out[low] = (*out[low], value) if low in out else (value,)
    return out


class _Fields:
    """Case-insensitive lookups over `headers` (an index built on first use)."""

    __slots__ = ()
    headers: Headers

    def __post_init__(self) -> None:
        object.__setattr__(self, "_index", _index(self.headers))  # frozen: set once, here

    def _lookup(self, name: str) -> tuple[str, ...]:
        index: dict[str, tuple[str, ...]] = self._index  # type: ignore[attr-defined]
        return index.get(name.lower(), ())

    def get(self, name: str) -> str | None:
        values = self._lookup(name)
        return values[0] if values else None

    def get_all(self, name: str) -> list[str]:
        return list(self._lookup(name))

    def tokens(self, name: str) -> frozenset[str]:
        """Comma-separated tokens of every `name` field, lowercased (Connection, Upgrade)."""
        values = self._lookup(name)
        if not values:
            return _NO_TOKENS
        return frozenset(t.strip().lower() for v in values for t in v.split(",") if t.strip())


_NO_TOKENS: frozenset[str] = frozenset()


@dataclass(frozen=True)
class RequestHead(_Fields):
    """One parsed request head; header names keep their case, lookups ignore it."""

    method: str
    target: str
    version: str
    headers: Headers

    @property
    def path(self) -> str:
        target = self.target
        if "?" not in target and "#" not in target:
            return target  # the common case: no need for urlsplit
        return urlsplit(target).path

    @property
    def query(self) -> dict[str, list[str]]:
        if "?" not in self.target:
            return {}
        return parse_qs(urlsplit(self.target).query, keep_blank_values=True)

    @property
    def host(self) -> str | None:
        return self.get("host")

    @property
    def is_upgrade(self) -> bool:
        """An Upgrade request (WebSocket, SPDY/3.1): bytes flow raw after a 101."""
        return bool(self._lookup("upgrade")) and "upgrade" in self.tokens("connection")


@dataclass(frozen=True)
class ResponseHead(_Fields):
    version: str
    status: int
    reason: str
    headers: Headers


def head_end(buf: bytes | bytearray, limits: HeadLimits = DEFAULT_LIMITS) -> int | None:
    """Length of the complete head at the start of `buf` (incl. the blank line), or None if
    more bytes are needed. Raises HeadError(431) once the head cannot fit the limit."""
    index = buf.find(END, 0, limits.max_head_bytes + len(END))
    if index >= 0:
        return index + len(END)
    if len(buf) >= limits.max_head_bytes + len(END):
        raise HeadError(431, "request header fields too large")
    return None


def _fields(lines: list[bytes], limits: HeadLimits) -> Headers:
    if len(lines) > limits.max_headers:
        raise HeadError(431, f"more than {limits.max_headers} header fields")
    # One scan of the whole block for control characters (bare CR/LF were refused already);
    # only a head that has one goes through the per-field check, for its exact message.
    check_values = _BAD_IN_BLOCK.search(b"".join(lines)) is not None
    out: list[tuple[str, str]] = []
    for line in lines:
        if line[:1] in (b" ", b"\t"):
            raise HeadError(400, "obsolete line folding")
        name, sep, value = line.partition(b":")
        if not sep or not _TOKEN.match(name):
            raise HeadError(400, f"malformed header field {line[:40]!r}")
        if check_values and _BAD_VALUE.search(value):
            raise HeadError(400, f"control character in header {name.decode()}")
        out.append((name.decode("ascii"), value.strip(b" \t").decode("latin-1")))
    return tuple(out)


def _split_head(data: bytes, limits: HeadLimits) -> tuple[bytes, list[bytes]]:
    if len(data) > limits.max_head_bytes + len(END):
        raise HeadError(431, "request header fields too large")
    if not data.endswith(END):
        raise HeadError(400, "incomplete head")
    body = data[: -len(END)]
    crlf = body.count(CRLF)
    if body.count(b"\n") != crlf or body.count(b"\r") != crlf:
        raise HeadError(400, "bare CR or LF in head")
    lines = body.split(CRLF)
    return lines[0], lines[1:]


def parse_request_head(data: bytes, limits: HeadLimits = DEFAULT_LIMITS) -> RequestHead:
    """Parse `data`, which must be exactly one head ending in CRLF CRLF (see `head_end`)."""
    first, rest = _split_head(data, limits)
    parts = first.split(b" ")
    if len(parts) != 3:
        raise HeadError(400, "malformed request line")
    method, target, version = parts
    if not _TOKEN.match(method):
        raise HeadError(400, "malformed method")
    if len(target) > limits.max_target_bytes:
        raise HeadError(414, "request target too long")
    if not target.startswith(b"/") or _BAD_VALUE.search(target) or b"\t" in target:
        raise HeadError(400, "request target must be an origin-form path")
    if not _VERSION.match(version.decode("latin-1")):
        raise HeadError(505, "only HTTP/1.0 and HTTP/1.1 are supported")
    head = RequestHead(
        method.decode("ascii"), target.decode("latin-1"), version.decode(), _fields(rest, limits)
    )
    _check_request_framing(head)
    return head


def _check_request_framing(head: RequestHead) -> None:
    if len(head.get_all("host")) > 1:
        raise HeadError(400, "more than one Host header")
    if head.version == "HTTP/1.1" and head.host is None:
        raise HeadError(400, "missing Host header")
    lengths = {v.strip() for v in head.get_all("content-length")}
    if len(lengths) > 1 or any(not v.isdigit() for v in lengths):
        raise HeadError(400, "invalid Content-Length")
    if lengths and head.get_all("transfer-encoding"):
        # The classic request-smuggling ambiguity: refuse rather than pick one reading.
        raise HeadError(400, "both Content-Length and Transfer-Encoding")


def parse_response_head(data: bytes, limits: HeadLimits = DEFAULT_LIMITS) -> ResponseHead:
    first, rest = _split_head(data, limits)
    parts = first.split(b" ", 2)
    if len(parts) < 2 or not parts[1].isdigit() or len(parts[1]) != 3:
        raise HeadError(502, f"malformed status line {first[:60]!r}")
    version = parts[0].decode("latin-1")
    if not _VERSION.match(version):
        raise HeadError(502, "upstream is not HTTP/1.x")
    reason = parts[2].decode("latin-1") if len(parts) == 3 else ""
    return ResponseHead(version, int(parts[1]), reason, _fields(rest, limits))


# ---- writing ---------------------------------------------------------------------------------

HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-connection"})


def render_request_head(head: RequestHead) -> bytes:
    lines = [f"{head.method} {head.target} {head.version}"]
    lines += [f"{name}: {value}" for name, value in head.headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def for_upstream(head: RequestHead, keep_alive: bool = False) -> RequestHead:
    """The head to send to the kubelet.

    Upgrade requests keep their Connection header untouched: it must say "Upgrade", and after
    the 101 the connection is a raw byte stream anyway. Other requests lose the caller's
    hop-by-hop fields (Connection, Keep-Alive, Proxy-Connection; not the fields Connection
    names, which could otherwise strip framing fields): the upstream connection is ours. With
    `keep_alive` (HTTP/1.1, a pooled upstream whose response the front end frames) nothing is
    added, as 1.1 persists by default; without it `Connection: close` makes the kubelet close
    after its response, so the exchange ends without the response being framed.
    """
    if head.is_upgrade:
        return head
    kept = tuple((k, v) for k, v in head.headers if k.lower() not in HOP_BY_HOP)
    if keep_alive:
        if len(kept) == len(head.headers):
            return head  # nothing to drop (the usual case): no second head to build
        return RequestHead(head.method, head.target, head.version, kept)
    return RequestHead(head.method, head.target, head.version, (*kept, ("Connection", "close")))


REASONS = {
    101: "Switching Protocols",
    200: "OK",
    400: "Bad Request",
    403: "Forbidden",
    404: "Not Found",
    408: "Request Timeout",
    414: "URI Too Long",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
    505: "HTTP Version Not Supported",
}


def render_response_head(status: int, headers: Headers = (), reason: str | None = None) -> bytes:
    lines = [f"HTTP/1.1 {status} {reason or REASONS.get(status, 'Status')}"]
    lines += [f"{name}: {value}" for name, value in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def simple_response(status: int, message: str, headers: Headers = ()) -> bytes:
    """A complete short text response that closes the connection (errors and refusals)."""
    body = (message.rstrip("\n") + "\n").encode()
    base: Headers = (
        ("Content-Type", "text/plain; charset=utf-8"),
        ("Content-Length", str(len(body))),
        ("Connection", "close"),
    )
    return render_response_head(status, base + headers) + body
