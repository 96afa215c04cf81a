"""Leader-only: tell the kube-apiserver to trust the webhooks' CA (pure plan + thin loop, I/O).

The kube-apiserver verifies a webhook's serving certificate against the `caBundle` of the
object that registers it: the Gateway CRD's conversion webhook
(spec.conversion.webhook.clientConfig) and the ValidatingWebhookConfiguration's webhooks. The
manifests ship them empty; ravend's webhook certificates are signed by the cluster CA
(signer kubernetes.io/kubelet-serving), so the elected controller writes that CA there - only
when it differs, re-checked periodically so a re-applied manifest (which blanks the field) is
repaired within one interval.

Writes are JSON patches guarded by a `test` of the resourceVersion: a concurrent edit makes the
patch fail and the next pass re-plans from the new object, nothing is overwritten blindly.
"""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ravend.kube import errors
from ravend.kube.client import KubeClient
from ravend.kube.resources import CRDS, VALIDATING_WEBHOOKS, Resource
from ravend.observe.metrics import ERRORS, RECONCILES

log = logging.getLogger(__name__)

GATEWAY_CRD = "gateways.raven.openyurt.io"
VALIDATING_CONFIG = "ravend-gateway-validation"
"""metadata.name in manifests/validating-webhook.yaml."""
CHECK_INTERVAL = 60.0
"""Seconds between checks. A blanked caBundle fails Gateway writes (failurePolicy Fail) until
repaired, so the interval bounds that outage after someone re-applies the manifests."""

JSON = dict[str, Any]


@dataclass(frozen=True)
class Plan:
    """What to do with one object: JSON patch ops (empty: nothing) and why, for the log."""

    ops: tuple[JSON, ...]
    note: str


def _guarded(obj: Mapping[str, Any], ops: list[JSON]) -> tuple[JSON, ...]:
    rv = str((obj.get("metadata") or {}).get("resourceVersion") or "")
    test = [{"op": "test", "path": "/metadata/resourceVersion", "value": rv}] if rv else []
    return tuple(test + ops)


def plan_crd(crd: Mapping[str, Any], bundle: str) -> Plan:
    """Set spec.conversion.webhook.clientConfig.caBundle to `bundle` (base64) if it differs."""
    conversion = (crd.get("spec") or {}).get("conversion") or {}
    if conversion.get("strategy") != "Webhook":
        return Plan(
            (), f"conversion strategy is {conversion.get('strategy', 'None')!r}, not Webhook"
        )
    config = (conversion.get("webhook") or {}).get("clientConfig")
    if not isinstance(config, Mapping):
        return Plan((), "spec.conversion.webhook.clientConfig is missing")
    if config.get("caBundle") == bundle:
        return Plan((), "up to date")
    path = "/spec/conversion/webhook/clientConfig/caBundle"
    return Plan(_guarded(crd, [{"op": "add", "path": path, "value": bundle}]), "caBundle set")


def plan_validating(config: Mapping[str, Any], bundle: str) -> Plan:
    """Set webhooks[*].clientConfig.caBundle to `bundle` wherever it differs."""
    ops: list[JSON] = []
    for i, hook in enumerate(config.get("webhooks") or []):
        client_config = hook.get("clientConfig") if isinstance(hook, Mapping) else None
        if not isinstance(client_config, Mapping):
            continue  # invalid object; kube-apiserver would not have stored it
        if client_config.get("caBundle") != bundle:
            ops.append(
                {"op": "add", "path": f"/webhooks/{i}/clientConfig/caBundle", "value": bundle}
            )
    if not ops:
        return Plan((), "up to date")
    return Plan(_guarded(config, ops), f"caBundle set on {len(ops)} webhook(s)")


@dataclass(frozen=True)
class Target:
    resource: Resource
    name: str
    plan: Callable[[Mapping[str, Any], str], Plan]


TARGETS = (
    Target(CRDS, GATEWAY_CRD, plan_crd),
    Target(VALIDATING_WEBHOOKS, VALIDATING_CONFIG, plan_validating),
)


class CaBundleKeeper:
    """Keeps the caBundle fields of TARGETS equal to the cluster CA."""

    def __init__(self, client: KubeClient, ca_pem: bytes) -> None:
        if b"-----BEGIN CERTIFICATE-----" not in ca_pem:
            raise ValueError("the cluster CA must be PEM certificates")
        self._client = client
        self.bundle = base64.b64encode(ca_pem).decode("ascii")
        self._last_note: dict[str, str] = {}
        self.patches = 0
        """Successful patches so far (for metrics and tests)."""

    async def reconcile(self) -> None:
        """One pass over every target; failures are logged and retried on the next pass."""
        RECONCILES.labels(subsystem="ca-bundles").inc()
        for target in TARGETS:
            try:
                await self._one(target)
            except errors.KubeError as exc:
                ERRORS.labels(subsystem="ca-bundles", kind=type(exc).__name__).inc()
                self._say(target, f"not updated: {exc}", logging.WARNING)

    async def run(self, interval: float = CHECK_INTERVAL) -> None:
        while True:
            await self.reconcile()
            await asyncio.sleep(interval)

    async def _one(self, target: Target) -> None:
        try:
            obj = await self._client.get(target.resource, target.name)
        except errors.NotFound:
            self._say(target, "not installed (apply the manifests)", logging.WARNING)
            return
        plan = target.plan(obj, self.bundle)
        if plan.ops:
            await self._client.patch(target.resource, target.name, list(plan.ops), kind="json")
            self.patches += 1
            # Every write is logged: it changes whom the kube-apiserver trusts.
            log.info("%s %s: %s to the cluster CA", target.resource.kind, target.name, plan.note)
            self._last_note[target.name] = "up to date"
            return
        self._say(target, plan.note, logging.INFO if plan.note == "up to date" else logging.WARNING)

    def _say(self, target: Target, note: str, level: int) -> None:
        # Log state changes only: a pass every minute must not repeat the same line forever.
        if self._last_note.get(target.name) != note:
            self._last_note[target.name] = note
            log.log(level, "%s %s: %s", target.resource.kind, target.name, note)


async def keep_ca_bundles(client: KubeClient, ca_pem: bytes) -> None:
    """Leader-only loop: keep both caBundle fields equal to `ca_pem` (never returns)."""
    await CaBundleKeeper(client, ca_pem).run()
