"""Benchmark: gateway failover time in the embedded cluster (ravend.sim API server, loopback).

One pool with three candidate nodes (a, b, c; edge workers, so they never lead) and a separate
leader node z, all running the real election loops over HTTP with default ElectionSettings.
Each trial crashes the current active endpoint (its API link is cut, then it stops: no goodbye)
and measures the time until the Gateway status names a new active endpoint; the crashed agent
is then restarted as a standby. A last case restarts the active gracefully and checks that the
status does not change. Prints JSON lines and a table.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import random
import statistics
import tempfile
import time
from pathlib import Path

from ravend.election.examples import ep, gateway, node
from ravend.election.settings import ElectionSettings
from ravend.election.testbed import TestbedAgent
from ravend.kube.client import KubeClient, connect
from ravend.kube.codec import gateway_from_json, gateway_to_json, node_to_json
from ravend.kube.resources import CONFIGMAPS, GATEWAYS, NODES
from ravend.sim.apiserver import SimApiServer

CANDIDATES = ("a", "b", "c")


async def active_of(admin: KubeClient) -> str | None:
    gw = gateway_from_json(await admin.get(GATEWAYS, "gw"))
    return gw.status.active_endpoints[0].node_name if gw.status.active_endpoints else None


async def wait_active(admin: KubeClient, pred: object, timeout: float = 30.0) -> tuple[str, float]:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        name = await active_of(admin)
        if name is not None and name != pred:
            return name, time.monotonic() - t0
        await asyncio.sleep(0.005)
    raise TimeoutError("no new active endpoint")


async def setup(admin: KubeClient) -> None:
    data = {"enable-l3-tunnel": "true", "enable-l7-proxy": "false"}
    meta = {"name": "raven-cfg", "namespace": "kube-system"}
    await admin.create(CONFIGMAPS, {"metadata": meta, "data": data})
    await admin.create(NODES, node_to_json(node("z", "gw")))
    for n in CANDIDATES:
        await admin.create(NODES, node_to_json(node(n, "gw", edge=True)))
    await admin.create(GATEWAYS, gateway_to_json(gateway("gw", [ep(n) for n in CANDIDATES])))


async def trials(
    kubeconfig: Path, count: int, settings: ElectionSettings
) -> list[dict[str, object]]:
    admin = await connect(kubeconfig)
    agents = {n: TestbedAgent(n, kubeconfig, settings) for n in ("z", *CANDIDATES)}
    rows: list[dict[str, object]] = []
    try:
        await setup(admin)
        for agent in agents.values():
            await agent.start()
        current, _ = await wait_active(admin, None)
        for i in range(count):
            await asyncio.sleep(settings.standby_renew_period_s + 1.0)  # steady state first
            # A random phase against the renewal rhythm, so trials sample the whole window.
            await asyncio.sleep(random.uniform(0, settings.active_renew_period_s))
            t0 = time.monotonic()
            await agents[current].crash()
            new, _ = await wait_active(admin, current)
            rows.append(
                {
                    "trial": i + 1,
                    "crashed": current,
                    "new_active": new,
                    "failover_s": round(time.monotonic() - t0, 3),
                }
            )
            agents[current] = TestbedAgent(current, kubeconfig, settings)
            await agents[current].start()
            current = new
        rows.append(await graceful_restart(admin, agents, current, kubeconfig, settings))
    finally:
        for agent in agents.values():
            await agent.stop()
        await admin.close()
    return rows


async def graceful_restart(
    admin: KubeClient,
    agents: dict[str, TestbedAgent],
    current: str,
    kubeconfig: Path,
    settings: ElectionSettings,
) -> dict[str, object]:
    await asyncio.sleep(1.0)
    before = (await admin.get(GATEWAYS, "gw"))["metadata"]["resourceVersion"]
    await agents[current].stop()
    await asyncio.sleep(1.0)  # a quick restart
    agents[current] = TestbedAgent(current, kubeconfig, settings)
    await agents[current].start()
    await asyncio.sleep(settings.restart_grace_s + 1.0)
    after = await admin.get(GATEWAYS, "gw")
    return {
        "case": "graceful restart of the active",
        "active_after": await active_of(admin),
        "was": current,
        "status_changed": after["metadata"]["resourceVersion"] != before,
    }


async def main(count: int, period: float, duration: int) -> None:
    # Crashed agents drop their watches mid-stream; the simulator logs each one as an error.
    logging.getLogger("aiohttp.server").setLevel(logging.CRITICAL)
    settings = ElectionSettings(active_renew_period_s=period, active_lease_duration_s=duration)
    with tempfile.TemporaryDirectory() as tmp:
        async with SimApiServer() as server:
            kubeconfig = server.write_kubeconfig(Path(tmp) / "kubeconfig")
            rows = await trials(kubeconfig, count, settings)
    for row in rows:
        print(json.dumps({"bench": "election_failover", **row}))
    times = [float(str(r["failover_s"])) for r in rows if "failover_s" in r]
    print(
        f"\nactive heartbeat: renew every {settings.active_renew_period_s} s, "
        f"duration {settings.active_lease_duration_s} s"
    )
    print(f"{'trials':>7} {'median s':>9} {'min s':>7} {'max s':>7}")
    print(f"{len(times):7d} {statistics.median(times):9.3f} {min(times):7.3f} {max(times):7.3f}")
    print(f"graceful restart of the active changed the status: {rows[-1]['status_changed']}")
    print("Raven (NodeReady based), for reference: >= 45-60 s")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--trials", type=int, default=7)
    parser.add_argument(
        "--active-period", type=float, default=ElectionSettings.active_renew_period_s
    )
    parser.add_argument(
        "--active-duration", type=int, default=ElectionSettings.active_lease_duration_s
    )
    args = parser.parse_args()
    asyncio.run(main(args.trials, args.active_period, args.active_duration))
