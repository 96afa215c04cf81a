"""ravend's own Kubernetes API error hierarchy, and the one place that maps HTTP failures to it.

Callers catch `Conflict`, `NotFound`, `Unavailable`, ... and never kubernetes_asyncio's or
aiohttp's exceptions, so the client library can be replaced (house style 5). Pure: builds
exceptions from a status code and a decoded `Status` body; no I/O.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from typing import Any

import aiohttp
from kubernetes_asyncio.client.exceptions import ApiException


class KubeError(Exception):
    """Any failed Kubernetes API call. `status` is the HTTP code (0 when none was received)."""

    def __init__(self, message: str, *, status: int = 0, reason: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.reason = reason


class Conflict(KubeError):
    """409 on update: the resourceVersion is stale (re-read and retry)."""


class AlreadyExists(KubeError):
    """409 on create: an object with that name exists."""


class NotFound(KubeError):
    """404: the object (or the resource type) does not exist."""


class Invalid(KubeError):
    """422 (or 400): the server rejected the object; `causes` lists (field, message) pairs."""

    def __init__(
        self,
        message: str,
        *,
        status: int = 422,
        reason: str = "Invalid",
        causes: tuple[tuple[str, str], ...] = (),
    ) -> None:
        super().__init__(message, status=status, reason=reason)
        self.causes = causes


class Forbidden(KubeError):
    """403: authenticated but RBAC says no."""


class Unauthorized(KubeError):
    """401: no or bad credentials."""


class Gone(KubeError):
    """410: the resourceVersion we watch from is too old; relist."""


class Unavailable(KubeError):
    """The server could not answer now: connection failure, timeout, 5xx or 429. Retry later."""


_BY_STATUS: Mapping[int, type[KubeError]] = {
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    410: Gone,
    429: Unavailable,
}


def from_status(status: int, body: bytes | str | Mapping[str, Any] | None) -> KubeError:
    """Build the error for an HTTP `status` with a (possibly JSON `Status`) response body."""
    doc = _decode(body)
    message = str(doc.get("message") or _text(body) or f"HTTP {status}")
    reason = str(doc.get("reason") or "")
    if status == 409:
        cls: type[KubeError] = AlreadyExists if reason == "AlreadyExists" else Conflict
        return cls(message, status=status, reason=reason)
    if status in (400, 422):
        return Invalid(message, status=status, reason=reason or "Invalid", causes=_causes(doc))
    if status >= 500:
        return Unavailable(message, status=status, reason=reason)
    cls = _BY_STATUS.get(status, KubeError)
    return cls(message, status=status, reason=reason)


def from_watch_status(obj: Mapping[str, Any]) -> KubeError:
    """Build the error for a watch `ERROR` event carrying a `Status` object."""
    code = obj.get("code")
    return from_status(code if isinstance(code, int) else 500, obj)


def from_exception(exc: BaseException) -> KubeError:
    """Map a kubernetes_asyncio or aiohttp exception (refused, reset, timeout, HTTP error)."""
    if isinstance(exc, KubeError):
        return exc
    if isinstance(exc, ApiException):
        return from_status(int(exc.status or 0) or 503, exc.body)
    if isinstance(exc, TimeoutError | asyncio.TimeoutError | aiohttp.ServerTimeoutError):
        return Unavailable(f"request timed out: {exc!r}")
    if isinstance(exc, aiohttp.ClientResponseError):
        return from_status(exc.status, exc.message)
    if isinstance(exc, aiohttp.ClientError | OSError):
        return Unavailable(f"cannot reach the API server: {exc!r}")
    return KubeError(f"unexpected client error: {exc!r}")


TRANSPORT_ERRORS: tuple[type[BaseException], ...] = (
    aiohttp.ClientError,
    OSError,
    TimeoutError,
    ApiException,
)
"""Exceptions the HTTP layer raises for transport failures (caught and mapped by the client)."""


def _decode(body: bytes | str | Mapping[str, Any] | None) -> Mapping[str, Any]:
    if isinstance(body, Mapping):
        return body
    if not body:
        return {}
    try:
        doc = json.loads(body)
    except ValueError:
        return {}
    return doc if isinstance(doc, dict) else {}


def _text(body: bytes | str | Mapping[str, Any] | None) -> str:
    if isinstance(body, bytes):
        return body.decode("utf-8", "replace")[:500]
    return body[:500] if isinstance(body, str) else ""


def _causes(doc: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
    details = doc.get("details")
    if not isinstance(details, dict):
        return ()
    raw = details.get("causes") or []
    return tuple(
        (str(c.get("field", "")), str(c.get("message", ""))) for c in raw if isinstance(c, dict)
    )
