"""The resource types the sim API server serves, and their discovery documents (pure, no I/O).

One table says, per resource: group, served versions, storage version, scope, whether it has a
/status subresource, and which strategic-merge list keys apply. Everything else (routing, store,
discovery, patching) reads this table, so adding a resource is one entry.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

SERVER_VERSION = {
    "major": "1",
    "minor": "31",
    "gitVersion": "v1.31.0-ravend-sim",
    "gitCommit": "0000000000000000000000000000000000000000",
    "gitTreeState": "clean",
    "buildDate": "2024-08-13T00:00:00Z",
    "goVersion": "go1.22.5",
    "compiler": "gc",
    "platform": "linux/amd64",
}


@dataclass(frozen=True)
class ResourceType:
    """One served resource (e.g. nodes, or gateways.raven.openyurt.io)."""

    plural: str
    """Lower-case plural used in URLs ("nodes")."""
    kind: str
    """Object kind ("Node"); the list kind is kind + "List"."""
    group: str
    """API group; "" for the core group."""
    versions: tuple[str, ...]
    """Served versions, preferred first."""
    namespaced: bool
    """True when objects live in a namespace."""
    storage_version: str = ""
    """Version objects are kept in (defaults to the first served version)."""
    status_subresource: bool = False
    """True when /status exists and main-resource writes ignore status (as kube-apiserver does)."""
    keep_status_on_create: bool = False
    """True when create keeps the submitted status (Node: kubelets register with status)."""
    custom: bool = False
    """True for CRD-backed resources: generation on spec change, no strategic merge."""
    short_names: tuple[str, ...] = ()
    """Discovery short names (kubectl "gw")."""
    merge_keys: dict[str, str | None] = field(default_factory=dict)
    """Strategic merge: path ("status.conditions") -> merge key, or None for a primitive set."""
    field_labels: tuple[str, ...] = ()
    """Extra fieldSelector labels beyond metadata.name and metadata.namespace."""
    subresources: tuple[str, ...] = ()
    """Extra subresources besides status (e.g. "approval")."""

    @property
    def storage(self) -> str:
        return self.storage_version or self.versions[0]

    @property
    def qualified(self) -> str:
        """Name as kube error messages print it ("nodes", "leases.coordination.k8s.io")."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    def api_version(self, version: str) -> str:
        return f"{self.group}/{version}" if self.group else version


_META_KEYS: dict[str, str | None] = {
    "metadata.finalizers": None,
    "metadata.ownerReferences": "uid",
}

RESOURCES: tuple[ResourceType, ...] = (
    ResourceType("namespaces", "Namespace", "", ("v1",), False, short_names=("ns",)),
    ResourceType(
        "nodes",
        "Node",
        "",
        ("v1",),
        False,
        status_subresource=True,
        keep_status_on_create=True,
        short_names=("no",),
        merge_keys={
            **_META_KEYS,
            "status.conditions": "type",
            "status.addresses": "type",
            "spec.podCIDRs": None,
        },
    ),
    ResourceType(
        "pods",
        "Pod",
        "",
        ("v1",),
        True,
        status_subresource=True,
        short_names=("po",),
        merge_keys={
            **_META_KEYS,
            "spec.containers": "name",
            "spec.containers.ports": "containerPort",
            "spec.containers.env": "name",
            "spec.volumes": "name",
            "status.conditions": "type",
            "status.podIPs": "ip",
        },
        field_labels=("spec.nodeName", "status.phase"),
    ),
    ResourceType("configmaps", "ConfigMap", "", ("v1",), True, short_names=("cm",)),
    ResourceType("secrets", "Secret", "", ("v1",), True),
    ResourceType(
        "services",
        "Service",
        "",
        ("v1",),
        True,
        status_subresource=True,
        short_names=("svc",),
        merge_keys={**_META_KEYS, "spec.ports": "port"},
    ),
    # Endpoints subsets have no patch strategy upstream: a strategic merge replaces them.
    ResourceType("endpoints", "Endpoints", "", ("v1",), True, short_names=("ep",)),
    ResourceType("events", "Event", "", ("v1",), True, short_names=("ev",)),
    ResourceType("leases", "Lease", "coordination.k8s.io", ("v1",), True),
    ResourceType(
        "certificatesigningrequests",
        "CertificateSigningRequest",
        "certificates.k8s.io",
        ("v1",),
        False,
        status_subresource=True,
        short_names=("csr",),
        field_labels=("spec.signerName",),
        subresources=("approval",),
    ),
    ResourceType(
        "gateways",
        "Gateway",
        "raven.openyurt.io",
        ("v1beta1", "v1alpha1"),
        False,
        storage_version="v1beta1",
        status_subresource=True,
        custom=True,
        short_names=("gw",),
    ),
    # Stored as plain objects only (no semantics): ravend keeps their caBundle fields. The sim's
    # webhooks are configured with SimApiServer.set_*_webhook, not from these objects.
    ResourceType(
        "customresourcedefinitions",
        "CustomResourceDefinition",
        "apiextensions.k8s.io",
        ("v1",),
        False,
        status_subresource=True,
        short_names=("crd", "crds"),
    ),
    ResourceType(
        "validatingwebhookconfigurations",
        "ValidatingWebhookConfiguration",
        "admissionregistration.k8s.io",
        ("v1",),
        False,
    ),
)

