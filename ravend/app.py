"""The composition root: opens resources in dependency order and supervises every loop (I/O).

`run(settings, stop)` is the only place that knows every subsystem. Resources are opened with an
AsyncExitStack (closed in reverse order), long-running loops run in one TaskGroup, and a stop
request (SIGTERM/SIGINT set `stop`) triggers the ordered shutdown of house style 4:

1. role tasks stop in `roles.SHUTDOWN_ORDER`: the L7 proxy drains first, the controller releases
   leadership at once so a peer takes over, L3 stops *without* touching the kernel (routes and
   tunnels stay so a restart never black-holes traffic);
2. the remaining loops (informers, elector, role adjuster) are cancelled;
3. the exit stack stops the L7 data loop thread and closes the API client and the observe
   server.

The whole sequence runs under `settings.runtime.shutdown_deadline`; the CLI also arms a hard
exit timer in a thread, so even a wedged event loop ends before the kubelet's SIGKILL.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine
from contextlib import AsyncExitStack
from typing import Any

from prometheus_client import Gauge

from ravend.loopthread import LoopThread, loop_lag
from ravend.model import ClusterView
from ravend.observe.metrics import ERRORS
from ravend.observe.readiness import Readiness
from ravend.observe.server import ObserveServer
from ravend.planes import PlaneContext, build_role_specs, leader_loop, webhook_loop
from ravend.roles import RoleRunner, wanted_roles
from ravend.runtime import Latest
from ravend.settings import AgentSettings

log = logging.getLogger(__name__)

ROLE_RESYNC_SECONDS = 5.0
"""Re-evaluate roles at least this often, so a crashed role restarts without a view change."""
LOOP_PROBE_SECONDS = 2.0
"""How often the L7 data loop's lag is probed."""
LOOP_LAG_LIMIT = 10.0
"""Seconds a probe may wait on the L7 data loop before the agent reports not ready."""
L7_LOOP_LAG = Gauge(
    "ravend_l7_loop_lag_seconds",
    "Seconds the latest callback waited on the L7 data loop thread (the limit when it never ran)",
)


class _Stopped(Exception):
    """Raised inside the TaskGroup to end it after the ordered shutdown completed."""


async def run(settings: AgentSettings, stop: asyncio.Event) -> None:
    """Run the agent until `stop` is set, then shut down in order (see module docstring)."""
    from ravend.kube.client import connect
    from ravend.kube.informer import ClusterInformers

    readiness = Readiness()
    readiness.require("informers")
    async with AsyncExitStack() as stack:
        observe = ObserveServer(settings.observe.host, settings.observe.port, readiness)
        await observe.start()
        stack.push_async_callback(observe.stop)

        client = await connect(settings.kubeconfig)
        stack.push_async_callback(client.close)
        l7_loop = None
        if settings.runtime.l7_event_loop != "same":
            # Closed after the roles have stopped (the exit stack unwinds after the TaskGroup).
            l7_loop = await stack.enter_async_context(
                LoopThread("l7", settings.runtime.l7_event_loop)
            )
        view: Latest[ClusterView] = Latest(ClusterView())
        informers = ClusterInformers(client, settings.kube, view)
        leader: Latest[bool] = Latest(False)
        probes: Latest[frozenset[str]] = Latest(frozenset())
        ctx = PlaneContext(settings, client, view, leader, readiness, observe, probes, l7_loop)
        try:
            async with asyncio.TaskGroup() as tg:
                runner = RoleRunner(build_role_specs(ctx), tg, readiness)
                tg.create_task(_watched("informers", informers.run), name="informers")
                tg.create_task(_watched("readiness", lambda: _track_sync(view, readiness)))
                tg.create_task(_watched("leader", lambda: leader_loop(ctx)), name="leader")
                tg.create_task(_watched("webhook", lambda: webhook_loop(ctx)), name="webhook")
                tg.create_task(
                    _watched("roles", lambda: _adjust_roles(ctx, runner)), name="role-adjuster"
                )
                if l7_loop is not None:
                    probe = l7_loop  # bound here: mypy cannot narrow inside the lambda
                    tg.create_task(
                        _watched("l7-loop", lambda: _watch_loop(probe, readiness)), name="l7-loop"
                    )
                await stop.wait()
                log.info("stop requested: shutting down roles in order")
                await runner.stop_all()
                raise _Stopped
        except* _Stopped:
            log.info("roles stopped; closing resources")


async def _watched(name: str, factory: Callable[[], Awaitable[None]]) -> None:
    """Run a loop that must never return; returning or crashing is a bug that ends the agent."""
    try:
        await factory()
    except asyncio.CancelledError:
        raise
    except Exception:
        ERRORS.labels(subsystem=name, kind="crash").inc()
        log.exception("loop %s crashed", name)
        raise
    ERRORS.labels(subsystem=name, kind="returned").inc()
    raise RuntimeError(f"loop {name} returned; it must run until cancelled")


async def _track_sync(view: Latest[ClusterView], readiness: Readiness) -> None:
    async for snapshot in view.updates():
        readiness.mark("informers", snapshot.synced, "" if snapshot.synced else "listing")


async def _watch_loop(thread: LoopThread, readiness: Readiness) -> None:
    """Probe the L7 data loop's lag every LOOP_PROBE_SECONDS: a gauge, and not ready while a
    callback waits there longer than LOOP_LAG_LIMIT (a wedged data path must not look healthy
    just because the agent's own loop still answers /readyz)."""
    readiness.require("l7-loop")
    while True:
        lag = await loop_lag(thread, LOOP_LAG_LIMIT)
        L7_LOOP_LAG.set(LOOP_LAG_LIMIT if lag is None else lag)
        detail = "" if lag is not None else f"no callback ran within {LOOP_LAG_LIMIT:.0f} s"
        readiness.mark("l7-loop", lag is not None, detail)
        await asyncio.sleep(LOOP_PROBE_SECONDS)


async def _adjust_roles(ctx: PlaneContext, runner: RoleRunner) -> None:
    """Follow the view and leadership; re-apply periodically so crashed roles restart."""
    seen_view, seen_leader = -1, -1
    while True:
        wait_view = asyncio.ensure_future(ctx.view.wait_newer(seen_view))
        wait_leader = asyncio.ensure_future(ctx.leader.wait_newer(seen_leader))
        try:
            await asyncio.wait(
                [wait_view, wait_leader],
                timeout=ROLE_RESYNC_SECONDS,
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            for fut in (wait_view, wait_leader):
                fut.cancel()
            # gather(return_exceptions) collects the helpers' CancelledError without swallowing
            # a cancellation of this task itself (suppress() around `await fut` would).
            await asyncio.gather(wait_view, wait_leader, return_exceptions=True)
        seen_view, seen_leader = ctx.view.version, ctx.leader.version
        wanted = wanted_roles(ctx.view.value, ctx.settings.node_name, ctx.leader.value)
        await runner.apply(wanted)


def run_blocking(coro: Coroutine[Any, Any, None], event_loop: str) -> None:
    """Run `coro` on the chosen loop.

    "auto" is the standard asyncio loop: uvloop cannot open the AF_NETLINK datagram sockets
    pyroute2's AsyncIPRoute needs ("cannot open a UDP handle, invalid family 16"), so L3
    cannot run on it, and uvloop 0.23 aborted under connection churn (environment.md).
    "uvloop" stays selectable for nodes that only proxy.
    """
    factory: Callable[[], asyncio.AbstractEventLoop] | None = None
    if event_loop == "uvloop":
        import uvloop

        factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(coro)
