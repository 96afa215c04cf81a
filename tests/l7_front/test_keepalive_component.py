"""Keep-alive end to end: one caller connection, many requests and nodes; pooled upstreams."""

from __future__ import annotations

import asyncio
import gc
import json
import os
import socket
import struct

from prometheus_client import REGISTRY

from ravend.l7proxy.front_caller import CallerConnection
from ravend.l7proxy.front_upstream import TunnelPipe

from .conftest import POD, REAL_IPS, KeepAliveCaller, Rig


async def tls_caller(rig: Rig) -> KeepAliveCaller:
    return await KeepAliveCaller.connect(rig.https.port, rig.pki.client("apiserver"))


async def test_requests_on_one_caller_connection_reach_different_nodes(rig: Rig) -> None:
    caller = await tls_caller(rig)
    try:
        port = rig.tls_port
        for node in ("cloud-2", "edge-2", "edge-3", "edge-1", "cloud-2", "edge-3"):
            head, body = await caller.get(f"{node}:{port}", "/healthz")
            assert (head.status, head.get("x-sim-node"), body) == (200, node, b"ok")
        pod_path = f"/containerLogs/default/{POD.format('edge-2')}/app?tailLines=2"
        head, body = await caller.get(f"cloud-2:{port}", pod_path)
        assert head.get("x-sim-node") == "edge-2" and body.count(b"\n") == 2
        head, body = await caller.get(f"edge-1:{port}", "/metrics")
        assert head.get("x-sim-node") == "edge-1" and len(body) == 2 << 20
    finally:
        caller.close()
    assert rig.https.active <= 1  # one caller connection served all of them


async def test_pipelined_requests_are_answered_in_order(rig: Rig) -> None:
    caller = await tls_caller(rig)
    try:
        for node in ("edge-3", "cloud-2", "edge-2"):
            caller.send(f"{node}:{rig.tls_port}", "/healthz")
        nodes = [(await caller.response())[0].get("x-sim-node") for _ in range(3)]
        assert nodes == ["edge-3", "cloud-2", "edge-2"]
    finally:
        caller.close()


async def test_kubelet_connections_are_pooled_across_requests_and_callers(rig: Rig) -> None:
    """Direct (cloud-2) and through the tunnel (edge-2): one kubelet connection each, whether
    the requests share a caller connection or not."""
    caller = await tls_caller(rig)
    try:
        for _ in range(5):
            for node in ("cloud-2", "edge-2"):
                assert (await caller.get(f"{node}:{rig.tls_port}", "/healthz"))[0].status == 200
    finally:
        caller.close()
    for _ in range(5):  # new caller connections (one request each) reuse them too
        await _wait(lambda: rig.dialer.pool.idle == 2)  # released just after the last byte
        assert (await rig.caller().get("edge-2", "/healthz", port=rig.tls_port)).node == "edge-2"
    assert len(rig.kubelets["edge-2"].requests) == 10
    assert rig.edge_dials == [REAL_IPS["edge-2"]]  # the edge dialled the kubelet once
    assert rig.dialer.dials == 2  # one socket to cloud-2, one tunnel stream to edge-2
    assert rig.kubelets["cloud-2"].open_connections == 1
    assert rig.kubelets["edge-2"].open_connections == 1


async def test_stale_pooled_connection_is_discarded(rig: Rig) -> None:
    """The kubelet restarts while our connection to it idles: the next request gets a fresh
    connection and succeeds."""
    kubelet = rig.kubelets["cloud-2"]
    assert (await rig.caller().get("cloud-2", "/healthz", port=rig.tls_port)).node == "cloud-2"
    await _wait(lambda: rig.dialer.pool.idle == 1)
    await kubelet.__aexit__(None, None, None)  # closes every connection it had
    await kubelet.__aenter__()
    await asyncio.sleep(0.05)
    resp = await rig.caller().get("cloud-2", "/healthz", port=rig.tls_port)
    assert (resp.status, resp.node) == (200, "cloud-2")
    assert rig.dialer.dials == 2 and rig.dialer.pool.reused == 0


