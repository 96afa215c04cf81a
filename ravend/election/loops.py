"""Composition of the election loops for one ravend process (supervision only, I/O via loops).

`Election` binds the three loops to one API handle and one ClusterView cell:
- `LeaderElector` (always on, eligible nodes only) publishes `leader: Latest[bool]`;
- `Heartbeat` (always on) renews this node's heartbeat Lease when it is a candidate;
- `PickupController` (acts only while leading) writes Gateway status.

`run()` runs all three in one TaskGroup; the agent's composition root may instead run `elector`
and `heartbeat` as always-on loops and `pickup.run()` inside its controller role.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from ravend.election.api import ElectionApi
from ravend.election.controller import PickupController
from ravend.election.elector import LeaderElector
from ravend.election.heartbeat import Heartbeat
from ravend.election.settings import ElectionSettings
from ravend.model import ClusterView
from ravend.runtime import Latest


def eligible_in(view: Latest[ClusterView], me: str, settings: ElectionSettings) -> bool:
    """Whether `me` may compete now: synced view, node known, not excluded by label."""
    snapshot = view.value
    node = snapshot.nodes.get(me)
    return snapshot.synced and node is not None and settings.is_eligible(node.meta.labels)


class Election:
    def __init__(
        self,
        api: ElectionApi,
        me: str,
        view: Latest[ClusterView],
        settings: ElectionSettings,
        *,
        leader: Latest[bool] | None = None,
        probes: Latest[frozenset[str]] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.me = me
        self.leader: Latest[bool] = leader if leader is not None else Latest(False)
        self.elector = LeaderElector(
            api,
            me,
            self.leader,
            settings,
            eligible=lambda: eligible_in(view, me, settings),
            clock=clock,
            view=view,
        )
        self.heartbeat = Heartbeat(api, me, view, settings, clock=clock)
        self.pickup = PickupController(
            api, view, self.leader, settings, self.elector, probes=probes, clock=clock
        )

    async def run(self) -> None:
        """Run until cancelled; cancellation releases leadership and announces a restart."""
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self.elector.run(), name=f"elector-{self.me}")
            tg.create_task(self.heartbeat.run(), name=f"heartbeat-{self.me}")
            tg.create_task(self.pickup.run(), name=f"pickup-{self.me}")
