"""The CSR API as CertManager needs it: a small Protocol and its errors (pure, no I/O).

`kube_csr.py` implements it on the Kubernetes certificates.k8s.io/v1 API; `localca.py` on a
throwaway in-process CA for tests and offline use. Keeping the manager on this Protocol means it is
tested without an API server and the client library can change under it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol


class CsrError(Exception):
    """A certificate request did not produce a certificate."""


class CsrDenied(CsrError):
    """The request was denied (by the approver or an administrator)."""


class CsrFailed(CsrError):
    """The signer failed the request, or issued something unusable."""


class CsrTimeout(CsrError):
    """No certificate was issued within the wait timeout."""


class CsrApi(Protocol):
    """Submit a CSR and wait for its certificate."""

    async def create(
        self,
        name: str,
        csr_pem: bytes,
        signer_name: str,
        usages: Sequence[str],
        expiration_seconds: int,
    ) -> None:
        """Create CertificateSigningRequest `name`; it is new on every call (names are unique)."""
        ...

    async def wait_issued(self, name: str, timeout: float) -> bytes:
        """PEM certificate (chain) once issued; CsrDenied / CsrFailed / CsrTimeout otherwise."""
        ...
