"""SimApiServer: TLS listener, identities, kubeconfigs, CSR signer task and fault hooks (I/O).

Composition of the pure parts (store, auth, pki) with aiohttp. The listening socket is created
by us rather than by aiohttp's TCPSite so that the "refuse" fault can close it and re-open it on
the same port.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import socket
import ssl
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import yaml
from aiohttp import web

from ravend.sim.apiserver import resources as res
from ravend.sim.apiserver.auth import Authenticator
from ravend.sim.apiserver.crd import CustomResource, installed_objects
from ravend.sim.apiserver.http import Api, FaultState
from ravend.sim.apiserver.pki import ClusterCA
from ravend.sim.apiserver.signer import CsrSigner
from ravend.sim.apiserver.store import Store
from ravend.sim.apiserver.webhooks import Webhook

log = logging.getLogger(__name__)
ADMIN_USER = "kubernetes-admin"
ADMIN_GROUPS = ("system:masters",)


def _report_exit(task: asyncio.Task[None]) -> None:
    """The signer loop never returns on its own: an exit other than cancellation is a bug."""
    if not task.cancelled() and task.exception() is not None:
        log.error("sim CSR signer died", exc_info=task.exception())


class Faults:
    """Fault hooks for tests: unavailability (503 or refused connections), watch drops and
    silences, latency."""

    def __init__(self, server: SimApiServer, state: FaultState) -> None:
        self._server, self._state = server, state

    @property
    def latency(self) -> float:
        """Seconds added before every request is handled."""
        return self._state.latency

    @latency.setter
    def latency(self, seconds: float) -> None:
        self._state.latency = seconds

    def set_unavailable(self, on: bool, mode: str = "503") -> asyncio.Future[None]:
        """Make the server unavailable ("503": answer 503; "refuse": stop listening) or back.

        Takes effect at once; the returned future completes when the listener is back after a
        "refuse" (await it if the next step needs to connect). Open watches are dropped either way.
        """
        if mode not in ("503", "refuse"):
            raise ValueError(f"unknown mode {mode!r}")
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if on:
            self.drop_watches()
            if mode == "503":
                self._state.unavailable = True
            else:
                self._server._refuse()
            done.set_result(None)
            return done
        self._state.unavailable = False
        return self._server._relisten()

    def silence_watches(self, resource: str) -> int:
        """Make the open watches of `resource` (plural, e.g. "leases") go silent: the streams
        stay open but deliver nothing, not even bookmarks, until their timeoutSeconds. New
        watches are healthy. Returns how many were silenced."""
        return self._server.store.silence_watches(resource)

    def drop_watches(self) -> int:
        """End every open watch stream; returns how many were open."""
        return self._server.store.close_watches()


class SimApiServer:
    """An in-memory kube-apiserver for what ravend uses. See the package docstring."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        extra_sans: Sequence[str] = (),
        state_dir: Path | None = None,
    ) -> None:
        self.host, self.port = host, port
        self._ca = ClusterCA.load_or_create(state_dir)
        self.ca_pem = self.ca_cert_pem = self._ca.cert_pem
        self.ca_key_pem = self._ca.key_pem
        gateways = res.lookup("gateways")
        self.store = Store(crds={"gateways": CustomResource.load(gateways)})
        for installed in installed_objects():
            self.store.create(installed)
        self._auth = Authenticator()
        self._state = FaultState()
        self.faults = Faults(self, self._state)
        self.api = Api(self.store, self._auth, self._state)
        self.admin_token = secrets.token_urlsafe(24)
        self.add_identity(self.admin_token, ADMIN_USER, ADMIN_GROUPS)
        sans = [
            "127.0.0.1",
            "localhost",
            "::1",
            "kubernetes",
            "kubernetes.default",
            "kubernetes.default.svc",
            "kubernetes.default.svc.cluster.local",
            host,
            *extra_sans,
        ]
        self._serving = self._ca.issue(
            "kube-apiserver",
            usages=["digital signature", "key encipherment", "server auth"],
            sans=sans,
        )
        self._runner: web.AppRunner | None = None
        self._listener: asyncio.Server | None = None
        self._relisten_task: asyncio.Task[None] | None = None
        self._signer_task: asyncio.Task[None] | None = None
        self._ssl: ssl.SSLContext | None = None
        self.url = ""

    # ---- identities and credentials ------------------------------------------------------------

    def add_identity(
        self,
        token: str,
        user: str,
        groups: Sequence[str] = (),
        extra: Mapping[str, Sequence[str]] | None = None,
        uid: str = "",
    ) -> None:
        """Accept `token` as `user` in `groups` (plus system:authenticated), with `extra`."""
        self._auth.add_token(token, user, groups, extra, uid)

    def issue_client_cert(
        self, common_name: str, organizations: Sequence[str] = ()
    ) -> tuple[bytes, bytes]:
        """A client certificate from the cluster CA (CN = user, O = groups): (cert, key) PEM."""
        return self._ca.issue(
            common_name,
            organizations,
            usages=["digital signature", "key encipherment", "client auth"],
        )

    def write_kubeconfig(
        self, path: Path, token: str | None = None, server_url: str | None = None
    ) -> Path:
        """A kubeconfig with the CA inlined and a bearer token (the admin's by default)."""
        import base64

        config: dict[str, Any] = {
            "apiVersion": "v1",
            "kind": "Config",
            "current-context": "sim",
            "clusters": [
                {
                    "name": "sim",
                    "cluster": {
                        "server": server_url or self.url,
                        "certificate-authority-data": base64.b64encode(self.ca_pem).decode(),
                    },
                }
            ],
            "users": [{"name": "sim", "user": {"token": token or self.admin_token}}],
            "contexts": [{"name": "sim", "context": {"cluster": "sim", "user": "sim"}}],
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        path.chmod(0o600)
        return path

    def set_conversion_webhook(
        self, url: str | None, ca_pem: bytes = b"", server_name: str | None = None
    ) -> None:
        """Route non-storage-version Gateway reads/writes through this webhook (None: built-in).

        `server_name`: the TLS name to verify instead of the URL's host (see Webhook)."""
        self.api.versions.webhook = Webhook(url, ca_pem, server_name) if url else None

    def set_validating_webhook(
        self,
        url: str | None,
        ca_pem: bytes = b"",
        server_name: str | None = None,
        timeout: float = 10.0,
    ) -> None:
        """Ask this webhook (AdmissionReview v1) before Gateway create/update (None: off)."""
        self.api.validating = Webhook(url, ca_pem, server_name, timeout) if url else None

    # ---- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        self._ssl = self._ssl_context()
        self._runner = web.AppRunner(self.api.app(), handle_signals=False, access_log=None)
        await self._runner.setup()
        sock = self._bind()
        self.port = sock.getsockname()[1]
        server = self._runner.server
        assert server is not None  # set by setup()
        self._listener = await asyncio.get_running_loop().create_server(
            server, sock=sock, ssl=self._ssl
        )
        host = f"[{self.host}]" if ":" in self.host else self.host
        self.url = f"https://{host}:{self.port}"
        self._signer_task = asyncio.create_task(
            CsrSigner(self.store, self._ca).run(), name="sim-csr-signer"
        )
        self._signer_task.add_done_callback(_report_exit)
        log.info("sim apiserver listening on %s", self.url)

    async def stop(self) -> None:
        """Stop accepting, end watches, drain handlers, then stop the signer."""
        for task in (self._relisten_task, self._signer_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self._listener is not None:
            self._listener.close()
        self.store.close_watches()
        if self._runner is not None:
            await self._runner.shutdown()
            await self._runner.cleanup()
        self._runner = self._listener = None

    async def __aenter__(self) -> SimApiServer:
        await self.start()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    def _ssl_context(self) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        # The ssl module loads key material from files only; keep them for the handshake setup.
        with tempfile.TemporaryDirectory() as tmp:
            cert, key = Path(tmp) / "tls.crt", Path(tmp) / "tls.key"
            cert.write_bytes(self._serving[0])
            key.write_bytes(self._serving[1])
            ctx.load_cert_chain(cert, key)
        # Client certificates are optional (tokens work too) but verified when presented.
        ctx.verify_mode = ssl.CERT_OPTIONAL
        ctx.load_verify_locations(cadata=self.ca_pem.decode())
        return ctx

    def _bind(self) -> socket.socket:
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        sock.listen(128)
        sock.setblocking(False)
        return sock

    def _refuse(self) -> None:
        """Close the listening socket and every open connection (clients get ECONNREFUSED)."""
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        if self._runner is not None and self._runner.server is not None:
            for conn in self._runner.server.connections:
                conn.force_close()
                if conn.transport is not None:
                    conn.transport.abort()

    def _relisten(self) -> asyncio.Future[None]:
        loop = asyncio.get_running_loop()
        pending = self._relisten_task is not None and not self._relisten_task.done()
        if pending and self._relisten_task is not None:
            return self._relisten_task
        if self._listener is not None or self._runner is None or self._runner.server is None:
            done: asyncio.Future[None] = loop.create_future()
            done.set_result(None)
            return done
        # Bind now so connections made right after this call queue up instead of being refused.
        sock = self._bind()
        server = self._runner.server

        async def serve() -> None:
            self._listener = await loop.create_server(server, sock=sock, ssl=self._ssl)

        self._relisten_task = asyncio.ensure_future(serve())
        return self._relisten_task
