"""Conversion and validation webhooks for Gateways (aiohttp handlers over TLS; pure decisions).

`/convert` answers a ConversionReview (apiextensions.k8s.io/v1) with ravend.kube.conversion;
`/validate` answers an AdmissionReview (admission.k8s.io/v1) with `validate_gateway`, after
converting a v1alpha1 object so both versions obey the same rules. Every ravend serves them (they
are stateless), so the webhook Service needs no leader. Bad review bodies get a 400 with a
reason, never a crash.
"""

from __future__ import annotations

import json
import logging
import ssl
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from ravend.controllers.validation import validate_gateway
from ravend.kube.conversion import to_v1alpha1, to_v1beta1

log = logging.getLogger(__name__)

GROUP = "raven.openyurt.io"


def convert_review(review: Mapping[str, Any]) -> dict[str, Any]:
    """Answer a ConversionReview: convert every object to `desiredAPIVersion`."""
    request = review.get("request") or {}
    uid = request.get("uid", "")
    desired = request.get("desiredAPIVersion", "")
    converter = {f"{GROUP}/v1beta1": to_v1beta1, f"{GROUP}/v1alpha1": to_v1alpha1}.get(desired)
    response: dict[str, Any] = {"uid": uid}
    if converter is None:
        response["result"] = {"status": "Failure", "message": f"unknown version {desired!r}"}
    else:
        try:
            response["convertedObjects"] = [converter(o) for o in request.get("objects") or []]
            response["result"] = {"status": "Success"}
        except (KeyError, TypeError, ValueError) as exc:
            response["result"] = {"status": "Failure", "message": f"conversion failed: {exc}"}
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "ConversionReview",
        "response": response,
    }


def admission_review(review: Mapping[str, Any]) -> dict[str, Any]:
    """Answer an AdmissionReview for a Gateway create/update."""
    request = review.get("request") or {}
    obj = request.get("object") or {}
    problems: list[str]
    try:
        problems = validate_gateway(to_v1beta1(obj)) if obj else []
    except (KeyError, TypeError, ValueError) as exc:
        problems = [f"malformed Gateway: {exc}"]
    response: dict[str, Any] = {"uid": request.get("uid", ""), "allowed": not problems}
    if problems:
        response["status"] = {
            "status": "Failure",
            "code": 422,
            "reason": "Invalid",
            "message": "; ".join(problems),
        }
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response}


async def _handle(request: web.Request, decide: Any) -> web.Response:
    try:
        body = json.loads(await request.read())
        if not isinstance(body, dict):
            raise ValueError("review must be a JSON object")
    except ValueError as exc:
        log.warning("webhook %s: bad review from %s: %s", request.path, request.remote, exc)
        return web.json_response({"error": f"bad review: {exc}"}, status=400)
    return web.json_response(decide(body))


def make_app() -> web.Application:
    app = web.Application(client_max_size=4 << 20)

    async def convert(request: web.Request) -> web.Response:
        return await _handle(request, convert_review)

    async def validate(request: web.Request) -> web.Response:
        return await _handle(request, admission_review)

    app.router.add_post("/convert", convert)
    app.router.add_post("/validate", validate)
    return app


class WebhookServer:
    """Serves the webhooks over TLS on `port` (a thin runner around make_app)."""

    def __init__(self, host: str, port: int, ssl_context: ssl.SSLContext) -> None:
        self._host, self._port, self._ssl = host, port, ssl_context
        self._runner: web.AppRunner | None = None
        self.port = port

    async def start(self) -> None:
        self._runner = web.AppRunner(make_app(), access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self._port, ssl_context=self._ssl)
        await site.start()
        sockets = getattr(site._server, "sockets", None) or []
        if sockets:
            self.port = sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
