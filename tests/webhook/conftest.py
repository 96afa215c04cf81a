"""ravend's webhook served for real: CSR-issued certificate, the embedded API server calling it.

`served` runs, against the `apiserver` fixture: the real CsrApprover (the elected controller's
part), `run_webhook` for one node (certificate through the CSR API, signed by the cluster CA),
and the sim's `follow_webhooks` (registration once the webhook answers, as the simulated
cluster does). Everything is cancelled and awaited at teardown.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from ravend.certs.manager import CertManager
from ravend.certs.policy import NODE_NAME_EXTRA
from ravend.certs.settings import CertSettings
from ravend.controllers.csr_approver import CsrApprover
from ravend.controllers.webhook_serving import run_webhook, webhook_cert_manager
from ravend.election.examples import manual_view
from ravend.kube.client import KubeClient, connect
from ravend.runtime import Latest
from ravend.sim.apiserver import SimApiServer
from ravend.sim.cluster_webhooks import WebhookTargets, follow_webhooks

NODE = "izwz9dohcv74iegqecp4axz"  # the manual's cloud node


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def cert_settings(state_dir: Path) -> CertSettings:
    return CertSettings(state_dir=state_dir, lifetime_seconds=3600, retry_delay=0.2)


async def node_client(apiserver: SimApiServer, tmp_path: Path, node: str) -> KubeClient:
    """The node's ravend: its service account, bound to a pod on `node`."""
    token = f"sa-{node}"
    apiserver.add_identity(
        token,
        "system:serviceaccount:kube-system:ravend",
        ["system:serviceaccounts"],
        {NODE_NAME_EXTRA: [node]},
    )
    return await connect(apiserver.write_kubeconfig(tmp_path / f"kc-{node}", token=token))


@contextlib.asynccontextmanager
async def running(*coros: object) -> AsyncIterator[list[asyncio.Task[None]]]:
    """Run coroutines as tasks; cancel and await them on exit (no task outlives a test)."""
    tasks = [asyncio.ensure_future(c) for c in coros]  # type: ignore[call-overload]
    try:
        yield tasks
    finally:
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t


@pytest.fixture
async def admin(kubeconfig: Path) -> AsyncIterator[KubeClient]:
    client = await connect(kubeconfig)
    yield client
    await client.close()


@pytest.fixture
async def approver(admin: KubeClient) -> AsyncIterator[CsrApprover]:
    approver = CsrApprover(admin, Latest(dataclasses.replace(manual_view(), synced=True)))
    async with running(approver.run()):
        yield approver


@dataclass
class Served:
    port: int
    manager: CertManager
    client: KubeClient
    task: asyncio.Task[None]
    """run_webhook's task; cancel it to take the webhook down."""


@pytest.fixture
async def served(
    apiserver: SimApiServer, approver: CsrApprover, tmp_path: Path
) -> AsyncIterator[Served]:
    client = await node_client(apiserver, tmp_path, NODE)
    manager = webhook_cert_manager(client, NODE, cert_settings(tmp_path / "state"))
    port = free_port()
    ready, registered = asyncio.Event(), asyncio.Event()
    webhook = run_webhook(
        client, NODE, manager.settings, port, ready.set, host="127.0.0.1", manager=manager
    )
    follow = follow_webhooks(
        apiserver,
        WebhookTargets(("127.0.0.1",), port),
        on_registered=lambda _a: registered.set(),
        poll=0.1,
    )
    try:
        async with running(webhook, follow) as (task, _):
            await asyncio.wait_for(ready.wait(), 15)
            await asyncio.wait_for(registered.wait(), 5)
            yield Served(port, manager, client, task)
    finally:
        await client.close()
