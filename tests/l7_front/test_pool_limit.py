"""Idle pooled tunnel streams must not starve new streams at the tunnel's stream limit."""

from __future__ import annotations

import ssl
from typing import cast

from ravend.l7proxy.front_dial import Lease, UpstreamDialer
from ravend.l7proxy.protocol_frames import Target
from ravend.l7proxy.routing import Refusal, ViaTunnel
from ravend.l7proxy.tunnel_server import TunnelServer
from ravend.l7proxy.tunnel_stream import TunnelError
from ravend.runtime import Latest


class FakeStream:
    def __init__(self, tunnel: FakeTunnels) -> None:
        self.tunnel = tunnel
        self.open = True

    @property
    def idle(self) -> bool:
        return self.open

    def attach(self, sink: object) -> None:
        pass  # a leased stream is read through callbacks (front_upstream.TunnelPipe)

    def detach(self) -> None:
        pass

    def reset(self, code: int = 0, reason: str = "") -> None:
        self._end()

    def close(self) -> None:
        self._end()

    def _end(self) -> None:
        if self.open:
            self.open = False
            self.tunnel.count -= 1


class FakeTunnels:
    """A tunnel to edge-1 that takes at most `limit` concurrent streams, like the protocol."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.count = 0
        self.connected = Latest(frozenset({"edge-1"}))

    def open_stream(self, node: str, target: Target) -> FakeStream:
        if self.count >= self.limit:
            raise TunnelError("cannot open a stream now (at limit)")
        self.count += 1
        return FakeStream(self)


ROUTE = ViaTunnel("edge-2", 10250, True, "gw-a", ("edge-1",))
OTHER = ViaTunnel("edge-3", 10250, True, "gw-a", ("edge-1",))


def dialer(tunnels: FakeTunnels) -> UpstreamDialer:
    def no_tls() -> ssl.SSLContext:
        raise AssertionError("tunnel streams need no kubelet TLS at the cloud")

    return UpstreamDialer(no_tls, cast(TunnelServer, tunnels))


async def test_idle_pooled_streams_give_way_to_a_new_stream_at_the_limit() -> None:
    tunnels = FakeTunnels(limit=4)
    d = dialer(tunnels)
    leases = [await d.lease(ROUTE) for _ in range(4)]
    for lease in leases:
        assert isinstance(lease, Lease)
        d.release(lease)
    assert d.pool.idle == 4 and tunnels.count == 4
    # Another node behind the same tunnel: without eviction this would be a 503.
    fresh = await d.lease(OTHER)
    assert isinstance(fresh, Lease) and not fresh.reused
    assert tunnels.count <= 4 and d.pool.idle < 4


async def test_busy_streams_at_the_limit_still_refuse_with_503() -> None:
    tunnels = FakeTunnels(limit=2)
    d = dialer(tunnels)
    busy = [await d.lease(ROUTE) for _ in range(2)]
    assert all(isinstance(b, Lease) for b in busy)
    refused = await d.lease(OTHER)
    assert isinstance(refused, Refusal) and refused.status == 503
