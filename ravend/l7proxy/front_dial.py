"""Opening the upstream side of a front-end request: a socket or a tunnel stream. I/O.

Same pool: TCP (TLS with ravend's proxy client certificate when the front request was TLS) to
the node's InternalIP. Other pool: a stream over the tunnel of that pool's proxy node; the edge
dials the kubelet and a failure there comes back as a reset of the stream.

Reuse: `lease` hands out an idle upstream from the pool (front_pool) when there is one, else a
new one; `release` returns it after an exchange that ended exactly at a response boundary. Both
kinds are pooled: sockets to kubelets of our pool, and tunnel streams, each of which is spliced
on the edge to one kubelet connection, so a pooled stream is a pooled edge->kubelet TLS
connection too and the edge never needs to understand HTTP. A leased stream is a `TunnelPipe`
(read through callbacks, front_upstream); `take_idle` is the lease without waiting that the
keep-alive lane uses. `open` is the one-shot form (upgrades, HTTP/1.0, unframed requests):
always new, never pooled, a stream read by awaiting (`StreamPipe`, for splice).
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Protocol

from ravend.l7proxy.front_pool import IdlePool, PoolSettings
from ravend.l7proxy.front_splice import Pipe, SocketPipe, StreamPipe
from ravend.l7proxy.front_upstream import TunnelPipe
from ravend.l7proxy.protocol_frames import Target
from ravend.l7proxy.routing import Direct, Refusal, Route, choose_tunnel
from ravend.l7proxy.tunnel_server import TunnelServer
from ravend.l7proxy.tunnel_stream import Stream, TunnelError
from ravend.l7proxy.tunnel_transport import set_nodelay

EVICT_BATCH = 16
"""Idle pooled streams dropped at once when a tunnel refuses a new stream (a batch, so a
burst of new requests at the limit does not pay one eviction each)."""

KubeletTls = Callable[[], ssl.SSLContext]
"""The current client context towards kubelets (read per dial so rotation takes effect)."""


class Upstreams(Protocol):
    """What a front end needs from its upstream side (`UpstreamDialer`, or a test's fake)."""

    async def open(self, route: Route) -> Pipe | Refusal:
        """A new upstream for a one-shot exchange."""
        ...

    async def lease(self, route: Route, fresh: bool = False) -> Lease | Refusal:
        """A pooled or new upstream for a framed exchange."""
        ...

    def take_idle(self, route: Route) -> Lease | None:
        """A pooled upstream the keep-alive lane can use without waiting, if there is one."""
        ...

    def release(self, lease: Lease) -> None: ...

    def close_idle(self) -> None: ...


async def dial_kubelet(
    address: str, port: int, tls: KubeletTls | None, timeout: float
) -> SocketPipe:
    """TCP (+TLS) to a kubelet, TCP_NODELAY set. Raises OSError or TimeoutError."""
    async with asyncio.timeout(timeout):
        reader, writer = await asyncio.open_connection(
            address, port, ssl=tls() if tls is not None else None
        )
    set_nodelay(writer)
    return SocketPipe(reader, writer)


@dataclass(slots=True)  # not frozen: one per request, and a frozen __init__ costs ~7x
class Lease:
    """An upstream borrowed for one exchange; give it back with `release` or drop it. Treat
    it as immutable."""

    pipe: SocketPipe | TunnelPipe
    key: Hashable
    reused: bool
    """It came from the pool: it may have been closed by the peer in the meantime."""


class UpstreamDialer:
    """Turns a `Route` into a `Pipe`, or into the Refusal to answer with."""

    def __init__(
        self,
        kubelet_tls: KubeletTls,
        tunnels: TunnelServer | None = None,
        connect_timeout: float = 10.0,
        pool: PoolSettings | None = None,
    ) -> None:
        self._kubelet_tls = kubelet_tls
        self._tunnels = tunnels
        self._timeout = connect_timeout
        self.pool = IdlePool(pool)
        self.dials = 0
        """New upstreams opened (sockets and streams; for tests and benchmarks)."""

    async def open(self, route: Route) -> Pipe | Refusal:
        """A new upstream for a one-shot exchange (a tunnel stream is read by `splice`)."""
        via = self._via(route)
        if isinstance(via, Refusal):
            return via
        pipe = await self._dial(route, via)
        return pipe if isinstance(pipe, SocketPipe | Refusal) else StreamPipe(pipe)

    async def lease(self, route: Route, fresh: bool = False) -> Lease | Refusal:
        """An idle pooled upstream for `route` if there is one (unless `fresh`), else a new one."""
        via = self._via(route)
        if isinstance(via, Refusal):
            return via
        key = _pool_key(via, route)
        if not fresh:
            idle = self.pool.take(key)
            if isinstance(idle, SocketPipe | TunnelPipe):
                return Lease(idle, key, reused=True)
        pipe = await self._dial(route, via)
        if isinstance(pipe, Refusal):
            return pipe
        return Lease(pipe if isinstance(pipe, SocketPipe) else TunnelPipe(pipe), key, reused=False)

    def take_idle(self, route: Route) -> Lease | None:
        """A pooled tunnel stream for `route`, without waiting; None when there is none (or
        the route is direct: pooled sockets are read by awaiting, not by callbacks). A tunnel
        route's pool key names its edge, so only tunnel streams are pooled under it."""
        if isinstance(route, Direct):
            return None
        via = self._via(route)
        if isinstance(via, Refusal):
            return None
        key = _pool_key(via, route)
        idle = self.pool.take(key)
        return Lease(idle, key, reused=True) if isinstance(idle, TunnelPipe) else None

    def _via(self, route: Route) -> str | Refusal:
        """ "" for a direct dial, else the edge proxy whose tunnel carries the stream."""
        if isinstance(route, Direct):
            return ""
        if self._tunnels is None:
            return Refusal(503, "this proxy runs no tunnel server")
        return choose_tunnel(route, self._tunnels.connected.value)

    def release(self, lease: Lease) -> None:
        """The exchange on `lease` ended cleanly at a response boundary: keep it for reuse."""
        self.pool.put(lease.key, lease.pipe)

    def close_idle(self) -> None:
        """Close the pooled upstreams (shutdown); upstreams released later close at once."""
        self.pool.close()

    async def _dial(self, route: Route, via: str) -> SocketPipe | Stream | Refusal:
        self.dials += 1
        if isinstance(route, Direct):
            tls = self._kubelet_tls if route.tls else None
            try:
                return await dial_kubelet(route.address, route.port, tls, self._timeout)
            except TimeoutError:
                return Refusal(504, f"timed out connecting to node {route.node}")
            except (OSError, ssl.SSLError) as exc:
                return Refusal(502, f"cannot reach node {route.node}: {exc}")
        assert self._tunnels is not None
        target = Target(route.node, route.port, route.tls)
        try:
            return self._tunnels.open_stream(via, target)
        except TunnelError as exc:
            error = exc
        # Idle pooled streams count against the tunnel's concurrent-stream limit (1024 by
        # default): a full pool must never starve a new request, so give some back and retry.
        if self.pool.evict(lambda key: isinstance(key, tuple) and key[0] == via, EVICT_BATCH):
            try:
                return self._tunnels.open_stream(via, target)
            except TunnelError as exc:
                error = exc
        return Refusal(503, f"tunnel via {via} cannot take the request: {error}")


def _pool_key(via: str, route: Route) -> Hashable:
    """Upstreams are interchangeable when they go the same way to the same kubelet port."""
    return (via, route.node, route.port, route.tls)
