"""The Kubernetes API client of ravend: raw JSON over kubernetes_asyncio's transport (does I/O).

kubernetes_asyncio is used only for what it does well: loading kubeconfig / in-cluster
credentials (token refresh, client certs, CA) and owning the aiohttp session. Requests go through
`ApiClient.call_api(..., _preload_content=False)` so we get raw JSON without its heavy model
deserialisation, and every failure leaves here as a `ravend.kube.errors.KubeError`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
from collections.abc import AsyncGenerator, Callable, Mapping
from pathlib import Path
from typing import Any, Literal

import aiohttp
from kubernetes_asyncio import client as k8s
from kubernetes_asyncio import config as k8s_config

from ravend.kube import errors
from ravend.kube.events import EventRecorder
from ravend.kube.models import ObjectRef
from ravend.kube.resources import CSRS, Resource
from ravend.kube.settings import KubeSettings
from ravend.kube.wire import keep_alive, namespace_of, selectors, with_type

log = logging.getLogger(__name__)

JSON = dict[str, Any]
JSONList = list[Any]
Query = list[tuple[str, str]]
"""Query parameters in order (the method named `list` shadows the builtin inside the class)."""
PatchKind = Literal["merge", "strategic", "json"]
_PATCH_TYPES: Mapping[str, str] = {
    "merge": "application/merge-patch+json",
    "strategic": "application/strategic-merge-patch+json",
    "json": "application/json-patch+json",
}
_MAX_LINE = 16 * 1024 * 1024
"""Largest watch event line we accept (bytes); etcd caps objects at 1.5 MiB."""
_LIST_PAGE = 500


class KubeClient:
    """JSON-level operations on any `Resource`; errors are `ravend.kube.errors` types."""

    def __init__(self, api: k8s.ApiClient, settings: KubeSettings) -> None:
        self._api = api
        self.settings = settings
        self.events = EventRecorder(self)

    @property
    def host(self) -> str:
        return str(self._api.configuration.host)

    async def close(self) -> None:
        await self._api.close()

    def ca_pem(self) -> bytes | None:
        """The CA bundle this client trusts for the API server, PEM; None when none is set.

        It is the cluster CA: the kubeconfig's certificate-authority(-data) or the in-cluster
        service account's ca.crt (kubernetes_asyncio keeps either as a file; reading it is a
        small local read, done rarely).
        """
        path = self._api.configuration.ssl_ca_cert
        if not path:
            return None
        try:
            return Path(path).read_bytes()
        except OSError as exc:
            log.warning("cannot read the API server CA bundle %s: %s", path, exc)
            return None

    # ---- plain requests -----------------------------------------------------------------------

    async def get(self, res: Resource, name: str, namespace: str | None = None) -> JSON:
        obj = await self._json("GET", res.path(namespace, name))
        return with_type(obj, res)

    async def list(
        self,
        res: Resource,
        namespace: str | None = None,
        *,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> tuple[list[JSON], str]:
        """All matching objects (paged) and the list's resourceVersion to watch from."""
        query = [*selectors(label_selector, field_selector), ("limit", str(_LIST_PAGE))]
        items: list[JSON] = []
        token = ""
        while True:
            page_query = query + ([("continue", token)] if token else [])
            page = await self._json("GET", res.path(namespace), query=page_query)
            items.extend(with_type(i, res) for i in page.get("items") or [])
            meta = page.get("metadata") or {}
            token = str(meta.get("continue") or "")
            if not token:
                return items, str(meta.get("resourceVersion") or "")

    async def create(self, res: Resource, obj: Mapping[str, Any]) -> JSON:
        namespace = namespace_of(obj, res)
        return with_type(await self._json("POST", res.path(namespace), body=obj), res)

    async def replace(self, res: Resource, obj: Mapping[str, Any]) -> JSON:
        """PUT; conditional on metadata.resourceVersion when set (409 -> `Conflict`)."""
        return await self._put(res, obj, None)

    async def replace_status(self, res: Resource, obj: Mapping[str, Any]) -> JSON:
        return await self._put(res, obj, "status")

    async def patch(
        self,
        res: Resource,
        name: str,
        patch: Mapping[str, Any] | JSONList,
        namespace: str | None = None,
        *,
        kind: PatchKind = "merge",
        status: bool = False,
    ) -> JSON:
        path = res.path(namespace, name, "status" if status else None)
        obj = await self._json("PATCH", path, body=patch, content_type=_PATCH_TYPES[kind])
        return with_type(obj, res)

    async def delete(
        self, res: Resource, name: str, namespace: str | None = None, *, missing_ok: bool = False
    ) -> None:
        try:
            await self._json("DELETE", res.path(namespace, name))
        except errors.NotFound:
            if not missing_ok:
                raise

    async def _put(self, res: Resource, obj: Mapping[str, Any], sub: str | None) -> JSON:
        name = str((obj.get("metadata") or {}).get("name") or "")
        path = res.path(namespace_of(obj, res), name, sub)
        return with_type(await self._json("PUT", path, body=obj), res)

    # ---- read-modify-write ----------------------------------------------------------------------

    async def update_with_retry(
        self,
        res: Resource,
        name: str,
        namespace: str | None,
        mutate: Callable[[JSON], JSON | None],
        status: bool = False,
        *,
        attempts: int = 8,
    ) -> JSON:
        """Read, `mutate(copy)`, write; on 409 re-read and re-apply (with backoff).

        `mutate` returning None means "nothing to change": no write, the current object is
        returned. Returns the object as stored after the write.
        """
        sub = "status" if status else None
        return await self._update(
            res, name=name, namespace=namespace, mutate=mutate, sub=sub, attempts=attempts
        )

    async def _update(
        self,
        res: Resource,
        *,
        name: str,
        namespace: str | None,
        mutate: Callable[[JSON], JSON | None],
        sub: str | None,
        attempts: int,
    ) -> JSON:
        for attempt in range(attempts):
            current = await self.get(res, name, namespace)
            wanted = mutate(json.loads(json.dumps(current)))  # deep copy: mutate may edit in place
            if wanted is None:
                return current
            wanted.setdefault("metadata", {})["resourceVersion"] = current["metadata"].get(
                "resourceVersion", ""
            )
            try:
                return await self._put(res, wanted, sub)
            except errors.Conflict:
                delay = min(1.0, 0.01 * 2**attempt) * random.uniform(0.5, 1.0)
                log.debug("conflict updating %s %s; retry in %.3fs", res.kind, name, delay)
                await asyncio.sleep(delay)
        raise errors.Conflict(f"{res.kind} {name}: still conflicting after {attempts} attempts")

    async def approve_csr(self, name: str, reason: str, message: str) -> JSON:
        return await self._csr_condition(name, "Approved", reason, message)

    async def deny_csr(self, name: str, reason: str, message: str) -> JSON:
        return await self._csr_condition(name, "Denied", reason, message)

    async def _csr_condition(self, name: str, kind: str, reason: str, message: str) -> JSON:
        def add(csr: JSON) -> JSON | None:
            conds = csr.setdefault("status", {}).setdefault("conditions", [])
            if any(c.get("type") == kind for c in conds):
                return None
            conds.append({"type": kind, "status": "True", "reason": reason, "message": message})
            return csr

        return await self._update(
            CSRS, name=name, namespace=None, mutate=add, sub="approval", attempts=8
        )

    async def emit_event(self, involved: ObjectRef, type: str, reason: str, message: str) -> None:
        """Record a core/v1 Event (best effort; repeated events bump `count`)."""
        await self.events.emit(involved, type, reason, message)

    # ---- watch ---------------------------------------------------------------------------

    async def watch(
        self,
        res: Resource,
        namespace: str | None = None,
        *,
        resource_version: str = "",
        label_selector: str | None = None,
        field_selector: str | None = None,
        timeout_s: int | None = None,
        bookmarks: bool = True,
    ) -> AsyncGenerator[tuple[str, JSON], None]:
        """Yield (type, object) events until the server ends the watch.

        A watch `ERROR` event is raised as the matching error (410 -> `Gone`).
        """
        server_timeout = timeout_s if timeout_s is not None else self.settings.watch_timeout_s
        query = [
            *selectors(label_selector, field_selector),
            ("watch", "true"),
            ("timeoutSeconds", str(server_timeout)),
        ]
        if resource_version:
            query.append(("resourceVersion", resource_version))
        if bookmarks:
            query.append(("allowWatchBookmarks", "true"))
        timeout = aiohttp.ClientTimeout(
            total=None,
            connect=self.settings.connect_timeout_s,
            sock_read=self._watch_read_timeout(server_timeout, bookmarks),
        )
        resp = await self._send("GET", res.path(namespace), query=query, timeout=timeout)
        keep_alive(resp, self.settings.watch_keepalive_s)
        try:
            while True:
                try:
                    line = await resp.content.readline(max_line_length=_MAX_LINE)
                    if not line:
                        return
                    if not line.strip():
                        continue
                    event = json.loads(line)
                except errors.TRANSPORT_ERRORS as exc:
                    raise errors.from_exception(exc) from exc
                except ValueError as exc:  # over-long line or broken JSON: restart the watch
                    raise errors.KubeError(f"bad watch stream from {res.plural}: {exc}") from exc
                kind, obj = str(event.get("type", "")), event.get("object") or {}
                if kind == "ERROR":
                    raise errors.from_watch_status(obj)
                yield kind, with_type(obj, res)
        finally:
            resp.release()

    def _watch_read_timeout(self, server_timeout: int, bookmarks: bool) -> float:
        """Longest wait for the next watch line before the read fails as dead (seconds).

        With bookmarks even a quiet watch speaks every bookmark interval, so a silence over
        `watch_silence_s` is a dead stream; without them only the server's timeout bounds it.
        The informer's own watchdog (at `watch_silence_s`) fires first and re-watches without a
        relist; this is the backstop for every other caller of `watch`.
        """
        silence = self.settings.watch_silence_s
        longest = min(server_timeout, silence) if bookmarks and silence > 0 else server_timeout
        return longest + self.settings.watch_grace_s

    # ---- transport ------------------------------------------------------------------------------

    async def _json(
        self,
        method: str,
        path: str,
        *,
        query: Query | None = None,
        body: Mapping[str, Any] | JSONList | None = None,
        content_type: str = "application/json",
    ) -> JSON:
        timeout = aiohttp.ClientTimeout(
            total=self.settings.request_timeout_s, connect=self.settings.connect_timeout_s
        )
        resp = await self._send(
            method, path, query=query, body=body, ctype=content_type, timeout=timeout
        )
        try:
            data = await resp.read()
        except errors.TRANSPORT_ERRORS as exc:
            raise errors.from_exception(exc) from exc
        finally:
            resp.release()
        if not data:
            return {}
        try:
            doc = json.loads(data)
        except ValueError as exc:
            raise errors.KubeError(f"{method} {path}: response is not JSON") from exc
        return doc if isinstance(doc, dict) else {}

    async def _send(
        self,
        method: str,
        path: str,
        *,
        query: Query | None = None,
        body: Mapping[str, Any] | JSONList | None = None,
        ctype: str = "application/json",
        timeout: aiohttp.ClientTimeout,
    ) -> aiohttp.ClientResponse:
        """Send one request; non-2xx statuses become errors (the body is read for the message)."""
        headers = {"Accept": "application/json", "Content-Type": ctype}
        try:
            resp: aiohttp.ClientResponse = await self._api.call_api(
                path,
                method,
                query_params=query or [],
                header_params=headers,
                body=body,
                auth_settings=["BearerToken"],
                _preload_content=False,
                _request_timeout=timeout,
            )
        except errors.TRANSPORT_ERRORS as exc:
            raise errors.from_exception(exc) from exc
        if 200 <= resp.status < 300:
            return resp
        try:
            data = await resp.read()
        except errors.TRANSPORT_ERRORS:
            data = b""
        finally:
            resp.release()
        raise errors.from_status(resp.status, data)


