"""Benchmark: L3 planning, diff and apply at scale (2,000 nodes, 200 gateways, 4,000 subnets).

The measured node is the hub gateway (199 WireGuard peers, every remote subnet routed), the
heaviest plan in the cluster. Each case is timed pure (plan + diff) and as the agent's own
reconcile pass (`L3Agent.reconcile_once`: plan through `PlanCache`, probe targets, snapshot
or the verified cached one, diff, apply, read-back) against a throwaway network namespace with
a wireguard-go device, with the agent's netlink event watch running:

- initial: from an empty kernel (median and max of 3, `disable()` in between);
- switch: one edge pool elects its other node (median and max of 10 back and forth); the
  baseline, interleaved in the same run, is the same switch the way passes ran before the
  snapshot cache and incremental planning (full kernel read, plan from scratch);
- idle resync: the periodic resync, which always reads the whole kernel (median and max of 5);
  `idle_woken_pass_s` is a pass woken by a view change that changes nothing L3 reads.

Goals: < 1 s, < 100 ms, < 100 ms. `snapshot_s` has the pyroute2 full dump (the reader before
routes moved to `ip -j`) as its baseline.

`python -m bench.l3_plan` prints JSON lines and a table; `main()` returns the records.
Needs root, ip, nft and wireguard-go for the kernel half; the pure half runs anywhere.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import os
import secrets
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

from ravend.l3.agent import L3Agent
from ravend.l3.diff import diff
from ravend.l3.kernel import LinuxKernel
from ravend.l3.keys import load_or_create, public_from_private
from ravend.l3.memkernel import MemoryKernel
from ravend.l3.netlink import read_objects
from ravend.l3.plan import LocalFacts, PlanCache, plan
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
from ravend.runtime import Latest

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


def _rec(
    metric: str, value: float, unit: str = "s", goal: str | None = None, **extra: float
) -> dict[str, Any]:
    r: dict[str, Any] = {"bench": "l3_plan", "metric": metric, "value": round(value, 6)}
    r["unit"] = unit
    if goal is not None:
        r["goal"] = goal
    r.update({k: round(v, 6) for k, v in extra.items()})
    return r


def renewed(v: ClusterView) -> ClusterView:
    """The view after a heartbeat Lease renewal: new maps, same objects (as the informers do)."""
    return replace(
        v,
        gateways=MappingProxyType(dict(v.gateways)),
        nodes=MappingProxyType(dict(v.nodes)),
        revision=v.revision + 1,
    )


def pure(s: L3Settings, facts: LocalFacts) -> tuple[list[dict[str, Any]], L3State, L3State]:
    v0, v1 = build(), build(switched=7)
    t_plan, st0 = _median(lambda: plan(v0, ME, s, facts))
    t_init, ops0 = _median(lambda: diff(plan(v0, ME, s, facts), KernelSnapshot(), s))
    st1 = plan(v1, ME, s, facts)
    # Pure switch/idle: diff against the kernel the previous plan would leave (its own ops
    # applied in memory), so only the planner and the diff are timed.
    mem = MemoryKernel(public_key=facts.public_key)
    mem.apply(ops0)
    snap0 = mem.snapshot()
    # A switch as the agent plans it (PlanCache: only what the switch touches is redone),
    # interleaved with the same switch planned from scratch (the baseline).
    cache, memo_t, fresh_t = PlanCache(), [], []
    cache.plan(v0, ME, s, facts)
    ops_sw: list[Any] = []
    for v in (v1, v0) * REPEAT:
        t = time.perf_counter()
        ops = diff(want := cache.plan(v, ME, s, facts), snap0, s)
        memo_t.append(time.perf_counter() - t)
        ops_sw = ops if v is v1 else ops_sw
        t = time.perf_counter()
        fresh = plan(v, ME, s, facts)
        diff(fresh, snap0, s)
        fresh_t.append(time.perf_counter() - t)
        assert want == fresh, "memoised plan differs from a fresh one"
    t_switch, t_fresh = statistics.median(memo_t), statistics.median(fresh_t)
    # Idle as the agent runs it: the plan is reused while Gateways/Nodes/raven-cfg are unchanged.
    hits = cache.hits
    t_idle, ops_idle = _median(lambda: diff(cache.plan(renewed(v0), ME, s, facts), snap0, s))
    assert ops_idle == [] and cache.hits == hits + REPEAT, f"idle pass found {len(ops_idle)} ops"
    t_replan, _ = _median(lambda: diff(plan(v0, ME, s, facts), snap0, s))
    return (
        [
            _rec("remote_subnets", len(st0.remote_subnets), "count"),
            _rec("routes_planned", len(st0.routes), "count"),
            _rec("peers_planned", len(st0.wireguard.peers) if st0.wireguard else 0, "count"),
            _rec("plan_only_s", t_plan),
            _rec("initial_plan_diff_s", t_init, goal="< 1 s"),
            _rec(
                "switch_plan_diff_s",
                t_switch,
                goal="< 100 ms",
                baseline=t_fresh,
                ratio=t_switch / t_fresh if t_fresh else 0.0,
            ),
            _rec("switch_ops", len(ops_sw), "count"),
            _rec("idle_plan_diff_s", t_idle, goal="< 100 ms"),
            _rec("idle_replan_diff_s", t_replan),
        ],
        st0,
        st1,
    )


async def _sh(*argv: str) -> None:
    proc = await asyncio.create_subprocess_exec(*argv)
    if await proc.wait() != 0:
        raise RuntimeError(f"{argv} failed")


async def _timed(agent: L3Agent, v: ClusterView, *, resync: bool = False) -> float:
    """One reconcile pass exactly as the agent's loop runs it; must end converged."""
    t = time.perf_counter()
    ok = await agent.reconcile_once(v, resync=resync)
    out = time.perf_counter() - t
    assert ok and agent.last_failures == [], agent.last_failures[:3]
    return out


