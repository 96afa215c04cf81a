"""Wiring of the planes into role specs (composition helpers for app.py; no I/O of its own).

Each plane exposes a coroutine that runs until cancelled; this module binds them to the shared
context (settings, API client, cluster view, leadership, readiness) and maps them to roles.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ravend.certs.csr import CertKind
from ravend.certs.manager import CertManager, CertSpec
from ravend.certs.settings import CertSettings
from ravend.loopthread import LoopThread
from ravend.model import ClusterView
from ravend.observe.readiness import Readiness
from ravend.observe.server import ObserveServer
from ravend.roles import Role, RoleSpec, readiness_key
from ravend.runtime import Latest
from ravend.settings import AgentSettings

if TYPE_CHECKING:
    from ravend.kube.client import KubeClient
    from ravend.l3.agent import L3Agent


@dataclass(frozen=True)
class PlaneContext:
    """What every plane may use; built once by the composition root."""

    settings: AgentSettings
    client: KubeClient
    view: Latest[ClusterView]
    leader: Latest[bool]
    readiness: Readiness
    observe: ObserveServer
    probes: Latest[frozenset[str]]
    """Peer gateway nodes this node's own link probes show down: published by the L3 agent,
    read by the election (ravend/l3/probe_verdict.py has the safety rule)."""
    l7_loop: LoopThread | None = None
    """The thread whose loop carries the L7 data path; None: the agent's own loop."""


def build_role_specs(ctx: PlaneContext) -> dict[Role, RoleSpec]:
    """Role -> how to run it on this node."""
    l3 = L3Role(ctx)
    ctx.observe.add_state("l3", l3.debug_state)
    return {
        Role.L3: RoleSpec(l3.run, l3.disable),
        Role.CONTROLLER: RoleSpec(lambda: run_controllers(ctx)),
        Role.L7_SERVER: RoleSpec(lambda: run_l7_server_role(ctx)),
        Role.L7_CLIENT: RoleSpec(lambda: run_l7_client_role(ctx)),
    }


class L3Role:
    """The L3 data plane as a role: one L3Agent per start; `disable` removes ravend's kernel
    state (raven-cfg turned L3 off or the node left its pool), cancellation leaves it in place.
    Every agent publishes its link-probe evidence into `ctx.probes`, which outlives them."""

    def __init__(self, ctx: PlaneContext) -> None:
        self._ctx = ctx
        self._agent: L3Agent | None = None

    def _make(self) -> L3Agent:
        from ravend.l3.agent import L3Agent
        from ravend.l3.settings import L3Settings

        ctx = self._ctx

        def ready(ok: bool, detail: str) -> None:
            ctx.readiness.mark(readiness_key(Role.L3), ok, detail)

        return L3Agent(
            ctx.settings.node_name,
            ctx.settings.node_ip,
            L3Settings(),
            ctx.settings.state_dir,
            ctx.view,
            client=ctx.client,
            ready=ready,
            probe_failed=ctx.probes,
        )

    async def run(self) -> None:
        self._agent = self._make()
        await self._agent.run()

    async def disable(self) -> None:
        agent = self._agent or self._make()
        await agent.disable()

    def debug_state(self) -> dict[str, object]:
        return self._agent.debug_state() if self._agent is not None else {"role": "none"}


def _cert_manager(ctx: PlaneContext, kind: CertKind) -> CertManager:
    """A manager for one of this node's certificates; the on-disk store survives restarts."""
    from ravend.certs.kube_csr import KubeCsrApi

    spec = CertSpec(f"{kind.value}", kind, ctx.settings.node_name)
    return CertManager(CertSettings(state_dir=ctx.settings.state_dir), spec, KubeCsrApi(ctx.client))


def _cluster_ca(ctx: PlaneContext) -> bytes:
    ca = ctx.client.ca_pem()
    if ca is None:
        raise RuntimeError("no cluster CA bundle: L7 needs it to authenticate peers (mTLS)")
    return ca


async def run_l7_server_role(ctx: PlaneContext) -> None:
    """Cloud proxy: tunnel server on 10262, front ends on 10263/10264."""
    from ravend.l7proxy.plane import run_l7_server

    await run_l7_server(
        ctx.settings.node_name,
        ctx.view,
        ctx.client,
        serving=_cert_manager(ctx, CertKind.SERVING),
        proxy_client=_cert_manager(ctx, CertKind.PROXY_CLIENT),
        client_ca_pem=_cluster_ca(ctx),
        ready=lambda: ctx.readiness.mark(readiness_key(Role.L7_SERVER)),
        data=ctx.l7_loop,
    )


async def run_l7_client_role(ctx: PlaneContext) -> None:
    """Edge proxy: dial every cloud tunnel server, serve streams to this pool's kubelets."""
    from ravend.l7proxy.plane import run_l7_client

    await run_l7_client(
        ctx.settings.node_name,
        ctx.view,
        tunnel_client=_cert_manager(ctx, CertKind.TUNNEL_CLIENT),
        proxy_client=_cert_manager(ctx, CertKind.PROXY_CLIENT),
        server_ca_pem=_cluster_ca(ctx),
        ready=lambda: ctx.readiness.mark(readiness_key(Role.L7_CLIENT)),
        data=ctx.l7_loop,
    )


async def leader_loop(ctx: PlaneContext) -> None:
    """Election loops that run on every node: the controller-Lease elector (eligible nodes
    only), this node's gateway heartbeat, and gateway pickup (which acts only while leading)."""
    from ravend.election.api import KubeElectionApi
    from ravend.election.loops import Election

    election = Election(
        KubeElectionApi(ctx.client),
        ctx.settings.node_name,
        ctx.view,
        ctx.settings.election,
        leader=ctx.leader,
        # Peer gateways this node's own link probes show down (only while it is its pool's
        # gateway; ravend/l3/probe_verdict.py has the safety rule, docs/failover.md the why).
        probes=ctx.probes,
    )
    await election.run()


async def webhook_loop(ctx: PlaneContext) -> None:
    """Every ravend serves the stateless conversion/validation webhooks (port 0: disabled)."""
    from ravend.controllers.webhook_serving import run_webhook

    if ctx.settings.webhook_port == 0:
        await asyncio.Event().wait()  # disabled: a loop must still never return
    await run_webhook(
        ctx.client,
        ctx.settings.node_name,
        CertSettings(state_dir=ctx.settings.state_dir),
        ctx.settings.webhook_port,
        lambda: None,  # serving the webhook is not part of readiness: it needs a leader first
    )


async def run_controllers(ctx: PlaneContext) -> None:
    """The leader-only controllers besides pickup: DNS/Services and CSR approval."""
    from ravend.controllers.cabundle import keep_ca_bundles
    from ravend.controllers.csr_approver import CsrApprover
    from ravend.controllers.objects import ObjectsController

    objects = ObjectsController(ctx.client, ctx.view)
    approver = CsrApprover(ctx.client, ctx.view)
    ca = ctx.client.ca_pem()
    async with asyncio.TaskGroup() as tg:
        tg.create_task(approver.run(), name="csr-approver")
        if ca is not None:
            tg.create_task(keep_ca_bundles(ctx.client, ca), name="ca-bundles")
        # Ready once the first full pass over DNS and Services has been made.
        snapshot = ctx.view.value
        while not snapshot.synced:
            _, snapshot = await ctx.view.wait_newer(ctx.view.version)
        await objects.reconcile(snapshot)
        ctx.readiness.mark(readiness_key(Role.CONTROLLER))
        tg.create_task(objects.run(), name="objects-controller")
