"""The agent's small HTTP server: /healthz, /readyz, /metrics, /debug/state (aiohttp, does I/O).

/healthz answers while the event loop runs (liveness: a wedged loop fails it). /readyz reflects
`Readiness`. /debug/state returns JSON snapshots registered by subsystems, for `ravectl`;
it is read-only, and when the server listens on a non-loopback address it requires the bearer
token given at construction (if any), so it never leaks topology to anyone on the network.
"""

from __future__ import annotations

import ipaddress
import json
import logging
from collections.abc import Callable, Mapping

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from ravend.observe.readiness import Readiness

log = logging.getLogger(__name__)

StateProvider = Callable[[], Mapping[str, object]]


class ObserveServer:
    def __init__(
        self, host: str, port: int, readiness: Readiness, debug_token: str | None = None
    ) -> None:
        self._host = host
        self._port = port
        self._readiness = readiness
        self._token = debug_token
        self._providers: dict[str, StateProvider] = {}
        self._runner: web.AppRunner | None = None
        self.port = port

    def add_state(self, name: str, provider: StateProvider) -> None:
        """Expose `provider()` under /debug/state as key `name`."""
        self._providers[name] = provider

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/debug/state", self._state)
        # shutdown_timeout: aiohttp would otherwise wait 60 s for keep-alive probe connections.
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self._port, reuse_address=True)
        await site.start()
        sockets = getattr(site._server, "sockets", None) or []
        if sockets:
            self.port = sockets[0].getsockname()[1]
        log.info("observe server listening on %s:%s", self._host, self.port)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _healthz(self, _: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def _readyz(self, _: web.Request) -> web.Response:
        report = self._readiness.report()
        return web.json_response(report, status=200 if report["ready"] else 503)

    async def _metrics(self, _: web.Request) -> web.Response:
        body = generate_latest(REGISTRY)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _state(self, request: web.Request) -> web.Response:
        if not self._authorised(request):
            return web.json_response({"error": "unauthorised"}, status=401)
        out: dict[str, object] = {"readiness": self._readiness.report()}
        for name, provider in sorted(self._providers.items()):
            try:
                out[name] = provider()
            except Exception as exc:  # a broken provider must not break the endpoint
                out[name] = {"error": f"{type(exc).__name__}: {exc}"}
        return web.Response(text=json.dumps(out, default=str), content_type="application/json")

    def _authorised(self, request: web.Request) -> bool:
        peer = request.remote or ""
        try:
            if ipaddress.ip_address(peer).is_loopback:
                return True
        except ValueError:
            pass
        if self._token is None:
            return False
        return request.headers.get("Authorization", "") == f"Bearer {self._token}"
