"""Opening the upstream side of a front-end request: a socket or a tunnel stream. I/O.

Same pool: TCP (TLS with ravend's proxy client certificate when the front request was TLS) to
the node's InternalIP. Other pool: a stream over the tunnel of that pool's proxy node; the edge
dials the kubelet and a failure there comes back as a reset of the stream.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable

from ravend.l7proxy.front_splice import Pipe, SocketPipe, StreamPipe, set_nodelay
from ravend.l7proxy.protocol_frames import Target
from ravend.l7proxy.routing import Direct, Refusal, Route, choose_tunnel
from ravend.l7proxy.tunnel_server import TunnelServer
from ravend.l7proxy.tunnel_stream import TunnelError

KubeletTls = Callable[[], ssl.SSLContext]
"""The current client context towards kubelets (read per dial so rotation takes effect)."""


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


class UpstreamDialer:
    """Turns a `Route` into a `Pipe`, or into the Refusal to answer with."""

    def __init__(
        self,
        kubelet_tls: KubeletTls,
        tunnels: TunnelServer | None = None,
        connect_timeout: float = 10.0,
    ) -> None:
        self._kubelet_tls = kubelet_tls
        self._tunnels = tunnels
        self._timeout = connect_timeout

    async def open(self, route: Route) -> Pipe | Refusal:
        if isinstance(route, Direct):
            tls = self._kubelet_tls if route.tls else None
            try:
                return await dial_kubelet(route.address, route.port, tls, self._timeout)
            except TimeoutError:
                return Refusal(504, f"timed out connecting to node {route.node}")
            except (OSError, ssl.SSLError) as exc:
                return Refusal(502, f"cannot reach node {route.node}: {exc}")
        if self._tunnels is None:
            return Refusal(503, "this proxy runs no tunnel server")
        proxy = choose_tunnel(route, self._tunnels.connected.value)
        if isinstance(proxy, Refusal):
            return proxy
        try:
            stream = self._tunnels.open_stream(proxy, Target(route.node, route.port, route.tls))
        except TunnelError as exc:
            return Refusal(503, f"tunnel via {proxy} cannot take the request: {exc}")
        return StreamPipe(stream)
