"""Informers and ClusterInformers against the embedded API server."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

import pytest

from ravend.kube.client import KubeClient
from ravend.kube.informer import ClusterInformers, Informer
from ravend.kube.resources import CONFIGMAPS, GATEWAYS, LEASES, NODES
from ravend.model import ClusterView, EndpointType
from ravend.runtime import Latest
from ravend.sim.apiserver import SimApiServer

JSON = dict[str, Any]


async def eventually(check: Callable[[], bool], timeout: float = 5.0, what: str = "") -> None:
    """Poll `check` until it is true; fail the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what or check}")
        await asyncio.sleep(0.02)


@contextlib.asynccontextmanager
async def running(coro: Coroutine[Any, Any, None]) -> AsyncIterator[asyncio.Task[None]]:
    """Run a never-ending loop for the duration of the block; fail if it ended by itself."""
    task = asyncio.ensure_future(coro)
    try:
        yield task
        assert not task.done(), f"loop ended early: {task}"
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def node(
    name: str, gateway: str = "", ip: str = "10.0.0.1", cidr: str = "", edge: bool = False
) -> JSON:
    labels = {"raven.openyurt.io/gateway": gateway} if gateway else {}
    if edge:
        labels["openyurt.io/is-edge-worker"] = "true"
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": labels},
        "spec": {"podCIDR": cidr, "podCIDRs": [cidr]} if cidr else {},
        "status": {
            "addresses": [{"type": "InternalIP", "address": ip}],
            "conditions": [{"type": "Ready", "status": "True"}],
        },
    }


def lease(name: str, managed: bool = True) -> JSON:
    labels = {"app.kubernetes.io/managed-by": "ravend"} if managed else {}
    return {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": name, "namespace": "kube-system", "labels": labels},
        "spec": {"holderIdentity": name, "leaseDurationSeconds": 6},
    }


def names(inf: Informer) -> set[str]:
    return set(inf.store)


async def test_informer_sees_create_update_delete(kube: KubeClient) -> None:
    await kube.create(NODES, node("before"))
    changes = 0

    def count() -> None:
        nonlocal changes
        changes += 1

    inf = Informer(kube, NODES, on_change=count)
    async with running(inf.run()):
        await eventually(lambda: inf.synced, what="first list")
        assert names(inf) == {"before"}
        await kube.create(NODES, node("n1"))
        await eventually(lambda: "n1" in inf.store, what="ADDED")
        await kube.patch(NODES, "n1", {"metadata": {"labels": {"x": "y"}}})
        await eventually(lambda: inf.store["n1"]["metadata"]["labels"].get("x") == "y")
        await kube.delete(NODES, "before")
        await eventually(lambda: names(inf) == {"n1"}, what="DELETED")
    assert inf.lists == 1  # everything came through the watch
    assert changes >= 4


async def test_informer_resumes_after_dropped_watches_without_relist(
    kube: KubeClient, apiserver: SimApiServer
) -> None:
    inf = Informer(kube, NODES)
    async with running(inf.run()):
        await eventually(lambda: inf.synced)
        for i in range(3):
            apiserver.faults.drop_watches()
            await kube.create(NODES, node(f"n{i}"))
            await eventually(lambda i=i: f"n{i}" in inf.store, what=f"n{i} after drop")  # type: ignore[misc]
    assert inf.lists == 1  # resumed from its resourceVersion each time


async def test_informer_relists_after_410(kube: KubeClient, apiserver: SimApiServer) -> None:
    # A label-filtered watch does not see changes to other Leases, so its resourceVersion falls
    # behind; with a tiny event window, resuming after a dropped watch gets 410 Gone.
    apiserver.api.bookmark_interval = 3600.0
    apiserver.store.set_history_limit(3)
    inf = Informer(kube, LEASES, "kube-system", "app.kubernetes.io/managed-by=ravend")
    async with running(inf.run()):
        await eventually(lambda: inf.synced)
        await kube.create(LEASES, lease("mine"))
        await eventually(lambda: "kube-system/mine" in inf.store)
        for i in range(6):
            await kube.create(LEASES, lease(f"other-{i}", managed=False))
        apiserver.store.delete("leases", "mine", "kube-system")  # change lands in the window...
        for i in range(6, 12):
            await kube.create(LEASES, lease(f"other-{i}", managed=False))  # ...and is pushed out
        apiserver.faults.drop_watches()
        await eventually(lambda: inf.lists >= 2, what="relist after 410")
        await eventually(lambda: not inf.store, what="store reflects the relist")


async def test_bookmarks_keep_a_filtered_watch_fresh(
    kube: KubeClient, apiserver: SimApiServer
) -> None:
    apiserver.api.bookmark_interval = 0.1
    apiserver.store.set_history_limit(3)
    inf = Informer(kube, LEASES, "kube-system", "app.kubernetes.io/managed-by=ravend")
    async with running(inf.run()):
        await eventually(lambda: inf.synced)
        for i in range(10):
            await kube.create(LEASES, lease(f"other-{i}", managed=False))
        target = apiserver.store.resource_version
        await eventually(lambda: inf.resource_version == target, what="bookmark")
        apiserver.faults.drop_watches()
        await kube.create(LEASES, lease("mine"))
        await eventually(lambda: "kube-system/mine" in inf.store)
    assert inf.lists == 1  # the bookmark's resourceVersion was still in the window


