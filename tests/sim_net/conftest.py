"""Fixtures for the simulated-network tests: bring a SimCluster up, always tear it down."""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path

import pytest

from ravend.sim.cluster import ClusterOptions, SimCluster
from ravend.sim.topology import Topology

HAVE_NETNS = (
    os.geteuid() == 0 and shutil.which("ip") is not None and shutil.which("nft") is not None
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Skip this directory's netns tests where namespaces cannot be made (not root, no tools)."""
    skip = pytest.mark.skip(reason="needs root, ip and nft")
    for item in items:
        if not HAVE_NETNS and "netns" in item.keywords and "sim_net" in str(item.path):
            item.add_marker(skip)


@pytest.fixture
def cluster_ctx() -> Callable[..., AbstractAsyncContextManager[SimCluster]]:
    """`async with cluster_ctx(topo, run_dir, apiserver=...) as sim:` (see running_cluster)."""
    return running_cluster


@asynccontextmanager
async def running_cluster(
    topo: Topology, run_dir: Path, *, apiserver: bool = True
) -> AsyncIterator[SimCluster]:
    """A cluster without agents (harness tests); removed even when the test fails."""
    cluster = SimCluster(topo, ClusterOptions(run_dir=run_dir, agents=False, apiserver=apiserver))
    elapsed = await cluster.up()
    print(f"bring-up of {len(topo.nodes)} nodes ({cluster.prefix}): {elapsed:.2f} s")
    try:
        yield cluster
    finally:
        await cluster.down()
