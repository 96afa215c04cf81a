"""The link prober: one UDP socket per gateway answering and sending probes (I/O: sockets).

The socket is bound to this node's IP on `ProbeSettings.port` (see `ravend.l3.probe` for why
the node IP): requests that arrive are echoed at once, replies feed the per-peer `LinkStats`.
Every interval the prober expires old requests, sends one request per target, reads the
WireGuard handshake times and publishes `health` (a `Latest[dict[peer gateway, PeerHealth]]`
that the election can consume) and the Prometheus gauges. The socket exists only while this
node is a gateway with peers; a member or an idle node has no open port.

`netns`: when ravend drives another network namespace (tests, benchmarks), the socket is
created inside it by switching one worker thread into that namespace for the socket() call;
a socket keeps the namespace it was created in.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import socket
import time
from collections.abc import Awaitable, Callable
from typing import cast

from ravend.l3.metrics import export_peers
from ravend.l3.probe import (
    Kind,
    LinkStats,
    PeerHealth,
    Probe,
    ProbeDecodeError,
    ProbeSettings,
    ProbeTarget,
    decode,
    encode,
    reply_to,
)
from ravend.l3.state import WgDeviceState
from ravend.observe.metrics import ERRORS
from ravend.runtime import Latest

log = logging.getLogger(__name__)

_CLONE_NEWNET = 0x40000000
WgStateFn = Callable[[], Awaitable[WgDeviceState | None]]


def _bind(family: int, host: str, port: int) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        sock.setblocking(False)
        sock.bind((host, port))
    except BaseException:
        sock.close()
        raise
    return sock


def _bind_in_netns(netns: str, family: int, host: str, port: int) -> socket.socket:
    libc = ctypes.CDLL(None, use_errno=True)
    with open("/proc/thread-self/ns/net") as own, open(f"/run/netns/{netns}") as target:
        if libc.setns(target.fileno(), _CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns {netns}")
        try:
            return _bind(family, host, port)
        finally:
            # The worker thread goes back to the pool: it must leave in ravend's namespace.
            if libc.setns(own.fileno(), _CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "setns back")


async def open_udp(netns: str | None, host: str, port: int) -> socket.socket:
    """A non-blocking UDP socket bound to host:port, inside `netns` when given."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    if netns is None:
        return _bind(family, host, port)
    return await asyncio.to_thread(_bind_in_netns, netns, family, host, port)


class _Endpoint(asyncio.DatagramProtocol):
    def __init__(self, on_reply: Callable[[str, int, int], None]) -> None:
        self.on_reply = on_reply
        self.transport: asyncio.DatagramTransport | None = None
        self.garbage = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        try:
            p = decode(data)
        except ProbeDecodeError:
            self.garbage += 1
            return
        if p.kind == Kind.REQUEST and self.transport is not None:
            self.transport.sendto(encode(reply_to(p)), addr)
        elif p.kind == Kind.REPLY:
            self.on_reply(str(addr[0]), p.seq, p.timestamp_ns)

    def error_received(self, exc: Exception) -> None:
        # ICMP unreachable for a probe: the loss shows up through the timeout anyway.
        log.debug("probe socket error: %s", exc)


class Prober:
    """See the module docstring. Feed `targets`; read `health`."""

    def __init__(
        self,
        node_ip: str,
        interval_s: float,
        settings: ProbeSettings | None = None,
        *,
        netns: str | None = None,
        wg_state: WgStateFn | None = None,
    ) -> None:
        self.node_ip = node_ip
        self.interval_s = interval_s
        self.s = settings or ProbeSettings()
        self.netns = netns
        self.wg_state = wg_state
        self.targets: Latest[tuple[str, tuple[ProbeTarget, ...]]] = Latest(("", ()))
        """(this node's Gateway, peers to probe); set by the L3 agent after each plan."""
        self.health: Latest[dict[str, PeerHealth]] = Latest({})
        self._stats: dict[str, LinkStats] = {}
        self._exported: set[tuple[str, str]] = set()
        self._endpoint: _Endpoint | None = None
        self._bind_error = ""

    async def run(self) -> None:
        """Probe until cancelled; closes the socket on the way out."""
        seen = -1
        try:
            while True:
                seen, (gateway, targets) = self.targets.version, self.targets.value
                probing = [t for t in targets if t.address]
                if probing and self._endpoint is None:
                    await self._open()
                elif not probing and self._endpoint is not None:
                    self._close()
                await self._tick(gateway, targets)
                wait = self.interval_s if self._endpoint is not None or probing else None
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(wait):  # not wait_for: keeps cancellation
                        await self.targets.wait_newer(seen)
        finally:
            self._close()

    async def _open(self) -> None:
        try:
            sock = await open_udp(self.netns, self.node_ip, self.s.port)
        except OSError as e:
            ERRORS.labels(subsystem="l3", kind="probe-socket").inc()
            # Retried every interval: say it once per distinct error, not once a second.
            level = logging.DEBUG if str(e) == self._bind_error else logging.WARNING
            log.log(level, "link probes: cannot bind %s:%s: %s", self.node_ip, self.s.port, e)
            self._bind_error = str(e)
            return
        self._bind_error = ""
        loop = asyncio.get_running_loop()
        _, proto = await loop.create_datagram_endpoint(lambda: _Endpoint(self._on_reply), sock=sock)
        self._endpoint = proto

    def _close(self) -> None:
        if self._endpoint is not None and self._endpoint.transport is not None:
            self._endpoint.transport.close()
        self._endpoint = None

    def _on_reply(self, addr: str, seq: int, ts_ns: int) -> None:
        stats = self._stats.get(addr)
        if stats is not None:
            stats.on_reply(Probe(Kind.REPLY, seq, ts_ns), time.monotonic())

    async def _tick(self, gateway: str, targets: tuple[ProbeTarget, ...]) -> None:
        now = time.monotonic()
        wanted = {t.address for t in targets if t.address}
        self._stats = {a: st for a, st in self._stats.items() if a in wanted}
        ep = self._endpoint
        for t in targets:
            if not t.address:
                continue
            st = self._stats.setdefault(t.address, LinkStats(self.s))
            st.expire(now)
            if ep is not None and ep.transport is not None:
                ep.transport.sendto(encode(st.next_request(now)), (t.address, self.s.port))
        handshakes = await self._handshakes()
        health = {t.gateway: self._health(t, now, handshakes) for t in targets}
        self.health.publish(health)
        self._exported = export_peers(gateway, health.values(), self._exported)

    async def _handshakes(self) -> dict[str, int]:
        if self.wg_state is None:
            return {}
        try:
            dev = await self.wg_state()
        except Exception as e:  # a health read must not stop probing
            log.debug("link probes: WireGuard state unavailable: %s", e)
            return {}
        return {p.public_key: p.last_handshake_ns for p in dev.peers} if dev else {}

    def _health(self, t: ProbeTarget, now: float, handshakes: dict[str, int]) -> PeerHealth:
        hs = handshakes.get(t.public_key, 0)
        age = max(0.0, time.time() - hs / 1e9) if hs else None
        st = self._stats.get(t.address) if t.address else None
        if st is None:
            return PeerHealth(t.gateway, t.node, "", False, handshake_age_s=age, note=t.note)
        return PeerHealth(
            gateway=t.gateway,
            node=t.node,
            target=t.address,
            up=st.up(now),
            rtt_s=st.rtt_s,
            rtt_ewma_s=st.rtt_ewma_s,
            loss=st.loss,
            handshake_age_s=age,
            sent=st.sent,
            received=st.received,
            note=t.note,
        )
