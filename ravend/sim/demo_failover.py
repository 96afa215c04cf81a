"""The demo's live gateway failover: cut the active tunnel gateway, time the outage (I/O).

A second tunnel candidate is added to the Gateway first (the manual's topology has one per
region) and the demo waits until it is a warm standby (a WireGuard session with a peer, the
hub, and its heartbeat Lease written), then a prober in the pod of that candidate pings a pod
in another region every 50 ms (`ping -D -O -i 0.05`), the active gateway's uplinks are cut
(links and tunnel state stay: it looks dead to everyone), and the time from the cut to the
first reply to a probe sent after it is the recovery time. The links are restored afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

from ravend.election.settings import ElectionSettings
from ravend.kube import errors
from ravend.kube.client import KubeClient
from ravend.kube.resources import LEASES
from ravend.model import ClusterView, EndpointType
from ravend.sim import demo_report as rep
from ravend.sim.cluster import SimCluster
from ravend.sim.demo_checks import add_tunnel_candidate, ping, wait_view
from ravend.sim.demo_report import CheckRecord, longest_gap, parse_ping, recovery_seconds

PROBE_INTERVAL_S = 0.05
RECOVERY_LIMIT_S = 30.0
"""Give up after this long without traffic (Raven's NodeReady-based failover needs 45-60 s)."""

WARM_LIMIT_S = 20.0
"""Wait at most this long for the new candidate to become a warm standby before cutting."""


def pick_pair(sim: SimCluster, view: ClusterView, gateway: str) -> tuple[str, str, str] | None:
    """(active tunnel node, standby node, probe destination pod IP) for `gateway`."""
    gw = view.gateways.get(gateway)
    if gw is None or not gw.active(EndpointType.TUNNEL):
        return None
    active = gw.active(EndpointType.TUNNEL)[0].node_name
    region = sim.topology.node(active).region
    standby = next((n.name for n in sim.topology.nodes_in(region) if n.name != active), None)
    far = next((n for n in sim.topology.nodes if n.region != region), None)
    if standby is None or far is None:
        return None
    return active, standby, far.pod_ip


async def check_failover(
    sim: SimCluster, client: KubeClient, view: ClusterView, gateway: str
) -> list[CheckRecord]:
    chosen = pick_pair(sim, view, gateway)
    if chosen is None:
        return [CheckRecord(rep.FAILOVER, gateway, False, "no active tunnel gateway to cut")]
    active, standby, dst = chosen
    await add_tunnel_candidate(client, gateway, standby)
    # A cut before the standby is warm would time its first handshake and first heartbeat,
    # not the failover; a fixed sleep was too short on a loaded machine.
    if not await wait_warm(sim, client, standby, WARM_LIMIT_S):
        detail = f"{standby} not a warm standby within {WARM_LIMIT_S:.0f} s"
        return [CheckRecord(rep.FAILOVER, gateway, False, detail)]
    src_ns = sim.pod_netns(standby)
    if await ping(sim, src_ns, dst, tries=10) is None:
        return [CheckRecord(rep.FAILOVER, gateway, False, f"{dst} unreachable before the cut")]
    argv = [
        "ip",
        "netns",
        "exec",
        src_ns,
        "ping",
        "-D",
        "-O",
        "-n",
        "-i",
        str(PROBE_INTERVAL_S),
        "-W",
        "1",
        dst,
    ]
    prober = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL
    )
    lines: list[str] = []
    reader = asyncio.ensure_future(_collect(prober, lines))
    try:
        await asyncio.sleep(1.0)
        cut_at = time.time()
        await sim.cut_links(active)
        # Only probes sent once the cut is in place prove recovery: replies to probes sent
        # while `nft` was still running are pre-cut traffic and would fake a 0.01 s failover.
        cut_done = time.time()
        recovered = await _wait_recovery(lines, cut_done)
        if recovered is not None:
            recovered += cut_done - cut_at
        # Read the new active endpoint while the old one is still cut off.
        after = await wait_view(client, lambda v: _moved(v, gateway, active), 5.0)
        gap = longest_gap(parse_ping(lines), cut_at)
    finally:
        prober.terminate()
        with contextlib.suppress(ProcessLookupError):
            await prober.wait()
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader
        await sim.restore_links(active)
    new = (
        ",".join(e.node_name for e in after.gateways[gateway].active(EndpointType.TUNNEL))
        if after
        else "-"
    )
    detail = (
        f"cut {active}; traffic from {standby}'s pod to {dst} flowed again after "
        f"{recovered:.2f} s (longest gap {gap:.2f} s); active tunnel now {new}"
        if recovered is not None
        else f"cut {active}; no traffic within {RECOVERY_LIMIT_S:.0f} s"
    )
    return [CheckRecord(rep.FAILOVER, gateway, recovered is not None, detail, recovered, "s")]


async def wait_warm(sim: SimCluster, client: KubeClient, node: str, timeout: float) -> bool:
    """Until `node` has a WireGuard handshake with some peer and its heartbeat Lease exists."""
    lease = ElectionSettings().heartbeat_lease(node)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        shown = await sim.exec_on_node(node, ["wg", "show", "raven-wg0", "latest-handshakes"])
        stamps = [line.split("\t")[-1] for line in shown.stdout.splitlines()]
        if shown.rc == 0 and any(s.strip() not in ("", "0") for s in stamps):
            with contextlib.suppress(errors.NotFound):
                await client.get(LEASES, lease, ElectionSettings().namespace)
                return True
        await asyncio.sleep(0.2)
    return False


def _moved(view: ClusterView, gateway: str, old: str) -> bool:
    gw = view.gateways.get(gateway)
    return gw is not None and old not in [e.node_name for e in gw.active(EndpointType.TUNNEL)]


async def _collect(proc: asyncio.subprocess.Process, lines: list[str]) -> None:
    assert proc.stdout is not None
    async for raw in proc.stdout:
        lines.append(raw.decode(errors="replace"))


async def _wait_recovery(lines: list[str], cut_at: float) -> float | None:
    while time.time() - cut_at < RECOVERY_LIMIT_S:
        await asyncio.sleep(PROBE_INTERVAL_S)
        seconds = recovery_seconds(parse_ping(lines), cut_at)
        if seconds is not None:
            return seconds
    return None
