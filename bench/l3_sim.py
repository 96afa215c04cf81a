"""A simulated cluster with the L3 plane running, shared by the L3 end-to-end tests and benches.

`L3Sim` brings up a `SimCluster` and makes L3 run on every node in one of two ways:

- real agents (the default): `python -m ravend agent` per node namespace, started by
  SimCluster; the composition root runs the election and the L3 role, so status is written by
  the real leader;
- in-process (`real_agents=False`, for debugging the plane alone): one informer set over the
  admin kubeconfig feeds one `L3Agent` per node, each driving its node's namespace (`netns=`),
  with a per-node WireGuard link name because wireguard-go's UAPI sockets share
  /var/run/wireguard on the host. No election runs then: `elect()` writes
  `status.activeEndpoints` (and `status.nodes`) through the admin API, as the leader would.

The informer view (`L3Sim.view`) is kept in both modes so tests can wait on what the API says.
Everything is torn down by `stop()`, even after a failed test: agents cancelled, every process
in the run's namespaces killed by PID, namespaces deleted, stray UAPI sockets removed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ravend.kube.client import KubeClient, connect
from ravend.kube.codec import endpoint_to_json
from ravend.kube.informer import ClusterInformers
from ravend.kube.resources import CONFIGMAPS, GATEWAYS
from ravend.kube.settings import KubeSettings
from ravend.l3.agent import L3Agent
from ravend.l3.probe import ProbeSettings
from ravend.l3.settings import L3Settings
from ravend.model import KEY_L3, RAVEN_CFG_NAME, RAVEN_NAMESPACE, ClusterView, Endpoint
from ravend.runtime import Latest
from ravend.sim.cluster import ClusterOptions, SimCluster
from ravend.sim.topology import Topology

log = logging.getLogger(__name__)


@dataclass
class _Local:
    agent: L3Agent
    task: asyncio.Task[None] | None = None


class L3Sim:
    """See the module docstring."""

    def __init__(self, topology: Topology, run_dir: Path, *, real_agents: bool = True) -> None:
        self.real = real_agents
        self.sim = SimCluster(topology, ClusterOptions(run_dir=run_dir, agents=self.real))
        self.topology = topology
        self.client: KubeClient | None = None
        self.view: Latest[ClusterView] = Latest(ClusterView())
        self.local: dict[str, _Local] = {}
        self._tasks: list[asyncio.Task[None]] = []

    # ---- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        try:
            await self.sim.up()
            self.client = await connect(self.sim.admin_kubeconfig)
            informers = ClusterInformers(
                self.client, KubeSettings(kubeconfig=self.sim.admin_kubeconfig), self.view
            )
            self._tasks.append(asyncio.create_task(informers.run(), name="l3sim-informers"))
            if not self.real:
                for n in self.topology.nodes:
                    self.start_local(n.name)
        except BaseException:
            await self.stop()
            raise

    def settings_for(self, node: str) -> L3Settings:
        if self.real:
            return L3Settings()
        i = [n.name for n in self.topology.nodes].index(node)
        return L3Settings(wireguard_link=f"{self.sim.prefix}w{i}", resync_period_s=5.0)

    def start_local(self, node: str) -> L3Agent:
        n = self.topology.node(node)
        agent = L3Agent(
            node,
            n.ip,
            self.settings_for(node),
            self.sim.run_dir / "nodes" / node / "state",
            self.view,
            client=self.client,
            netns=self.sim.node_netns(node),
            probe=ProbeSettings(),
        )
        task = asyncio.create_task(agent.run(), name=f"l3-{node}")
        self.local[node] = _Local(agent, task)
        return agent

    async def stop_local(self, node: str) -> None:
        """Cancel a node's in-process agent (kernel state stays, like a process exit)."""
        local = self.local.get(node)
        if local is not None and local.task is not None:
            local.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await local.task
            local.task = None

    async def restart_agent(self, node: str) -> None:
        """Stop and start the L3 plane of `node` (process or in-process agent)."""
        if self.real:
            await self.sim.kill_agent(node)
            self.sim.start_agent(node)
        else:
            await self.stop_local(node)
            self.start_local(node)

    async def stop(self) -> None:
        for node in list(self.local):
            await self.stop_local(node)
        for t in self._tasks:
            t.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        if self.client is not None:
            await self.client.close()
        await self.sim.down()
        if not self.real:
            for i in range(len(self.topology.nodes)):
                _unlink(f"/var/run/wireguard/{self.sim.prefix}w{i}.sock")

    # ---- control plane stand-ins --------------------------------------------------------------

    async def wait_synced(self, timeout: float = 20.0) -> ClusterView:
        async with asyncio.timeout(timeout):
            while not self.view.value.synced:
                await self.view.wait_newer(self.view.version)
        return self.view.value

    async def elect(self, gateway: str, tunnel_nodes: list[str] | None = None) -> None:
        """Write status like the pickup leader: the given (default: first) tunnel candidates."""
        assert self.client is not None

        def mutate(obj: dict[str, Any]) -> dict[str, Any]:
            spec_eps = (obj.get("spec") or {}).get("endpoints") or []
            tunnels = [e for e in spec_eps if e.get("type") == "tunnel"]
            chosen = tunnel_nodes if tunnel_nodes is not None else [tunnels[0]["nodeName"]]
            active = [
                {**e, "config": {**(e.get("config") or {}), KEY_L3: "true"}}
                for e in tunnels
                if e["nodeName"] in chosen
            ]
            obj["status"] = {"nodes": self._status_nodes(gateway), "activeEndpoints": active}
            return obj

        await self.client.update_with_retry(GATEWAYS, gateway, None, mutate, status=True)

    def _status_nodes(self, gateway: str) -> list[dict[str, Any]]:
        return [
            {"nodeName": n.name, "privateIP": n.ip, "subnets": list(n.pod_cidrs)}
            for n in self.topology.nodes
            if n.gateway == gateway
        ]

    async def elect_all(self) -> None:
        for gw in self.topology.gateways:
            await self.elect(gw.name)

    async def set_l3(self, enabled: bool) -> None:
        assert self.client is not None
        value = "true" if enabled else "false"

        def mutate(obj: dict[str, Any]) -> dict[str, Any]:
            obj.setdefault("data", {})[KEY_L3] = value
            return obj

        await self.client.update_with_retry(CONFIGMAPS, RAVEN_CFG_NAME, RAVEN_NAMESPACE, mutate)

    async def add_tunnel_candidate(self, gateway: str, node: str) -> None:
        """Append `node` as a tunnel endpoint of `gateway` (same NAT flag as the others)."""
        assert self.client is not None

        def mutate(obj: dict[str, Any]) -> dict[str, Any] | None:
            eps = obj["spec"]["endpoints"]
            if any(e["nodeName"] == node and e["type"] == "tunnel" for e in eps):
                return None
            nat = bool(eps[0].get("underNAT")) if eps else True
            eps.append(endpoint_to_json(Endpoint(node, "tunnel", 4500, under_nat=nat)))  # type: ignore[arg-type]
            return obj

        await self.client.update_with_retry(GATEWAYS, gateway, None, mutate)

    # ---- data path helpers --------------------------------------------------------------------

    def pod_ip(self, node: str) -> str:
        return self.topology.node(node).pod_ip

    async def ping_all(self, wait: float = 1.0) -> dict[tuple[str, str], bool]:
        """Ping from every pod to every other pod's IP, concurrently."""
        names = [n.name for n in self.topology.nodes]
        pairs = [(a, b) for a in names for b in names if a != b]
        results = await asyncio.gather(
            *(self.sim.ping(a, self.pod_ip(b), count=1, wait=wait) for a, b in pairs)
        )
        return dict(zip(pairs, results, strict=True))

    async def wait_mesh(self, timeout: float = 30.0) -> dict[tuple[str, str], bool]:
        """Ping the full mesh until every pair answers or `timeout`; returns the last result."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            result = await self.ping_all()
            if all(result.values()) or loop.time() > deadline:
                return result
            await asyncio.sleep(0.5)

    @contextlib.asynccontextmanager
    async def meshed(self, timeout: float = 40.0) -> AsyncIterator[L3Sim]:
        """Start, wait for the informers and for every pod to reach every pod (RuntimeError
        naming the pairs that do not), yield, and always stop."""
        await self.start()
        try:
            await self.wait_synced()
            mesh = await self.wait_mesh(timeout)
            if not all(mesh.values()):
                raise RuntimeError(f"mesh not up: {[k for k, ok in mesh.items() if not ok]}")
            yield self
        finally:
            await self.stop()


def _unlink(path: str) -> None:
    # wireguard-go leaves its UAPI socket behind when killed; microseconds, not worth a thread.
    with contextlib.suppress(OSError):
        Path(path).unlink()
