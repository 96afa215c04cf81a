"""Fault hooks: 503, refused connections, latency, silenced watches; the CLI entry point."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path

import pytest
from kubernetes_asyncio import client, watch
from kubernetes_asyncio.client.exceptions import ApiException

from ravend.sim.apiserver import SimApiServer


async def test_unavailable_503_then_back(apiserver: SimApiServer, core: client.CoreV1Api) -> None:
    apiserver.faults.set_unavailable(True)
    with pytest.raises(ApiException) as err:
        await core.list_node()
    assert err.value.status == 503
    assert json.loads(err.value.body or b"")["reason"] == "ServiceUnavailable"
    await apiserver.faults.set_unavailable(False)
    assert (await core.list_node()).items == []


async def test_refuse_mode_stops_listening_on_the_same_port(
    apiserver: SimApiServer, core: client.CoreV1Api
) -> None:
    host, port = apiserver.host, apiserver.port
    await apiserver.faults.set_unavailable(True, mode="refuse")
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection(host, port)
    back = apiserver.faults.set_unavailable(False, mode="refuse")
    await back
    assert apiserver.port == port
    await core.create_node(client.V1Node(metadata=client.V1ObjectMeta(name="n1")))
    assert [n.metadata.name for n in (await core.list_node()).items] == ["n1"]


async def test_latency_delays_every_request(
    apiserver: SimApiServer, core: client.CoreV1Api
) -> None:
    await core.list_node()  # warm the connection
    apiserver.faults.latency = 0.3
    loop = asyncio.get_running_loop()
    start = loop.time()
    await core.list_node()
    assert loop.time() - start >= 0.3
    apiserver.faults.latency = 0


async def test_store_writes_are_visible_over_http(
    apiserver: SimApiServer, core: client.CoreV1Api
) -> None:
    apiserver.store.create({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "direct"}})
    assert (await core.read_node("direct")).metadata.name == "direct"


async def test_cli_prints_url_writes_kubeconfig_and_stops_on_sigterm(tmp_path: Path) -> None:
    kc = tmp_path / "kc"
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "ravend.sim.apiserver",
        "--kubeconfig-out",
        str(kc),
        "--state-dir",
        str(tmp_path / "state"),
        stdout=asyncio.subprocess.PIPE,
        env={**os.environ},
    )
    try:
        assert proc.stdout is not None
        async with asyncio.timeout(20):
            url = (await proc.stdout.readline()).decode().strip()
        assert url.startswith("https://127.0.0.1:")
        assert url in kc.read_text()
        assert (tmp_path / "state" / "ca.crt").exists()
        proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(10):
            assert await proc.wait() == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_state_dir_keeps_the_ca_across_restarts(tmp_path: Path) -> None:
    first = SimApiServer(state_dir=tmp_path)
    second = SimApiServer(state_dir=tmp_path)
    assert first.ca_pem == second.ca_pem


async def test_silenced_watch_stays_open_and_sends_nothing_while_new_watches_work(
    apiserver: SimApiServer, core: client.CoreV1Api
) -> None:
    apiserver.api.bookmark_interval = 0.1
    listed = await core.list_namespaced_config_map("default")
    rv = listed.metadata.resource_version
    stalled = watch.Watch()
    stream = stalled.stream(
        core.list_namespaced_config_map,
        "default",
        resource_version=rv,
        allow_watch_bookmarks=True,
        timeout_seconds=30,
    )
    async with asyncio.timeout(5):
        assert (await stream.__anext__())["type"] == "BOOKMARK"  # healthy: bookmarks flow
    assert apiserver.faults.silence_watches("configmaps") == 1
    await core.create_namespaced_config_map(
        "default", client.V1ConfigMap(metadata=client.V1ObjectMeta(name="after"))
    )
    # Neither the change nor any of the bookmarks due every 0.1 s arrives: the stream stalled.
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(1.0):
            await stream.__anext__()
    await stalled.close()
    fresh = watch.Watch()
    events = fresh.stream(core.list_namespaced_config_map, "default", resource_version=rv)
    async with asyncio.timeout(5):
        event = await events.__anext__()
    assert (event["type"], event["raw_object"]["metadata"]["name"]) == ("ADDED", "after")
    await fresh.close()
