"""The leader's caBundle keeper against the embedded API server (CRD and webhook configuration
are installed there from the manifests, as `kubectl apply -f manifests/` would)."""

from __future__ import annotations

import base64
import logging
from typing import Any

import pytest

from ravend.controllers.cabundle import (
    GATEWAY_CRD,
    VALIDATING_CONFIG,
    CaBundleKeeper,
    plan_crd,
    plan_validating,
)
from ravend.kube import errors
from ravend.kube.client import KubeClient
from ravend.kube.resources import CRDS, VALIDATING_WEBHOOKS
from ravend.sim.apiserver import SimApiServer


def bundles(crd: dict[str, Any], vwc: dict[str, Any]) -> list[str | None]:
    out = [crd["spec"]["conversion"]["webhook"]["clientConfig"].get("caBundle")]
    return out + [w["clientConfig"].get("caBundle") for w in vwc["webhooks"]]


async def read(admin: KubeClient) -> tuple[dict[str, Any], dict[str, Any]]:
    return await admin.get(CRDS, GATEWAY_CRD), await admin.get(
        VALIDATING_WEBHOOKS, VALIDATING_CONFIG
    )


async def test_client_reports_the_cluster_ca(admin: KubeClient, apiserver: SimApiServer) -> None:
    assert admin.ca_pem() == apiserver.ca_pem


async def test_keeper_sets_both_bundles_once_and_repairs_a_blanked_one(
    admin: KubeClient, apiserver: SimApiServer
) -> None:
    ca = admin.ca_pem()
    assert ca is not None
    want = base64.b64encode(apiserver.ca_pem).decode()
    assert bundles(*await read(admin)) == [None, None]  # as shipped

    keeper = CaBundleKeeper(admin, ca)
    await keeper.reconcile()
    crd, vwc = await read(admin)
    assert bundles(crd, vwc) == [want, want]
    assert keeper.patches == 2
    # The rest of the objects is untouched.
    assert vwc["webhooks"][0]["clientConfig"]["service"]["path"] == "/validate"
    assert crd["spec"]["conversion"]["webhook"]["clientConfig"]["service"]["path"] == "/convert"

    # Steady state: nothing written.
    versions = [o["metadata"]["resourceVersion"] for o in (crd, vwc)]
    await keeper.reconcile()
    assert keeper.patches == 2
    assert [o["metadata"]["resourceVersion"] for o in await read(admin)] == versions

    # Someone re-applies the manifest (blank caBundle): the next pass repairs it.
    vwc["webhooks"][0]["clientConfig"].pop("caBundle")
    await admin.replace(VALIDATING_WEBHOOKS, vwc)
    await keeper.reconcile()
    assert bundles(*await read(admin)) == [want, want]
    assert keeper.patches == 3


async def test_keeper_survives_missing_objects_and_says_so_once(
    admin: KubeClient, apiserver: SimApiServer, caplog: pytest.LogCaptureFixture
) -> None:
    await admin.delete(CRDS, GATEWAY_CRD)
    keeper = CaBundleKeeper(admin, apiserver.ca_pem)
    with caplog.at_level(logging.WARNING, logger="ravend.controllers.cabundle"):
        await keeper.reconcile()
        await keeper.reconcile()
    missing = [r for r in caplog.records if "not installed" in r.getMessage()]
    assert len(missing) == 1 and GATEWAY_CRD in missing[0].getMessage()
    # The other object was still handled.
    assert keeper.patches == 1
    with pytest.raises(errors.NotFound):
        await admin.get(CRDS, GATEWAY_CRD)


def test_plans_guard_against_concurrent_edits_and_skip_non_webhook_conversion() -> None:
    crd = {
        "metadata": {"resourceVersion": "7"},
        "spec": {"conversion": {"strategy": "Webhook", "webhook": {"clientConfig": {}}}},
    }
    plan = plan_crd(crd, "Q0E=")
    assert plan.ops[0] == {"op": "test", "path": "/metadata/resourceVersion", "value": "7"}
    assert plan.ops[1]["path"] == "/spec/conversion/webhook/clientConfig/caBundle"
    none = plan_crd({"spec": {"conversion": {"strategy": "None"}}}, "Q0E=")
    assert not none.ops and "not Webhook" in none.note
    vwc = {"webhooks": [{"clientConfig": {"caBundle": "Q0E="}}, {"clientConfig": {}}]}
    only_second = plan_validating(vwc, "Q0E=")
    assert [op["path"] for op in only_second.ops] == ["/webhooks/1/clientConfig/caBundle"]


def test_keeper_refuses_something_that_is_not_a_pem_ca() -> None:
    with pytest.raises(ValueError, match="PEM"):
        CaBundleKeeper(None, b"not a certificate")  # type: ignore[arg-type]
