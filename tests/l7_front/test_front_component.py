"""Cloud front end -> (direct | tunnel -> edge) -> fake kubelet, over loopback with real TLS."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import ssl
from typing import Any

import pytest

from ravend.l7proxy.protocol_frames import ErrorCode, Target
from ravend.l7proxy.tunnel_stream import StreamResetError

from .conftest import NODE_IPS, POD, Rig

ALL_NODES = sorted(NODE_IPS)


async def wait_until(predicate: object, timeout: float = 5.0) -> None:
    assert callable(predicate)
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.01)


@pytest.mark.parametrize("node", ALL_NODES)
async def test_logs_reach_the_pods_node_with_the_proxy_identity(rig: Rig, node: str) -> None:
    path = f"/containerLogs/default/{POD.format(node)}/app?tailLines=3"
    # The Host names another node: for pod paths the pod decides, as in Raven.
    resp = await rig.caller().get("cloud-2", path, port=rig.tls_port)
    assert resp.status == 200, resp.body
    assert resp.node == node
    assert resp.head.get("x-sim-caller") == "ravend-proxy-client"
    assert resp.body.decode().splitlines() == [
        f"{node} default/{POD.format(node)}/app line {i}" for i in range(3)
    ]


async def test_colliding_node_ips_are_routed_by_name(rig: Rig) -> None:
    assert NODE_IPS["edge-2"] == NODE_IPS["edge-3"]
    for node in ("edge-2", "edge-3"):
        resp = await rig.caller().get(node, "/healthz", port=rig.tls_port)
        assert (resp.status, resp.node, resp.body) == (200, node, b"ok")


async def test_follow_streams_and_caller_leaving_closes_the_kubelet_side(rig: Rig) -> None:
    kubelet = rig.kubelets["edge-2"]
    path = f"/containerLogs/default/{POD.format('edge-2')}/app?follow=true&tailLines=0"
    ex = await rig.caller().open("edge-2", "GET", path, port=rig.tls_port)
    assert ex.head.status == 200 and "chunked" in ex.head.tokens("transfer-encoding")
    lines = []
    async for chunk in ex.chunks():
        lines.append(chunk)
        if len(lines) == 5:
            break
    assert lines[4].endswith(b"line 4\n")
    assert kubelet.open_connections == 1
    ex.close()
    await wait_until(lambda: kubelet.open_connections == 0)


@pytest.mark.parametrize("node", ["cloud-2", "edge-2", "edge-3"])
async def test_exec_over_websocket_echoes_stdin(rig: Rig, node: str) -> None:
    chunks = [b"hello\n", os.urandom(100_000), b"bye\n"]
    path = f"/exec/default/{POD.format(node)}/app?command=cat&input=1&output=1"
    stdout, status = await rig.caller().ws_exec_echo(node, path, chunks)
    assert stdout == b"".join(chunks)
    assert json.loads(status)["status"] == "Success"


@pytest.mark.parametrize("node", ["cloud-2", "edge-2"])
async def test_exec_over_spdy_echoes_data_frames(rig: Rig, node: str) -> None:
    chunks = [b"a" * 10, os.urandom(300_000), b"end"]
    path = f"/exec/default/{POD.format(node)}/app?command=cat&input=1&output=1"
    echoed = await rig.caller().spdy_echo(node, path, chunks)
    assert echoed == b"".join(chunks)


async def test_port_forward_relays_megabytes_both_ways(rig: Rig) -> None:
    data = os.urandom(4 << 20)
    path = f"/portForward/default/{POD.format('edge-3')}"
    assert await rig.caller().port_forward_echo("edge-3", path, data) == data


async def test_metrics_large_body_by_host_and_by_node_name_query(rig: Rig) -> None:
    resp = await rig.caller().get("edge-1", "/metrics", port=rig.tls_port)
    assert resp.status == 200 and resp.node == "edge-1" and len(resp.body) == 2 << 20
    other = await rig.caller().request(
        "edge-2", "GET", "/metrics?nodeName=edge-3", port=rig.tls_port
    )
    assert other.node == "edge-3" and len(other.body) == 2 << 20


async def test_plain_front_end_serves_read_only_port(rig: Rig) -> None:
    plain = rig.caller(plain=True)
    resp = await plain.get("edge-3", "/metrics", port=rig.plain_port)
    assert resp.status == 200 and resp.node == "edge-3" and len(resp.body) == 2 << 20
    refused = await plain.get("edge-3", "/metrics", port=rig.tls_port)
    assert refused.status == 403 and b"not reachable over plain HTTP" in refused.body


async def test_large_request_body_reaches_the_kubelet_intact(rig: Rig) -> None:
    body = os.urandom(8 << 20)
    resp = await rig.caller().request(
        "edge-2", "POST", "/run/default/x/app", port=rig.tls_port, body=body
    )
    assert resp.status == 200 and resp.node == "edge-2"
    assert resp.body.decode().split() == [str(len(body)), hashlib.sha256(body).hexdigest()]


# ---- refusals ---------------------------------------------------------------------------------


@pytest.mark.parametrize("cert", [None, "stranger"])
async def test_caller_without_a_cluster_certificate_is_refused(rig: Rig, cert: str | None) -> None:
    client = rig.caller(cert)
    with pytest.raises((ssl.SSLError, ConnectionError)):
        await client.get("edge-1", "/healthz", port=rig.tls_port)
    assert all(k.requests == [] for k in rig.kubelets.values())


async def test_node_identities_may_not_use_the_proxy(rig: Rig) -> None:
    resp = await rig.caller("node-edge-2").get("edge-1", "/healthz", port=rig.tls_port)
    assert resp.status == 403 and b"system:node:edge-2" in resp.body


@pytest.mark.parametrize(
    ("host", "path", "status", "text"),
    [
        ("127.0.0.21:{tls}", "/healthz", 403, b"IP address"),
        ("edge-1:22", "/healthz", 403, b"port 22"),
        ("nosuch:{tls}", "/healthz", 404, b"node nosuch not found"),
        ("edge-1:{tls}", "/exec/default/ghost/app", 404, b"pod default/ghost"),
        ("edge-1:{tls}", "/healthz?nodeName=10.0.0.1", 403, b"not an IP"),
        ("edge-1:{tls}", "/exec/default/api-down/app", 503, b"API server unavailable"),
        ("edge-1:{tls}", "/exec/default/api-hangs/app", 504, b"timed out"),
    ],
)
async def test_refusals_have_a_clear_status(
    rig: Rig, host: str, path: str, status: int, text: bytes
) -> None:
    client = rig.caller()
    resp = await client.request(
        "edge-1", "GET", path, port=rig.tls_port, host=host.format(tls=rig.tls_port)
    )
    assert resp.status == status and text in resp.body, resp.body
    assert all(k.requests == [] for k in rig.kubelets.values())


async def test_malformed_head_gets_400(rig: Rig) -> None:
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", rig.https.port, ssl=rig.pki.client("apiserver"), server_hostname="127.0.0.1"
    )
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: edge-1\r\nBad Header: x\r\n\r\n")
    reply = await reader.read()
    writer.close()
    assert reply.startswith(b"HTTP/1.1 400 ")


async def test_slow_head_gets_408(rig: Rig) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", rig.http.port)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: ed")  # and then nothing (slowloris)
    async with asyncio.timeout(3):
        reply = await reader.read(-1)
    writer.close()
    assert reply.startswith(b"HTTP/1.1 408 ")


async def test_pool_without_a_tunnel_gets_503_and_recovers_after_redial(rig: Rig) -> None:
    await rig.stop_edge("edge-3")
    await wait_until(lambda: "edge-3" not in rig.tunnels.connected.value)
    resp = await rig.caller().get("edge-3", "/healthz", port=rig.tls_port)
    assert resp.status == 503 and b"no tunnel from gateway gw-b" in resp.body
    rig.start_edge("edge-3")
    await rig.wait_connected({"edge-3"})
    assert (await rig.caller().get("edge-3", "/healthz", port=rig.tls_port)).node == "edge-3"


async def test_edge_killed_mid_stream_errors_the_caller_then_redial_works(rig: Rig) -> None:
    path = f"/containerLogs/default/{POD.format('edge-2')}/app?follow=true"
    ex = await rig.caller().open("edge-2", "GET", path, port=rig.tls_port)
    got = 0
    with pytest.raises((asyncio.IncompleteReadError, ConnectionError)):
        async for _ in ex.chunks():
            got += 1
            if got == 3:
                await rig.stop_edge("edge-1")
    ex.close()
    assert got >= 3
    await wait_until(lambda: rig.kubelets["edge-2"].open_connections == 0)
    rig.start_edge("edge-1")
    await rig.wait_connected({"edge-1"})
    assert (await rig.caller().get("edge-2", "/healthz", port=rig.tls_port)).node == "edge-2"


async def test_edge_refuses_nodes_outside_its_pool(rig: Rig) -> None:
    stream = rig.tunnels.open_stream("edge-1", Target("edge-3", rig.tls_port, True))
    await stream.write(b"GET /healthz HTTP/1.1\r\nHost: edge-3\r\n\r\n")
    with pytest.raises(StreamResetError) as err:
        await stream.read()
    assert err.value.code == ErrorCode.REFUSED_STREAM and "not in the pool" in err.value.reason
    assert rig.kubelets["edge-3"].requests == []


async def test_kubelet_down_gives_502(rig: Rig) -> None:
    kubelet = rig.kubelets["cloud-2"]
    await kubelet.__aexit__(None, None, None)
    resp = await rig.caller().get("cloud-2", "/healthz", port=rig.tls_port)
    assert resp.status == 502 and b"cannot reach node cloud-2" in resp.body


async def test_connection_churn_through_the_tunnel(rig: Rig) -> None:
    """Many short exchanges at once, on each loop: every one answered by the right node, pooled
    upstreams reused across callers, and once the pool lets go, every kubelet connection and
    tunnel stream closed (nothing leaks on either side)."""
    client = rig.caller()

    async def one(i: int) -> str | None:
        node = ("edge-2", "edge-3", "cloud-2")[i % 3]
        return (await client.get(node, "/healthz")).node

    results: list[str | None] = []
    for wave in range(3):  # waves, so later ones find pooled upstreams even on a slow machine
        results += await asyncio.gather(*(one(i) for i in range(wave * 50, wave * 50 + 50)))
    assert results == [("edge-2", "edge-3", "cloud-2")[i % 3] for i in range(150)]
    assert rig.dialer.dials < 150 and rig.dialer.pool.reused > 0
    rig.dialer.close_idle()
    await wait_until(lambda: all(k.open_connections == 0 for k in rig.kubelets.values()))
    await wait_until(lambda: all(s.stream_count == 0 for s in _sessions(rig)))
    await wait_until(lambda: rig.https.active == 0)


def _sessions(rig: Rig) -> list[Any]:
    return [s for n in ("edge-1", "edge-3") if (s := rig.tunnels.session(n)) is not None]


async def test_plain_caller_asking_to_close_is_closed_after_the_response(rig: Rig) -> None:
    """`Connection: close` from the caller: the response, then the server's close, not a hang."""
    reader, writer = await asyncio.open_connection("127.0.0.1", rig.http.port)
    host = f"edge-2:{rig.plain_port}"
    writer.write(f"GET /healthz HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
    async with asyncio.timeout(3):
        reply = await reader.read(-1)  # until EOF: the proxy must close
    writer.close()
    assert reply.startswith(b"HTTP/1.1 200 ") and reply.endswith(b"ok")
    assert b"X-Sim-Node: edge-2" in reply