async def _baseline(agent: L3Agent, v: ClusterView) -> float:
    """The pass as it ran before snapshot reuse and incremental planning: a full kernel read
    and a plan from scratch (the memo is emptied)."""
    agent.plans.memo.clear()
    return await _timed(agent, v, resync=True)


async def _settle(agent: L3Agent) -> None:
    """Until the netlink events of our own changes stop arriving (0.3 s without one)."""
    while True:
        seen = agent.snaps.generation
        await asyncio.sleep(0.3)
        if agent.snaps.generation == seen and agent.snaps.watching:
            return


def _stats(name: str, xs: list[float], goal: str, **extra: float) -> list[dict[str, Any]]:
    return [
        _rec(f"{name}_s", statistics.median(xs), "s", goal, **extra),
        _rec(f"{name}_max_s", max(xs)),
    ]


async def _cases(agent: L3Agent, s: L3Settings) -> list[dict[str, Any]]:
    v0, v1 = build(), build(switched=7)
    initial = []
    for _ in range(3):  # each from an empty kernel: disable() removes everything first
        await agent.disable()
        await _settle(agent)
        initial.append(await _timed(agent, v0))
    # Our own 4,000 route events: as in the agent, the next pass reads the kernel afresh.
    await _settle(agent)
    await _timed(agent, v0)
    switches, base_sw = [], []
    hits = agent.snaps.hits
    for _ in range(REPEAT):  # switch back and forth, interleaved with the old way
        for v in (v1, v0):
            switches.append(await _timed(agent, v))
        for v in (v1, v0):
            base_sw.append(await _baseline(agent, v))
    cached = agent.snaps.hits - hits
    idle = [await _timed(agent, renewed(v0), resync=True) for _ in range(REPEAT)]
    woken = [await _timed(agent, renewed(v0)) for _ in range(REPEAT)]
    med_sw, med_base = statistics.median(switches), statistics.median(base_sw)
    return [
        *_stats("initial_pass", initial, "< 1 s"),
        *_stats(
            "switch_pass",
            switches,
            "< 100 ms",
            baseline=med_base,
            ratio=med_sw / med_base if med_base else 0.0,
            cached_passes=cached,
        ),
        _rec("switch_pass_baseline_max_s", max(base_sw)),
        *_stats("idle_resync_pass", idle, "< 100 ms"),
        _rec("idle_woken_pass_s", statistics.median(woken)),
    ]


async def kernel(s: L3Settings, facts: LocalFacts) -> list[dict[str, Any]]:
    """Whole agent passes against a throwaway namespace with wireguard-go and the agent's
    netlink event watch running; everything is removed afterwards."""
    ns = f"rl3b{secrets.token_hex(3)}"
    await _sh("ip", "netns", "add", ns)
    wg = UserspaceWireGuard(s, ns)
    k = LinuxKernel(s, wg, ns, node_ip=facts.node_ip)
    agent = L3Agent(
        ME, facts.node_ip, s, Path(s.state_dir), Latest(build()), client=None, netns=ns, kernel=k
    )
    watch: asyncio.Task[None] | None = None
    try:
        await _sh("ip", "-n", ns, "link", "set", "lo", "up")
        await _sh("ip", "-n", ns, "link", "add", "eth0", "type", "veth", "peer", "eth1")
        await _sh("ip", "-n", ns, "addr", "add", "172.16.0.1/16", "dev", "eth0")
        await _sh("ip", "-n", ns, "link", "set", "eth0", "up")
        await agent.prepare()
        watch = asyncio.create_task(agent.watch_kernel())
        records = await _cases(agent, s)
        st0 = agent.planned
        t_snap, _ = await _amedian(lambda: k.snapshot(st0))
        t_old, _ = await _amedian(lambda: read_objects(s, ns))  # pyroute2 route dump (before)
        ratio = t_snap / t_old if t_old else 0.0
        return [*records, _rec("snapshot_s", t_snap, baseline=t_old, ratio=ratio)]
    finally:
        if watch is not None:
            watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watch
        await wg.delete(s.wireguard_link)
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
    records, _, _ = pure(s, facts)
    if os.geteuid() == 0:
        records += await kernel(s, facts)
    return records


def _print(records: list[dict[str, Any]]) -> None:
    for r in records:
        print(json.dumps(r))
    print(f"\n{'metric':<22} {'value':>10} {'unit':<6} {'goal':<9} {'baseline':>9}")
    for r in records:
        base = r.get("baseline", "")
        print(f"{r['metric']:<22} {r['value']:>10} {r['unit']:<6} {r.get('goal', ''):<9} {base:>9}")


if __name__ == "__main__":
    _print(asyncio.run(main()))
