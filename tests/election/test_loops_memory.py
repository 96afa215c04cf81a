"""The election loops against the in-memory cluster: convergence, failover, split-brain safety.

Real asyncio time with short settings (seconds-level durations are whole seconds in a Lease).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import replace

import pytest

from ravend.election.examples import ep, gateway, manual_gateways, manual_nodes, node
from ravend.election.loops import Election
from ravend.election.memory import MemoryCluster
from ravend.election.settings import ElectionSettings
from ravend.model import EndpointType, GatewayStatus, RavenConfig

FAST = ElectionSettings(
    controller_lease_duration_s=2.0,
    controller_renew_deadline_s=1.2,
    controller_retry_period_s=0.3,
    active_renew_period_s=0.3,
    active_lease_duration_s=1,
    standby_renew_period_s=0.5,
    standby_lease_duration_s=2,
    restart_grace_s=3,
    view_echo_timeout_s=1.0,
)
ON = RavenConfig(l3_enabled=True, l7_enabled=True, present=True)


class Agents:
    """Runs one Election per node name; each can be stopped or cut off on its own."""

    def __init__(self, cluster: MemoryCluster, settings: ElectionSettings = FAST) -> None:
        self.cluster = cluster
        self.settings = settings
        self.elections: dict[str, Election] = {}
        self.tasks: dict[str, asyncio.Task[None]] = {}

    def start(self, name: str) -> Election:
        view = self.cluster.subscribe(name)
        e = Election(self.cluster.client(name), name, view, self.settings)
        self.elections[name] = e
        self.tasks[name] = asyncio.create_task(e.run(), name=f"agent-{name}")
        return e

    async def stop(self, name: str) -> None:
        task = self.tasks.pop(name)
        task.cancel()
        done, _ = await asyncio.wait([task], timeout=5)
        assert done, f"agent {name} did not stop within 5 s of cancellation"
        with contextlib.suppress(asyncio.CancelledError):
            await task

    def leaders(self) -> list[str]:
        return [n for n, e in self.elections.items() if n in self.tasks and e.leader.value]

    async def close(self) -> None:
        for name in list(self.tasks):
            await self.stop(name)


@pytest.fixture
async def cluster() -> AsyncIterator[MemoryCluster]:
    yield MemoryCluster(raven_cfg=ON)


@pytest.fixture
async def agents(cluster: MemoryCluster) -> AsyncIterator[Agents]:
    a = Agents(cluster)
    try:
        yield a
    finally:
        await a.close()


async def until(cond: Callable[[], bool], timeout: float = 5.0) -> float:
    """Wait until `cond()`; return the seconds it took."""
    t0 = time.monotonic()
    while not cond():
        if time.monotonic() - t0 > timeout:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.01)
    return time.monotonic() - t0


def active(cluster: MemoryCluster, gw: str) -> list[tuple[str, str]]:
    return [(e.node_name, str(e.type)) for e in cluster.gateways[gw].status.active_endpoints]


def setup_pool(cluster: MemoryCluster, names: str = "abc") -> None:
    for n in names:
        cluster.put_node(node(n, "gw"))
    cluster.put_gateway(gateway("gw", [ep(n) for n in names], proxy_replicas=0))


async def test_manual_example_converges(cluster: MemoryCluster, agents: Agents) -> None:
    for n in manual_nodes():
        cluster.put_node(n)
    for g in manual_gateways():
        cluster.put_gateway(g)
    for n in manual_nodes():
        agents.start(n.name)
    cp = "izwz9dohcv74iegqecp4axz"
    await until(lambda: all(g.status.active_endpoints for g in cluster.gateways.values()))
    assert active(cluster, "gw-cloud") == [(cp, "proxy"), (cp, "tunnel")]
    cloud = cluster.gateways["gw-cloud"].status
    assert [dict(e.config) for e in cloud.active_endpoints] == [
        {"enable-l7-proxy": "true"},
        {"enable-l3-tunnel": "true"},
    ]
    assert [n.node_name for n in cloud.nodes] == [cp, "izwz9ey0js5z7mornclpd6z"]
    # Only cloud (non-edge) nodes are eligible to lead.
    assert len(agents.leaders()) == 1 and agents.leaders()[0].startswith("izwz9")
    elected = [ev for _, ev in cluster.events if ev.reason == "ActiveEndpointElected"]
    assert len(elected) == 6


async def test_two_electors_never_both_lead(cluster: MemoryCluster, agents: Agents) -> None:
    setup_pool(cluster, "xy")
    agents.start("x")
    agents.start("y")
    t_end = time.monotonic() + 2.0
    while time.monotonic() < t_end:
        assert len(agents.leaders()) <= 1
        await asyncio.sleep(0.005)
    (first,) = agents.leaders()
    other = "y" if first == "x" else "x"
    # Graceful stop releases the Lease: the peer leads well before the 2 s lease would expire.
    t0 = time.monotonic()
    await agents.stop(first)
    took = await until(lambda: agents.leaders() == [other], timeout=3.0)
    assert time.monotonic() - t0 < 1.0, took


async def test_cut_off_leader_steps_down_before_peer_takes_over(
    cluster: MemoryCluster, agents: Agents
) -> None:
    setup_pool(cluster, "xy")
    agents.start("x")
    await until(lambda: agents.leaders() == ["x"])
    agents.start("y")
    await asyncio.sleep(0.5)
    cluster.cut("x")
    stepped_down = peer_leads = None
    t0 = time.monotonic()
    while peer_leads is None and time.monotonic() - t0 < 5:
        leaders = {n for n, e in agents.elections.items() if e.leader.value}
        assert leaders != {"x", "y"}, "two leaders at once"
        if stepped_down is None and "x" not in leaders:
            stepped_down = time.monotonic() - t0
        if "y" in leaders:
            peer_leads = time.monotonic() - t0
        await asyncio.sleep(0.005)
    assert stepped_down is not None and peer_leads is not None
    assert stepped_down < peer_leads
    assert peer_leads >= FAST.controller_lease_duration_s - FAST.controller_retry_period_s


async def test_heartbeat_loss_fails_over_fast_and_sticks(
    cluster: MemoryCluster, agents: Agents
) -> None:
    setup_pool(cluster)
    for n in "abc":
        agents.start(n)
    await until(lambda: active(cluster, "gw") == [("a", "tunnel")])
    leader = agents.leaders()[0]
    victim = "a" if leader != "a" else "b"
    if victim == "b":  # make b the active one first: keep the leader out of the blast radius
        cluster.put_node(node("a", "gw", ready=False))
        await until(lambda: active(cluster, "gw") == [("b", "tunnel")])
        cluster.put_node(node("a", "gw"))
    t0 = time.monotonic()
    cluster.cut(victim)  # crash / cut links: no renewal, no goodbye
    took = await until(lambda: active(cluster, "gw") not in ([], [(victim, "tunnel")]))
    assert took <= FAST.active_lease_duration_s + 0.5
    new_active = active(cluster, "gw")
    assert time.monotonic() - t0 < 2.0
    # Victim comes back: it does not take the role back (no flapping).
    cluster.heal(victim)
    await asyncio.sleep(1.5)
    assert active(cluster, "gw") == new_active


async def test_graceful_restart_keeps_role(cluster: MemoryCluster, agents: Agents) -> None:
    setup_pool(cluster, "abc")
    cluster.put_node(node("z", "gw"))  # a leader-only node (not a candidate)
    agents.start("z")
    await until(lambda: agents.leaders() == ["z"])
    for n in "abc":
        agents.start(n)
    await until(lambda: active(cluster, "gw") == [("a", "tunnel")])
    await agents.stop("a")  # SIGTERM: announces "restarting" (3 s here)
    await asyncio.sleep(2.0)  # longer than the 1 s active duration
    assert active(cluster, "gw") == [("a", "tunnel")]
    agents.start("a")  # back within the grace period
    await asyncio.sleep(2.0)
    assert active(cluster, "gw") == [("a", "tunnel")]
    # But a stop without restart does fail over once the grace runs out.
    await agents.stop("a")
    took = await until(lambda: active(cluster, "gw") == [("b", "tunnel")], timeout=5)
    assert took > 2.0


async def test_cut_off_leader_flips_nothing(cluster: MemoryCluster, agents: Agents) -> None:
    setup_pool(cluster, "abc")
    cluster.put_node(node("z", "gw"))
    # Only z may lead: the others are edge workers.
    for n in "abc":
        cluster.put_node(node(n, "gw", edge=True))
    agents.start("z")
    for n in "abc":
        agents.start(n)
    await until(lambda: active(cluster, "gw") == [("a", "tunnel")])
    writes = len(cluster.status_writes)
    # The leader's watch stalls (its API still works): its clock sees heartbeats "expire".
    cluster.cut("z", api=False, watch=True)
    await asyncio.sleep(2.0)
    cluster.heal("z")
    await asyncio.sleep(1.0)
    assert len(cluster.status_writes) == writes
    assert active(cluster, "gw") == [("a", "tunnel")]


async def test_leader_with_stalled_watch_hands_over_and_failover_happens(
    cluster: MemoryCluster, agents: Agents
) -> None:
    """The demo's "never failed over": the leader's watch stalls while its writes still work.

    It can no longer prove any heartbeat expired, so it must not keep leading: it steps down
    and the peer whose view is current fails the dead gateway over (before the fix the stale
    leader renewed for ever, and the dead node stayed active).
    """
    for n in "ab":
        cluster.put_node(node(n, "gw", edge=True))  # candidates never lead
    cluster.put_gateway(gateway("gw", [ep("a"), ep("b")], proxy_replicas=0))
    cluster.put_node(node("y", "cloud"))
    cluster.put_node(node("z", "cloud"))
    agents.start("z")
    await until(lambda: agents.leaders() == ["z"])
    for n in "aby":
        agents.start(n)
    await until(lambda: active(cluster, "gw") == [("a", "tunnel")])
    await asyncio.sleep(0.5)
    cluster.cut("z", api=False, watch=True)  # z's Lease echoes stop; its API still works
    cluster.cut("a")  # and the active gateway dies
    t0 = time.monotonic()
    while active(cluster, "gw") != [("b", "tunnel")]:
        assert len(agents.leaders()) <= 1, "two leaders at once"
        assert time.monotonic() - t0 < 8.0, f"no failover; leaders {agents.leaders()}"
        await asyncio.sleep(0.01)
    took = time.monotonic() - t0
    assert agents.leaders() == ["y"]
    # Echo timeout + a round, the release, the takeover, a full active duration of grace.
    s = FAST
    bound = s.view_echo_timeout_s + 3 * s.controller_retry_period_s + s.active_lease_duration_s
    assert took < bound + 1.0, took
    # z's watch recovers: it competes again but y keeps the lead, and nothing flips back.
    cluster.heal("z")
    await asyncio.sleep(1.5)
    assert agents.leaders() == ["y"]
    assert active(cluster, "gw") == [("b", "tunnel")]


async def test_node_ready_flip_and_candidate_removal_reelect(
    cluster: MemoryCluster, agents: Agents
) -> None:
    setup_pool(cluster, "ab")
    cluster.put_node(node("z", "gw"))
    agents.start("z")
    await until(lambda: active(cluster, "gw") == [("a", "tunnel")])
    cluster.put_node(node("a", "gw", ready=False))
    await until(lambda: active(cluster, "gw") == [("b", "tunnel")], timeout=1.0)
    cluster.put_node(node("a", "gw"))
    gw = cluster.gateways["gw"]
    cluster.put_gateway(replace(gw, spec=replace(gw.spec, endpoints=(ep("a"),))))
    await until(lambda: active(cluster, "gw") == [("a", "tunnel")], timeout=1.0)
    lost = [ev for _, ev in cluster.events if ev.reason == "ActiveEndpointLost"]
    assert any("NodeNotReady" in ev.message for ev in lost)
    assert any("no longer a candidate" in ev.message for ev in lost)


async def test_raven_cfg_toggles_endpoint_types(cluster: MemoryCluster, agents: Agents) -> None:
    cluster.put_node(node("a", "gw"))
    p, t = EndpointType.PROXY, EndpointType.TUNNEL
    cluster.put_gateway(gateway("gw", [ep("a", p), ep("a", t)]))
    cluster.set_cfg(RavenConfig())  # absent: both off
    agents.start("a")
    await until(lambda: cluster.gateways["gw"].status.nodes != ())
    assert active(cluster, "gw") == []
    cluster.set_cfg(RavenConfig(l3_enabled=True, present=True))
    await until(lambda: active(cluster, "gw") == [("a", "tunnel")], timeout=1.0)
    cluster.set_cfg(RavenConfig(l7_enabled=True, present=True))
    await until(lambda: active(cluster, "gw") == [("a", "proxy")], timeout=1.0)


async def test_bounded_writes_in_steady_state(cluster: MemoryCluster, agents: Agents) -> None:
    setup_pool(cluster, "abc")
    for n in "abc":
        agents.start(n)
    await until(lambda: active(cluster, "gw") == [("a", "tunnel")])
    await asyncio.sleep(0.5)
    status_before = len(cluster.status_writes)
    beats_before = {n: e.heartbeat.writes for n, e in agents.elections.items()}
    await asyncio.sleep(2.0)
    assert len(cluster.status_writes) == status_before  # status only on change
    rate = {n: (e.heartbeat.writes - beats_before[n]) / 2.0 for n, e in agents.elections.items()}
    assert 2.0 <= rate["a"] <= 1 / FAST.active_renew_period_s + 1  # active: fast
    assert rate["b"] <= 1 / FAST.standby_renew_period_s + 1  # standby: slow
    assert cluster.gateways["gw"].status != GatewayStatus()
