"""The in-memory object store: CRUD with kube semantics and one global resourceVersion (no I/O).

This is what tests may use directly (`server.store`): the same validation, defaulting,
conversion and watch events as the HTTP path, minus webhooks and authentication. Objects are kept
in their storage version; callers may hand in another served version of a CRD and it is
converted with the built-in converter. Every returned object is a private copy.
"""

from __future__ import annotations

import base64
import copy
import json
import secrets
import uuid
from collections.abc import Mapping
from typing import Any

from ravend.sim.apiserver import resources as res
from ravend.sim.apiserver.auth import Identity
from ravend.sim.apiserver.crd import CustomResource
from ravend.sim.apiserver.errors import already_exists, bad_request, conflict, not_found
from ravend.sim.apiserver.resources import ResourceType
from ravend.sim.apiserver.selectors import parse_field_selector, parse_label_selector
from ravend.sim.apiserver.strategies import (
    ClusterIPAllocator,
    now_rfc3339,
    prepare_create,
    prepare_update,
    validate_name,
)
from ravend.sim.apiserver.watch import Event, History, Watcher

JsonObj = dict[str, Any]
Key = tuple[str, str]
BOOTSTRAP_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")


class Store:
    """All objects of the sim cluster, by resource then (namespace, name)."""

    def __init__(
        self, *, history_limit: int = 1000, crds: Mapping[str, CustomResource] = {}
    ) -> None:
        self._rv = 1
        self._objects: dict[str, dict[Key, JsonObj]] = {rt.plural: {} for rt in res.RESOURCES}
        self._history = {rt.plural: History(history_limit, self._rv) for rt in res.RESOURCES}
        self._ips = ClusterIPAllocator()
        self.crds: dict[str, CustomResource] = dict(crds)
        for ns in BOOTSTRAP_NAMESPACES:
            self.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})

    # ---- reads ---------------------------------------------------------------------------------

    @property
    def resource_version(self) -> str:
        return str(self._rv)

    def set_history_limit(self, limit: int) -> None:
        """Shrink/grow the per-resource event window (tests use a tiny one to provoke 410)."""
        for hist in self._history.values():
            hist.limit = limit

    def get(self, resource: str | ResourceType, name: str, namespace: str | None = None) -> JsonObj:
        rt = _rt(resource)
        obj = self._objects[rt.plural].get(_key(rt, name, namespace))
        if obj is None:
            raise not_found(rt, name)
        return copy.deepcopy(obj)

    def list(
        self,
        resource: str | ResourceType,
        namespace: str | None = None,
        *,
        label_selector: str = "",
        field_selector: str = "",
        limit: int = 0,
        continue_token: str = "",
    ) -> tuple[list[JsonObj], str, str]:
        """(items sorted by namespace/name, list resourceVersion, continue token or "")."""
        rt = _rt(resource)
        match = self.matcher(rt, label_selector, field_selector)
        rv, after = self.resource_version, ("", "")
        if continue_token:
            rv, after = _decode_continue(continue_token)
        keys = sorted(k for k in self._objects[rt.plural] if k > after or not continue_token)
        items = [
            copy.deepcopy(obj)
            for k in keys
            if (namespace is None or k[0] == namespace)
            and match(obj := self._objects[rt.plural][k])
        ]
        if limit and len(items) > limit:
            items = items[:limit]
            last = items[-1]["metadata"]
            return items, rv, _encode_continue(rv, (last.get("namespace", ""), last["name"]))
        return items, rv, ""

    def matcher(self, rt: ResourceType, label_selector: str, field_selector: str) -> Any:
        """A predicate for list/watch; ApiError 400 on a bad selector."""
        try:
            labels = parse_label_selector(label_selector)
            fields = parse_field_selector(field_selector, rt.field_labels)
        except ValueError as exc:
            raise bad_request(str(exc)) from None
        return lambda o: labels.matches(o["metadata"].get("labels") or {}) and fields.matches(o)

    # ---- writes --------------------------------------------------------------------------------

    def admit(self, obj: Mapping[str, Any]) -> JsonObj:
        """Schema-prune/default/validate a CRD object and convert it to the storage version."""
        rt = _rt_of(obj)
        crd = self.crds.get(rt.plural)
        if crd is None:
            return copy.deepcopy(dict(obj))
        return crd.admit(crd.convert(crd.admit(obj), rt.storage))

    def create(
        self,
        obj: Mapping[str, Any],
        *,
        namespace: str | None = None,
        requester: Identity | None = None,
    ) -> JsonObj:
        rt = _rt_of(obj)
        new = self.admit(obj)
        meta = new.setdefault("metadata", {})
        _set_namespace(rt, meta, namespace)
        if (
            rt.namespaced
            and (rt.kind != "Namespace")
            and ("", meta["namespace"]) not in self._objects["namespaces"]
        ):
            raise not_found(res.lookup("namespaces"), meta["namespace"])
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = meta["generateName"] + secrets.token_hex(3)[:5]
        validate_name(rt, new)
        prepare_create(rt, new, requester, self._ips)
        key = _key(rt, meta["name"], meta.get("namespace"))
        if key in self._objects[rt.plural]:
            raise already_exists(rt, meta["name"])
        for field in ("resourceVersion", "deletionTimestamp", "managedFields"):
            meta.pop(field, None)
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = now_rfc3339()
        if rt.custom:
            meta["generation"] = 1
        return self._commit(rt, key, new, None)

    def update(
        self, obj: Mapping[str, Any], *, subresource: str = "", namespace: str | None = None
    ) -> JsonObj:
        """PUT semantics: conditional on metadata.resourceVersion when it is set."""
        rt = _rt_of(obj)
        new = self.admit(obj) if not subresource else copy.deepcopy(dict(obj))
        meta = new.setdefault("metadata", {})
        _set_namespace(rt, meta, namespace)
        key = _key(rt, meta.get("name", ""), meta.get("namespace"))
        old = self._objects[rt.plural].get(key)
        if old is None:
            raise not_found(rt, meta.get("name", ""))
        if meta.get("resourceVersion") not in (None, "", old["metadata"]["resourceVersion"]):
            raise conflict(rt, key[1])
        if subresource and rt.custom:
            new = self.crds[rt.plural].convert(new, rt.storage)
        prepare_update(rt, new, old, subresource)
        if rt.custom:
            new = self.crds[rt.plural].admit(new)
        _keep_system_meta(new, old)
        if rt.custom and _spec_of(new) != _spec_of(old):
            new["metadata"]["generation"] = old["metadata"].get("generation", 1) + 1
        if new == old:
            return copy.deepcopy(old)  # no-op writes do not bump resourceVersion (as etcd3 store)
        return self._commit(rt, key, new, old)

    def update_status(self, obj: Mapping[str, Any], *, namespace: str | None = None) -> JsonObj:
        return self.update(obj, subresource="status", namespace=namespace)

    def delete(
        self,
        resource: str | ResourceType,
        name: str,
        namespace: str | None = None,
        *,
        preconditions: Mapping[str, str] | None = None,
    ) -> JsonObj:
        """Remove an object at once (no finalizers/graceful deletion); returns its last state."""
        rt = _rt(resource)
        key = _key(rt, name, namespace)
        old = self._objects[rt.plural].get(key)
        if old is None:
            raise not_found(rt, name)
        _check_preconditions(rt, old, preconditions or {})
        del self._objects[rt.plural][key]
        self._rv += 1
        gone = copy.deepcopy(old)
        gone["metadata"]["resourceVersion"] = str(self._rv)
        self._history[rt.plural].record(Event("DELETED", self._rv, gone))
        return copy.deepcopy(gone)

    def _commit(self, rt: ResourceType, key: Key, new: JsonObj, old: JsonObj | None) -> JsonObj:
        self._rv += 1
        new["metadata"]["resourceVersion"] = str(self._rv)
        self._objects[rt.plural][key] = new
        kind = "ADDED" if old is None else "MODIFIED"
        self._history[rt.plural].record(Event(kind, self._rv, copy.deepcopy(new), old))
        return copy.deepcopy(new)

    # ---- watch ---------------------------------------------------------------------------------

    def watch(
        self,
        resource: str | ResourceType,
        *,
        namespace: str | None = None,
        resource_version: str | None = None,
        label_selector: str = "",
        field_selector: str = "",
    ) -> Watcher:
        """Open a watch; raises ApiError 410 when resource_version left the event window."""
        rt = _rt(resource)
        watcher = Watcher(namespace, self.matcher(rt, label_selector, field_selector))
        hist = self._history[rt.plural]
        if resource_version in (None, "", "0"):
            for key in sorted(self._objects[rt.plural]):
                watcher.offer(
                    Event("ADDED", self._rv, copy.deepcopy(self._objects[rt.plural][key]))
                )
        else:
            try:
                since = int(resource_version)
            except ValueError:
                raise bad_request(f"invalid resource version {resource_version!r}") from None
            for event in hist.since(since):
                watcher.offer(event)
        hist.watchers.add(watcher)
        return watcher

    def unwatch(self, resource: str | ResourceType, watcher: Watcher) -> None:
        self._history[_rt(resource).plural].watchers.discard(watcher)

    def silence_watches(self, resource: str | ResourceType) -> int:
        """Make every open watch of `resource` go silent (see `Watcher.silent`); returns how many.

        Watches opened afterwards are healthy, so a client that re-watches recovers."""
        watchers = self._history[_rt(resource).plural].watchers
        for watcher in watchers:
            watcher.silent = True
        return len(watchers)

    def close_watches(self) -> int:
        """End every open watch (clients then resume from their last resourceVersion)."""
        count = 0
        for hist in self._history.values():
            for watcher in list(hist.watchers):
                watcher.close()
                count += 1
            hist.watchers.clear()
        return count


