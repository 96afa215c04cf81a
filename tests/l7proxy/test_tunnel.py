"""The tunnel over real loopback mutual TLS: server (cloud) <-> client (edge)."""

from __future__ import annotations

import asyncio
import os
import socket
import ssl
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import pytest

from ravend.l7proxy.protocol_frames import ErrorCode, Target
from ravend.l7proxy.settings import L7TunnelSettings
from ravend.l7proxy.tunnel_client import ServerAddress, TunnelClient
from ravend.l7proxy.tunnel_server import NodeNotConnected, TunnelServer
from ravend.l7proxy.tunnel_stream import Stream, StreamResetError

ClientContext = Callable[[str | None], ssl.SSLContext]
FAST = L7TunnelSettings(
    port=0,
    keepalive_interval=0.2,
    keepalive_timeout=0.8,
    reconnect_initial_delay=0.05,
    reconnect_max_delay=0.3,
    drain_timeout=2.0,
    stream_window=256 * 1024,
)
ECHO, STALL, FAIL = 1, 2, 3


async def edge_handler(target: Target, stream: Stream) -> None:
    """What the edge does per stream: echo, never read, or crash, chosen by the port."""
    if target.port == STALL:
        await asyncio.Event().wait()
    if target.port == FAIL:
        raise RuntimeError("handler bug")
    while data := await stream.read():
        await stream.write(data)
    stream.write_eof()


async def wait_for(predicate: Callable[[], bool], timeout: float = 5.0) -> float:
    """Poll until `predicate()` holds; return the seconds it took."""
    start = time.monotonic()
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.01)
    return time.monotonic() - start


async def read_all(stream: Stream) -> bytes:
    chunks = []
    while chunk := await stream.read():
        chunks.append(chunk)
    return b"".join(chunks)


async def echo_through(server: TunnelServer, payload: bytes, node: str = "edge-1") -> bytes:
    stream = server.open_stream(node, Target(node, ECHO))
    async with asyncio.TaskGroup() as tg:
        reply = tg.create_task(read_all(stream))
        await stream.write(payload)
        stream.write_eof()
    return reply.result()


@asynccontextmanager
async def running_client(
    port: int, ctx: ssl.SSLContext, settings: L7TunnelSettings = FAST
) -> AsyncIterator[TunnelClient]:
    client = TunnelClient([ServerAddress("127.0.0.1", port, ctx)], edge_handler, settings)
    task = asyncio.get_running_loop().create_task(client.run())
    try:
        yield client
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


@asynccontextmanager
async def tunnel(
    server_ctx: ssl.SSLContext, client_ctx: ClientContext, settings: L7TunnelSettings = FAST
) -> AsyncIterator[TunnelServer]:
    async with (
        TunnelServer(server_ctx, settings, host="127.0.0.1") as server,
        running_client(server.port, client_ctx("edge-1"), settings),
    ):
        await wait_for(lambda: "edge-1" in server.connected.value)
        yield server
    await assert_no_tasks_left()


async def assert_no_tasks_left() -> None:
    await asyncio.sleep(0)
    assert asyncio.all_tasks() == {asyncio.current_task()}


async def test_echo_through_the_tunnel(
    server_ctx: ssl.SSLContext, client_ctx: ClientContext
) -> None:
    async with tunnel(server_ctx, client_ctx) as server:
        payload = os.urandom(3 * 1024 * 1024 + 17)  # several windows' worth
        assert await echo_through(server, payload) == payload
        assert server.session("edge-1") is not None


async def test_many_concurrent_streams(
    server_ctx: ssl.SSLContext, client_ctx: ClientContext
) -> None:
    async with tunnel(server_ctx, client_ctx) as server:
        payloads = [os.urandom(1000 + i * 37) for i in range(300)]
        async with asyncio.TaskGroup() as tg:
            replies = [tg.create_task(echo_through(server, p)) for p in payloads]
        assert [r.result() for r in replies] == payloads
        assert server.session("edge-1").stream_count == 0  # type: ignore[union-attr]


async def test_stalled_stream_does_not_block_bulk(
    server_ctx: ssl.SSLContext, client_ctx: ClientContext
) -> None:
    async with tunnel(server_ctx, client_ctx) as server:
        stalled = server.open_stream("edge-1", Target("edge-1", STALL))

        async def write_until_reset() -> None:
            with pytest.raises(StreamResetError):
                await stalled.write(b"s" * 8 * 1024 * 1024)

        async with asyncio.TaskGroup() as tg:
            blocked = tg.create_task(write_until_reset())
            bulk = os.urandom(16 * 1024 * 1024)  # 64 windows of the stalled stream
            assert await echo_through(server, bulk) == bulk
            assert not blocked.done()  # the stalled stream is still waiting for its window
            stalled.reset()
        with pytest.raises(StreamResetError):
            await stalled.read()


async def test_failing_handler_resets_only_its_stream(
    server_ctx: ssl.SSLContext, client_ctx: ClientContext
) -> None:
    async with tunnel(server_ctx, client_ctx) as server:
        broken = server.open_stream("edge-1", Target("edge-1", FAIL))
        with pytest.raises(StreamResetError) as info:
            await broken.read()
        assert info.value.code == ErrorCode.INTERNAL_ERROR
        assert await echo_through(server, b"still alive") == b"still alive"


