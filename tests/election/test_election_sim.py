"""Election against the embedded API server: real HTTP, watches, resourceVersions, 409s."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from pathlib import Path

import pytest

from ravend.election.examples import ep, gateway, manual_gateways, manual_nodes, node
from ravend.election.settings import ElectionSettings
from ravend.election.testbed import TestbedAgent
from ravend.kube.client import KubeClient, connect
from ravend.kube.codec import gateway_from_json, gateway_to_json, node_to_json
from ravend.kube.resources import CONFIGMAPS, EVENTS, GATEWAYS, NODES
from ravend.model import EndpointType, Gateway, Node

FAST = ElectionSettings(
    controller_lease_duration_s=2.0,
    controller_renew_deadline_s=1.2,
    controller_retry_period_s=0.3,
    active_renew_period_s=0.3,
    active_lease_duration_s=1,
    standby_renew_period_s=0.5,
    standby_lease_duration_s=2,
    restart_grace_s=3,
)


@pytest.fixture
async def admin(kubeconfig: Path) -> AsyncIterator[KubeClient]:
    client = await connect(kubeconfig)
    yield client
    await client.close()


@pytest.fixture
async def agents(kubeconfig: Path) -> AsyncIterator[dict[str, TestbedAgent]]:
    running: dict[str, TestbedAgent] = {}
    yield running
    for agent in running.values():
        await agent.stop()


async def start(
    running: dict[str, TestbedAgent], kubeconfig: Path, *names: str
) -> list[TestbedAgent]:
    out = []
    for name in names:
        agent = TestbedAgent(name, kubeconfig, FAST)
        await agent.start()
        running[name] = agent
        out.append(agent)
    return out


async def raven_cfg(admin: KubeClient, l3: bool, l7: bool) -> None:
    data = {"enable-l3-tunnel": str(l3).lower(), "enable-l7-proxy": str(l7).lower()}
    body = {"metadata": {"name": "raven-cfg", "namespace": "kube-system"}, "data": data}
    try:
        await admin.create(CONFIGMAPS, body)
    except Exception:
        await admin.patch(CONFIGMAPS, "raven-cfg", {"data": data}, "kube-system")


async def put_node(admin: KubeClient, n: Node) -> None:
    try:
        await admin.create(NODES, node_to_json(n))
    except Exception:
        cur = await admin.get(NODES, n.name)
        body = node_to_json(n)
        body["metadata"]["resourceVersion"] = cur["metadata"]["resourceVersion"]
        await admin.replace_status(NODES, body)


async def get_gw(admin: KubeClient, name: str) -> Gateway:
    return gateway_from_json(await admin.get(GATEWAYS, name))


async def until_status(
    admin: KubeClient, name: str, want: Callable[[Gateway], bool], timeout: float = 8.0
) -> float:
    t0 = time.monotonic()
    while True:
        if want(await get_gw(admin, name)):
            return time.monotonic() - t0
        if time.monotonic() - t0 > timeout:
            gw = await get_gw(admin, name)
            raise AssertionError(f"status of {name} not reached: {gw.status}")
        await asyncio.sleep(0.02)


def actives(gw: Gateway) -> list[tuple[str, str]]:
    return [(e.node_name, str(e.type)) for e in gw.status.active_endpoints]


async def test_manual_example_expected_status(
    admin: KubeClient, kubeconfig: Path, agents: dict[str, TestbedAgent]
) -> None:
    await raven_cfg(admin, True, True)
    for n in manual_nodes():
        await put_node(admin, n)
    for g in manual_gateways():
        await admin.create(GATEWAYS, gateway_to_json(g))
    await start(agents, kubeconfig, *(n.name for n in manual_nodes()))
    cp = "izwz9dohcv74iegqecp4axz"
    await until_status(admin, "gw-cloud", lambda g: len(g.status.active_endpoints) == 2)
    cloud = await get_gw(admin, "gw-cloud")
    assert actives(cloud) == [(cp, "proxy"), (cp, "tunnel")]
    assert [dict(e.config) for e in cloud.status.active_endpoints] == [
        {"enable-l7-proxy": "true"},
        {"enable-l3-tunnel": "true"},
    ]
    assert {e.public_ip for e in cloud.status.active_endpoints} == {"203.0.113.10"}
    assert [(n.node_name, n.private_ip, n.subnets) for n in cloud.status.nodes] == [
        (cp, "192.168.0.195", ("10.244.0.0/24",)),
        ("izwz9ey0js5z7mornclpd6z", "192.168.0.196", ("10.244.1.0/24",)),
    ]
    await until_status(admin, "gw-qingdao", lambda g: len(g.status.active_endpoints) == 2)
    assert actives(await get_gw(admin, "gw-qingdao")) == [
        ("izm5eb24dmjfimuaybpnqzz", "proxy"),
        ("izm5eb24dmjfimuaybpnr0z", "tunnel"),
    ]
    leaders = [a.name for a in agents.values() if a.leading]
    assert len(leaders) == 1 and leaders[0].startswith("izwz9")  # edge nodes never lead
    # Events are written best effort after the status write: give them a moment to land.
    elected = 0
    for _ in range(100):
        events, _ = await admin.list(EVENTS, "default")
        elected = sum(e["reason"] == "ActiveEndpointElected" for e in events)
        if elected >= 6:
            break
        await asyncio.sleep(0.1)
    assert elected >= 6


async def pool(admin: KubeClient, names: str, l3: bool = True, l7: bool = False) -> None:
    await raven_cfg(admin, l3, l7)
    await put_node(admin, node("z", "gw"))  # the leader: not a candidate
    for n in names:
        await put_node(admin, node(n, "gw", edge=True))
    await admin.create(GATEWAYS, gateway_to_json(gateway("gw", [ep(n) for n in names])))


async def test_heartbeat_crash_fails_over_within_duration(
    admin: KubeClient, kubeconfig: Path, agents: dict[str, TestbedAgent]
) -> None:
    await pool(admin, "ab")
    await start(agents, kubeconfig, "z", "a", "b")
    await until_status(admin, "gw", lambda g: actives(g) == [("a", "tunnel")])
    await asyncio.sleep(0.5)
    await agents["a"].crash()
    took = await until_status(admin, "gw", lambda g: actives(g) == [("b", "tunnel")])
    # Detection is bounded by the 1 s active duration (+ watch and write latency).
    assert took < FAST.active_lease_duration_s + 0.7, took
    # The crashed node comes back: it does not take the role back.
    del agents["a"]
    await start(agents, kubeconfig, "a")
    await asyncio.sleep(1.5)
    assert actives(await get_gw(admin, "gw")) == [("b", "tunnel")]


async def test_node_ready_flip_and_raven_cfg_toggle(
    admin: KubeClient, kubeconfig: Path, agents: dict[str, TestbedAgent]
) -> None:
    await pool(admin, "ab")
    gw = await get_gw(admin, "gw")
    spec = replace(gw.spec, endpoints=(*gw.spec.endpoints, ep("a", EndpointType.PROXY)))
    body = gateway_to_json(replace(gw, spec=spec))
    await admin.replace(GATEWAYS, body)
    await start(agents, kubeconfig, "z")
    await until_status(admin, "gw", lambda g: actives(g) == [("a", "tunnel")])
    await put_node(admin, node("a", "gw", ready=False, edge=True))
    await until_status(admin, "gw", lambda g: actives(g) == [("b", "tunnel")], timeout=2)
    await put_node(admin, node("a", "gw", edge=True))
    await raven_cfg(admin, l3=False, l7=True)
    await until_status(admin, "gw", lambda g: actives(g) == [("a", "proxy")], timeout=2)
    # Re-enabling a type starts from scratch: the first healthy candidate in spec order.
    await raven_cfg(admin, l3=True, l7=True)
    await until_status(
        admin, "gw", lambda g: actives(g) == [("a", "proxy"), ("a", "tunnel")], timeout=2
    )


async def test_two_electors_never_both_lead(
    admin: KubeClient, kubeconfig: Path, agents: dict[str, TestbedAgent]
) -> None:
    await pool(admin, "")
    await put_node(admin, node("y", "gw"))
    x, y = await start(agents, kubeconfig, "z", "y")
    t_end = time.monotonic() + 2.0
    while time.monotonic() < t_end or not (x.leading or y.leading):
        assert not (x.leading and y.leading)
        await asyncio.sleep(0.005)
    first, second = (x, y) if x.leading else (y, x)
    await first.stop()
    del agents[first.name]
    t0 = time.monotonic()
    while not second.leading:
        assert time.monotonic() - t0 < 1.5, "release did not hand over quickly"
        await asyncio.sleep(0.01)
