"""Per-type create/update rules of built-in resources, as kube-apiserver's registry strategies
apply them (pure, no I/O).

What is modelled: status reset/keep on create, status ignored on main-resource updates,
spec/status-only writes for /status and /approval, Service clusterIP allocation and defaults,
Secret stringData, Namespace phase, CSR requester fields and basic CSR validation.
What is not: most field validation of built-in types (only names and CSRs are validated).
"""

from __future__ import annotations

import base64
import copy
import datetime as dt
import ipaddress
import re
from collections.abc import Iterator, Mapping
from typing import Any

from cryptography import x509

from ravend.sim.apiserver.auth import Identity
from ravend.sim.apiserver.errors import invalid
from ravend.sim.apiserver.pki import known_usage
from ravend.sim.apiserver.resources import ResourceType

JsonObj = dict[str, Any]
_DNS1123 = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_SUBDOMAIN_MSG = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or "
    "'.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used "
    "for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
)


def now_rfc3339() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def cause(field: str, message: str, reason: str = "FieldValueInvalid") -> dict[str, str]:
    return {"reason": reason, "message": message, "field": field}


def validate_name(rt: ResourceType, obj: Mapping[str, Any]) -> None:
    name = obj["metadata"].get("name", "")
    if not name:
        msg = "name or generateName is required"
        raise invalid(
            rt, "", [cause("metadata.name", f"Required value: {msg}", "FieldValueRequired")]
        )
    # Names of Nodes/CSRs/ConfigMaps... are DNS subdomains (Nodes may even contain ':').
    if len(name) > 253 or not _DNS1123.match(name):
        raise invalid(
            rt, name, [cause("metadata.name", f'Invalid value: "{name}": {_SUBDOMAIN_MSG}')]
        )


class ClusterIPAllocator:
    """Hands out ClusterIPs from 10.96.0.0/12 like the default service CIDR."""

    def __init__(self, cidr: str = "10.96.0.0/12") -> None:
        self._hosts: Iterator[ipaddress.IPv4Address] = ipaddress.IPv4Network(cidr).hosts()
        next(self._hosts)  # .1 is the kubernetes Service

    def allocate(self) -> str:
        return str(next(self._hosts))


def prepare_create(
    rt: ResourceType, obj: JsonObj, requester: Identity | None, ips: ClusterIPAllocator
) -> None:
    """Mutate a new object in place the way the type's registry strategy would."""
    if rt.status_subresource and not rt.keep_status_on_create:
        obj.pop("status", None)
    if rt.kind == "Pod":
        obj["status"] = {"phase": "Pending"}
    elif rt.kind == "Namespace":
        obj.setdefault("spec", {"finalizers": ["kubernetes"]})
        obj["status"] = {"phase": "Active"}
    elif rt.kind == "Secret":
        _fold_string_data(obj)
        obj.setdefault("type", "Opaque")
    elif rt.kind == "Service":
        _default_service(obj, None, ips)
    elif rt.kind == "CertificateSigningRequest":
        _fill_requester(obj, requester)
        obj["status"] = {}
        validate_csr(rt, obj)


def prepare_update(
    rt: ResourceType, new: JsonObj, old: Mapping[str, Any], subresource: str
) -> None:
    """Mutate an update in place: which parts of `new` are allowed to change for `subresource`."""
    if subresource in ("status", "approval"):
        status = new.get("status")
        new.clear()
        new.update(copy.deepcopy(dict(old)))
        new["metadata"] = copy.deepcopy(old["metadata"])
        if subresource == "approval":
            conditions = (status or {}).get("conditions")
            new.setdefault("status", {})["conditions"] = _stamp_conditions(conditions or [])
            _validate_conditions(rt, new)
        elif status is None:
            new.pop("status", None)
        else:
            new["status"] = status
        return
    if rt.status_subresource:
        if "status" in old:
            new["status"] = copy.deepcopy(old["status"])
        else:
            new.pop("status", None)
    if rt.kind == "Secret":
        _fold_string_data(new)
    elif rt.kind == "Service":
        _default_service(new, old, None)
    elif rt.kind == "CertificateSigningRequest":
        new["spec"] = copy.deepcopy(old["spec"])  # spec is immutable


