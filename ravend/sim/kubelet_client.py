"""Call a kubelet the way the kube-apiserver does, for tests, demos and benchmarks. Network I/O.

The kube-apiserver (with --kubelet-preferred-address-types=Hostname first) dials
`<nodeName>:10250`; CoreDNS answers from ConfigMap kube-system/edge-tunnel-nodes with the
internal proxy Service's ClusterIP, and it presents its kubelet client certificate. Here a
`Resolver` maps (node, port) to the address to dial: `tunnel_nodes_resolver` does the DNS part
from that ConfigMap's text, `fixed_resolver` sends everything to one front-end address (loopback
tests have no kube-proxy to implement the ClusterIP). The Host header always names the node.

Supports plain GETs (Content-Length, chunked or close-delimited bodies), follow streams,
WebSocket exec echo (v5.channel.k8s.io) and SPDY/3.1 upgrade echo, port-forward echo.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ravend.kube.resources import CONFIGMAPS
from ravend.l7proxy.http_head import ResponseHead, head_end, parse_response_head
from ravend.l7proxy.tunnel_transport import set_nodelay
from ravend.model import RAVEN_NAMESPACE
from ravend.sim import kubelet_wire as wire

if TYPE_CHECKING:
    from ravend.kube.client import KubeClient

DNS_CONFIGMAP = "edge-tunnel-nodes"
DNS_KEY = "tunnel-nodes"

Resolver = Callable[[str, int], tuple[str, int]]


def parse_tunnel_nodes(text: str) -> dict[str, str]:
    """The `tunnel-nodes` hosts file (`<ip>\\t<node>` lines) as node -> ip."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 2 and not parts[0].startswith("#"):
            out.update((name, parts[0]) for name in parts[1:])
    return out


def tunnel_nodes_resolver(text: str) -> Resolver:
    hosts = parse_tunnel_nodes(text)

    def resolve(node: str, port: int) -> tuple[str, int]:
        return hosts[node], port

    return resolve


async def cluster_resolver(kube: KubeClient) -> Resolver:
    """Resolve node names the way the apiserver's CoreDNS does: ConfigMap edge-tunnel-nodes."""
    cm = await kube.get(CONFIGMAPS, DNS_CONFIGMAP, RAVEN_NAMESPACE)
    return tunnel_nodes_resolver(cm.get("data", {}).get(DNS_KEY, ""))


def fixed_resolver(host: str, port: int) -> Resolver:
    return lambda _node, _port: (host, port)


@dataclass
class Response:
    head: ResponseHead
    body: bytes

    @property
    def status(self) -> int:
        return self.head.status

    @property
    def node(self) -> str | None:
        return self.head.get("x-sim-node")


class Exchange:
    """One open request: the response head, then the raw connection."""

    def __init__(
        self, head: ResponseHead, buf: bytes, r: asyncio.StreamReader, w: asyncio.StreamWriter
    ) -> None:
        self.head, self.buf, self.reader, self.writer = head, bytearray(buf), r, w

    async def read(self) -> bytes:
        if self.buf:
            data, self.buf = bytes(self.buf), bytearray()
            return data
        return await self.reader.read(256 * 1024)

    async def read_exact(self, n: int) -> bytes:
        while len(self.buf) < n:
            data = await self.reader.read(256 * 1024)
            if not data:
                raise asyncio.IncompleteReadError(bytes(self.buf), n)
            self.buf += data
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    async def chunks(self) -> AsyncIterator[bytes]:
        """De-chunked body pieces of a chunked response; IncompleteReadError if cut short."""
        while True:
            while (end := self.buf.find(b"\r\n")) < 0:
                data = await self.reader.read(65536)
                if not data:
                    raise asyncio.IncompleteReadError(bytes(self.buf), None)
                self.buf += data
            size = int(bytes(self.buf[:end]).split(b";")[0], 16)
            del self.buf[: end + 2]
            data = await self.read_exact(size + 2)
            if size == 0:
                return
            yield data[:-2]

    async def body(self) -> bytes:
        if "chunked" in self.head.tokens("transfer-encoding"):
            return b"".join([c async for c in self.chunks()])
        length = self.head.get("content-length")
        if length is not None:
            return await self.read_exact(int(length))
        out = bytearray()
        while data := await self.read():
            out += data
        return bytes(out)

    def close(self) -> None:
        self.writer.close()