BY_PLURAL: dict[tuple[str, str], ResourceType] = {(r.group, r.plural): r for r in RESOURCES}
BY_KIND: dict[tuple[str, str], ResourceType] = {(r.group, r.kind): r for r in RESOURCES}


def lookup(name: str) -> ResourceType:
    """Find a resource by plural, "plural.group", kind or short name (for in-process callers)."""
    for r in RESOURCES:
        if name in (r.plural, r.qualified, r.kind, *r.short_names):
            return r
    raise KeyError(name)


def for_object(api_version: str, kind: str) -> ResourceType:
    """The resource of an object from its apiVersion/kind (KeyError when not served)."""
    group = api_version.rpartition("/")[0]
    rt = BY_KIND[(group, kind)]
    version = api_version.rpartition("/")[2]
    if version not in rt.versions:
        raise KeyError(api_version)
    return rt


def groups() -> dict[str, list[str]]:
    """Served non-core groups -> versions, preferred first."""
    out: dict[str, list[str]] = {}
    for r in RESOURCES:
        if r.group:
            seen = out.setdefault(r.group, [])
            seen.extend(v for v in r.versions if v not in seen)
    return out


_VERBS = ["create", "delete", "get", "list", "patch", "update", "watch"]


def resource_list(group: str, version: str) -> dict[str, Any] | None:
    """APIResourceList for /api/v1 or /apis/<group>/<version> (None when not served)."""
    resources: list[dict[str, Any]] = []
    for r in RESOURCES:
        if r.group != group or version not in r.versions:
            continue
        entry = {
            "name": r.plural,
            "singularName": r.kind.lower(),
            "namespaced": r.namespaced,
            "kind": r.kind,
            "verbs": _VERBS,
        }
        if r.short_names:
            entry["shortNames"] = list(r.short_names)
        if r.storage == version or not r.custom:
            entry["storageVersionHash"] = f"sim-{r.plural}"
        resources.append(entry)
        subs = (("status",) if r.status_subresource else ()) + r.subresources
        for sub in subs:
            resources.append(
                {
                    "name": f"{r.plural}/{sub}",
                    "singularName": "",
                    "namespaced": r.namespaced,
                    "kind": r.kind,
                    "verbs": ["get", "patch", "update"],
                }
            )
    if not resources:
        return None
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": f"{group}/{version}" if group else version,
        "resources": resources,
    }


def api_group(group: str) -> dict[str, Any] | None:
    """APIGroup document for /apis/<group>."""
    versions = groups().get(group)
    if versions is None:
        return None
    gvs = [{"groupVersion": f"{group}/{v}", "version": v} for v in versions]
    return {
        "kind": "APIGroup",
        "apiVersion": "v1",
        "name": group,
        "versions": gvs,
        "preferredVersion": gvs[0],
    }


def api_group_list() -> dict[str, Any]:
    """APIGroupList for /apis."""
    items = [api_group(g) for g in groups()]
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": [g for g in items if g]}