def _fold_string_data(obj: JsonObj) -> None:
    for key, value in (obj.pop("stringData", None) or {}).items():
        obj.setdefault("data", {})[key] = base64.b64encode(str(value).encode()).decode()


def _default_service(
    obj: JsonObj, old: Mapping[str, Any] | None, ips: ClusterIPAllocator | None
) -> None:
    spec = obj.setdefault("spec", {})
    spec.setdefault("type", "ClusterIP")
    spec.setdefault("sessionAffinity", "None")
    old_spec = (old or {}).get("spec", {})
    if old is not None:
        # clusterIP is immutable; an update that omits it keeps the allocated one.
        spec.setdefault("clusterIP", old_spec.get("clusterIP"))
    elif spec.get("clusterIP") in (None, "") and ips is not None:
        spec["clusterIP"] = ips.allocate()
    if spec.get("clusterIP") is not None:
        spec.setdefault("clusterIPs", [spec["clusterIP"]])
    for port in spec.get("ports") or []:
        port.setdefault("protocol", "TCP")
        port.setdefault("targetPort", port.get("port"))


def _fill_requester(obj: JsonObj, requester: Identity | None) -> None:
    """The CSR registry overwrites the requester fields with the authenticated user."""
    spec = obj.setdefault("spec", {})
    for key in ("username", "uid", "groups", "extra"):
        spec.pop(key, None)
    if requester is None:
        return
    spec["username"] = requester.user
    if requester.uid:
        spec["uid"] = requester.uid
    spec["groups"] = list(requester.groups)
    if requester.extra:
        spec["extra"] = {k: list(v) for k, v in requester.extra.items()}


def _stamp_conditions(conditions: list[JsonObj]) -> list[JsonObj]:
    now = now_rfc3339()
    out = []
    for given in conditions:
        cond = dict(given)
        cond.setdefault("status", "True")
        cond.setdefault("lastUpdateTime", now)
        cond.setdefault("lastTransitionTime", now)
        out.append(cond)
    return out


def _validate_conditions(rt: ResourceType, obj: Mapping[str, Any]) -> None:
    types = {c.get("type") for c in obj.get("status", {}).get("conditions", [])}
    if {"Approved", "Denied"} <= types:
        raise invalid(
            rt,
            obj["metadata"]["name"],
            [
                cause(
                    "status.conditions",
                    "Forbidden: Approved and Denied conditions are mutually exclusive",
                    "FieldValueForbidden",
                )
            ],
        )


def validate_csr(rt: ResourceType, obj: Mapping[str, Any]) -> None:
    spec = obj.get("spec", {})
    name = obj["metadata"].get("name", "")
    causes = []
    try:
        pem = base64.b64decode(spec.get("request", ""), validate=True)
        x509.load_pem_x509_csr(pem)
    except ValueError:
        causes.append(
            cause(
                "spec.request",
                "Invalid value: []byte{...}: PEM block type must be CERTIFICATE REQUEST",
            )
        )
    if not spec.get("signerName"):
        causes.append(cause("spec.signerName", "Required value", "FieldValueRequired"))
    for i, usage in enumerate(spec.get("usages") or []):
        if not known_usage(usage):
            causes.append(
                cause(
                    f"spec.usages[{i}]", f'Unsupported value: "{usage}"', "FieldValueNotSupported"
                )
            )
    seconds = spec.get("expirationSeconds")
    if seconds is not None and (not isinstance(seconds, int) or seconds < 600):
        causes.append(
            cause(
                "spec.expirationSeconds",
                f"Invalid value: {seconds}: may not specify a duration less than 600 seconds "
                "(10 minutes)",
            )
        )
    if causes:
        raise invalid(rt, name, causes)
