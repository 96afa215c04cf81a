"""`ravectl` argument parsing, dispatch and exit codes (I/O, thin).

Exit codes, for scripts: 0 ok, 1 a check failed (diagnose) or the agent view is incomplete
(never for status), 2 usage error, 3 the cluster or simulated cluster cannot be reached.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from ravend.ctl.checks import check_cluster, run_node_checks, worst
from ravend.ctl.collect import collect_cluster, collect_node, fetch_states, fetch_view
from ravend.ctl.facts import CheckResult, Status
from ravend.ctl.output import dumps, section, table
from ravend.ctl.status import build_status, render_status
from ravend.ctl.target import KubeTarget, SimTarget, Target, TargetError
from ravend.kube import errors
from ravend.settings import DEFAULT_OBSERVE_PORT, DEFAULT_STATE_DIR

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_UNREACHABLE = 0, 1, 2, 3
SIM_RUN_DIR = Path("/run/ravend-sim")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ravectl", description="Inspect and debug ravend.")
    p.add_argument("--kubeconfig", type=Path, help="kubeconfig (default $KUBECONFIG/in-cluster)")
    p.add_argument("--sim", action="store_true", help="use the simulated cluster (ravend sim)")
    p.add_argument("--run-dir", type=Path, default=SIM_RUN_DIR, help="simulated cluster state")
    p.add_argument(
        "--agent-token", help="bearer token for agents' /debug/state (env RAVECTL_AGENT_TOKEN)"
    )
    p.add_argument(
        "--on-node", help="the node ravectl runs on (env NODE_NAME): node-local checks run here"
    )
    p.add_argument("--observe-port", type=int, default=DEFAULT_OBSERVE_PORT)
    p.add_argument("--state-dir", type=Path, default=DEFAULT_STATE_DIR)
    p.add_argument("-o", "--output", choices=["table", "json"], default="table")
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("status", help="Gateways, node roles, tunnel links, L7 edges")
    d = sub.add_parser("diagnose", help="check a node (or every node) end to end")
    d.add_argument("node", nargs="?", help="node name (default: every node)")
    return p


def make_target(args: argparse.Namespace) -> Target:
    if args.sim:
        return SimTarget(args.run_dir, args.observe_port)
    return KubeTarget(
        args.kubeconfig,
        args.agent_token or os.environ.get("RAVECTL_AGENT_TOKEN"),
        args.on_node or os.environ.get("NODE_NAME"),
        args.observe_port,
        args.state_dir,
    )


async def status_cmd(target: Target, output: str) -> int:
    client = await target.client()
    view = await fetch_view(client)
    states = await fetch_states(target, view, sorted(view.nodes))
    report = build_status(view, states)
    print(dumps(report) if output == "json" else render_status(report))
    return EXIT_OK


async def diagnose_cmd(target: Target, node: str | None, output: str) -> int:
    client = await target.client()
    cluster = await collect_cluster(client)
    if not cluster.api_ok:
        results = check_cluster(cluster)
        print(
            dumps({"status": "fail", "results": results})
            if output == "json"
            else render_results(results)
        )
        return EXIT_UNREACHABLE
    view = await fetch_view(client)
    if node is not None and node not in view.nodes:
        print(f"ravectl: no node {node!r} in the cluster", file=sys.stderr)
        return EXIT_USAGE
    names = [node] if node else sorted(view.nodes)
    facts = await asyncio.gather(*(collect_node(target, view, n) for n in names))
    results = check_cluster(cluster) + [r for f in facts for r in run_node_checks(f)]
    overall = worst(results)
    if output == "json":
        print(dumps({"status": overall.value, "results": results}))
    else:
        print(render_results(results))
    return EXIT_FAILED if overall == Status.FAIL else EXIT_OK


def render_results(results: Sequence[CheckResult]) -> str:
    rows = [(r.node or "(cluster)", r.check, r.status.value, r.detail) for r in results]
    out = [table(["node", "check", "status", "detail"], rows)]
    todo = [r for r in results if r.status in (Status.FAIL, Status.WARN) and r.fix]
    if todo:
        lines = "\n".join(f"  {r.node or '(cluster)'} {r.check}: {r.fix}" for r in todo)
        out.append("\n" + section("WHAT TO DO", lines))
    counts = {s: sum(r.status == s for r in results) for s in Status}
    out.append(", ".join(f"{n} {s.value}" for s, n in counts.items()) + f": {worst(results)}")
    return "\n".join(out)


async def run(args: argparse.Namespace) -> int:
    try:
        target = make_target(args)
    except TargetError as exc:
        print(f"ravectl: {exc}", file=sys.stderr)
        return EXIT_UNREACHABLE
    try:
        if args.command == "status":
            return await status_cmd(target, args.output)
        return await diagnose_cmd(target, args.node, args.output)
    except (TargetError, errors.KubeError) as exc:
        print(f"ravectl: cannot reach the cluster ({target.name}): {exc}", file=sys.stderr)
        return EXIT_UNREACHABLE
    finally:
        await target.close()


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    except SystemExit as exc:
        return EXIT_USAGE if exc.code else EXIT_OK
    return asyncio.run(run(args))
