"""Minimal wire codecs of the fake kubelet and its client: WebSocket and SPDY/3.1 frames. Pure.

Only what an echo needs, so tests can prove the proxy relays both upgrade protocols byte for
byte in both directions:
- WebSocket (RFC 6455): the accept key, frames of any length, client masking; plus Kubernetes'
  `v5.channel.k8s.io` convention (first payload byte = channel: 0 stdin, 1 stdout, 2 stderr,
  3 status, 255 "close channel" in v5).
- SPDY/3.1: the 8-byte data and control frame headers only. Header blocks of SYN_STREAM are
  zlib-compressed with a dictionary; we never decode them (the kubelet side ignores control
  frames other than PING and GOAWAY). That is enough to echo data frames, not to run kubectl.
"""

from __future__ import annotations

import base64
import hashlib
import os
import struct
from dataclasses import dataclass

WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
WS_CONT, WS_TEXT, WS_BINARY, WS_CLOSE, WS_PING, WS_PONG = 0, 1, 2, 8, 9, 10
CH_STDIN, CH_STDOUT, CH_STDERR, CH_STATUS, CH_CLOSE = 0, 1, 2, 3, 255
K8S_WS_PROTOCOL = "v5.channel.k8s.io"
SPDY_VERSION = 3
SPDY_PING, SPDY_GOAWAY = 6, 7
SPDY_FLAG_FIN = 0x01


class WireError(ValueError):
    """The peer sent a frame we cannot decode."""


def ws_accept(key: str) -> str:
    return base64.b64encode(hashlib.sha1(key.encode() + WS_GUID).digest()).decode()


def ws_key() -> str:
    return base64.b64encode(os.urandom(16)).decode()


def _mask(data: bytes, key: bytes) -> bytes:
    # int arithmetic instead of a per-byte loop: fast enough for multi-megabyte test payloads.
    if not data:
        return data
    repeated = (key * (len(data) // 4 + 1))[: len(data)]
    masked = int.from_bytes(data, "big") ^ int.from_bytes(repeated, "big")
    return masked.to_bytes(len(data), "big")


def ws_frame(opcode: int, payload: bytes, *, masked: bool = False, fin: bool = True) -> bytes:
    """One frame; clients must mask (`masked=True`), servers must not."""
    first = (0x80 if fin else 0) | opcode
    n = len(payload)
    mask_bit = 0x80 if masked else 0
    if n < 126:
        head = struct.pack(">BB", first, mask_bit | n)
    elif n < 1 << 16:
        head = struct.pack(">BBH", first, mask_bit | 126, n)
    else:
        head = struct.pack(">BBQ", first, mask_bit | 127, n)
    if not masked:
        return head + payload
    key = os.urandom(4)
    return head + key + _mask(payload, key)


@dataclass(frozen=True)
class WsFrame:
    fin: bool
    opcode: int
    payload: bytes


class WsParser:
    """Incremental frame decoder: `feed(bytes)` returns the complete frames so far."""

    def __init__(self, max_payload: int = 64 * 1024 * 1024) -> None:
        self._buf = bytearray()
        self._max = max_payload

    def feed(self, data: bytes) -> list[WsFrame]:
        self._buf += data
        frames: list[WsFrame] = []
        while (frame := self._next()) is not None:
            frames.append(frame)
        return frames

    def _next(self) -> WsFrame | None:
        buf = self._buf
        if len(buf) < 2:
            return None
        first, second = buf[0], buf[1]
        n, pos = second & 0x7F, 2
        if n == 126:
            if len(buf) < 4:
                return None
            n, pos = struct.unpack_from(">H", buf, 2)[0], 4
        elif n == 127:
            if len(buf) < 10:
                return None
            n, pos = struct.unpack_from(">Q", buf, 2)[0], 10
        if n > self._max:
            raise WireError(f"WebSocket frame of {n} bytes")
        key = b""
        if second & 0x80:
            key, pos = bytes(buf[pos : pos + 4]), pos + 4
        if len(buf) < pos + n:
            return None
        payload = bytes(buf[pos : pos + n])
        del buf[: pos + n]
        return WsFrame(bool(first & 0x80), first & 0x0F, _mask(payload, key) if key else payload)


# ---- SPDY/3.1 ----------------------------------------------------------------------------


def spdy_data(stream_id: int, data: bytes, fin: bool = False) -> bytes:
    flags = SPDY_FLAG_FIN if fin else 0
    return struct.pack(">IL", stream_id & 0x7FFFFFFF, (flags << 24) | len(data)) + data


def spdy_control(ftype: int, payload: bytes, flags: int = 0) -> bytes:
    return struct.pack(">HHL", 0x8000 | SPDY_VERSION, ftype, (flags << 24) | len(payload)) + payload


@dataclass(frozen=True)
class SpdyFrame:
    control: bool
    kind: int
    """Control frame type, or the stream id of a data frame."""
    flags: int
    payload: bytes


class SpdyParser:
    """Incremental SPDY/3.1 frame splitter (headers only; payloads are opaque)."""

    def __init__(self, max_payload: int = 16 * 1024 * 1024) -> None:
        self._buf = bytearray()
        self._max = max_payload

    def feed(self, data: bytes) -> list[SpdyFrame]:
        self._buf += data
        out: list[SpdyFrame] = []
        while len(self._buf) >= 8:
            word, flags_len = struct.unpack_from(">IL", self._buf)
            n = flags_len & 0xFFFFFF
            if n > self._max:
                raise WireError(f"SPDY frame of {n} bytes")
            if len(self._buf) < 8 + n:
                break
            payload = bytes(self._buf[8 : 8 + n])
            del self._buf[: 8 + n]
            control = bool(word & 0x80000000)
            kind = word & 0xFFFF if control else word & 0x7FFFFFFF
            out.append(SpdyFrame(control, kind, flags_len >> 24, payload))
        return out
