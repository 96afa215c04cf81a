"""Cloud side of the L7 tunnel: accepts edge connections over mutual TLS 1.3 (TCP 10262). I/O.

Each edge proves its node name with its client certificate (`identity_of`); nothing it says
afterwards can change that, which closes Raven's hole of unauthenticated agents registering as
any node. The registry holds one session per node: a reconnecting edge replaces its older
session, which is sent GOAWAY and left to drain. The cloud opens streams with
`open_stream(node, target)`; edges cannot open streams towards the cloud.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable
from types import TracebackType
from typing import Any

from ravend.certs.tls import identity_from_peercert
from ravend.l7proxy.protocol import Connection, Role
from ravend.l7proxy.protocol_frames import Target
from ravend.l7proxy.settings import L7TunnelSettings
from ravend.l7proxy.tunnel_handshake import MAX_HEAD, build_response, check_request
from ravend.l7proxy.tunnel_session import TunnelSession
from ravend.l7proxy.tunnel_stream import Stream, TunnelError
from ravend.l7proxy.tunnel_transport import HeadError, TunnelProtocol
from ravend.runtime import Latest

log = logging.getLogger(__name__)

IdentityOf = Callable[[dict[str, Any]], str | None]
"""The node a verified client certificate (`getpeercert()`) speaks for, or None to refuse.
The default is `ravend.certs.tls.identity_from_peercert`: CN `ravend:tunnel:<node>` in the
`ravend:tunnel-clients` group, the certificates ravend's CSR flow issues for tunnels. A
kubelet's `system:node:<name>` certificate is refused: it proves a node, not a ravend edge."""


class NodeNotConnected(TunnelError):
    """No tunnel from that node is connected to this server."""


def check_server_context(ctx: ssl.SSLContext) -> None:
    """Refuse contexts that would let an edge in without a certificate or below TLS 1.3."""
    if ctx.verify_mode != ssl.CERT_REQUIRED:
        raise ValueError("tunnel server TLS context must require client certificates")
    if ctx.minimum_version < ssl.TLSVersion.TLSv1_3:
        raise ValueError("tunnel server TLS context must require TLS 1.3")


class TunnelServer:
    """Listens for edges; use `async with TunnelServer(...) as server:`."""

    def __init__(
        self,
        ssl_context: ssl.SSLContext,
        settings: L7TunnelSettings | None = None,
        *,
        identity_of: IdentityOf = identity_from_peercert,
        host: str | None = None,
        port: int | None = None,
    ) -> None:
        check_server_context(ssl_context)
        self.settings = settings or L7TunnelSettings()
        self.connected: Latest[frozenset[str]] = Latest(frozenset())
        """Names of the nodes with a live tunnel to this server."""
        self._ssl = ssl_context
        self._identity_of = identity_of
        self._host = host
        self._port = self.settings.port if port is None else port
        self._sessions: dict[str, TunnelSession] = {}
        self._handlers: set[asyncio.Task[Any]] = set()
        self._server: asyncio.Server | None = None

    @property
    def port(self) -> int:
        assert self._server is not None, "server not started"
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    def session(self, node: str) -> TunnelSession | None:
        return self._sessions.get(node)

    def open_stream(self, node: str, target: Target) -> Stream:
        """Open a stream through `node`'s tunnel. Raises NodeNotConnected or TunnelError."""
        session = self._sessions.get(node)
        if session is None or session.closed.is_set():
            raise NodeNotConnected(f"no tunnel from node {node}")
        return session.open_stream(target)

    async def __aenter__(self) -> TunnelServer:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            self._new_protocol,
            self._host,
            self._port,
            ssl=self._ssl,
            ssl_handshake_timeout=self.settings.handshake_timeout,
        )
        log.info("tunnel server listening on port %d", self.port)
        return self

    def _new_protocol(self) -> TunnelProtocol:
        s = self.settings
        return _ServerProtocol(self._on_connection, s.read_chunk_size, s.write_high_water)

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self, drain_timeout: float | None = None) -> None:
        """Stop accepting, send GOAWAY everywhere, let streams drain, then cut what is left."""
        if self._server is None:
            return
        self._server.close()
        for session in list(self._sessions.values()):
            session.go_away("server shutting down")
        handlers = set(self._handlers)
        if handlers:
            timeout = self.settings.drain_timeout if drain_timeout is None else drain_timeout
            _, pending = await asyncio.wait(handlers, timeout=timeout)
            for session in list(self._sessions.values()):
                session.abort("server shutdown deadline")
            for task in pending:
                task.cancel()
            await asyncio.wait(handlers)
        await self._server.wait_closed()
        self._server = None

    def _on_connection(self, proto: TunnelProtocol) -> None:
        # Like asyncio.start_server, one task per connection; tracked in _handlers and
        # awaited (or cancelled) by close().
        task = asyncio.get_running_loop().create_task(self._handle(proto))
        self._handlers.add(task)
        task.add_done_callback(self._handlers.discard)

    async def _handle(self, proto: TunnelProtocol) -> None:
        peer = proto.transport.get_extra_info("peername")
        try:
            node = await self._admit(proto)
            if node is not None:
                await self._serve(node, proto)
        except Exception:
            log.exception("tunnel connection from %s failed", peer)
        finally:
            # Even a transport that is already closing: a TLS close can wait forever for a
            # dead peer, and Server.wait_closed() waits for it.
            proto.abort()

    async def _admit(self, proto: TunnelProtocol) -> str | None:
        """Check TLS and identity, then complete the upgrade; None (and a reply) if refused."""
        transport = proto.transport
        ssl_object = transport.get_extra_info("ssl_object")
        cert = transport.get_extra_info("peercert")
        node = self._identity_of(cert) if cert else None
        try:
            async with asyncio.timeout(self.settings.handshake_timeout):
                head = await proto.read_head(MAX_HEAD)
        except (TimeoutError, HeadError):
            return None
        problem = check_request(head)
        if ssl_object is None or ssl_object.version() != "TLSv1.3":
            problem = "TLS 1.3 required"
        elif node is None:
            problem = "certificate does not name a node"
        if problem is not None:
            log.warning("tunnel refused %s: %s", transport.get_extra_info("peername"), problem)
            proto.write_now(build_response(403, problem))
            await proto.aclose()
            return None
        proto.write_now(build_response(101, "Switching Protocols"))
        return node

    async def _serve(self, node: str, proto: TunnelProtocol) -> None:
        conn = Connection(Role.SERVER, self.settings.protocol_settings())
        session = TunnelSession(conn, proto, self.settings, name=node)
        old = self._sessions.get(node)
        self._sessions[node] = session
        if old is not None:
            old.go_away("replaced by a newer connection of the same node")
        self.connected.publish(frozenset(self._sessions))
        log.info("tunnel from node %s connected", node)
        try:
            await session.run()
        finally:
            if self._sessions.get(node) is session:
                del self._sessions[node]
                self.connected.publish(frozenset(self._sessions))
            log.info("tunnel from node %s disconnected", node)


class _ServerProtocol(TunnelProtocol):
    """A TunnelProtocol that reports each accepted (TLS-established) connection."""

    def __init__(
        self, on_connection: Callable[[TunnelProtocol], None], chunk: int, high_water: int
    ) -> None:
        super().__init__(chunk, high_water)
        self._on_connection = on_connection

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._on_connection(self)
