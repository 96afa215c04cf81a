"""Gateways: both versions, schema validation, generation, status, conversion/admission webhooks."""

from __future__ import annotations

import json
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from ravend.kube import conversion
from ravend.sim.apiserver import SimApiServer
from ravend.sim.apiserver.pki import ClusterCA

G = "raven.openyurt.io"
BETA: dict[str, Any] = {
    "apiVersion": f"{G}/v1beta1",
    "kind": "Gateway",
    "metadata": {"name": "gw-hangzhou"},
    "spec": {
        "proxyConfig": {"Replicas": 1},
        "tunnelConfig": {"Replicas": 1},
        "endpoints": [
            {
                "nodeName": "izbp15inok0kbfkg3in52rz",
                "underNAT": True,
                "port": 10262,
                "type": "proxy",
            },
            {
                "nodeName": "izbp15inok0kbfkg3in52rz",
                "underNAT": True,
                "port": 4500,
                "type": "tunnel",
            },
        ],
    },
}
ALPHA: dict[str, Any] = {
    "apiVersion": f"{G}/v1alpha1",
    "kind": "Gateway",
    "metadata": {"name": "gw-legacy"},
    "spec": {
        "exposeType": "LoadBalancer",
        "endpoints": [
            {"nodeName": "node-a", "underNAT": False},
            {"nodeName": "node-b", "underNAT": False, "config": {"foo": "bar"}},
        ],
    },
}
AS_MERGE: dict[str, Any] = {"_content_type": "application/merge-patch+json"}


async def create(custom: client.CustomObjectsApi, obj: dict[str, Any]) -> dict[str, Any]:
    version = obj["apiVersion"].split("/")[1]
    out: dict[str, Any] = await custom.create_cluster_custom_object(G, version, "gateways", obj)
    return out


async def get(custom: client.CustomObjectsApi, version: str, name: str) -> dict[str, Any]:
    out: dict[str, Any] = await custom.get_cluster_custom_object(G, version, "gateways", name)
    return out


async def test_v1beta1_object_reads_back_in_both_versions(custom: client.CustomObjectsApi) -> None:
    created = await create(custom, BETA)
    assert created["metadata"]["generation"] == 1
    alpha = await get(custom, "v1alpha1", "gw-hangzhou")
    assert alpha["apiVersion"] == f"{G}/v1alpha1"
    assert [e["nodeName"] for e in alpha["spec"]["endpoints"]] == ["izbp15inok0kbfkg3in52rz"]
    beta = await get(custom, "v1beta1", "gw-hangzhou")
    assert beta["spec"]["endpoints"] == BETA["spec"]["endpoints"]  # lossless through storage


async def test_v1alpha1_write_is_stored_as_v1beta1(
    apiserver: SimApiServer, custom: client.CustomObjectsApi
) -> None:
    created = await create(custom, ALPHA)
    assert created["apiVersion"] == f"{G}/v1alpha1"
    assert created["spec"] == ALPHA["spec"]
    stored = apiserver.store.get("gateways", "gw-legacy")
    assert stored["apiVersion"] == f"{G}/v1beta1"
    assert {e["type"] for e in stored["spec"]["endpoints"]} == {"tunnel"}
    assert stored["spec"]["tunnelConfig"]["Replicas"] == 1
    listed = await custom.list_cluster_custom_object(G, "v1alpha1", "gateways")
    assert [i["apiVersion"] for i in listed["items"]] == [f"{G}/v1alpha1"]


async def test_invalid_gateway_is_422_with_causes(custom: client.CustomObjectsApi) -> None:
    bad = json.loads(json.dumps(BETA))
    bad["spec"]["endpoints"][0]["type"] = "bogus"
    del bad["spec"]["endpoints"][1]["nodeName"]
    with pytest.raises(ApiException) as err:
        await create(custom, bad)
    assert err.value.status == 422
    status = json.loads(err.value.body or b"")
    assert status["reason"] == "Invalid"
    assert status["message"].startswith('Gateway.raven.openyurt.io "gw-hangzhou" is invalid: [')
    fields = {c["field"]: c["reason"] for c in status["details"]["causes"]}
    assert fields["spec.endpoints[0].type"] == "FieldValueNotSupported"
    assert fields["spec.endpoints[1].nodeName"] == "FieldValueRequired"
    assert status["details"]["kind"] == "Gateway" and status["details"]["group"] == G


