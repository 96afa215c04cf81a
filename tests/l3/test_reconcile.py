"""Reconciler + SnapshotCache over an in-memory kernel: a pass reuses the verified snapshot only
while nothing can have changed, and whatever the kernel lost is re-added by the next pass that
was told (event), by the periodic resync, or after a failure (no root needed)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from types import MappingProxyType

import pytest

from ravend.l3.agent import L3Agent
from ravend.l3.diff import diff
from ravend.l3.kernel import OpFailure
from ravend.l3.memkernel import MemoryKernel
from ravend.l3.ops import AddRoute, ConfigureWireGuard, Op
from ravend.l3.plan import LocalFacts, plan
from ravend.l3.reconcile import Reconciler, SnapshotCache
from ravend.l3.settings import L3Settings
from ravend.l3.state import KernelSnapshot, L3State, Role, Sysctl
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

S = L3Settings(resync_period_s=30.0)
KEY = "k-cloud-gw"
FACTS = LocalFacts(KEY, 1500, "172.20.0.1")


class Kernel:
    """MemoryKernel behind the async Kernel protocol, counting reads; `during_read` runs right
    after a read (a change racing the pass), `fail` makes ops of that kind fail."""

    def __init__(self) -> None:
        self.mem = MemoryKernel(public_key=KEY)
        self.reads = 0
        self.during_read: Callable[[], None] | None = None
        self.fail: type[Op] | None = None
        self.raise_in_apply = False

    async def snapshot(self, desired: L3State) -> KernelSnapshot:
        self.reads += 1
        snap = self.mem.snapshot()
        if self.during_read is not None:
            self.during_read()
            self.during_read = None
        return snap

    async def readback(
        self, desired: L3State, before: KernelSnapshot, ops: Sequence[Op]
    ) -> KernelSnapshot:
        return await self.snapshot(desired)

    async def apply(self, ops: Sequence[Op]) -> list[OpFailure]:
        if self.raise_in_apply:
            self.raise_in_apply = False
            self.drop_route()
            raise OSError("ip -batch died")
        bad = [op for op in ops if self.fail and isinstance(op, self.fail)]
        self.mem.apply([op for op in ops if op not in bad])
        return [OpFailure(op, "injected") for op in bad]

    def drop_route(self) -> None:
        """Someone deletes the first route behind ravend's back."""
        self.mem.snap = replace(self.mem.snap, routes=self.mem.snap.routes[1:])


def cluster(edge_gw: str = "edge-gw") -> ClusterView:
    """Cloud (public hub) and edge (NATed, two tunnel candidates, `edge_gw` elected)."""

    def ep(node: str, nat: bool) -> Endpoint:
        cfg = MappingProxyType({"publicKey": f"k-{node}"})
        return Endpoint(
            node, EndpointType.TUNNEL, 4500, nat, "" if nat else "198.51.100.1", config=cfg
        )

    cloud, edge = ep("cloud-gw", False), (ep("edge-gw", True), ep("edge-w", True))
    active = next(e for e in edge if e.node_name == edge_gw)
    gws = {
        "cloud": Gateway(
            ObjectMeta("cloud"),
            GatewaySpec(endpoints=(cloud,)),
            GatewayStatus(active_endpoints=(cloud,)),
        ),
        "edge": Gateway(
            ObjectMeta("edge"),
            GatewaySpec(endpoints=edge),
            GatewayStatus(active_endpoints=(active,)),
        ),
    }
    nodes = {
        name: Node(
            ObjectMeta(name, labels=MappingProxyType({GATEWAY_LABEL: g})),
            (ip,),
            pod_cidrs=(cidr,),
            ready=True,
        )
        for name, g, ip, cidr in [
            ("cloud-gw", "cloud", "172.20.0.1", "10.0.0.0/24"),
            ("cloud-w", "cloud", "172.20.0.2", "10.0.1.0/24"),
            ("edge-gw", "edge", "172.21.0.1", "10.1.0.0/24"),
            ("edge-w", "edge", "172.21.0.2", "10.1.1.0/24"),
        ]
    }
    return ClusterView(
        MappingProxyType(gws), MappingProxyType(nodes), RavenConfig(True, True, True), synced=True
    )


def want(edge_gw: str = "edge-gw") -> L3State:
    return plan(cluster(edge_gw), "cloud-gw", S, FACTS)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def reconciler(k: Kernel, watching: bool = True) -> tuple[Reconciler, Clock]:
    clock = Clock()
    rec = Reconciler(k, S, clock=clock)
    if watching:
        rec.snaps.watch_started()
    return rec, clock


