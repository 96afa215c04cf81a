"""Leader-only controller for DNS hosts and proxy Services (thin loop over desired.py; does I/O).

Each pass reads what the API server has, compares it with `desired.py`'s plan and writes only
the difference, so steady state costs reads, not writes. Passes run on every new ClusterView
(bursts collapse in `Latest`) and on a periodic resync that repairs edits made behind our back.
One failing object is logged and counted and never stops the others.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

from ravend.controllers import desired
from ravend.kube import errors
from ravend.kube.client import KubeClient
from ravend.kube.resources import CONFIGMAPS, ENDPOINTS, GATEWAYS, SERVICES, Resource
from ravend.model import RAVEN_NAMESPACE, ClusterView, EndpointType
from ravend.observe.metrics import ERRORS, RECONCILES
from ravend.runtime import Latest

log = logging.getLogger(__name__)

NS = RAVEN_NAMESPACE
RESYNC_SECONDS = 30.0


class ObjectsController:
    def __init__(self, client: KubeClient, view: Latest[ClusterView]) -> None:
        self._client = client
        self._view = view

    async def run(self) -> None:
        seen = -1
        while True:
            try:
                async with asyncio.timeout(RESYNC_SECONDS):
                    seen, snapshot = await self._view.wait_newer(seen)
            except TimeoutError:
                snapshot = self._view.value
            if snapshot.synced:
                await self.reconcile(snapshot)

    async def reconcile(self, view: ClusterView) -> None:
        RECONCILES.labels(subsystem="controllers").inc()
        cluster_ip = await self._step("internal-service", self._internal_service(view))
        await self._step("dns", self._dns(view, cluster_ip))
        await self._step("public-services", self._public_services(view))

    async def _step(self, name: str, work: Any) -> Any:
        try:
            return await work
        except errors.KubeError as exc:
            ERRORS.labels(subsystem="controllers", kind=type(exc).__name__).inc()
            log.warning("controller step %s failed: %s", name, exc)
            return None

    async def _internal_service(self, view: ClusterView) -> str | None:
        """Ensure the internal Service + Endpoints while L7 is on; returns its ClusterIP."""
        if not view.raven_cfg.l7_enabled:
            await self._client.delete(SERVICES, desired.INTERNAL_SERVICE, NS, missing_ok=True)
            await self._client.delete(ENDPOINTS, desired.INTERNAL_SERVICE, NS, missing_ok=True)
            return None
        svc = await self._ensure(SERVICES, desired.internal_service(view), ("spec",))
        await self._ensure(ENDPOINTS, desired.internal_endpoints(view), ("subsets",))
        ip = (svc.get("spec") or {}).get("clusterIP")
        return ip if isinstance(ip, str) and ip not in ("", "None") else None

    async def _dns(self, view: ClusterView, cluster_ip: str | None) -> None:
        body = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": desired.DNS_CONFIGMAP,
                "namespace": NS,
                "labels": desired.MANAGED_BY,
            },
            "data": {desired.DNS_KEY: desired.tunnel_nodes(view, cluster_ip)},
        }
        await self._ensure(CONFIGMAPS, body, ("data",))

    async def _public_services(self, view: ClusterView) -> None:
        wanted = desired.public_services(view)
        existing, _ = await self._client.list(
            SERVICES, NS, label_selector="app.kubernetes.io/managed-by=ravend"
        )
        for svc in existing:
            name = svc["metadata"]["name"]
            is_lb = (svc.get("spec") or {}).get("type") == "LoadBalancer"
            if is_lb and name not in wanted:
                await self._client.delete(SERVICES, name, NS, missing_ok=True)
        for name, body in wanted.items():
            current = await self._ensure(SERVICES, body, ("spec",))
            await self._read_back_public_ip(view, name, body, current)

    async def _read_back_public_ip(
        self, view: ClusterView, name: str, body: Mapping[str, Any], svc: Mapping[str, Any]
    ) -> None:
        """Copy the LoadBalancer ingress IP into the Gateway endpoint's publicIP (Raven's rule)."""
        ingress = ((svc.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
        ip = next((i.get("ip") for i in ingress if isinstance(i, Mapping) and i.get("ip")), None)
        labels = body["metadata"]["labels"]
        gw_name, node = (
            labels["raven.openyurt.io/gateway"],
            labels["raven.openyurt.io/endpoint-node"],
        )
        kind = EndpointType(labels["raven.openyurt.io/endpoint-type"])
        gw = view.gateways.get(gw_name)
        if ip is None or gw is None:
            return
        if all(e.public_ip == ip for e in gw.spec.endpoints if e.key == (node, kind)):
            return

        def mutate(obj: dict[str, Any]) -> dict[str, Any] | None:
            changed = False
            for ep in obj.get("spec", {}).get("endpoints", []):
                mine = ep.get("nodeName") == node and ep.get("type") == kind.value
                if mine and ep.get("publicIP") != ip:
                    ep["publicIP"], changed = ip, True
            return obj if changed else None

        log.info(
            "gateway %s: %s endpoint on %s has public IP %s (from %s)",
            gw_name,
            kind,
            node,
            ip,
            name,
        )
        await self._client.update_with_retry(GATEWAYS, gw_name, None, mutate)

    async def _ensure(
        self, res: Resource, body: Mapping[str, Any], compare: tuple[str, ...]
    ) -> dict[str, Any]:
        """Create `body`, or merge-patch the fields in `compare` (+labels) if they differ."""
        meta = body["metadata"]
        try:
            current = await self._client.get(res, meta["name"], meta.get("namespace"))
        except errors.NotFound:
            log.info("creating %s %s/%s", res.kind, meta.get("namespace"), meta["name"])
            return await self._client.create(res, body)
        patch: dict[str, Any] = {}
        for key in compare:
            if _path(current, key) != _path(body, key):
                patch[key] = body[key]
        labels = current.get("metadata", {}).get("labels") or {}
        if any(labels.get(k) != v for k, v in meta.get("labels", {}).items()):
            patch["metadata"] = {"labels": meta["labels"]}
        if not patch:
            return current
        log.info(
            "updating %s %s/%s: %s", res.kind, meta.get("namespace"), meta["name"], sorted(patch)
        )
        return await self._client.patch(
            res, meta["name"], patch, meta.get("namespace"), kind="merge"
        )


def _path(obj: Mapping[str, Any], key: str) -> Any:
    """A top-level field as ravend owns it: for `spec` only the type and the port identities
    (the server adds clusterIP and nodePorts, which must not count as drift)."""
    if key == "spec":
        spec = obj.get("spec") or {}
        ports = sorted(
            (p.get("name"), p.get("port"), p.get("targetPort"), p.get("protocol", "TCP"))
            for p in spec.get("ports") or []
            if isinstance(p, Mapping)
        )
        return {"ports": ports, "type": spec.get("type", "ClusterIP")}
    return obj.get(key)
