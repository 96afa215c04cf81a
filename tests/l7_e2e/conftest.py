"""Rig for the L7 end-to-end tests on the simulated cluster (network namespaces, real agents).

`L7Cluster.start(topology, run_dir)` brings up a SimCluster (one `ravend agent` and one fake
kubelet per node), waits until every Gateway has its active proxy endpoint and the cloud front
end answers for every node, and creates one Pod object per node (the front end routes pod
subresources by the pod's node). `stop()` always removes everything.

Callers run *in this test process* but inside a node's network namespace: a worker thread
switches into the namespace only for the socket() call (a socket keeps the namespace it was
created in), so tests dial the cloud proxy's front end exactly as the internal Service's
Endpoints would, with asyncio streams they control byte by byte.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import re
import shutil
import socket
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from ravend.certs.tls import client_context
from ravend.ctl.collect import fetch_view
from ravend.kube.client import KubeClient, connect
from ravend.l7proxy.http_head import ResponseHead
from ravend.l7proxy.tunnel_transport import set_nodelay
from ravend.model import ClusterView, EndpointType
from ravend.sim import kubelet_wire as wire
from ravend.sim.apiserver.pki import ClusterCA
from ravend.sim.cluster import ClusterOptions, SimCluster
from ravend.sim.demo_checks import ensure_pods
from ravend.sim.demo_l7 import APISERVER_CN, CONTAINER, POD_NAMESPACE, demo_pod
from ravend.sim.kubelet_client import KubeletClient, Resolver, fixed_resolver
from ravend.sim.topology import Topology

HAVE_NETNS = (
    os.geteuid() == 0
    and shutil.which("ip") is not None
    and shutil.which("nft") is not None
    and shutil.which("ss") is not None
    and shutil.which("wireguard-go") is not None
)
HTTPS_FRONT, HTTP_FRONT = 10263, 10264
TUNNEL_PORT = 10262
CLIENT_USAGES = ["digital signature", "key encipherment", "client auth"]
_CLONE_NEWNET = 0x40000000


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    skip = pytest.mark.skip(reason="needs root, ip, ss, nft and wireguard-go")
    for item in items:
        if not HAVE_NETNS and "l7_e2e" in str(item.path):
            item.add_marker(skip)


# ---- sockets inside a namespace ------------------------------------------------------------


def _socket_in(netns: str, family: int) -> socket.socket:
    libc = ctypes.CDLL(None, use_errno=True)
    with open("/proc/thread-self/ns/net") as own, open(f"/run/netns/{netns}") as target:
        if libc.setns(target.fileno(), _CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns {netns}")
        try:
            return socket.socket(family, socket.SOCK_STREAM)
        finally:
            # The worker thread goes back to the pool: it must leave in our own namespace.
            if libc.setns(own.fileno(), _CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "setns back")


async def dial_in(
    netns: str, address: str, port: int, tls: ssl.SSLContext | None, timeout: float = 5.0
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A TCP (and TLS) connection from inside `netns` to address:port."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    sock = await asyncio.to_thread(_socket_in, netns, family)
    try:
        sock.setblocking(False)
        async with asyncio.timeout(timeout):
            await asyncio.get_running_loop().sock_connect(sock, (address, port))
            reader, writer = await asyncio.open_connection(
                sock=sock, ssl=tls, server_hostname=address if tls else None
            )
    except BaseException:
        sock.close()
        raise
    set_nodelay(writer)
    return reader, writer


class NetnsKubeletClient(KubeletClient):
    """KubeletClient whose connections start inside network namespace `netns`."""

    def __init__(
        self, netns: str, resolve: Resolver, ssl_context: ssl.SSLContext | None, port: int
    ) -> None:
        super().__init__(resolve, ssl_context, port)
        self.netns = netns

    async def _dial(
        self, address: str, port: int
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await dial_in(self.netns, address, port, self.ssl)


# ---- request helpers -----------------------------------------------------------------------


def pod_path(kind: str, node: str, query: str = "") -> str:
    """`/<kind>/default/demo-<node>/main[?query]` (portForward has no container segment)."""
    tail = "" if kind == "portForward" else f"/{CONTAINER}"
    return f"/{kind}/{POD_NAMESPACE}/{demo_pod(node)}{tail}" + (f"?{query}" if query else "")


async def ws_exec(
    client: KubeletClient, node: str, chunks: list[bytes]
) -> tuple[ResponseHead, bytes, bytes]:
    """exec over WebSocket v5: (101 head, stdout, status JSON) of a stdin echo."""
    headers = (
        ("Connection", "Upgrade"),
        ("Upgrade", "websocket"),
        ("Sec-WebSocket-Version", "13"),
        ("Sec-WebSocket-Key", wire.ws_key()),
        ("Sec-WebSocket-Protocol", wire.K8S_WS_PROTOCOL),
    )
    path = pod_path("exec", node, "command=cat&input=1&output=1")
    ex = await client.open(node, "GET", path, headers=headers)
    try:
        assert ex.head.status == 101, (ex.head.status, ex.head.reason)
        for chunk in chunks:
            stdin = bytes([wire.CH_STDIN]) + chunk
            ex.writer.write(wire.ws_frame(wire.WS_BINARY, stdin, masked=True))
        close_stdin = bytes([wire.CH_CLOSE, wire.CH_STDIN])
        ex.writer.write(wire.ws_frame(wire.WS_BINARY, close_stdin, masked=True))
        parser, stdout, status = wire.WsParser(), bytearray(), b""
        while True:
            data = await ex.read()
            if not data:
                raise ConnectionError("WebSocket ended without a close frame")
            for frame in parser.feed(data):
                if frame.opcode == wire.WS_CLOSE:
                    return ex.head, bytes(stdout), status
                if frame.payload[:1] == bytes([wire.CH_STDOUT]):
                    stdout += frame.payload[1:]
                elif frame.payload[:1] == bytes([wire.CH_STATUS]):
                    status = frame.payload[1:]
    finally:
        ex.close()


async def wait_for(
    check: Callable[[], Awaitable[bool]], timeout: float, interval: float = 0.25
) -> float:
    """Poll `check` until True; returns the seconds it took (TimeoutError after `timeout`)."""
    start = time.monotonic()
    async with asyncio.timeout(timeout):
        while not await check():
            await asyncio.sleep(interval)
    return time.monotonic() - start


# ---- the cluster ---------------------------------------------------------------------------


def expected_elected(view: ClusterView) -> bool:
    """Every Gateway with proxy candidates has an active proxy endpoint."""
    return view.synced and all(
        gw.active(EndpointType.PROXY)
        for gw in view.gateways.values()
        if any(e.type == EndpointType.PROXY for e in gw.spec.endpoints)
    )


@dataclass
class L7Cluster:
    sim: SimCluster
    kube: KubeClient
    """Admin client of the embedded API server."""
    ca: ClusterCA
    """The cluster CA (mints the apiserver's kubelet-client certificate and test identities)."""
    front_node: str
    """The cloud node whose front end the tests call (the active proxy of the exposed pool)."""

    @classmethod
    async def start(cls, topology: Topology, run_dir: Path, timeout: float = 60.0) -> L7Cluster:
        sim = SimCluster(topology, ClusterOptions(run_dir=run_dir))
        await sim.up()
        kube: KubeClient | None = None
        try:
            kube = await connect(sim.admin_kubeconfig)
            view = await _wait_view(kube, timeout)
            exposed = [g for g in view.gateways.values() if g.is_exposed]
            front = exposed[0].active(EndpointType.PROXY)[0].node_name
            ca = ClusterCA.load_or_create(run_dir / "apiserver")
            cluster = cls(sim, kube, ca, front)
            await ensure_pods(kube, [n.name for n in topology.nodes])
            await wait_for(cluster.all_nodes_answer, timeout, interval=0.5)
            return cluster
        except BaseException:
            if kube is not None:
                await kube.close()
            await sim.down()
            raise

    async def stop(self) -> None:
        try:
            await self.kube.close()
        finally:
            await self.sim.down()

    @property
    def nodes(self) -> list[str]:
        return [n.name for n in self.sim.topology.nodes]

    @property
    def front_ip(self) -> str:
        return self.sim.topology.node(self.front_node).ip

    @property
    def front_netns(self) -> str:
        return self.sim.node_netns(self.front_node)

    def identity(
        self, cn: str, orgs: tuple[str, ...] = (), ca: ClusterCA | None = None
    ) -> ssl.SSLContext:
        """A client context presenting a fresh certificate for `cn` (from the cluster CA, or
        `ca`), verifying servers against the cluster CA."""
        cert, key = (ca or self.ca).issue(cn, list(orgs), usages=CLIENT_USAGES)
        return client_context(self.ca.cert_pem, cert, key)

    def apiserver_tls(self) -> ssl.SSLContext:
        return self.identity(APISERVER_CN, ("system:masters",))

    def caller(
        self, tls: ssl.SSLContext | str | None = "apiserver", *, plain: bool = False
    ) -> NetnsKubeletClient:
        """A caller in the cloud proxy's namespace, dialling its front end directly (what the
        internal Service's Endpoints point at): HTTPS 10263, or plain 10264 for 10255."""
        if plain:
            resolve = fixed_resolver(self.front_ip, HTTP_FRONT)
            return NetnsKubeletClient(self.front_netns, resolve, None, 10255)
        ctx = self.apiserver_tls() if tls == "apiserver" else tls
        assert not isinstance(ctx, str)
        resolve = fixed_resolver(self.front_ip, HTTPS_FRONT)
        return NetnsKubeletClient(self.front_netns, resolve, ctx, 10250)

    async def all_nodes_answer(self) -> bool:
        client = self.caller()

        async def one(node: str) -> bool:
            with contextlib.suppress(
                OSError, TimeoutError, ValueError, asyncio.IncompleteReadError
            ):
                resp = await asyncio.wait_for(client.get(node, "/healthz"), 5)
                return resp.status == 200 and resp.node == node
            return False

        return all(await asyncio.gather(*(one(n) for n in self.nodes)))

    async def kubelet_connections(self, node: str) -> dict[tuple[str, str], int]:
        """(local, peer) -> bytes sent, of every established connection of the node's kubelet
        on :10250 (from `ss` in the node's namespace)."""
        argv = ["ss", "-Htni", "state", "established", "( sport = :10250 )"]
        res = await self.sim.exec_in(self.sim.node_netns(node), argv, timeout=10)
        assert res.ok, res.stderr
        out: dict[tuple[str, str], int] = {}
        conn: tuple[str, str] | None = None
        for line in res.stdout.splitlines():
            if not line[:1].isspace():  # "Recv-Q Send-Q Local Peer" line
                parts = line.split()
                conn = (parts[-2], parts[-1]) if len(parts) >= 4 else None
                if conn is not None:
                    out[conn] = 0
            elif conn is not None and (m := re.search(r"bytes_sent:(\d+)", line)):
                out[conn] = int(m.group(1))
        return out


async def _wait_view(kube: KubeClient, timeout: float) -> ClusterView:
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(Exception):  # API server still starting: poll again
            view = await fetch_view(kube)
            if expected_elected(view):
                return view
        if time.monotonic() > deadline:
            raise TimeoutError(f"Gateways not elected within {timeout:.0f} s")
        await asyncio.sleep(0.5)