async def test_informer_backs_off_while_unavailable_and_recovers(
    kube: KubeClient, apiserver: SimApiServer
) -> None:
    inf = Informer(kube, NODES)
    async with running(inf.run()):
        await eventually(lambda: inf.synced)
        for mode in ("503", "refuse"):
            await apiserver.faults.set_unavailable(True, mode)
            apiserver.store.create(node(f"during-{mode}"))
            await asyncio.sleep(1.5)
            # Delays are >= half of 0.1 * 2^n: at most ~5 attempts in 1.5 s, so no busy loop,
            # but more than one, so it keeps trying.
            assert 2 <= inf._backoff.failures <= 6, inf._backoff.failures
            await apiserver.faults.set_unavailable(False)
            # Recovery within the backoff cap (0.8 s) plus a list.
            await eventually(lambda m=mode: f"during-{m}" in inf.store, timeout=3.0)  # type: ignore[misc]
            await kube.create(NODES, node(f"after-{mode}"))
            await eventually(lambda m=mode: f"after-{m}" in inf.store, timeout=3.0)  # type: ignore[misc]


# ---- ClusterInformers: the manual's example --------------------------------------------------

CLOUD, CLOUD2 = "izwz9dohcv74iegqecp4axz", "izwz9ey0js5z7mornclpd6z"
HZ, HZ2 = "izbp15inok0kbfkg3in52rz", "izbp15inok0kbfkg3in52sz"
QD_PROXY, QD_TUNNEL = "izm5eb24dmjfimuaybpnqzz", "izm5eb24dmjfimuaybpnr0z"


def gateway(name: str, spec: JSON) -> JSON:
    return {
        "apiVersion": "raven.openyurt.io/v1beta1",
        "kind": "Gateway",
        "metadata": {"name": name},
        "spec": spec,
    }


def ep(node_name: str, kind: str, nat: bool, public_ip: str = "") -> JSON:
    out: JSON = {
        "nodeName": node_name,
        "underNAT": nat,
        "type": kind,
        "port": 10262 if kind == "proxy" else 4500,
    }
    if public_ip:
        out["publicIP"] = public_ip
    return out


async def seed_manual_example(kube: KubeClient) -> None:
    for obj in (
        node(CLOUD, "gw-cloud", "192.168.0.195", "10.244.0.0/26"),
        node(CLOUD2, "gw-cloud", "192.168.0.196", "10.244.0.64/26"),
        node(HZ, "gw-hangzhou", "172.16.2.103", "10.244.1.0/26", edge=True),
        node(HZ2, "gw-hangzhou", "172.16.2.104", "10.244.1.64/26", edge=True),
        node(QD_PROXY, "gw-qingdao", "172.16.1.89", "10.244.2.0/24", edge=True),
        node(QD_TUNNEL, "gw-qingdao", "172.16.1.90", "10.244.3.0/24", edge=True),
    ):
        await kube.create(NODES, obj)
    await kube.create(
        GATEWAYS,
        gateway(
            "gw-hangzhou",
            {
                "proxyConfig": {"Replicas": 1},
                "tunnelConfig": {"Replicas": 1},
                "endpoints": [ep(HZ, "proxy", True), ep(HZ, "tunnel", True)],
            },
        ),
    )
    await kube.create(
        GATEWAYS,
        gateway(
            "gw-cloud",
            {
                "exposeType": "PublicIP",
                "proxyConfig": {
                    "Replicas": 1,
                    "proxyHTTPPort": "10255,9445",
                    "proxyHTTPSPort": "10250,9100",
                },
                "tunnelConfig": {"Replicas": 1},
                "endpoints": [
                    ep(CLOUD, "proxy", False, "47.0.0.1"),
                    ep(CLOUD, "tunnel", False, "47.0.0.1"),
                ],
            },
        ),
    )
    await kube.create(
        GATEWAYS,
        gateway(
            "gw-qingdao",
            {
                "proxyConfig": {"Replicas": 1},
                "tunnelConfig": {"Replicas": 1},
                "endpoints": [ep(QD_PROXY, "proxy", True), ep(QD_TUNNEL, "tunnel", True)],
            },
        ),
    )


