"""Loopback rig for the L7 front-end tests: real TLS, real tunnel, fake kubelets on 127.0.0.x.

Topology (one ClusterView, built directly):
  gw-cloud (exposed): cloud-1 (the proxy, active proxy endpoint), cloud-2     -> dialled directly
  gw-a:               edge-1 (active proxy endpoint), edge-2                   -> tunnel via edge-1
  gw-b:               edge-3 (active proxy endpoint)                           -> tunnel via edge-3
edge-3's InternalIP in the view equals edge-2's (127.0.0.22): node IPs collide between pools. Pool
b's network is simulated by the edge's dial seam, which maps 127.0.0.22 to 127.0.0.32 where
edge-3's kubelet really listens, as a separate L3 domain would.
Kubelets listen on free high ports published as the Gateways' proxyHTTPSPort/proxyHTTPPort.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest
import uvloop

from ravend.certs.tls import client_context, identity_from_peercert, server_context
from ravend.l7proxy.edge import EdgeHandler
from ravend.l7proxy.front_dial import KubeletTls, UpstreamDialer, dial_kubelet
from ravend.l7proxy.front_framing import ResponseFramer
from ravend.l7proxy.front_splice import SocketPipe
from ravend.l7proxy.frontend import FrontEnd, FrontSettings
from ravend.l7proxy.http_head import ResponseHead
from ravend.l7proxy.settings import L7TunnelSettings
from ravend.l7proxy.tunnel_client import ServerAddress, TunnelClient
from ravend.l7proxy.tunnel_server import TunnelServer
from ravend.model import (
    GATEWAY_LABEL,
    ClusterView,
    Endpoint,
    EndpointType,
    ExposeType,
    Gateway,
    GatewaySpec,
    GatewayStatus,
    Node,
    ObjectMeta,
    ProxyConfig,
    RavenConfig,
)
from ravend.runtime import Latest
from ravend.sim.apiserver.pki import ClusterCA
from ravend.sim.kubelet import FakeKubelet, serving_context
from ravend.sim.kubelet_client import KubeletClient, fixed_resolver


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> Mapping[str, Callable[[], asyncio.AbstractEventLoop]]:
    """Component tests run on both loops: uvloop aborted under connection churn on this machine
    with Protocol-based relays (environment.md); ours are streams-based and must hold on both."""
    if item.path.name in ("test_front_component.py", "test_keepalive_component.py"):
        return {"asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}
    return {"asyncio": asyncio.new_event_loop}


FAST = L7TunnelSettings(
    port=0,
    keepalive_interval=0.2,
    keepalive_timeout=3.0,  # a loaded 2-core CI machine can stall a loop for >1 s
    reconnect_initial_delay=0.05,
    reconnect_max_delay=0.3,
    drain_timeout=1.0,
)
NODE_IPS = {
    "cloud-1": "127.0.0.11",
    "cloud-2": "127.0.0.12",
    "edge-1": "127.0.0.21",
    "edge-2": "127.0.0.22",
    "edge-3": "127.0.0.22",  # collides with edge-2 on purpose
}
REAL_IPS = {**NODE_IPS, "edge-3": "127.0.0.32"}
POOLS = {"cloud-1": "gw-cloud", "cloud-2": "gw-cloud", "edge-1": "gw-a", "edge-2": "gw-a"}
POOLS["edge-3"] = "gw-b"
PROXIES = {"gw-cloud": "cloud-1", "gw-a": "edge-1", "gw-b": "edge-3"}
POD = "pod-on-{}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass(frozen=True)
class Pki:
    ca: ClusterCA
    creds: dict[str, tuple[bytes, bytes]]
    """name -> (cert, key) PEM."""

    @property
    def ca_pem(self) -> bytes:
        return self.ca.cert_pem

    def client(self, name: str | None, ca_pem: bytes | None = None) -> ssl.SSLContext:
        """A caller's context presenting certificate `name` (None: none)."""
        if name is None:
            return client_context(ca_pem or self.ca_pem)
        cert, key = self.creds[name]
        return client_context(ca_pem or self.ca_pem, cert, key)


