"""The edge's callback splice (tunnel_splice via EdgeHandler's real dial) over a real tunnel.

Backends on loopback stand in for kubelets: an echo that half-closes, a TLS server that answers
and closes, one that resets mid-stream, one that stops reading. (Through the dial seam, the
generic splice is covered by tests/l7_front.)
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import socket
import ssl
import struct
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager

import pytest

from ravend.l7proxy.edge import EdgeHandler
from ravend.l7proxy.protocol_frames import ErrorCode, Target
from ravend.l7proxy.tunnel_client import ServerAddress, TunnelClient
from ravend.l7proxy.tunnel_server import TunnelServer
from ravend.l7proxy.tunnel_splice import SocketLink
from ravend.l7proxy.tunnel_stream import Stream, StreamResetError
from ravend.model import (
    GATEWAY_LABEL,
    ClusterView,
    Endpoint,
    EndpointType,
    Gateway,
    GatewaySpec,
    GatewayStatus,
    Node,
    ObjectMeta,
    ProxyConfig,
    RavenConfig,
)
from ravend.runtime import Latest

from .conftest import Pki
from .test_tunnel import FAST, ClientContext, read_all, wait_for

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def view(tls_port: int, plain_port: int) -> ClusterView:
    """edge-1 proxies pool gw-a, whose node kubelet-1 is at 127.0.0.1."""
    proxy = ProxyConfig(replicas=1, proxy_https_port=str(tls_port), proxy_http_port=str(plain_port))
    nodes = {
        name: Node(ObjectMeta(name, labels={GATEWAY_LABEL: "gw-a"}), internal_ips=(ip,))
        for name, ip in (("edge-1", "127.0.0.2"), ("kubelet-1", "127.0.0.1"))
    }
    ep = Endpoint("edge-1", EndpointType.PROXY, 10262)
    spec = GatewaySpec(proxy_config=proxy, endpoints=(ep,))
    gateway = Gateway(ObjectMeta("gw-a"), spec, GatewayStatus(active_endpoints=(ep,)))
    return ClusterView({"gw-a": gateway}, nodes, RavenConfig(True, True, True), synced=True)


@asynccontextmanager
async def backend(handler: Handler, tls: ssl.SSLContext | None = None) -> AsyncIterator[int]:
    server = await asyncio.start_server(handler, "127.0.0.1", 0, ssl=tls)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()


@asynccontextmanager
async def edge_tunnel(
    server_ctx: ssl.SSLContext, client_ctx: ClientContext, tls_port: int, plain_port: int
) -> AsyncIterator[TunnelServer]:
    kubelet_tls = ssl.create_default_context()
    kubelet_tls.check_hostname = False
    kubelet_tls.verify_mode = ssl.CERT_NONE
    handler = EdgeHandler("edge-1", Latest(view(tls_port, plain_port)), lambda: kubelet_tls)
    async with TunnelServer(server_ctx, FAST, host="127.0.0.1") as server:
        address = ServerAddress("127.0.0.1", server.port, client_ctx("edge-1"))
        client = TunnelClient([address], handler, FAST)
        task = asyncio.get_running_loop().create_task(client.run())
        try:
            await wait_for(lambda: "edge-1" in server.connected.value)
            yield server
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def kubelet(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """A plain backend whose first 4 bytes choose: echo, reset midway, or stall (never read)."""
    mode = await reader.readexactly(4)
    if mode == b"rset":
        writer.write(b"partial")
        await writer.drain()
        # SO_LINGER 0: close() sends RST, a reset rather than an orderly end.
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.close()
        return
    if mode == b"stal":
        await asyncio.Event().wait()
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()
    writer.write_eof()
    await writer.drain()
    writer.close()


async def answer_and_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    request = await reader.readuntil(b"\r\n\r\n")
    writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n" + request * 1000)
    await writer.drain()
    writer.close()


def to(port: int, tls: bool = False) -> Target:
    return Target("kubelet-1", port, tls)


async def exchange(stream: Stream, payload: bytes) -> bytes:
    async with asyncio.TaskGroup() as tg:
        reply = tg.create_task(read_all(stream))
        await stream.write(payload)
        stream.write_eof()
    return reply.result()


async def test_plain_kubelet_gets_bulk_and_half_close_both_ways(
    server_ctx: ssl.SSLContext, client_ctx: ClientContext
) -> None:
    payload = b"echo" + os.urandom(3 * 1024 * 1024)  # several stream windows: pauses both ways
    async with (
        backend(kubelet) as port,
        edge_tunnel(server_ctx, client_ctx, port + 1, port) as server,
    ):
        streams = [server.open_stream("edge-1", to(port)) for _ in range(3)]
        replies = await asyncio.gather(*(exchange(s, payload) for s in streams))
        assert replies == [payload[4:]] * 3  # the mode word is not echoed
        await wait_for(lambda: server.session("edge-1").stream_count == 0)  # type: ignore[union-attr]


async def test_tls_kubelet_answer_then_close_ends_the_stream(
    pki: Pki, server_ctx: ssl.SSLContext, client_ctx: ClientContext
) -> None:
    request = b"GET /metrics HTTP/1.1\r\nHost: kubelet-1\r\n\r\n"
    serving = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)  # this kubelet asks for no client cert
    serving.load_cert_chain(pki.directory / "server.pem", pki.directory / "server.key")
    async with (
        backend(answer_and_close, serving) as port,
        edge_tunnel(server_ctx, client_ctx, port, port + 1) as server,
    ):
        stream = server.open_stream("edge-1", to(port, tls=True))
        await stream.write(request)
        body = await read_all(stream)  # ends with EOF, no reset
        assert body == b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n" + request * 1000


async def test_kubelet_reset_resets_the_stream_only(
    server_ctx: ssl.SSLContext, client_ctx: ClientContext
) -> None:
    async with backend(kubelet) as port, edge_tunnel(server_ctx, client_ctx, 1, port) as server:
        broken = server.open_stream("edge-1", to(port))
        await broken.write(b"rset")
        with pytest.raises(StreamResetError) as caught:
            await read_all(broken)
        assert caught.value.code == ErrorCode.CANCEL
        assert await exchange(server.open_stream("edge-1", to(port)), b"echo fine") == b" fine"


async def test_unreachable_kubelet_is_a_connect_failure(
    server_ctx: ssl.SSLContext, client_ctx: ClientContext
) -> None:
    async with backend(kubelet) as port:
        pass  # closed again: nothing listens there now
    async with edge_tunnel(server_ctx, client_ctx, 1, port) as server:
        stream = server.open_stream("edge-1", to(port))
        with pytest.raises(StreamResetError) as caught:
            await read_all(stream)
        assert caught.value.code == ErrorCode.CONNECT_FAILED


async def test_slow_kubelet_holds_back_only_its_own_stream(
    server_ctx: ssl.SSLContext, client_ctx: ClientContext
) -> None:
    async with backend(kubelet) as port, edge_tunnel(server_ctx, client_ctx, 1, port) as server:
        blocked = server.open_stream("edge-1", to(port))
        writer = asyncio.get_running_loop().create_task(blocked.write(b"stal" + b"x" * (64 << 20)))
        await asyncio.sleep(0.3)
        assert not writer.done()  # held back by its window, not buffered without bound
        payload = b"echo" + os.urandom(2 * 1024 * 1024)
        assert await exchange(server.open_stream("edge-1", to(port)), payload) == payload[4:]
        blocked.reset()
        with pytest.raises(StreamResetError):
            await writer


@contextlib.contextmanager
def no_cycle_collector() -> Iterator[None]:
    """Only reference counting frees memory meanwhile: what a cycle holds stays visible."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def live_links() -> int:
    return sum(isinstance(o, SocketLink) for o in gc.get_objects())