async def test_unknown_node_is_refused_at_once(
    server_ctx: ssl.SSLContext, client_ctx: ClientContext
) -> None:
    async with tunnel(server_ctx, client_ctx) as server:
        with pytest.raises(NodeNotConnected):
            server.open_stream("edge-9", Target("edge-9", ECHO))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def test_client_redials_after_server_restart(
    server_ctx: ssl.SSLContext, client_ctx: ClientContext
) -> None:
    port = free_port()
    settings = L7TunnelSettings(
        port=port, reconnect_initial_delay=0.05, reconnect_max_delay=0.2, drain_timeout=1.0
    )
    async with running_client(port, client_ctx("edge-1"), settings) as client:
        for _ in range(2):
            async with TunnelServer(server_ctx, settings, host="127.0.0.1") as server:
                await wait_for(lambda: "edge-1" in server.connected.value)
                assert await echo_through(server, b"ping") == b"ping"
            # The server's GOAWAY on shutdown makes the client drop the tunnel at once.
            await wait_for(lambda: not client.connected.value, timeout=2.0)
    await assert_no_tasks_left()


class FreezableRelay:
    """A TCP relay that can stop forwarding without closing: a peer that silently died."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.frozen = asyncio.Event()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            while (data := await src.read(65536)) and not self.frozen.is_set():
                dst.write(data)
            await self.frozen.wait()  # hold the sockets open, forward nothing

        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(pipe(reader, up_writer))
                tg.create_task(pipe(up_reader, writer))
        finally:
            writer.transport.abort()
            up_writer.transport.abort()


async def test_dead_peer_is_detected_by_keepalive(
    server_ctx: ssl.SSLContext, client_ctx: ClientContext
) -> None:
    async with TunnelServer(server_ctx, FAST, host="127.0.0.1") as server:
        relay = FreezableRelay(server.port)
        relay_server = await asyncio.start_server(relay.handle, "127.0.0.1", 0)
        relay_port = relay_server.sockets[0].getsockname()[1]
        async with running_client(relay_port, client_ctx("edge-1")) as client:
            await wait_for(lambda: "edge-1" in server.connected.value)
            relay.frozen.set()
            server_took = await wait_for(lambda: not server.connected.value)
            client_took = await wait_for(lambda: not client.connected.value)
            assert server_took < 4 * FAST.keepalive_timeout
            assert client_took < 4 * FAST.keepalive_timeout
        relay_server.close()
        await relay_server.wait_closed()


async def test_certificate_that_names_no_node_is_refused(
    server_ctx: ssl.SSLContext, client_ctx: ClientContext
) -> None:
    async with TunnelServer(server_ctx, FAST, host="127.0.0.1") as server:
        for name in ("intruder", "kubelet-cert", None):
            async with running_client(server.port, client_ctx(name)) as client:
                await asyncio.sleep(0.5)  # several dial attempts
                assert server.connected.value == frozenset()
                assert client.connected.value == frozenset()
    await assert_no_tasks_left()


def test_server_refuses_contexts_without_client_certificates(client_ctx: ClientContext) -> None:
    lax = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    with pytest.raises(ValueError, match="client certificates"):
        TunnelServer(lax)
    lax.verify_mode = ssl.CERT_REQUIRED
    with pytest.raises(ValueError, match=r"TLS 1\.3"):
        TunnelServer(lax)


async def test_reconnecting_node_replaces_its_older_session(
    server_ctx: ssl.SSLContext, client_ctx: ClientContext
) -> None:
    async with tunnel(server_ctx, client_ctx) as server:
        first = server.session("edge-1")
        assert first is not None
        stream = server.open_stream("edge-1", Target("edge-1", ECHO))
        await stream.write(b"before")
        assert await stream.read() == b"before"
        async with running_client(server.port, client_ctx("edge-1"), FAST):
            await wait_for(lambda: server.session("edge-1") is not first)
            # The old session drains: its open stream keeps working, new streams go to the new.
            assert first.going_away.is_set()
            await stream.write(b"after")
            assert await stream.read() == b"after"
            assert await echo_through(server, b"new") == b"new"
            stream.close()
            await wait_for(first.closed.is_set)


async def test_server_shutdown_lets_open_streams_finish(
    server_ctx: ssl.SSLContext, client_ctx: ClientContext
) -> None:
    payload = os.urandom(2 * 1024 * 1024)
    async with (
        TunnelServer(server_ctx, FAST, host="127.0.0.1") as server,
        running_client(server.port, client_ctx("edge-1")),
    ):
        await wait_for(lambda: "edge-1" in server.connected.value)
        stream = server.open_stream("edge-1", Target("edge-1", ECHO))
        async with asyncio.TaskGroup() as tg:
            closing = tg.create_task(server.close())
            reply = tg.create_task(read_all(stream))
            await stream.write(payload)
            stream.write_eof()
        assert reply.result() == payload  # drained after GOAWAY, not cut
        assert closing.done()
    await assert_no_tasks_left()


def is_idle(stream: Stream) -> bool:
    # A call, not the bare property: mypy would keep the narrowing from an earlier assert.
    return stream.idle


async def test_stream_is_idle_only_while_reusable(
    server_ctx: ssl.SSLContext, client_ctx: ClientContext
) -> None:
    async with tunnel(server_ctx, client_ctx) as server:
        stream = server.open_stream("edge-1", Target("edge-1", ECHO))
        assert is_idle(stream)
        await stream.write(b"ping")
        await wait_for(lambda: not stream.idle)  # the echo arrived unread
        assert await stream.read() == b"ping"
        assert is_idle(stream)
        stream.write_eof()
        assert not is_idle(stream)
        assert await stream.read() == b""
        failed = server.open_stream("edge-1", Target("edge-1", FAIL))
        await wait_for(lambda: not failed.idle)  # reset by the edge
        stream.close()
