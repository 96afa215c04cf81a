"""Edge side of L7: serve a tunnel stream by dialling the kubelet it names. I/O.

The cloud opens a stream with `Target(node, port, tls)`. The edge resolves the node *name* in
its own ClusterView, and only among the nodes of its own Gateway (routing.edge_destination):
node IPs may collide between pools, and the cloud must not be able to use an edge as a hop to
arbitrary addresses. When the front request was TLS the kubelet connection is TLS too, with
ravend's proxy client certificate (CN ravend-proxy-client, RBAC nodes/proxy,log,stats,metrics).

A failure to dial resets the stream with the reason; the front end turns that into a 502 for
the caller. After that, bytes are spliced until both sides are done: on the real network with
loop callbacks only (tunnel_splice, no task or StreamReader per side); through an injected
`dial` seam (tests that simulate pools) with the generic task-based `splice`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from ravend.l7proxy.front_dial import KubeletTls, dial_kubelet
from ravend.l7proxy.front_splice import SocketPipe, StreamPipe, splice
from ravend.l7proxy.protocol_frames import ErrorCode, Target
from ravend.l7proxy.routing import Refusal, edge_destination
from ravend.l7proxy.tunnel_splice import SocketLink
from ravend.l7proxy.tunnel_stream import Stream
from ravend.model import ClusterView
from ravend.runtime import Latest

log = logging.getLogger(__name__)

KubeletDial = Callable[[str, int, KubeletTls | None, float], Awaitable[SocketPipe]]
"""How the edge reaches an address of its own pool (the network seam; `dial_kubelet`)."""


class EdgeHandler:
    """The `StreamHandler` of the edge's TunnelClient."""

    def __init__(
        self,
        me: str,
        view: Latest[ClusterView],
        kubelet_tls: KubeletTls,
        connect_timeout: float = 10.0,
        dial: KubeletDial = dial_kubelet,
    ) -> None:
        self.me = me
        self._dial = dial
        self._view = view
        self._kubelet_tls = kubelet_tls
        self._timeout = connect_timeout

    async def __call__(self, target: Target, stream: Stream) -> None:
        dest = edge_destination(target.node, target.port, target.tls, self._view.value, self.me)
        if isinstance(dest, Refusal):
            log.warning(
                "edge %s refused stream to %s:%d: %s",
                self.me,
                target.node,
                target.port,
                dest.reason,
            )
            stream.reset(ErrorCode.REFUSED_STREAM, f"{dest.status} {dest.reason}")
            return
        address, port = dest
        tls = self._kubelet_tls if target.tls else None
        try:
            if self._dial is dial_kubelet:
                await self._splice_fast(stream, address, port, tls)
                return
            kubelet = await self._dial(address, port, tls, self._timeout)
        except (OSError, TimeoutError) as exc:
            reason = f"cannot reach node {target.node} ({address}:{port}): {exc or 'timeout'}"
            log.info("edge %s: %s", self.me, reason)
            stream.reset(ErrorCode.CONNECT_FAILED, reason)
            return
        tunnel = StreamPipe(stream)
        try:
            result = await splice(tunnel, kubelet)
        except BaseException:
            kubelet.abort()
            raise
        if result.error is not None:
            kubelet.abort()
            stream.reset(ErrorCode.CANCEL, str(result.error))
            return
        kubelet.close()

    async def _splice_fast(
        self, stream: Stream, address: str, port: int, tls: KubeletTls | None
    ) -> None:
        """The real network: splice with loop callbacks (tunnel_splice), no task per side.
        Raises OSError/TimeoutError only while dialling."""
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(self._timeout):
            _, link = await loop.create_connection(
                lambda: SocketLink(stream), address, port, ssl=tls() if tls else None
            )
        await link.run()
