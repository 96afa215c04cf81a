"""TLS contexts: reload under open connections, mutual authentication, refusals."""

from __future__ import annotations

import asyncio
import datetime as dt
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
import uvloop
from aiohttp import web
from cryptography import x509

from ravend.certs.csr import CertKind, Sans, expected_request
from ravend.certs.localca import LocalCa
from ravend.certs.tls import (
    ReloadableContext,
    client_context,
    common_name_from_peercert,
    identity_from_peercert,
    server_context,
)

SERVER_SANS = Sans.of(["cloud-1"], ["127.0.0.1"])
HOUR = dt.timedelta(hours=1)


def serving(ca: LocalCa, **kw: Any) -> tuple[bytes, bytes]:
    return ca.issue_pair(expected_request(CertKind.SERVING, "cloud-1", SERVER_SANS), **kw)


def tunnel_client(ca: LocalCa, node: str = "edge-1", **kw: Any) -> tuple[bytes, bytes]:
    return ca.issue_pair(expected_request(CertKind.TUNNEL_CLIENT, node), **kw)


def serial_of(pem: bytes) -> int:
    return x509.load_pem_x509_certificate(pem).serial_number


def peer_serial(writer: asyncio.StreamWriter) -> int:
    der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
    return x509.load_der_x509_certificate(der).serial_number


@dataclass
class EchoServer:
    """Echoes lines back, prefixed with the client's node identity."""

    identities: list[str | None] = field(default_factory=list)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        node = identity_from_peercert(writer.get_extra_info("peercert"))
        self.identities.append(node)
        try:
            while line := await reader.readline():
                writer.write(f"{node}:".encode() + line)
                await writer.drain()
        except (ConnectionError, ssl.SSLError):
            pass
        finally:
            writer.close()


async def roundtrip(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, msg: str) -> str:
    writer.write(msg.encode() + b"\n")
    await writer.drain()
    return (await asyncio.wait_for(reader.readline(), 5)).decode().strip()


async def reload_scenario(ca: LocalCa) -> None:
    key1, cert1 = serving(ca)
    key2, cert2 = serving(ca)
    holder = ReloadableContext(server_context(cert1, key1, ca.cert_pem))
    echo = EchoServer()
    server = await asyncio.start_server(echo.handle, "127.0.0.1", 0, ssl=holder.listener)
    port = server.sockets[0].getsockname()[1]
    ckey, ccert = tunnel_client(ca)
    cctx = client_context(ca.cert_pem, ccert, ckey)
    async with server:
        # With SNI (by name) and without (an IP literal sends no SNI): both must get the swap.
        r1, w1 = await asyncio.open_connection(
            "127.0.0.1", port, ssl=cctx, server_hostname="cloud-1"
        )
        assert await roundtrip(r1, w1, "a") == "edge-1:a"
        assert peer_serial(w1) == serial_of(cert1)

        holder.reload(server_context(cert2, key2, ca.cert_pem))

        assert await roundtrip(r1, w1, "still open") == "edge-1:still open"
        r2, w2 = await asyncio.open_connection(
            "127.0.0.1", port, ssl=cctx, server_hostname="cloud-1"
        )
        assert peer_serial(w2) == serial_of(cert2)
        assert await roundtrip(r2, w2, "b") == "edge-1:b"
        r3, w3 = await asyncio.open_connection("127.0.0.1", port, ssl=cctx)
        assert peer_serial(w3) == serial_of(cert2)
        assert await roundtrip(r3, w3, "c") == "edge-1:c"
        # The old connection still serves after new handshakes happened.
        assert await roundtrip(r1, w1, "z") == "edge-1:z"
        for w in (w1, w2, w3):
            w.close()
            await w.wait_closed()
    assert echo.identities == ["edge-1", "edge-1", "edge-1"]


def run_with(loop_factory: Callable[[], asyncio.AbstractEventLoop], ca: LocalCa) -> None:
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(reload_scenario(ca))


