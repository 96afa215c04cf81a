"""The embedded API server calling ravend's real webhooks over TLS (CSR-issued certificate)."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

import ravend.controllers.webhook as webhook_module
from ravend.certs.csr import webhook_sans
from ravend.certs.keys import cert_from_pem
from ravend.kube import errors
from ravend.kube.client import KubeClient
from ravend.kube.models import parse_csr
from ravend.kube.resources import CSRS, GATEWAYS, GATEWAYS_V1ALPHA1
from ravend.sim.apiserver import SimApiServer
from ravend.sim.cluster_webhooks import SERVER_NAME

from .conftest import NODE, Served

ALPHA = "raven.openyurt.io/v1alpha1"
BETA = "raven.openyurt.io/v1beta1"


def gateway(api_version: str, name: str, spec: Mapping[str, Any]) -> dict[str, Any]:
    return {"apiVersion": api_version, "kind": "Gateway", "metadata": {"name": name}, "spec": spec}


async def peer_certificate(port: int, ca_pem: bytes) -> x509.Certificate:
    """The certificate the webhook presents, verified as the kube-apiserver verifies it."""
    ctx = ssl.create_default_context(cadata=ca_pem.decode())
    _, writer = await asyncio.open_connection(
        "127.0.0.1", port, ssl=ctx, server_hostname=SERVER_NAME
    )
    try:
        der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
    finally:
        writer.close()
        with contextlib.suppress(ssl.SSLError, ConnectionError):
            await writer.wait_closed()
    return x509.load_der_x509_certificate(der)


async def test_certificate_comes_from_the_csr_api_and_names_the_webhook_service(
    served: Served, admin: KubeClient, apiserver: SimApiServer
) -> None:
    cert = await peer_certificate(served.port, apiserver.ca_pem)  # verified by the cluster CA
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(sans.get_values_for_type(x509.DNSName)) == webhook_sans().dns
    assert not sans.get_values_for_type(x509.IPAddress)
    csrs = [parse_csr(o) for o in (await admin.list(CSRS))[0]]
    mine = [c for c in csrs if c.meta.name.startswith(f"ravend-webhook-{NODE}")]
    assert len(mine) == 1 and mine[0].approved
    assert cert_from_pem(mine[0].certificate_pem) == cert


@pytest.fixture
def reviews(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """desiredAPIVersion of every ConversionReview ravend's webhook answers (a spy)."""
    seen: list[str] = []
    real = webhook_module.convert_review

    def spy(review: Mapping[str, Any]) -> dict[str, Any]:
        seen.append(review["request"]["desiredAPIVersion"])
        return real(review)

    monkeypatch.setattr(webhook_module, "convert_review", spy)
    return seen


LEGACY = gateway(ALPHA, "legacy", {
    "endpoints": [
        {"nodeName": NODE, "underNAT": False, "publicIP": "203.0.113.10",
         "config": {"publicKey": "k1"}},
    ],
})  # fmt: skip


async def write_legacy_and_read_beta(admin: KubeClient, reviews: list[str]) -> None:
    created = await admin.create(GATEWAYS_V1ALPHA1, LEGACY)
    assert created["apiVersion"] == ALPHA
    beta = await admin.get(GATEWAYS, "legacy")
    assert beta["apiVersion"] == BETA
    [endpoint] = beta["spec"]["endpoints"]
    assert endpoint["type"] == "tunnel" and endpoint["port"] == 4500
    assert endpoint["publicIP"] == "203.0.113.10" and endpoint["config"] == {"publicKey": "k1"}
    # Write path (alpha -> beta storage) and the answer (beta -> alpha) went through ravend.
    assert reviews[:2] == [BETA, ALPHA]


async def test_v1alpha1_write_is_converted_by_the_webhook(
    served: Served, admin: KubeClient, apiserver: SimApiServer, reviews: list[str]
) -> None:
    apiserver.set_validating_webhook(None)  # conversion alone (see the next test)
    await write_legacy_and_read_beta(admin, reviews)


async def test_v1alpha1_write_passes_conversion_and_validation(
    served: Served, admin: KubeClient, reviews: list[str]
) -> None:
    await write_legacy_and_read_beta(admin, reviews)


