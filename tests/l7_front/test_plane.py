"""The role loops end to end: run_l7_server + run_l7_client with certificates from the CSR API
(in-memory signer), Pods and the internal Service in the embedded API server, fake kubelets."""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import ssl
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest

from ravend.certs.csr import CertKind, CsrRequirements, cert_sans
from ravend.certs.keys import key_to_pem
from ravend.certs.localca import InMemoryCsrApi, LocalCa
from ravend.certs.manager import CertManager, CertSpec
from ravend.certs.settings import CertSettings
from ravend.certs.tls import client_context
from ravend.kube.client import KubeClient, connect
from ravend.kube.resources import PODS, SERVICES
from ravend.l7proxy.front_pods import PodNodeCache
from ravend.l7proxy.plane import L7Ports, run_l7_client, run_l7_server
from ravend.loopthread import LoopThread
from ravend.model import ExposeType
from ravend.runtime import Latest
from ravend.sim.kubelet import FakeKubelet, serving_context
from ravend.sim.kubelet_client import KubeletClient, fixed_resolver

from .conftest import FAST, build_view, free_port


@pytest.fixture
async def kube(kubeconfig: Path) -> AsyncIterator[KubeClient]:
    client = await connect(kubeconfig)
    try:
        yield client
    finally:
        await client.close()


def manager(tmp: Path, api: InMemoryCsrApi, kind: CertKind, node: str) -> CertManager:
    return CertManager(CertSettings(state_dir=tmp / node), CertSpec(kind.value, kind, node), api)


def caller_ctx(ca: LocalCa) -> ssl.SSLContext:
    usages = frozenset({"digital signature", "client auth"})
    req = CsrRequirements(
        CertKind.PROXY_CLIENT, "x", "", "kube-apiserver-kubelet-client", ("system:masters",), usages
    )
    key, cert = ca.issue_pair(req, dt.timedelta(hours=1))
    return client_context(ca.cert_pem, cert, key)


async def test_pod_lookup_is_cached(kube: KubeClient) -> None:
    pod = {"metadata": {"name": "web", "namespace": "default"}, "spec": {"nodeName": "edge-2"}}
    await kube.create(PODS, pod)
    cache = PodNodeCache(kube, ttl=60)
    assert await cache("default", "web") == "edge-2"
    assert await cache("default", "web") == "edge-2"
    assert cache.api_calls == 1
    assert await cache("default", "ghost") is None


@pytest.fixture(params=["same-loop", "asyncio", "uvloop"])
async def data_loops(
    request: pytest.FixtureRequest,
) -> AsyncIterator[tuple[LoopThread | None, LoopThread | None]]:
    """The data paths of server and client: on the test's loop, or each on a loop thread."""
    if request.param == "same-loop":
        yield None, None
        return
    async with LoopThread("server", request.param) as a, LoopThread("client", request.param) as b:
        yield a, b


async def test_server_and_client_roles_serve_kubectl_logs(
    kube: KubeClient, tmp_path: Path, data_loops: tuple[LoopThread | None, LoopThread | None]
) -> None:
    server_data, client_data = data_loops
    ca = LocalCa.generate("cluster-ca")
    api = InMemoryCsrApi(ca)
    ports = L7Ports(free_port(), free_port(), free_port(), host="127.0.0.11")
    tls_port, plain_port = free_port(), free_port()
    view = build_view(tls_port, plain_port)
    gw = view.gateways["gw-cloud"]
    ep = replace(gw.status.active_endpoints[0], port=ports.tunnel)
    gw = replace(gw, status=replace(gw.status, active_endpoints=(ep,)))
    server_view = Latest(replace(view, gateways={**view.gateways, "gw-cloud": gw}))
    client_view = Latest(server_view.value)
    await kube.create(
        PODS, {"metadata": {"name": "web", "namespace": "default"}, "spec": {"nodeName": "edge-2"}}
    )
    svc = {
        "metadata": {"name": "x-raven-proxy-internal-svc", "namespace": "kube-system"},
        "spec": {"clusterIP": "10.96.0.20", "ports": [{"port": 10250}]},
    }
    await kube.create(SERVICES, svc)
    serving = manager(tmp_path, api, CertKind.SERVING, "cloud-1")
    server_up, client_up = asyncio.Event(), asyncio.Event()
    kubelet_tls = serving_context(ca.cert_pem, key_to_pem(ca.key), "edge-2", ["127.0.0.22"])
    kubelet = FakeKubelet(
        "edge-2", "127.0.0.22", kubelet_tls, port=tls_port, read_only_port=plain_port
    )
    async with kubelet, asyncio.TaskGroup() as tg:
        server = tg.create_task(
            run_l7_server(
                "cloud-1",
                server_view,
                kube,
                serving=serving,
                proxy_client=manager(tmp_path, api, CertKind.PROXY_CLIENT, "cloud-1"),
                client_ca_pem=ca.cert_pem,
                ports=ports,
                tunnel_settings=FAST,
                ready=server_up.set,
                data=server_data,
            )
        )
        client = tg.create_task(
            run_l7_client(
                "edge-1",
                client_view,
                tunnel_client=manager(tmp_path, api, CertKind.TUNNEL_CLIENT, "edge-1"),
                proxy_client=manager(tmp_path, api, CertKind.PROXY_CLIENT, "edge-1"),
                server_ca_pem=ca.cert_pem,
                tunnel_settings=FAST,
                ready=client_up.set,
                data=client_data,
            )
        )
        try:
            async with asyncio.timeout(10):
                await server_up.wait()
                await client_up.wait()
            front = fixed_resolver("127.0.0.11", ports.https)
            caller = KubeletClient(front, caller_ctx(ca), tls_port)
            resp = await caller.get("edge-1", "/containerLogs/default/web/app?tailLines=2")
            assert resp.status == 200 and resp.node == "edge-2"
            assert resp.head.get("x-sim-caller") == "ravend-proxy-client"
            stored = serving.latest.value
            assert stored is not None
            assert ipaddress.ip_address("10.96.0.20") in cert_sans(stored.cert).ips
            # The edge drops its tunnel when the hub disappears from its view, redials after.
            hubless = replace(gw, spec=replace(gw.spec, expose_type=ExposeType.NONE))
            gateways = {**view.gateways, "gw-cloud": hubless}
            client_view.publish(replace(client_view.value, gateways=gateways))
            await _until_status(caller, 503)
            client_view.publish(server_view.value)
            await _until_status(caller, 200)
        finally:
            server.cancel()
            client.cancel()


async def _until_status(caller: KubeletClient, status: int) -> None:
    async with asyncio.timeout(5):
        while (await caller.get("edge-2", "/healthz")).status != status:
            await asyncio.sleep(0.05)