def test_reload_keeps_open_connection_asyncio(ca: LocalCa) -> None:
    run_with(asyncio.new_event_loop, ca)


def test_reload_keeps_open_connection_uvloop(ca: LocalCa) -> None:
    run_with(uvloop.new_event_loop, ca)


async def test_reload_with_aiohttp(ca: LocalCa) -> None:
    """aiohttp's TCPSite takes its ssl context once; reloads still reach new connections."""
    key1, cert1 = serving(ca)
    key2, cert2 = serving(ca)
    holder = ReloadableContext(server_context(cert1, key1, ca.cert_pem))

    release = asyncio.Event()

    async def whoami(request: web.Request) -> web.StreamResponse:
        peer = request.transport.get_extra_info("peercert") if request.transport else None
        resp = web.StreamResponse()
        await resp.prepare(request)
        await resp.write(f"{identity_from_peercert(peer)}\n".encode())
        # Hold the body open so the client can inspect the connection before it is released.
        await release.wait()
        await resp.write_eof()
        return resp

    app = web.Application()
    app.router.add_get("/", whoami)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=holder.listener)
    await site.start()
    port = runner.addresses[0][1]
    ckey, ccert = tunnel_client(ca, "edge-7")
    cctx = client_context(ca.cert_pem, ccert, ckey)

    async def get(session: aiohttp.ClientSession) -> tuple[str, int]:
        release.clear()
        async with session.get(f"https://127.0.0.1:{port}/", ssl=cctx) as resp:
            assert resp.connection is not None and resp.connection.transport is not None
            der = resp.connection.transport.get_extra_info("ssl_object").getpeercert(True)
            release.set()
            return (await resp.text()).strip(), x509.load_der_x509_certificate(der).serial_number

    try:
        async with aiohttp.ClientSession() as keepalive:
            assert await get(keepalive) == ("edge-7", serial_of(cert1))
            holder.reload(server_context(cert2, key2, ca.cert_pem))
            # The pooled keep-alive connection is untouched by the reload...
            assert await get(keepalive) == ("edge-7", serial_of(cert1))
            # ...and a new connection gets the new certificate.
            async with aiohttp.ClientSession() as fresh:
                assert await get(fresh) == ("edge-7", serial_of(cert2))
    finally:
        await runner.cleanup()


async def expect_refused(
    server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext, hostname: str = "cloud-1"
) -> None:
    """The handshake or the first exchange fails, and the server never sees the client."""
    echo = EchoServer()
    server = await asyncio.start_server(echo.handle, "127.0.0.1", 0, ssl=server_ctx)
    port = server.sockets[0].getsockname()[1]
    async with server:
        with pytest.raises(
            (ssl.SSLError, ConnectionError, asyncio.IncompleteReadError, AssertionError)
        ):
            r, w = await asyncio.open_connection(
                "127.0.0.1", port, ssl=client_ctx, server_hostname=hostname
            )
            try:
                # TLS 1.3: a client certificate is rejected after the client's side completed.
                assert await roundtrip(r, w, "hello") != ""
            finally:
                w.close()
    assert echo.identities == []


RefusalCase = Callable[[LocalCa, LocalCa], tuple[ssl.SSLContext, ssl.SSLContext]]
PAST = dt.datetime.now(dt.UTC) - dt.timedelta(days=2)


def _expired_client(ca: LocalCa, _f: LocalCa) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    k, c = serving(ca)
    ck, cc = tunnel_client(ca, not_before=PAST, lifetime=HOUR)
    return server_context(c, k, ca.cert_pem), client_context(ca.cert_pem, cc, ck)


def _foreign_client(ca: LocalCa, foreign: LocalCa) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    k, c = serving(ca)
    ck, cc = tunnel_client(foreign)
    return server_context(c, k, ca.cert_pem), client_context(ca.cert_pem, cc, ck)


def _no_client_cert(ca: LocalCa, _f: LocalCa) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    k, c = serving(ca)
    return server_context(c, k, ca.cert_pem), client_context(ca.cert_pem)


