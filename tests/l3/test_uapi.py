"""UAPI codec properties (hypothesis) and the client against a real wireguard-go."""

from __future__ import annotations

import asyncio
import base64
import itertools
import subprocess
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ravend.l3.keys import b64_to_hex, generate_private, public_from_private
from ravend.l3.state import WgDeviceState, WgPeerState
from ravend.l3.uapi import (
    PeerUpdate,
    ReplyReader,
    SetRequest,
    UapiClient,
    UapiErrno,
    UapiProtocolError,
    encode_set,
    parse_get,
    socket_path,
)

keys = st.binary(min_size=32, max_size=32).map(lambda b: base64.b64encode(b).decode())
v4 = st.tuples(*[st.integers(0, 255)] * 4, st.integers(0, 32)).map(
    lambda t: f"{t[0]}.{t[1]}.{t[2]}.{t[3]}/{t[4]}"
)
endpoints = st.none() | st.tuples(v4, st.integers(1, 65535)).map(
    lambda t: f"{t[0].split('/')[0]}:{t[1]}"
)
peers = st.builds(
    WgPeerState,
    public_key=keys,
    endpoint=endpoints,
    allowed_ips=st.lists(v4, max_size=4).map(tuple),
    keepalive_s=st.integers(0, 65535),
    last_handshake_ns=st.integers(0, 2**40).map(lambda n: n * 1000),
    rx_bytes=st.integers(0, 2**62),
    tx_bytes=st.integers(0, 2**62),
)


def render_get_reply(private_key: str, dev: WgDeviceState) -> bytes:
    """What wireguard-go sends for `get=1` (the reference format, written independently)."""
    lines = [f"private_key={b64_to_hex(private_key)}", f"listen_port={dev.listen_port}"]
    if dev.fwmark:
        lines.append(f"fwmark={dev.fwmark}")
    for p in dev.peers:
        lines += [
            f"public_key={b64_to_hex(p.public_key)}",
            "preshared_key=" + "0" * 64,
            "protocol_version=1",
        ]
        if p.endpoint:
            lines.append(f"endpoint={p.endpoint}")
        sec, nsec = divmod(p.last_handshake_ns, 1_000_000_000)
        lines += [
            f"last_handshake_time_sec={sec}",
            f"last_handshake_time_nsec={nsec}",
            f"tx_bytes={p.tx_bytes}",
            f"rx_bytes={p.rx_bytes}",
            f"persistent_keepalive_interval={p.keepalive_s}",
        ]
        lines += [f"allowed_ip={a}" for a in p.allowed_ips]
    return ("\n".join([*lines, "errno=0"]) + "\n\n").encode()


PRIV = generate_private()


@given(
    port=st.integers(0, 65535),
    fwmark=st.integers(0, 2**32 - 1),
    ps=st.lists(peers, max_size=5, unique_by=lambda p: p.public_key).map(tuple),
    cuts=st.lists(st.integers(0, 4000), max_size=8),
)
def test_get_reply_parses_the_same_whatever_the_chunking(
    port: int, fwmark: int, ps: tuple[WgPeerState, ...], cuts: list[int]
) -> None:
    dev = WgDeviceState(public_from_private(PRIV), port, fwmark, ps)
    data = render_get_reply(PRIV, dev)
    bounds = sorted({0, len(data), *(c % (len(data) + 1) for c in cuts)})
    reader, replies = ReplyReader(), []
    for a, b in itertools.pairwise(bounds):
        if (r := reader.feed(data[a:b])) is not None:
            replies.append(r)
    assert len(replies) == 1
    assert parse_get(replies[0]) == dev


def h2b(h: str) -> str:
    return base64.b64encode(bytes.fromhex(h)).decode()


