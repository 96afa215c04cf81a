"""CRUD, conflicts, selectors, auth and discovery through kubernetes_asyncio."""

from __future__ import annotations

import json
import ssl
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from ravend.sim.apiserver import SimApiServer


def node(name: str, labels: dict[str, str] | None = None) -> client.V1Node:
    return client.V1Node(metadata=client.V1ObjectMeta(name=name, labels=labels))


def body(exc: ApiException) -> dict[str, object]:
    data = json.loads(exc.body or b"")
    assert isinstance(data, dict)
    return data


async def test_create_get_and_system_metadata(core: client.CoreV1Api) -> None:
    created = await core.create_node(node("n1"))
    got = await core.read_node("n1")
    assert got.metadata.uid == created.metadata.uid
    assert got.metadata.creation_timestamp is not None
    later = await core.create_node(node("n2"))
    assert int(later.metadata.resource_version) > int(created.metadata.resource_version)


async def test_create_twice_is_409_already_exists(core: client.CoreV1Api) -> None:
    await core.create_node(node("n1"))
    with pytest.raises(ApiException) as err:
        await core.create_node(node("n1"))
    assert err.value.status == 409
    status = body(err.value)
    assert status["reason"] == "AlreadyExists"
    assert status["message"] == 'nodes "n1" already exists'
    assert status["kind"] == "Status" and status["status"] == "Failure"


async def test_stale_update_is_409_conflict_and_unconditional_put_wins(
    core: client.CoreV1Api,
) -> None:
    cm = client.V1ConfigMap(metadata=client.V1ObjectMeta(name="c"), data={"a": "1"})
    first = await core.create_namespaced_config_map("kube-system", cm)
    first.data = {"a": "2"}
    await core.replace_namespaced_config_map("c", "kube-system", first)
    first.data = {"a": "3"}  # still carries the old resourceVersion
    with pytest.raises(ApiException) as err:
        await core.replace_namespaced_config_map("c", "kube-system", first)
    assert err.value.status == 409
    assert body(err.value)["message"] == (
        'Operation cannot be fulfilled on configmaps "c": the object has been modified; '
        "please apply your changes to the latest version and try again"
    )
    first.metadata.resource_version = None  # type: ignore[assignment]
    done = await core.replace_namespaced_config_map("c", "kube-system", first)
    assert done.data == {"a": "3"}


async def test_not_found_and_missing_namespace(core: client.CoreV1Api) -> None:
    with pytest.raises(ApiException) as err:
        await core.read_node("ghost")
    assert err.value.status == 404 and body(err.value)["message"] == 'nodes "ghost" not found'
    cm = client.V1ConfigMap(metadata=client.V1ObjectMeta(name="c"))
    with pytest.raises(ApiException) as err:
        await core.create_namespaced_config_map("nope", cm)
    assert err.value.status == 404 and body(err.value)["message"] == 'namespaces "nope" not found'


async def test_delete_then_gone_and_precondition(core: client.CoreV1Api) -> None:
    cm = await core.create_namespaced_config_map(
        "default", client.V1ConfigMap(metadata=client.V1ObjectMeta(name="c"))
    )
    with pytest.raises(ApiException) as err:
        await core.delete_namespaced_config_map(
            "c",
            "default",
            body=client.V1DeleteOptions(preconditions=client.V1Preconditions(uid="x")),
        )
    assert err.value.status == 409
    status = await core.delete_namespaced_config_map("c", "default")
    assert status.status == "Success" and status.details.uid == cm.metadata.uid
    with pytest.raises(ApiException) as err:
        await core.read_namespaced_config_map("c", "default")
    assert err.value.status == 404


async def test_label_and_field_selectors(core: client.CoreV1Api) -> None:
    await core.create_node(node("a", {"raven.openyurt.io/gateway": "gw-a", "edge": "true"}))
    await core.create_node(node("b", {"raven.openyurt.io/gateway": "gw-b"}))
    await core.create_node(node("c"))

    async def names(**kw: Any) -> list[str]:
        return [n.metadata.name for n in (await core.list_node(**kw)).items]

    assert await names(label_selector="raven.openyurt.io/gateway") == ["a", "b"]
    assert await names(label_selector="!raven.openyurt.io/gateway") == ["c"]
    assert await names(label_selector="raven.openyurt.io/gateway in (gw-b, gw-x)") == ["b"]
    assert await names(label_selector="raven.openyurt.io/gateway notin (gw-b)") == ["a", "c"]
    assert await names(label_selector="edge=true,raven.openyurt.io/gateway==gw-a") == ["a"]
    assert await names(label_selector="edge!=true") == ["b", "c"]
    assert await names(field_selector="metadata.name=b") == ["b"]
    assert await names(field_selector="metadata.name!=b") == ["a", "c"]
    with pytest.raises(ApiException) as err:
        await core.list_node(label_selector="in in in (")
    assert err.value.status == 400
    with pytest.raises(ApiException) as err:
        await core.list_node(field_selector="spec.unknown=1")
    assert err.value.status == 400


