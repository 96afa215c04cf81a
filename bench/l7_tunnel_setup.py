"""Fixtures of bench/l7_tunnel.py: loopback backends, a byte relay, tunnels over TLS and WebSocket.

All on 127.0.0.1 with a throwaway PKI in a temporary directory. Does network I/O (loopback only).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ipaddress
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import aiohttp
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from ravend.l7proxy.protocol import Connection, Role
from ravend.l7proxy.protocol_frames import Target
from ravend.l7proxy.settings import L7TunnelSettings
from ravend.l7proxy.tunnel_client import ServerAddress, TunnelClient
from ravend.l7proxy.tunnel_server import TunnelServer
from ravend.l7proxy.tunnel_session import TunnelSession
from ravend.l7proxy.tunnel_splice import SocketLink
from ravend.l7proxy.tunnel_stream import Stream
from ravend.l7proxy.tunnel_transport import TunnelProtocol, WebSocketTransport, set_nodelay

STALL_PORT = 1
IDLE_PORT = 2
CHUNK = 256 * 1024
SETTINGS = L7TunnelSettings(port=0)


class Pipe(Protocol):
    async def write(self, data: bytes) -> None: ...
    async def read(self) -> bytes: ...
    async def close(self) -> None: ...


class TcpPipe:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        set_nodelay(writer)

    async def write(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def read(self) -> bytes:
        return await self.reader.read(CHUNK)

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(OSError):
            await self.writer.wait_closed()


class StreamPipe:
    def __init__(self, stream: Stream) -> None:
        self.stream = stream

    async def write(self, data: bytes) -> None:
        await self.stream.write(data)

    async def read(self) -> bytes:
        return await self.stream.read(CHUNK)

    async def close(self) -> None:
        self.stream.close()


async def tcp_pipe(port: int, tls: ssl.SSLContext | None = None) -> Pipe:
    return TcpPipe(*await asyncio.open_connection("127.0.0.1", port, ssl=tls))


@dataclass
class Backends:
    echo: int = 0
    source: int = 0
    relay_source: int = 0


async def _never() -> Pipe:
    raise RuntimeError("not set up")


@dataclass
class Endpoints:
    open: dict[str, Callable[[], Awaitable[Pipe]]] = field(default_factory=dict)
    bulk_open: dict[str, Callable[[], Awaitable[Pipe]]] = field(default_factory=dict)
    open_stalled: Callable[[], Awaitable[Pipe]] = field(default=_never)
    open_idle: Callable[[], Awaitable[Pipe]] = field(default=_never)


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    set_nodelay(writer)
    with contextlib.suppress(OSError):
        while data := await reader.read(CHUNK):
            writer.write(data)
            await writer.drain()
    writer.close()


async def _source(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Send the number of MiB named by the 8-byte request, then close."""
    set_nodelay(writer)
    megabytes = int.from_bytes(await reader.readexactly(8), "big")
    block = b"b" * (1 << 20)
    for _ in range(megabytes):
        writer.write(block)
        await writer.drain()
    writer.close()


async def _copy(
    read: Callable[[], Awaitable[bytes]],
    write: Callable[[bytes], Awaitable[None]],
    eof: Callable[[], None],
) -> None:
    with contextlib.suppress(OSError, ConnectionError):
        while data := await read():
            await write(data)
        eof()


def _relay_to(port: int) -> Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]:
    async def relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up = TcpPipe(*await asyncio.open_connection("127.0.0.1", port))
        down = TcpPipe(reader, writer)
        # TLS cannot half-close: the backend's EOF ends the caller's connection.
        down_eof = down.writer.write_eof if down.writer.can_write_eof() else down.writer.close
        async with asyncio.TaskGroup() as tg:
            tg.create_task(_copy(down.read, up.write, up.writer.write_eof))
            tg.create_task(_copy(up.read, down.write, down_eof))
        await up.close()
        await down.close()

    return relay