async def test_finished_splices_are_freed_without_the_cycle_collector(
    pki: Pki, server_ctx: ssl.SSLContext, client_ctx: ClientContext
) -> None:
    """A finished splice (its link, the kubelet socket, a TLS transport's 256 KiB buffer) is
    freed when the exchange ends, not at the next full gc, which a busy proxy reaches only
    after hundreds of MiB; and a TLS kubelet's close after ours raises nothing in the loop."""
    serving = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    serving.load_cert_chain(pki.directory / "server.pem", pki.directory / "server.key")
    loop = asyncio.get_running_loop()
    loop_errors: list[dict[str, object]] = []
    loop.set_exception_handler(lambda _, context: loop_errors.append(context))
    request = b"GET /metrics HTTP/1.1\r\nHost: kubelet-1\r\n\r\n"
    with no_cycle_collector():
        async with (
            backend(answer_and_close, serving) as tls_port,
            backend(kubelet) as port,
            edge_tunnel(server_ctx, client_ctx, tls_port, port) as server,
        ):
            for _ in range(5):
                stream = server.open_stream("edge-1", to(tls_port, tls=True))
                await stream.write(request)
                await read_all(stream)
                broken = server.open_stream("edge-1", to(port))
                await broken.write(b"rset")
                with pytest.raises(StreamResetError):
                    await read_all(broken)
                assert await exchange(server.open_stream("edge-1", to(port)), b"echo") == b""
            await wait_for(lambda: live_links() == 0)
    assert loop_errors == []
