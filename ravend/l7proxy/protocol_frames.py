"""Wire format of the L7 tunnel protocol: frame header, frame types, payload codecs. Pure, no I/O.

Every frame is a fixed 10-byte big-endian header followed by `length` payload bytes:

    +-----------------+---------+---------+----------------------+
    | length (u32)    | type u8 | flags u8| stream id (u32)      |
    +-----------------+---------+---------+----------------------+

Payloads:
    HELLO          version u16, max_frame_size u32, initial_window u32,
                   connection_window u32, max_concurrent_streams u32            (stream 0)
    OPEN           port u16, node-name length u8, node name (UTF-8), metadata   flag TLS
    DATA           opaque bytes (flow controlled)
    WINDOW_UPDATE  increment u32 (stream 0 = the connection window)
    HALF_CLOSE     empty (the sender will send no more DATA on this stream: FIN)
    RESET          error code u32, reason (UTF-8)
    PING / PONG    8 opaque bytes                                               (stream 0)
    GOAWAY         last stream id u32, error code u32, reason (UTF-8)           (stream 0)

A length field is 32 bits so that a corrupt header is caught by the max-frame-size check rather
than by waiting forever for 16 MiB that never come.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum

from ravend.l7proxy.protocol_errors import RemoteProtocolError

HEADER = struct.Struct(">IBBI")
HEADER_SIZE = HEADER.size
PROTOCOL_VERSION = 1
MAX_WINDOW = 2**31 - 1
MAX_STREAM_ID = 2**31 - 1
MIN_FRAME_SIZE = 1024
MAX_FRAME_SIZE_LIMIT = 16 * 1024 * 1024
MAX_REASON_BYTES = 512

_HELLO = struct.Struct(">HIIII")
_OPEN_HEAD = struct.Struct(">HB")
_U32 = struct.Struct(">I")
_GOAWAY_HEAD = struct.Struct(">II")
PING_SIZE = 8


class FrameType(IntEnum):
    HELLO = 0
    OPEN = 1
    DATA = 2
    WINDOW_UPDATE = 3
    HALF_CLOSE = 4
    RESET = 5
    PING = 6
    PONG = 7
    GOAWAY = 8


class ErrorCode(IntEnum):
    """Codes carried by RESET and GOAWAY; unknown codes received are kept as plain ints."""

    NO_ERROR = 0
    PROTOCOL_ERROR = 1
    INTERNAL_ERROR = 2
    FLOW_CONTROL_ERROR = 3
    REFUSED_STREAM = 4
    CANCEL = 5
    FRAME_SIZE_ERROR = 6
    STREAM_CLOSED = 7
    CONNECT_FAILED = 8
    VERSION_MISMATCH = 9
    KEEPALIVE_TIMEOUT = 10


FLAG_TLS = 0x01
_FRAME_TYPES = frozenset(int(t) for t in FrameType)
_STREAM_FRAMES = frozenset({FrameType.OPEN, FrameType.DATA, FrameType.HALF_CLOSE, FrameType.RESET})


@dataclass(frozen=True, slots=True)
class ProtocolSettings:
    """What one side announces in its HELLO; the peer must respect it."""

    version: int = PROTOCOL_VERSION
    """Protocol version; a peer with another version is refused with VERSION_MISMATCH."""
    max_frame_size: int = 64 * 1024
    """Largest frame payload (bytes) this side accepts. Bigger frames mean fewer Python-level
    per-frame costs in bulk transfers; smaller ones interleave streams more finely."""
    initial_window: int = 1024 * 1024
    """Bytes the peer may send on one stream before we acknowledge consumption. Also the most
    a single stream can ever buffer on our side."""
    connection_window: int = 16 * 1024 * 1024
    """Bytes the peer may have in flight over all streams together."""
    max_concurrent_streams: int = 1024
    """Streams the peer may have open towards us at once; more are refused per stream."""

    def __post_init__(self) -> None:
        if not MIN_FRAME_SIZE <= self.max_frame_size <= MAX_FRAME_SIZE_LIMIT:
            raise ValueError(f"max_frame_size {self.max_frame_size} out of range")
        for name in ("initial_window", "connection_window"):
            if not 0 < getattr(self, name) <= MAX_WINDOW:
                raise ValueError(f"{name} out of range")
        if not 0 <= self.max_concurrent_streams <= MAX_STREAM_ID:
            raise ValueError("max_concurrent_streams out of range")


@dataclass(frozen=True, slots=True)
class Target:
    """Where the edge side should connect a stream: a node's port, plus opaque metadata."""

    node: str
    port: int
    tls: bool = False
    metadata: bytes = b""


