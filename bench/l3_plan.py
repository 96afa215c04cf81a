"""Benchmark: L3 planning, diff and apply at scale (2,000 nodes, 200 gateways, 4,000 subnets).

The measured node is the hub gateway (199 WireGuard peers, every remote subnet routed), the
heaviest plan in the cluster. Three cases, each timed pure (plan + diff) and with the kernel
(snapshot + apply into a throwaway network namespace with a wireguard-go device):
initial (empty kernel), one gateway switch (one edge pool elects another node), idle resync
(nothing changed: the pass must find zero ops). Goals: < 1 s, < 100 ms, < 100 ms.

`python -m bench.l3_plan` prints JSON lines and a table; `main()` returns the records.
Needs root, ip, nft and wireguard-go for the kernel half; the pure half runs anywhere.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import secrets
import statistics
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import MappingProxyType
from typing import Any

from ravend.l3.diff import diff
from ravend.l3.kernel import LinuxKernel
from ravend.l3.keys import load_or_create, public_from_private
from ravend.l3.plan import LocalFacts, plan
from ravend.l3.settings import L3Settings
from ravend.l3.state import KernelSnapshot, L3State
from ravend.l3.wireguard import UserspaceWireGuard
from ravend.model import (
    GATEWAY_LABEL,
    ClusterView,
    Endpoint,
    EndpointType,
    Gateway,
    GatewaySpec,
    GatewayStatus,
    Node,
    ObjectMeta,
    RavenConfig,
)

GATEWAYS, NODES_PER_GATEWAY, CIDRS_PER_NODE = 200, 10, 2
ME = "n-000-00"
REPEAT = 5


def _key(i: int) -> str:
    # Any 32 bytes are a usable Curve25519 public key; hashing keeps them distinct.
    return base64.b64encode(hashlib.sha256(f"peer-{i}".encode()).digest()).decode()


def build(switched: int | None = None) -> ClusterView:
    """200 pools of 10 nodes, 2 pod CIDRs each; pool 0 is the public hub, the rest NATed.
    `switched`: that pool's tunnel moved from its node 0 to node 1."""
    gws, nodes = {}, {}
    for g in range(GATEWAYS):
        name, nat = f"gw-{g:03d}", g != 0
        cands = [
            Endpoint(
                f"n-{g:03d}-{k:02d}",
                EndpointType.TUNNEL,
                4500,
                under_nat=nat,
                public_ip="" if nat else "198.51.100.1",
                config=MappingProxyType({"publicKey": _key(g * 2 + k)}),
            )
            for k in (0, 1)
        ]
        active = cands[1] if g == switched else cands[0]
        gws[name] = Gateway(
            ObjectMeta(name),
            GatewaySpec(endpoints=tuple(cands)),
            GatewayStatus(active_endpoints=(active,)),
        )
        for k in range(NODES_PER_GATEWAY):
            n = f"n-{g:03d}-{k:02d}"
            cidrs = tuple(f"10.{g // 100}.{(g % 100) * 2 + c}.{k * 16}/28" for c in range(2))
            nodes[n] = Node(
                ObjectMeta(n, labels=MappingProxyType({GATEWAY_LABEL: name})),
                internal_ips=(f"172.{16 + g // 250}.{g % 250}.{k + 1}",),
                pod_cidrs=cidrs,
                ready=True,
            )
    return ClusterView(
        gateways=MappingProxyType(gws),
        nodes=MappingProxyType(nodes),
        raven_cfg=RavenConfig(True, True, True),
        synced=True,
    )


def _median(fn: Callable[[], Any]) -> tuple[float, Any]:
    times, out = [], None
    for _ in range(REPEAT):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), out


async def _amedian(fn: Callable[[], Awaitable[Any]], repeat: int = REPEAT) -> tuple[float, Any]:
    times, out = [], None
    for _ in range(repeat):
        t = time.perf_counter()
        out = await fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), out


def _rec(metric: str, value: float, unit: str = "s", goal: float | None = None) -> dict[str, Any]:
    r: dict[str, Any] = {"bench": "l3_plan", "metric": metric, "value": round(value, 6)}
    r["unit"] = unit
    if goal is not None:
        r["goal"] = goal
    return r