async def test_unknown_fields_are_pruned(custom: client.CustomObjectsApi) -> None:
    obj = json.loads(json.dumps(BETA))
    obj["spec"]["madeUp"] = 1
    created = await create(custom, obj)
    assert "madeUp" not in created["spec"]


async def test_generation_bumps_on_spec_change_only_and_status_subresource(
    custom: client.CustomObjectsApi,
) -> None:
    await create(custom, BETA)
    patched = await custom.patch_cluster_custom_object(
        G, "v1beta1", "gateways", "gw-hangzhou", {"metadata": {"labels": {"x": "y"}}}, **AS_MERGE
    )
    assert patched["metadata"]["generation"] == 1
    patched = await custom.patch_cluster_custom_object(
        G,
        "v1beta1",
        "gateways",
        "gw-hangzhou",
        {"spec": {"exposeType": "PublicIP"}, "status": {"activeEndpoints": []}},
        **AS_MERGE,
    )
    assert patched["metadata"]["generation"] == 2
    assert "status" not in patched  # status is ignored on the main resource
    active = [
        {
            "nodeName": "izbp15inok0kbfkg3in52rz",
            "type": "tunnel",
            "port": 4500,
            "underNAT": True,
            "config": {"enable-l3-tunnel": "true"},
        }
    ]
    out = await custom.patch_cluster_custom_object_status(
        G,
        "v1beta1",
        "gateways",
        "gw-hangzhou",
        {"spec": {"exposeType": ""}, "status": {"activeEndpoints": active}},
        **AS_MERGE,
    )
    assert out["status"]["activeEndpoints"][0]["config"] == {"enable-l3-tunnel": "true"}
    assert out["spec"]["exposeType"] == "PublicIP" and out["metadata"]["generation"] == 2
    alpha = await get(custom, "v1alpha1", "gw-hangzhou")
    assert alpha["status"]["activeEndpoint"]["nodeName"] == "izbp15inok0kbfkg3in52rz"


async def test_stale_gateway_update_conflicts(custom: client.CustomObjectsApi) -> None:
    created = await create(custom, BETA)
    created["spec"]["exposeType"] = "PublicIP"
    await custom.replace_cluster_custom_object(G, "v1beta1", "gateways", "gw-hangzhou", created)
    with pytest.raises(ApiException) as err:
        await custom.replace_cluster_custom_object(G, "v1beta1", "gateways", "gw-hangzhou", created)
    assert err.value.status == 409
    assert (
        'gateways.raven.openyurt.io "gw-hangzhou"' in json.loads(err.value.body or b"")["message"]
    )


# ---- webhooks ----------------------------------------------------------------------------------


class HookServer:
    """A real HTTPS webhook server (cert from its own CA) that records what it receives."""

    def __init__(self, tmp: Path) -> None:
        self.ca = ClusterCA.create()
        self.tmp = tmp
        self.reviews: list[dict[str, Any]] = []
        self.deny: str | None = None
        self.url = ""
        self.runner: web.AppRunner | None = None

    async def convert(self, request: web.Request) -> web.Response:
        review = await request.json()
        self.reviews.append(review)
        req = review["request"]
        fn = (
            conversion.to_v1alpha1
            if req["desiredAPIVersion"].endswith("v1alpha1")
            else conversion.to_v1beta1
        )
        resp = {
            "uid": req["uid"],
            "convertedObjects": [fn(o) for o in req["objects"]],
            "result": {"status": "Success"},
        }
        return web.json_response({**review, "response": resp})

    async def validate(self, request: web.Request) -> web.Response:
        review = await request.json()
        self.reviews.append(review)
        resp: dict[str, Any] = {"uid": review["request"]["uid"], "allowed": self.deny is None}
        if self.deny:
            resp["status"] = {"code": 422, "message": self.deny}
        return web.json_response({**review, "response": resp})

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/convert", self.convert)
        app.router.add_post("/validate", self.validate)
        cert, key = self.ca.issue(
            "hook", usages=["digital signature", "server auth"], sans=["127.0.0.1"]
        )
        (self.tmp / "h.crt").write_bytes(cert)
        (self.tmp / "h.key").write_bytes(key)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(self.tmp / "h.crt", self.tmp / "h.key")
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0, ssl_context=ctx)
        await site.start()
        port = self.runner.addresses[0][1]
        self.url = f"https://127.0.0.1:{port}"


