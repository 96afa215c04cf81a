"""The simulated cluster's API server calls ravend's real webhooks, as kube-apiserver does (I/O).

In a real cluster the manifests register the conversion and validating webhooks at the Service
`kube-system/ravend-webhook`, and the kube-apiserver verifies the serving certificate as
`ravend-webhook.kube-system.svc` against the caBundle (the cluster CA). Here the API server
process dials the agents' webhook port (10266) on the nodes it can reach over the WAN (the
cloud nodes) and verifies that same name against the sim cluster CA.

With failurePolicy Fail an unreachable webhook fails every Gateway write, so the webhooks are
registered only once an agent answers; afterwards the target follows the answering agents, like
a Service whose endpoints are the ready ravend pods. When none answers the registration stays
(Gateway writes then fail, as they would in a real cluster).
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import aiohttp

from ravend.certs.csr import WEBHOOK_SERVICE, WEBHOOK_SERVICE_NAMESPACE

if TYPE_CHECKING:
    from ravend.sim.apiserver.server import SimApiServer

log = logging.getLogger(__name__)

WEBHOOK_PORT = 10266
SERVER_NAME = f"{WEBHOOK_SERVICE}.{WEBHOOK_SERVICE_NAMESPACE}.svc"
"""The TLS name kube-apiserver verifies for a Service-referenced webhook."""
TIMEOUT = 5.0
"""timeoutSeconds of manifests/validating-webhook.yaml."""
POLL = 1.0
"""Seconds between readiness probes of the webhook targets."""


@dataclass(frozen=True)
class WebhookTargets:
    """Where the API server may reach an agent's webhook: addresses tried in order."""

    addresses: tuple[str, ...]
    port: int = WEBHOOK_PORT

    def url(self, address: str, path: str) -> str:
        host = f"[{address}]" if ":" in address else address
        return f"https://{host}:{self.port}{path}"


async def answers(url: str, ca_pem: bytes, timeout: float = 2.0) -> bool:
    """Whether a webhook at `url` completes a verified TLS handshake and answers a review."""
    review = {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {}}
    ctx = ssl.create_default_context(cadata=ca_pem.decode())
    try:
        async with (
            aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=ctx),
                timeout=aiohttp.ClientTimeout(total=timeout),
            ) as session,
            session.post(url, json=review, server_hostname=SERVER_NAME) as resp,
        ):
            body = await resp.json(content_type=None)
            return resp.status == 200 and isinstance(body, dict) and "response" in body
    except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as exc:
        log.debug("webhook %s not answering: %s", url, exc)
        return False


def register(server: SimApiServer, targets: WebhookTargets, address: str | None) -> None:
    """Point both webhooks of `server` at the agent on `address` (None: unregister)."""
    if address is None:
        server.set_conversion_webhook(None)
        server.set_validating_webhook(None)
        return
    server.set_conversion_webhook(targets.url(address, "/convert"), server.ca_pem, SERVER_NAME)
    server.set_validating_webhook(
        targets.url(address, "/validate"), server.ca_pem, SERVER_NAME, TIMEOUT
    )


async def follow_webhooks(
    server: SimApiServer,
    targets: WebhookTargets,
    *,
    on_registered: Callable[[str], None] = lambda _address: None,
    poll: float = POLL,
) -> None:
    """Register the first answering agent, then keep the registration on an answering one.

    Never returns (cancel it to stop; the registration stays as it is).
    """
    current: str | None = None
    while True:
        if current is None or not await answers(targets.url(current, "/validate"), server.ca_pem):
            chosen = await _first_answering(server.ca_pem, targets)
            if chosen is not None and chosen != current:
                register(server, targets, chosen)
                log.info("webhooks registered at %s (%s)", targets.url(chosen, ""), SERVER_NAME)
                current = chosen
                on_registered(chosen)
        await asyncio.sleep(poll)


async def _first_answering(ca_pem: bytes, targets: WebhookTargets) -> str | None:
    for address in targets.addresses:
        if await answers(targets.url(address, "/validate"), ca_pem):
            return address
    return None


def touch_when_registered(path: Path) -> Callable[[str], None]:
    """An `on_registered` that creates `path` (the parent process waits for it)."""

    def done(address: str) -> None:
        path.write_text(f"{address}\n")

    return done


def reachable_addresses(wan_ips: Sequence[str]) -> tuple[str, ...]:
    """Agents the API server can dial: nodes with a WAN address (NAT'd edges have none)."""
    return tuple(ip for ip in wan_ips if ip)