def _expired_server(ca: LocalCa, _f: LocalCa) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    k, c = serving(ca, not_before=PAST, lifetime=HOUR)
    ck, cc = tunnel_client(ca)
    return server_context(c, k, ca.cert_pem), client_context(ca.cert_pem, cc, ck)


def _foreign_server(ca: LocalCa, foreign: LocalCa) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    k, c = serving(foreign)
    ck, cc = tunnel_client(ca)
    return server_context(c, k, ca.cert_pem), client_context(ca.cert_pem, cc, ck)


def _client_cert_as_server(ca: LocalCa, _f: LocalCa) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A client-auth-only certificate must not pass as a server (EKU is checked)."""
    k, c = tunnel_client(ca)
    ck, cc = tunnel_client(ca, "edge-2")
    return server_context(c, k, ca.cert_pem), client_context(ca.cert_pem, cc, ck)


def _server_cert_as_client(ca: LocalCa, _f: LocalCa) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A serving certificate (server auth only) must not authenticate a client."""
    k, c = serving(ca)
    ck, cc = serving(ca)
    return server_context(c, k, ca.cert_pem), client_context(ca.cert_pem, cc, ck)


REFUSALS: dict[str, RefusalCase] = {
    "expired client certificate": _expired_client,
    "client certificate from a foreign CA": _foreign_client,
    "no client certificate": _no_client_cert,
    "expired server certificate": _expired_server,
    "server certificate from a foreign CA": _foreign_server,
    "client certificate used by a server": _client_cert_as_server,
    "server certificate used by a client": _server_cert_as_client,
}


@pytest.mark.parametrize("name", list(REFUSALS))
async def test_refusals(name: str, ca: LocalCa, foreign_ca: LocalCa) -> None:
    server_ctx, client_ctx = REFUSALS[name](ca, foreign_ca)
    await expect_refused(server_ctx, client_ctx)


async def test_wrong_server_name_refused(ca: LocalCa) -> None:
    k, c = serving(ca)
    ck, cc = tunnel_client(ca)
    await expect_refused(
        server_context(c, k, ca.cert_pem), client_context(ca.cert_pem, cc, ck), "cloud-2"
    )


def test_tls13_minimum(ca: LocalCa) -> None:
    k, c = serving(ca)
    assert server_context(c, k, ca.cert_pem).minimum_version is ssl.TLSVersion.TLSv1_3
    assert client_context(ca.cert_pem).minimum_version is ssl.TLSVersion.TLSv1_3


def test_mismatched_key_refused_at_load(ca: LocalCa) -> None:
    k1, _ = serving(ca)
    _, c2 = serving(ca)
    with pytest.raises(ssl.SSLError):
        server_context(c2, k1, ca.cert_pem)


PEER = {
    "subject": (
        (("organizationName", "ravend:tunnel-clients"),),
        (("commonName", "ravend:tunnel:edge-1"),),
    )
}


@pytest.mark.parametrize(
    ("peercert", "node"),
    [
        (PEER, "edge-1"),
        ({"subject": ((("commonName", "ravend:tunnel:edge-1"),),)}, None),  # no group
        (
            {
                "subject": (
                    (("organizationName", "system:nodes"),),
                    (("commonName", "system:node:a"),),
                )
            },
            None,
        ),
        (
            {
                "subject": (
                    (("organizationName", "ravend:tunnel-clients"),),
                    (("commonName", "ravend:tunnel:"),),
                )
            },
            None,
        ),
        (
            {
                "subject": (
                    (("organizationName", "ravend:tunnel-clients"),),
                    (("commonName", "edge-1"),),
                )
            },
            None,
        ),
        ({}, None),
        (None, None),
    ],
)
def test_identity_from_peercert(peercert: dict[str, Any] | None, node: str | None) -> None:
    assert identity_from_peercert(peercert) == node


def test_common_name_from_peercert() -> None:
    assert common_name_from_peercert(PEER) == "ravend:tunnel:edge-1"
    assert common_name_from_peercert({}) is None
