"""Gateway conversion between raven.openyurt.io v1alpha1 and v1beta1 (pure, no I/O).

Used by the conversion webhook, by the embedded API server (which serves both versions) and by
the informers. Both functions accept either version and return a new dict; the input is never
mutated.

- v1alpha1 -> v1beta1 follows Raven: `proxyConfig.Replicas = tunnelConfig.Replicas = 1`, every
  endpoint becomes `type: tunnel, port: 4500`, `status.activeEndpoint` becomes a one-item
  `status.activeEndpoints`.
- v1beta1 -> v1alpha1 is lossy (only tunnel endpoints with nodeName/underNAT/publicIP/config
  survive; activeEndpoint = first active tunnel endpoint). Like Cluster API's conversion
  webhooks, whatever would be lost is stored as JSON in the annotation `SPEC_ANNOTATION`, and the
  way back restores it, so v1beta1 -> v1alpha1 -> v1beta1 is lossless and v1alpha1 -> v1beta1 ->
  v1alpha1 is the identity for valid v1alpha1 objects (no annotation is added when nothing is
  lost). If a client edits the v1alpha1 form after that, the stale annotation is merged
  field-by-field instead of restored verbatim (see `_merge_stale`).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from typing import Any

GROUP = "raven.openyurt.io"
V1ALPHA1 = f"{GROUP}/v1alpha1"
V1BETA1 = f"{GROUP}/v1beta1"
SPEC_ANNOTATION = "ravend.openyurt.io/v1beta1-spec"
"""Annotation on v1alpha1 objects holding the v1beta1 spec/status that v1alpha1 cannot express."""

ALPHA_ENDPOINT_KEYS = ("nodeName", "underNAT", "publicIP", "config")
ALPHA_SPEC_KEYS = ("nodeSelector", "exposeType")
TUNNEL = "tunnel"
TUNNEL_PORT = 4500

JSON = dict[str, Any]


class ConversionError(ValueError):
    """The object is not a Gateway of a version we know."""


def to_v1beta1(obj: Mapping[str, Any]) -> JSON:
    """Return `obj` (either version) as a v1beta1 Gateway."""
    version = _version_of(obj)
    out = copy.deepcopy(dict(obj))
    out["apiVersion"] = V1BETA1
    if version == V1BETA1:
        _drop_annotation(out)  # never leak our bookkeeping into the storage version
        return out
    stored = _pop_annotation(out)
    plain = _alpha_to_beta(out)
    if stored is None:
        return plain
    restored = dict(plain)
    for part in ("spec", "status"):
        restored.pop(part, None)
        if part in stored:
            restored[part] = stored[part]
    # Verbatim restore only if the v1alpha1 view has not been edited since it was produced.
    if _beta_to_alpha_lossy(restored) == _beta_to_alpha_lossy(plain):
        return restored
    return _merge_stale(plain, stored)


def to_v1alpha1(obj: Mapping[str, Any]) -> JSON:
    """Return `obj` (either version) as v1alpha1, keeping what it loses in an annotation."""
    version = _version_of(obj)
    if version == V1ALPHA1:
        out = copy.deepcopy(dict(obj))
        out["apiVersion"] = V1ALPHA1
        return out
    beta = copy.deepcopy(dict(obj))
    _drop_annotation(beta)
    alpha = _beta_to_alpha_lossy(beta)
    # Only annotate when the plain way back would not give the same object: keeps
    # alpha -> beta -> alpha the identity for objects that were born v1alpha1.
    back = _alpha_to_beta(alpha)
    if _sans_version(back) != _sans_version(beta):
        lost = {part: beta[part] for part in ("spec", "status") if part in beta}
        meta = alpha.setdefault("metadata", {})
        annotations = dict(meta.get("annotations") or {})
        annotations[SPEC_ANNOTATION] = json.dumps(lost, sort_keys=True, separators=(",", ":"))
        meta["annotations"] = annotations
    return alpha


def _version_of(obj: Mapping[str, Any]) -> str:
    version = obj.get("apiVersion")
    if version not in (V1ALPHA1, V1BETA1):
        raise ConversionError(f"apiVersion: expected {V1ALPHA1} or {V1BETA1}, got {version!r}")
    if obj.get("kind", "Gateway") != "Gateway":
        raise ConversionError(f"kind: expected Gateway, got {obj.get('kind')!r}")
    return str(version)


def _sans_version(obj: Mapping[str, Any]) -> JSON:
    return {k: v for k, v in obj.items() if k != "apiVersion"}


def _alpha_endpoint_to_beta(ep: Mapping[str, Any]) -> JSON:
    out = {k: copy.deepcopy(ep[k]) for k in ALPHA_ENDPOINT_KEYS if k in ep}
    out["type"] = TUNNEL
    out["port"] = TUNNEL_PORT
    return out


def _beta_endpoint_to_alpha(ep: Mapping[str, Any]) -> JSON:
    return {k: copy.deepcopy(ep[k]) for k in ALPHA_ENDPOINT_KEYS if k in ep}


def _alpha_to_beta(alpha: Mapping[str, Any]) -> JSON:
    """Raven's plain v1alpha1 -> v1beta1 conversion (no annotation handling)."""
    out = {k: copy.deepcopy(v) for k, v in alpha.items() if k not in ("spec", "status")}
    out["apiVersion"] = V1BETA1
    spec_in: Mapping[str, Any] = alpha.get("spec") or {}
    spec: JSON = {k: copy.deepcopy(spec_in[k]) for k in ALPHA_SPEC_KEYS if k in spec_in}
    spec["proxyConfig"] = {"Replicas": 1}
    spec["tunnelConfig"] = {"Replicas": 1}
    if "endpoints" in spec_in:
        spec["endpoints"] = [_alpha_endpoint_to_beta(ep) for ep in spec_in["endpoints"] or []]
    out["spec"] = spec
    if "status" in alpha:
        status_in: Mapping[str, Any] = alpha["status"] or {}
        status: JSON = {}
        if "nodes" in status_in:
            status["nodes"] = copy.deepcopy(status_in["nodes"])
        active = status_in.get("activeEndpoint")
        if active:
            status["activeEndpoints"] = [_alpha_endpoint_to_beta(active)]
        out["status"] = status
    return out


