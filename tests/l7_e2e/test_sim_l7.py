"""L7 end to end on the simulated three-region cluster (raven-reference section 8; netns, slow).

Every node of every region (edges behind NAT) through the cloud proxy's front end, the way the
kube-apiserver reaches kubelets: its kubelet-client certificate, `Host: <node>:10250`, the
front end's address from the internal Service's Endpoints. One cluster per module; tests run
in file order and leave it as they found it, except the last (kills and restarts an edge).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from ravend.certs.api import CsrDenied
from ravend.certs.csr import (
    PROXY_CLIENT_CN,
    TUNNEL_CLIENTS_GROUP,
    TUNNEL_CN_PREFIX,
    CertKind,
    build_csr,
    expected_request,
)
from ravend.certs.keys import generate_key
from ravend.certs.kube_csr import KubeCsrApi
from ravend.controllers.desired import INTERNAL_SERVICE
from ravend.kube.client import connect
from ravend.kube.resources import ENDPOINTS, SERVICES
from ravend.l7proxy.tunnel_handshake import build_request
from ravend.model import RAVEN_NAMESPACE
from ravend.sim.apiserver.pki import ClusterCA
from ravend.sim.kubelet import METRICS_LINE
from ravend.sim.kubelet_client import cluster_resolver
from ravend.sim.topology_default import default_topology

from .conftest import TUNNEL_PORT, L7Cluster, dial_in, pod_path, wait_for, ws_exec

pytestmark = [
    pytest.mark.netns,
    pytest.mark.slow,
    pytest.mark.asyncio(loop_scope="module"),
    pytest.mark.timeout(150),
]

TOPOLOGY = default_topology()
NODES = [n.name for n in TOPOLOGY.nodes]
CLOUD_PROXY, CLOUD_WORKER = "izwz9dohcv74iegqecp4axz", "izwz9ey0js5z7mornclpd6z"
HZ_PROXY, HZ_WORKER = "izbp15inok0kbfkg3in52rz", "izbp15inok0kbfkg3in52sz"
QD_PROXY, QD_WORKER = "izm5eb24dmjfimuaybpnqzz", "izm5eb24dmjfimuaybpnr0z"
METRICS_BYTES = 2 * 1024 * 1024


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def l7(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[L7Cluster]:
    cluster = await L7Cluster.start(TOPOLOGY, tmp_path_factory.mktemp("l7e2e") / "sim")
    try:
        yield cluster
    finally:
        await cluster.stop()


def expected_metrics(node: str) -> bytes:
    line = METRICS_LINE % node.encode()
    return (line * (METRICS_BYTES // len(line) + 1))[:METRICS_BYTES]


def log_line(node: str, i: int) -> bytes:
    return f"{node} default/demo-{node}/main line {i}\n".encode()


async def test_every_node_name_resolves_to_the_internal_service(l7: L7Cluster) -> None:
    async def published() -> bool:
        svc = await l7.kube.get(SERVICES, INTERNAL_SERVICE, RAVEN_NAMESPACE)
        ip = svc.get("spec", {}).get("clusterIP")
        resolve = await cluster_resolver(l7.kube)
        try:
            return bool(ip) and all(resolve(n, 10250) == (ip, 10250) for n in NODES)
        except KeyError:
            return False

    await wait_for(published, 20)
    # ...and the Service's Endpoints are the cloud proxy's front ends, as these tests dial them.
    eps = await l7.kube.get(ENDPOINTS, INTERNAL_SERVICE, RAVEN_NAMESPACE)
    subset = eps["subsets"][0]
    assert [a["ip"] for a in subset["addresses"]] == [l7.front_ip]
    assert {p["port"] for p in subset["ports"]} == {10263, 10264}


@pytest.mark.parametrize("node", NODES)
async def test_container_logs(l7: L7Cluster, node: str) -> None:
    resp = await l7.caller().get(node, pod_path("containerLogs", node, "tailLines=3"))
    assert resp.status == 200, resp.body
    assert resp.node == node
    # The kubelet saw the proxy's own client certificate, not the caller's.
    assert resp.head.get("x-sim-caller") == PROXY_CLIENT_CN
    assert resp.body == b"".join(log_line(node, i) for i in range(3))


@pytest.mark.parametrize("node", NODES)
async def test_follow_streams_and_closing_it_closes_the_kubelet_side(
    l7: L7Cluster, node: str
) -> None:
    path = pod_path("containerLogs", node, "follow=true")
    ex = await l7.caller().open(node, "GET", path)
    try:
        assert ex.head.status == 200 and ex.head.get("x-sim-node") == node
        got = []
        async with asyncio.timeout(10):
            async for chunk in ex.chunks():
                got.append(chunk)
                if len(got) == 4:
                    break
        assert got == [log_line(node, i) for i in range(4)]
        # The follow connection at the kubelet is the one whose byte count keeps growing.
        first = await l7.kubelet_connections(node)
        await asyncio.sleep(0.3)
        second = await l7.kubelet_connections(node)
        streaming = {c for c, sent in second.items() if sent > first.get(c, -1)}
        assert streaming, (first, second)
    finally:
        ex.close()

    async def kubelet_closed() -> bool:
        return not streaming & set(await l7.kubelet_connections(node))

    await wait_for(kubelet_closed, 5, interval=0.1)


@pytest.mark.parametrize("node", NODES)
async def test_exec_over_websocket(l7: L7Cluster, node: str) -> None:
    chunks = [b"hello ", node.encode(), os.urandom(100_000)]
    head, stdout, status = await ws_exec(l7.caller(), node, chunks)
    assert head.get("x-sim-node") == node
    assert head.get("sec-websocket-protocol") == "v5.channel.k8s.io"
    assert stdout == b"".join(chunks)
    assert b'"Success"' in status


@pytest.mark.parametrize("node", NODES)
async def test_exec_over_spdy(l7: L7Cluster, node: str) -> None:
    chunks = [b"spdy ", node.encode(), os.urandom(70_000)]
    path = pod_path("exec", node, "command=cat&input=1&output=1")
    echoed = await asyncio.wait_for(l7.caller().spdy_echo(node, path, chunks), 10)
    assert echoed == b"".join(chunks)


@pytest.mark.parametrize("node", NODES)
async def test_port_forward(l7: L7Cluster, node: str) -> None:
    data = os.urandom(1 << 20)
    path = pod_path("portForward", node, "port=8080")
    echoed = await asyncio.wait_for(l7.caller().port_forward_echo(node, path, data), 15)
    assert hashlib.sha256(echoed).digest() == hashlib.sha256(data).digest()


@pytest.mark.parametrize("node", NODES)
async def test_metrics_body_arrives_intact(l7: L7Cluster, node: str) -> None:
    resp = await asyncio.wait_for(l7.caller().get(node, "/metrics"), 15)
    assert resp.status == 200 and resp.node == node
    assert len(resp.body) == METRICS_BYTES
    assert resp.body == expected_metrics(node)


@pytest.mark.parametrize("node", NODES)
async def test_read_only_port_through_the_plain_front_end(l7: L7Cluster, node: str) -> None:
    plain = l7.caller(plain=True)
    resp = await asyncio.wait_for(plain.get(node, "/metrics"), 15)
    assert resp.status == 200 and resp.node == node
    assert resp.body == expected_metrics(node)
    assert resp.head.get("x-sim-caller") == ""  # plain all the way: no TLS identity
    # The plain front end never reaches the TLS kubelet port.
    refused = await plain.get(node, "/healthz", port=10250)
    assert refused.status == 403 and refused.node is None


@pytest.mark.parametrize("cert", ["none", "foreign-ca"])
async def test_callers_without_a_cluster_certificate_are_refused(l7: L7Cluster, cert: str) -> None:
    if cert == "none":
        ctx = ssl.create_default_context(cadata=l7.ca.cert_pem.decode())
        ctx.check_hostname = False
    else:
        ctx = l7.identity("kube-apiserver-kubelet-client", ("system:masters",), ClusterCA.create())
    with pytest.raises((OSError, ConnectionError)):
        await asyncio.wait_for(l7.caller(ctx).get(HZ_WORKER, "/healthz"), 10)


async def test_ip_literal_hosts_are_refused(l7: L7Cluster) -> None:
    client = l7.caller()
    for node in (CLOUD_WORKER, HZ_WORKER):
        ip = TOPOLOGY.node(node).ip
        resp = await client.request(node, "GET", "/healthz", host=f"{ip}:10250")
        assert resp.status == 403 and resp.node is None, resp.body
        assert b"IP address" in resp.body
        by_query = await client.get(node, f"/healthz?nodeName={ip}")
        assert by_query.status == 403 and by_query.node is None


async def test_ports_that_are_not_published_are_refused(l7: L7Cluster) -> None:
    client = l7.caller()
    for node in (CLOUD_WORKER, HZ_WORKER, QD_WORKER):
        for port in (22, 6443, 10255):  # 10255 is plain-only: never over the TLS front end
            resp = await client.get(node, "/healthz", port=port)
            assert resp.status == 403 and resp.node is None, (node, port, resp.body)


async def test_unknown_nodes_and_pods_are_refused(l7: L7Cluster) -> None:
    client = l7.caller()
    resp = await client.get("no-such-node", "/healthz")
    assert resp.status == 404 and resp.node is None
    assert b"no-such-node" in resp.body
    resp = await client.get(HZ_WORKER, "/containerLogs/default/no-such-pod/main")
    assert resp.status == 404 and resp.node is None


async def _tunnel_upgrade(l7: L7Cluster, from_node: str, tls: ssl.SSLContext) -> bytes:
    """Dial the cloud tunnel server from `from_node`'s namespace as an edge does; the status
    line of the answer, or b"" when the TLS handshake or the connection failed."""
    server = TOPOLOGY.node(l7.front_node).wan_ip  # the endpoint's publicIP (auto = WAN address)
    assert server is not None
    try:
        reader, writer = await dial_in(l7.sim.node_netns(from_node), server, TUNNEL_PORT, tls)
    except (OSError, TimeoutError):
        return b""
    try:
        writer.write(build_request(f"{server}:{TUNNEL_PORT}"))
        async with asyncio.timeout(5):
            return (await reader.readline()).strip()
    except (OSError, TimeoutError, asyncio.IncompleteReadError):
        return b""
    finally:
        writer.close()


async def test_an_edge_cannot_register_as_another_node(l7: L7Cluster) -> None:
    """A hangzhou node tries to become qingdao's proxy, whose tunnel carries a live stream."""
    path = pod_path("containerLogs", QD_WORKER, "follow=true")
    live = await l7.caller().open(QD_WORKER, "GET", path)
    try:
        assert live.head.status == 200
        stream = live.chunks()
        await anext(stream)
        tunnel_cn = f"{TUNNEL_CN_PREFIX}{QD_PROXY}"
        impostors = {
            "node cert": l7.identity(f"system:node:{QD_PROXY}", ("system:nodes",)),
            "no tunnel group": l7.identity(tunnel_cn),
            "foreign CA": l7.identity(tunnel_cn, (TUNNEL_CLIENTS_GROUP,), ClusterCA.create()),
        }
        for name, tls in impostors.items():
            answer = await _tunnel_upgrade(l7, HZ_WORKER, tls)
            assert not answer.startswith(b"HTTP/1.1 101"), (name, answer)
        # Control: the same dial with a certificate that does prove a (cloud, unused) identity
        # is accepted, so the refusals above come from the certificates.
        proof = l7.identity(f"{TUNNEL_CN_PREFIX}{CLOUD_WORKER}", (TUNNEL_CLIENTS_GROUP,))
        assert (await _tunnel_upgrade(l7, HZ_WORKER, proof)).startswith(b"HTTP/1.1 101")
        # Nor can the hangzhou node obtain qingdao's tunnel certificate from the CSR API.
        await _csr_for_other_node_is_denied(l7, HZ_WORKER, QD_PROXY)
        # qingdao's real tunnel was never replaced: the stream still flows, new requests work.
        async with asyncio.timeout(5):
            for _ in range(3):
                assert QD_WORKER.encode() in await anext(stream)
    finally:
        live.close()
    resp = await l7.caller().get(QD_WORKER, pod_path("containerLogs", QD_WORKER, "tailLines=1"))
    assert resp.status == 200 and resp.node == QD_WORKER


