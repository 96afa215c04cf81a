"""Small typed views of the other core objects ravend touches, with parse/build functions (pure).

Pods (L7 routes `/exec/<ns>/<pod>` to the pod's node), Services and Endpoints (the internal proxy
Service the controller keeps), CertificateSigningRequests (certs/ and the approver) and Events.
Only the fields ravend uses are modelled; the raw JSON stays available where a writer needs to
preserve the rest.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ravend.kube.codec import meta_from_json, meta_to_json
from ravend.kube.jsonpath import (
    CodecError,
    opt_int,
    opt_list,
    opt_map,
    opt_str,
    opt_str_map,
    req_str,
)
from ravend.model import ObjectMeta

JSON = dict[str, Any]


@dataclass(frozen=True)
class ObjectRef:
    """Reference to an object (Event.involvedObject, owner references)."""

    kind: str
    name: str
    namespace: str = ""
    uid: str = ""
    api_version: str = ""

    def to_json(self) -> JSON:
        out: JSON = {"kind": self.kind, "name": self.name}
        for key, value in (
            ("namespace", self.namespace),
            ("uid", self.uid),
            ("apiVersion", self.api_version),
        ):
            if value:
                out[key] = value
        return out

    @staticmethod
    def of(obj: Mapping[str, Any]) -> ObjectRef:
        """Reference to a decoded API object."""
        meta = opt_map(obj, "metadata", "")
        return ObjectRef(
            kind=opt_str(obj, "kind", ""),
            name=req_str(meta, "name", "metadata"),
            namespace=opt_str(meta, "namespace", "metadata"),
            uid=opt_str(meta, "uid", "metadata"),
            api_version=opt_str(obj, "apiVersion", ""),
        )


# ---- Pod ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pod:
    name: str
    namespace: str
    node_name: str
    """Empty while unscheduled."""


def parse_pod(obj: Mapping[str, Any]) -> Pod:
    meta = opt_map(obj, "metadata", "")
    return Pod(
        name=req_str(meta, "name", "metadata"),
        namespace=opt_str(meta, "namespace", "metadata"),
        node_name=opt_str(opt_map(obj, "spec", ""), "nodeName", "spec"),
    )


# ---- Service / Endpoints --------------------------------------------------------------------


@dataclass(frozen=True)
class ServicePort:
    name: str
    port: int
    target_port: int | str
    protocol: str = "TCP"


@dataclass(frozen=True)
class Service:
    meta: ObjectMeta
    type: str = "ClusterIP"
    cluster_ip: str = ""
    ports: tuple[ServicePort, ...] = ()
    selector: Mapping[str, str] | None = None
    """None = no selector (Endpoints managed by hand, as for the internal proxy Service)."""


def parse_service(obj: Mapping[str, Any]) -> Service:
    spec = opt_map(obj, "spec", "")
    ports = []
    for i, raw in enumerate(opt_list(spec, "ports", "spec")):
        path = f"spec.ports[{i}]"
        if not isinstance(raw, Mapping):
            raise CodecError(path, "expected an object")
        target = raw.get("targetPort", raw.get("port"))
        if not isinstance(target, int | str) or isinstance(target, bool):
            raise CodecError(f"{path}.targetPort", f"expected int or string, got {target!r}")
        ports.append(
            ServicePort(
                name=opt_str(raw, "name", path),
                port=opt_int(raw, "port", path),
                target_port=target,
                protocol=opt_str(raw, "protocol", path, "TCP"),
            )
        )
    return Service(
        meta=meta_from_json(obj),
        type=opt_str(spec, "type", "spec", "ClusterIP"),
        cluster_ip=opt_str(spec, "clusterIP", "spec"),
        ports=tuple(ports),
        selector=opt_str_map(spec, "selector", "spec") if "selector" in spec else None,
    )


def service_to_json(svc: Service) -> JSON:
    spec: JSON = {
        "type": svc.type,
        "ports": [
            {"name": p.name, "port": p.port, "targetPort": p.target_port, "protocol": p.protocol}
            for p in svc.ports
        ],
    }
    if svc.cluster_ip:
        spec["clusterIP"] = svc.cluster_ip
    if svc.selector is not None:
        spec["selector"] = dict(svc.selector)
    return {"apiVersion": "v1", "kind": "Service", "metadata": meta_to_json(svc.meta), "spec": spec}


@dataclass(frozen=True)
class EndpointPort:
    name: str
    port: int
    protocol: str = "TCP"


@dataclass(frozen=True)
class EndpointSubset:
    addresses: tuple[str, ...]
    ports: tuple[EndpointPort, ...]


@dataclass(frozen=True)
class Endpoints:
    meta: ObjectMeta
    subsets: tuple[EndpointSubset, ...] = ()


def parse_endpoints(obj: Mapping[str, Any]) -> Endpoints:
    subsets = []
    for i, raw in enumerate(opt_list(obj, "subsets", "")):
        path = f"subsets[{i}]"
        if not isinstance(raw, Mapping):
            raise CodecError(path, "expected an object")
        addrs = tuple(
            opt_str(a, "ip", f"{path}.addresses")
            for a in opt_list(raw, "addresses", path)
            if isinstance(a, Mapping)
        )
        ports = tuple(
            EndpointPort(
                name=opt_str(p, "name", f"{path}.ports"),
                port=opt_int(p, "port", f"{path}.ports"),
                protocol=opt_str(p, "protocol", f"{path}.ports", "TCP"),
            )
            for p in opt_list(raw, "ports", path)
            if isinstance(p, Mapping)
        )
        subsets.append(EndpointSubset(addresses=addrs, ports=ports))
    return Endpoints(meta=meta_from_json(obj), subsets=tuple(subsets))


def endpoints_to_json(eps: Endpoints) -> JSON:
    subsets = [
        {
            "addresses": [{"ip": ip} for ip in s.addresses],
            "ports": [{"name": p.name, "port": p.port, "protocol": p.protocol} for p in s.ports],
        }
        for s in eps.subsets
        if s.addresses
    ]
    return {
        "apiVersion": "v1",
        "kind": "Endpoints",
        "metadata": meta_to_json(eps.meta),
        "subsets": subsets,
    }


# ---- CertificateSigningRequest --------------------------------------------------------------


@dataclass(frozen=True)
class CertificateSigningRequest:
    meta: ObjectMeta
    signer_name: str
    request_pem: bytes
    usages: tuple[str, ...] = ()
    username: str = ""
    groups: tuple[str, ...] = ()
    extra: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    """spec.extra of the requester (e.g. the node name bound to a service account token)."""
    approved: bool = False
    denied: bool = False
    certificate_pem: bytes = b""
    """Issued chain (PEM); empty until the signer has issued it."""


def parse_csr(obj: Mapping[str, Any]) -> CertificateSigningRequest:
    spec = opt_map(obj, "spec", "")
    status = opt_map(obj, "status", "")
    conditions = {
        opt_str(c, "type", "status.conditions")
        for c in opt_list(status, "conditions", "status")
        if isinstance(c, Mapping) and c.get("status", "True") == "True"
    }
    return CertificateSigningRequest(
        meta=meta_from_json(obj),
        signer_name=opt_str(spec, "signerName", "spec"),
        request_pem=_b64(opt_str(spec, "request", "spec"), "spec.request"),
        usages=tuple(str(u) for u in opt_list(spec, "usages", "spec")),
        username=opt_str(spec, "username", "spec"),
        groups=tuple(str(g) for g in opt_list(spec, "groups", "spec")),
        extra=_extra(spec.get("extra")),
        approved="Approved" in conditions,
        denied="Denied" in conditions,
        certificate_pem=_b64(opt_str(status, "certificate", "status"), "status.certificate"),
    )


def csr_to_json(
    name: str,
    request_pem: bytes,
    signer_name: str,
    usages: Iterable[str],
    *,
    expiration_seconds: int = 0,
    labels: Mapping[str, str] | None = None,
) -> JSON:
    """A new certificates.k8s.io/v1 CSR object for `create`."""
    spec: JSON = {
        "request": base64.b64encode(request_pem).decode("ascii"),
        "signerName": signer_name,
        "usages": list(usages),
    }
    if expiration_seconds:
        spec["expirationSeconds"] = expiration_seconds
    meta: JSON = {"name": name}
    if labels:
        meta["labels"] = dict(labels)
    return {
        "apiVersion": "certificates.k8s.io/v1",
        "kind": "CertificateSigningRequest",
        "metadata": meta,
        "spec": spec,
    }


def _extra(raw: object) -> dict[str, tuple[str, ...]]:
    if not isinstance(raw, Mapping):
        return {}
    return {str(k): tuple(str(x) for x in v) for k, v in raw.items() if isinstance(v, list | tuple)}


def _b64(text: str, path: str) -> bytes:
    if not text:
        return b""
    try:
        return base64.b64decode(text, validate=True)
    except ValueError:
        raise CodecError(path, "expected base64") from None


# ---- Event ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Event:
    meta: ObjectMeta
    involved: ObjectRef
    type: str
    reason: str
    message: str
    count: int = 1


def parse_event(obj: Mapping[str, Any]) -> Event:
    inv = opt_map(obj, "involvedObject", "")
    return Event(
        meta=meta_from_json(obj),
        involved=ObjectRef(
            kind=opt_str(inv, "kind", "involvedObject"),
            name=opt_str(inv, "name", "involvedObject"),
            namespace=opt_str(inv, "namespace", "involvedObject"),
            uid=opt_str(inv, "uid", "involvedObject"),
            api_version=opt_str(inv, "apiVersion", "involvedObject"),
        ),
        type=opt_str(obj, "type", ""),
        reason=opt_str(obj, "reason", ""),
        message=opt_str(obj, "message", ""),
        count=opt_int(obj, "count", "", 1),
    )
