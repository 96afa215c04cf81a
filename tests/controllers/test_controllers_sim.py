"""Leader controllers against the embedded API server: DNS hosts, Services, CSR approval."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from ravend.certs.csr import CertKind, Sans, build_csr, expected_request, serving_sans
from ravend.certs.keys import KeyType, generate_key
from ravend.certs.kube_csr import KubeCsrApi
from ravend.certs.policy import NODE_NAME_EXTRA
from ravend.controllers.csr_approver import CsrApprover
from ravend.controllers.desired import DNS_CONFIGMAP, DNS_KEY, INTERNAL_SERVICE
from ravend.controllers.objects import ObjectsController
from ravend.election.examples import manual_view
from ravend.kube.client import KubeClient, connect
from ravend.kube.models import parse_csr
from ravend.kube.resources import CONFIGMAPS, CSRS, ENDPOINTS, SERVICES
from ravend.model import ClusterView, GatewayStatus, ProxyConfig, RavenConfig
from ravend.runtime import Latest
from ravend.sim.apiserver import SimApiServer

CLOUD = "izwz9dohcv74iegqecp4axz"
HANGZHOU_GW = "izbp15inok0kbfkg3in52rz"
HANGZHOU_MEMBER = "izbp15inok0kbfkg3in52sz"


def elected(view: ClusterView) -> ClusterView:
    """The manual's view with every first candidate active (what the election writes)."""
    gateways = {}
    for name, gw in view.gateways.items():
        active = tuple(gw.spec.endpoints)
        spec = gw.spec
        if name == "gw-cloud":  # the manual's published kubelet ports
            spec = dataclasses.replace(
                spec, proxy_config=ProxyConfig(1, "10255,9445", "10250,9100")
            )
        gateways[name] = dataclasses.replace(
            gw, spec=spec, status=GatewayStatus(active_endpoints=active)
        )
    return dataclasses.replace(view, gateways=gateways)


@pytest.fixture
async def admin(kubeconfig: Path) -> AsyncIterator[KubeClient]:
    client = await connect(kubeconfig)
    yield client
    await client.close()


async def test_dns_and_internal_service_follow_l7_toggle(admin: KubeClient) -> None:
    view = elected(manual_view())
    controller = ObjectsController(admin, Latest(view))
    await controller.reconcile(view)

    svc = await admin.get(SERVICES, INTERNAL_SERVICE, "kube-system")
    cluster_ip = svc["spec"]["clusterIP"]
    assert {p["port"] for p in svc["spec"]["ports"]} == {9100, 9445, 10250, 10255}
    eps = await admin.get(ENDPOINTS, INTERNAL_SERVICE, "kube-system")
    assert eps["subsets"][0]["addresses"] == [{"ip": "192.168.0.195"}]  # gw-cloud's proxy
    hosts = (await admin.get(CONFIGMAPS, DNS_CONFIGMAP, "kube-system"))["data"][DNS_KEY]
    assert f"{cluster_ip}\t{HANGZHOU_MEMBER}" in hosts.splitlines()
    assert len(hosts.splitlines()) == 6

    # A second pass with nothing changed writes nothing (steady state costs reads only).
    before = {r.plural: (await admin.get(r, n, "kube-system"))["metadata"]["resourceVersion"]
              for r, n in ((SERVICES, INTERNAL_SERVICE), (ENDPOINTS, INTERNAL_SERVICE),
                           (CONFIGMAPS, DNS_CONFIGMAP))}  # fmt: skip
    await controller.reconcile(view)
    after = {r.plural: (await admin.get(r, n, "kube-system"))["metadata"]["resourceVersion"]
             for r, n in ((SERVICES, INTERNAL_SERVICE), (ENDPOINTS, INTERNAL_SERVICE),
                          (CONFIGMAPS, DNS_CONFIGMAP))}  # fmt: skip
    assert before == after

    off = dataclasses.replace(view, raven_cfg=RavenConfig(l3_enabled=True, l7_enabled=False))
    await controller.reconcile(off)
    services, _ = await admin.list(SERVICES, "kube-system")
    assert INTERNAL_SERVICE not in {s["metadata"]["name"] for s in services}
    hosts = (await admin.get(CONFIGMAPS, DNS_CONFIGMAP, "kube-system"))["data"][DNS_KEY]
    assert f"172.16.2.104\t{HANGZHOU_MEMBER}" in hosts.splitlines()


