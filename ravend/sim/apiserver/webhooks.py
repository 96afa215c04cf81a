"""Conversion and validating admission webhooks for Gateways (async HTTP client, thin).

Request/response shapes are apiextensions.k8s.io/v1 ConversionReview and admission.k8s.io/v1
AdmissionReview, as kube-apiserver sends them. Both behave like failurePolicy: Fail: an
unreachable or malformed webhook fails the API request with 500 and a message naming the webhook.
The validating webhook receives the object in the storage version (matchPolicy: Equivalent with
the webhook registered for v1beta1, which is how ravend registers it).
"""

from __future__ import annotations

import ssl
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp

from ravend.sim.apiserver.auth import Identity
from ravend.sim.apiserver.errors import ApiError, internal
from ravend.sim.apiserver.resources import ResourceType

JsonObj = dict[str, Any]
TIMEOUT = aiohttp.ClientTimeout(total=10)
VALIDATING_NAME = "gateway.raven.openyurt.io"


@dataclass(frozen=True)
class Webhook:
    url: str
    ca_pem: bytes
    server_name: str | None = None
    """TLS name to verify instead of the URL's host. kube-apiserver verifies a Service-referenced
    webhook as `<service>.<namespace>.svc` while dialling an endpoint address; this lets the
    sim dial an address yet check the name a real cluster checks."""
    timeout: float = TIMEOUT.total or 10.0
    """Seconds for the whole call (the registration's timeoutSeconds; kube's default is 10)."""

    def ssl_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cadata=self.ca_pem.decode())
        return ctx


async def _post(hook: Webhook, body: JsonObj) -> JsonObj:
    connector = aiohttp.TCPConnector(ssl=hook.ssl_context())
    timeout = aiohttp.ClientTimeout(total=hook.timeout)
    async with (
        aiohttp.ClientSession(connector=connector, timeout=timeout) as session,
        session.post(hook.url, json=body, server_hostname=hook.server_name) as resp,
    ):
        if resp.status != 200:
            raise aiohttp.ClientResponseError(
                resp.request_info, (), status=resp.status, message=await resp.text()
            )
        data = await resp.json(content_type=None)
        if not isinstance(data, dict):
            raise ValueError("response is not a JSON object")
        return data


async def convert(
    hook: Webhook, rt: ResourceType, objects: Sequence[Mapping[str, Any]], version: str
) -> list[JsonObj]:
    """Convert `objects` to `version` via the conversion webhook (ConversionReview v1)."""
    desired = rt.api_version(version)
    review = {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "ConversionReview",
        "request": {
            "uid": str(uuid.uuid4()),
            "desiredAPIVersion": desired,
            "objects": list(objects),
        },
    }
    what = f"conversion webhook for {rt.api_version(rt.storage)}, Kind={rt.kind}"
    try:
        data = await _post(hook, review)
    except (aiohttp.ClientError, OSError, ValueError, TimeoutError) as exc:
        raise internal(f'{what} failed: Post "{hook.url}": {exc}') from None
    response = data.get("response") or {}
    result = response.get("result") or {}
    if result.get("status") != "Success":
        raise internal(f"{what} failed: {result.get('message', 'no result')}")
    converted = response.get("convertedObjects")
    if not isinstance(converted, list) or len(converted) != len(objects):
        raise internal(
            f"{what} failed: returned {len(converted or [])} objects, expected {len(objects)}"
        )
    for obj in converted:
        if obj.get("apiVersion") != desired:
            raise internal(
                f"{what} failed: invalid apiVersion {obj.get('apiVersion')!r}, expected {desired}"
            )
    return [dict(o) for o in converted]


async def admit(  # noqa: PLR0917 (mirrors the AdmissionReview fields one to one)
    hook: Webhook,
    rt: ResourceType,
    operation: str,
    obj: Mapping[str, Any],
    old: Mapping[str, Any] | None,
    requester: Identity | None,
) -> None:
    """Ask the validating webhook; raises ApiError when it denies or cannot be called."""
    group, version = rt.group, rt.storage
    request: JsonObj = {
        "uid": str(uuid.uuid4()),
        "kind": {"group": group, "version": version, "kind": rt.kind},
        "resource": {"group": group, "version": version, "resource": rt.plural},
        "requestKind": {"group": group, "version": version, "kind": rt.kind},
        "requestResource": {"group": group, "version": version, "resource": rt.plural},
        "name": obj.get("metadata", {}).get("name", ""),
        "operation": operation,
        "userInfo": requester.user_info() if requester else {"username": "system:anonymous"},
        "object": dict(obj),
        "oldObject": dict(old) if old is not None else None,
        "dryRun": False,
        "options": {"apiVersion": "meta.k8s.io/v1", "kind": f"{operation.capitalize()}Options"},
    }
    review = {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request}
    try:
        data = await _post(hook, review)
    except (aiohttp.ClientError, OSError, ValueError, TimeoutError) as exc:
        raise internal(
            f'failed calling webhook "{VALIDATING_NAME}": failed to call webhook: '
            f'Post "{hook.url}": {exc}'
        ) from None
    response = data.get("response") or {}
    if response.get("uid") != request["uid"]:
        raise internal(
            f'failed calling webhook "{VALIDATING_NAME}": expected response.uid={request["uid"]}'
        )
    if response.get("allowed") is True:
        return
    status: Mapping[str, Any] = response.get("status") or {}
    message = f'admission webhook "{VALIDATING_NAME}" denied the request'
    if status.get("message"):
        message += f": {status['message']}"
    raise ApiError(int(status.get("code") or 400), str(status.get("reason", "")), message)
