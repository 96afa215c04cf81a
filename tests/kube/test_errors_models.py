"""Error mapping, resource paths, typed models and backoff (pure)."""

from __future__ import annotations

import base64
import json

import aiohttp
import pytest
from kubernetes_asyncio.client.exceptions import ApiException

from ravend.kube import errors
from ravend.kube.informer import Backoff
from ravend.kube.models import (
    EndpointPort,
    Endpoints,
    EndpointSubset,
    ObjectRef,
    Service,
    ServicePort,
    csr_to_json,
    endpoints_to_json,
    parse_csr,
    parse_endpoints,
    parse_event,
    parse_pod,
    parse_service,
    service_to_json,
)
from ravend.kube.resources import CSRS, GATEWAYS, LEASES, NODES, PODS
from ravend.model import ObjectMeta


def _status(code: int, reason: str, message: str = "m", **details: object) -> bytes:
    body = {"kind": "Status", "code": code, "reason": reason, "message": message}
    if details:
        body["details"] = details
    return json.dumps(body).encode()


@pytest.mark.parametrize(
    ("code", "reason", "cls"),
    [
        (409, "Conflict", errors.Conflict),
        (409, "AlreadyExists", errors.AlreadyExists),
        (404, "NotFound", errors.NotFound),
        (410, "Expired", errors.Gone),
        (401, "Unauthorized", errors.Unauthorized),
        (403, "Forbidden", errors.Forbidden),
        (422, "Invalid", errors.Invalid),
        (400, "BadRequest", errors.Invalid),
        (429, "TooManyRequests", errors.Unavailable),
        (500, "InternalError", errors.Unavailable),
        (503, "ServiceUnavailable", errors.Unavailable),
        (418, "", errors.KubeError),
    ],
)
def test_status_mapping(code: int, reason: str, cls: type[errors.KubeError]) -> None:
    err = errors.from_status(code, _status(code, reason, "boom"))
    assert type(err) is cls
    assert err.status == code
    assert str(err) == "boom"


def test_invalid_carries_causes() -> None:
    body = _status(
        422, "Invalid", causes=[{"field": "spec.endpoints[0].publicIP", "message": "not an IP"}]
    )
    err = errors.from_status(422, body)
    assert isinstance(err, errors.Invalid)
    assert err.causes == (("spec.endpoints[0].publicIP", "not an IP"),)


def test_non_json_body_keeps_text() -> None:
    err = errors.from_status(502, b"<html>bad gateway</html>")
    assert isinstance(err, errors.Unavailable)
    assert "bad gateway" in str(err)


@pytest.mark.parametrize(
    ("exc", "cls"),
    [
        (aiohttp.ClientConnectionError("refused"), errors.Unavailable),
        (ConnectionRefusedError(111, "refused"), errors.Unavailable),
        (TimeoutError(), errors.Unavailable),
        (aiohttp.ServerDisconnectedError(), errors.Unavailable),
        (ApiException(status=404, reason="Not Found"), errors.NotFound),
        (ApiException(status=0, reason="x"), errors.Unavailable),
    ],
)
def test_exception_mapping(exc: BaseException, cls: type[errors.KubeError]) -> None:
    assert isinstance(errors.from_exception(exc), cls)


def test_watch_error_event() -> None:
    obj = {
        "kind": "Status",
        "code": 410,
        "reason": "Expired",
        "message": "too old resource version",
    }
    assert isinstance(errors.from_watch_status(obj), errors.Gone)


def test_resource_paths() -> None:
    assert NODES.path() == "/api/v1/nodes"
    assert NODES.path(name="n1") == "/api/v1/nodes/n1"
    assert PODS.path() == "/api/v1/pods"
    assert PODS.path("default", "p") == "/api/v1/namespaces/default/pods/p"
    assert (
        LEASES.path("kube-system") == "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases"
    )
    assert GATEWAYS.path(name="gw", subresource="status") == (
        "/apis/raven.openyurt.io/v1beta1/gateways/gw/status"
    )
    assert CSRS.path(name="c", subresource="approval").endswith(
        "/certificatesigningrequests/c/approval"
    )
    assert GATEWAYS.api_version == "raven.openyurt.io/v1beta1" and NODES.api_version == "v1"
    with pytest.raises(ValueError):
        GATEWAYS.path("default")
    with pytest.raises(ValueError):
        NODES.path(name="")


def test_backoff_grows_to_cap_with_jitter_and_resets() -> None:
    b = Backoff(0.5, 30.0)
    delays = [b.next_delay() for _ in range(12)]
    assert all(d >= 0.25 for d in delays)  # never a busy loop
    assert all(d <= 30.0 for d in delays)
    assert delays[-1] >= 15.0  # reached the cap region
    assert delays[0] <= 0.5
    b.reset()
    assert b.next_delay() <= 0.5


def test_pod_and_event() -> None:
    pod = parse_pod(
        {"metadata": {"name": "busybox", "namespace": "default"}, "spec": {"nodeName": "n1"}}
    )
    assert (pod.name, pod.namespace, pod.node_name) == ("busybox", "default", "n1")
    assert parse_pod({"metadata": {"name": "p", "namespace": "d"}}).node_name == ""
    ev = parse_event(
        {
            "metadata": {"name": "gw.1", "namespace": "default"},
            "involvedObject": {"kind": "Gateway", "name": "gw"},
            "type": "Normal",
            "reason": "ActiveEndpointElected",
            "message": "m",
            "count": 3,
        }
    )
    assert ev.involved == ObjectRef("Gateway", "gw") and ev.count == 3


def test_object_ref_of() -> None:
    ref = ObjectRef.of({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n", "uid": "u"}})
    assert ref.to_json() == {"kind": "Node", "name": "n", "uid": "u", "apiVersion": "v1"}


def test_service_and_endpoints_round_trip() -> None:
    meta = ObjectMeta(name="x-raven-proxy-internal-svc", namespace="kube-system")
    svc = Service(
        meta=meta,
        cluster_ip="10.96.0.20",
        ports=(ServicePort("https-10250", 10250, 10263), ServicePort("http-10255", 10255, 10264)),
    )
    assert parse_service(service_to_json(svc)) == svc
    assert "selector" not in service_to_json(svc)["spec"]
    eps = Endpoints(
        meta=meta,
        subsets=(EndpointSubset(("192.168.0.195",), (EndpointPort("https-10250", 10263),)),),
    )
    assert parse_endpoints(endpoints_to_json(eps)) == eps


def test_csr_build_and_parse() -> None:
    pem = b"-----BEGIN CERTIFICATE REQUEST-----\nabc\n-----END CERTIFICATE REQUEST-----\n"
    obj = csr_to_json("raven-node-a", pem, "kubernetes.io/kubelet-serving", ["server auth"])
    csr = parse_csr(obj | {"metadata": {"name": "raven-node-a"}})
    assert csr.request_pem == pem and not csr.approved
    obj["status"] = {
        "conditions": [{"type": "Approved", "status": "True"}],
        "certificate": base64.b64encode(b"CERT").decode(),
    }
    csr = parse_csr(obj)
    assert csr.approved and not csr.denied and csr.certificate_pem == b"CERT"
