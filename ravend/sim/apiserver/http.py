"""aiohttp handlers for the resource API: get/list/watch/create/update/patch/delete (thin I/O).

Each handler parses the URL (routing.py), authenticates (auth.py), converts versions
(versions.py), calls webhooks where kube-apiserver would, and delegates the semantics to the
store. Errors are ApiError everywhere and leave as kube Status bodies.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Literal

from aiohttp import web

from ravend.sim.apiserver import resources as res
from ravend.sim.apiserver import webhooks
from ravend.sim.apiserver.auth import Authenticator, Identity
from ravend.sim.apiserver.errors import (
    ApiError,
    bad_request,
    method_not_allowed,
    unauthorized,
    unavailable,
    unsupported_media_type,
)
from ravend.sim.apiserver.patch import PatchError, json_patch, merge_patch, strategic_merge
from ravend.sim.apiserver.routing import NoRoute, RequestInfo, parse
from ravend.sim.apiserver.store import Store
from ravend.sim.apiserver.versions import Versions
from ravend.sim.apiserver.watch import Watcher, expired_event

log = logging.getLogger(__name__)
JsonObj = dict[str, Any]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
PUBLIC_PATHS = ("/version", "/healthz", "/livez", "/readyz")
DEFAULT_WATCH_TIMEOUT = 1800.0
IDENTITY = web.RequestKey("identity", Identity)
MERGE, JSONPATCH, STRATEGIC = (
    "application/merge-patch+json",
    "application/json-patch+json",
    "application/strategic-merge-patch+json",
)


def json_response(body: Any, status: int = 200) -> web.Response:
    return web.Response(text=json.dumps(body), status=status, content_type="application/json")


class FaultState:
    """Knobs the fault hooks turn; read by the middleware on every request."""

    def __init__(self) -> None:
        self.latency = 0.0
        self.unavailable = False


class Api:
    """The HTTP face of one store."""

    def __init__(self, store: Store, auth: Authenticator, faults: FaultState) -> None:
        self.store, self.auth, self.faults = store, auth, faults
        self.versions = Versions(store)
        self.validating: webhooks.Webhook | None = None
        self.bookmark_interval = 5.0
        """Seconds between BOOKMARK events on watches that asked for them (kube: ~1 min)."""

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._middleware], client_max_size=8 << 20)
        app.router.add_route("*", "/{tail:.*}", self._dispatch)
        return app

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if self.faults.latency:
            await asyncio.sleep(self.faults.latency)
        try:
            if self.faults.unavailable:
                raise unavailable()
            if request.path not in PUBLIC_PATHS:
                peercert = (
                    request.transport.get_extra_info("peercert") if request.transport else None
                )
                identity = self.auth.authenticate(request.headers.get("Authorization"), peercert)
                if identity is None:
                    raise unauthorized()
                request[IDENTITY] = identity
            return await handler(request)
        except ApiError as err:
            return json_response(err.status(), err.code)

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        doc = _discovery(request.path)
        if doc is not None:
            return doc
        try:
            info = parse(request.path)
        except NoRoute:
            raise ApiError(
                404, "NotFound", "the server could not find the requested resource"
            ) from None
        method = request.method
        if method == "GET" and info.name is None:
            if _truthy(request.query.get("watch")):
                return await self._watch(request, info)
            return await self._list(request, info)
        if method == "GET" and info.name is not None:
            obj = self.store.get(info.rt, info.name, info.namespace)
            return json_response((await self.versions.out(info.rt, [obj], info.version))[0])
        if method == "POST" and info.name is None:
            return await self._create(request, info)
        if method == "PUT" and info.name is not None:
            return await self._write(request, info, await _body(request))
        if method == "PATCH" and info.name is not None:
            return await self._patch(request, info)
        if method == "DELETE" and info.name is not None:
            return await self._delete(request, info)
        raise method_not_allowed()

    async def _list(self, request: web.Request, info: RequestInfo) -> web.Response:
        q = request.query
        items, rv, cont = self.store.list(
            info.rt,
            info.namespace,
            label_selector=q.get("labelSelector", ""),
            field_selector=q.get("fieldSelector", ""),
            limit=int(q.get("limit") or 0),
            continue_token=q.get("continue", ""),
        )
        items = await self.versions.out(info.rt, items, info.version)
        if not info.rt.custom:  # built-in list items carry no apiVersion/kind, as upstream
            items = [{k: v for k, v in i.items() if k not in ("apiVersion", "kind")} for i in items]
        meta = {"resourceVersion": rv, **({"continue": cont} if cont else {})}
        return json_response(
            {
                "kind": f"{info.rt.kind}List",
                "apiVersion": info.rt.api_version(info.version),
                "metadata": meta,
                "items": items,
            }
        )

    async def _create(self, request: web.Request, info: RequestInfo) -> web.Response:
        identity = request[IDENTITY]
        obj = await self.versions.into_storage(info.rt, await _body(request), info.version)
        if info.rt.custom and self.validating is not None:
            await webhooks.admit(
                self.validating, info.rt, "CREATE", self.store.admit(obj), None, identity
            )
        created = self.store.create(obj, namespace=info.namespace, requester=identity)
        return json_response((await self.versions.out(info.rt, [created], info.version))[0], 201)

    async def _write(
        self, request: web.Request, info: RequestInfo, body: Mapping[str, Any]
    ) -> web.Response:
        name = body.get("metadata", {}).get("name")
        if name not in (None, info.name):
            raise bad_request(
                f"the name of the object ({name}) does not match the name on the URL ({info.name})"
            )
        body = {**body, "metadata": {**body.get("metadata", {}), "name": info.name}}
        obj = await self.versions.into_storage(info.rt, body, info.version)
        if info.rt.custom and not info.subresource and self.validating is not None:
            old = self.store.get(info.rt, info.name or "", info.namespace)
            await webhooks.admit(
                self.validating, info.rt, "UPDATE", self.store.admit(obj), old, request[IDENTITY]
            )
        updated = self.store.update(obj, subresource=info.subresource, namespace=info.namespace)
        return json_response((await self.versions.out(info.rt, [updated], info.version))[0])

    async def _patch(self, request: web.Request, info: RequestInfo) -> web.Response:
        ctype = request.content_type
        accepted = [JSONPATCH, MERGE] + ([] if info.rt.custom else [STRATEGIC])
        if ctype not in accepted:
            raise unsupported_media_type(accepted)
        try:
            patch = json.loads(await request.read())
        except ValueError as exc:
            raise bad_request(f"error decoding patch: {exc}") from None
        current = self.store.get(info.rt, info.name or "", info.namespace)
        doc = (await self.versions.out(info.rt, [current], info.version))[0]
        try:
            if ctype == MERGE:
                patched = merge_patch(doc, patch)
            elif ctype == JSONPATCH:
                patched = json_patch(doc, patch)
            else:
                patched = strategic_merge(doc, patch, info.rt.merge_keys)
        except PatchError as exc:
            raise ApiError(
                exc.code, "Invalid" if exc.code == 422 else "BadRequest", str(exc)
            ) from None
        if not isinstance(patched, dict):
            raise bad_request("patch did not produce an object")
        # A patch without metadata.resourceVersion applies to the object it was computed from.
        patched.setdefault("metadata", {}).setdefault(
            "resourceVersion", current["metadata"]["resourceVersion"]
        )
        return await self._write(request, info, patched)

    async def _delete(self, request: web.Request, info: RequestInfo) -> web.Response:
        options = await _body(request) if request.can_read_body else {}
        pre = options.get("preconditions") or {}
        gone = self.store.delete(info.rt, info.name or "", info.namespace, preconditions=pre)
        if info.rt.custom:
            return json_response((await self.versions.out(info.rt, [gone], info.version))[0])
        details = {"name": info.name, "kind": info.rt.plural, "uid": gone["metadata"]["uid"]}
        if info.rt.group:
            details["group"] = info.rt.group
        return json_response(
            {
                "kind": "Status",
                "apiVersion": "v1",
                "metadata": {},
                "status": "Success",
                "details": details,
            }
        )

    async def _watch(self, request: web.Request, info: RequestInfo) -> web.StreamResponse:
        q = request.query
        resp = web.StreamResponse(headers={"Content-Type": "application/json"})
        try:
            watcher = self.store.watch(
                info.rt,
                namespace=info.namespace,
                resource_version=q.get("resourceVersion"),
                label_selector=q.get("labelSelector", ""),
                field_selector=q.get("fieldSelector", ""),
            )
        except ApiError as err:
            if err.code != 410:
                raise
            await resp.prepare(request)
            await resp.write(json.dumps(expired_event(err)).encode() + b"\n")
            return resp
        await resp.prepare(request)
        try:
            await self._stream(resp, info, watcher, q)
        except ConnectionResetError:
            # The client left (closed or abandoned its watch): normal, not a handler error.
            log.debug("watch of %s: client went away", info.rt.plural)
        finally:
            self.store.unwatch(info.rt, watcher)
            watcher.close()
        return resp

    async def _stream(
        self, resp: web.StreamResponse, info: RequestInfo, watcher: Watcher, q: Mapping[str, str]
    ) -> None:
        deadline = time.monotonic() + float(q.get("timeoutSeconds") or DEFAULT_WATCH_TIMEOUT)
        bookmarks = _truthy(q.get("allowWatchBookmarks"))
        next_bookmark = time.monotonic() + self.bookmark_interval
        while time.monotonic() < deadline:
            # A silenced watch (fault hook) sends no bookmarks either: wait for the deadline.
            ticking = bookmarks and not watcher.silent
            item = await _next_item(watcher, min(deadline, next_bookmark) if ticking else deadline)
            if item is False:  # nothing queued by the next bookmark time (or the deadline)
                # Only with nothing queued: the bookmark carries the store's resourceVersion,
                # which must not run ahead of events this watch has not sent yet.
                if ticking and time.monotonic() >= next_bookmark and watcher.queue.empty():
                    await _send(resp, self._bookmark(info))
                    next_bookmark = time.monotonic() + self.bookmark_interval
                continue
            if item is None:
                return
            if watcher.silent:
                continue  # fault hook: the event is lost on a stream that forwards nothing
            obj = (await self.versions.out(info.rt, [item[1]], info.version))[0]
            await _send(resp, {"type": item[0], "object": obj})

    def _bookmark(self, info: RequestInfo) -> JsonObj:
        return {
            "type": "BOOKMARK",
            "object": {
                "kind": info.rt.kind,
                "apiVersion": info.rt.api_version(info.version),
                "metadata": {"resourceVersion": self.store.resource_version},
            },
        }


async def _next_item(watcher: Watcher, until: float) -> tuple[str, JsonObj] | Literal[False] | None:
    """The next queued item (None: the watch closed), waiting until `until` at most; False
    when none came by then.

    A queued item is taken without any timeout: on Python 3.11 `wait_for(get(), 0)` cancels
    the read before it runs, so once a bookmark fell due with an event queued, every pass
    timed out at once and the stream sent nothing (events nor bookmarks) until its deadline,
    the watch stall the demo showed. Waiting happens only on an empty queue.
    """
    if not watcher.queue.empty():
        return watcher.queue.get_nowait()
    wait = until - time.monotonic()
    try:
        return await asyncio.wait_for(watcher.queue.get(), timeout=max(wait, 0))
    except TimeoutError:
        return False


def _truthy(value: str | None) -> bool:
    """Go's strconv.ParseBool, which kube-apiserver uses for query flags."""
    return value in ("1", "t", "T", "true", "TRUE", "True")


