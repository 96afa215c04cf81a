"""Serving the Gateway webhooks on every ravend: certificate, TLS listener, rotation (does I/O).

The conversion (/convert) and validation (/validate) webhooks are stateless, so every ravend
serves them on port 10266 and the Service `kube-system/ravend-webhook` (internalTrafficPolicy
Local) sends the kube-apiserver to the ravend next to it. The certificate comes from the CSR API
and is signed by the cluster CA (signer kubernetes.io/kubelet-serving), which the kube-apiserver
is then told to trust through the caBundle fields (`ravend.controllers.cabundle`). Its SANs are
the webhook Service's names only: the kube-apiserver verifies `ravend-webhook.kube-system.svc`.

No client certificate is asked for: the kube-apiserver presents none to webhooks unless it is
configured with an admission kubeconfig, and the reviews it sends are not secrets - the answer
is a pure function of the object it already holds.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable

from ravend.certs.csr import CertKind, webhook_sans
from ravend.certs.kube_csr import KubeCsrApi
from ravend.certs.manager import CertManager, CertSpec
from ravend.certs.settings import CertSettings
from ravend.certs.store import CertStore, StoredCert
from ravend.certs.tls import ReloadableContext, server_context
from ravend.controllers.webhook import WebhookServer
from ravend.kube.client import KubeClient

log = logging.getLogger(__name__)

WEBHOOK_PORT = 10266
"""Target port of the webhook Service on every ravend pod (manifests/webhook-service.yaml)."""
CERT_NAME = "webhook"
"""Store name of the certificate (`<state_dir>/certs/webhook.{key,crt}`), CSR name prefix."""
WAIT_LOG_INTERVAL = 30.0
"""Seconds between "still waiting for the certificate" warnings while nothing approves the CSR."""


def webhook_cert_manager(
    client: KubeClient, node: str, settings: CertSettings, store: CertStore | None = None
) -> CertManager:
    """The CertManager of this node's webhook certificate (a serving kind; see certs/csr.py)."""
    return CertManager(
        settings,
        CertSpec(CERT_NAME, CertKind.SERVING, node),
        KubeCsrApi(client),
        store,
        wanted_sans=webhook_sans(settings.cluster_domain),
    )


def webhook_tls(cert: StoredCert) -> ssl.SSLContext:
    """Server context for the webhook: our chain, no client certificate, TLS 1.2 or newer."""
    ctx = server_context(cert.cert_pem, cert.key_pem, None)
    # kube-apiserver negotiates TLS 1.3; 1.2 stays allowed for older control planes and for
    # TLS-terminating proxies some clusters put between the apiserver and webhooks.
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


async def run_webhook(
    client: KubeClient,
    node: str,
    settings: CertSettings,
    port: int,
    ready: Callable[[], None],
    *,
    host: str = "0.0.0.0",
    manager: CertManager | None = None,
) -> None:
    """Serve the webhooks on host:port until cancelled (never returns on its own).

    Waits for the certificate first (the stored one after a restart, else a CSR the elected
    controller approves); `ready` is called once the listener accepts connections. The
    certificate is renewed by the manager and swapped in for new handshakes without a restart.
    """
    manager = manager or webhook_cert_manager(client, node, settings)
    first = await _first_certificate(manager)
    seen = manager.latest.version
    tls = ReloadableContext(webhook_tls(first))
    server = WebhookServer(host, port, tls.listener)
    await server.start()
    try:
        log.info("webhooks: serving /convert and /validate on %s:%d (TLS)", host, server.port)
        ready()
        async with asyncio.TaskGroup() as tg:
            tg.create_task(manager.run(), name="webhook-cert")
            tg.create_task(_follow(manager, tls, seen), name="webhook-cert-reload")
    finally:
        # Stop accepting and close open review connections; the apiserver retries elsewhere.
        await server.stop()


async def _first_certificate(manager: CertManager) -> StoredCert:
    """`manager.ensure()`, saying clearly and periodically why the webhook is not up yet."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(manager.ensure(), name="webhook-cert-first")
        while not task.done():
            await asyncio.wait({task}, timeout=WAIT_LOG_INTERVAL)
            if not task.done():
                log.warning(
                    "webhooks: not serving yet, no certificate after %.0f s: the CSR waits for "
                    "approval by the elected ravend controller (is one running? are ravend's "
                    "CSRs denied? see `kubectl get csr -l app.kubernetes.io/managed-by=ravend`)",
                    loop.time() - started,
                )
    return task.result()


async def _follow(manager: CertManager, tls: ReloadableContext, seen: int) -> None:
    """Swap every certificate published after version `seen` into the listener (open
    connections keep theirs)."""
    while True:
        seen, cert = await manager.latest.wait_newer(seen)
        if cert is not None:
            tls.reload(webhook_tls(cert))
            log.info(
                "webhooks: certificate reloaded, valid until %s",
                cert.cert.not_valid_after_utc.isoformat(),
            )