@asynccontextmanager
async def start_backends() -> AsyncIterator[Backends]:
    echo = await asyncio.start_server(_echo, "127.0.0.1", 0)
    source = await asyncio.start_server(_source, "127.0.0.1", 0)
    ports = Backends(echo.sockets[0].getsockname()[1], source.sockets[0].getsockname()[1])
    relay_source = await asyncio.start_server(_relay_to(ports.source), "127.0.0.1", 0)
    ports.relay_source = relay_source.sockets[0].getsockname()[1]
    try:
        yield ports
    finally:
        for server in (echo, source, relay_source):
            server.close()


@asynccontextmanager
async def start_relay(port: int, tls: ssl.SSLContext | None = None) -> AsyncIterator[int]:
    """A byte relay to `port`; with `tls`, its callers speak TLS to it (one TLS link, like the
    tunnel's, but one connection per request and no multiplexing: the baseline to beat)."""
    server = await asyncio.start_server(_relay_to(port), "127.0.0.1", 0, ssl=tls)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()


async def edge_handler(target: Target, stream: Stream) -> None:
    """The edge: dial the backend named by the port and splice it the way EdgeHandler does
    on the real network (tunnel_splice: loop callbacks, no task per side); or stall / idle."""
    if target.port in (STALL_PORT, IDLE_PORT):
        await asyncio.Event().wait()
    loop = asyncio.get_running_loop()
    _, link = await loop.create_connection(lambda: SocketLink(stream), "127.0.0.1", target.port)
    await link.run()


