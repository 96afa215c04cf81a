"""KubeClient against the embedded API server: CRUD, errors, 409 retry, watch, events, CSR, auth."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from ravend.kube import errors
from ravend.kube.client import KubeClient, connect
from ravend.kube.conversion import V1ALPHA1
from ravend.kube.models import ObjectRef, csr_to_json, parse_csr
from ravend.kube.resources import CSRS, EVENTS, GATEWAYS, GATEWAYS_V1ALPHA1, LEASES, NODES
from ravend.kube.settings import KubeSettings
from ravend.sim.apiserver import SimApiServer

JSON = dict[str, Any]


def node(name: str, **labels: str) -> JSON:
    return {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": labels}}


async def test_crud_and_error_types(kube: KubeClient) -> None:
    created = await kube.create(NODES, node("n1", pool="a"))
    assert created["metadata"]["uid"]
    await kube.create(NODES, node("n2", pool="b"))
    with pytest.raises(errors.AlreadyExists):
        await kube.create(NODES, node("n1"))
    with pytest.raises(errors.NotFound):
        await kube.get(NODES, "missing")

    items, rv = await kube.list(NODES, label_selector="pool=a")
    assert [i["metadata"]["name"] for i in items] == ["n1"]
    assert items[0]["kind"] == "Node" and rv

    stale = created
    fresh = await kube.patch(NODES, "n1", {"metadata": {"labels": {"x": "1"}}})
    assert fresh["metadata"]["labels"] == {"pool": "a", "x": "1"}
    with pytest.raises(errors.Conflict):
        await kube.replace(NODES, stale)

    await kube.delete(NODES, "n1")
    with pytest.raises(errors.NotFound):
        await kube.delete(NODES, "n1")
    await kube.delete(NODES, "n1", missing_ok=True)


async def test_list_pages_through_continue_tokens(
    kube: KubeClient, apiserver: SimApiServer
) -> None:
    for i in range(1203):
        apiserver.store.create(node(f"node-{i:04d}"))
    items, _ = await kube.list(NODES)
    assert len(items) == 1203
    assert len({i["metadata"]["name"] for i in items}) == 1203


async def test_invalid_gateway_reports_causes(kube: KubeClient) -> None:
    bad = {
        "apiVersion": "raven.openyurt.io/v1beta1",
        "kind": "Gateway",
        "metadata": {"name": "gw-bad"},
        "spec": {"endpoints": [{"nodeName": "a", "type": "ipsec", "port": 4500}]},
    }
    with pytest.raises(errors.Invalid) as info:
        await kube.create(GATEWAYS, bad)
    assert any("type" in field for field, _ in info.value.causes)


async def test_update_with_retry_resolves_a_real_conflict(
    kube: KubeClient, apiserver: SimApiServer
) -> None:
    await kube.create(NODES, node("n1"))
    calls = 0

    def mutate(obj: JSON) -> JSON:
        nonlocal calls
        calls += 1
        if calls == 1:
            # Another writer gets in between our read and our write (through the server's store,
            # synchronously), so our PUT carries a stale resourceVersion and gets a real 409.
            theirs = apiserver.store.get("nodes", "n1")
            theirs["metadata"]["labels"] = {"theirs": "yes"}
            apiserver.store.update(theirs)
        obj["metadata"].setdefault("labels", {})["ours"] = "yes"
        return obj

    result = await kube.update_with_retry(NODES, "n1", None, mutate)
    assert calls == 2  # first write hit 409, re-read and re-applied
    assert result["metadata"]["labels"] == {"ours": "yes", "theirs": "yes"}
    stored = await kube.get(NODES, "n1")
    assert stored["metadata"]["labels"] == {"ours": "yes", "theirs": "yes"}


async def test_update_with_retry_gives_up_on_endless_conflicts(
    kube: KubeClient, apiserver: SimApiServer
) -> None:
    await kube.create(NODES, node("n1"))

    def always_raced(obj: JSON) -> JSON:
        theirs = apiserver.store.get("nodes", "n1")
        theirs["metadata"]["labels"] = {"n": theirs["metadata"]["resourceVersion"]}
        apiserver.store.update(theirs)
        return obj

    with pytest.raises(errors.Conflict):
        await kube.update_with_retry(NODES, "n1", None, always_raced)


async def test_update_with_retry_skips_write_when_mutate_returns_none(kube: KubeClient) -> None:
    created = await kube.create(NODES, node("n1"))
    result = await kube.update_with_retry(NODES, "n1", None, lambda obj: None)
    assert result["metadata"]["resourceVersion"] == created["metadata"]["resourceVersion"]


async def test_status_subresource_write(kube: KubeClient) -> None:
    gw = {
        "apiVersion": "raven.openyurt.io/v1beta1",
        "kind": "Gateway",
        "metadata": {"name": "gw-a"},
        "spec": {"endpoints": [{"nodeName": "a", "type": "tunnel", "port": 4500}]},
    }
    await kube.create(GATEWAYS, gw)

    def set_status(obj: JSON) -> JSON:
        obj["status"] = {"nodes": [{"nodeName": "a", "privateIP": "10.0.0.1", "subnets": []}]}
        obj["spec"]["endpoints"] = []  # ignored on the status subresource
        return obj

    await kube.update_with_retry(GATEWAYS, "gw-a", None, set_status, status=True)
    stored = await kube.get(GATEWAYS, "gw-a")
    assert stored["status"]["nodes"] == [{"nodeName": "a", "privateIP": "10.0.0.1", "subnets": []}]
    assert len(stored["spec"]["endpoints"]) == 1
    # The same object through the v1alpha1 endpoint: converted by the server.
    alpha = await kube.get(GATEWAYS_V1ALPHA1, "gw-a")
    assert alpha["apiVersion"] == V1ALPHA1
    assert [e["nodeName"] for e in alpha["spec"]["endpoints"]] == ["a"]
    assert "type" not in alpha["spec"]["endpoints"][0]


async def test_watch_streams_events_and_reports_gone(
    kube: KubeClient, apiserver: SimApiServer
) -> None:
    _, rv = await kube.list(NODES)
    seen: list[tuple[str, str]] = []

    async def consume() -> None:
        async for kind, obj in kube.watch(NODES, resource_version=rv, timeout_s=10):
            seen.append((kind, obj["metadata"]["name"]))
            if kind == "DELETED":
                return

    task = asyncio.ensure_future(consume())
    await kube.create(NODES, node("w1"))
    await kube.patch(NODES, "w1", {"metadata": {"labels": {"a": "b"}}})
    await kube.delete(NODES, "w1")
    await asyncio.wait_for(task, 5)
    assert seen == [("ADDED", "w1"), ("MODIFIED", "w1"), ("DELETED", "w1")]

    apiserver.store.set_history_limit(2)
    for i in range(5):
        await kube.create(NODES, node(f"x{i}"))
    with pytest.raises(errors.Gone):
        async for _ in kube.watch(NODES, resource_version=rv, timeout_s=5):
            pass


async def test_unavailable_server_maps_to_unavailable(
    kube: KubeClient, apiserver: SimApiServer
) -> None:
    await apiserver.faults.set_unavailable(True, "503")
    with pytest.raises(errors.Unavailable):
        await kube.list(NODES)
    await apiserver.faults.set_unavailable(False)
    await apiserver.faults.set_unavailable(True, "refuse")
    with pytest.raises(errors.Unavailable):
        await kube.list(NODES)
    await apiserver.faults.set_unavailable(False)
    assert (await kube.list(NODES))[0] == []


async def test_request_timeout(kube: KubeClient, apiserver: SimApiServer, kubeconfig: Path) -> None:
    slow = await connect(kubeconfig, KubeSettings(request_timeout_s=0.3))
    try:
        apiserver.faults.latency = 1.0
        with pytest.raises(errors.Unavailable):
            await slow.list(NODES)
    finally:
        apiserver.faults.latency = 0.0
        await slow.close()


async def test_events_are_deduplicated_by_count(kube: KubeClient) -> None:
    ref = ObjectRef(kind="Gateway", name="gw-cloud", api_version="raven.openyurt.io/v1beta1")
    for _ in range(3):
        await kube.emit_event(ref, "Normal", "ActiveEndpointElected", "node a elected")
    await kube.emit_event(ref, "Warning", "ActiveEndpointLost", "node a lost")
    items, _ = await kube.list(EVENTS, "default")
    by_reason = {i["reason"]: i for i in items}
    assert by_reason["ActiveEndpointElected"]["count"] == 3
    assert by_reason["ActiveEndpointElected"]["involvedObject"]["name"] == "gw-cloud"
    assert by_reason["ActiveEndpointLost"]["count"] == 1
    assert len(items) == 2


async def test_event_failure_is_swallowed(kube: KubeClient, apiserver: SimApiServer) -> None:
    await apiserver.faults.set_unavailable(True, "503")
    try:
        await kube.emit_event(ObjectRef("Node", "n"), "Normal", "R", "m")  # must not raise
    finally:
        await apiserver.faults.set_unavailable(False)


async def test_csr_approval(kube: KubeClient) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, "system:node:n1"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "system:nodes"),
        ]
    )
    pem = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(name)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("n1")]), critical=False)
        .sign(key, hashes.SHA256())
        .public_bytes(serialization.Encoding.PEM)
    )
    obj = csr_to_json(
        "csr-n1", pem, "kubernetes.io/kubelet-serving", ["digital signature", "server auth"]
    )
    await kube.create(CSRS, obj)
    await kube.approve_csr("csr-n1", "RavendApproved", "node serving cert")
    await kube.approve_csr("csr-n1", "RavendApproved", "again: no-op")
    csr = parse_csr(await kube.get(CSRS, "csr-n1"))
    assert csr.approved and not csr.denied


async def test_in_cluster_service_account(
    apiserver: SimApiServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sa = tmp_path / "serviceaccount"
    sa.mkdir()
    (sa / "token").write_text(apiserver.admin_token)
    (sa / "ca.crt").write_bytes(apiserver.ca_pem)
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "127.0.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", str(apiserver.port))
    monkeypatch.delenv("KUBECONFIG", raising=False)
    client = await connect(None, KubeSettings(service_account_dir=sa))
    try:
        assert client.host == f"https://127.0.0.1:{apiserver.port}"
        await client.create(
            LEASES,
            {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": "l", "namespace": "kube-system"},
            },
        )
        items, _ = await client.list(LEASES, "kube-system")
        assert [i["metadata"]["name"] for i in items] == ["l"]
    finally:
        await client.close()


async def test_no_credentials_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(errors.KubeError, match="no Kubernetes credentials"):
        await connect(None, KubeSettings(service_account_dir=tmp_path / "none"))


async def test_kubeconfig_env_fallback(
    kubeconfig: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("KUBECONFIG", f"{tmp_path / 'missing'}:{kubeconfig}")
    client = await connect(None, KubeSettings(service_account_dir=tmp_path / "none"))
    try:
        assert (await client.list(NODES))[0] == []
    finally:
        await client.close()


async def test_wrong_token_is_unauthorized(apiserver: SimApiServer, tmp_path: Path) -> None:
    path = apiserver.write_kubeconfig(tmp_path / "bad", token="not-a-token")
    client = await connect(path)
    try:
        with pytest.raises(errors.Unauthorized):
            await client.list(NODES)
    finally:
        await client.close()
