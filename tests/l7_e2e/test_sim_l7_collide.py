"""L7 end to end when node IPs collide: hangzhou and qingdao share LAN 172.16.2.0/24 and their
nodes the same addresses (netns, slow). Every request must reach the node it names: routing is
by node name, never by IP, so the kubelet that answers (X-Sim-Node) is the one asked for.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from ravend.sim.topology_default import collide_topology

from .conftest import L7Cluster, pod_path, ws_exec

pytestmark = [
    pytest.mark.netns,
    pytest.mark.slow,
    pytest.mark.asyncio(loop_scope="module"),
    pytest.mark.timeout(150),
]

TOPOLOGY = collide_topology()
EDGE_NODES = [n.name for n in TOPOLOGY.nodes if n.region in ("hangzhou", "qingdao")]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def l7(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[L7Cluster]:
    cluster = await L7Cluster.start(TOPOLOGY, tmp_path_factory.mktemp("l7collide") / "sim")
    try:
        yield cluster
    finally:
        await cluster.stop()


async def test_the_topology_really_collides() -> None:
    by_region: dict[str, set[str]] = {}
    for n in TOPOLOGY.nodes:
        by_region.setdefault(n.region, set()).add(n.ip)
    assert by_region["hangzhou"] == by_region["qingdao"]


@pytest.mark.parametrize("node", EDGE_NODES)
async def test_logs_reach_the_named_node(l7: L7Cluster, node: str) -> None:
    resp = await asyncio.wait_for(
        l7.caller().get(node, pod_path("containerLogs", node, "tailLines=2")), 10
    )
    assert resp.status == 200, resp.body
    assert resp.node == node
    assert resp.body.splitlines() == [
        f"{node} default/demo-{node}/main line {i}".encode() for i in range(2)
    ]


@pytest.mark.parametrize("node", EDGE_NODES)
async def test_exec_reaches_the_named_node(l7: L7Cluster, node: str) -> None:
    chunks = [b"who is ", node.encode()]
    head, stdout, status = await asyncio.wait_for(ws_exec(l7.caller(), node, chunks), 10)
    assert head.get("x-sim-node") == node
    assert stdout == b"".join(chunks) and b'"Success"' in status


async def test_same_address_different_nodes_concurrently(l7: L7Cluster) -> None:
    """Many interleaved requests to twin nodes (same IP, other pool): none crosses over."""
    client = l7.caller()

    async def one(node: str) -> str | None:
        return (await client.get(node, "/healthz")).node

    nodes = EDGE_NODES * 10
    answered = await asyncio.wait_for(asyncio.gather(*(one(n) for n in nodes)), 20)
    assert answered == nodes
