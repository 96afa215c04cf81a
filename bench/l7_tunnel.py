"""Benchmark: the L7 tunnel vs direct loopback TCP vs plain asyncio byte relays, same run.

Measures small request/response round trips (p50/p99, req/s, CPU µs per request: the whole
process, so client + path + backend; compare with `direct`), bulk MB/s with one and with 8
parallel streams, the tunnel over raw mutual-TLS TCP (what TunnelServer speaks) against the
same sessions over plain TCP and over an aiohttp WebSocket, bulk throughput with and without a
stalled stream, and memory per idle stream. The baseline to beat is `relay-tls`: a plain
asyncio byte relay behind one TLS link, i.e. the tunnel's hop without multiplexing (one TLS
connection per caller). The edge splices like EdgeHandler on the real network (tunnel_splice).
Prints one JSON line per case, then a table.
Run: `python -m bench.l7_tunnel [--loop uvloop|asyncio] [--quick]` (ravend's default loop is
asyncio; uvloop is selectable).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import sys
import tempfile
import time
import tracemalloc
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

from bench.l7_tunnel_setup import (
    Endpoints,
    Pipe,
    make_pki,
    start_backends,
    start_relay,
    tcp_pipe,
    tunnel_paths,
)

REQUEST = b"r" * 100
Opener = Callable[[], Awaitable[Pipe]]


async def round_trips(open_pipe: Opener, count: int) -> list[float]:
    pipe = await open_pipe()
    samples = []
    try:
        for _ in range(count):
            start = time.perf_counter_ns()
            await pipe.write(REQUEST)
            got = 0
            while got < len(REQUEST):
                got += len(await pipe.read())
            samples.append((time.perf_counter_ns() - start) / 1000)
    finally:
        await pipe.close()
    return samples


async def rr_case(name: str, open_pipe: Opener, conc: int, per_conn: int) -> dict[str, Any]:
    await round_trips(open_pipe, 50)  # warm up
    cpu0, wall0 = time.process_time(), time.perf_counter()
    async with asyncio.TaskGroup() as tg:
        tasks = [tg.create_task(round_trips(open_pipe, per_conn)) for _ in range(conc)]
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    samples = sorted(s for t in tasks for s in t.result())
    n = len(samples)
    return {
        "case": f"rr_c{conc}",
        "path": name,
        "requests": n,
        "p50_us": round(samples[n // 2], 1),
        "p99_us": round(samples[int(n * 0.99)], 1),
        "req_s": round(n / wall),
        "cpu_per_req_us": round(cpu / n * 1e6, 1),
    }


async def bulk_case(
    name: str, open_pipe: Opener, megabytes: int, case: str = "bulk"
) -> dict[str, Any]:
    pipe = await open_pipe()
    cpu0, wall0 = time.process_time(), time.perf_counter()
    await pipe.write(megabytes.to_bytes(8, "big"))
    got = 0
    while chunk := await pipe.read():
        got += len(chunk)
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    await pipe.close()
    assert got == megabytes << 20, (name, got)
    return {
        "case": f"{case}_{megabytes}MiB",
        "path": name,
        "mb_s": round(megabytes / wall),
        "cpu_per_gb_s": round(cpu / megabytes * 1024, 2),
    }


async def parallel_bulk(name: str, open_pipe: Opener, megabytes: int, count: int) -> dict[str, Any]:
    """`count` bulk transfers at once (one tunnel: streams share it; relay: one TLS link each)."""
    each = max(1, megabytes // count)
    cpu0, wall0 = time.process_time(), time.perf_counter()
    async with asyncio.TaskGroup() as tg:
        for _ in range(count):
            tg.create_task(bulk_case(name, open_pipe, each))
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    return {
        "case": f"bulk_x{count}_{each * count}MiB",
        "path": name,
        "mb_s": round(each * count / wall),
        "cpu_per_gb_s": round(cpu / (each * count) * 1024, 2),
    }


async def stalled_case(paths: Endpoints, megabytes: int) -> list[dict[str, Any]]:
    """Bulk through the tunnel while another stream of the same tunnel is never read."""
    without = await bulk_case(
        "tunnel-tls", paths.bulk_open["tunnel-tls"], megabytes, "bulk_no_stall"
    )
    stalled = await paths.open_stalled()
    async with asyncio.TaskGroup() as tg:
        filler = tg.create_task(stalled.write(b"s" * (64 << 20)))  # blocks after one window
        await asyncio.sleep(0.2)
        with_stall = await bulk_case(
            "tunnel-tls", paths.bulk_open["tunnel-tls"], megabytes, "bulk_with_stalled_stream"
        )
        with_stall["stalled_writer_blocked"] = not filler.done()
        await stalled.close()
        filler.cancel()
    return [without, with_stall]


async def idle_stream_memory(paths: Endpoints, count: int) -> dict[str, Any]:
    """Python heap per idle stream, both tunnel ends plus the edge handler task."""
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    pipes = [await paths.open_idle() for _ in range(count)]
    await asyncio.sleep(0.3)  # let the edge side accept them all
    gc.collect()
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    grown = sum(s.size_diff for s in after.compare_to(before, "filename"))
    for pipe in pipes:
        await pipe.close()
    return {
        "case": f"idle_streams_{count}",
        "path": "tunnel-tls",
        "per_stream_bytes": round(grown / count),
    }


def progress(row: dict[str, Any]) -> None:
    print("done:", row, file=sys.stderr, flush=True)


def table(rows: list[dict[str, Any]]) -> str:
    keys = [
        "case",
        "path",
        "p50_us",
        "p99_us",
        "req_s",
        "cpu_per_req_us",
        "mb_s",
        "cpu_per_gb_s",
        "per_stream_bytes",
    ]
    widths = [32, 12] + [14] * (len(keys) - 2)
    lines = [" | ".join(f"{k:>{w}}" for k, w in zip(keys, widths, strict=True))]
    for row in rows:
        cells = (f"{row.get(k, '')!s:>{w}}" for k, w in zip(keys, widths, strict=True))
        lines.append(" | ".join(cells))
    return "\n".join(lines)


@asynccontextmanager
async def everything(workdir: Path) -> AsyncIterator[Endpoints]:
    async with AsyncExitStack() as stack:
        server_ctx, client_ctx = make_pki(workdir)
        backends = await stack.enter_async_context(start_backends())
        relay_port = await stack.enter_async_context(start_relay(backends.echo))
        tls_relay = await stack.enter_async_context(start_relay(backends.echo, server_ctx))
        tls_source = await stack.enter_async_context(start_relay(backends.source, server_ctx))
        paths = await stack.enter_async_context(tunnel_paths(server_ctx, client_ctx, backends))
        paths.open["direct"] = lambda: tcp_pipe(backends.echo)
        paths.open["relay"] = lambda: tcp_pipe(relay_port)
        paths.open["relay-tls"] = lambda: tcp_pipe(tls_relay, client_ctx)
        paths.bulk_open["direct"] = lambda: tcp_pipe(backends.source)
        paths.bulk_open["relay"] = lambda: tcp_pipe(backends.relay_source)
        paths.bulk_open["relay-tls"] = lambda: tcp_pipe(tls_source, client_ctx)
        yield paths


async def run(quick: bool) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    per_conn, megabytes = (300, 64) if quick else (2000, 256)
    order = ["direct", "relay", "relay-tls", "tunnel-plain", "tunnel-tls", "tunnel-ws"]
    with tempfile.TemporaryDirectory() as tmp:
        async with everything(Path(tmp)) as paths:
            for conc, n in ((1, per_conn), (32, per_conn // 10)):
                for name in order:
                    rows.append(await rr_case(name, paths.open[name], conc, n))
                    progress(rows[-1])
            for name in order:
                rows.append(await bulk_case(name, paths.bulk_open[name], megabytes))
                progress(rows[-1])
            for name in ("relay-tls", "tunnel-tls"):
                rows.append(await parallel_bulk(name, paths.bulk_open[name], megabytes, 8))
                progress(rows[-1])
            rows += await stalled_case(paths, megabytes)
            progress(rows[-1])
            rows.append(await idle_stream_memory(paths, 1000))
            progress(rows[-1])
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--loop", choices=["uvloop", "asyncio"], default="uvloop")
    parser.add_argument("--quick", action="store_true", help="fewer requests, smaller bulk")
    args = parser.parse_args()
    if args.loop == "uvloop":
        import uvloop

        rows = uvloop.run(run(args.quick))
    else:
        rows = asyncio.run(run(args.quick))
    for row in rows:
        print(json.dumps({"bench": "l7_tunnel", "loop": args.loop, **row}))
    print(table(rows))


if __name__ == "__main__":
    main()
