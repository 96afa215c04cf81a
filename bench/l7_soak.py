"""Soak: bounded connection churn through front end -> tunnel -> edge -> fake kubelet (loopback).

For `seconds` (60 by default) per event loop, `workers` callers loop over a mix that churns
connections at every hop: a new TLS connection per GET, keep-alive connections that send a few
requests and close, `logs -f` streams the caller aborts after a few chunks, WebSocket exec and
port-forward echoes, 256 KiB /metrics, callers that vanish mid-head or right after the TLS
handshake; and every `tunnel_period` seconds the edge's tunnel client is cancelled and started
again (a tunnel reconnect under load). Requests that fail across a tunnel restart count as
"disrupted", any other failure as an error.

Each loop (the default asyncio loop, then uvloop) runs in its own child process, so an abort
inside the loop ("double free or corruption", SIGABRT) is a non-zero exit, recorded as
"survived 0", never a lost benchmark run. Around the load the child measures open fds, asyncio
tasks and RSS (after a settle time that lets idle pools close), so leaks show as growth.

`main()` returns bench records (bench/common.py); `python -m bench.l7_soak` also prints them as
JSON lines and a table. Network I/O on 127.0.0.x only.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.l7_proxy import CLIENT_USAGES, KUBELET_IP, free_port, view
from ravend.certs.tls import client_context, identity_from_peercert, server_context
from ravend.l7proxy.edge import EdgeHandler
from ravend.l7proxy.front_dial import UpstreamDialer
from ravend.l7proxy.front_framing import ResponseFramer
from ravend.l7proxy.front_pool import PoolSettings
from ravend.l7proxy.frontend import FrontEnd, FrontSettings
from ravend.l7proxy.settings import L7TunnelSettings
from ravend.l7proxy.tunnel_client import ServerAddress, TunnelClient
from ravend.l7proxy.tunnel_server import TunnelServer
from ravend.runtime import Latest
from ravend.sim.apiserver.pki import ClusterCA
from ravend.sim.kubelet import FakeKubelet, serving_context
from ravend.sim.kubelet_client import KubeletClient, fixed_resolver

SECONDS = 60.0
WORKERS = 24
TUNNEL_PERIOD = 5.0
SETTLE = 2.5
"""Seconds of quiet before measuring: idle upstreams (1 s) and callers must be gone by then."""
NODE, POD = "edge-2", "soak-pod"
METRICS_BYTES = 256 * 1024
TUNNEL = L7TunnelSettings(
    port=0,
    keepalive_interval=1.0,
    keepalive_timeout=3.0,
    reconnect_initial_delay=0.05,
    reconnect_max_delay=0.5,
    drain_timeout=1.0,
)
ROOT = Path(__file__).resolve().parent.parent


# ---- the path under test -------------------------------------------------------------------


@dataclass
class Rig:
    client: KubeletClient
    front: FrontEnd
    tunnels: TunnelServer
    kubelet: FakeKubelet
    dialer: UpstreamDialer
    start_edge: Callable[[], asyncio.Task[None]]
    epoch: int = 0
    """Bumped when a tunnel restart begins (odd) and when it is done (even): a request that
    began at an odd epoch or saw it change was disrupted by a restart, not failed by the proxy."""
    restarts: int = 0
    last_restart: float = float("-inf")
    """When the last tunnel restart completed (monotonic)."""


@contextlib.asynccontextmanager
async def rig() -> AsyncIterator[Rig]:
    ca = ClusterCA.create()
    port, plain_port = free_port(), free_port()
    front_cert, front_key = ca.issue(
        "system:node:cloud-1",
        ["system:nodes"],
        usages=["digital signature", "server auth"],
        sans=["127.0.0.1"],
    )
    server_tls = server_context(front_cert, front_key, ca.cert_pem)
    proxy_tls = client_context(None, *ca.issue("ravend-proxy-client", usages=CLIENT_USAGES))
    edge_cert = ca.issue("ravend:tunnel:edge-1", ["ravend:tunnel-clients"], usages=CLIENT_USAGES)
    edge_tls = client_context(ca.cert_pem, *edge_cert)
    caller_cert = ca.issue(
        "kube-apiserver-kubelet-client", ["system:masters"], usages=CLIENT_USAGES
    )
    latest = Latest(view(port, plain_port))

    async def pods(namespace: str, name: str) -> str | None:
        return NODE if (namespace, name) == ("default", POD) else None

    tunnels = TunnelServer(server_tls, TUNNEL, identity_of=identity_from_peercert, host="127.0.0.1")
    dialer = UpstreamDialer(lambda: proxy_tls, tunnels, pool=PoolSettings(idle_timeout=1.0))
    front = FrontEnd(
        me="cloud-1", view=latest, pods=pods, upstreams=dialer, ssl_context=server_tls,
        host="127.0.0.1", settings=FrontSettings(head_timeout=2.0, keepalive_idle_timeout=1.0),
    )  # fmt: skip
    kubelet_tls = serving_context(ca.cert_pem, ca.key_pem, NODE, [KUBELET_IP])
    kubelet = FakeKubelet(
        NODE, KUBELET_IP, kubelet_tls, port=port, read_only_port=plain_port,
        metrics_bytes=METRICS_BYTES, log_interval=0.02,
    )  # fmt: skip
    handler = EdgeHandler("edge-1", latest, lambda: proxy_tls)
    async with kubelet, tunnels, front, asyncio.TaskGroup() as tg:

        def start_edge() -> asyncio.Task[None]:
            server = ServerAddress("127.0.0.1", tunnels.port, edge_tls)
            return tg.create_task(TunnelClient([server], handler, TUNNEL).run())

        caller = client_context(ca.cert_pem, *caller_cert)
        client = KubeletClient(fixed_resolver("127.0.0.1", front.port), caller, port)
        r = Rig(client, front, tunnels, kubelet, dialer, start_edge)
        yield r


async def wait_connected(r: Rig, old: object = None, timeout: float = 10.0) -> None:
    """Until the server holds a session of edge-1 other than `old` (a dead session stays
    registered until the server reads its EOF, so "connected" alone can be the old one)."""
    async with asyncio.timeout(timeout):
        while r.tunnels.session("edge-1") in (None, old):
            await asyncio.sleep(0.01)


# ---- the operations ------------------------------------------------------------------------


async def op_get(r: Rig) -> None:
    resp = await r.client.get(NODE, "/healthz")
    _expect(resp.status == 200 and resp.node == NODE, f"healthz: HTTP {resp.status} {resp.body!r}")


async def op_keepalive(r: Rig) -> None:
    ex = await r.client.open(NODE, "GET", "/healthz")
    try:
        _expect(ex.head.status == 200, f"keep-alive first: HTTP {ex.head.status}")
        await ex.body()
        for _ in range(4):
            ex.writer.write(
                f"GET /healthz HTTP/1.1\r\nHost: {NODE}:{r.client.port}\r\n\r\n".encode()
            )
            framer = ResponseFramer("GET")
            while not framer.done:
                data = await ex.read()
                _expect(bool(data), "keep-alive connection closed mid-response")
                ex.buf += data[framer.feed(data) :]
            _expect(framer.head is not None and framer.head.status == 200, "keep-alive status")
    finally:
        ex.close()


async def op_follow_abort(r: Rig) -> None:
    path = f"/containerLogs/default/{POD}/main?follow=true"
    ex = await r.client.open(NODE, "GET", path)
    try:
        _expect(ex.head.status == 200, f"follow: HTTP {ex.head.status}")
        n = 0
        async for chunk in ex.chunks():
            _expect(chunk.startswith(NODE.encode()), "follow: foreign line")
            n += 1
            if n == 3:
                break
    finally:
        ex.writer.transport.abort()  # the caller vanishes mid-stream


async def op_ws_exec(r: Rig) -> None:
    payload = [b"soak ", os.urandom(4096)]
    path = f"/exec/default/{POD}/main?command=cat&input=1&output=1"
    stdout, status = await r.client.ws_exec_echo(NODE, path, payload)
    _expect(stdout == b"".join(payload) and b"Success" in status, "ws exec echo differs")


async def op_port_forward(r: Rig) -> None:
    data = os.urandom(64 * 1024)
    echoed = await r.client.port_forward_echo(NODE, f"/portForward/default/{POD}?port=80", data)
    _expect(echoed == data, "port-forward echo differs")


async def op_metrics(r: Rig) -> None:
    resp = await r.client.get(NODE, "/metrics")
    _expect(resp.status == 200, f"metrics: HTTP {resp.status} {resp.body[:200]!r}")
    _expect(len(resp.body) == METRICS_BYTES, f"metrics body cut at {len(resp.body)}")


async def op_vanish(r: Rig) -> None:
    """Half a request head, then gone; and a bare TLS handshake, then gone."""
    _, writer = await asyncio.open_connection(
        "127.0.0.1", r.front.port, ssl=r.client.ssl, server_hostname="127.0.0.1"
    )
    writer.write(f"GET /healthz HTTP/1.1\r\nHost: {NODE}".encode())
    await writer.drain()
    writer.transport.abort()
    _, writer = await asyncio.open_connection(
        "127.0.0.1", r.front.port, ssl=r.client.ssl, server_hostname="127.0.0.1"
    )
    writer.transport.abort()


OPS: tuple[tuple[str, Callable[[Rig], Awaitable[None]]], ...] = (
    ("get", op_get),
    ("keepalive", op_keepalive),
    ("follow", op_follow_abort),
    ("get", op_get),
    ("ws_exec", op_ws_exec),
    ("port_forward", op_port_forward),
    ("metrics", op_metrics),
    ("vanish", op_vanish),
)


class SoakError(Exception):
    pass


def _expect(ok: bool, what: str) -> None:
    if not ok:
        raise SoakError(what)


# ---- the soak ------------------------------------------------------------------------------


@dataclass
class Tally:
    ok: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    disrupted: Counter[str] = field(default_factory=Counter)
    samples: list[str] = field(default_factory=list)


async def worker(r: Rig, tally: Tally, index: int, deadline: float) -> None:
    i = index
    while time.monotonic() < deadline:
        name, op = OPS[i % len(OPS)]
        i += 1
        epoch = r.epoch
        try:
            await asyncio.wait_for(op(r), 10)
            tally.ok[name] += 1
        except Exception as exc:  # every failure is counted, none may stop the soak
            # Odd epoch: a restart was under way when the request began.
            if epoch % 2 or r.epoch != epoch:
                tally.disrupted[name] += 1
                continue
            tally.errors[name] += 1
            if len(tally.samples) < 5:
                since = time.monotonic() - r.last_restart
                text = f"{name} ({since:.1f} s after a tunnel restart): {type(exc).__name__}: {exc}"
                tally.samples.append(text[:300])


async def tunnel_churn(r: Rig, edge: list[asyncio.Task[None]], deadline: float) -> None:
    while time.monotonic() + TUNNEL_PERIOD < deadline:
        await asyncio.sleep(TUNNEL_PERIOD)
        r.epoch += 1
        old = r.tunnels.session("edge-1")
        edge[0].cancel()
        await asyncio.wait([edge[0]])
        edge[0] = r.start_edge()
        await wait_connected(r, old)
        r.restarts += 1
        r.last_restart = time.monotonic()
        r.epoch += 1


async def rss_timeline(deadline: float, every: float = 5.0) -> list[float]:
    """RSS (MiB) every `every` seconds: a leak grows steadily, warming allocators plateau."""
    out = []
    while time.monotonic() < deadline:
        out.append(round(rss_mib(), 1))
        await asyncio.sleep(min(every, max(0.0, deadline - time.monotonic())))
    return out


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def usage() -> dict[str, float]:
    gc.collect()
    fds = len(os.listdir("/proc/self/fd"))
    # Live Python allocations: back at the baseline while RSS stays up means the allocator kept
    # freed memory (high-water mark), not that objects leaked.
    blocks = sys.getallocatedblocks()
    return {"fds": fds, "tasks": len(asyncio.all_tasks()), "rss_mib": rss_mib(), "blocks": blocks}


async def soak(seconds: float, workers: int) -> dict[str, Any]:
    async with rig() as r:
        edge = [r.start_edge()]
        await wait_connected(r)
        warm = Tally()
        await asyncio.gather(*(worker(r, warm, i, time.monotonic() + 1.0) for i in range(len(OPS))))
        await asyncio.sleep(SETTLE)
        before = usage()
        tally, t0 = Tally(), time.monotonic()
        deadline = t0 + seconds
        async with asyncio.TaskGroup() as tg:
            tg.create_task(tunnel_churn(r, edge, deadline))
            rss = tg.create_task(rss_timeline(deadline))
            for i in range(workers):
                tg.create_task(worker(r, tally, i, deadline))
        wall = time.monotonic() - t0
        await asyncio.sleep(SETTLE)
        after = usage()
        leftovers = {"kubelet_open": r.kubelet.open_connections, "front_active": r.front.active}
        edge[0].cancel()
        await asyncio.wait([edge[0]])
    done = sum(tally.ok.values())
    return {
        "seconds": round(wall, 1), "workers": workers, "requests": done,
        "req_per_s": round(done / wall), "errors": sum(tally.errors.values()),
        "disrupted": sum(tally.disrupted.values()), "tunnel_restarts": r.restarts,
        "by_op": dict(tally.ok), "errors_by_op": dict(tally.errors), "samples": tally.samples,
        "before": before, "after": after, **leftovers, "rss_timeline_mib": rss.result(),
        "warmup_errors": sum(warm.errors.values()),
    }  # fmt: skip


def run_in_this_process(loop: str, seconds: float, workers: int) -> dict[str, Any]:
    if loop == "uvloop":
        import uvloop

        result: dict[str, Any] = uvloop.run(soak(seconds, workers))
    else:
        result = asyncio.run(soak(seconds, workers))
    return {"loop": loop, **result}


# ---- parent: one child per loop, records ---------------------------------------------------


async def run_child(loop: str, seconds: float, workers: int) -> dict[str, Any]:
    """The soak on `loop` in a child process; `rc`/`signal` say how it ended."""
    argv = ["-m", "bench.l7_soak", "--run-loop", loop, "--seconds", str(seconds)]
    proc = await asyncio.create_subprocess_exec(
        sys.executable, *argv, "--workers", str(workers), cwd=str(ROOT),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        out, err = await asyncio.wait_for(proc.communicate(), seconds + 90)
    except TimeoutError:
        proc.kill()
        out, err = await proc.communicate()
    rc = proc.returncode
    result: dict[str, Any] = {"loop": loop}
    for line in out.decode(errors="replace").splitlines():
        with contextlib.suppress(ValueError):
            result = {**json.loads(line), "loop": loop}
    result["rc"] = rc
    if rc != 0:
        result["stderr_tail"] = err.decode(errors="replace")[-1500:]
    return result


def records(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []

    def rec(loop: str, metric: str, value: float, unit: str = "", **extra: Any) -> None:
        out.append({"bench": "l7_soak", "metric": f"{loop} {metric}", "value": float(value),
                    "unit": unit, **extra})  # fmt: skip

    for res in results:
        loop = res["loop"]
        rec(loop, "survived", res["rc"] == 0, "", goal="= 1 (child exited 0: no abort)")
        if "requests" not in res:
            continue
        b, a = res["before"], res["after"]
        rec(loop, "requests", res["requests"], "", seconds=res["seconds"])
        rec(loop, "req/s", res["req_per_s"], "req/s")
        rec(loop, "errors", res["errors"], "", goal="= 0")
        rec(loop, "disrupted by tunnel restarts", res["disrupted"], "")
        rec(loop, "tunnel restarts", res["tunnel_restarts"], "")
        rec(loop, "open fds after", a["fds"], "", baseline=b["fds"], goal="= before")
        rec(loop, "tasks after", a["tasks"], "", baseline=b["tasks"], goal="= before")
        rec(loop, "RSS growth", a["rss_mib"] - b["rss_mib"], "MiB", baseline=b["rss_mib"])
        rec(loop, "live Python blocks after", a["blocks"], "", baseline=b["blocks"])
        rec(loop, "kubelet connections left", res["kubelet_open"], "", goal="= 0")
    return out


async def main(seconds: float = SECONDS, workers: int = WORKERS) -> list[dict[str, Any]]:
    """Soak on the default loop, then on uvloop, each in a child process."""
    results = [await run_child(loop, seconds, workers) for loop in ("asyncio", "uvloop")]
    for res in results:
        print(json.dumps({"bench": "l7_soak_detail", **res}), file=sys.stderr, flush=True)
    return records(results)


if __name__ == "__main__":
    from bench.common import emit, table

    parser = argparse.ArgumentParser(prog="python -m bench.l7_soak")
    parser.add_argument("--seconds", type=float, default=SECONDS, help="soak time per loop")
    parser.add_argument("--workers", type=int, default=WORKERS, help="concurrent callers")
    parser.add_argument("--run-loop", choices=["asyncio", "uvloop"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run_loop:  # the child: one soak, one JSON line
        print(json.dumps(run_in_this_process(args.run_loop, args.seconds, args.workers)))
        sys.exit(0)
    recs = asyncio.run(main(args.seconds, args.workers))
    emit(recs)
    print(table(recs))