def encode_header(length: int, ftype: FrameType, flags: int, stream_id: int) -> bytes:
    return HEADER.pack(length, ftype, flags, stream_id)


def encode_frame(ftype: FrameType, stream_id: int, payload: bytes = b"", flags: int = 0) -> bytes:
    return HEADER.pack(len(payload), ftype, flags, stream_id) + payload


def encode_hello(s: ProtocolSettings) -> bytes:
    payload = _HELLO.pack(
        s.version, s.max_frame_size, s.initial_window, s.connection_window, s.max_concurrent_streams
    )
    return encode_frame(FrameType.HELLO, 0, payload)


def decode_hello(payload: bytes) -> ProtocolSettings:
    if len(payload) < _HELLO.size:
        raise RemoteProtocolError("HELLO too short", ErrorCode.FRAME_SIZE_ERROR)
    version, max_frame, window, conn_window, streams = _HELLO.unpack_from(payload)
    if version != PROTOCOL_VERSION:
        raise RemoteProtocolError(f"unsupported version {version}", ErrorCode.VERSION_MISMATCH)
    try:
        return ProtocolSettings(version, max_frame, window, conn_window, streams)
    except ValueError as exc:
        raise RemoteProtocolError(f"bad HELLO: {exc}", ErrorCode.PROTOCOL_ERROR) from None


def encode_open_payload(target: Target) -> tuple[bytes, int]:
    """Return (payload, flags) for an OPEN frame; raises ValueError on an unencodable target."""
    name = target.node.encode()
    if not 0 < len(name) <= 255:
        raise ValueError("node name must be 1..255 UTF-8 bytes")
    if not 0 <= target.port <= 0xFFFF:
        raise ValueError("port out of range")
    payload = _OPEN_HEAD.pack(target.port, len(name)) + name + target.metadata
    return payload, FLAG_TLS if target.tls else 0


def decode_open_payload(payload: bytes, flags: int) -> Target:
    """Parse an OPEN payload; raises RemoteProtocolError (a stream-level fault) when malformed."""
    if len(payload) < _OPEN_HEAD.size:
        raise RemoteProtocolError("OPEN too short", ErrorCode.PROTOCOL_ERROR)
    port, name_len = _OPEN_HEAD.unpack_from(payload)
    end = _OPEN_HEAD.size + name_len
    if name_len == 0 or len(payload) < end:
        raise RemoteProtocolError("OPEN node name truncated", ErrorCode.PROTOCOL_ERROR)
    try:
        node = payload[_OPEN_HEAD.size : end].decode()
    except UnicodeDecodeError:
        raise RemoteProtocolError("OPEN node name not UTF-8", ErrorCode.PROTOCOL_ERROR) from None
    return Target(node, port, bool(flags & FLAG_TLS), bytes(payload[end:]))


def encode_u32(value: int) -> bytes:
    return _U32.pack(value)


def decode_u32(payload: bytes, what: str) -> int:
    if len(payload) != _U32.size:
        raise RemoteProtocolError(f"{what} payload must be 4 bytes", ErrorCode.FRAME_SIZE_ERROR)
    value: int = _U32.unpack(payload)[0]
    return value


def encode_reason(reason: str) -> bytes:
    # Truncate on a character boundary so the peer can always decode it.
    return reason.encode()[:MAX_REASON_BYTES].decode(errors="ignore").encode()


def decode_reason(raw: bytes) -> str:
    # The reason is diagnostic text only; never fail a frame because of its spelling.
    return raw.decode(errors="replace")


def encode_reset(stream_id: int, code: int, reason: str) -> bytes:
    return encode_frame(FrameType.RESET, stream_id, _U32.pack(code) + encode_reason(reason))


def decode_reset(payload: bytes) -> tuple[int, str]:
    if len(payload) < _U32.size:
        raise RemoteProtocolError("RESET too short", ErrorCode.FRAME_SIZE_ERROR)
    return _U32.unpack_from(payload)[0], decode_reason(payload[_U32.size :])


def encode_goaway(last_stream_id: int, code: int, reason: str) -> bytes:
    payload = _GOAWAY_HEAD.pack(last_stream_id, code) + encode_reason(reason)
    return encode_frame(FrameType.GOAWAY, 0, payload)


