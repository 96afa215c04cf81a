"""WebSocket and SPDY/3.1 frame codecs of the fake kubelet: any chunking gives the same frames."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from ravend.sim import kubelet_wire as wire

PAYLOADS = st.lists(st.binary(max_size=70_000), min_size=1, max_size=4)
CUTS = st.lists(st.integers(1, 5000), max_size=6)


def chunked(data: bytes, cuts: list[int]) -> list[bytes]:
    out, start = [], 0
    for cut in cuts:
        out.append(data[start : start + cut])
        start += cut
    out.append(data[start:])
    return out


@given(PAYLOADS, CUTS, st.booleans())
def test_websocket_frames_survive_any_chunking(
    payloads: list[bytes], cuts: list[int], masked: bool
) -> None:
    stream = b"".join(wire.ws_frame(wire.WS_BINARY, p, masked=masked) for p in payloads)
    parser = wire.WsParser()
    frames = [f for piece in chunked(stream, cuts) for f in parser.feed(piece)]
    assert [(f.opcode, f.payload, f.fin) for f in frames] == [
        (wire.WS_BINARY, p, True) for p in payloads
    ]


@given(PAYLOADS, CUTS)
def test_spdy_frames_survive_any_chunking(payloads: list[bytes], cuts: list[int]) -> None:
    frames_in = [
        wire.spdy_data(i * 2 + 1, p, fin=i == len(payloads) - 1) for i, p in enumerate(payloads)
    ]
    stream = wire.spdy_control(wire.SPDY_PING, b"\0\0\0\1") + b"".join(frames_in)
    parser = wire.SpdyParser()
    frames = [f for piece in chunked(stream, cuts) for f in parser.feed(piece)]
    assert (frames[0].control, frames[0].kind, frames[0].payload) == (
        True,
        wire.SPDY_PING,
        b"\0\0\0\1",
    )
    assert [(f.kind, f.payload) for f in frames[1:]] == [
        (i * 2 + 1, p) for i, p in enumerate(payloads)
    ]
    assert frames[-1].flags & wire.SPDY_FLAG_FIN


def test_websocket_accept_key_from_rfc6455() -> None:
    assert wire.ws_accept("dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
