"""Edge side of the L7 tunnel: dials out to every cloud tunnel server and serves its streams. I/O.

The edge keeps one connection to *each* server address, so any cloud proxy replica can reach
any edge without a load balancer in between. A lost connection is redialled with exponential
backoff and jitter; a GOAWAY (server restart, replacement) triggers an immediate redial while
the old connection drains. Each stream the cloud opens runs `handler(target, stream)`,
supervised by the session: a failing handler resets its own stream only.
"""

from __future__ import annotations

import asyncio
import logging
import random
import ssl
from dataclasses import dataclass

from ravend.l7proxy.protocol import Connection, Role
from ravend.l7proxy.settings import L7TunnelSettings
from ravend.l7proxy.tunnel_handshake import (
    MAX_HEAD,
    HandshakeError,
    build_request,
    check_response,
)
from ravend.l7proxy.tunnel_session import StreamHandler, TunnelSession
from ravend.l7proxy.tunnel_transport import HeadError, TunnelProtocol
from ravend.runtime import Latest

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServerAddress:
    """One cloud tunnel server to keep a connection to."""

    host: str
    port: int
    ssl: ssl.SSLContext
    server_hostname: str | None = None
    """Name checked against the server certificate; defaults to `host`."""

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


def backoff_delay(attempt: int, initial: float, maximum: float, rng: random.Random) -> float:
    """Delay before redial number `attempt` (0-based): doubling, capped, with 50-100 % jitter.

    The jitter spreads out thousands of edges that all lost the same server at once.
    """
    return float(min(maximum, initial * 2.0 ** min(attempt, 32)) * rng.uniform(0.5, 1.0))


class TunnelClient:
    """Keeps tunnels to all `servers` up; run it with `await client.run()` (runs forever)."""

    def __init__(
        self,
        servers: list[ServerAddress],
        handler: StreamHandler,
        settings: L7TunnelSettings | None = None,
        *,
        rng: random.Random | None = None,
    ) -> None:
        self.servers = list(servers)
        self.settings = settings or L7TunnelSettings()
        self.connected: Latest[frozenset[str]] = Latest(frozenset())
        """Servers ("host:port") with an established tunnel."""
        self._handler = handler
        self._rng = rng or random.Random()
        self._sessions: dict[str, TunnelSession] = {}

    def session(self, server: str) -> TunnelSession | None:
        return self._sessions.get(server)

    async def run(self) -> None:
        async with asyncio.TaskGroup() as tg:
            for address in self.servers:
                tg.create_task(self._maintain(address))

    async def _maintain(self, address: ServerAddress) -> None:
        """Keep one tunnel to `address` forever; old sessions drain in the nested group."""
        async with asyncio.TaskGroup() as tg:
            attempt = 0
            while True:
                try:
                    session = await self._dial(address)
                except (
                    OSError,
                    TimeoutError,
                    HandshakeError,
                    HeadError,
                ) as exc:
                    delay = self._delay(attempt)
                    attempt += 1
                    log.info("tunnel to %s: dial failed (%s); retry in %.2f s", address, exc, delay)
                    await asyncio.sleep(delay)
                    continue
                attempt = 0
                tg.create_task(self._run_session(str(address), session))
                await session.going_away.wait()
                if session.conn.goaway_received is None:
                    # Lost rather than asked to leave: pause a little so a crash loop on the
                    # server side does not turn into a dial storm.
                    await asyncio.sleep(self._delay(0))

    def _delay(self, attempt: int) -> float:
        s = self.settings
        return backoff_delay(attempt, s.reconnect_initial_delay, s.reconnect_max_delay, self._rng)

    async def _dial(self, address: ServerAddress) -> TunnelSession:
        loop = asyncio.get_running_loop()
        chunk, high = self.settings.read_chunk_size, self.settings.write_high_water
        async with asyncio.timeout(self.settings.handshake_timeout):
            _, proto = await loop.create_connection(
                lambda: TunnelProtocol(chunk, high),
                address.host,
                address.port,
                ssl=address.ssl,
                server_hostname=address.server_hostname or address.host,
            )
            try:
                proto.write_now(build_request(address.server_hostname or address.host))
                check_response(await proto.read_head(MAX_HEAD))
            except BaseException:
                proto.abort()
                raise
        conn = Connection(Role.CLIENT, self.settings.protocol_settings())
        return TunnelSession(conn, proto, self.settings, name=str(address), handler=self._handler)

    async def _run_session(self, key: str, session: TunnelSession) -> None:
        self._sessions[key] = session
        self.connected.publish(frozenset(self._sessions))
        log.info("tunnel to %s connected", key)
        try:
            await session.run()
        finally:
            if self._sessions.get(key) is session:
                del self._sessions[key]
                self.connected.publish(frozenset(self._sessions))
            log.info("tunnel to %s disconnected", key)
