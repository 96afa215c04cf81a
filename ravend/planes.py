"""Wiring of the planes into role specs (composition helpers for app.py; no I/O of its own).

Each plane exposes a coroutine that runs until cancelled; this module binds them to the shared
context (settings, API client, cluster view, leadership, readiness) and maps them to roles.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ravend.model import ClusterView
from ravend.observe.readiness import Readiness
from ravend.observe.server import ObserveServer
from ravend.roles import Role, RoleSpec, readiness_key
from ravend.runtime import Latest
from ravend.settings import AgentSettings

if TYPE_CHECKING:
    from ravend.kube.client import KubeClient


@dataclass(frozen=True)
class PlaneContext:
    """What every plane may use; built once by the composition root."""

    settings: AgentSettings
    client: KubeClient
    view: Latest[ClusterView]
    leader: Latest[bool]
    readiness: Readiness
    observe: ObserveServer


def build_role_specs(ctx: PlaneContext) -> dict[Role, RoleSpec]:
    """Role -> how to run it on this node."""
    return {Role.CONTROLLER: RoleSpec(lambda: run_controllers(ctx))}


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
    )
    await election.run()


async def run_controllers(ctx: PlaneContext) -> None:
    """The leader-only controllers besides pickup: DNS/Services and CSR approval."""
    from ravend.controllers.csr_approver import CsrApprover
    from ravend.controllers.objects import ObjectsController

    objects = ObjectsController(ctx.client, ctx.view)
    approver = CsrApprover(ctx.client, ctx.view)
    async with asyncio.TaskGroup() as tg:
        tg.create_task(approver.run(), name="csr-approver")
        # Ready once the first full pass over DNS and Services has been made.
        snapshot = ctx.view.value
        while not snapshot.synced:
            _, snapshot = await ctx.view.wait_newer(ctx.view.version)
        await objects.reconcile(snapshot)
        ctx.readiness.mark(readiness_key(Role.CONTROLLER))
        tg.create_task(objects.run(), name="objects-controller")
