"""Soak: bounded connection churn through front end -> tunnel -> edge -> fake kubelet (loopback).

For `seconds` (60) per event loop, `workers` callers loop over a mix that churns connections at
every hop: a new TLS connection per GET, keep-alive callers that close after a few requests,
`logs -f` streams aborted after a few chunks, WebSocket exec and port-forward echoes, 256 KiB
/metrics, callers that vanish mid-head or right after the handshake; every `TUNNEL_PERIOD` s
the tunnel is restarted, alternately by the edge (its tunnel client is cancelled and started
again) and by the cloud (it aborts the edge's session; the edge redials). Failures across a
tunnel restart count as "disrupted", any other as an error. Each loop (asyncio, then uvloop)
runs in a child process, so an abort inside the loop ("double free or corruption", SIGABRT)
is a non-zero exit, recorded as "survived 0". Open fds, tasks, live Python blocks and RSS are
measured before and after the load (after a settle time that lets idle pools close), so leaks
show as growth.
Errors reported to the loop's exception handler (a callback that raised) are counted too.
`main()` returns bench records (bench/common.py); `python -m bench.l7_soak` also prints them as
JSON lines and a table. Network I/O on 127.0.0.x only.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import gc
import json
import os
import ssl
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.common import fmt
from bench.l7_proxy_procs import CLIENT_USAGES, KUBELET_IP, free_port, view
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

SECONDS, WORKERS, TUNNEL_PERIOD = 60.0, 24, 5.0
SETTLE = 2.5
"""Seconds of quiet before measuring: idle upstreams (1 s) and callers must be gone by then."""
NODE, POD = "edge-2", "soak-pod"
METRICS_BYTES = 256 * 1024
TUNNEL = L7TunnelSettings(
    port=0, keepalive_interval=1.0, keepalive_timeout=3.0, reconnect_initial_delay=0.05,
    reconnect_max_delay=0.5, drain_timeout=1.0,
)  # fmt: skip
ROOT, LOCAL = Path(__file__).resolve().parent.parent, "127.0.0.1"
SERVER = ["digital signature", "server auth"]


@dataclass
class Rig:
    client: KubeletClient
    front: FrontEnd
    tunnels: TunnelServer
    kubelet: FakeKubelet
    start_edge: Callable[[], asyncio.Task[None]]
    epoch: int = 0
    """Bumped when a tunnel restart begins (odd) and when it is done (even): a request that
    began at an odd epoch or saw it change was disrupted by a restart, not failed by the proxy."""
    restarts: int = 0
    last_restart: float = float("-inf")  # monotonic end of the last restart


def contexts(ca: ClusterCA) -> dict[str, ssl.SSLContext]:
    """front (server), proxy (to kubelets), edge (tunnel client), caller (the apiserver)."""
    front = ca.issue("system:node:cloud-1", ["system:nodes"], usages=SERVER, sans=["127.0.0.1"])
    edge = ca.issue("ravend:tunnel:edge-1", ["ravend:tunnel-clients"], usages=CLIENT_USAGES)
    caller = ca.issue("kube-apiserver-kubelet-client", ["system:masters"], usages=CLIENT_USAGES)
    return {
        "front": server_context(*front, ca.cert_pem),
        "proxy": client_context(None, *ca.issue("ravend-proxy-client", usages=CLIENT_USAGES)),
        "edge": client_context(ca.cert_pem, *edge),
        "caller": client_context(ca.cert_pem, *caller),
    }


@contextlib.asynccontextmanager
async def rig() -> AsyncIterator[Rig]:
    ca = ClusterCA.create()
    tls = contexts(ca)
    port, plain_port = free_port(), free_port()
    latest = Latest(view(port, plain_port))

    async def pods(namespace: str, name: str) -> str | None:
        return NODE if (namespace, name) == ("default", POD) else None

    tunnels = TunnelServer(tls["front"], TUNNEL, identity_of=identity_from_peercert, host=LOCAL)
    dialer = UpstreamDialer(lambda: tls["proxy"], tunnels, pool=PoolSettings(idle_timeout=1.0))
    front = FrontEnd(
        me="cloud-1", view=latest, pods=pods, upstreams=dialer, ssl_context=tls["front"],
        host=LOCAL, settings=FrontSettings(head_timeout=2.0, keepalive_idle_timeout=1.0),
    )  # fmt: skip
    kubelet = FakeKubelet(
        NODE, KUBELET_IP, serving_context(ca.cert_pem, ca.key_pem, NODE, [KUBELET_IP]),
        port=port, read_only_port=plain_port, metrics_bytes=METRICS_BYTES, log_interval=0.02,
    )  # fmt: skip
    handler = EdgeHandler("edge-1", latest, lambda: tls["proxy"])
    async with kubelet, tunnels, front, asyncio.TaskGroup() as tg:

        def start_edge() -> asyncio.Task[None]:
            server = ServerAddress(LOCAL, tunnels.port, tls["edge"])
            return tg.create_task(TunnelClient([server], handler, TUNNEL).run())

        client = KubeletClient(fixed_resolver(LOCAL, front.port), tls["caller"], port)
        yield Rig(client, front, tunnels, kubelet, start_edge)


async def wait_connected(r: Rig, old: object = None, timeout: float = 10.0) -> None:
    """Until the server holds a session of edge-1 other than `old` (a dead session stays
    registered until the server reads its EOF, so "connected" alone can be the old one)."""
    async with asyncio.timeout(timeout):
        while r.tunnels.session("edge-1") in (None, old):
            await asyncio.sleep(0.01)


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
        lines = ex.chunks()
        for _ in range(3):
            _expect((await anext(lines)).startswith(NODE.encode()), "follow: foreign line")
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
    for head in (f"GET /healthz HTTP/1.1\r\nHost: {NODE}".encode(), b""):
        _, w = await asyncio.open_connection(LOCAL, r.front.port, ssl=r.client.ssl)
        w.write(head)
        await w.drain()
        w.transport.abort()


OPS: tuple[tuple[str, Callable[[Rig], Awaitable[None]]], ...] = (
    ("get", op_get), ("keepalive", op_keepalive), ("follow", op_follow_abort), ("get", op_get),
    ("ws_exec", op_ws_exec), ("port_forward", op_port_forward), ("metrics", op_metrics),
    ("vanish", op_vanish),
)  # fmt: skip


class SoakError(Exception):
    """A response that is not what the fake kubelet sends."""


def _expect(ok: bool, what: str) -> None:
    if not ok:
        raise SoakError(what)


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
        if r.restarts % 2 and old is not None:
            old.abort("soak: the cloud drops the tunnel")  # as the edge sees a cloud restart
        else:
            edge[0].cancel()  # the edge's tunnel client restarts
            await asyncio.wait([edge[0]])
            edge[0] = r.start_edge()
        await wait_connected(r, old)
        r.restarts += 1
        r.last_restart = time.monotonic()
        r.epoch += 1


async def rss_timeline(deadline: float, every: float = 5.0) -> list[tuple[float, float]]:
    """(RSS, malloc in use) in MiB every `every` seconds, without collecting: a leak grows
    steadily; garbage in reference cycles saws up until a full gc; allocators plateau."""
    out = []
    while time.monotonic() < deadline:
        out.append((round(rss_mib(), 1), round(heap_mib(), 1)))
        await asyncio.sleep(min(every, max(0.0, deadline - time.monotonic())))
    return out


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


class _MallInfo2(ctypes.Structure):
    _FIELDS = ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
               "fordblks", "keepcost")  # fmt: skip
    _fields_ = [(name, ctypes.c_size_t) for name in _FIELDS]


def heap_mib() -> float:
    """What malloc has handed out and not got back (glibc's mallinfo2; NaN elsewhere), MiB:
    live memory of Python and C alike (OpenSSL's buffers too, which Python cannot count)."""
    try:
        mallinfo2 = ctypes.CDLL(None).mallinfo2
    except (OSError, AttributeError):
        return float("nan")
    mallinfo2.restype = _MallInfo2
    info = mallinfo2()
    return float(info.uordblks + info.hblkhd) / (1 << 20)


def usage() -> dict[str, float]:
    gc.collect()
    fds = len(os.listdir("/proc/self/fd"))
    # Live allocations (Python blocks; malloc's in-use bytes) back at the baseline while RSS
    # stays up means the allocator kept freed memory (high-water mark), not a leak.
    blocks = sys.getallocatedblocks()
    return {
        "fds": fds, "tasks": len(asyncio.all_tasks()), "rss_mib": rss_mib(), "blocks": blocks,
        "heap_mib": heap_mib(),
    }  # fmt: skip


def watch_loop_errors() -> list[str]:
    """Record what the running loop's exception handler is told (a callback or protocol that
    raised, a task exception nobody retrieved), then log it as the default handler does. Each
    one is a bug even when every request succeeded: a transport callback that raised was once
    counted only as "disrupted" here, as it happened during tunnel restarts."""
    loop = asyncio.get_running_loop()
    seen: list[str] = []

    def handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        seen.append(f"{context.get('message', '')}: {exc!r}"[:300])
        loop.default_exception_handler(context)

    loop.set_exception_handler(handler)
    return seen


async def soak(seconds: float, workers: int) -> dict[str, Any]:
    loop_errors = watch_loop_errors()
    async with rig() as r:
        edge = [r.start_edge()]
        await wait_connected(r)
        warm = Tally()
        await asyncio.gather(*(worker(r, warm, i, time.monotonic() + 1.0) for i in range(len(OPS))))
        await asyncio.sleep(SETTLE)
        r.kubelet.requests.clear()  # the fake kubelet logs every request: not the proxy's memory
        before = usage()
        gcs = gc.get_stats()[2]["collections"]
        tally, t0 = Tally(), time.monotonic()
        deadline = t0 + seconds
        async with asyncio.TaskGroup() as tg:
            tg.create_task(tunnel_churn(r, edge, deadline))
            rss = tg.create_task(rss_timeline(deadline))
            for i in range(workers):
                tg.create_task(worker(r, tally, i, deadline))
        wall = time.monotonic() - t0
        await asyncio.sleep(SETTLE)
        r.kubelet.requests.clear()
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
        "before": before, "after": after, **leftovers, "rss_heap_timeline_mib": rss.result(),
        "full_gcs": gc.get_stats()[2]["collections"] - gcs,
        "warmup_errors": sum(warm.errors.values()),
        "loop_errors": len(loop_errors), "loop_error_samples": loop_errors[:5],
    }  # fmt: skip


def run_in_this_process(loop: str, seconds: float, workers: int) -> dict[str, Any]:
    if loop == "uvloop":
        import uvloop

        return {"loop": loop, **uvloop.run(soak(seconds, workers))}
    return {"loop": loop, **asyncio.run(soak(seconds, workers))}


async def run_child(loop: str, seconds: float, workers: int) -> dict[str, Any]:
    """The soak on `loop` in a child process; `rc` < 0 means killed by that signal (-6: abort,
    -9: killed here after the time limit)."""
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
    for res in results:
        b, a = res.get("before", {}), res.get("after", {})
        rows: list[tuple[str, float, str, dict[str, Any]]] = [
            ("survived", res["rc"] == 0, "", {"goal": "= 1 (child exited 0: no abort)"})
        ]
        if "requests" in res:
            rows += [
                ("requests", res["requests"], "", {"seconds": res["seconds"]}),
                ("req/s", res["req_per_s"], "req/s", {}),
                ("errors", res["errors"], "", {"goal": "= 0"}),
                ("errors reported to the loop", res["loop_errors"], "", {"goal": "= 0"}),
                ("disrupted by tunnel restarts", res["disrupted"], "", {}),
                ("tunnel restarts", res["tunnel_restarts"], "", {}),
                ("open fds after", a["fds"], "", {"baseline": b["fds"], "goal": "= before"}),
                ("tasks after", a["tasks"], "", {"baseline": b["tasks"], "goal": "= before"}),
                ("RSS growth", a["rss_mib"] - b["rss_mib"], "MiB", {"baseline": b["rss_mib"]}),
                ("RSS peak", max(r for r, _ in res["rss_heap_timeline_mib"]), "MiB", {}),
                ("malloc in use after", a["heap_mib"], "MiB", {"baseline": b["heap_mib"]}),
                ("malloc in use peak", max(h for _, h in res["rss_heap_timeline_mib"]), "MiB", {}),
                ("live Python blocks after", a["blocks"], "", {"baseline": b["blocks"]}),
                ("kubelet connections left", res["kubelet_open"], "", {"goal": "= 0"}),
            ]
        out += [
            {"bench": "l7_soak", "metric": f"{res['loop']} {m}", "value": float(v), "unit": u, **x}
            for m, v, u, x in rows
        ]
    return out


async def main(seconds: float = SECONDS, workers: int = WORKERS) -> list[dict[str, Any]]:
    """Soak on the default loop, then on uvloop, each in a child process."""
    results = [await run_child(loop, seconds, workers) for loop in ("asyncio", "uvloop")]
    recs = records(results)
    for res in results:
        # One human line per loop (not JSON: `python -m bench` keeps it out of the records).
        mine = [r for r in recs if r["metric"].startswith(res["loop"] + " ")]
        figures = ", ".join(
            f"{r['metric'].split(' ', 1)[1]} {fmt(r['value'])}"
            + (f" (before {fmt(r['baseline'])})" if "baseline" in r else "")
            for r in mine
        )
        print(f"{res['loop']}: {figures} {res.get('stderr_tail', '')[-300:]}", flush=True)
        print(json.dumps({"bench": "l7_soak_detail", **res}), file=sys.stderr, flush=True)
    return recs


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