def _beta_to_alpha_lossy(beta: Mapping[str, Any]) -> JSON:
    """v1beta1 -> v1alpha1 keeping only what v1alpha1 can express."""
    out = {k: copy.deepcopy(v) for k, v in beta.items() if k not in ("spec", "status")}
    out["apiVersion"] = V1ALPHA1
    spec_in: Mapping[str, Any] = beta.get("spec") or {}
    spec: JSON = {k: copy.deepcopy(spec_in[k]) for k in ALPHA_SPEC_KEYS if k in spec_in}
    if "endpoints" in spec_in:
        spec["endpoints"] = [
            _beta_endpoint_to_alpha(ep) for ep in spec_in["endpoints"] or [] if _is_tunnel(ep)
        ]
    out["spec"] = spec
    if "status" in beta:
        status_in: Mapping[str, Any] = beta["status"] or {}
        status: JSON = {}
        if "nodes" in status_in:
            status["nodes"] = copy.deepcopy(status_in["nodes"])
        tunnels = [ep for ep in status_in.get("activeEndpoints") or [] if _is_tunnel(ep)]
        if tunnels:
            status["activeEndpoint"] = _beta_endpoint_to_alpha(tunnels[0])
        out["status"] = status
    return out


def _is_tunnel(ep: Mapping[str, Any]) -> bool:
    return ep.get("type") == TUNNEL


def _merge_stale(plain: JSON, stored: Mapping[str, Any]) -> JSON:
    """Combine an edited v1alpha1 object (as `plain` v1beta1) with the older stored v1beta1 parts.

    The v1alpha1 edit wins for what v1alpha1 expresses; the stored data supplies the rest: the
    proxy/tunnel configs, non-tunnel endpoints (at their old positions) and per-node extras of
    tunnel endpoints (port, natType, publicPort) matched by nodeName.
    """
    out = copy.deepcopy(plain)
    old_spec: Mapping[str, Any] = stored.get("spec") or {}
    spec = out["spec"]
    for key, value in old_spec.items():
        if key not in ALPHA_SPEC_KEYS and key != "endpoints":
            spec[key] = copy.deepcopy(value)
    for key in ("proxyConfig", "tunnelConfig"):
        if key not in old_spec:
            spec.pop(key, None)
    if "endpoints" in spec or "endpoints" in old_spec:
        spec["endpoints"] = _merge_endpoints(
            spec.get("endpoints") or [], old_spec.get("endpoints") or []
        )
    old_status: Mapping[str, Any] = stored.get("status") or {}
    if "status" in out:
        status = out["status"]
        old_active = old_status.get("activeEndpoints") or []
        new_active = _merge_endpoints(status.get("activeEndpoints") or [], old_active)
        if new_active or "activeEndpoints" in old_status:
            status["activeEndpoints"] = new_active
    return out


def _merge_endpoints(new_tunnels: list[JSON], old: list[Mapping[str, Any]]) -> list[JSON]:
    extras = {ep.get("nodeName"): ep for ep in old if _is_tunnel(ep)}
    merged: list[JSON] = []
    for ep in new_tunnels:
        base = {k: copy.deepcopy(v) for k, v in extras.get(ep.get("nodeName"), {}).items()}
        for key in ALPHA_ENDPOINT_KEYS:
            base.pop(key, None)
        base.update(ep)
        if ep.get("nodeName") in extras:
            base["port"] = extras[ep.get("nodeName")].get("port", TUNNEL_PORT)
        merged.append(base)
    # Keep non-tunnel endpoints where they were, filling tunnel slots in the new order.
    result: list[JSON] = []
    queue = iter(merged)
    for old_ep in old:
        if _is_tunnel(old_ep):
            nxt = next(queue, None)
            if nxt is not None:
                result.append(nxt)
        else:
            result.append(copy.deepcopy(dict(old_ep)))
    result.extend(queue)
    return result


def _pop_annotation(obj: JSON) -> Mapping[str, Any] | None:
    meta = obj.get("metadata") or {}
    annotations = meta.get("annotations") or {}
    raw = annotations.get(SPEC_ANNOTATION)
    _drop_annotation(obj)
    if raw is None:
        return None
    try:
        stored = json.loads(raw)
    except ValueError:
        return None  # a hand-edited, broken annotation: fall back to Raven's plain conversion
    return stored if isinstance(stored, dict) else None


def _drop_annotation(obj: JSON) -> None:
    meta = obj.get("metadata")
    if not isinstance(meta, dict):
        return
    annotations = meta.get("annotations")
    if isinstance(annotations, dict) and SPEC_ANNOTATION in annotations:
        annotations = {k: v for k, v in annotations.items() if k != SPEC_ANNOTATION}
        if annotations:
            meta["annotations"] = annotations
        else:
            del meta["annotations"]
