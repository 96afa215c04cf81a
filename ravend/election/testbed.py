"""Election agents against a real API endpoint, for component tests and benchmarks (does I/O).

`TestbedAgent` is one simulated ravend as far as election goes: its own KubeClient, its own
informers and ClusterView, and an `Election`. It can stop gracefully (Lease release, "restarting"
heartbeat) or *crash*: its API link is cut first, so nothing is written on the way out, exactly
like a killed process or a cut cable. Used with the embedded API server (`ravend.sim`).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from ravend.election.api import ElectionApi, KubeElectionApi
from ravend.election.loops import Election
from ravend.election.pickup import PickupEvent
from ravend.election.settings import ElectionSettings
from ravend.kube import errors
from ravend.kube.client import KubeClient, connect
from ravend.kube.informer import ClusterInformers
from ravend.kube.settings import KubeSettings
from ravend.model import ClusterView, Gateway, Lease
from ravend.runtime import Latest


class CuttableApi:
    """Wraps an ElectionApi; while `cut`, every call fails as an unreachable server would."""

    def __init__(self, inner: ElectionApi) -> None:
        self._inner = inner
        self.cut = False

    def _check(self) -> None:
        if self.cut:
            raise errors.Unavailable("link cut (testbed fault)")

    async def get_lease(self, namespace: str, name: str) -> Lease | None:
        self._check()
        return await self._inner.get_lease(namespace, name)

    async def create_lease(self, lease: Lease) -> Lease:
        self._check()
        return await self._inner.create_lease(lease)

    async def replace_lease(self, lease: Lease) -> Lease:
        self._check()
        return await self._inner.replace_lease(lease)

    async def write_gateway_status(self, gw: Gateway) -> Gateway:
        self._check()
        return await self._inner.write_gateway_status(gw)

    async def emit_event(self, gw: Gateway, event: PickupEvent) -> None:
        self._check()
        await self._inner.emit_event(gw, event)


class TestbedAgent:
    """One node's election stack over its own connection to the API server."""

    __test__ = False  # not a pytest test class, despite the name

    def __init__(self, name: str, kubeconfig: Path, settings: ElectionSettings) -> None:
        self.name = name
        self._kubeconfig = kubeconfig
        self._settings = settings
        self._client: KubeClient | None = None
        self._task: asyncio.Task[None] | None = None
        self.view: Latest[ClusterView] = Latest(ClusterView())
        self.api: CuttableApi | None = None
        self.election: Election | None = None

    @property
    def leading(self) -> bool:
        return self.election is not None and self._task is not None and self.election.leader.value

    async def start(self) -> None:
        self._client = await connect(self._kubeconfig)
        kube_settings = KubeSettings(kubeconfig=self._kubeconfig, coalesce_s=0.01)
        self.view = Latest(ClusterView())
        informers = ClusterInformers(self._client, kube_settings, self.view)
        self.api = CuttableApi(KubeElectionApi(self._client))
        self.election = Election(self.api, self.name, self.view, self._settings)
        self._task = asyncio.create_task(self._run(informers), name=f"testbed-{self.name}")

    async def _run(self, informers: ClusterInformers) -> None:
        assert self.election is not None
        async with asyncio.TaskGroup() as tg:
            tg.create_task(informers.run())
            tg.create_task(self.election.run())

    async def stop(self) -> None:
        """Graceful: leadership released, heartbeat says "restarting"."""
        await self._end()

    async def crash(self) -> None:
        """Abrupt: nothing more reaches the API server from this agent."""
        if self.api is not None:
            self.api.cut = True
        await self._end()

    async def _end(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        if self._client is not None:
            await self._client.close()
            self._client = None
