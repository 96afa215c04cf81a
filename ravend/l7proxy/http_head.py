"""A small, strict HTTP/1.1 message-head parser, and the request-head writer. Pure, no I/O.

The L7 front end routes on the request head only and then splices bytes (environment.md: a
full HTTP framework per request costs ~8x a byte relay, and cannot hand over the socket after an
arbitrary 101). So the only HTTP it parses is one head: request line + header fields, with hard
limits, refusing anything ambiguous that could make us and the kubelet disagree on what the
request is (obs-fold, whitespace before the colon, duplicate Host, bad tokens, bare LF).

Every kept-alive request and framed response comes through here, so a head is decoded once
(latin-1, byte for byte), one regex accepts all of it and one `findall` yields its fields. A head
the regex refuses goes through the per-line path, which decides as before and says exactly why;
the regex accepts only what that path accepts (tests/l7_front/test_http_head_fast.py).

Errors carry the HTTP status to answer with (400, 414, 431, 505). The same code parses response
heads for the front end's framer, the fake kubelet client and the benchmarks; the responses the
proxy writes itself are in http_reply.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar, Final
from urllib.parse import parse_qs, urlsplit

CRLF = b"\r\n"
END = b"\r\n\r\n"
OWS = " \t"
"""Optional whitespace around field values and list items (RFC 9110 5.6.3): SP and HTAB only."""

_TOKEN = re.compile(rb"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
_VERSION = re.compile(r"^HTTP/1\.[01]$")
# Field values: visible ASCII, obs-text, SP and HTAB; no CR, LF or NUL (smuggling vectors).
_BAD_VALUE = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")

# The fast path, over the head decoded as latin-1 (one str char per byte). Each piece is the
# per-line rule written as a character class, so CR and LF appear only as line ends (no bare
# CR/LF), a line never starts with whitespace (no obs-fold), a name is a token right before its
# colon, and a value holds no control character but HTAB. Quantifiers are possessive: a
# hostile head fails in linear time.
_TCHAR = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]"
_VCHAR = r"[\x21-\x7e\x80-\xff]"
_LINES = rf"(?:{_TCHAR}++:[\t\x20-\x7e\x80-\xff]*+\r\n)*+\r\n"
_REQUEST = re.compile(rf"({_TCHAR}++) (/[^\x00-\x20\x7f]*+) (HTTP/1\.[01])\r\n{_LINES}")
_RESPONSE = re.compile(rf"(HTTP/1\.[01]) ([0-9]{{3}})(?: ([^\r\n]*+))?\r\n{_LINES}")
_FIELD = re.compile(rf"({_TCHAR}++):[ \t]*+([^\r]*+)\r\n")
"""One field line -> (name, value after its leading SP/HTAB), of a head that `_LINES` accepted."""
_FIELD_OWS = re.compile(
    rf"({_TCHAR}++):[ \t]*+((?:{_VCHAR}++(?:[ \t]++{_VCHAR}++)*+)?+)[ \t]*+\r\n"
)
"""The same, also without trailing SP/HTAB: slower, for the heads that have some."""


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
_Index = dict[str, tuple[str, ...]]


def _index(headers: Headers) -> _Index:
    """Lowercased name -> values in order: built once per head, so every lookup on the hot
    path (Host, framing fields, Connection) is one dict access instead of a scan."""
    index: _Index = {}
    for name, value in headers:  # a plain loop: cheaper than a comprehension for a few fields
        index[name.lower()] = (value,)
    if len(index) == len(headers):
        return index  # no name repeats (the usual head)
    index.clear()
    for name, value in headers:
        low = name.lower()
        index[low] = (*index[low], value) if low in index else (value,)
    return index


_NO_TOKENS: frozenset[str] = frozenset()


class _Fields:
    """Case-insensitive lookups over `headers`, through an index built with the head.

    Heads are slotted classes, not frozen dataclasses, which pay an `object.__setattr__` per
    field on every request and response. `Final` keeps mypy refusing assignments; equality,
    hash and repr are the dataclass ones (over `_NAMES`).
    """

    __slots__ = ()
    by_name: Mapping[str, tuple[str, ...]]
    """Lowercased field name -> its values in order (the framing code's lookup, no copy)."""
    _NAMES: ClassVar[tuple[str, ...]]
    """The attributes that make up equality, hash and repr, in constructor order."""

    def _key(self) -> tuple[object, ...]:
        return tuple(getattr(self, name) for name in self._NAMES)

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        assert isinstance(other, _Fields)
        return self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in self._NAMES)
        return f"{type(self).__name__}({fields})"

    def get(self, name: str) -> str | None:
        values = self.by_name.get(name.lower())
        return values[0] if values else None

    def get_all(self, name: str) -> list[str]:
        return list(self.by_name.get(name.lower(), ()))

    def tokens(self, name: str) -> frozenset[str]:
        """Comma-separated tokens of every `name` field, lowercased (Connection, Upgrade)."""
        values = self.by_name.get(name.lower())
        if not values:
            return _NO_TOKENS
        if len(values) == 1 and "," not in values[0]:  # the usual "keep-alive", "Upgrade"
            token = values[0].strip(OWS).lower()
            return frozenset((token,)) if token else _NO_TOKENS
        # Joining the values with "," gives the same pieces as splitting each one.
        pieces = ",".join(values).lower().split(",")
        return frozenset(filter(None, (piece.strip(OWS) for piece in pieces)))