def pure(s: L3Settings, facts: LocalFacts) -> tuple[list[dict[str, Any]], L3State, L3State]:
    v0, v1 = build(), build(switched=7)
    t_plan, st0 = _median(lambda: plan(v0, ME, s, facts))
    t_init, ops0 = _median(lambda: diff(plan(v0, ME, s, facts), KernelSnapshot(), s))
    st1 = plan(v1, ME, s, facts)
    # Pure switch/idle: diff against the kernel the previous plan would leave (its own ops
    # applied in memory), so only the planner and the diff are timed.
    from ravend.l3.memkernel import MemoryKernel

    mem = MemoryKernel(public_key=facts.public_key)
    mem.apply(ops0)
    snap0 = mem.snapshot()
    t_switch, ops_sw = _median(lambda: diff(plan(v1, ME, s, facts), snap0, s))
    t_idle, ops_idle = _median(lambda: diff(plan(v0, ME, s, facts), snap0, s))
    assert ops_idle == [], f"idle pass found {len(ops_idle)} ops"
    return (
        [
            _rec("remote_subnets", len(st0.remote_subnets), "count"),
            _rec("routes_planned", len(st0.routes), "count"),
            _rec("peers_planned", len(st0.wireguard.peers) if st0.wireguard else 0, "count"),
            _rec("plan_only_s", t_plan),
            _rec("initial_plan_diff_s", t_init, goal=1.0),
            _rec("switch_plan_diff_s", t_switch, goal=0.1),
            _rec("switch_ops", len(ops_sw), "count"),
            _rec("idle_plan_diff_s", t_idle, goal=0.1),
        ],
        st0,
        st1,
    )


async def _sh(*argv: str) -> None:
    proc = await asyncio.create_subprocess_exec(*argv)
    if await proc.wait() != 0:
        raise RuntimeError(f"{argv} failed")


async def kernel(s: L3Settings, st0: L3State, st1: L3State) -> list[dict[str, Any]]:
    """Snapshot + apply into a throwaway namespace; always removed afterwards."""
    ns = f"rl3b{secrets.token_hex(3)}"
    wg_name = s.wireguard_link
    await _sh("ip", "netns", "add", ns)
    wg = UserspaceWireGuard(s, ns)
    k = LinuxKernel(s, wg, ns)
    try:
        await _sh("ip", "-n", ns, "link", "set", "lo", "up")
        await _sh("ip", "-n", ns, "link", "add", "eth0", "type", "veth", "peer", "eth1")
        await _sh("ip", "-n", ns, "addr", "add", "172.16.0.1/16", "dev", "eth0")
        await _sh("ip", "-n", ns, "link", "set", "eth0", "up")
        t = time.perf_counter()
        ops = diff(st0, await k.snapshot(st0), s)
        fails = await k.apply(ops)
        t_init = time.perf_counter() - t
        assert not fails, fails[:3]

        async def switch(to: L3State) -> int:
            ops = diff(to, await k.snapshot(to), s)
            assert not await k.apply(ops)
            return len(ops)

        t_sw, _ = await _amedian(lambda: switch(st1), 1)
        await switch(st0)
        t_idle, n_idle = await _amedian(lambda: switch(st0))
        assert n_idle == 0
        return [
            _rec("initial_apply_s", t_init, goal=1.0),
            _rec("switch_apply_s", t_sw, goal=0.1),
            _rec("idle_snapshot_diff_s", t_idle, goal=0.1),
        ]
    finally:
        await wg.delete(wg_name)
        await _sh("ip", "netns", "del", ns)


async def main() -> list[dict[str, Any]]:
    # A unique WireGuard link name: wireguard-go's UAPI socket directory is shared by all
    # namespaces. forward_node_ip off so "remote subnets" are exactly the pod CIDRs.
    s = L3Settings(
        forward_node_ip=False,
        state_dir="/tmp/ravend-bench-l3",
        wireguard_link=f"rb{secrets.token_hex(4)}",
    )
    private = load_or_create(Path(s.state_dir) / "wireguard.key")
    facts = LocalFacts(public_from_private(private), 1500, "172.16.0.1")
    records, st0, st1 = pure(s, facts)
    if os.geteuid() == 0:
        records += await kernel(s, st0, st1)
    return records


def _print(records: list[dict[str, Any]]) -> None:
    for r in records:
        print(json.dumps(r))
    print(f"\n{'metric':<24} {'value':>12} {'unit':<6} {'goal':>6}")
    for r in records:
        print(f"{r['metric']:<24} {r['value']:>12} {r['unit']:<6} {r.get('goal', ''):>6}")


if __name__ == "__main__":
    _print(asyncio.run(main()))
