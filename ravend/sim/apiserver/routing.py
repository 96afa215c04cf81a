"""URL -> request info, like kube-apiserver's RequestInfoFactory (pure).

/api/v1/[namespaces/{ns}/]{resource}[/{name}[/{subresource}]] and the same under
/apis/{group}/{version}/. `/api/v1/namespaces/{name}` is the Namespace itself, and
`/api/v1/namespaces/{name}/status` its status, exactly as upstream disambiguates.
"""

from __future__ import annotations

from dataclasses import dataclass

from ravend.sim.apiserver.resources import BY_PLURAL, ResourceType


@dataclass(frozen=True)
class RequestInfo:
    """What a resource URL addresses."""

    rt: ResourceType
    version: str
    namespace: str | None
    name: str | None
    subresource: str


class NoRoute(Exception):
    """The path names no served resource (404)."""


def parse(path: str) -> RequestInfo:
    parts = [p for p in path.split("/") if p]
    if len(parts) >= 2 and parts[0] == "api":
        group, version, rest = "", parts[1], parts[2:]
    elif len(parts) >= 3 and parts[0] == "apis":
        group, version, rest = parts[1], parts[2], parts[3:]
    else:
        raise NoRoute(path)
    namespace = None
    if len(rest) >= 3 and rest[0] == "namespaces" and (group, rest[2]) in BY_PLURAL:
        namespace, rest = rest[1], rest[2:]
    if not rest or len(rest) > 3:
        raise NoRoute(path)
    rt = BY_PLURAL.get((group, rest[0]))
    if rt is None or version not in rt.versions:
        raise NoRoute(path)
    if rt.namespaced and namespace is None and len(rest) > 1:
        raise NoRoute(path)  # namespaced object without a namespace
    sub = rest[2] if len(rest) == 3 else ""
    if sub and sub not in (("status",) if rt.status_subresource else ()) + rt.subresources:
        raise NoRoute(path)
    return RequestInfo(rt, version, namespace, rest[1] if len(rest) > 1 else None, sub)