class RequestHead(_Fields):
    """One parsed request head; header names keep their case, lookups ignore it."""

    __slots__ = ("_raw", "by_name", "headers", "method", "target", "version")
    _NAMES = ("method", "target", "version", "headers")

    def __init__(self, method: str, target: str, version: str, headers: Headers) -> None:
        self.method: Final = method
        self.target: Final = target
        self.version: Final = version
        self.headers: Final = headers
        self.by_name = _index(headers)
        self._raw: bytes | None = None  # set by parse_request_head only: see render_request_head

    @property
    def raw(self) -> bytes | None:
        """The exact bytes `parse_request_head` accepted for this head, else None."""
        return self._raw

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
        values = self.by_name.get("host")
        return values[0] if values else None

    @property
    def is_upgrade(self) -> bool:
        """An Upgrade request (WebSocket, SPDY/3.1): bytes flow raw after a 101."""
        return "upgrade" in self.by_name and "upgrade" in self.tokens("connection")


class ResponseHead(_Fields):
    __slots__ = ("by_name", "headers", "reason", "status", "version")
    _NAMES = ("version", "status", "reason", "headers")

    def __init__(self, version: str, status: int, reason: str, headers: Headers) -> None:
        self.version: Final = version
        self.status: Final = status
        self.reason: Final = reason
        self.headers: Final = headers
        self.by_name = _index(headers)


def head_end(buf: bytes | bytearray, limits: HeadLimits = DEFAULT_LIMITS) -> int | None:
    """Length of the complete head at the start of `buf` (incl. the blank line), or None if
    more bytes are needed. Raises HeadError(431) once the head cannot fit the limit."""
    index = buf.find(END, 0, limits.max_head_bytes + len(END))
    if index >= 0:
        return index + len(END)
    if len(buf) >= limits.max_head_bytes + len(END):
        raise HeadError(431, "request header fields too large")
    return None


# ---- the fast path ---------------------------------------------------------------------------


def _pairs(text: str, start: int, limits: HeadLimits) -> Headers:
    """The fields of a head `_REQUEST`/`_RESPONSE` accepted; they start at `start`."""
    # A value ends in SP/HTAB only where one comes right before a CRLF; the usual head has
    # none, and there the simpler pattern gives the same values as the stripping one.
    field = _FIELD_OWS if " \r\n" in text or "\t\r\n" in text else _FIELD
    pairs = field.findall(text, start, len(text) - 2)
    if len(pairs) > limits.max_headers:
        raise HeadError(431, f"more than {limits.max_headers} header fields")
    return tuple(pairs)