def _rt(resource: str | ResourceType) -> ResourceType:
    return resource if isinstance(resource, ResourceType) else res.lookup(resource)


def _rt_of(obj: Mapping[str, Any]) -> ResourceType:
    try:
        return res.for_object(str(obj.get("apiVersion", "")), str(obj.get("kind", "")))
    except KeyError:
        raise bad_request(
            f'no kind "{obj.get("kind")}" is registered for version "{obj.get("apiVersion")}"'
        ) from None


def _key(rt: ResourceType, name: str, namespace: str | None) -> Key:
    return ((namespace or "default") if rt.namespaced else "", name)


def _set_namespace(rt: ResourceType, meta: JsonObj, namespace: str | None) -> None:
    if not rt.namespaced:
        meta.pop("namespace", None)
        return
    ns = meta.get("namespace") or namespace or "default"
    if namespace and ns != namespace:
        raise bad_request(
            "the namespace of the provided object does not match the namespace sent on the request"
        )
    meta["namespace"] = ns


def _keep_system_meta(new: JsonObj, old: Mapping[str, Any]) -> None:
    meta, old_meta = new["metadata"], old["metadata"]
    for field in ("uid", "creationTimestamp", "generation", "resourceVersion", "namespace", "name"):
        if field in old_meta:
            meta[field] = old_meta[field]
        else:
            meta.pop(field, None)


def _spec_of(obj: Mapping[str, Any]) -> JsonObj:
    return {k: v for k, v in obj.items() if k not in ("metadata", "status")}


def _check_preconditions(rt: ResourceType, old: Mapping[str, Any], pre: Mapping[str, str]) -> None:
    meta = old["metadata"]
    for field, label in (("uid", "UID"), ("resourceVersion", "ResourceVersion")):
        want = pre.get(field)
        if want and want != meta.get(field):
            raise conflict(
                rt,
                meta["name"],
                f"Precondition failed: {label} in precondition: {want}, "
                f"{label} in object meta: {meta.get(field)}",
            )


def _encode_continue(rv: str, after: Key) -> str:
    raw = json.dumps({"v": "meta.k8s.io/v1", "rv": int(rv), "start": "/".join(after)})
    return base64.urlsafe_b64encode(raw.encode()).decode()


def _decode_continue(token: str) -> tuple[str, Key]:
    try:
        data = json.loads(base64.urlsafe_b64decode(token.encode()))
        ns, _, name = str(data["start"]).rpartition("/")
        return str(data["rv"]), (ns, name)
    except (ValueError, KeyError):
        raise bad_request("continue key is not valid: invalid continue token") from None
