"""The open-loop (paced) case of bench/l7_proxy.py: latency at a fixed offered load. Loopback I/O.

The closed-loop cases (32 workers sending back to back) saturate a 2-core machine, so their
latency is 32 / throughput: queueing, not the path. Here `CONNS` keep-alive connections are
dialled and warmed (one request each) before the clock starts; then request i is due at
t0 + i / rate, goes out on the next free connection (waiting for one when all are busy), and
its latency runs from its due time, not from when it went out: a path that falls behind shows
its queue instead of hiding it (no coordinated omission). Figures per path and rate: achieved
rate, p50, p99, p99.9, CPU per request, the caller's own send lag, and re-dials (0 expected).

The caller's timer matters at this scale: epoll rounds every timeout up to the next millisecond
(measured here: asyncio.sleep late by ~0.6 ms median, ~1.2 ms p99), which would add that to
every path. `caller_loop` is a select()-based loop (microsecond timeouts, ~0.1 ms late); the
lag that remains is reported as `lag_p99_us` and weighs on every path alike (direct included).
"""

from __future__ import annotations

import asyncio
import selectors
import ssl
import statistics
from typing import Any

from bench.l7_proxy_caller import KeptConnection, Meter, PathSpec, cpu_fields

CONNS = 32
"""Keep-alive connections (issue 5: "p99 < 2 ms at 32 connections")."""
RATES = (500, 1500)
"""Offered loads, req/s: well below every path's closed-loop throughput, then nearer to it."""
WARM_TIMEOUT = 15.0
"""Seconds for dialling and warming every connection; a path that cannot is an error naming it."""
GOAL_P99_US = 2000.0


def caller_loop() -> asyncio.AbstractEventLoop:
    """The caller's event loop: select() keeps timer wake-ups within ~0.1 ms (see above)."""
    return asyncio.SelectorEventLoop(selectors.SelectSelector())


async def warm(path: PathSpec, conns: list[KeptConnection]) -> None:
    """Dial every connection, then one request on each, all before the clock starts."""
    try:
        async with asyncio.timeout(WARM_TIMEOUT):
            await asyncio.gather(*(c.connect() for c in conns))
            statuses = await asyncio.gather(*(c.get() for c in conns))
    except TimeoutError:
        raise RuntimeError(f"{path.name}: warming {len(conns)} connections timed out") from None
    assert set(statuses) == {200}, statuses


async def paced_case(
    path: PathSpec, conns: list[KeptConnection], rate: int, seconds: float
) -> dict[str, Any]:
    """`rate` req/s for `seconds` over the (warm) `conns`; latency from each due time."""
    loop = asyncio.get_running_loop()
    due_times: asyncio.Queue[float | None] = asyncio.Queue()
    latencies: list[float] = []
    lags: list[float] = []
    dialled = sum(c.connects for c in conns)

    async def connection(conn: KeptConnection) -> None:
        # One worker per connection: whichever is free takes the next due request.
        while (due := await due_times.get()) is not None:
            assert await conn.get() == 200
            latencies.append(loop.time() - due)

    n = int(rate * seconds)
    with Meter(path) as meter:
        t0 = loop.time() + 0.01
        async with asyncio.TaskGroup() as tg:
            for conn in conns:
                tg.create_task(connection(conn))
            for i in range(n):
                due = t0 + i / rate
                if (delay := due - loop.time()) > 0:
                    await asyncio.sleep(delay)
                lags.append(loop.time() - due)  # the caller's own lateness, not queueing
                due_times.put_nowait(due)
            for _ in conns:
                due_times.put_nowait(None)
        wall = loop.time() - t0
        used, each = meter.used(), meter.each()
    return _row(path, rate, latencies, lags, wall=wall, used=used, each=each) | {
        "redials": sum(c.connects for c in conns) - dialled
    }


def _row(
    path: PathSpec,
    rate: int,
    latencies: list[float],
    lags: list[float],
    *,
    wall: float,
    used: tuple[float, float, float],
    each: tuple[float, ...],
) -> dict[str, Any]:
    q = statistics.quantiles(latencies, n=1000, method="inclusive")
    lag = statistics.quantiles(lags, n=100, method="inclusive")
    return {
        "path": path.name,
        "case": f"paced c{CONNS} {rate}/s",
        "requests": len(latencies),
        "req_per_s": round(len(latencies) / wall),
        "p50_us": round(q[499] * 1e6),
        "p99_us": round(q[989] * 1e6),
        "p999_us": round(q[998] * 1e6),
        "lag_p99_us": round(lag[98] * 1e6),
        **cpu_fields(used, len(latencies), each),
    }


async def measure_paced(
    path: PathSpec, tls: ssl.SSLContext | None, port: int, seconds: float
) -> list[dict[str, Any]]:
    """Every rate on one path, over one set of warm connections (fresh for each round)."""
    conns = [KeptConnection(path.address, tls, port) for _ in range(CONNS)]
    try:
        await warm(path, conns)
        rows = []
        for rate in RATES:
            rows.append(await paced_case(path, conns, rate, seconds))
            await asyncio.sleep(0.2)  # let the previous rate's tail drain
        return rows
    finally:
        for conn in conns:
            conn.close()


FIELDS = (
    ("req_per_s", "req/s", True),
    ("p50_us", "µs", False),
    ("p99_us", "µs", False),
    ("p999_us", "µs", False),
    ("cpu_us_per_req", "µs", False),
    ("proxy_cpu_us_per_req", "µs", False),
)
"""(row field, unit, higher is better)."""


def _direct_of(path: str) -> str:
    for name in ("ravend-asyncio", "ravend", "relay", "floor-asyncio", "floor", "ssh"):
        path = path.replace(name, "direct")
    return path


def paced_records(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every figure of every path; ravend's against ssh of the same case and rate (goal: better
    on every figure); its p99 against 2 ms and against direct's p99 (the floor this caller and
    kubelet allow; no goal)."""
    paced = [r for r in rows if str(r.get("case", "")).startswith("paced")]
    by_case = {(r["path"], r["case"]): r for r in paced}
    out: list[dict[str, Any]] = []
    for row in paced:
        path, case = row["path"], row["case"]
        ours = path.startswith("ravend")
        ssh = by_case.get((path.replace("-asyncio", "").replace("ravend", "ssh"), case), {})
        direct = by_case.get((_direct_of(path), case), {})
        for key, unit, higher in FIELDS:
            rec: dict[str, Any] = {"bench": "l7_proxy", "metric": f"{path} {case} {key}"}
            rec.update(value=float(row[key]), unit=unit)
            if ours and ssh.get(key):
                rec.update(baseline=float(ssh[key]), goal=f"{'>' if higher else '<'} ssh -R")
            if ours and key == "p99_us":
                rec["goal"] = f"< {GOAL_P99_US:.0f} µs" + (" and < ssh -R" if ssh else "")
            out.append(rec)
        if path != direct.get("path") and direct.get("p99_us"):
            floor: dict[str, Any] = {
                "bench": "l7_proxy",
                "metric": f"{path} {case} p99_us vs direct",
            }
            floor.update(value=float(row["p99_us"]), unit="µs", baseline=float(direct["p99_us"]))
            out.append(floor)
    for rec in out:
        if rec.get("baseline"):
            rec["ratio"] = rec["value"] / rec["baseline"]
    return out