class KubeletClient:
    """Requests to kubelets by node name, presenting `ssl_context`'s client certificate."""

    def __init__(
        self, resolve: Resolver, ssl_context: ssl.SSLContext | None, port: int = 10250
    ) -> None:
        self.resolve = resolve
        self.ssl = ssl_context
        self.port = port
        """The kubelet port requests name by default (10250; 10255 for the read-only port)."""

    async def open(
        self,
        node: str,
        method: str,
        path: str,
        *,
        port: int | None = None,
        headers: tuple[tuple[str, str], ...] = (),
        body: bytes = b"",
        host: str | None = None,
    ) -> Exchange:
        port = port or self.port
        address, dial_port = self.resolve(node, port)
        reader, writer = await self._dial(address, dial_port)
        lines = [f"{method} {path} HTTP/1.1", f"Host: {host or f'{node}:{port}'}"]
        lines += [f"{k}: {v}" for k, v in headers]
        if body:
            lines.append(f"Content-Length: {len(body)}")
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        buf = bytearray()
        while (end := head_end(buf)) is None:
            data = await reader.read(65536)
            if not data:
                writer.close()
                raise ConnectionError(f"no response from {node} ({address}:{dial_port})")
            buf += data
        return Exchange(parse_response_head(bytes(buf[:end])), bytes(buf[end:]), reader, writer)

    async def _dial(
        self, address: str, port: int
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """Open the connection a request goes over (tests override where it starts from)."""
        reader, writer = await asyncio.open_connection(
            address, port, ssl=self.ssl, server_hostname=address if self.ssl else None
        )
        set_nodelay(writer)
        return reader, writer

    async def request(self, node: str, method: str, path: str, **kw: object) -> Response:
        ex = await self.open(node, method, path, **kw)  # type: ignore[arg-type]
        try:
            return Response(ex.head, await ex.body())
        finally:
            ex.close()

    async def get(self, node: str, path: str, port: int | None = None) -> Response:
        return await self.request(node, "GET", path, port=port)

    async def ws_exec_echo(self, node: str, path: str, chunks: list[bytes]) -> tuple[bytes, bytes]:
        """WebSocket exec: send stdin chunks, close stdin; returns (stdout, status JSON)."""
        headers = (
            ("Connection", "Upgrade"),
            ("Upgrade", "websocket"),
            ("Sec-WebSocket-Version", "13"),
            ("Sec-WebSocket-Key", wire.ws_key()),
            ("Sec-WebSocket-Protocol", wire.K8S_WS_PROTOCOL),
        )
        ex = await self.open(node, "GET", path, headers=headers)
        try:
            _expect_101(ex.head)
            for chunk in chunks:
                frame = bytes([wire.CH_STDIN]) + chunk
                ex.writer.write(wire.ws_frame(wire.WS_BINARY, frame, masked=True))
            close_stdin = bytes([wire.CH_CLOSE, wire.CH_STDIN])
            ex.writer.write(wire.ws_frame(wire.WS_BINARY, close_stdin, masked=True))
            return await _ws_collect(ex)
        finally:
            ex.close()

    async def spdy_echo(self, node: str, path: str, chunks: list[bytes]) -> bytes:
        """POST + `Upgrade: SPDY/3.1`, then data frames on stream 1; returns what came back."""
        headers = (
            ("Connection", "Upgrade"),
            ("Upgrade", "SPDY/3.1"),
            ("X-Stream-Protocol-Version", "v4.channel.k8s.io, v3.channel.k8s.io"),
        )
        ex = await self.open(node, "POST", path, headers=headers)
        try:
            _expect_101(ex.head)
            for i, chunk in enumerate(chunks):
                ex.writer.write(wire.spdy_data(1, chunk, fin=i == len(chunks) - 1))
            parser, out = wire.SpdyParser(), bytearray()
            while True:
                data = await ex.read()
                if not data:
                    raise ConnectionError("SPDY session ended before the echo")
                for frame in parser.feed(data):
                    out += frame.payload
                    if frame.flags & wire.SPDY_FLAG_FIN:
                        ex.writer.write(wire.spdy_control(wire.SPDY_GOAWAY, b"\0" * 8))
                        return bytes(out)
        finally:
            ex.close()

    async def port_forward_echo(self, node: str, path: str, data: bytes) -> bytes:
        headers = (("Connection", "Upgrade"), ("Upgrade", "SPDY/3.1"))
        ex = await self.open(node, "POST", path, headers=headers)
        try:
            _expect_101(ex.head)
            async with asyncio.TaskGroup() as tg:
                tg.create_task(_write_all(ex.writer, data))
                echoed = tg.create_task(ex.read_exact(len(data)))
            return echoed.result()
        finally:
            ex.close()


def _expect_101(head: ResponseHead) -> None:
    if head.status != 101:
        raise ConnectionError(f"upgrade refused: {head.status} {head.reason}")


async def _write_all(writer: asyncio.StreamWriter, data: bytes) -> None:
    view = memoryview(data)
    for start in range(0, len(data), 256 * 1024):
        writer.write(view[start : start + 256 * 1024])
        await writer.drain()


async def _ws_collect(ex: Exchange) -> tuple[bytes, bytes]:
    parser, stdout, status = wire.WsParser(), bytearray(), b""
    while True:
        data = await ex.read()
        if not data:
            raise ConnectionError("WebSocket ended without a close frame")
        for frame in parser.feed(data):
            if frame.opcode == wire.WS_CLOSE:
                with contextlib.suppress(OSError):
                    ex.writer.write(wire.ws_frame(wire.WS_CLOSE, frame.payload[:2], masked=True))
                return bytes(stdout), status
            if frame.payload[:1] == bytes([wire.CH_STDOUT]):
                stdout += frame.payload[1:]
            elif frame.payload[:1] == bytes([wire.CH_STATUS]):
                status = frame.payload[1:]