@pytest.fixture(scope="session")
def pki() -> Pki:
    ca = ClusterCA.create()
    client = ["digital signature", "key encipherment", "client auth"]
    creds = {
        "front": ca.issue(
            "system:node:cloud-1",
            ["system:nodes"],
            usages=["digital signature", "server auth"],
            sans=["cloud-1", "127.0.0.1", "127.0.0.11"],
        ),
        "apiserver": ca.issue("kube-apiserver-kubelet-client", ["system:masters"], usages=client),
        "proxy": ca.issue("ravend-proxy-client", usages=client),
        "edge-1": ca.issue("ravend:tunnel:edge-1", ["ravend:tunnel-clients"], usages=client),
        "edge-3": ca.issue("ravend:tunnel:edge-3", ["ravend:tunnel-clients"], usages=client),
        "node-edge-2": ca.issue("system:node:edge-2", ["system:nodes"], usages=client),
    }
    other = ClusterCA.create()
    creds["stranger"] = other.issue("kube-apiserver-kubelet-client", usages=client)
    return Pki(ca, creds)


def build_view(tls_port: int, plain_port: int) -> ClusterView:
    proxy = ProxyConfig(replicas=1, proxy_https_port=str(tls_port), proxy_http_port=str(plain_port))
    nodes = {
        name: Node(
            ObjectMeta(name, labels={GATEWAY_LABEL: POOLS[name]}), internal_ips=(ip,), ready=True
        )
        for name, ip in NODE_IPS.items()
    }
    gateways = {}
    for gw, proxy_node in PROXIES.items():
        ep = Endpoint(proxy_node, EndpointType.PROXY, 10262)
        expose = ExposeType.PUBLIC_IP if gw == "gw-cloud" else ExposeType.NONE
        spec = GatewaySpec(proxy_config=proxy, endpoints=(ep,), expose_type=expose)
        gateways[gw] = Gateway(ObjectMeta(gw), spec, GatewayStatus(active_endpoints=(ep,)))
    return ClusterView(gateways, nodes, RavenConfig(True, True, True), synced=True)


def pool_dial(pool: str, dials: list[str] | None = None) -> Any:
    """The edge's network seam: pool b's 127.0.0.22 is really 127.0.0.32 (separate L3 domain).
    Every kubelet connection the edge opens is recorded in `dials` (real address)."""

    async def dial(address: str, port: int, tls: KubeletTls | None, timeout: float) -> SocketPipe:
        if pool == "gw-b" and address == NODE_IPS["edge-3"]:
            address = REAL_IPS["edge-3"]
        if dials is not None:
            dials.append(address)
        return await dial_kubelet(address, port, tls, timeout)

    return dial


@dataclass
class Rig:
    pki: Pki
    view: Latest[ClusterView]
    tls_port: int
    plain_port: int
    tunnels: TunnelServer
    https: FrontEnd
    http: FrontEnd
    kubelets: dict[str, FakeKubelet]
    pods: dict[tuple[str, str], str]
    dialer: UpstreamDialer
    edges: dict[str, asyncio.Task[None]] = field(default_factory=dict)
    edge_dials: list[str] = field(default_factory=list)
    """Real address of every kubelet connection the edges opened."""
    group: asyncio.TaskGroup | None = None

    def caller(self, cert: str | None = "apiserver", plain: bool = False) -> KubeletClient:
        if plain:
            return KubeletClient(fixed_resolver("127.0.0.1", self.http.port), None, self.plain_port)
        resolve = fixed_resolver("127.0.0.1", self.https.port)
        return KubeletClient(resolve, self.pki.client(cert), self.tls_port)

    def start_edge(self, node: str) -> None:
        assert self.group is not None
        proxy_tls = self.pki.client("proxy", ca_pem=None)
        dial = pool_dial(POOLS[node], self.edge_dials)
        handler = EdgeHandler(node, self.view, lambda: proxy_tls, dial=dial)
        server = ServerAddress("127.0.0.1", self.tunnels.port, self.pki.client(node))
        client = TunnelClient([server], handler, FAST)
        self.edges[node] = self.group.create_task(client.run())

    async def stop_edge(self, node: str) -> None:
        task = self.edges.pop(node)
        task.cancel()
        await asyncio.wait([task])

    async def wait_connected(self, nodes: set[str], timeout: float = 5.0) -> None:
        async with asyncio.timeout(timeout):
            while not nodes <= self.tunnels.connected.value:
                await asyncio.sleep(0.01)


def _kubelet_client_ctx(pki: Pki) -> ssl.SSLContext:
    # Kubelets' serving certificates are not verified (the kube-apiserver's default).
    cert, key = pki.creds["proxy"]
    return client_context(None, cert, key, ssl.TLSVersion.TLSv1_2)


