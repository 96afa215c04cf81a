"""Which role tasks this node runs, and the small runner that starts/stops them at runtime.

`wanted_roles(view, me, leader)` is pure: from the ClusterView (raven-cfg toggles, Gateway
status) and leadership it says which roles should run here. `RoleRunner` compares wanted with
running and acts on the difference, stopping first and then starting (house style), so a
toggle in `raven-cfg` or a gateway switch never needs a restart.

Role tasks run in the runner's own TaskGroup. A role task that returns on its own is a bug:
it is logged, counted and restarted on the next adjustment. Stopping is cancellation; a role
that must undo kernel state when *disabled* (not on shutdown) provides `on_disable`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum

from ravend.model import ClusterView, EndpointType
from ravend.observe.metrics import ROLE_CRASHES, ROLE_RUNNING
from ravend.observe.readiness import Readiness

log = logging.getLogger(__name__)


class Role(StrEnum):
    """Role tasks a node can run; the order here is the shutdown order (proxy drains first)."""

    L7_SERVER = "l7-server"
    """Cloud side of the L7 tunnel: active proxy endpoint of an exposed Gateway."""
    L7_CLIENT = "l7-client"
    """Edge side of the L7 tunnel: active proxy endpoint of a Gateway that is not exposed."""
    CONTROLLER = "controller"
    """Leader-only controllers (gateway pickup, DNS, Services, CSR approval)."""
    L3 = "l3"
    """L3 data plane (gateway or member); its kernel state survives shutdown on purpose."""


SHUTDOWN_ORDER: tuple[Role, ...] = tuple(Role)


def wanted_roles(view: ClusterView, me: str, leader: bool) -> frozenset[Role]:
    """Roles this node should run now (pure)."""
    roles: set[Role] = set()
    if leader:
        roles.add(Role.CONTROLLER)
    if not view.synced:
        # Before the first full list we do not know the toggles; do not tear anything down.
        return frozenset(roles)
    cfg = view.raven_cfg
    gateway = view.gateway_of(me)
    if cfg.l3_enabled and gateway is not None:
        roles.add(Role.L3)
    if cfg.l7_enabled:
        for gw in view.gateways.values():
            if any(e.node_name == me for e in gw.active(EndpointType.PROXY)):
                roles.add(Role.L7_SERVER if gw.is_exposed else Role.L7_CLIENT)
    return frozenset(roles)


def readiness_key(role: Role) -> str:
    """The readiness condition a running role must satisfy (marked by the role itself)."""
    return f"role/{role.value}"


def adjust(
    wanted: frozenset[Role], running: Iterable[Role]
) -> tuple[tuple[Role, ...], tuple[Role, ...]]:
    """(to_stop, to_start) in a deterministic order: stop in shutdown order, start in reverse."""
    current = frozenset(running)
    stop = tuple(r for r in SHUTDOWN_ORDER if r in current - wanted)
    start = tuple(r for r in reversed(SHUTDOWN_ORDER) if r in wanted - current)
    return stop, start


@dataclass(frozen=True)
class RoleSpec:
    """How to run one role: a coroutine factory, and an optional cleanup when it is disabled."""

    run: Callable[[], Awaitable[None]]
    on_disable: Callable[[], Awaitable[None]] | None = None


class RoleRunner:
    """Runs the wanted roles as tasks of one TaskGroup; see the module docstring."""

    def __init__(
        self,
        specs: Mapping[Role, RoleSpec],
        group: asyncio.TaskGroup,
        readiness: Readiness | None = None,
    ) -> None:
        self._specs = specs
        self._group = group
        self._readiness = readiness
        self._tasks: dict[Role, asyncio.Task[None]] = {}

    @property
    def running(self) -> frozenset[Role]:
        return frozenset(r for r, t in self._tasks.items() if not t.done())

    async def apply(self, wanted: frozenset[Role]) -> None:
        """Bring the running roles to `wanted` (only roles with a spec are considered)."""
        self._reap()
        stop, start = adjust(frozenset(r for r in wanted if r in self._specs), self.running)
        for role in stop:
            await self._stop(role)
            cleanup = self._specs[role].on_disable
            if cleanup is not None:
                try:
                    await cleanup()
                except Exception:
                    log.exception("cleanup of role %s failed", role.value)
        for role in start:
            log.info("starting role %s", role.value)
            if self._readiness is not None:
                # Ready only once the role has applied its state (the role marks it).
                self._readiness.require(readiness_key(role))
            self._tasks[role] = self._group.create_task(self._guard(role), name=f"role-{role}")
            ROLE_RUNNING.labels(role=role.value).set(1)

    async def stop_all(self) -> None:
        """Stop every running role in shutdown order (no on_disable: kernel state stays)."""
        for role in SHUTDOWN_ORDER:
            if role in self._tasks:
                await self._stop(role)

    async def _stop(self, role: Role) -> None:
        task = self._tasks.pop(role)
        log.info("stopping role %s", role.value)
        task.cancel()
        # Wait for the task to finish its own cleanup; its CancelledError is expected here.
        await asyncio.wait([task])
        ROLE_RUNNING.labels(role=role.value).set(0)
        if self._readiness is not None:
            self._readiness.drop(readiness_key(role))

    def _reap(self) -> None:
        for role, task in list(self._tasks.items()):
            if task.done():
                del self._tasks[role]
                ROLE_RUNNING.labels(role=role.value).set(0)

    async def _guard(self, role: Role) -> None:
        """Run a role; a crash or a return is logged and counted, never kills the agent."""
        try:
            await self._specs[role].run()
            log.error("role %s returned; a role loop must run until cancelled", role.value)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("role %s crashed; it restarts on the next adjustment", role.value)
        ROLE_CRASHES.labels(role=role.value).inc()
