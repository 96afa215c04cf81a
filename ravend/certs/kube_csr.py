"""CsrApi on the Kubernetes certificates.k8s.io/v1 API, through ravend.kube (does I/O).

`create` posts a CertificateSigningRequest; `wait_issued` reads it and then watches it (by
`metadata.name`) until the signer wrote `status.certificate`, or a Denied/Failed condition
appears, or the timeout passes. A dropped or expired watch is simply reopened from a fresh read,
so a restart of the API server costs a re-read, not the request. `csr_outcome` is the pure part.
"""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from ravend.certs.api import CsrDenied, CsrFailed, CsrTimeout
from ravend.kube import errors
from ravend.kube.client import KubeClient
from ravend.kube.resources import CSRS

log = logging.getLogger(__name__)

MANAGED_BY = {"app.kubernetes.io/managed-by": "ravend"}
"""Label on every CSR ravend creates (lets the approver and humans list them)."""
_REWATCH_DELAY = 0.5


def csr_body(
    name: str, csr_pem: bytes, signer_name: str, usages: Sequence[str], expiration_seconds: int
) -> dict[str, Any]:
    """The CertificateSigningRequest object for one submission (pure)."""
    return {
        "apiVersion": "certificates.k8s.io/v1",
        "kind": "CertificateSigningRequest",
        "metadata": {"name": name, "labels": dict(MANAGED_BY)},
        "spec": {
            "request": base64.b64encode(csr_pem).decode("ascii"),
            "signerName": signer_name,
            "usages": list(usages),
            "expirationSeconds": expiration_seconds,
        },
    }


def csr_outcome(obj: Mapping[str, Any]) -> bytes | None:
    """The issued PEM, None while pending; raises CsrDenied/CsrFailed when it never will be."""
    status = obj.get("status") or {}
    for cond in status.get("conditions") or []:
        if str(cond.get("status", "True")) != "True":
            continue
        message = f"{cond.get('reason', '')}: {cond.get('message', '')}"
        if cond.get("type") == "Denied":
            raise CsrDenied(message)
        if cond.get("type") == "Failed":
            raise CsrFailed(message)
    cert = status.get("certificate")
    if not cert:
        return None
    try:
        return base64.b64decode(cert, validate=True)
    except ValueError as e:
        raise CsrFailed(f"status.certificate is not base64: {e}") from e


class KubeCsrApi:
    """The CSR API of a real (or the embedded) Kubernetes API server."""

    def __init__(self, client: KubeClient) -> None:
        self.client = client

    async def create(
        self,
        name: str,
        csr_pem: bytes,
        signer_name: str,
        usages: Sequence[str],
        expiration_seconds: int,
    ) -> None:
        body = csr_body(name, csr_pem, signer_name, usages, expiration_seconds)
        await self.client.create(CSRS, body)

    async def wait_issued(self, name: str, timeout: float) -> bytes:
        try:
            async with asyncio.timeout(timeout):
                return await self._wait(name)
        except TimeoutError:
            raise CsrTimeout(f"CSR {name} not issued within {timeout:.0f}s") from None

    async def _wait(self, name: str) -> bytes:
        while True:
            try:
                obj = await self.client.get(CSRS, name)
            except errors.NotFound:
                raise CsrFailed(f"CSR {name} was deleted before it was issued") from None
            pem = csr_outcome(obj)
            if pem is not None:
                return pem
            rv = str(obj.get("metadata", {}).get("resourceVersion", ""))
            try:
                async for kind, event in self.client.watch(
                    CSRS, resource_version=rv, field_selector=f"metadata.name={name}"
                ):
                    if kind == "DELETED":
                        raise CsrFailed(f"CSR {name} was deleted before it was issued")
                    if kind in ("ADDED", "MODIFIED") and (pem := csr_outcome(event)) is not None:
                        return pem
            except errors.KubeError as e:
                # Gone, unavailable, a dropped connection: re-read and watch again.
                log.debug("CSR %s: watch ended (%s); re-reading", name, e)
                await asyncio.sleep(_REWATCH_DELAY)