async def _send(resp: web.StreamResponse, event: Mapping[str, Any]) -> None:
    await resp.write(json.dumps(event).encode() + b"\n")


async def _body(request: web.Request) -> JsonObj:
    try:
        body = json.loads(await request.read() or b"{}")
    except ValueError as exc:
        raise bad_request(f"error decoding body: {exc}") from None
    if not isinstance(body, dict):
        raise bad_request("the request body must be a JSON object")
    return body


def _discovery(path: str) -> web.Response | None:
    path = path.rstrip("/") or "/"
    if path in ("/healthz", "/livez", "/readyz"):
        return web.Response(text="ok")
    if path == "/version":
        return json_response(res.SERVER_VERSION)
    if path == "/api":
        return json_response(
            {
                "kind": "APIVersions",
                "versions": ["v1"],
                "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": ""}],
            }
        )
    if path == "/apis":
        return json_response(res.api_group_list())
    parts = path.strip("/").split("/")
    doc: JsonObj | None = None
    if parts[0] == "api" and len(parts) == 2:
        doc = res.resource_list("", parts[1])
    elif parts[0] == "apis" and len(parts) == 2:
        doc = res.api_group(parts[1])
    elif parts[0] == "apis" and len(parts) == 3:
        doc = res.resource_list(parts[1], parts[2])
    else:
        return None
    if doc is None:
        raise ApiError(404, "NotFound", "the server could not find the requested resource")
    return json_response(doc)
