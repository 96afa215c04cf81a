"""Watch semantics: resume from a resourceVersion, bookmarks, 410 Expired, drops, selectors."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from kubernetes_asyncio import client, watch
from kubernetes_asyncio.client.exceptions import ApiException

from ravend.sim.apiserver import SimApiServer


def cm(name: str, labels: dict[str, str] | None = None) -> client.V1ConfigMap:
    return client.V1ConfigMap(metadata=client.V1ObjectMeta(name=name, labels=labels))


async def collect(w: watch.Watch, it: Any, n: int) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    async with asyncio.timeout(5):
        async for event in it:
            out.append((event["type"], event["raw_object"]["metadata"].get("name", "")))
            if len(out) == n:
                w.stop()
                break
    return out


async def test_list_then_watch_resumes_exactly_after_list(core: client.CoreV1Api) -> None:
    await core.create_namespaced_config_map("default", cm("before"))
    listed = await core.list_namespaced_config_map("default")
    rv = listed.metadata.resource_version
    await core.create_namespaced_config_map("default", cm("after"))
    await core.delete_namespaced_config_map("before", "default")
    w = watch.Watch()
    stream = w.stream(
        core.list_namespaced_config_map, "default", resource_version=rv, timeout_seconds=5
    )
    assert await collect(w, stream, 2) == [("ADDED", "after"), ("DELETED", "before")]
    await w.close()


async def test_watch_without_rv_starts_with_current_state(core: client.CoreV1Api) -> None:
    await core.create_namespaced_config_map("default", cm("x"))
    w = watch.Watch()
    stream = w.stream(core.list_namespaced_config_map, "default", timeout_seconds=5)
    events = []
    async with asyncio.timeout(5):
        async for event in stream:
            events.append((event["type"], event["raw_object"]["metadata"]["name"]))
            if len(events) == 1:
                obj = await core.read_namespaced_config_map("x", "default")
                obj.data = {"k": "v"}
                await core.replace_namespaced_config_map("x", "default", obj)
            if len(events) == 2:
                break
    assert events == [("ADDED", "x"), ("MODIFIED", "x")]
    await w.close()


async def test_too_old_resource_version_is_410_expired(
    apiserver: SimApiServer, core: client.CoreV1Api
) -> None:
    apiserver.store.set_history_limit(3)
    first = await core.create_namespaced_config_map("default", cm("c0"))
    for i in range(1, 6):
        await core.create_namespaced_config_map("default", cm(f"c{i}"))
    w = watch.Watch()
    # With timeout_seconds the client does not retry 410 itself: the error surfaces.
    stream = w.stream(
        core.list_namespaced_config_map,
        "default",
        resource_version=first.metadata.resource_version,
        timeout_seconds=5,
    )
    with pytest.raises(ApiException) as err:
        async with asyncio.timeout(5):
            async for _ in stream:
                pass
    assert err.value.status == 410
    assert "Expired: too old resource version" in str(err.value.reason)
    await w.close()


async def test_raw_410_event_shape(apiserver: SimApiServer) -> None:
    apiserver.store.set_history_limit(1)
    for i in range(3):
        apiserver.store.create(
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": f"c{i}"}}
        )
    import json
    import ssl

    import aiohttp

    ctx = ssl.create_default_context(cadata=apiserver.ca_pem.decode())
    url = f"{apiserver.url}/api/v1/configmaps?watch=true&resourceVersion=2"
    headers = {"Authorization": f"Bearer {apiserver.admin_token}"}
    async with aiohttp.ClientSession() as s, s.get(url, ssl=ctx, headers=headers) as r:
        assert r.status == 200
        event = json.loads(await r.content.readline())
    assert event["type"] == "ERROR"
    obj = event["object"]
    assert (obj["kind"], obj["status"], obj["reason"], obj["code"]) == (
        "Status",
        "Failure",
        "Expired",
        410,
    )
    assert obj["message"].startswith("too old resource version: 2 (")


async def test_bookmarks_carry_a_resumable_resource_version(
    apiserver: SimApiServer, core: client.CoreV1Api
) -> None:
    apiserver.api.bookmark_interval = 0.1
    listed = await core.list_namespaced_config_map("default")
    await core.create_namespaced_config_map("kube-system", cm("elsewhere"))  # advances the RV
    w = watch.Watch()
    stream = w.stream(
        core.list_namespaced_config_map,
        "default",
        resource_version=listed.metadata.resource_version,
        allow_watch_bookmarks=True,
        timeout_seconds=5,
    )
    async with asyncio.timeout(5):
        event = await stream.__anext__()
    assert event["type"] == "BOOKMARK"
    assert int(w.resource_version or 0) == int(apiserver.store.resource_version)
    await w.close()


async def test_dropped_watch_resumes_without_losing_events(
    apiserver: SimApiServer, core: client.CoreV1Api
) -> None:
    w = watch.Watch()
    stream = w.stream(core.list_namespaced_config_map, "default")  # no timeout: client reconnects
    seen: list[tuple[str, str]] = []
    async with asyncio.timeout(10):
        await core.create_namespaced_config_map("default", cm("a"))
        async for event in stream:
            seen.append((event["type"], event["raw_object"]["metadata"]["name"]))
            if len(seen) == 1:
                assert apiserver.faults.drop_watches() >= 1
                await core.create_namespaced_config_map("default", cm("b"))
            if len(seen) == 2:
                break
    assert seen == [("ADDED", "a"), ("ADDED", "b")]
    await w.close()


async def test_label_selector_transitions_become_added_and_deleted(core: client.CoreV1Api) -> None:
    listed = await core.list_namespaced_config_map("default")
    obj = await core.create_namespaced_config_map("default", cm("x", {"sel": "no"}))
    obj.metadata.labels = {"sel": "yes"}
    obj = await core.replace_namespaced_config_map("x", "default", obj)
    obj.metadata.labels = {"sel": "no"}
    await core.replace_namespaced_config_map("x", "default", obj)
    w = watch.Watch()
    stream = w.stream(
        core.list_namespaced_config_map,
        "default",
        label_selector="sel=yes",
        resource_version=listed.metadata.resource_version,
        timeout_seconds=5,
    )
    assert await collect(w, stream, 2) == [("ADDED", "x"), ("DELETED", "x")]
    await w.close()


async def test_lease_watch_across_namespaces(api: client.ApiClient) -> None:
    coord = client.CoordinationV1Api(api)
    lease = client.V1Lease(
        metadata=client.V1ObjectMeta(name="ravend-controller"),
        spec=client.V1LeaseSpec(holder_identity="n1", lease_duration_seconds=15),
    )
    created = await coord.create_namespaced_lease("kube-system", lease)
    created.spec.holder_identity = "n2"
    await coord.replace_namespaced_lease("ravend-controller", "kube-system", created)
    w = watch.Watch()
    stream = w.stream(coord.list_lease_for_all_namespaces, resource_version="1", timeout_seconds=5)
    events = []
    async with asyncio.timeout(5):
        async for e in stream:
            events.append((e["type"], e["object"].spec.holder_identity))
            if len(events) == 2:
                break
    assert events == [("ADDED", "n1"), ("MODIFIED", "n2")]
    await w.close()


async def test_watch_timeout_ends_stream(core: client.CoreV1Api) -> None:
    w = watch.Watch()
    stream = w.stream(
        core.list_namespaced_config_map, "default", resource_version="1", timeout_seconds=1
    )
    loop = asyncio.get_running_loop()
    start = loop.time()
    async with asyncio.timeout(5):
        async for _ in stream:
            pass
    assert 0.8 < loop.time() - start < 3
    await w.close()


async def test_a_watch_whose_client_left_ends_quietly(
    apiserver: SimApiServer, caplog: pytest.LogCaptureFixture
) -> None:
    import ssl

    import aiohttp

    apiserver.api.bookmark_interval = 0.05
    ctx = ssl.create_default_context(cadata=apiserver.ca_pem.decode())
    url = f"{apiserver.url}/api/v1/configmaps?watch=true&allowWatchBookmarks=true"
    headers = {"Authorization": f"Bearer {apiserver.admin_token}"}
    async with aiohttp.ClientSession() as s, s.get(url, ssl=ctx, headers=headers) as r:
        assert r.status == 200
        await r.content.readline()
    # The next bookmark write finds the connection gone: the watch must end and unregister
    # without an "Error handling request" traceback in the server log.
    async with asyncio.timeout(5):
        while apiserver.faults.silence_watches("configmaps"):
            await asyncio.sleep(0.05)
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, [r.getMessage() for r in errors]


async def test_events_keep_flowing_when_a_bookmark_falls_due_with_events_queued(
    apiserver: SimApiServer,
) -> None:
    # The stall seen in the demo: when a bookmark fell due while an event was queued, the
    # server skipped the bookmark without moving its timer, and every later wait had timeout 0,
    # which on Python 3.11 cancels the queue read before it runs: the stream then sent nothing,
    # events nor bookmarks, until its timeoutSeconds. A tight bookmark interval under a steady
    # stream of writes hits that window within a few hundred events.
    import json
    import ssl

    import aiohttp

    apiserver.api.bookmark_interval = 0.002
    ctx = ssl.create_default_context(cadata=apiserver.ca_pem.decode())
    rv = apiserver.store.resource_version
    url = (
        f"{apiserver.url}/api/v1/namespaces/default/configmaps?watch=true"
        f"&allowWatchBookmarks=true&timeoutSeconds=60&resourceVersion={rv}"
    )
    headers = {"Authorization": f"Bearer {apiserver.admin_token}"}
    total = 400
    seen: list[str] = []

    async def write() -> None:
        for i in range(total):
            apiserver.store.create(
                {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": f"c{i}"}}
            )
            await asyncio.sleep(0.001 * (i % 3))  # vary the phase against the bookmark timer

    async with aiohttp.ClientSession() as s, s.get(url, ssl=ctx, headers=headers) as r:
        writer = asyncio.ensure_future(write())
        try:
            async with asyncio.timeout(20):  # the stalled stream would only end after 60 s
                while len(seen) < total:
                    event = json.loads(await r.content.readline())
                    if event["type"] == "ADDED":
                        seen.append(event["object"]["metadata"]["name"])
        finally:
            writer.cancel()
    assert seen == [f"c{i}" for i in range(total)]
