"""`python -m bench` (`make bench`): run every benchmark, write bench/results.json, one table.

Each module `bench/<name>.py` with a top-level `main` runs in its own child process (a crash or a
hang costs one module, never the run): a `main()` without required parameters is called by
`python -m bench --child NAME` (its returned records are printed as JSON lines), a `main` that
needs arguments runs as `python -m bench.NAME` (its `__main__` block supplies them). Modules
without `main` are helpers and are skipped. Before starting, the machine's load is checked and
reported: figures from a busy machine are flagged in results.json.
"""

from __future__ import annotations

import argparse
import ast
import asyncio
import importlib
import inspect
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from bench.common import Record, emit, parse_output, table

BENCH_DIR = Path(__file__).parent
NOT_BENCHMARKS = frozenset({"__init__", "__main__", "common"})
IDLE_LOAD_PER_CPU = 0.5


def discover(names: list[str] | None = None) -> dict[str, str]:
    """Module name -> how to run it ("call", "module") for every bench module with `main`."""
    found: dict[str, str] = {}
    for path in sorted(BENCH_DIR.glob("*.py")):
        name = path.stem
        if name in NOT_BENCHMARKS or (names and name not in names):
            continue
        tree = ast.parse(path.read_text())
        mains = [
            n
            for n in tree.body
            if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef) and n.name == "main"
        ]
        if not mains:
            continue
        args = mains[0].args
        required = len(args.args) - len(args.defaults) + sum(d is None for d in args.kw_defaults)
        found[name] = "module" if required else "call"
    return found


def module_timeout(name: str) -> float:
    """A module's own budget: its top-level `TIMEOUT_S = <seconds>`, else 0."""
    tree = ast.parse((BENCH_DIR / f"{name}.py").read_text())
    for node in tree.body:
        target: ast.expr | None = node.target if isinstance(node, ast.AnnAssign) else None
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target = node.targets[0]
        value = getattr(node, "value", None)
        named = isinstance(target, ast.Name) and target.id == "TIMEOUT_S"
        if named and isinstance(value, ast.Constant) and isinstance(value.value, int | float):
            return float(value.value)
    return 0.0


def machine() -> dict[str, Any]:
    load1, load5, _ = os.getloadavg()
    cpus = os.cpu_count() or 1
    return {
        "cpus": cpus,
        "loadavg_1m": round(load1, 2),
        "loadavg_5m": round(load5, 2),
        "idle": load1 < IDLE_LOAD_PER_CPU * cpus,
    }


async def run_one(name: str, how: str, timeout: float) -> tuple[dict[str, Any], list[Record]]:
    argv = ["-m", "bench", "--child", name] if how == "call" else ["-m", f"bench.{name}"]
    start = time.monotonic()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        *argv,
        cwd=str(BENCH_DIR.parent),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
        rc: int | None = proc.returncode
    except TimeoutError:
        proc.kill()
        out, err = await proc.communicate()
        rc = None
    text = out.decode(errors="replace")
    info: dict[str, Any] = {"rc": rc, "seconds": round(time.monotonic() - start, 1)}
    if rc != 0:
        info["error"] = "timed out" if rc is None else err.decode(errors="replace")[-2000:]
    info["output"] = text[-4000:]
    return info, parse_output(text)


def child(name: str) -> int:
    """Import bench.NAME, call its main(), print returned records as JSON lines."""
    sys.argv = [f"bench.{name}"]  # modules with argparse see no arguments
    module = importlib.import_module(f"bench.{name}")
    result = module.main()
    if inspect.isawaitable(result):
        result = asyncio.run(_await(result))
    if isinstance(result, list):
        emit(r for r in result if isinstance(r, dict))
    return 0


async def _await(awaitable: Any) -> Any:
    return await awaitable


async def run_all(args: argparse.Namespace) -> int:
    state = machine()
    busy = "" if state["idle"] else " -- NOT IDLE: figures may be skewed, rerun when quiet"
    print(f"machine: {state['cpus']} CPUs, load {state['loadavg_1m']} (1 min){busy}", flush=True)
    modules = discover(args.only)
    started, info, records = time.time(), {}, []
    for name, how in modules.items():
        print(f"running bench.{name} ...", flush=True)
        info[name], recs = await run_one(name, how, max(args.timeout, module_timeout(name)))
        records += recs
        status = "ok" if info[name]["rc"] == 0 else f"FAILED ({info[name].get('error', '')[-200:]})"
        print(f"  {len(recs)} figures in {info[name]['seconds']} s: {status}", flush=True)
    doc = {
        "started": started,
        "duration_s": round(time.time() - started, 1),
        "machine": state,
        "modules": info,
        "records": records,
    }
    args.out.write_text(json.dumps(doc, indent=2))
    print("\n" + table(records))
    print(f"\nwrote {args.out} ({len(records)} figures from {len(modules)} benchmarks)")
    return 0 if all(i["rc"] == 0 for i in info.values()) else 1


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    p.add_argument("--only", nargs="*", help="run only these modules (names without .py)")
    p.add_argument(
        "--timeout",
        type=float,
        default=420.0,
        help="seconds per benchmark (a module's own TIMEOUT_S may allow more)",
    )
    p.add_argument("--out", type=Path, default=BENCH_DIR / "results.json")
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    args = p.parse_args(argv)
    if args.child:
        return child(args.child)
    if args.list:
        for name, how in discover(args.only).items():
            print(f"{name}\t({'main()' if how == 'call' else 'python -m bench.' + name})")
        return 0
    return asyncio.run(run_all(args))


if __name__ == "__main__":
    sys.exit(main())
