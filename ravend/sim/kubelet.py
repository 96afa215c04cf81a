"""A fake kubelet for one simulated node: the endpoints the L7 proxy relays. Does network I/O.

TLS on 10250 requires a client certificate from the cluster CA (as a kubelet with
--client-ca-file does); plain 10255 is read-only (/healthz, /metrics, /pods). Every response
names the node (`X-Sim-Node`) and, over TLS, the caller's certificate CN (`X-Sim-Caller`), so
tests can prove a request reached the right node, with the right identity, even when node IPs
collide between pools.

Endpoints:
- `GET /containerLogs/<ns>/<pod>/<c>`: `tailLines` lines (default 10); with `follow=true` a
  chunked stream, one more line every `log_interval` seconds until the caller goes away.
- `/exec/...` and `/attach/...`: WebSocket (`v5.channel.k8s.io`, GET) echoing stdin (channel 0)
  to stdout (channel 1); closing stdin (v5 channel 255) ends with a Success status on channel 3.
  Or `Upgrade: SPDY/3.1` (POST): every SPDY data frame is echoed on its stream id, PING is
  answered, GOAWAY ends; other control frames (SYN_STREAM ...) are ignored (kubelet_wire).
- `/portForward/...`: any upgrade, then a raw byte echo; a half-close is echoed as one.
- `GET /metrics`: a deterministic body of `metrics_bytes` (2 MB); `GET /healthz`: "ok".
- `POST /run/<ns>/<pod>/<c>`: reads the Content-Length body, answers its size and SHA-256.
Requests are served with keep-alive, like a Go server, unless the caller asks to close.

Run inside a node's netns: `python -m ravend.sim.kubelet --node NAME --listen IP --ca ca.crt
--ca-key ca.key` (the serving certificate is minted from the CA for IP and node name).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import logging
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ravend.l7proxy.http_head import HeadError, RequestHead, head_end, parse_request_head
from ravend.l7proxy.http_reply import render_response_head, simple_response
from ravend.l7proxy.tunnel_transport import set_nodelay
from ravend.sim import kubelet_wire as wire

log = logging.getLogger(__name__)
METRICS_LINE = b"# fake_kubelet_metric_total{node=%s} 1234567890 padding..............\n"


@dataclass
class Conn:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    buf: bytearray
    caller: str
    tls: bool


class FakeKubelet:
    """Serves one node's kubelet endpoints; `async with FakeKubelet(...)`."""

    def __init__(
        self,
        node: str,
        host: str,
        tls: ssl.SSLContext | None,
        *,
        port: int = 10250,
        read_only_port: int = 10255,
        metrics_bytes: int = 2 * 1024 * 1024,
        log_interval: float = 0.05,
    ) -> None:
        self.node = node
        self.host = host
        self._tls = tls
        self._ports = (port, read_only_port)
        self.metrics_bytes = metrics_bytes
        self.log_interval = log_interval
        self.open_connections = 0
        """Connections currently open (tests check the proxy closes what it opened)."""
        self.requests: list[tuple[str, str, str]] = []
        """(method, target, caller CN) of every request served."""
        self._servers: list[asyncio.Server] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        self._stopping = False

    @property
    def port(self) -> int:
        return int(self._servers[0].sockets[0].getsockname()[1])

    @property
    def read_only_port(self) -> int:
        return int(self._servers[1].sockets[0].getsockname()[1])

    async def __aenter__(self) -> FakeKubelet:
        tls_port, plain_port = self._ports
        self._servers.append(
            await asyncio.start_server(self._accept, self.host, tls_port, ssl=self._tls)
        )
        self._servers.append(await asyncio.start_server(self._accept, self.host, plain_port))
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._stopping = True
        for server in self._servers:
            server.close()
        for task in set(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(set(self._tasks))
        for server in self._servers:
            await server.wait_closed()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self.open_connections += 1
        set_nodelay(writer)
        cert = writer.get_extra_info("peercert") or {}
        cns = [v for rdn in cert.get("subject", ()) for k, v in rdn if k == "commonName"]
        tls = writer.get_extra_info("ssl_object") is not None
        conn = Conn(reader, writer, bytearray(), cns[0] if cns else "", tls)
        try:
            while await self._serve_one(conn):
                pass
        except (OSError, asyncio.IncompleteReadError, wire.WireError, HeadError) as exc:
            log.debug("fake kubelet %s: connection ended: %s", self.node, exc)
        except asyncio.CancelledError:
            if not self._stopping:
                raise
            # Stopped by __aexit__: end normally. start_server's done callback in CPython 3.11
            # asks a cancelled handler task for its exception, an error the loop reports.
            task.uncancel()
        finally:
            self.open_connections -= 1
            self._tasks.discard(task)
            writer.close()
            # asyncio keeps a lost connection's error on the reader, and the frames on its
            # traceback (and their callers) hold `conn`, hence the reader: a reference cycle
            # that would keep this connection's TLS buffers until a full garbage collection.
            if (error := reader.exception()) is not None:
                error.with_traceback(None)

    async def _serve_one(self, conn: Conn) -> bool:
        """Serve one request; False when the connection is over."""
        head = await _read_head(conn)
        if head is None:
            return False
        self.requests.append((head.method, head.target, conn.caller))
        route = head.path.split("/")[1] if head.path.count("/") >= 1 else ""
        keep = head.version == "HTTP/1.1" and "close" not in head.tokens("connection")
        if not conn.tls and route not in ("healthz", "metrics", "pods"):
            await self._send(conn, 403, b"read-only port\n", keep)
            return keep
        if route in ("exec", "attach", "portForward"):
            await self._upgrade(conn, head, route)
            return False
        if route == "containerLogs" and head.query.get("follow") == ["true"]:
            await self._follow_logs(conn, head)
            return False
        body = await self._simple(conn, head, route)
        if body is None:
            await self._send(conn, 404, b"not found\n", keep)
        else:
            await self._send(conn, 200, body, keep)
        return keep

    async def _simple(self, conn: Conn, head: RequestHead, route: str) -> bytes | None:
        if route == "healthz":
            return b"ok"
        if route == "metrics":
            line = METRICS_LINE % self.node.encode()
            return (line * (self.metrics_bytes // len(line) + 1))[: self.metrics_bytes]
        if route == "pods":
            return json.dumps({"kind": "PodList", "items": []}).encode()
        if route == "containerLogs":
            tail = int(head.query.get("tailLines", ["10"])[0])
            return b"".join(self._log_line(head.path, i) for i in range(tail))
        if route == "run" and head.method == "POST":
            size = int(head.get("content-length") or 0)
            body = await _read_exact(conn, size)
            return f"{len(body)} {hashlib.sha256(body).hexdigest()}\n".encode()
        return None

    def _log_line(self, path: str, i: int) -> bytes:
        return f"{self.node} {path.removeprefix('/containerLogs/')} line {i}\n".encode()

    def _headers(self, conn: Conn) -> tuple[tuple[str, str], ...]:
        return (("X-Sim-Node", self.node), ("X-Sim-Caller", conn.caller))

    async def _send(self, conn: Conn, status: int, body: bytes, keep: bool) -> None:
        headers = (
            *self._headers(conn),
            ("Content-Type", "text/plain"),
            ("Content-Length", str(len(body))),
            ("Connection", "keep-alive" if keep else "close"),
        )
        conn.writer.write(render_response_head(status, headers) + body)
        await conn.writer.drain()

    async def _follow_logs(self, conn: Conn, head: RequestHead) -> None:
        headers = (*self._headers(conn), ("Transfer-Encoding", "chunked"))
        conn.writer.write(render_response_head(200, headers))
        async with asyncio.TaskGroup() as tg:
            gone = tg.create_task(_wait_gone(conn))
            i = 0
            # The caller going away mid-line ends the stream; caught here, not raised out of
            # the group as an ExceptionGroup (which _accept would not catch).
            with contextlib.suppress(OSError):
                while not gone.done():
                    line = self._log_line(head.path, i)
                    conn.writer.write(b"%x\r\n%s\r\n" % (len(line), line))
                    await conn.writer.drain()
                    i += 1
                    await asyncio.wait([gone], timeout=self.log_interval)
            gone.cancel()

    async def _upgrade(self, conn: Conn, head: RequestHead, route: str) -> None:
        upgrade = (head.get("upgrade") or "").lower()
        if not head.is_upgrade or upgrade not in ("websocket", "spdy/3.1"):
            await self._send(conn, 400, b"upgrade request required\n", False)
            return
        headers: list[tuple[str, str]] = [*self._headers(conn), ("Connection", "Upgrade")]
        if upgrade == "websocket":
            key = head.get("sec-websocket-key") or ""
            headers += [("Upgrade", "websocket"), ("Sec-WebSocket-Accept", wire.ws_accept(key))]
            protocols = [p.strip() for p in (head.get("sec-websocket-protocol") or "").split(",")]
            if protocols[0]:
                headers.append(("Sec-WebSocket-Protocol", protocols[0]))
        else:
            headers.append(("Upgrade", "SPDY/3.1"))
            versions = (head.get("x-stream-protocol-version") or "").split(",")
            headers.append(("X-Stream-Protocol-Version", versions[0].strip()))
        conn.writer.write(render_response_head(101, tuple(headers)))
        if route == "portForward":
            await _raw_echo(conn)
        elif upgrade == "websocket":
            await _ws_echo(conn)
        else:
            await _spdy_echo(conn)


async def _read_head(conn: Conn) -> RequestHead | None:
    while (end := head_end(conn.buf)) is None:
        data = await conn.reader.read(65536)
        if not data:
            return None
        conn.buf += data
    raw = bytes(conn.buf[:end])
    del conn.buf[:end]
    try:
        return parse_request_head(raw)
    except HeadError as exc:
        conn.writer.write(simple_response(exc.status, exc.reason))
        return None


async def _read_exact(conn: Conn, size: int) -> bytes:
    while len(conn.buf) < size:
        data = await conn.reader.read(256 * 1024)
        if not data:
            raise asyncio.IncompleteReadError(bytes(conn.buf), size)
        conn.buf += data
    body = bytes(conn.buf[:size])
    del conn.buf[:size]
    return body


async def _incoming(conn: Conn) -> Any:
    """Bytes already buffered, then everything the caller sends, until EOF."""
    if conn.buf:
        yield bytes(conn.buf)
        conn.buf.clear()
    while data := await conn.reader.read(256 * 1024):
        yield data


async def _wait_gone(conn: Conn) -> None:
    with contextlib.suppress(OSError):
        async for _ in _incoming(conn):
            pass


async def _raw_echo(conn: Conn) -> None:
    async for data in _incoming(conn):
        conn.writer.write(data)
        await conn.writer.drain()
    if conn.writer.can_write_eof():
        conn.writer.write_eof()


async def _ws_echo(conn: Conn) -> None:
    parser = wire.WsParser()
    async for data in _incoming(conn):
        for frame in parser.feed(data):
            if frame.opcode == wire.WS_CLOSE:
                conn.writer.write(wire.ws_frame(wire.WS_CLOSE, frame.payload[:2]))
                await conn.writer.drain()
                return
            if frame.opcode == wire.WS_PING:
                conn.writer.write(wire.ws_frame(wire.WS_PONG, frame.payload))
            elif frame.payload[:1] == bytes([wire.CH_STDIN]):
                out = bytes([wire.CH_STDOUT]) + frame.payload[1:]
                conn.writer.write(wire.ws_frame(wire.WS_BINARY, out))
            elif frame.payload == bytes([wire.CH_CLOSE, wire.CH_STDIN]):
                status = json.dumps({"metadata": {}, "status": "Success"}).encode()
                conn.writer.write(wire.ws_frame(wire.WS_BINARY, bytes([wire.CH_STATUS]) + status))
                conn.writer.write(wire.ws_frame(wire.WS_CLOSE, b"\x03\xe8"))
            await conn.writer.drain()


async def _spdy_echo(conn: Conn) -> None:
    parser = wire.SpdyParser()
    async for data in _incoming(conn):
        for frame in parser.feed(data):
            if not frame.control:
                fin = bool(frame.flags & wire.SPDY_FLAG_FIN)
                conn.writer.write(wire.spdy_data(frame.kind, frame.payload, fin))
            elif frame.kind == wire.SPDY_PING:
                conn.writer.write(wire.spdy_control(wire.SPDY_PING, frame.payload))
            elif frame.kind == wire.SPDY_GOAWAY:
                return
        await conn.writer.drain()


def serving_context(
    ca_cert_pem: bytes, ca_key_pem: bytes, node: str, addresses: list[str]
) -> ssl.SSLContext:
    """A kubelet TLS context: serving cert minted from the CA, client certs from the CA."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    from ravend.certs.tls import load_chain
    from ravend.sim.apiserver.pki import ClusterCA

    key = serialization.load_pem_private_key(ca_key_pem, None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    ca = ClusterCA(x509.load_pem_x509_certificate(ca_cert_pem), key)
    usages = ["digital signature", "key encipherment", "server auth"]
    cert, cert_key = ca.issue(
        f"system:node:{node}", ["system:nodes"], usages=usages, sans=[node, *addresses]
    )
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    load_chain(ctx, cert, cert_key)
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_verify_locations(cadata=ca_cert_pem.decode())
    return ctx


async def _main(args: argparse.Namespace, tls: ssl.SSLContext) -> None:
    kubelet = FakeKubelet(
        args.node,
        args.listen,
        tls,
        port=args.port,
        read_only_port=args.read_only_port,
        metrics_bytes=args.metrics_bytes,
    )
    async with kubelet:
        log.info(
            "fake kubelet %s on %s:%d/%d", args.node, args.listen, args.port, args.read_only_port
        )
        await asyncio.Event().wait()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m ravend.sim.kubelet")
    p.add_argument("--node", required=True, help="node name reported in X-Sim-Node")
    p.add_argument("--listen", default="0.0.0.0", help="address to listen on")
    p.add_argument("--port", type=int, default=10250, help="TLS port")
    p.add_argument("--read-only-port", type=int, default=10255, help="plain read-only port")
    p.add_argument("--ca", required=True, help="cluster CA certificate (PEM)")
    p.add_argument("--ca-key", required=True, help="cluster CA key (PEM), mints the serving cert")
    p.add_argument("--metrics-bytes", type=int, default=2 << 20, help="size of /metrics")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    ca, ca_key = Path(args.ca).read_bytes(), Path(args.ca_key).read_bytes()
    tls = serving_context(ca, ca_key, args.node, [args.listen])
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_main(args, tls))


if __name__ == "__main__":
    main()