async def test_v1beta1_written_through_the_api_reads_back_as_v1alpha1_via_the_webhook(
    served: Served, admin: KubeClient, reviews: list[str]
) -> None:
    modern = gateway(BETA, "modern", {
        "exposeType": "PublicIP",
        "proxyConfig": {"Replicas": 1},
        "tunnelConfig": {"Replicas": 1},
        "endpoints": [
            {"nodeName": NODE, "type": "proxy", "port": 10262, "underNAT": False,
             "publicIP": "203.0.113.11"},
            {"nodeName": NODE, "type": "tunnel", "port": 4500, "underNAT": False,
             "publicIP": "203.0.113.11"},
        ],
    })  # fmt: skip
    await admin.create(GATEWAYS, modern)
    assert reviews == []  # storage version in and out: no conversion needed
    alpha = await admin.get(GATEWAYS_V1ALPHA1, "modern")
    assert alpha["apiVersion"] == ALPHA
    assert alpha["spec"]["exposeType"] == "PublicIP"
    assert {e["nodeName"] for e in alpha["spec"]["endpoints"]} == {NODE}
    assert alpha["spec"]["endpoints"][0]["publicIP"] == "203.0.113.11"
    listed, _ = await admin.list(GATEWAYS_V1ALPHA1)
    assert [g["apiVersion"] for g in listed] == [ALPHA]
    assert reviews == [ALPHA, ALPHA]


@pytest.mark.parametrize("resource", [GATEWAYS, GATEWAYS_V1ALPHA1])
async def test_invalid_gateway_is_rejected_with_the_webhooks_message(
    served: Served, admin: KubeClient, resource: Any
) -> None:
    endpoint: dict[str, Any] = {"nodeName": NODE, "underNAT": True}
    if resource is GATEWAYS:
        endpoint |= {"type": "tunnel", "port": 4500}
    bad = gateway(
        resource.api_version, "bad", {"exposeType": "LoadBalancer", "endpoints": [endpoint]}
    )
    with pytest.raises(errors.KubeError) as info:
        await admin.create(resource, bad)
    assert 'admission webhook "' in str(info.value)
    assert "denied the request" in str(info.value)
    assert "requires underNAT=false" in str(info.value)
    with pytest.raises(errors.NotFound):
        await admin.get(GATEWAYS, "bad")


async def test_webhook_down_fails_requests_at_once_with_a_clear_error(
    served: Served, admin: KubeClient
) -> None:
    await admin.create(GATEWAYS, gateway(BETA, "g", {"endpoints": []}))
    served.task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await served.task
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(errors.KubeError) as read:
        await admin.get(GATEWAYS_V1ALPHA1, "g")
    with pytest.raises(errors.KubeError) as write:
        await admin.create(GATEWAYS, gateway(BETA, "h", {"endpoints": []}))
    assert loop.time() - started < 3.0  # refused connections: no waiting for a timeout
    assert "conversion webhook" in str(read.value) and "failed" in str(read.value)
    assert 'failed calling webhook "' in str(write.value)
    assert "500" in str(read.value) or getattr(read.value, "status", 500) == 500
    # v1beta1 reads do not need the webhook: the storage version is served as is.
    assert (await admin.get(GATEWAYS, "g"))["metadata"]["name"] == "g"


async def test_hung_webhook_fails_after_its_timeout_not_forever(
    apiserver: SimApiServer, admin: KubeClient
) -> None:
    accepted: list[asyncio.StreamWriter] = []

    async def swallow(_r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        accepted.append(w)  # never answers, not even the TLS handshake

    server = await asyncio.start_server(swallow, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    apiserver.set_validating_webhook(
        f"https://127.0.0.1:{port}/validate", apiserver.ca_pem, SERVER_NAME, timeout=1.0
    )
    loop = asyncio.get_running_loop()
    started = loop.time()
    try:
        with pytest.raises(errors.KubeError) as info:
            await admin.create(GATEWAYS, gateway(BETA, "g", {"endpoints": []}))
    finally:
        for w in accepted:
            w.close()
        server.close()
        await server.wait_closed()
    assert 0.9 < loop.time() - started < 5.0
    assert 'failed calling webhook "' in str(info.value)


async def test_rotated_certificate_is_served_without_a_restart(
    served: Served, apiserver: SimApiServer
) -> None:
    before = await peer_certificate(served.port, apiserver.ca_pem)
    await served.manager.issue("test rotation")
    after = await peer_certificate(served.port, apiserver.ca_pem)
    assert after.serial_number != before.serial_number
    assert after.public_key() != before.public_key()  # every renewal uses a new key


async def test_restart_reuses_the_stored_certificate(
    served: Served, admin: KubeClient, apiserver: SimApiServer, tmp_path: Path
) -> None:
    from ravend.controllers.webhook_serving import run_webhook, webhook_cert_manager

    from .conftest import free_port, running

    before = len((await admin.list(CSRS))[0])
    manager = webhook_cert_manager(served.client, NODE, served.manager.settings)
    port, ready = free_port(), asyncio.Event()
    webhook = run_webhook(
        served.client, NODE, manager.settings, port, ready.set, host="127.0.0.1", manager=manager
    )
    async with running(webhook):
        await asyncio.wait_for(ready.wait(), 5)
        cert = await peer_certificate(port, apiserver.ca_pem)
    assert cert == await peer_certificate(served.port, apiserver.ca_pem)
    assert len((await admin.list(CSRS))[0]) == before  # no new CSR
