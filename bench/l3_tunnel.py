"""Benchmark: L3 tunnel throughput and traffic restoration on the simulated cluster.

(a) TCP throughput across regions through ravend's tunnel, on three paths: cloud gateway node
    -> hangzhou gateway node, their pods (one WireGuard hop over the simulated WAN and NAT), and
    the worker pods (VXLAN to the gateway at both ends as well). The baseline of each path is
    its twin (`bench.l3_twin`): the same flow between the same namespaces, with only the
    WireGuard leg replaced by a wireguard-go pair configured by hand between the same gateway
    nodes. (The previous version compared the pod paths with a gateway-to-gateway tunnel,
    which charged the bridge, veth and VXLAN hops to ravend.) Rounds are interleaved and
    alternate which of a pair goes first; the ratio is the median of the per-round ratios
    ravend / twin: a pair measured seconds apart shares the slow spells of this shared 2-core
    host, so the ratio is steadier than either figure. `*_cpu_ms_per_mb` is the CPU the
    transfer cost (sender, receiver, the tunnel's two wireguard-go) per MB, ravend / twin: the
    figure that moves less with the host's load. Namespace-wide costs of ravend's
    nftables table (conntrack, set lookups) hit the twin's packets too and are not in the
    ratio. `by_hand_veth` is the pair on a bare veth in two throwaway namespaces (what the
    simulated routers and NAT cost). `cubic` is pinned on both sockets of every transfer.
(b) Traffic restoration after cutting the active gateway's links: gw-qingdao gets a second
    tunnel candidate; a prober in the pod of the candidate that stays up sends a UDP echo to a
    cloud pod every 50 ms; the active gateway's uplinks are cut (`SimCluster.cut_links`) and
    the time until the first answered probe sent after the cut is measured; links restored,
    the next trial cuts the other candidate. Median and max over TRIALS; goal < 3 s. The real
    agents run the election.

`python -m bench.l3_tunnel` prints JSON lines and a table; `main()` returns the records.
Needs root, ip, nft and wireguard-go.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.l3_sim import L3Sim
from bench.l3_twin import (
    PORT,
    TWIN_PORT,
    Transfer,
    TunnelPath,
    by_hand,
    hand_twin,
    measured,
    spawn_ready,
    stop_proc,
    wg_mtu,
)
from ravend.l3 import wgproc
from ravend.l3.settings import L3Settings
from ravend.model import EndpointType
from ravend.sim.topology_default import default_topology

CLOUD_GW, CLOUD_W = "izwz9dohcv74iegqecp4axz", "izwz9ey0js5z7mornclpd6z"
HZ_GW, HZ_W = "izbp15inok0kbfkg3in52rz", "izbp15inok0kbfkg3in52sz"
QD_PROXY, QD_GW = "izm5eb24dmjfimuaybpnqzz", "izm5eb24dmjfimuaybpnr0z"
ROUNDS = 7
"""Interleaved rounds per path (each: one ravend and one twin transfer); medians reported."""
TRIALS = 5
PROBE_EVERY_S = 0.05
TRIAL_TIMEOUT_S = 30.0
"""A restoration trial that takes longer is recorded as failed (at this value)."""
Pair = tuple[Transfer, Transfer]
"""(through ravend's tunnel, through the twin) in one round."""

ECHO = """
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("0.0.0.0", 5202))
print("ready", flush=True)
while True:
    data, addr = s.recvfrom(64); s.sendto(data, addr)
"""
PROBER = """
import socket, struct, sys, time, select
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.setblocking(False)
dst, every = (sys.argv[1], 5202), float(sys.argv[2]); seq = 0; nxt = time.time()
print("ready", flush=True)
while True:
    now = time.time()
    if now >= nxt:
        s.sendto(struct.pack("!Id", seq, now), dst); seq += 1; nxt += every
    r, _, _ = select.select([s], [], [], max(0.0, nxt - time.time()))
    if r:
        data, _ = s.recvfrom(64); q, sent = struct.unpack("!Id", data)
        print(q, sent, time.time(), flush=True)
"""


def _rec(metric: str, value: float, unit: str, **extra: Any) -> dict[str, Any]:
    return {"bench": "l3_tunnel", "metric": metric, "value": round(value, 4), "unit": unit, **extra}


def _paths(l3: L3Sim) -> dict[str, TunnelPath]:
    sim, pod = l3.sim, l3.pod_ip

    def node_ip(node: str) -> str:
        return l3.topology.node(node).ip

    return {
        "gateway_nodes": TunnelPath(
            sim.node_netns(CLOUD_GW), sim.node_netns(HZ_GW), node_ip(CLOUD_GW), node_ip(HZ_GW)
        ),
        "gateway_pods": TunnelPath(
            sim.pod_netns(CLOUD_GW), sim.pod_netns(HZ_GW), pod(CLOUD_GW), pod(HZ_GW)
        ),
        "member_pods": TunnelPath(
            sim.pod_netns(CLOUD_W), sim.pod_netns(HZ_W), pod(CLOUD_W), pod(HZ_W)
        ),
    }


async def _pair(path: TunnelPath, ours: list[int], twin: list[int], twin_first: bool) -> Pair:
    """(ravend, twin) transfers of one round of `path`, in the given order."""
    runs = [(PORT, ours), (TWIN_PORT, twin)]
    got = {p: await measured(path, p, pids) for p, pids in (runs[::-1] if twin_first else runs)}
    return got[PORT], got[TWIN_PORT]


def _path_records(key: str, pairs: list[Pair], load: float) -> list[dict[str, Any]]:
    def med(values: list[float]) -> float:
        return round(statistics.median(values), 3)

    rate = [a.mbit_s / b.mbit_s for a, b in pairs]
    cost = [a.cpu_ms_per_mb / b.cpu_ms_per_mb for a, b in pairs]
    return [
        _rec(
            f"{key}_mbit_s",
            med([a.mbit_s for a, _ in pairs]),
            "Mbit/s",
            baseline=med([b.mbit_s for _, b in pairs]),
            ratio=med(rate),
            ratios=[round(x, 2) for x in rate],
            loadavg_1m=round(load, 2),
        ),
        # Lower is better; the steadier figure on a busy host.
        _rec(
            f"{key}_cpu_ms_per_mb",
            med([a.cpu_ms_per_mb for a, _ in pairs]),
            "ms/MB",
            baseline=med([b.cpu_ms_per_mb for _, b in pairs]),
            ratio=med(cost),
            ratios=[round(x, 2) for x in cost],
        ),
    ]


async def tunnel_records(l3: L3Sim) -> list[dict[str, Any]]:
    mtu = await wg_mtu(l3, CLOUD_GW)
    paths = _paths(l3)
    ours = [
        pid
        for node in (CLOUD_GW, HZ_GW)
        for pid in wgproc.instances(L3Settings().wireguard_link, l3.sim.node_netns(node))
    ]
    runs: dict[str, list[Pair]] = {k: [] for k in paths}
    load = os.getloadavg()[0]
    async with hand_twin(l3, CLOUD_GW, HZ_GW, mtu, list(paths.values())) as twin:
        for i in range(ROUNDS):
            for key, path in paths.items():
                runs[key].append(await _pair(path, ours, twin, twin_first=i % 2 == 1))
    records = [r for key, pairs in runs.items() for r in _path_records(key, pairs, load)]
    records.append(_rec("by_hand_veth_mbit_s", await by_hand(mtu), "Mbit/s"))
    return records


async def _active(l3: L3Sim, gateway: str) -> str:
    gw = l3.view.value.gateways[gateway]
    active = gw.active(EndpointType.TUNNEL)
    return active[0].node_name if active else ""


async def _wait_active(l3: L3Sim, gateway: str, not_node: str, timeout: float = 30) -> str:
    async with asyncio.timeout(timeout):
        while (node := await _active(l3, gateway)) in ("", not_node):
            await l3.view.wait_newer(l3.view.version)
    return node


async def _trial(l3: L3Sim, echo_ip: str) -> float:
    """Cut the active qingdao gateway; seconds until the first probe sent after the cut is
    answered. The prober runs in the pod of the other candidate, which stays connected."""
    victim = await _active(l3, "gw-qingdao")
    survivor = QD_PROXY if victim == QD_GW else QD_GW
    await _wait_eligible(l3, survivor)
    prober = await spawn_ready(l3.sim.pod_netns(survivor), PROBER, echo_ip, str(PROBE_EVERY_S))
    assert prober.stdout is not None
    try:
        await asyncio.sleep(1.0)  # probes flow before the cut
        await l3.sim.cut_links(victim)
        cut = time.time()
        try:
            async with asyncio.timeout(TRIAL_TIMEOUT_S):
                while line := await prober.stdout.readline():
                    _, sent, received = (float(x) for x in line.split())
                    if sent > cut:
                        restored = received - cut
                        break
            await _wait_active(l3, "gw-qingdao", victim)
        finally:
            await l3.sim.restore_links(victim)
    finally:
        await stop_proc(prober)
    return restored


async def _wait_eligible(l3: L3Sim, node: str, timeout: float = 60) -> None:
    """Until `node` could take the slot: Ready, and its heartbeat Lease renewed twice since
    we started looking (a node whose links were just restored is neither for a while)."""
    lease = f"ravend-node-{node}"
    seen: set[str] = set()
    async with asyncio.timeout(timeout):
        while True:
            v = l3.view.value
            n, hb = v.nodes.get(node), v.leases.get(lease)
            if hb is not None and hb.holder:
                seen.add(hb.renew_time)
            if n is not None and n.ready and len(seen) >= 3:
                return
            await l3.view.wait_newer(l3.view.version)


async def restoration_records(l3: L3Sim) -> list[dict[str, Any]]:
    await l3.add_tunnel_candidate("gw-qingdao", QD_PROXY)
    await asyncio.sleep(3)  # the candidate publishes its key and starts heartbeating
    echo = await spawn_ready(l3.sim.pod_netns(CLOUD_W), ECHO)
    times: list[float] = []
    failed = 0
    try:
        for _ in range(TRIALS):
            try:
                times.append(await _trial(l3, l3.pod_ip(CLOUD_W)))
            except TimeoutError:
                # Counted, not hidden: a trial that never recovers enters the figures at the
                # timeout, so the goal check fails visibly.
                failed += 1
                times.append(TRIAL_TIMEOUT_S)
            # The restored node's tunnel comes back before it is cut again (the next trial
            # also waits for it to be eligible: Ready and heartbeating).
            await asyncio.sleep(3)
    finally:
        await stop_proc(echo)
    return [
        _rec(
            "restore_median_s",
            statistics.median(times),
            "s",
            goal="< 3 s",
            trials=len(times),
            failed=failed,
            all=[round(t, 2) for t in times],
        ),
        _rec("restore_max_s", max(times), "s", goal="< 3 s"),
    ]


async def main() -> list[dict[str, Any]]:
    run_dir = Path(tempfile.mkdtemp(prefix="ravend-l3-tunnel-"))
    async with L3Sim(default_topology(), run_dir).meshed(60) as l3:
        return [*await tunnel_records(l3), *await restoration_records(l3)]


def _print(records: list[dict[str, Any]]) -> None:
    for r in records:
        print(json.dumps(r))
    print(f"\n{'metric':<22} {'value':>10} {'unit':<7} {'baseline':>9} {'ratio':>6} goal")
    for r in records:
        ratio = f"{r['ratio']:.2f}" if "ratio" in r else ""
        base = r.get("baseline", "")
        print(
            f"{r['metric']:<22} {r['value']:>10} {r['unit']:<7} {base:>9} {ratio:>6} "
            f"{r.get('goal', '')}"
        )


if __name__ == "__main__":
    _print(asyncio.run(main()))