def make_pki(directory: Path) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """Server and edge-1 client TLS 1.3 contexts signed by a fresh CA."""

    def name(cn: str, org: str | None = None) -> x509.Name:
        attrs = [x509.NameAttribute(NameOID.COMMON_NAME, cn)]
        return x509.Name(
            ([x509.NameAttribute(NameOID.ORGANIZATION_NAME, org)] if org else []) + attrs
        )

    ca_key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)

    def issue(subject: x509.Name, key: ec.EllipticCurvePrivateKey, ca: bool, file: str) -> None:
        b = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(name("bench CA"))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if not ca:
            san = [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            b = b.add_extension(x509.SubjectAlternativeName(san), critical=False)
        cert = b.sign(ca_key, hashes.SHA256())
        (directory / f"{file}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        (directory / f"{file}.key").write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )

    issue(name("bench CA"), ca_key, True, "ca")
    issue(name("tunnel"), ec.generate_private_key(ec.SECP256R1()), False, "server")
    issue(
        name("ravend:tunnel:edge-1", "ravend:tunnel-clients"),
        ec.generate_private_key(ec.SECP256R1()),
        False,
        "edge-1",
    )
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.minimum_version = ssl.TLSVersion.TLSv1_3
    server.verify_mode = ssl.CERT_REQUIRED
    server.load_verify_locations(directory / "ca.pem")
    server.load_cert_chain(directory / "server.pem", directory / "server.key")
    client = ssl.create_default_context(cafile=directory / "ca.pem")
    client.minimum_version = ssl.TLSVersion.TLSv1_3
    client.load_cert_chain(directory / "edge-1.pem", directory / "edge-1.key")
    return server, client


@asynccontextmanager
async def _ws_tunnel(
    server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext
) -> AsyncIterator[TunnelSession]:
    """The same sessions, carried as binary messages of an aiohttp WebSocket over mutual TLS."""
    cloud: asyncio.Future[TunnelSession] = asyncio.get_running_loop().create_future()

    async def accept(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(max_msg_size=0, compress=False)
        await ws.prepare(request)
        session = TunnelSession(
            Connection(Role.SERVER, SETTINGS.protocol_settings()),
            WebSocketTransport(ws),
            SETTINGS,
            name="ws-edge",
        )
        cloud.set_result(session)
        await session.run()
        return ws

    app = web.Application()
    app.router.add_get("/v1/tunnel", accept)
    runner = web.AppRunner(app, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_ctx)
    await site.start()
    port = runner.addresses[0][1]
    async with aiohttp.ClientSession() as http, asyncio.TaskGroup() as tg:
        ws = await http.ws_connect(
            f"https://127.0.0.1:{port}/v1/tunnel", ssl=client_ctx, max_msg_size=0, compress=0
        )
        edge = TunnelSession(
            Connection(Role.CLIENT, SETTINGS.protocol_settings()),
            WebSocketTransport(ws),
            SETTINGS,
            name="ws-cloud",
            handler=edge_handler,
        )
        edge_task = tg.create_task(edge.run())
        session = await cloud
        await session.wait_ready()
        yield session
        session.abort("bench over")
        edge.abort("bench over")
        edge_task.cancel()
    await runner.cleanup()


@asynccontextmanager
async def _plain_tunnel() -> AsyncIterator[TunnelSession]:
    """The same sessions over plain loopback TCP: the protocol's cost without TLS."""
    loop = asyncio.get_running_loop()
    cloud: asyncio.Future[TunnelSession] = loop.create_future()

    def accept() -> TunnelProtocol:
        proto = TunnelProtocol()
        conn = Connection(Role.SERVER, SETTINGS.protocol_settings())
        cloud.set_result(TunnelSession(conn, proto, SETTINGS, name="plain-edge"))
        return proto

    listener = await loop.create_server(accept, "127.0.0.1", 0)
    _, edge_proto = await loop.create_connection(
        TunnelProtocol, "127.0.0.1", listener.sockets[0].getsockname()[1]
    )
    edge = TunnelSession(
        Connection(Role.CLIENT, SETTINGS.protocol_settings()),
        edge_proto,
        SETTINGS,
        name="plain-cloud",
        handler=edge_handler,
    )
    async with asyncio.TaskGroup() as tg:
        edge_task = tg.create_task(edge.run())
        session = await cloud
        cloud_task = tg.create_task(session.run())
        await session.wait_ready()
        yield session
        session.abort("bench over")
        edge.abort("bench over")
        edge_task.cancel()
        cloud_task.cancel()
    listener.close()


@asynccontextmanager
async def tunnel_paths(
    server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext, backends: Backends
) -> AsyncIterator[Endpoints]:
    paths = Endpoints()
    async with TunnelServer(server_ctx, SETTINGS, host="127.0.0.1") as server:
        address = ServerAddress("127.0.0.1", server.port, client_ctx)
        client = TunnelClient([address], edge_handler, SETTINGS)
        async with (
            asyncio.TaskGroup() as tg,
            _ws_tunnel(server_ctx, client_ctx) as ws_session,
            _plain_tunnel() as plain_session,
        ):
            client_task = tg.create_task(client.run())
            while "edge-1" not in server.connected.value:
                await asyncio.sleep(0.01)

            def via_tls(port: int) -> Callable[[], Awaitable[Pipe]]:
                async def open_pipe() -> Pipe:
                    return StreamPipe(server.open_stream("edge-1", Target("edge-1", port)))

                return open_pipe

            def via(session: TunnelSession, port: int) -> Callable[[], Awaitable[Pipe]]:
                async def open_pipe() -> Pipe:
                    return StreamPipe(session.open_stream(Target("edge-1", port)))

                return open_pipe

            for name, session in (("tunnel-ws", ws_session), ("tunnel-plain", plain_session)):
                paths.open[name] = via(session, backends.echo)
                paths.bulk_open[name] = via(session, backends.source)
            paths.open["tunnel-tls"] = via_tls(backends.echo)
            paths.bulk_open["tunnel-tls"] = via_tls(backends.source)
            paths.open_stalled = via_tls(STALL_PORT)
            paths.open_idle = via_tls(IDLE_PORT)
            yield paths
            client_task.cancel()