@pytest.fixture
async def hooks(tmp_path: Path) -> AsyncIterator[HookServer]:
    server = HookServer(tmp_path)
    await server.start()
    yield server
    assert server.runner is not None
    await server.runner.cleanup()


async def test_conversion_webhook_is_called_for_non_storage_versions(
    apiserver: SimApiServer, custom: client.CustomObjectsApi, hooks: HookServer
) -> None:
    apiserver.set_conversion_webhook(hooks.url + "/convert", hooks.ca.cert_pem)
    await create(custom, BETA)
    assert hooks.reviews == []  # storage version: no conversion needed
    alpha = await get(custom, "v1alpha1", "gw-hangzhou")
    assert alpha["apiVersion"] == f"{G}/v1alpha1"
    review = hooks.reviews[-1]
    assert (
        review["kind"] == "ConversionReview" and review["apiVersion"] == "apiextensions.k8s.io/v1"
    )
    assert review["request"]["desiredAPIVersion"] == f"{G}/v1alpha1"
    await create(custom, ALPHA)
    assert hooks.reviews[-1]["request"]["desiredAPIVersion"].endswith("v1alpha1")  # response back
    assert any(r["request"]["desiredAPIVersion"].endswith("v1beta1") for r in hooks.reviews)


async def test_validating_webhook_denies_with_its_message(
    apiserver: SimApiServer, custom: client.CustomObjectsApi, hooks: HookServer
) -> None:
    apiserver.set_validating_webhook(hooks.url + "/validate", hooks.ca.cert_pem)
    created = await create(custom, BETA)
    review = hooks.reviews[-1]["request"]
    assert review["operation"] == "CREATE" and review["userInfo"]["username"] == "kubernetes-admin"
    hooks.deny = "tunnelConfig.Replicas must be <= 1"
    created["spec"]["tunnelConfig"]["Replicas"] = 2
    with pytest.raises(ApiException) as err:
        await custom.replace_cluster_custom_object(G, "v1beta1", "gateways", "gw-hangzhou", created)
    assert err.value.status == 422
    assert json.loads(err.value.body or b"")["message"] == (
        'admission webhook "gateway.raven.openyurt.io" denied the request: '
        "tunnelConfig.Replicas must be <= 1"
    )
    assert hooks.reviews[-1]["request"]["oldObject"]["spec"]["tunnelConfig"]["Replicas"] == 1


async def test_unreachable_webhook_fails_the_request(
    apiserver: SimApiServer, custom: client.CustomObjectsApi
) -> None:
    apiserver.set_validating_webhook("https://127.0.0.1:1/validate", b"")
    with pytest.raises(ApiException) as err:
        await create(custom, BETA)
    assert err.value.status == 500
    assert (
        'failed calling webhook "gateway.raven.openyurt.io"'
        in json.loads(err.value.body or b"")["message"]
    )
    apiserver.set_validating_webhook(None)
    apiserver.set_conversion_webhook("https://127.0.0.1:1/convert", b"")
    await create(custom, BETA)  # storage version needs no conversion
    with pytest.raises(ApiException) as err:
        await get(custom, "v1alpha1", "gw-hangzhou")
    assert err.value.status == 500
    assert "conversion webhook for raven.openyurt.io/v1beta1, Kind=Gateway failed" in str(
        err.value.body
    )
