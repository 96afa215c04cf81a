"""Serving a resource in a non-storage version: built-in converter or conversion webhook.

Thin async glue: when a conversion webhook is configured, every read or write of a Gateway in a
version other than the storage one goes through it (one ConversionReview per list or object), as
kube-apiserver does with `strategy: Webhook`; otherwise the built-in pure converter is used.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ravend.sim.apiserver import webhooks
from ravend.sim.apiserver.errors import bad_request
from ravend.sim.apiserver.resources import ResourceType
from ravend.sim.apiserver.store import Store

JsonObj = dict[str, Any]


class Versions:
    """Converts between the storage version and the version a request speaks."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.webhook: webhooks.Webhook | None = None

    async def out(self, rt: ResourceType, objs: Sequence[JsonObj], version: str) -> list[JsonObj]:
        """Storage-version objects as the client asked for them."""
        if not rt.custom or version == rt.storage or not objs:
            return list(objs)
        if self.webhook is not None:
            return await webhooks.convert(self.webhook, rt, objs, version)
        crd = self.store.crds[rt.plural]
        return [crd.convert(o, version) for o in objs]

    async def into_storage(self, rt: ResourceType, obj: Mapping[str, Any], version: str) -> JsonObj:
        """A request body in `version` -> validated in its version, then converted to storage."""
        expected = rt.api_version(version)
        if obj.get("apiVersion") not in (None, expected) or obj.get("kind") not in (None, rt.kind):
            raise bad_request(
                f"the API version in the data ({obj.get('apiVersion')}) does not match the "
                f"expected API version ({expected})"
            )
        body = {**obj, "apiVersion": expected, "kind": rt.kind}
        if not rt.custom or version == rt.storage:
            return body
        crd = self.store.crds[rt.plural]
        checked = crd.admit(body)
        if self.webhook is not None:
            return (await webhooks.convert(self.webhook, rt, [checked], rt.storage))[0]
        return crd.convert(checked, rt.storage)
