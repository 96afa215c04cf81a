"""Small helpers of the API client's requests: selectors, namespaces, list item types, and
TCP keepalive on watch connections (the last touches a socket option; nothing else does I/O)."""

from __future__ import annotations

import logging
import socket
from collections.abc import Mapping
from typing import Any

import aiohttp

from ravend.kube import errors
from ravend.kube.resources import Resource

log = logging.getLogger(__name__)

JSON = dict[str, Any]


def keep_alive(resp: aiohttp.ClientResponse, idle_s: float) -> None:
    """Turn on TCP keepalive for the connection of a watch (probes every idle_s / 3, 3 tries).

    A watch is a long idle read; if the peer or a NAT between us loses the connection without
    a RST, only keepalive probes notice it at the socket level (writes never happen on it).
    """
    conn = resp.connection
    transport = conn.transport if conn is not None else None
    sock = transport.get_extra_info("socket") if transport is not None else None
    if sock is None or idle_s <= 0:
        return
    idle = max(1, int(idle_s))
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        if hasattr(socket, "TCP_KEEPIDLE"):  # Linux; elsewhere the OS default timers apply
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, idle)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, max(1, idle // 3))
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, 3)
    except OSError as exc:  # not a TCP socket (a unix-socket proxy): nothing to probe
        log.debug("no TCP keepalive on the watch connection: %s", exc)


def selectors(label: str | None, field: str | None) -> list[tuple[str, str]]:
    query = []
    if label:
        query.append(("labelSelector", label))
    if field:
        query.append(("fieldSelector", field))
    return query


def namespace_of(obj: Mapping[str, Any], res: Resource) -> str | None:
    if not res.namespaced:
        return None
    namespace = (obj.get("metadata") or {}).get("namespace")
    if not namespace:
        raise errors.Invalid(f"{res.kind}: metadata.namespace is required")
    return str(namespace)


def with_type(obj: JSON, res: Resource) -> JSON:
    """List items of core types come without apiVersion/kind; the codecs expect them."""
    obj.setdefault("apiVersion", res.api_version)
    obj.setdefault("kind", res.kind)
    return obj