def parse_request_head(data: bytes, limits: HeadLimits = DEFAULT_LIMITS) -> RequestHead:
    """Parse `data`, which must be exactly one head ending in CRLF CRLF (see `head_end`)."""
    if len(data) > limits.max_head_bytes + len(END):
        raise HeadError(431, "request header fields too large")
    text = data.decode("latin-1")
    match = _REQUEST.fullmatch(text)
    if match is None:
        head = _request_by_lines(data, limits)  # refused (mostly): find out exactly why
    else:
        # Past the regex only the limits and the framing checks can refuse, in the order the
        # per-line path checks them (414 before 431 before the framing 400s).
        method, target, version = match.groups()
        if len(target) > limits.max_target_bytes:
            raise HeadError(414, "request target too long")
        head = RequestHead(method, target, version, _pairs(text, match.end(3) + 2, limits))
        _check_request_framing(head)
    head._raw = bytes(data)  # the same object when `data` is bytes
    return head


def parse_response_head(data: bytes, limits: HeadLimits = DEFAULT_LIMITS) -> ResponseHead:
    if len(data) > limits.max_head_bytes + len(END):
        raise HeadError(431, "request header fields too large")
    text = data.decode("latin-1")
    match = _RESPONSE.fullmatch(text)
    if match is None:
        return _response_by_lines(data, limits)
    version, status, reason = match.groups()
    start = match.end(3 if reason is not None else 2) + 2
    return ResponseHead(version, int(status), reason or "", _pairs(text, start, limits))


def _check_request_framing(head: RequestHead) -> None:
    index = head.by_name
    hosts = index.get("host", ())
    if len(hosts) > 1:
        raise HeadError(400, "more than one Host header")
    if not hosts and head.version == "HTTP/1.1":
        raise HeadError(400, "missing Host header")
    values = index.get("content-length")
    if values is None:
        return
    lengths = {v.strip(OWS) for v in values}  # not str.strip: "5\xa0" (NBSP) is no length
    # ASCII digits only: `str.isdigit` alone also takes "²", which `int` then refuses.
    if len(lengths) > 1 or not all(v.isdigit() and v.isascii() for v in lengths):
        raise HeadError(400, "invalid Content-Length")
    if "transfer-encoding" in index:
        # The classic request-smuggling ambiguity: refuse rather than pick one reading.
        raise HeadError(400, "both Content-Length and Transfer-Encoding")


# ---- the per-line path: the precise error for a head the fast path refused --------------------


def _fields(lines: list[bytes], limits: HeadLimits) -> Headers:
    if len(lines) > limits.max_headers:
        raise HeadError(431, f"more than {limits.max_headers} header fields")
    out: list[tuple[str, str]] = []
    for line in lines:
        if line[:1] in (b" ", b"\t"):
            raise HeadError(400, "obsolete line folding")
        name, sep, value = line.partition(b":")
        if not sep or not _TOKEN.match(name):
            raise HeadError(400, f"malformed header field {line[:40]!r}")
        if _BAD_VALUE.search(value):
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


def _request_by_lines(data: bytes, limits: HeadLimits) -> RequestHead:
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


def _response_by_lines(data: bytes, limits: HeadLimits) -> ResponseHead:
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
    # A head `parse_request_head` accepted is sent as the caller's own bytes: it passed every
    # strict check (no obs-fold, no bare CR/LF, no control character, tokens for method and
    # names, one Host, not both Content-Length and Transfer-Encoding), so a re-render would
    # differ from it only in the optional whitespace around values. A head built any other
    # way (`for_upstream` dropping fields or adding Connection: close, or `RequestHead(...)`)
    # has no raw bytes and is rendered from its fields.
    raw = head._raw
    if raw is not None:
        return raw
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
    if keep_alive and head.by_name.keys().isdisjoint(HOP_BY_HOP):
        return head  # nothing to drop (the usual case): sent as it came, see render_request_head
    kept = tuple((k, v) for k, v in head.headers if k.lower() not in HOP_BY_HOP)
    if keep_alive:
        return RequestHead(head.method, head.target, head.version, kept)
    return RequestHead(head.method, head.target, head.version, (*kept, ("Connection", "close")))
