"""`ravend sim demo`: the whole product in one command on the simulated cluster (I/O).

Brings up the default topology (Raven's manual example) with one agent per node, shows progress
while it converges, runs the checks of `demo_checks`/`demo_failover` and prints one summary
(`demo_report`). Then it leaves the cluster running with instructions, or with `--once` (or
CI=true) tears it down and exits 1 if any check failed. Bring-up failures always tear down.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

from ravend.ctl.collect import fetch_view, parse_wg_dump
from ravend.ctl.facts import WG_LINK
from ravend.ctl.target import SimTarget
from ravend.kube.client import KubeClient
from ravend.model import ClusterView, EndpointType
from ravend.sim.cluster import DEFAULT_RUN_DIR, ClusterOptions, SimCluster
from ravend.sim.cluster_cli import load_topology
from ravend.sim.demo_checks import (
    check_gateways,
    check_l7,
    check_members,
    check_pod_matrix,
    check_tunnels,
)
from ravend.sim.demo_failover import check_failover
from ravend.sim.demo_report import CheckRecord, all_passed, render_summary
from ravend.sim.topology import TopologyError

FAILOVER_GATEWAY = "gw-hangzhou"
Say = Callable[[str], None]


def parse_args(argv: list[str], env: dict[str, str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="ravend sim demo")
    p.add_argument("--once", action="store_true", help="tear down at the end (default with CI)")
    p.add_argument("--topology", type=Path, help="topology YAML (default: Raven's manual)")
    p.add_argument("--run-dir", type=Path, default=DEFAULT_RUN_DIR)
    p.add_argument("--timeout", type=float, default=120.0, help="seconds to wait to converge")
    p.add_argument("--failover-gateway", default=FAILOVER_GATEWAY)
    args = p.parse_args(argv)
    args.once = args.once or env.get("CI", "").lower() in ("1", "true", "yes")
    return args


def _say(text: str) -> None:
    print(text, flush=True)


async def demo_main(argv: list[str]) -> int:
    args = parse_args(list(argv), dict(os.environ))
    try:
        topo = load_topology(args.topology)
    except (OSError, TopologyError) as exc:
        print(f"ravend sim demo: {exc}", file=sys.stderr)
        return 2
    sim = SimCluster(topo, ClusterOptions(run_dir=args.run_dir))
    _say(f"bringing up {len(topo.regions)} regions, {len(topo.nodes)} nodes ({sim.prefix}) ...")
    try:
        elapsed = await sim.up()
    except Exception as exc:  # up() already removed what it built
        print(f"ravend sim demo: bring-up failed: {exc}", file=sys.stderr)
        return 1
    _say(f"network, API server and agents started in {elapsed:.1f} s")
    keep = False
    try:
        records = await run_demo(sim, args.timeout, args.failover_gateway, _say)
        ok = all_passed(records)
        keep = not args.once
        return 0 if ok else 1
    finally:
        if keep:
            _say(instructions(sim))
        else:
            _say("tearing down the simulated cluster ...")
            await sim.down()


async def run_demo(
    sim: SimCluster, timeout: float, failover_gw: str, say: Say
) -> list[CheckRecord]:
    """Converge, check, print the summary; returns the records."""
    target = SimTarget(sim.run_dir)
    try:
        client = await target.client()
        view = await converge(sim, target, client, timeout, say)
        say("running checks ...")
        records = check_gateways(view)
        records += await check_tunnels(sim, view)
        records += await check_pod_matrix(sim)
        records += await check_members(sim, view)
        records += await check_l7(sim, view, client)
        say("live failover: cutting the active tunnel gateway of " + failover_gw + " ...")
        records += await check_failover(sim, client, await fetch_view(client), failover_gw)
    finally:
        await target.close()
    labels = {n.name: f"{n.region}/{n.name[-3:]}" for n in sim.topology.nodes}
    say("")
    say(render_summary(records, labels))
    return records


async def converge(
    sim: SimCluster, target: SimTarget, client: KubeClient, timeout: float, say: Say
) -> ClusterView:
    """Poll until agents are ready, Gateways elected and tunnels handshaken (or timeout)."""
    start = time.monotonic()
    last = ""
    while True:
        view = await fetch_view(client)
        agents = await _agents_ready(target, [n.name for n in sim.topology.nodes])
        elected = sum(r.ok for r in check_gateways(view))
        tunnels, want = await _tunnels_up(sim, view)
        line = (
            f"agents ready {agents}/{len(sim.topology.nodes)} | gateways elected "
            f"{elected}/{len(view.gateways)} | tunnels up {tunnels}/{want}"
        )
        waited = time.monotonic() - start
        if line != last:
            say(f"[{waited:5.1f} s] {line}")
            last = line
        done = agents == len(sim.topology.nodes) and elected == len(view.gateways)
        if done and want and tunnels == want:
            say(f"converged in {waited:.1f} s")
            return view
        if waited > timeout:
            say(f"not converged after {timeout:.0f} s: checking anyway")
            return view
        await asyncio.sleep(0.5)


async def _agents_ready(target: SimTarget, nodes: list[str]) -> int:
    states = await asyncio.gather(*(target.agent_state(n, "") for n in nodes))
    return sum(1 for s in states if s and (s.get("readiness") or {}).get("ready") is True)


async def _tunnels_up(sim: SimCluster, view: ClusterView) -> tuple[int, int]:
    nodes = [e.node_name for gw in view.gateways.values() for e in gw.active(EndpointType.TUNNEL)]
    results = await asyncio.gather(
        *(sim.exec_on_node(n, ["wg", "show", WG_LINK, "dump"], timeout=5) for n in nodes)
    )
    up = 0
    for res in results:
        peers = parse_wg_dump(res.stdout) if res.ok else ()
        up += bool(peers) and all(p.latest_handshake for p in peers)
    return up, len(view.gateways)


def instructions(sim: SimCluster) -> str:
    rd = sim.run_dir
    flag = "" if rd == DEFAULT_RUN_DIR else f" --run-dir {rd}"
    node = sim.topology.nodes[0].name
    return "\n".join(
        [
            "",
            "The simulated cluster keeps running. Try:",
            f"  ravectl --sim{flag} status                  Gateways, roles, links, L7 edges",
            f"  ravectl --sim{flag} diagnose {node}",
            f"  ravend sim status{flag}                     namespaces of every node and pod",
            f"  ip netns exec {sim.node_netns(node)} bash         a shell on node {node}",
            f"  ip netns exec {sim.pod_netns(node)} bash         a shell in its pod",
            f"  KUBECONFIG={sim.admin_kubeconfig}   (admin kubeconfig of the API server)",
            f"  agent logs: {rd}/logs/",
            "  make demo-down                              remove everything",
        ]
    )