async def test_a_switch_after_a_clean_pass_reuses_the_snapshot_and_converges() -> None:
    k = Kernel()
    rec, _ = reconciler(k)
    first = await rec.converge(want())
    assert first.clean and not first.cached and k.reads == 2  # read, apply, read back
    # The edge elects its other candidate: nothing was announced, so no read before the diff.
    switch = await rec.converge(want("edge-w"))
    assert switch.cached and [type(op) for op in switch.ops] == [ConfigureWireGuard]
    assert k.reads == 3  # only the read-back of what the switch wrote
    assert diff(want("edge-w"), k.mem.snapshot(), S) == []
    idle = await rec.converge(want("edge-w"))
    assert idle.cached and idle.ops == () and k.reads == 3
    assert rec.snaps.hits == 2


async def test_a_route_the_kernel_lost_is_re_added_once_its_event_arrives() -> None:
    k = Kernel()
    rec, _ = reconciler(k)
    await rec.converge(want())
    victim = k.mem.snap.routes[0]
    k.drop_route()
    rec.snaps.changed()  # the netlink event for the deletion
    done = await rec.converge(want())
    assert not done.cached and AddRoute(victim) in done.ops
    assert victim in k.mem.snap.routes


async def test_a_change_during_a_pass_is_not_hidden_by_the_snapshot_it_stored() -> None:
    k = Kernel()
    rec, _ = reconciler(k)
    await rec.converge(want())
    rec.snaps.changed()  # some event: the next pass reads the kernel
    victim = want().routes[0]

    # Right after that read, the route is lost and its event arrives while the pass still
    # runs: the pass finds nothing to do and stores what it read, which is already stale.
    def race() -> None:
        k.drop_route()
        rec.snaps.changed()

    k.during_read = race
    done = await rec.converge(want())
    assert done.clean and not done.cached and victim not in k.mem.snap.routes
    done = await rec.converge(want())
    assert not done.cached and victim in k.mem.snap.routes


async def test_without_an_event_the_periodic_resync_or_the_age_limit_repairs() -> None:
    k = Kernel()
    rec, clock = reconciler(k)
    await rec.converge(want())
    victim = want().routes[0]
    k.drop_route()  # its event was lost
    assert (await rec.converge(want())).cached and victim not in k.mem.snap.routes
    assert not (await rec.converge(want(), resync=True)).cached
    assert victim in k.mem.snap.routes
    k.drop_route()
    clock.now += S.resync_period_s  # no resync ran, but nothing is trusted for longer
    assert not (await rec.converge(want())).cached
    assert victim in k.mem.snap.routes


@pytest.mark.parametrize("how", ["failed op", "exception", "unwatched"])
async def test_nothing_is_reused_after_a_failure_or_without_events(how: str) -> None:
    k = Kernel()
    rec, _ = reconciler(k, watching=how != "unwatched")
    if how == "failed op":
        k.fail = AddRoute
    await rec.converge(want())
    k.fail = None
    if how == "exception":
        k.raise_in_apply = True  # the switch's apply damages the kernel, then raises
        with pytest.raises(OSError):
            await rec.converge(want("edge-w"))
    k.drop_route()  # and no event says so
    done = await rec.converge(want("edge-w"))
    assert not done.cached and done.clean
    assert diff(want("edge-w"), k.mem.snapshot(), S) == []


async def test_watch_stopping_or_wireguard_exit_invalidates() -> None:
    k = Kernel()
    rec, _ = reconciler(k)
    await rec.converge(want())
    rec.snaps.watch_stopped()
    assert not (await rec.converge(want())).cached
    rec.snaps.watch_started()  # changes made while unwatched were never announced
    assert not (await rec.converge(want())).cached
    assert (await rec.converge(want())).cached


def test_a_plan_asking_for_other_sysctls_reads_them() -> None:
    cache = SnapshotCache(30.0)
    cache.watch_started()
    desired = want()
    cache.store(KernelSnapshot(), desired, cache.token(), 0.0)
    assert cache.lookup(desired, 1.0) is not None
    more = replace(desired, sysctls=(*desired.sysctls, Sysctl("net/ipv4/conf/x/rp_filter", "2")))
    assert cache.lookup(more, 1.0) is None


async def test_agent_reuses_only_while_watched_and_wakes_on_kernel_events(tmp_path: Path) -> None:
    k = Kernel()
    view = Latest(cluster())
    agent = L3Agent(
        "cloud-gw", "172.20.0.1", S, tmp_path, view, client=None, kernel=k, watch_kernel=False
    )
    await agent.prepare()
    k.mem.public_key = agent.public_key
    assert await agent.reconcile_once(cluster())
    assert await agent.reconcile_once(cluster("edge-w"))
    assert agent.snaps.hits == 0  # no event watch: every pass reads the kernel
    agent.snaps.watch_started()  # what watch_owned reports once subscribed
    assert await agent.reconcile_once(cluster("edge-w"))
    assert await agent.reconcile_once(cluster())
    assert agent.snaps.hits == 1 and agent.planned.role is Role.GATEWAY
    k.drop_route()
    agent._kernel_changed()  # the watch's callback for the deletion
    assert await agent.reconcile_once(cluster())
    assert agent.snaps.hits == 1
    assert diff(agent.planned, k.mem.snapshot(), agent.s) == []
