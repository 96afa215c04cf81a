"""L3Agent's loop over an in-memory kernel: converges, waits for a synced view, repairs drift,
reports readiness, tears down on disable, and publishes the WireGuard key (no root needed)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import replace
from pathlib import Path
from types import MappingProxyType
from typing import Any, cast

import pytest

from ravend.kube.client import KubeClient
from ravend.l3.agent import L3Agent, publish_public_key
from ravend.l3.diff import diff
from ravend.l3.kernel import OpFailure
from ravend.l3.keys import load_or_create, public_from_private
from ravend.l3.memkernel import MemoryKernel
from ravend.l3.ops import Op
from ravend.l3.settings import L3Settings
from ravend.l3.state import KernelSnapshot, L3State, Role
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


class AsyncMemoryKernel:
    """MemoryKernel behind the async Kernel protocol; can be told to fail an op kind."""

    def __init__(self) -> None:
        self.mem = MemoryKernel(public_key="?")
        self.fail_kind: type[Op] | None = None
        self.snapshots = 0

    async def snapshot(self, desired: L3State) -> KernelSnapshot:
        self.snapshots += 1
        return self.mem.snapshot()

    async def readback(
        self, desired: L3State, before: KernelSnapshot, ops: Sequence[Op]
    ) -> KernelSnapshot:
        return await self.snapshot(desired)

    async def apply(self, ops: Sequence[Op]) -> list[OpFailure]:
        bad = [op for op in ops if self.fail_kind and isinstance(op, self.fail_kind)]
        self.mem.apply([op for op in ops if op not in bad])
        return [OpFailure(op, "injected") for op in bad]


def _view(synced: bool = True, l3: bool = True) -> ClusterView:
    gws, nodes = {}, {}
    for i, name in enumerate(["cloud", "edge"]):
        nat = name == "edge"
        ep = Endpoint(
            f"{name}-gw",
            EndpointType.TUNNEL,
            4500,
            under_nat=nat,
            public_ip="" if nat else "198.51.100.1",
            config=MappingProxyType({"publicKey": f"k-{name}"}),
        )
        gws[name] = Gateway(
            ObjectMeta(name), GatewaySpec(endpoints=(ep,)), GatewayStatus(active_endpoints=(ep,))
        )
        for k, role in enumerate(["gw", "w"]):
            nodes[f"{name}-{role}"] = Node(
                ObjectMeta(f"{name}-{role}", labels=MappingProxyType({GATEWAY_LABEL: name})),
                internal_ips=(f"172.20.{i}.{k + 1}",),
                pod_cidrs=(f"10.{i}.{k}.0/24",),
                ready=True,
            )
    return ClusterView(
        gateways=MappingProxyType(gws),
        nodes=MappingProxyType(nodes),
        raven_cfg=RavenConfig(l3, True, True),
        synced=synced,
    )


@contextlib.asynccontextmanager
async def running(agent: L3Agent) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(agent.run())
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def _until(cond: Any, timeout: float = 3.0) -> None:
    async with asyncio.timeout(timeout):
        while not cond():
            await asyncio.sleep(0.01)


def _agent(
    tmp_path: Path, view: Latest[ClusterView], kernel: AsyncMemoryKernel, me: str = "cloud-gw"
) -> tuple[L3Agent, list[tuple[bool, str]]]:
    marks: list[tuple[bool, str]] = []
    # The in-memory kernel reports the key the agent will load (a real device derives it).
    kernel.mem.public_key = public_from_private(load_or_create(tmp_path / "wireguard.key"))
    agent = L3Agent(
        me,
        "172.20.0.1",
        L3Settings(resync_period_s=0.2),
        tmp_path,
        view,
        client=None,
        kernel=kernel,
        ready=lambda ok, detail: marks.append((ok, detail)),
    )
    return agent, marks


async def test_waits_for_a_synced_view_then_converges(tmp_path: Path) -> None:
    view = Latest(_view(synced=False))
    kernel = AsyncMemoryKernel()
    agent, marks = _agent(tmp_path, view, kernel)
    async with running(agent):
        await asyncio.sleep(0.5)  # a couple of resync periods with an unsynced view
        assert kernel.snapshots == 0 and marks == []
        view.publish(_view())
        await _until(lambda: marks and marks[-1][0])
        assert agent.planned.role == Role.GATEWAY
        assert diff(agent.planned, kernel.mem.snapshot(), agent.s) == []
        assert agent.public_key == kernel.mem.public_key  # the persisted key was loaded
        state = agent.debug_state()
        assert state["role"] == "gateway" and state["gateway"] == "cloud"
        peers = cast(list[dict[str, Any]], state["peers"])
        assert [p["gateway"] for p in peers] == ["edge"]
        assert "10.1.0.0/24" in peers[0]["allowed_ips"]


async def test_repairs_a_deleted_route_on_resync(tmp_path: Path) -> None:
    view = Latest(_view())
    kernel = AsyncMemoryKernel()
    agent, marks = _agent(tmp_path, view, kernel)
    async with running(agent):
        await _until(lambda: marks and marks[-1][0])
        victim = kernel.mem.snap.routes[0]
        kernel.mem.snap = replace(kernel.mem.snap, routes=kernel.mem.snap.routes[1:])
        await _until(lambda: victim in kernel.mem.snap.routes)


async def test_failed_op_makes_it_unready_and_is_retried(tmp_path: Path) -> None:
    from ravend.l3.ops import AddRule

    view = Latest(_view())
    kernel = AsyncMemoryKernel()
    kernel.fail_kind = AddRule
    agent, marks = _agent(tmp_path, view, kernel)
    async with running(agent):
        await _until(lambda: len(marks) >= 2)
        assert not marks[-1][0] and "AddRule" in marks[-1][1]
        kernel.fail_kind = None
        await _until(lambda: marks[-1][0])
        assert kernel.mem.snap.rules


async def test_raven_cfg_off_tears_down_and_disable_removes_all(tmp_path: Path) -> None:
    view = Latest(_view())
    kernel = AsyncMemoryKernel()
    agent, marks = _agent(tmp_path, view, kernel)
    async with running(agent):
        await _until(lambda: marks and marks[-1][0])
        assert kernel.mem.snap.links
        view.publish(_view(l3=False))
        await _until(lambda: not kernel.mem.snap.links and not kernel.mem.snap.routes)
        view.publish(_view())
        await _until(lambda: bool(kernel.mem.snap.routes))
    # cancelled: the kernel keeps its state (a restart must not black-hole traffic)
    assert kernel.mem.snap.routes
    await agent.disable()
    snap = kernel.mem.snap
    assert (snap.links, snap.routes, snap.rules, snap.nft_digest) == ({}, (), (), None)


class FakeGatewayApi:
    """The one KubeClient call publish_public_key makes, over a dict of Gateway JSON."""

    def __init__(self, objs: dict[str, dict[str, Any]]) -> None:
        self.objs = objs
        self.writes = 0

    async def update_with_retry(
        self, res: Any, name: str, namespace: str | None, mutate: Any
    ) -> dict[str, Any]:
        out = mutate(self.objs[name])
        if out is not None:
            self.objs[name] = out
            self.writes += 1
        return self.objs[name]


@pytest.mark.parametrize("already", [False, True])
async def test_publish_public_key_writes_every_tunnel_candidate_once(already: bool) -> None:
    view = _view()
    cfg = {"publicKey": "NEW"} if already else {"publicKey": "OLD", "x": "y"}
    spec_eps: list[dict[str, Any]] = [
        {"nodeName": "edge-gw", "type": "tunnel", "port": 4500, "config": dict(cfg)},
        {"nodeName": "edge-gw", "type": "proxy", "port": 10262},
        {"nodeName": "edge-w", "type": "tunnel", "port": 4500},
    ]
    eps = tuple(
        Endpoint(e["nodeName"], EndpointType(e["type"]), 4500, config=e.get("config", {}))
        for e in spec_eps
    )
    gw = Gateway(ObjectMeta("edge"), GatewaySpec(endpoints=eps))
    view = replace(view, gateways=MappingProxyType({"edge": gw}))
    api = FakeGatewayApi({"edge": {"spec": {"endpoints": spec_eps}}})
    written = await publish_public_key(cast(KubeClient, api), view, "edge-gw", "NEW")
    assert written == ([] if already else ["edge"])
    got = api.objs["edge"]["spec"]["endpoints"]
    assert got[0]["config"]["publicKey"] == "NEW"
    assert "config" not in got[1] and "config" not in got[2]  # proxy and other node untouched
    if not already:
        assert got[0]["config"]["x"] == "y"


async def test_probe_evidence_is_published_for_the_election_and_cleared_on_stop(
    tmp_path: Path,
) -> None:
    from ravend.l3.probe import PeerHealth

    view = Latest(_view())
    kernel = AsyncMemoryKernel()
    agent, marks = _agent(tmp_path, view, kernel)
    seen: list[frozenset[str]] = []
    async with running(agent):
        await _until(lambda: marks and marks[-1][0])
        assert agent.planned.role == Role.GATEWAY and agent.probe_failed.value == frozenset()
        # What the prober would publish after the edge gateway stopped answering while
        # another peer still answers (the observer's own path works).
        agent.prober.health.publish(
            {
                "edge": PeerHealth("edge", "edge-gw", "172.20.1.1", False, sent=20),
                "other": PeerHealth("other", "other-gw", "172.20.2.1", True, sent=20),
            }
        )
        await _until(lambda: agent.probe_failed.value == {"edge-gw"})
        seen.append(agent.probe_failed.value)
    assert seen == [frozenset({"edge-gw"})]
    assert agent.probe_failed.value == frozenset()  # a stopped agent is no evidence