async def test_pod_field_selector_on_node_name(core: client.CoreV1Api) -> None:
    for name, node_name in (("p1", "n1"), ("p2", "n2")):
        pod = client.V1Pod(
            metadata=client.V1ObjectMeta(name=name),
            spec=client.V1PodSpec(node_name=node_name, containers=[client.V1Container(name="c")]),
        )
        created = await core.create_namespaced_pod("default", pod)
        assert created.status.phase == "Pending"
    pods = await core.list_pod_for_all_namespaces(field_selector="spec.nodeName=n2")
    assert [p.metadata.name for p in pods.items] == ["p2"]


async def test_pagination_with_limit_and_continue(core: client.CoreV1Api) -> None:
    for i in range(5):
        await core.create_node(node(f"n{i}"))
    first = await core.list_node(limit=2)
    assert [n.metadata.name for n in first.items] == ["n0", "n1"]
    rest = await core.list_node(limit=10, _continue=first.metadata._continue)
    assert [n.metadata.name for n in rest.items] == ["n2", "n3", "n4"]
    assert not rest.metadata._continue


async def test_service_gets_cluster_ip_and_defaults(core: client.CoreV1Api) -> None:
    svc = client.V1Service(
        metadata=client.V1ObjectMeta(name="s"),
        spec=client.V1ServiceSpec(ports=[client.V1ServicePort(port=10250)]),
    )
    created = await core.create_namespaced_service("kube-system", svc)
    assert created.spec.cluster_ip.startswith("10.96.")
    assert created.spec.ports[0].protocol == "TCP" and created.spec.ports[0].target_port == 10250
    allocated = created.spec.cluster_ip
    created.spec.cluster_ip = None  # type: ignore[assignment]
    created.spec.cluster_ips = None  # type: ignore[assignment]
    updated = await core.replace_namespaced_service("s", "kube-system", created)
    assert updated.spec.cluster_ip == allocated  # immutable: an update omitting it keeps it


async def _raw_get(server: SimApiServer, path: str, headers: dict[str, str]) -> tuple[int, Any]:
    ctx = ssl.create_default_context(cadata=server.ca_pem.decode())
    async with (
        aiohttp.ClientSession() as session,
        session.get(server.url + path, ssl=ctx, headers=headers) as r,
    ):
        return r.status, await r.json(content_type=None)


async def test_unauthenticated_is_401_status(apiserver: SimApiServer) -> None:
    status, data = await _raw_get(apiserver, "/api/v1/nodes", {})
    assert status == 401
    assert data == {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": "Unauthorized",
        "reason": "Unauthorized",
        "code": 401,
    }
    status, _ = await _raw_get(apiserver, "/api/v1/nodes", {"Authorization": "Bearer wrong"})
    assert status == 401


async def test_client_certificate_authenticates(apiserver: SimApiServer, tmp_path: Path) -> None:
    cert, key = apiserver.issue_client_cert("system:node:n1", ["system:nodes"])
    (tmp_path / "c.pem").write_bytes(cert)
    (tmp_path / "k.pem").write_bytes(key)
    ctx = ssl.create_default_context(cadata=apiserver.ca_pem.decode())
    ctx.load_cert_chain(tmp_path / "c.pem", tmp_path / "k.pem")
    async with aiohttp.ClientSession() as session:
        async with session.get(apiserver.url + "/api/v1/nodes", ssl=ctx) as r:
            assert r.status == 200
        # A certificate from another CA is refused at the TLS layer.
        other = SimApiServer()
        cert2, key2 = other.issue_client_cert("mallory")
        (tmp_path / "c2.pem").write_bytes(cert2)
        (tmp_path / "k2.pem").write_bytes(key2)
        ctx2 = ssl.create_default_context(cadata=apiserver.ca_pem.decode())
        ctx2.load_cert_chain(tmp_path / "c2.pem", tmp_path / "k2.pem")
        with pytest.raises(aiohttp.ClientError):
            async with session.get(apiserver.url + "/api/v1/nodes", ssl=ctx2) as r:
                await r.read()


async def test_discovery_documents(apiserver: SimApiServer) -> None:
    auth = {"Authorization": f"Bearer {apiserver.admin_token}"}
    _, version = await _raw_get(apiserver, "/version", {})
    assert version["major"] == "1"
    _, groups = await _raw_get(apiserver, "/apis", auth)
    names = {g["name"] for g in groups["groups"]}
    assert {"raven.openyurt.io", "coordination.k8s.io", "certificates.k8s.io"} <= names
    _, core_list = await _raw_get(apiserver, "/api/v1", auth)
    resources = {r["name"] for r in core_list["resources"]}
    assert {"nodes", "nodes/status", "pods", "configmaps", "services", "endpoints"} <= resources
    _, gw = await _raw_get(apiserver, "/apis/raven.openyurt.io/v1alpha1", auth)
    assert [r["name"] for r in gw["resources"]] == ["gateways", "gateways/status"]
