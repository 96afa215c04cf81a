"""The informer's watch watchdog against the embedded API server's "silenced watch" fault.

A silenced watch stays open and sends nothing, not even bookmarks: what a leader saw when its
Lease watch stalled while its writes still worked. Without the watchdog the informer waits
for the watch's timeoutSeconds (30 s here) and its view stays frozen meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

import pytest
from prometheus_client import REGISTRY

from ravend.kube.client import KubeClient
from ravend.kube.informer import Informer
from ravend.kube.resources import LEASES
from ravend.kube.settings import KubeSettings
from ravend.sim.apiserver import SimApiServer

SILENCE_S = 1.0
SELECTOR = "app.kubernetes.io/managed-by=ravend"
WATCHDOG = KubeSettings(
    request_timeout_s=5.0,
    connect_timeout_s=2.0,
    watch_timeout_s=30,
    watch_silence_s=SILENCE_S,
    backoff_initial_s=0.1,
    backoff_max_s=0.8,
    coalesce_s=0.02,
)


@pytest.fixture
def kube_settings() -> KubeSettings:
    return WATCHDOG


async def eventually(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.02)


@contextlib.asynccontextmanager
async def running(coro: Coroutine[Any, Any, None]) -> AsyncIterator[None]:
    task = asyncio.ensure_future(coro)
    try:
        yield
        assert not task.done(), f"informer ended early: {task}"
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def lease(name: str, managed: bool = True) -> dict[str, Any]:
    labels = {"app.kubernetes.io/managed-by": "ravend"} if managed else {}
    return {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": name, "namespace": "kube-system", "labels": labels},
        "spec": {"holderIdentity": name},
    }


def restarts(reason: str) -> float:
    labels = {"resource": "leases", "reason": reason}
    return REGISTRY.get_sample_value("ravend_informer_watch_restarts_total", labels) or 0.0


async def silence_the_open_watch(apiserver: SimApiServer) -> None:
    await eventually(
        lambda: apiserver.faults.silence_watches("leases") == 1, 5.0, "the informer's watch"
    )


async def test_silent_watch_is_abandoned_and_the_view_catches_up(
    kube: KubeClient, apiserver: SimApiServer, caplog: pytest.LogCaptureFixture
) -> None:
    apiserver.api.bookmark_interval = 0.2
    inf = Informer(kube, LEASES, "kube-system", SELECTOR)
    silent_before = restarts("silent")
    async with running(inf.run()):
        await eventually(lambda: inf.synced, 5.0, "first list")
        await silence_the_open_watch(apiserver)
        await kube.create(LEASES, lease("mine"))
        # The stalled stream lasts 30 s; the view must catch up within the silence limit plus
        # one re-watch.
        await eventually(
            lambda: "kube-system/mine" in inf.store, SILENCE_S + 3.0, "the change after a stall"
        )
    assert restarts("silent") == silent_before + 1
    assert inf.lists == 1  # re-watched from its resourceVersion, no relist
    warning = next(r for r in caplog.records if "watch silent" in r.getMessage())
    assert "Lease in kube-system" in warning.getMessage()


async def test_a_quiet_watch_with_bookmarks_is_not_restarted(
    kube: KubeClient, apiserver: SimApiServer
) -> None:
    apiserver.api.bookmark_interval = 0.2
    inf = Informer(kube, LEASES, "kube-system", SELECTOR)
    silent_before = restarts("silent")
    async with running(inf.run()):
        await eventually(lambda: inf.synced, 5.0, "first list")
        await asyncio.sleep(3 * SILENCE_S)  # nothing changes; only bookmarks arrive
        await kube.create(LEASES, lease("mine"))
        await eventually(lambda: "kube-system/mine" in inf.store, 5.0, "the change")
    assert restarts("silent") == silent_before


async def test_a_silence_that_outlived_the_event_window_relists(
    kube: KubeClient, apiserver: SimApiServer
) -> None:
    # The silenced stream swallowed the bookmarks too, so the informer's resourceVersion is
    # behind; once the change it missed is pushed out of the window the re-watch gets 410.
    apiserver.api.bookmark_interval = 0.2
    apiserver.store.set_history_limit(3)
    inf = Informer(kube, LEASES, "kube-system", SELECTOR)
    expired_before = restarts("expired")
    async with running(inf.run()):
        await eventually(lambda: inf.synced, 5.0, "first list")
        await kube.create(LEASES, lease("mine"))
        await eventually(lambda: "kube-system/mine" in inf.store, 5.0, "the lease")
        await silence_the_open_watch(apiserver)
        await kube.delete(LEASES, "mine", "kube-system")
        for i in range(6):
            await kube.create(LEASES, lease(f"other-{i}", managed=False))
        await eventually(lambda: not inf.store, SILENCE_S + 3.0, "the deletion, by a relist")
    assert inf.lists == 2
    assert restarts("expired") == expired_before + 1


async def test_watch_connections_are_probed_by_tcp_keepalive(
    kube: KubeClient, apiserver: SimApiServer
) -> None:
    # A NAT that loses the connection sends no RST; only kernel keepalive probes find out.
    await kube.create(LEASES, lease("mine"))
    stream = kube.watch(LEASES, "kube-system", timeout_s=30)
    async with contextlib.aclosing(stream):
        kind, _ = await anext(stream)
        assert kind == "ADDED"
        ss = await asyncio.create_subprocess_exec(
            "ss",
            "-tnoH",
            "state",
            "established",
            "dst",
            f"127.0.0.1:{apiserver.port}",
            stdout=asyncio.subprocess.PIPE,
        )
        out, _ = await ss.communicate()
    timers = [line for line in out.decode().splitlines() if "timer:(keepalive" in line]
    assert len(timers) == 1, out.decode()  # the watch, not the pooled request connection
