"""PATCH in its three flavours and /status subresource semantics."""

from __future__ import annotations

import json
from typing import Any

import pytest
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from ravend.sim.apiserver import SimApiServer

MERGE = "application/merge-patch+json"
AS_MERGE: dict[str, Any] = {"_content_type": MERGE}
AS_STRATEGIC: dict[str, Any] = {
    "_content_type": "application/strategic-merge-patch+json"
}  # the .pyi stubs omit _content_type
JSONPATCH = "application/json-patch+json"


async def make_node(core: client.CoreV1Api) -> client.V1Node:
    n = client.V1Node(
        metadata=client.V1ObjectMeta(name="n1", labels={"a": "1", "b": "2"}, finalizers=["x/one"]),
        status=client.V1NodeStatus(
            conditions=[
                client.V1NodeCondition(type="Ready", status="False"),
                client.V1NodeCondition(type="MemoryPressure", status="False"),
            ]
        ),
    )
    return await core.create_node(n)


async def test_merge_patch_sets_and_removes_labels(core: client.CoreV1Api) -> None:
    await make_node(core)
    out = await core.patch_node("n1", {"metadata": {"labels": {"a": None, "c": "3"}}}, **AS_MERGE)
    assert out.metadata.labels == {"b": "2", "c": "3"}


async def test_json_patch_ops_and_failed_test_op(core: client.CoreV1Api) -> None:
    await make_node(core)
    ops = [
        {"op": "add", "path": "/metadata/labels/raven.openyurt.io~1gateway", "value": "gw"},
        {"op": "remove", "path": "/metadata/labels/a"},
    ]
    out = await core.patch_node("n1", ops)  # a list body is sent as json-patch+json
    assert out.metadata.labels == {"b": "2", "raven.openyurt.io/gateway": "gw"}
    with pytest.raises(ApiException) as err:
        await core.patch_node("n1", [{"op": "test", "path": "/metadata/labels/b", "value": "9"}])
    assert err.value.status == 422


async def test_strategic_merge_on_finalizers_and_conditions(core: client.CoreV1Api) -> None:
    await make_node(core)
    out = await core.patch_node(
        "n1", {"metadata": {"finalizers": ["x/two"]}}
    )  # strategic by default
    assert out.metadata.finalizers == ["x/one", "x/two"]  # a set: merged, not replaced
    patch = {
        "status": {"conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady"}]}
    }
    out = await core.patch_node_status("n1", patch)
    conds = {c.type: (c.status, c.reason) for c in out.status.conditions}
    assert conds == {"Ready": ("True", "KubeletReady"), "MemoryPressure": ("False", None)}
    out = await core.patch_node_status(
        "n1", {"status": {"conditions": [{"type": "MemoryPressure", "$patch": "delete"}]}}
    )
    assert [c.type for c in out.status.conditions] == ["Ready"]


async def test_strategic_merge_service_ports_by_port_and_endpoints_replace(
    core: client.CoreV1Api,
) -> None:
    svc = client.V1Service(
        metadata=client.V1ObjectMeta(name="x-raven-proxy-internal-svc"),
        spec=client.V1ServiceSpec(ports=[client.V1ServicePort(name="https", port=10250)]),
    )
    await core.create_namespaced_service("kube-system", svc)
    out = await core.patch_namespaced_service(
        "x-raven-proxy-internal-svc",
        "kube-system",
        {
            "spec": {
                "ports": [{"port": 10250, "targetPort": 10263}, {"name": "http", "port": 10255}]
            }
        },
    )
    assert [(p.port, p.target_port) for p in out.spec.ports] == [(10250, 10263), (10255, 10255)]
    ep = client.V1Endpoints(
        metadata=client.V1ObjectMeta(name="e"),
        subsets=[client.V1EndpointSubset(addresses=[client.V1EndpointAddress(ip="10.0.0.1")])],
    )
    await core.create_namespaced_endpoints("kube-system", ep)
    out_ep = await core.patch_namespaced_endpoints(
        "e", "kube-system", {"subsets": [{"addresses": [{"ip": "10.0.0.2"}]}]}
    )
    assert [a.ip for s in out_ep.subsets for a in s.addresses] == ["10.0.0.2"]


async def test_patch_with_stale_resource_version_conflicts(core: client.CoreV1Api) -> None:
    n = await make_node(core)
    await core.patch_node("n1", {"metadata": {"labels": {"z": "1"}}})
    with pytest.raises(ApiException) as err:
        await core.patch_node(
            "n1",
            {"metadata": {"resourceVersion": n.metadata.resource_version, "labels": {"y": "1"}}},
            **AS_MERGE,
        )
    assert err.value.status == 409


async def test_strategic_merge_on_gateway_is_415(custom: client.CustomObjectsApi) -> None:
    gw = {
        "apiVersion": "raven.openyurt.io/v1beta1",
        "kind": "Gateway",
        "metadata": {"name": "gw"},
        "spec": {},
    }
    await custom.create_cluster_custom_object("raven.openyurt.io", "v1beta1", "gateways", gw)
    with pytest.raises(ApiException) as err:
        await custom.patch_cluster_custom_object(
            "raven.openyurt.io",
            "v1beta1",
            "gateways",
            "gw",
            {"spec": {"exposeType": "PublicIP"}},
            **AS_STRATEGIC,
        )
    assert err.value.status == 415
    assert json.loads(err.value.body or b"")["reason"] == "UnsupportedMediaType"


async def test_main_resource_writes_ignore_status_and_status_writes_ignore_the_rest(
    core: client.CoreV1Api,
) -> None:
    n = await make_node(core)  # Nodes keep their status on create (kubelets register so)
    assert len(n.status.conditions) == 2
    n.status.conditions = []
    n.metadata.labels = {"new": "1"}
    out = await core.replace_node("n1", n)
    assert out.metadata.labels == {"new": "1"} and len(out.status.conditions) == 2
    out.metadata.labels = {"ignored": "1"}
    out.status.conditions = [client.V1NodeCondition(type="Ready", status="True")]
    out2 = await core.replace_node_status("n1", out)
    assert out2.metadata.labels == {"new": "1"}
    assert [c.type for c in out2.status.conditions] == ["Ready"]


async def test_service_status_dropped_on_create(core: client.CoreV1Api) -> None:
    svc = client.V1Service(
        metadata=client.V1ObjectMeta(name="s"),
        spec=client.V1ServiceSpec(ports=[client.V1ServicePort(port=1)]),
        status=client.V1ServiceStatus(
            load_balancer=client.V1LoadBalancerStatus(
                ingress=[client.V1LoadBalancerIngress(ip="1.2.3.4")]
            )
        ),
    )
    out = await core.create_namespaced_service("default", svc)
    assert out.status is None or out.status.load_balancer is None


async def test_no_op_update_keeps_resource_version(
    apiserver: SimApiServer, core: client.CoreV1Api
) -> None:
    n = await make_node(core)
    again = await core.replace_node("n1", n)
    assert again.metadata.resource_version == n.metadata.resource_version
