"""Link-probe codec (properties), per-peer statistics and target selection (pure)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ravend.l3.probe import (
    SIZE,
    Kind,
    LinkStats,
    Probe,
    ProbeDecodeError,
    ProbeSettings,
    decode,
    encode,
    probe_targets,
    reply_to,
)
from ravend.l3.state import L3State, Role, WgDevice, WgPeer

probes = st.builds(
    Probe, st.sampled_from(Kind), st.integers(0, 2**32 - 1), st.integers(0, 2**64 - 1)
)


@given(probes)
def test_roundtrip(p: Probe) -> None:
    data = encode(p)
    assert len(data) == SIZE
    assert decode(data) == p


@given(st.binary(max_size=64))
def test_garbage_never_raises_anything_else(data: bytes) -> None:
    try:
        p = decode(data)
    except ProbeDecodeError:
        return
    assert encode(p) == data  # whatever decodes is exactly a probe


@given(probes, st.integers(0, SIZE - 1), st.integers(1, 255))
def test_any_corrupted_magic_or_kind_is_rejected(p: Probe, at: int, flip: int) -> None:
    data = bytearray(encode(p))
    data[at] ^= flip
    if at < 5:  # magic and kind bytes: must not decode as ours (kind 1<->2 aside)
        try:
            q = decode(bytes(data))
        except ProbeDecodeError:
            return
        assert at == 4 and q.kind != p.kind
    else:
        assert decode(bytes(data)).kind == p.kind


def test_reply_echoes_seq_and_timestamp() -> None:
    req = Probe(Kind.REQUEST, 7, 123456789)
    assert reply_to(req) == Probe(Kind.REPLY, 7, 123456789)


def test_out_of_range_is_our_bug() -> None:
    with pytest.raises(ValueError, match="out of range"):
        encode(Probe(Kind.REQUEST, 2**32, 0))


def test_stats_rtt_loss_and_up() -> None:
    s = ProbeSettings(timeout_s=1.0, window=4, down_after_s=3.0, ewma_alpha=0.5)
    st_ = LinkStats(s)
    a = st_.next_request(10.0)
    assert st_.on_reply(reply_to(a), 10.1) == pytest.approx(0.1)
    b = st_.next_request(11.0)
    assert st_.on_reply(reply_to(b), 11.3) == pytest.approx(0.3)
    assert st_.rtt_ewma_s == pytest.approx(0.2)
    assert st_.up(11.3) and st_.loss == 0.0
    st_.next_request(12.0)
    st_.next_request(13.0)
    assert st_.expire(14.5) == 2  # both older than 1 s
    assert st_.loss == pytest.approx(0.5)
    assert not st_.up(14.5)  # no reply for 3.2 s
    # a late reply is not an RTT sample and not a second outcome
    c = st_.next_request(15.0)
    assert st_.on_reply(reply_to(c), 16.5) is None
    assert st_.on_reply(reply_to(c), 15.1) is None  # duplicate
    assert st_.received == 2 and st_.sent == 5


def test_window_forgets_old_losses() -> None:
    st_ = LinkStats(ProbeSettings(window=3))
    for t in range(3):
        st_.next_request(float(t))
    st_.expire(10.0)
    assert st_.loss == 1.0
    for t in range(20, 23):
        p = st_.next_request(float(t))
        st_.on_reply(reply_to(p), t + 0.01)
    assert st_.loss == 0.0


def _gw_state(*peers: WgPeer) -> L3State:
    wg = WgDevice("raven-wg0", "k", "/k", 4500, 1420, peers)
    return L3State(role=Role.GATEWAY, gateway="gw-a", wireguard=wg)


def test_targets_only_for_peers_whose_node_ip_is_tunnelled() -> None:
    state = _gw_state(
        WgPeer("kb", None, ("10.1.0.0/24", "172.16.0.5/32"), 5, gateway="gw-b"),
        WgPeer("kc", "1.2.3.4:4500", ("10.2.0.0/24",), 5, gateway="gw-c"),
        WgPeer("kd", None, ("10.3.0.0/24",), 5, gateway="gw-d"),
    )
    nodes = {"gw-b": ("b1", "172.16.0.5"), "gw-c": ("c1", "172.17.0.5")}
    t = {x.gateway: x for x in probe_targets(state, nodes)}
    assert t["gw-b"].address == "172.16.0.5" and t["gw-b"].public_key == "kb"
    assert t["gw-c"].address == "" and "not routed" in t["gw-c"].note
    assert t["gw-d"].address == "" and "unknown" in t["gw-d"].note


def test_members_probe_nothing() -> None:
    assert probe_targets(L3State(role=Role.MEMBER, gateway="g"), {}) == ()