async def test_no_reuse_after_an_upgrade(rig: Rig) -> None:
    """A WebSocket exec ends its caller connection and its upstream: neither is reused."""
    caller = await tls_caller(rig)
    try:
        assert (await caller.get(f"edge-2:{rig.tls_port}", "/healthz"))[0].status == 200
        await _wait(lambda: rig.dialer.pool.idle == 1)
        idle_before = rig.dialer.pool.idle
        stdout, status = await rig.caller().ws_exec_echo(
            "edge-2", f"/exec/default/{POD.format('edge-2')}/app?command=cat", [b"hi\n"]
        )
        assert stdout == b"hi\n" and json.loads(status)["status"] == "Success"
        # The exec used a new tunnel stream and kubelet connection, not the pooled one...
        assert rig.dialer.pool.idle == idle_before == 1
        assert rig.edge_dials == [REAL_IPS["edge-2"]] * 2
        # ...and after it ended, nothing of it was pooled: the kubelet has only the pooled one.
        await _wait(lambda: rig.kubelets["edge-2"].open_connections == 1)
        # An upgrade on a kept-alive caller connection ends that connection afterwards.
        caller.send(
            f"edge-2:{rig.tls_port}",
            f"/portForward/default/{POD.format('edge-2')}",
            method="POST",
            extra="Connection: Upgrade\r\nUpgrade: SPDY/3.1\r\n",
        )
        head, _ = await caller.response()
        assert head.status == 101
        data = os.urandom(1000)
        caller.writer.write(data)
        assert await caller.reader.readexactly(len(data)) == data
        caller.writer.close()
    finally:
        caller.close()
    await _wait(lambda: rig.kubelets["edge-2"].open_connections == 1)
    assert rig.dialer.pool.idle == 1


async def test_idle_caller_is_closed_and_caller_close_is_honoured(rig: Rig) -> None:
    caller = await tls_caller(rig)
    try:
        assert (await caller.get(f"edge-3:{rig.tls_port}", "/healthz"))[0].status == 200
        assert await caller.closed_by_peer(timeout=4.0)  # keepalive_idle_timeout is 2 s here
    finally:
        caller.close()
    caller = await tls_caller(rig)
    try:
        caller.send(f"edge-3:{rig.tls_port}", "/healthz", extra="Connection: close\r\n")
        assert (await caller.response())[0].status == 200
        assert await caller.closed_by_peer(timeout=1.0)
    finally:
        caller.close()


async def test_closing_the_front_end_drops_callers_waiting_between_requests(rig: Rig) -> None:
    """Not after the drain timeout (1 s here): an idle kept caller loses nothing."""
    caller = await tls_caller(rig)
    try:
        for _ in range(3):  # the later ones are the lane's
            assert (await caller.get(f"edge-3:{rig.tls_port}", "/healthz"))[0].status == 200
        closing = asyncio.ensure_future(rig.https.close())
        assert await caller.closed_by_peer(timeout=0.5)
        await asyncio.wait_for(closing, 1.0)
    finally:
        caller.close()


async def test_every_kept_request_is_counted_by_outcome(rig: Rig) -> None:
    def count(outcome: str) -> float:
        labels = {"front": "https", "outcome": outcome}
        return REGISTRY.get_sample_value("ravend_l7_requests_total", labels) or 0.0

    ok, not_found = count("ok"), count("404")
    caller = await tls_caller(rig)
    try:
        for _ in range(4):
            assert (await caller.get(f"edge-2:{rig.tls_port}", "/healthz"))[0].status == 200
        assert (await caller.get(f"nowhere:{rig.tls_port}", "/healthz"))[0].status == 404
    finally:
        caller.close()
    assert (count("ok") - ok, count("404") - not_found) == (4, 1)