def decode_goaway(payload: bytes) -> tuple[int, int, str]:
    if len(payload) < _GOAWAY_HEAD.size:
        raise RemoteProtocolError("GOAWAY too short", ErrorCode.FRAME_SIZE_ERROR)
    last, code = _GOAWAY_HEAD.unpack_from(payload)
    return last & MAX_STREAM_ID, code, decode_reason(payload[_GOAWAY_HEAD.size :])


Frame = tuple[int, int, int, bytes, int]
"""(type, flags, stream id, payload, offset just past the frame) from `parse_frame`."""


def parse_frame(
    buf: bytes | bytearray | memoryview, pos: int, max_frame_size: int, expect_hello: bool
) -> Frame | None:
    """Parse the frame starting at `buf[pos]`; None while it is incomplete.

    Nothing is consumed: the caller advances to the returned offset. The payload is the one
    copy made of the frame (it must outlive a reused receive buffer). The header is judged
    before the payload is waited for, so garbage fails at once instead of stalling on a bogus
    length.
    """
    if len(buf) - pos < HEADER_SIZE:
        return None
    length, ftype, flags, stream_id = HEADER.unpack_from(buf, pos)
    if ftype not in _FRAME_TYPES:
        raise RemoteProtocolError(f"unknown frame type {ftype}")
    if length > max_frame_size:
        raise RemoteProtocolError(f"frame of {length} bytes", ErrorCode.FRAME_SIZE_ERROR)
    if stream_id > MAX_STREAM_ID:
        raise RemoteProtocolError("stream id out of range")
    # Stream frames need a stream id, connection frames must not have one (WINDOW_UPDATE: both).
    if (ftype in _STREAM_FRAMES) != (stream_id != 0) and ftype != FrameType.WINDOW_UPDATE:
        raise RemoteProtocolError(f"{FrameType(ftype).name} on wrong stream {stream_id}")
    if (ftype == FrameType.HELLO) != expect_hello:
        raise RemoteProtocolError("HELLO must come first, exactly once")
    start = pos + HEADER_SIZE
    end = start + length
    if len(buf) < end:
        return None
    # Slicing a memoryview is free; bytes() of it is the single copy.
    with memoryview(buf) as view:
        payload = bytes(view[start:end])
    return ftype, flags, stream_id, payload, end


def frame_end(buf: bytes | bytearray | memoryview, pos: int) -> int:
    """Offset just past the frame whose (already judged) header starts at `buf[pos]`."""
    length: int = HEADER.unpack_from(buf, pos)[0]
    return pos + HEADER_SIZE + length


class FrameReader:
    """Keeps the tail of a frame split across received chunks. Complete frames are parsed
    straight out of each chunk by the caller (one copy: the payload); only an incomplete
    frame's bytes are kept here, in `partial`, until the chunks that complete it arrive."""

    def __init__(self, max_frame_size: int) -> None:
        self.max_frame_size = max_frame_size
        self.partial = bytearray()
        """Bytes of the frame that the last chunk left incomplete (empty: none)."""

    def clear(self) -> None:
        self.partial.clear()

    def keep(self, tail: memoryview) -> None:
        """Keep the start of an incomplete frame (the end of a chunk) for `complete`."""
        self.partial += tail

    def complete(self, view: memoryview, expect_hello: bool) -> tuple[int, Frame | None]:
        """Top up the kept partial frame from `view`; (bytes used, the frame once whole).

        Only the bytes that frame still lacks are copied, so a large read that completes a
        frame does not drag the frames behind it through the buffer too. While the frame is
        still incomplete, all of `view` was used.
        """
        buf = self.partial
        used = 0
        if len(buf) < HEADER_SIZE:
            used = min(HEADER_SIZE - len(buf), len(view))
            buf += view[:used]
            if len(buf) < HEADER_SIZE:
                return used, None
        # Judges the header even while the payload is incomplete (garbage fails at once).
        frame = parse_frame(buf, 0, self.max_frame_size, expect_hello)
        if frame is None:
            more = min(frame_end(buf, 0) - len(buf), len(view) - used)
            buf += view[used : used + more]
            used += more
            frame = parse_frame(buf, 0, self.max_frame_size, expect_hello)
        if frame is not None:
            buf.clear()
        return used, frame
