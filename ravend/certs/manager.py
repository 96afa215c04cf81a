"""CertManager: keeps one certificate of ravend valid, renewed and published (does I/O).

For one identity (a CertSpec: store name, kind, node) it loads the stored pair if usable, else
generates a key and obtains a certificate through the CSR API, stores it and publishes it on
`latest` (servers and clients rebuild their TLS contexts from there). `run()` then renews at
`renew_fraction` of the lifetime, when the wanted SANs change (`set_wanted_sans`), and retries
with back-off when issuance fails - while the previous certificate, if still valid, stays in use.

Every renewal uses a new key: a key that leaked is useless after the next rotation.
"""

from __future__ import annotations

import datetime as dt
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import NoReturn

from ravend.certs.api import CsrApi, CsrError, CsrFailed
from ravend.certs.csr import (
    NO_SANS,
    CertKind,
    CsrRequirements,
    Sans,
    build_csr,
    cert_sans,
    expected_request,
    subject_name,
)
from ravend.certs.keys import (
    cert_from_pem,
    generate_key,
    key_from_pem,
    key_matches_cert,
    key_to_pem,
)
from ravend.certs.rotation import needs_renewal, next_check
from ravend.certs.settings import CertSettings
from ravend.certs.store import CertStore, StoredCert, StoreError
from ravend.runtime import Latest, Trigger

log = logging.getLogger(__name__)

Clock = Callable[[], dt.datetime]


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass(frozen=True)
class CertSpec:
    """Which certificate a manager keeps."""

    name: str
    """Store name: files `<name>.key` / `<name>.crt`, prefix of the CSR names."""
    kind: CertKind
    node: str
    """This node's name (the identity every request speaks for)."""


def csr_name(spec: CertSpec) -> str:
    """A unique CSR object name; the random suffix makes every submission a new object."""
    return f"ravend-{spec.name}-{spec.node}-{secrets.token_hex(4)}"[:253]


class CertManager:
    """Ensures and rotates the certificate of one `CertSpec`."""

    def __init__(
        self,
        settings: CertSettings,
        spec: CertSpec,
        api: CsrApi,
        store: CertStore | None = None,
        *,
        wanted_sans: Sans | None = None,
        clock: Clock = utcnow,
    ) -> None:
        self.settings = settings
        self.spec = spec
        self.api = api
        self.store = store or CertStore(settings.cert_dir)
        self.clock = clock
        self.latest: Latest[StoredCert | None] = Latest(None)
        """The certificate in use; None until the first one is loaded or issued."""
        self._wanted: Sans | None = wanted_sans if spec.kind is CertKind.SERVING else NO_SANS
        self._wake = Trigger()
        self.issued = 0
        """Certificates obtained from the CSR API by this manager (for metrics and tests)."""

    def set_wanted_sans(self, sans: Sans) -> None:
        """Serving certificates: the SANs the node needs now; a change triggers a renewal."""
        if self.spec.kind is not CertKind.SERVING:
            raise ValueError(f"{self.spec.kind} certificates carry no SANs")
        if sans != self._wanted:
            self._wanted = sans
            self._wake.set()

    def check_now(self) -> None:
        """Re-evaluate at once (e.g. after a clock jump) instead of at the next planned check."""
        self._wake.set()

    def renewal_reason(self, current: StoredCert | None) -> str | None:
        """Why `current` must be replaced now (None: it is fine)."""
        if current is None:
            return "no certificate"
        return needs_renewal(
            current.cert,
            self.clock(),
            self._wanted if self.spec.kind is CertKind.SERVING else None,
            renew_fraction=self.settings.renew_fraction,
        )

    def load(self) -> StoredCert | None:
        """The stored certificate if usable (published when found)."""
        try:
            stored = self.store.load(self.spec.name, self.clock())
        except StoreError as e:
            log.warning("stored certificate unusable, requesting a new one: %s", e)
            return None
        if stored is not None and self.latest.value is None:
            self.latest.publish(stored)
        return stored

    async def ensure(self) -> StoredCert:
        """A valid certificate: the stored one if nothing requires renewal, else a new one.

        Retries until it succeeds; raises only on cancellation.
        """
        await self._wait_for_sans()
        current = self.latest.value or self.load()
        if self.renewal_reason(current) is None and current is not None:
            return current
        return await self._renew_until_done(current)

    async def run(self) -> NoReturn:
        """Keep the certificate valid forever (house style: a loop that returns is a bug)."""
        current = await self.ensure()
        while True:
            reason = self.renewal_reason(current)
            if reason is not None:
                current = await self._renew_until_done(current)
                continue
            delay = next_check(current.cert, self.clock(), self.settings.renew_fraction)
            await self._wake.wait(timeout=delay)

    async def _wait_for_sans(self) -> None:
        # A serving certificate without its SANs would be useless; the composition root sets
        # them from the first ClusterView.
        while self._wanted is None:
            await self._wake.wait()

    async def _renew_until_done(self, current: StoredCert | None) -> StoredCert:
        delay = self.settings.retry_delay
        while True:
            reason = self.renewal_reason(current) or "requested"
            try:
                return await self.issue(reason)
            except (CsrError, OSError) as e:
                log.warning(
                    "certificate %s: issuance failed (%s), retry in %.0fs", self.spec.name, e, delay
                )
            except Exception:
                # The CSR API adapter's own errors (API server down, forbidden): same handling,
                # but with the traceback, as these point at configuration or bugs.
                log.exception(
                    "certificate %s: issuance failed, retry in %.0fs", self.spec.name, delay
                )
            await self._wake.wait(timeout=delay)
            delay = min(delay * 2, self.settings.max_retry_delay)

    async def issue(self, reason: str) -> StoredCert:
        """Submit one CSR, wait for the certificate, check, store and publish it."""
        sans = self._wanted if self.spec.kind is CertKind.SERVING else NO_SANS
        req = expected_request(self.spec.kind, self.spec.node, sans or NO_SANS)
        key = generate_key(self.settings.key_type)
        name = csr_name(self.spec)
        log.info("certificate %s: requesting %s (%s)", self.spec.name, name, reason)
        await self.api.create(
            name,
            build_csr(req, key),
            req.signer_name,
            sorted(req.usages),
            self.settings.lifetime_seconds,
        )
        cert_pem = await self.api.wait_issued(name, self.settings.wait_timeout)
        key_pem = key_to_pem(key)
        _check_issued(req, key_pem, cert_pem)
        self.store.save(self.spec.name, key_pem, cert_pem)
        stored = self.store.load(self.spec.name, self.clock())
        if stored is None:  # pragma: no cover - we just wrote it
            raise CsrFailed("certificate vanished from the store")
        self.issued += 1
        self.latest.publish(stored)
        log.info(
            "certificate %s: issued, valid until %s",
            self.spec.name,
            stored.cert.not_valid_after_utc.isoformat(),
        )
        return stored


def _check_issued(req: CsrRequirements, key_pem: bytes, cert_pem: bytes) -> None:
    """Refuse a certificate that is not what we asked for (a misbehaving signer)."""
    try:
        cert = cert_from_pem(cert_pem)
    except ValueError as e:
        raise CsrFailed(f"issued certificate unreadable: {e}") from e
    if not key_matches_cert(key_from_pem(key_pem), cert):
        raise CsrFailed("issued certificate is for another key")
    if set(cert.subject) != set(subject_name(req.common_name, req.organizations)):
        raise CsrFailed(f"issued certificate has subject {cert.subject.rfc4514_string()}")
    if cert_sans(cert) != req.sans:
        raise CsrFailed("issued certificate has other SANs than requested")
