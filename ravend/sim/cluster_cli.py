"""`ravend sim up|status|down`: argument parsing and printing around SimCluster (I/O, thin).

`up` returns once the cluster runs (the API server and agents live on in their own sessions,
recorded in the run directory's state file); `status` and `down` work from that file alone, so
they also work after the process that ran `up` is gone.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from ravend.sim.cluster import DEFAULT_RUN_DIR, ClusterOptions, SimCluster, down_run_dir
from ravend.sim.netns import CommandError
from ravend.sim.netns_state import RunState, is_running
from ravend.sim.topology import Topology, TopologyError, parse_topology
from ravend.sim.topology_default import default_topology


def _run_dir_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--run-dir", type=Path, default=DEFAULT_RUN_DIR, help="state directory")


def load_topology(path: Path | None) -> Topology:
    """The topology in `path`, or the embedded default (raven-reference section 8)."""
    return default_topology() if path is None else parse_topology(path.read_text())


async def up_main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="ravend sim up")
    p.add_argument("--topology", type=Path, help="topology YAML (default: Raven's manual example)")
    _run_dir_arg(p)
    p.add_argument("--no-agents", action="store_true", help="network and API server only")
    p.add_argument("--api-port", type=int, default=6443)
    p.add_argument("--agent-arg", action="append", default=[], help="extra agent flag (repeat)")
    args = p.parse_args(argv)
    try:
        topo = load_topology(args.topology)
    except (OSError, TopologyError) as exc:
        print(f"ravend sim up: {exc}", file=sys.stderr)
        return 2
    options = ClusterOptions(
        run_dir=args.run_dir,
        agents=not args.no_agents,
        api_port=args.api_port,
        agent_args=tuple(args.agent_arg),
    )
    cluster = SimCluster(topo, options)
    try:
        elapsed = await cluster.up()
    except (OSError, RuntimeError, CommandError) as exc:
        print(f"ravend sim up: {exc}", file=sys.stderr)
        return 1
    print(format_status(cluster.state.info, _procs(cluster.state)))
    print(f"up in {elapsed:.2f} s; `ravend sim down --run-dir {args.run_dir}` removes it")
    return 0


async def status_main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="ravend sim status")
    _run_dir_arg(p)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    args = p.parse_args(argv)
    try:
        state = RunState.load(args.run_dir)
    except FileNotFoundError:
        print(f"no simulated cluster recorded in {args.run_dir}", file=sys.stderr)
        return 1
    procs = _procs(state)
    if args.json:
        print(json.dumps({**state.info, "processes": procs}, indent=2))
    else:
        print(format_status(state.info, procs))
    return 0


async def down_main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="ravend sim down")
    _run_dir_arg(p)
    args = p.parse_args(argv)
    try:
        done = await down_run_dir(args.run_dir)
    except CommandError as exc:
        print(f"ravend sim down: {exc}", file=sys.stderr)
        return 1
    print("removed the simulated cluster" if done else f"nothing recorded in {args.run_dir}")
    return 0


def _procs(state: RunState) -> dict[str, dict[str, Any]]:
    return {
        name: {"pid": r.pid, "netns": r.netns, "running": is_running(r), "log": r.log}
        for name, r in sorted(state.procs.items())
    }


def format_status(info: dict[str, Any], procs: dict[str, dict[str, Any]]) -> str:
    """A human-readable table of the run (what `status` prints without --json)."""
    api = info.get("api", {})
    lines = [
        f"run {info.get('prefix', '?')} in {info.get('run_dir', '?')}",
        f"API server: {api.get('url')} (nodes: {api.get('wan_url')}), "
        f"admin kubeconfig {api.get('kubeconfig')}",
        "regions:",
    ]
    for r in info.get("regions", []):
        nat = f"NAT via {r['public_ip']}" if r["behind_nat"] else "public"
        lines.append(f"  {r['name']:<10} {r['lan']:<18} {nat:<22} netns {r['netns']}")
    lines.append("nodes:")
    for n in info.get("nodes", []):
        agent = procs.get(f"agent:{n['name']}")
        state = "-" if agent is None else ("running" if agent["running"] else "stopped")
        lines.append(
            f"  {n['name']:<25} {n['region']:<10} {n['ip']:<15} pod {','.join(n['pod_ips']):<12}"
            f" netns {n['netns']}/{n['pod_netns']} agent {state}"
        )
    return "\n".join(lines)