# ---- connecting ------------------------------------------------------------------------


async def connect(kubeconfig: Path | None, settings: KubeSettings | None = None) -> KubeClient:
    """Open a client from `kubeconfig`, or in-cluster credentials, or $KUBECONFIG/~/.kube/config.

    Opening does no request; the first call (usually an informer's list) proves connectivity.
    """
    settings = settings or KubeSettings(kubeconfig=kubeconfig)
    cfg = k8s.Configuration()
    path = kubeconfig or settings.kubeconfig
    if path is not None:
        await k8s_config.load_kube_config(config_file=str(path), client_configuration=cfg)
    elif not _load_in_cluster(cfg, settings.service_account_dir):
        fallback = _default_kubeconfig()
        if fallback is None:
            raise errors.KubeError(
                "no Kubernetes credentials: not in a pod (KUBERNETES_SERVICE_HOST unset or no "
                f"token in {settings.service_account_dir}) and no $KUBECONFIG or ~/.kube/config"
            )
        await k8s_config.load_kube_config(config_file=str(fallback), client_configuration=cfg)
    log.info("kubernetes API at %s", cfg.host)
    return KubeClient(k8s.ApiClient(configuration=cfg), settings)


def _load_in_cluster(cfg: k8s.Configuration, sa_dir: Path) -> bool:
    try:
        k8s_config.load_incluster_config(  # type: ignore[no-untyped-call]
            client_configuration=cfg,
            token_filename=str(sa_dir / "token"),
            cert_filename=str(sa_dir / "ca.crt"),
        )
    except k8s_config.ConfigException as exc:
        log.debug("not using in-cluster config: %s", exc)
        return False
    return True


def _default_kubeconfig() -> Path | None:
    for entry in os.environ.get("KUBECONFIG", "").split(os.pathsep):
        if entry and Path(entry).is_file():
            return Path(entry)
    home = Path.home() / ".kube" / "config"
    return home if home.is_file() else None
