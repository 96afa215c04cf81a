"""Field checks shared by the topology parser (pure): each raises TopologyError naming the item."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

_NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")


class TopologyError(ValueError):
    """The topology file is malformed or inconsistent (message names the offending item)."""


def check_unique(values: list[str], what: str) -> None:
    seen: set[str] = set()
    for v in values:
        if v in seen:
            raise TopologyError(f"duplicate {what}: {v}")
        seen.add(v)


def check_host_in(addr: ipaddress.IPv4Address, net: ipaddress.IPv4Network, what: str) -> None:
    if addr not in net or addr in (net.network_address, net.broadcast_address):
        raise TopologyError(f"{what}: {addr} is not a host address of {net}")


def as_mapping(value: object, what: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise TopologyError(f"{what} must be a mapping, got {type(value).__name__}")
    return value


def as_list(value: object, what: str) -> list[Any]:
    if not isinstance(value, list):
        raise TopologyError(f"{what} must be a list, got {type(value).__name__}")
    return value


def as_bool(value: object, what: str) -> bool:
    if not isinstance(value, bool):
        raise TopologyError(f"{what} must be true or false, got {value!r}")
    return value


def dns_name(value: object, what: str) -> str:
    if not isinstance(value, str) or not _NAME_RE.match(value) or len(value) > 63:
        raise TopologyError(f"{what} must be a lowercase DNS name, got {value!r}")
    return value


def str_map(value: object, what: str) -> Mapping[str, str]:
    m = as_mapping(value, what)
    for k, v in m.items():
        if not isinstance(k, str) or not isinstance(v, str):
            raise TopologyError(f"{what}: keys and values must be strings (quote them): {k!r}")
    return MappingProxyType(dict(m))


def network(
    text: str, what: str, version: int
) -> Any:  # IPv4Network or IPv6Network by `version`; Any keeps callers terse
    try:
        net = ipaddress.ip_network(text, strict=True)
    except ValueError as exc:
        raise TopologyError(f"{what}: {text!r} is not a CIDR ({exc})") from exc
    if net.version != version:
        raise TopologyError(f"{what}: {text} must be an IPv{version} CIDR")
    return net


def address(text: str, what: str, version: int) -> Any:
    try:
        addr = ipaddress.ip_address(text)
    except ValueError as exc:
        raise TopologyError(f"{what}: {text!r} is not an IP address") from exc
    if addr.version != version:
        raise TopologyError(f"{what}: {text} must be an IPv{version} address")
    return addr
