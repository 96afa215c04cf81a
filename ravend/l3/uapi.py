"""wireguard-go's UAPI text protocol: a sans-IO codec plus a small asyncio client.

Protocol (wireguard.com/xplatform): a request is `get=1` or `set=1` followed by `key=value`
lines and an empty line; the reply to both ends with `errno=N` and an empty line. Keys are lower
case hex on the wire, base64 everywhere else in ravend. A failed `set` may have been applied in
part (wireguard-go applies lines as it reads them), so the client reads the device back after a
failure instead of guessing. The codec (`encode_*`, `parse_*`, `ReplyReader`) does no I/O; only
`UapiClient` touches the unix socket `/var/run/wireguard/<ifname>.sock`.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from ravend.l3.keys import KeyFormatError, b64_to_hex, hex_to_b64, public_from_private
from ravend.l3.state import WgDeviceState, WgPeerState

SOCKET_DIR = "/var/run/wireguard"
_END = b"\n\n"
MAX_REPLY = 4 << 20
"""Bytes; larger is a misbehaving daemon, not a big device (1,000 peers take ~200 KiB)."""


class UapiError(Exception):
    """Base of the UAPI errors."""


class UapiProtocolError(UapiError):
    """The daemon sent something that is not a well-formed reply (the peer misbehaved)."""


class UapiErrno(UapiError):
    """The daemon answered with a non-zero errno (reason only in its log)."""

    def __init__(self, errno: int, after: WgDeviceState | None = None) -> None:
        super().__init__(f"wireguard UAPI errno={errno}")
        self.errno = errno
        self.after = after
        """Device state read back after a failed set (it may be partly applied)."""


@dataclass(frozen=True)
class PeerUpdate:
    """One peer section of a set request (keys base64)."""

    public_key: str
    remove: bool = False
    endpoint: str | None = None
    keepalive_s: int | None = None
    allowed_ips: tuple[str, ...] | None = None
    """When not None, replaces the peer's AllowedIPs with exactly these."""


@dataclass(frozen=True)
class SetRequest:
    private_key: str | None = None
    listen_port: int | None = None
    fwmark: int | None = None
    replace_peers: bool = False
    peers: tuple[PeerUpdate, ...] = field(default=())


def encode_get() -> bytes:
    return b"get=1\n\n"


def encode_set(req: SetRequest) -> bytes:
    """Wire bytes of a set request; raises KeyFormatError on a bad key (our misuse)."""
    lines = ["set=1"]
    if req.private_key is not None:
        lines.append(f"private_key={b64_to_hex(req.private_key)}")
    if req.listen_port is not None:
        lines.append(f"listen_port={req.listen_port}")
    if req.fwmark is not None:
        lines.append(f"fwmark={req.fwmark}")
    if req.replace_peers:
        lines.append("replace_peers=true")
    for p in req.peers:
        lines.append(f"public_key={b64_to_hex(p.public_key)}")
        if p.remove:
            lines.append("remove=true")
            continue
        if p.endpoint is not None:
            lines.append(f"endpoint={p.endpoint}")
        if p.keepalive_s is not None:
            lines.append(f"persistent_keepalive_interval={p.keepalive_s}")
        if p.allowed_ips is not None:
            lines.append("replace_allowed_ips=true")
            lines += [f"allowed_ip={a}" for a in p.allowed_ips]
    for line in lines:
        if "\n" in line:
            raise ValueError(f"newline in UAPI value: {line!r}")
    return ("\n".join(lines) + "\n\n").encode()