async def node_csr_api(apiserver: SimApiServer, tmp_path: Path, node: str) -> KubeClient:
    token = f"sa-{node}"
    apiserver.add_identity(
        token,
        "system:serviceaccount:kube-system:ravend",
        ["system:serviceaccounts"],
        {NODE_NAME_EXTRA: [node]},
    )
    return await connect(apiserver.write_kubeconfig(tmp_path / f"kc-{node}", token=token))


async def submit(client: KubeClient, name: str, kind: CertKind, node: str, sans: Sans) -> None:
    req = expected_request(kind, node, sans)
    pem = build_csr(req, generate_key(KeyType.EC_P256))
    await KubeCsrApi(client).create(name, pem, req.signer_name, sorted(req.usages), 3600)


async def test_csr_approver_binds_certificates_to_roles_and_nodes(
    apiserver: SimApiServer, admin: KubeClient, tmp_path: Path
) -> None:
    view = elected(manual_view())
    cloud = await node_csr_api(apiserver, tmp_path, CLOUD)
    edge = await node_csr_api(apiserver, tmp_path, HANGZHOU_GW)
    member = await node_csr_api(apiserver, tmp_path, HANGZHOU_MEMBER)
    try:
        await submit(cloud, "cloud-serving", CertKind.SERVING, CLOUD,
                     serving_sans(CLOUD, ["192.168.0.195"]))  # fmt: skip
        await submit(edge, "edge-tunnel", CertKind.TUNNEL_CLIENT, HANGZHOU_GW, Sans())
        await submit(edge, "edge-proxy", CertKind.PROXY_CLIENT, HANGZHOU_GW, Sans())
        # An edge asking for a serving cert naming the cloud node: another node's identity.
        await submit(edge, "edge-steals", CertKind.SERVING, CLOUD, serving_sans(CLOUD))
        # An edge gateway is not a proxy of an exposed Gateway: no serving certificate.
        await submit(edge, "edge-serving", CertKind.SERVING, HANGZHOU_GW,
                     serving_sans(HANGZHOU_GW, ["172.16.2.103"]))  # fmt: skip
        # A member is no proxy candidate at all.
        await submit(member, "member-tunnel", CertKind.TUNNEL_CLIENT, HANGZHOU_MEMBER, Sans())
        # Not ours (no managed-by label): a kubelet's CSR must be left alone.
        await admin.create(CSRS, {
            "apiVersion": "certificates.k8s.io/v1", "kind": "CertificateSigningRequest",
            "metadata": {"name": "kubelet-own"},
            "spec": {"signerName": "kubernetes.io/kubelet-serving", "usages": ["server auth"],
                     "request": (await admin.get(CSRS, "cloud-serving"))["spec"]["request"]},
        })  # fmt: skip

        approver = CsrApprover(admin, Latest(view))
        informer = approver._informer
        await informer._list()
        await approver.reconcile()

        outcome = {}
        for obj in (await admin.list(CSRS))[0]:
            csr = parse_csr(obj)
            outcome[csr.meta.name] = "approved" if csr.approved else (
                "denied" if csr.denied else "pending")  # fmt: skip
    finally:
        for client in (cloud, edge, member):
            await client.close()
    assert outcome == {
        "cloud-serving": "approved",
        "edge-tunnel": "approved",
        "edge-proxy": "approved",
        "edge-steals": "denied",
        "edge-serving": "denied",
        "member-tunnel": "denied",
        "kubelet-own": "pending",
    }