@pytest.fixture
async def rig(pki: Pki) -> AsyncIterator[Rig]:
    tls_port, plain_port = free_port(), free_port()
    view = Latest(build_view(tls_port, plain_port))
    pods = {("default", POD.format(n)): n for n in NODE_IPS}
    front_cert, front_key = pki.creds["front"]
    server_tls = server_context(front_cert, front_key, pki.ca_pem)
    kubelet_ctx = _kubelet_client_ctx(pki)

    async def lookup(namespace: str, name: str) -> str | None:
        if name == "api-down":
            raise ConnectionError("API server unavailable")
        if name == "api-hangs":
            await asyncio.Event().wait()
        return pods.get((namespace, name))

    tunnels = TunnelServer(
        server_tls, FAST, identity_of=identity_from_peercert, host="127.0.0.1", port=0
    )
    dialer = UpstreamDialer(lambda: kubelet_ctx, tunnels, connect_timeout=2.0)

    def front(tls: ssl.SSLContext | None) -> FrontEnd:
        return FrontEnd(
            me="cloud-1",
            view=view,
            pods=lookup,
            upstreams=dialer,
            ssl_context=tls,
            host="127.0.0.1",
            settings=FrontSettings(
                head_timeout=1.0,
                drain_timeout=1.0,
                pod_lookup_timeout=1.0,
                keepalive_idle_timeout=2.0,
            ),
        )

    kubelets = {}
    for name, ip in REAL_IPS.items():
        tls = serving_context(pki.ca_pem, pki.ca.key_pem, name, [ip])
        kubelets[name] = FakeKubelet(
            name, ip, tls, port=tls_port, read_only_port=plain_port, metrics_bytes=2 << 20
        )
    async with contextlib.AsyncExitStack() as stack:
        await stack.enter_async_context(tunnels)
        https = await stack.enter_async_context(front(server_tls))
        http = await stack.enter_async_context(front(None))
        for kubelet in kubelets.values():
            await stack.enter_async_context(kubelet)
        # Runs before the kubelets stop: pooled upstreams close, so kubelets see a clean end.
        stack.push_async_callback(_close_pool, dialer, kubelets)
        rig = Rig(pki, view, tls_port, plain_port, tunnels, https, http, kubelets, pods, dialer)
        async with asyncio.TaskGroup() as tg:
            rig.group = tg
            rig.start_edge("edge-1")
            rig.start_edge("edge-3")
            await rig.wait_connected({"edge-1", "edge-3"})
            try:
                yield rig
            finally:
                for node in list(rig.edges):
                    await rig.stop_edge(node)


async def _close_pool(dialer: UpstreamDialer, kubelets: dict[str, FakeKubelet]) -> None:
    dialer.close_idle()
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(1.0):
            while any(k.open_connections for k in kubelets.values()):
                await asyncio.sleep(0.01)


class KeepAliveCaller:
    """A caller that keeps one connection for many requests, as the kube-apiserver does."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.buf = b""

    @classmethod
    async def connect(cls, port: int, tls: ssl.SSLContext | None) -> KeepAliveCaller:
        host = "127.0.0.1"
        reader, writer = await asyncio.open_connection(
            host, port, ssl=tls, server_hostname=host if tls else None
        )
        return cls(reader, writer)

    def send(self, host: str, path: str, method: str = "GET", extra: str = "") -> None:
        self.writer.write(f"{method} {path} HTTP/1.1\r\nHost: {host}\r\n{extra}\r\n".encode())

    async def response(self, method: str = "GET") -> tuple[ResponseHead, bytes]:
        """The next response (head, raw body) read to its framing's end."""
        framer, out = ResponseFramer(method), bytearray()
        while not framer.done:
            data = self.buf or await self.reader.read(65536)
            self.buf = b""
            if not data:
                raise ConnectionError("connection closed before the response ended")
            used = framer.feed(data)
            out += data[:used]
            self.buf = data[used:]
        assert framer.head is not None
        return framer.head, bytes(out[out.find(b"\r\n\r\n") + 4 :])

    async def get(self, host: str, path: str) -> tuple[ResponseHead, bytes]:
        self.send(host, path)
        return await self.response()

    async def closed_by_peer(self, timeout: float = 3.0) -> bool:
        """True when the proxy closes the connection (EOF or reset) within `timeout`."""
        try:
            async with asyncio.timeout(timeout):
                return await self.reader.read(1) == b""
        except ConnectionError:
            return True

    def close(self) -> None:
        self.writer.close()
