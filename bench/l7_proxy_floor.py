"""The CPython floor of ravend's L7 path: the same processes and TLS legs, no logic. Loopback I/O.

`python -m bench.l7_proxy_floor ROLE --dir D --kubelet-port P --plain-port Q [...]`, the same
contract as bench/l7_proxy_procs.py (one JSON ready line, runs until SIGTERM):
  cloud  terminates the caller's connection (TLS with a required client certificate from the
         cluster CA on one port, plain on the other) and relays its bytes over a TLS connection
         to the edge, dialled per caller connection
  edge   terminates that TLS link (client certificate required) and relays to the kubelet: over
         TLS with a proxy client certificate for the caller's TLS port, plain for the plain port

Each hop is a pair of asyncio Protocols whose data_received writes to the other side: no HTTP
head is read, nothing is routed, authorised, framed, pooled or multiplexed, and there is one
tunnel connection per caller connection (cheaper than multiplexing). It is the least a CPython
process can spend carrying a request through the three TLS legs ravend has (caller -> cloud,
cloud -> edge, edge -> kubelet), so bench/l7_proxy can tell what ravend's own logic costs
(ravend minus floor) from what the language and the TLS terminations cost (floor minus ssh).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import ssl
from typing import cast

from bench.l7_proxy_procs import (
    CLIENT_USAGES,
    KUBELET_IP,
    load_ca,
    ready,
    run_role,
    until_sigterm,
)
from ravend.certs.tls import client_context, server_context
from ravend.l7proxy.tunnel_transport import set_nodelay

Dial = tuple[str, int, ssl.SSLContext | None]
"""Where a hop relays to: host, port, TLS context (None: plain)."""


class _Half(asyncio.Protocol):
    """One side of a hop. Bytes go to `peer` as they come; reading pauses while the peer's
    transport is above its write high-water mark (back-pressure, as any relay needs)."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.peer: _Half | None = None
        self.early: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses
        set_nodelay(transport)

    def data_received(self, data: bytes) -> None:
        peer = self.peer
        if peer is None or peer.transport is None:
            self.early.append(data)  # the upstream is still being dialled
        else:
            peer.transport.write(data)

    def eof_received(self) -> bool:
        if self.peer is not None and self.peer.transport is not None:
            if self.peer.transport.can_write_eof():
                self.peer.transport.write_eof()
                return True
            self.peer.transport.close()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.close()

    def pause_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.resume_reading()


_JOINING: set[asyncio.Task[None]] = set()


class _Inbound(_Half):
    """An accepted connection: dial the next hop, then join the two halves."""

    def __init__(self, dial: Dial) -> None:
        super().__init__()
        self.dial = dial

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        task = asyncio.get_running_loop().create_task(self._join())
        _JOINING.add(task)  # held until done: the loop keeps only weak references to tasks
        task.add_done_callback(_JOINING.discard)

    async def _join(self) -> None:
        host, port, tls = self.dial
        assert self.transport is not None
        try:
            _, out = await asyncio.get_running_loop().create_connection(
                _Half, host, port, ssl=tls, server_hostname=host if tls else None
            )
        except OSError:
            self.transport.abort()
            return
        out.peer, self.peer = self, out
        assert out.transport is not None
        for data in self.early:
            out.transport.write(data)
        self.early.clear()
        if self.transport.is_closing():
            out.transport.close()


async def _serve(dials: list[tuple[ssl.SSLContext | None, Dial]]) -> list[int]:
    """One listener per (listen TLS, dial): their ports."""
    loop = asyncio.get_running_loop()
    ports = []
    for listen_tls, dial in dials:
        server = await loop.create_server(
            functools.partial(_Inbound, dial), "127.0.0.1", 0, ssl=listen_tls
        )
        ports.append(int(server.sockets[0].getsockname()[1]))
    return ports


async def cloud(args: argparse.Namespace) -> None:
    """The caller's TLS terminated as by ravend's front end; a TLS link to the edge per caller."""
    ca = load_ca(args.dir)
    cert, key = ca.issue(
        "floor-cloud", usages=["digital signature", "server auth"], sans=["127.0.0.1"]
    )
    tunnel_cert, tunnel_key = ca.issue("floor-tunnel", usages=CLIENT_USAGES)
    front_tls = server_context(cert, key, ca.cert_pem)
    to_edge = client_context(ca.cert_pem, tunnel_cert, tunnel_key)
    https, http = await _serve(
        [
            (front_tls, ("127.0.0.1", args.tunnel_port, to_edge)),
            (None, ("127.0.0.1", args.tunnel_port + 1, to_edge)),
        ]
    )
    ready(https=https, http=http)
    await until_sigterm()


async def edge(args: argparse.Namespace) -> None:
    """Two TLS listeners (client certificate required): one relays to the kubelet's TLS port
    over TLS with a proxy client certificate, the next port up to its plain port."""
    ca = load_ca(args.dir)
    cert, key = ca.issue(
        "floor-edge", usages=["digital signature", "server auth"], sans=["127.0.0.1"]
    )
    proxy_cert, proxy_key = ca.issue("ravend-proxy-client", usages=CLIENT_USAGES)
    listen = server_context(cert, key, ca.cert_pem)
    kubelet_tls = client_context(None, proxy_cert, proxy_key)
    loop = asyncio.get_running_loop()
    for attempt in range(50):  # two adjacent free ports: the cloud dials tunnel and tunnel+1
        first = await loop.create_server(
            functools.partial(_Inbound, (KUBELET_IP, args.kubelet_port, kubelet_tls)),
            "127.0.0.1",
            0,
            ssl=listen,
        )
        port = int(first.sockets[0].getsockname()[1])
        try:
            await loop.create_server(
                functools.partial(_Inbound, (KUBELET_IP, args.plain_port, None)),
                "127.0.0.1",
                port + 1,
                ssl=listen,
            )
        except OSError:
            first.close()
            if attempt == 49:
                raise
            continue
        ready(tunnel=port)
        await until_sigterm()
        return


ROLES = {"cloud": cloud, "edge": edge}


if __name__ == "__main__":
    run_role(ROLES, "python -m bench.l7_proxy_floor")
