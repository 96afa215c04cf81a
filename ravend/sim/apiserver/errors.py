"""kube-apiserver shaped errors and Status bodies (pure, no I/O).

Every failure the sim server reports is an `ApiError` carrying the exact Status object
kube-apiserver would send, so client code (and its error mapping) cannot tell the difference.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ravend.sim.apiserver.resources import ResourceType

JsonObj = dict[str, Any]


class ApiError(Exception):
    """A request failure with the Status body kube-apiserver would return."""

    def __init__(self, code: int, reason: str, message: str, details: JsonObj | None = None):
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.details = details

    def status(self) -> JsonObj:
        """The Status object (kind Status, apiVersion v1) for the response body."""
        body: JsonObj = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        if self.details is not None:
            body["details"] = self.details
        return body


def _details(rt: ResourceType, name: str) -> JsonObj:
    details: JsonObj = {"name": name, "kind": rt.plural}
    if rt.group:
        details["group"] = rt.group
    return details


def not_found(rt: ResourceType, name: str) -> ApiError:
    return ApiError(404, "NotFound", f'{rt.qualified} "{name}" not found', _details(rt, name))


def already_exists(rt: ResourceType, name: str) -> ApiError:
    msg = f'{rt.qualified} "{name}" already exists'
    return ApiError(409, "AlreadyExists", msg, _details(rt, name))


def conflict(rt: ResourceType, name: str, why: str | None = None) -> ApiError:
    # Same wording as apierrors.NewConflict(..., storage.ErrConflict-ish message).
    why = why or (
        "the object has been modified; please apply your changes to the latest version "
        "and try again"
    )
    msg = f'Operation cannot be fulfilled on {rt.qualified} "{name}": {why}'
    return ApiError(409, "Conflict", msg, _details(rt, name))


def invalid(rt: ResourceType, name: str, causes: Sequence[Mapping[str, str]]) -> ApiError:
    """422 Invalid with field causes, worded like apierrors.NewInvalid."""
    kind = f"{rt.kind}.{rt.group}" if rt.group else rt.kind
    parts = [f"{c['field']}: {c['message']}" if c.get("field") else c["message"] for c in causes]
    summary = parts[0] if len(parts) == 1 else "[" + ", ".join(parts) + "]"
    details: JsonObj = {"name": name, "kind": rt.kind, "causes": [dict(c) for c in causes]}
    if rt.group:
        details["group"] = rt.group
    return ApiError(422, "Invalid", f'{kind} "{name}" is invalid: {summary}', details)


def bad_request(message: str) -> ApiError:
    return ApiError(400, "BadRequest", message)


def method_not_allowed(message: str = "the server does not allow this method") -> ApiError:
    return ApiError(405, "MethodNotAllowed", message)


def unsupported_media_type(accepted: Sequence[str]) -> ApiError:
    msg = (
        "the body of the request was in an unknown format - accepted media types include: "
        + ", ".join(accepted)
    )
    return ApiError(415, "UnsupportedMediaType", msg)


def unauthorized() -> ApiError:
    return ApiError(401, "Unauthorized", "Unauthorized")


def internal(message: str) -> ApiError:
    return ApiError(
        500,
        "InternalError",
        f"Internal error occurred: {message}",
        {"causes": [{"message": message}]},
    )


def unavailable() -> ApiError:
    return ApiError(
        503, "ServiceUnavailable", "the server is currently unable to handle the request"
    )


def expired(message: str) -> ApiError:
    return ApiError(410, "Expired", message)