async def _csr_for_other_node_is_denied(l7: L7Cluster, requester: str, victim: str) -> None:
    # The node's kubeconfig names the API server's WAN address; tests reach it over the host link.
    text = l7.sim.kubeconfig(requester).read_text().replace(l7.sim.api_wan_url, l7.sim.api_url)
    path = Path(l7.sim.run_dir) / f"impostor-{requester}.yaml"
    path.write_text(text)
    client = await connect(path)
    try:
        api = KubeCsrApi(client)
        req = expected_request(CertKind.TUNNEL_CLIENT, victim)
        name = f"impostor-{requester[-6:]}-{os.getpid()}"
        await api.create(
            name, build_csr(req, generate_key()), req.signer_name, sorted(req.usages), 3600
        )
        with pytest.raises(CsrDenied):
            await api.wait_issued(name, 15)
    finally:
        await client.close()


async def test_killing_the_edge_mid_stream_fails_the_caller_and_redial_recovers(
    l7: L7Cluster,
) -> None:
    """Last: kills hangzhou's edge proxy (its kubelets stay up) and starts it again."""
    path = pod_path("containerLogs", HZ_WORKER, "follow=true")
    ex = await l7.caller().open(HZ_WORKER, "GET", path)
    try:
        assert ex.head.status == 200
        stream = ex.chunks()
        await anext(stream)
        await l7.sim.kill_agent(HZ_PROXY, grace=0)
        with pytest.raises((asyncio.IncompleteReadError, ConnectionError, OSError)):
            async with asyncio.timeout(10):
                async for _ in stream:
                    pass
    finally:
        ex.close()
    # While hangzhou has no tunnel, its nodes get a clear answer at once, qingdao is unaffected.
    down = await asyncio.wait_for(l7.caller().get(HZ_WORKER, "/healthz"), 5)
    assert down.status in (502, 503) and down.node is None
    other = await asyncio.wait_for(l7.caller().get(QD_WORKER, "/healthz"), 5)
    assert other.status == 200 and other.node == QD_WORKER
    l7.sim.start_agent(HZ_PROXY)

    async def back() -> bool:
        try:
            resp = await asyncio.wait_for(l7.caller().get(HZ_WORKER, "/healthz"), 5)
        except (OSError, TimeoutError, asyncio.IncompleteReadError):
            return False
        return resp.status == 200 and resp.node == HZ_WORKER

    took = await wait_for(back, 30)
    print(f"hangzhou reachable again {took:.1f} s after the edge agent restarted")
    head, stdout, _ = await ws_exec(l7.caller(), HZ_PROXY, [b"after redial"])
    assert head.get("x-sim-node") == HZ_PROXY and stdout == b"after redial"
