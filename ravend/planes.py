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
from ravend.roles import Role, RoleSpec
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
    return {}


async def leader_loop(ctx: PlaneContext) -> None:
    """Compete for controller leadership (publishes into ctx.leader)."""
    await asyncio.Event().wait()