async def test_refusal_on_a_kept_connection_closes_it_after_earlier_requests(rig: Rig) -> None:
    caller = await tls_caller(rig)
    try:
        assert (await caller.get(f"edge-2:{rig.tls_port}", "/healthz"))[0].status == 200
        head, body = await caller.get("127.0.0.21", "/healthz")
        assert head.status == 403 and b"IP address" in body
        assert await caller.closed_by_peer(timeout=1.0)
    finally:
        caller.close()


async def test_follow_stream_on_a_kept_connection_ends_with_the_caller(rig: Rig) -> None:
    caller = await tls_caller(rig)
    kubelet = rig.kubelets["edge-2"]
    try:
        assert (await caller.get(f"edge-2:{rig.tls_port}", "/healthz"))[0].status == 200
        path = f"/containerLogs/default/{POD.format('edge-2')}/app?follow=true&tailLines=0"
        caller.send(f"edge-2:{rig.tls_port}", path)
        got = b""
        while got.count(b"line") < 3:
            got += await caller.reader.read(4096)
        assert b"Transfer-Encoding: chunked" in got
    finally:
        caller.close()
    # The follow stream's kubelet connection is dropped, never pooled.
    await _wait(lambda: kubelet.open_connections <= 1)
    await asyncio.sleep(0.2)
    assert rig.dialer.pool.idle <= 1


async def _wait(predicate: object, timeout: float = 5.0) -> None:
    assert callable(predicate)
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.01)


async def test_plain_caller_half_close_still_gets_its_response_then_the_end(rig: Rig) -> None:
    """A plain-TCP caller that sends a request and then shuts down its sending side (a
    half-close) still gets the answer (its EOF is not taken for a caller that left), and then
    the front end closes the connection."""
    caller = await KeepAliveCaller.connect(rig.http.port, None)
    try:
        host = f"edge-2:{rig.plain_port}"
        caller.send(host, "/healthz")
        caller.writer.write_eof()
        head, body = await caller.response()
        assert head.status == 200 and head.get("x-sim-node") == "edge-2" and body == b"ok"
        assert await caller.closed_by_peer()
    finally:
        caller.close()


async def test_finished_callers_are_freed_without_the_cycle_collector(rig: Rig) -> None:
    """Callers that leave (after kept tunnel requests, mid-way through a follow stream, reset
    inside a request head, or refused) are freed by reference counting alone: a cycle through
    a caller connection or a leased tunnel stream would keep TLS buffers (asyncio's 256 KiB and
    OpenSSL's) until a full collection, which a busy proxy reaches only after hundreds of MiB
    (bench/l7_soak)."""
    port = rig.tls_port
    follow_path = f"/containerLogs/default/{POD.format('edge-3')}/app?follow=true"
    gc.collect()
    gc.disable()
    try:
        for _ in range(3):
            caller = await tls_caller(rig)
            for node in ("edge-2", "edge-3", "edge-2"):
                assert (await caller.get(f"{node}:{port}", "/healthz"))[0].status == 200
            caller.close()
            follow = await tls_caller(rig)
            follow.send(f"edge-3:{port}", follow_path)
            await follow.reader.readuntil(b"\r\n\r\n")
            follow.close()
            await _reset_inside_a_head(rig.http.port)
            refused = await tls_caller(rig)
            refused.send("10.0.0.1:10250", "/healthz")  # an IP literal: 400, connection closed
            await refused.reader.read()
            refused.close()
        await _wait(lambda: rig.https.active == 0 and rig.http.active == 0)
        rig.dialer.close_idle()  # pooled streams are meant to live on: not what is checked
        await asyncio.sleep(0.2)  # the edge's and pool's callbacks of the last exchanges
        kinds = (CallerConnection, TunnelPipe)
        alive = [type(o).__name__ for o in gc.get_objects() if isinstance(o, kinds)]
    finally:
        gc.enable()
    assert alive == []


async def _reset_inside_a_head(port: int) -> None:
    """A plain caller that sends part of a request and then resets the connection (RST)."""
    _, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /healthz HTTP/1.1\r\nHo")
    await writer.drain()
    await asyncio.sleep(0.05)
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()
    await asyncio.sleep(0.05)
