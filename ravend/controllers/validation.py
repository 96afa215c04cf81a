"""Gateway validation rules (pure): Raven's webhook rules plus ravend's own.

Works on the v1beta1 JSON of a Gateway (the webhook converts v1alpha1 first) and returns every
violation as `field: message`, so one rejection tells the user everything that is wrong.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from typing import Any

ENDPOINT_TYPES = ("proxy", "tunnel")
EXPOSE_TYPES = ("", "PublicIP", "LoadBalancer")


def validate_gateway(obj: Mapping[str, Any]) -> list[str]:
    """Violations of a v1beta1 Gateway; empty when valid."""
    spec = obj.get("spec")
    if not isinstance(spec, Mapping):
        return ["spec: Required value"]
    errors: list[str] = []
    endpoints = spec.get("endpoints") or []
    if not isinstance(endpoints, list):
        return ["spec.endpoints: must be a list"]
    errors += _check_endpoints(endpoints)
    nat = {bool(ep.get("underNAT", False)) for ep in endpoints if isinstance(ep, Mapping)}
    if len(nat) > 1:
        errors.append("spec.endpoints: underNAT must be the same on every endpoint of a Gateway")
    expose = spec.get("exposeType", "") or ""
    if expose not in EXPOSE_TYPES:
        errors.append(f"spec.exposeType: unsupported value {expose!r}")
    elif expose and True in nat:
        errors.append(f"spec.exposeType: {expose} requires underNAT=false on every endpoint")
    errors += _check_replicas(spec, endpoints)
    return errors


def _check_endpoints(endpoints: list[Any]) -> list[str]:
    errors: list[str] = []
    seen: set[tuple[str, str]] = set()
    for i, ep in enumerate(endpoints):
        where = f"spec.endpoints[{i}]"
        if not isinstance(ep, Mapping):
            errors.append(f"{where}: must be an object")
            continue
        name, kind = ep.get("nodeName"), ep.get("type")
        if not isinstance(name, str) or not name:
            errors.append(f"{where}.nodeName: Required value")
        if kind not in ENDPOINT_TYPES:
            errors.append(f"{where}.type: unsupported value {kind!r}: want proxy or tunnel")
        if isinstance(name, str) and isinstance(kind, str):
            if (name, kind) in seen:
                errors.append(f"{where}: duplicate endpoint: node {name} already has type {kind}")
            seen.add((name, kind))
        port = ep.get("port", 0)
        if not isinstance(port, int) or isinstance(port, bool) or not 0 <= port <= 65535:
            errors.append(f"{where}.port: {port!r} is not a port (0-65535)")
        public_ip = ep.get("publicIP", "") or ""
        if public_ip:
            try:
                ipaddress.ip_address(public_ip)
            except ValueError:
                errors.append(f"{where}.publicIP: {public_ip!r} is not an IP address")
    return errors


def _check_replicas(spec: Mapping[str, Any], endpoints: list[Any]) -> list[str]:
    errors: list[str] = []
    for section in ("proxyConfig", "tunnelConfig"):
        conf = spec.get(section) or {}
        replicas = conf.get("Replicas", 0) if isinstance(conf, Mapping) else 0
        if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 0:
            errors.append(f"spec.{section}.Replicas: {replicas!r} must be an integer >= 0")
            continue
        if section == "proxyConfig":
            errors += _check_port_lists(conf)
            proxies = sum(
                1 for e in endpoints if isinstance(e, Mapping) and e.get("type") == "proxy"
            )
            # Raven checks only Replicas > 1: a converted v1alpha1 object has Replicas 1 and no
            # proxy endpoint, and must stay writable.
            if replicas > 1 and replicas > proxies:
                errors.append(
                    f"spec.proxyConfig.Replicas: {replicas} exceeds the {proxies} proxy endpoints"
                )
    return errors


def _check_port_lists(conf: Mapping[str, Any]) -> list[str]:
    errors: list[str] = []
    for key in ("proxyHTTPPort", "proxyHTTPSPort"):
        text = conf.get(key, "") or ""
        for part in str(text).split(","):
            item = part.strip()
            if item and not (item.isdigit() and 0 < int(item) < 65536):
                errors.append(f"spec.proxyConfig.{key}: {item!r} is not a port (1-65535)")
    return errors