async def test_cluster_view_of_the_manual_example(
    kube: KubeClient, apiserver: SimApiServer
) -> None:
    await seed_manual_example(kube)
    await kube.create(LEASES, lease("ravend-controller"))
    await kube.create(LEASES, lease("someone-else", managed=False))
    view: Latest[ClusterView] = Latest(ClusterView())
    informers = ClusterInformers(kube, kube.settings, view)
    async with running(informers.run()):
        await eventually(lambda: view.value.synced, what="synced view")
        v = view.value
        assert set(v.gateways) == {"gw-cloud", "gw-hangzhou", "gw-qingdao"}
        assert len(v.nodes) == 6 and not v.invalid_gateways
        assert not v.raven_cfg.present  # no raven-cfg yet: both planes off
        assert set(v.leases) == {"ravend-controller"}
        cloud = v.gateways["gw-cloud"]
        assert cloud.is_exposed and cloud.spec.proxy_config.https_ports == (9100, 10250)
        assert v.gateway_of(HZ2) is v.gateways["gw-hangzhou"]
        assert v.nodes[QD_TUNNEL].private_ip == "172.16.1.90"
        assert v.nodes[HZ].is_edge_worker and not v.nodes[CLOUD].is_edge_worker
        assert v.nodes[CLOUD].pod_cidrs == ("10.244.0.0/26",)

        # Raven's toggles arrive in a ConfigMap; the view follows.
        await kube.create(
            CONFIGMAPS,
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": "raven-cfg", "namespace": "kube-system"},
                "data": {"enable-l3-tunnel": "true", "enable-l7-proxy": "true"},
            },
        )
        await eventually(
            lambda: view.value.raven_cfg.l3_enabled and view.value.raven_cfg.l7_enabled
        )

        # A status write (what gateway pickup does) shows up as active endpoints.
        def elect(obj: JSON) -> JSON:
            tunnel = dict(
                ep(CLOUD, "tunnel", False, "47.0.0.1"), config={"enable-l3-tunnel": "true"}
            )
            proxy = dict(ep(CLOUD, "proxy", False, "47.0.0.1"), config={"enable-l7-proxy": "true"})
            obj["status"] = {
                "nodes": [
                    {"nodeName": CLOUD, "privateIP": "192.168.0.195", "subnets": ["10.244.0.0/26"]},
                    {
                        "nodeName": CLOUD2,
                        "privateIP": "192.168.0.196",
                        "subnets": ["10.244.0.64/26"],
                    },
                ],
                "activeEndpoints": [proxy, tunnel],
            }
            return obj

        await kube.update_with_retry(GATEWAYS, "gw-cloud", None, elect, status=True)
        await eventually(lambda: bool(view.value.gateways["gw-cloud"].status.active_endpoints))
        (tunnel,) = view.value.gateways["gw-cloud"].active(EndpointType.TUNNEL)
        assert tunnel.node_name == CLOUD and tunnel.public_ip == "47.0.0.1"

        await kube.delete(GATEWAYS, "gw-qingdao")
        await eventually(lambda: "gw-qingdao" not in view.value.gateways)
        assert view.value.gateway_of(QD_PROXY) is None
        revisions = view.value.revision
    assert revisions >= 2


async def test_bursts_are_coalesced(kube: KubeClient, apiserver: SimApiServer) -> None:
    view: Latest[ClusterView] = Latest(ClusterView())
    informers = ClusterInformers(kube, kube.settings, view)
    async with running(informers.run()):
        await eventually(lambda: view.value.synced)
        before = view.version
        for i in range(50):
            apiserver.store.create(node(f"burst-{i}"))
        await eventually(lambda: len(view.value.nodes) == 50)
        await asyncio.sleep(0.2)
        assert view.version - before <= 5, view.version - before  # not 50 replans
        assert view.value.revision == view.version


async def test_malformed_gateway_goes_to_invalid_gateways(
    kube: KubeClient, apiserver: SimApiServer
) -> None:
    await seed_manual_example(kube)
    # The CRD schema would reject this object, so put it in through the in-process store with
    # validation off: what an older server, or a schema change, could leave behind.
    crd = apiserver.store.crds.pop("gateways")
    try:
        apiserver.store.create(
            gateway("gw-broken", {"endpoints": [{"nodeName": "x", "type": "ipsec", "port": 1}]})
        )
    finally:
        apiserver.store.crds["gateways"] = crd
    view: Latest[ClusterView] = Latest(ClusterView())
    async with running(ClusterInformers(kube, kube.settings, view).run()):
        await eventually(lambda: view.value.synced)
        v = view.value
        assert "gw-broken" not in v.gateways
        assert "spec.endpoints[0].type" in v.invalid_gateways["gw-broken"]
        assert set(v.gateways) == {"gw-cloud", "gw-hangzhou", "gw-qingdao"}  # others unharmed
        # Fixing it moves it back.
        fixed = apiserver.store.get("gateways", "gw-broken")
        fixed["spec"]["endpoints"][0]["type"] = "tunnel"
        fixed["spec"]["endpoints"][0]["port"] = 4500
        apiserver.store.update(fixed)
        await eventually(lambda: "gw-broken" in view.value.gateways)
        assert not view.value.invalid_gateways


async def test_periodic_resync_relists_without_republishing(
    kube: KubeClient, apiserver: SimApiServer
) -> None:
    await kube.create(NODES, node("n1"))
    settings = dataclasses.replace(kube.settings, resync_period_s=0.3)
    view: Latest[ClusterView] = Latest(ClusterView())
    informers = ClusterInformers(kube, settings, view)
    async with running(informers.run()):
        await eventually(lambda: view.value.synced)
        published = view.version
        await eventually(lambda: informers.nodes.lists >= 3, what="resyncs")
        assert view.version == published  # identical relists do not wake the planners
        await kube.create(NODES, node("n2"))
        await eventually(lambda: "n2" in view.value.nodes)
