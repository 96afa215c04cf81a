"""The caller side of bench/l7_proxy.py (the load generator): a lean kept-alive HTTP/1.1
connection, and the CPU meter over the caller and the processes of a path. Loopback I/O."""

from __future__ import annotations

import asyncio
import re
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from bench.l7_proxy_procs import proc_cpu
from ravend.l7proxy.tunnel_transport import set_nodelay


@dataclass
class PathSpec:
    """Where to dial for one path, and the processes whose CPU it costs."""

    name: str
    address: tuple[str, int]
    proxy_pids: list[int] = field(default_factory=list)
    """The path's own processes, cloud side first (ravend: cloud, edge; ssh: sshd, ssh)."""
    kubelet_pid: int = 0


Getter = Callable[[], Awaitable[int]]
_LENGTH = re.compile(rb"\r\ncontent-length:[ \t]*(\d+)", re.IGNORECASE)


class _KeptProtocol(asyncio.Protocol):
    """A lean HTTP/1.1 response reader for /healthz (Content-Length framed, no chunking): the
    load generator must cost little, or it, not the path, sets the tail at c32."""

    def __init__(self) -> None:
        self.buf = bytearray()
        self.waiter: asyncio.Future[int] | None = None
        self.lost = False

    def data_received(self, data: bytes) -> None:
        self.buf += data
        end = self.buf.find(b"\r\n\r\n")
        if end < 0:
            return
        match = _LENGTH.search(self.buf, 0, end)
        assert match is not None, "the benchmark expects Content-Length responses"
        total = end + 4 + int(match.group(1))
        if len(self.buf) >= total:
            # A response nobody waits for means the caller broke the one-request-at-a-time
            # rule; fail loudly rather than leave a later request waiting on a stale reply.
            assert self.waiter is not None, "a response arrived with no request outstanding"
            status = int(self.buf[9:12])
            del self.buf[:total]
            self.waiter.set_result(status)
            self.waiter = None

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError("kept connection closed"))


class KeptConnection:
    """One caller connection reused for every request; re-dialled (and the request retried
    once) if the server closed it between requests (the front end's max requests per
    connection)."""

    def __init__(self, address: tuple[str, int], tls: ssl.SSLContext | None, port: int) -> None:
        self.address, self.tls = address, tls
        self.request = f"GET /healthz HTTP/1.1\r\nHost: edge-2:{port}\r\n\r\n".encode()
        self.conn: tuple[asyncio.Transport, _KeptProtocol] | None = None
        self.connects = 0

    async def connect(self) -> None:
        host, port = self.address
        name = host if self.tls else None
        self.conn = await asyncio.get_running_loop().create_connection(
            _KeptProtocol, host, port, ssl=self.tls, server_hostname=name
        )
        set_nodelay(self.conn[0])
        self.connects += 1

    async def get(self) -> int:
        for retry in (True, False):
            if self.conn is None or self.conn[1].lost:
                await self.connect()
            assert self.conn is not None
            transport, proto = self.conn
            # One request at a time: a second get() would replace the first one's waiter and
            # leave it hanging forever (no pipelining here).
            assert proto.waiter is None, "KeptConnection.get() while a request is outstanding"
            proto.waiter = asyncio.get_running_loop().create_future()
            transport.write(self.request)
            try:
                return await proto.waiter
            except ConnectionError:
                self.conn = None
                if not retry:
                    raise
        raise AssertionError("unreachable")

    def close(self) -> None:
        if self.conn is not None:
            self.conn[0].close()
            self.conn = None


@dataclass
class Meter:
    """CPU of the caller (this process), of the proxy processes and of the kubelet."""

    path: PathSpec
    start: tuple[float, float, float] = (0.0, 0.0, 0.0)
    start_each: tuple[float, ...] = ()

    def read(self) -> tuple[float, float, float]:
        p = self.path
        kubelet = proc_cpu([p.kubelet_pid]) if p.kubelet_pid else 0.0
        return time.process_time(), proc_cpu(p.proxy_pids), kubelet

    def read_each(self) -> tuple[float, ...]:
        return tuple(proc_cpu([pid]) for pid in self.path.proxy_pids)

    def __enter__(self) -> Meter:
        # The per-process walk of /proc first: the caller's own CPU is read after it (and
        # at the end, by used(), before each()), so the meter's reads stay out of its figure.
        self.start_each = self.read_each()
        self.start = self.read()
        return self

    def used(self) -> tuple[float, float, float]:
        return tuple(b - a for a, b in zip(self.start, self.read(), strict=True))  # type: ignore[return-value]

    def each(self) -> tuple[float, ...]:
        """CPU seconds of every proxy process (with its children) since the start, in
        `proxy_pids` order: which side of the path costs what."""
        return tuple(b - a for a, b in zip(self.start_each, self.read_each(), strict=True))

    def __exit__(self, *exc: object) -> None:
        pass


def cpu_fields(
    used: tuple[float, float, float], n: int, each: tuple[float, ...] = ()
) -> dict[str, Any]:
    caller, proxy, kubelet = used
    return {
        "cpu_us_per_req": round((caller + proxy + kubelet) / n * 1e6),
        "proxy_cpu_us_per_req": round(proxy / n * 1e6),
        "caller_cpu_us_per_req": round(caller / n * 1e6),
        # Per proxy process, cloud side first (JSON lines only; the table has the sum).
        "proxy_cpu_us_per_req_each": [round(x / n * 1e6) for x in each],
    }
