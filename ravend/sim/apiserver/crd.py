"""CRD-backed resources: schema pruning/defaulting/validation and built-in version conversion.

Reads the CustomResourceDefinition manifest once (file I/O at load only); everything else is
pure. The OpenAPI rules live in `ravend.sim.schema`, the Gateway conversion in
`ravend.kube.conversion`; this module applies them in kube-apiserver's order: prune unknown
fields, apply defaults, validate, and report failures as 422 Invalid with causes.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import yaml

import ravend
from ravend.kube import conversion
from ravend.sim import schema
from ravend.sim.apiserver.errors import invalid
from ravend.sim.apiserver.resources import ResourceType

JsonObj = dict[str, Any]
Converter = Callable[[Mapping[str, Any]], JsonObj]

MANIFESTS = Path(ravend.__file__).resolve().parents[1] / "manifests"
GATEWAY_CRD = MANIFESTS / "gateway-crd.yaml"
VALIDATING_WEBHOOK = MANIFESTS / "validating-webhook.yaml"

_CONVERTERS: dict[str, Converter] = {
    "raven.openyurt.io/v1beta1": conversion.to_v1beta1,
    "raven.openyurt.io/v1alpha1": conversion.to_v1alpha1,
}


def installed_objects() -> list[JsonObj]:
    """The Gateway CRD and the ValidatingWebhookConfiguration, as `kubectl apply` stores them.

    A cluster running ravend has both; the sim keeps them as plain objects (their webhook
    settings are not acted on) so that ravend's caBundle keeper finds what it would in a real
    cluster.
    """
    out: list[JsonObj] = []
    for path, kind in (
        (GATEWAY_CRD, "CustomResourceDefinition"),
        (VALIDATING_WEBHOOK, "ValidatingWebhookConfiguration"),
    ):
        docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
        out.extend(d for d in docs if d.get("kind") == kind)
    return out


class CustomResource:
    """One CRD's served versions with their schemas and the built-in converter."""

    def __init__(self, rt: ResourceType, schemas: Mapping[str, Mapping[str, Any]]) -> None:
        self.rt = rt
        self.schemas = dict(schemas)

    @classmethod
    def load(cls, rt: ResourceType, path: Path = GATEWAY_CRD) -> CustomResource:
        docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
        crd = next(d for d in docs if d.get("kind") == "CustomResourceDefinition")
        schemas = {
            v["name"]: v["schema"]["openAPIV3Schema"]
            for v in crd["spec"]["versions"]
            if v.get("served", True)
        }
        return cls(rt, schemas)

    def admit(self, obj: Mapping[str, Any]) -> JsonObj:
        """Prune, default and validate `obj` against the schema of its own version."""
        version = str(obj.get("apiVersion", "")).rpartition("/")[2]
        sch = self.schemas.get(version)
        if sch is None:
            return copy.deepcopy(dict(obj))
        # metadata, apiVersion and kind are never pruned by kube-apiserver.
        keep = {k: copy.deepcopy(obj[k]) for k in ("apiVersion", "kind", "metadata") if k in obj}
        out = schema.apply_defaults(sch, schema.prune(sch, obj))
        out.update(keep)
        causes = schema.validate(sch, out)
        if causes:
            name = str(out.get("metadata", {}).get("name", ""))
            raise invalid(
                self.rt,
                name,
                [{"reason": c.reason, "message": c.message, "field": c.field} for c in causes],
            )
        return out

    def convert(self, obj: Mapping[str, Any], version: str) -> JsonObj:
        """Built-in conversion to `version` (a no-op copy when already there)."""
        target = self.rt.api_version(version)
        if obj.get("apiVersion") == target:
            return copy.deepcopy(dict(obj))
        return _CONVERTERS[target](obj)