class ReplyReader:
    """Accumulates bytes until one complete reply (ending with an empty line) is in."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> str | None:
        """Add bytes; return the reply text (without the final empty line) once complete."""
        self._buf += data
        end = self._buf.find(_END)
        if end < 0:
            if len(self._buf) > MAX_REPLY:
                raise UapiProtocolError("reply too large")
            return None
        text = bytes(self._buf[: end + 1])
        del self._buf[: end + 2]
        try:
            return text.decode("ascii")
        except UnicodeDecodeError as e:
            raise UapiProtocolError("non-ASCII reply") from e


def _pairs(text: str) -> list[tuple[str, str]]:
    pairs = []
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if not sep or not key:
            raise UapiProtocolError(f"malformed line {line!r}")
        pairs.append((key, value))
    if not pairs or pairs[-1][0] != "errno":
        raise UapiProtocolError("reply does not end with errno")
    return pairs


def _int(value: str) -> int:
    try:
        return int(value)
    except ValueError as e:
        raise UapiProtocolError(f"not an integer: {value!r}") from e


def parse_errno(text: str) -> int:
    """The errno of a set reply (0 = success)."""
    return _int(_pairs(text)[-1][1])


def parse_get(text: str) -> WgDeviceState:
    """Decode a get reply; raises UapiErrno if the daemon reported an error."""
    pairs = _pairs(text)
    if (errno := _int(pairs[-1][1])) != 0:
        raise UapiErrno(errno)
    dev: dict[str, int | str] = {}
    peers: list[dict[str, object]] = []
    try:
        for key, value in pairs[:-1]:
            if key == "public_key":
                peers.append({"public_key": hex_to_b64(value), "allowed_ips": []})
            elif peers:
                _peer_field(peers[-1], key, value)
            elif key == "private_key":
                dev["public_key"] = public_from_private(hex_to_b64(value))
            elif key in ("listen_port", "fwmark"):
                dev[key] = _int(value)
    except KeyFormatError as e:
        raise UapiProtocolError(str(e)) from e
    return WgDeviceState(
        public_key=str(dev.get("public_key", "")),
        listen_port=int(dev.get("listen_port", 0)),
        fwmark=int(dev.get("fwmark", 0)),
        peers=tuple(_peer_state(p) for p in peers),
    )


def _peer_field(peer: dict[str, object], key: str, value: str) -> None:
    if key == "allowed_ip":
        allowed = peer["allowed_ips"]
        assert isinstance(allowed, list)
        allowed.append(value)
    elif key == "endpoint":
        peer["endpoint"] = value
    elif key in (
        "persistent_keepalive_interval",
        "last_handshake_time_sec",
        "last_handshake_time_nsec",
        "rx_bytes",
        "tx_bytes",
    ):
        peer[key] = _int(value)
    # preshared_key, protocol_version and future keys are ignored on purpose.


def _peer_state(p: dict[str, object]) -> WgPeerState:
    def num(key: str) -> int:
        v = p.get(key, 0)
        return v if isinstance(v, int) else 0

    endpoint = p.get("endpoint")
    allowed = p["allowed_ips"]
    assert isinstance(allowed, list)
    return WgPeerState(
        public_key=str(p["public_key"]),
        endpoint=endpoint if isinstance(endpoint, str) else None,
        allowed_ips=tuple(str(a) for a in allowed),
        keepalive_s=num("persistent_keepalive_interval"),
        last_handshake_ns=num("last_handshake_time_sec") * 1_000_000_000
        + num("last_handshake_time_nsec"),
        rx_bytes=num("rx_bytes"),
        tx_bytes=num("tx_bytes"),
    )


def socket_path(ifname: str, directory: str = SOCKET_DIR) -> str:
    return f"{directory}/{ifname}.sock"


class UapiClient:
    """Talks to one wireguard-go instance; one short connection per request (as `wg` does)."""

    def __init__(self, path: str, timeout_s: float = 5.0) -> None:
        self.path = path
        self.timeout_s = timeout_s

    async def _exchange(self, request: bytes) -> str:
        async with asyncio.timeout(self.timeout_s):
            reader, writer = await asyncio.open_unix_connection(self.path)
            try:
                writer.write(request)
                await writer.drain()
                parser = ReplyReader()
                while True:
                    data = await reader.read(65536)
                    if not data:
                        raise UapiProtocolError("connection closed before the reply ended")
                    if (reply := parser.feed(data)) is not None:
                        return reply
            finally:
                writer.close()

    async def get(self) -> WgDeviceState:
        return parse_get(await self._exchange(encode_get()))

    async def set(self, req: SetRequest) -> None:
        """Apply `req`; on errno, raise UapiErrno carrying the state read back afterwards."""
        errno = parse_errno(await self._exchange(encode_set(req)))
        if errno != 0:
            try:
                after: WgDeviceState | None = await self.get()
            except (UapiError, OSError, TimeoutError):
                after = None
            raise UapiErrno(errno, after)