def parse_set(data: bytes) -> SetRequest:
    """Independent decoder of set requests, used to check the encoder."""
    text = data.decode()
    assert text.endswith("\n\n") and text.startswith("set=1\n")
    req: dict[str, object] = {}
    ps: list[dict[str, object]] = []
    for line in text.strip("\n").splitlines()[1:]:
        k, _, v = line.partition("=")
        if k == "public_key":
            ps.append({"public_key": h2b(v)})
        elif ps:
            cur = ps[-1]
            if k == "allowed_ip":
                cur["allowed_ips"] = (*cur.get("allowed_ips", ()), v)  # type: ignore[misc]
            elif k == "replace_allowed_ips":
                cur.setdefault("allowed_ips", ())
            elif k == "remove":
                cur["remove"] = True
            elif k == "endpoint":
                cur["endpoint"] = v
            elif k == "persistent_keepalive_interval":
                cur["keepalive_s"] = int(v)
        elif k == "private_key":
            req["private_key"] = h2b(v)
        elif k in ("listen_port", "fwmark"):
            req[k] = int(v)
        elif k == "replace_peers":
            req["replace_peers"] = True
    return SetRequest(**req, peers=tuple(PeerUpdate(**p) for p in ps))  # type: ignore[arg-type]


updates = st.builds(
    PeerUpdate,
    public_key=keys,
    remove=st.just(False),
    endpoint=endpoints,
    keepalive_s=st.none() | st.integers(0, 65535),
    allowed_ips=st.none() | st.lists(v4, max_size=3).map(tuple),
) | st.builds(PeerUpdate, public_key=keys, remove=st.just(True))


@given(
    st.builds(
        SetRequest,
        private_key=st.none() | keys,
        listen_port=st.none() | st.integers(0, 65535),
        fwmark=st.none() | st.integers(0, 2**32 - 1),
        replace_peers=st.booleans(),
        peers=st.lists(updates, max_size=4).map(tuple),
    )
)
def test_set_request_round_trips(req: SetRequest) -> None:
    assert parse_set(encode_set(req)) == req


@pytest.mark.parametrize(
    "reply",
    [
        "listen_port=1\n",
        "garbage\nerrno=0\n",
        "listen_port=x\nerrno=0\n",
        "public_key=zz\nerrno=0\n",
    ],
)
def test_malformed_reply_is_a_protocol_error(reply: str) -> None:
    with pytest.raises(UapiProtocolError):
        parse_get(reply)


def test_errno_in_get_reply_raises() -> None:
    with pytest.raises(UapiErrno) as e:
        parse_get("errno=-22\n")
    assert e.value.errno == -22


def test_bad_key_is_rejected_before_sending() -> None:
    with pytest.raises(ValueError, match="bytes"):
        encode_set(SetRequest(private_key=base64.b64encode(b"short").decode()))


@pytest.mark.netns
async def test_client_against_real_wireguard_go(
    netns: Callable[[], str],
    ifname: Callable[[], str],
    wireguard_go: Callable[[str, str], subprocess.Popen[bytes]],
) -> None:
    ns, name = netns(), ifname()
    wireguard_go(ns, name)
    client = UapiClient(socket_path(name))
    assert (await client.get()).peers == ()
    peer_a, peer_b = (
        public_from_private(generate_private()),
        public_from_private(generate_private()),
    )
    await client.set(
        SetRequest(
            private_key=PRIV,
            listen_port=0,
            peers=(
                PeerUpdate(
                    peer_a, endpoint="192.0.2.1:4500", keepalive_s=5, allowed_ips=("10.1.0.0/24",)
                ),
                PeerUpdate(peer_b, allowed_ips=("10.2.0.0/24", "fd00:2::/64")),
            ),
        )
    )
    dev = await client.get()
    assert dev.public_key == public_from_private(PRIV)
    got = {p.public_key: p for p in dev.peers}
    assert got[peer_a].endpoint == "192.0.2.1:4500" and got[peer_a].keepalive_s == 5
    assert set(got[peer_b].allowed_ips) == {"10.2.0.0/24", "fd00:2::/64"}
    # `wg` reads the same socket: the configuration is the daemon's, not ours.
    wg = await asyncio.create_subprocess_exec(
        "wg", "show", name, "peers", stdout=asyncio.subprocess.PIPE
    )
    out, _ = await wg.communicate()
    assert set(out.decode().split()) == {peer_a, peer_b}

    # A set that fails half-way: the lines before the bad one are applied, and we learn that.
    bad = SetRequest(
        peers=(
            PeerUpdate(peer_a, remove=True),
            PeerUpdate(peer_b, endpoint="not-an-endpoint"),
        )
    )
    with pytest.raises(UapiErrno) as e:
        await client.set(bad)
    assert e.value.errno != 0 and e.value.after is not None
    assert [p.public_key for p in e.value.after.peers] == [peer_b]
