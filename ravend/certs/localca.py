"""A throwaway in-process certificate authority and a CsrApi on it (pure computation, no I/O).

For tests and offline development: it signs like the Kubernetes signers do (usages from the
request's spec, SANs and subject from the CSR, lifetime from expirationSeconds capped by the CA)
and can apply the approval policy, so CertManager and the TLS contexts are exercised with real
certificates without an API server.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ravend.certs.api import CsrDenied, CsrTimeout
from ravend.certs.csr import (
    USAGE_CLIENT_AUTH,
    USAGE_DIGITAL_SIGNATURE,
    USAGE_KEY_ENCIPHERMENT,
    USAGE_SERVER_AUTH,
    CsrRequirements,
    san_extension,
    subject_name,
)
from ravend.certs.keys import KeyType, PrivateKey, cert_to_pem, generate_key, key_to_pem

Clock = Callable[[], dt.datetime]


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass
class LocalCa:
    """A self-signed CA that issues leaf certificates."""

    key: PrivateKey
    cert: x509.Certificate
    clock: Clock = utcnow

    @classmethod
    def generate(
        cls, common_name: str = "ravend-test-ca", days: int = 365, clock: Clock = utcnow
    ) -> LocalCa:
        key = generate_key(KeyType.EC_P256)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
        now = clock()
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(False, False, False, False, False, True, True, False, False),
                critical=True,
            )
            .sign(key, hashes.SHA256())
        )
        return cls(key, cert, clock)

    @property
    def cert_pem(self) -> bytes:
        return cert_to_pem(self.cert)

    def sign_csr(self, csr_pem: bytes, usages: Sequence[str], lifetime: dt.timedelta) -> bytes:
        """Issue a certificate for a PEM CSR, as a Kubernetes signer would."""
        csr = x509.load_pem_x509_csr(csr_pem)
        try:
            sans: x509.SubjectAlternativeName | None = csr.extensions.get_extension_for_class(
                x509.SubjectAlternativeName
            ).value
        except x509.ExtensionNotFound:
            sans = None
        return self._issue(csr.subject, csr.public_key(), sans, usages, lifetime)

    def issue(
        self,
        req: CsrRequirements,
        key: PrivateKey,
        lifetime: dt.timedelta,
        not_before: dt.datetime | None = None,
    ) -> bytes:
        """Issue directly (no CSR) for `req`; `not_before` lets tests make expired certs."""
        sans = san_extension(req.sans) if req.sans else None
        subject = subject_name(req.common_name, req.organizations)
        usages = sorted(req.usages)
        return self._issue(subject, key.public_key(), sans, usages, lifetime, not_before=not_before)

    def issue_pair(
        self,
        req: CsrRequirements,
        lifetime: dt.timedelta = dt.timedelta(days=1),
        not_before: dt.datetime | None = None,
    ) -> tuple[bytes, bytes]:
        """A fresh key and a certificate for it: (key PEM, certificate PEM)."""
        key = generate_key(KeyType.EC_P256)
        return key_to_pem(key), self.issue(req, key, lifetime, not_before)

    def _issue(
        self,
        subject: x509.Name,
        public_key: CertificatePublicKeyTypes,
        sans: x509.SubjectAlternativeName | None,
        usages: Sequence[str],
        lifetime: dt.timedelta,
        *,
        not_before: dt.datetime | None = None,
    ) -> bytes:
        start = not_before or self.clock()
        # Kubernetes signers cap the lifetime at the CA's own expiry; so do we.
        end = min(start + lifetime, self.cert.not_valid_after_utc)
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(self.cert.subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_key_usage(usages), critical=True)
        )
        ekus = [
            oid
            for usage, oid in (
                (USAGE_SERVER_AUTH, ExtendedKeyUsageOID.SERVER_AUTH),
                (USAGE_CLIENT_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH),
            )
            if usage in usages
        ]
        if ekus:
            builder = builder.add_extension(x509.ExtendedKeyUsage(ekus), critical=False)
        if sans is not None:
            builder = builder.add_extension(sans, critical=False)
        return cert_to_pem(builder.sign(self.key, hashes.SHA256()))


def _key_usage(usages: Sequence[str]) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=USAGE_DIGITAL_SIGNATURE in usages,
        content_commitment=False,
        key_encipherment=USAGE_KEY_ENCIPHERMENT in usages,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=False,
        crl_sign=False,
        encipher_only=False,
        decipher_only=False,
    )


@dataclass
class SubmittedCsr:
    """One request as the in-memory API holds it."""

    name: str
    csr_pem: bytes
    signer_name: str
    usages: tuple[str, ...]
    expiration_seconds: int
    decided: asyncio.Event = field(default_factory=asyncio.Event)
    certificate: bytes | None = None
    denied: str | None = None


Decider = Callable[[SubmittedCsr], str | None]
"""Approval hook: None approves, a string denies with that reason."""


class InMemoryCsrApi:
    """CsrApi over LocalCa: approves (or denies) through `decide` and signs at once."""

    def __init__(
        self,
        ca: LocalCa,
        decide: Decider | None = None,
        max_lifetime: dt.timedelta | None = None,
        auto: bool = True,
    ) -> None:
        self.ca = ca
        self.decide: Decider = decide or (lambda _req: None)
        self.max_lifetime = max_lifetime
        self.auto = auto
        """False: requests wait until `settle(name)` is called (to test waiting/timeouts)."""
        self.requests: dict[str, SubmittedCsr] = {}

    async def create(
        self,
        name: str,
        csr_pem: bytes,
        signer_name: str,
        usages: Sequence[str],
        expiration_seconds: int,
    ) -> None:
        if name in self.requests:
            raise ValueError(f"CSR {name} already exists")
        req = SubmittedCsr(name, csr_pem, signer_name, tuple(usages), expiration_seconds)
        self.requests[name] = req
        if self.auto:
            self.settle(name)

    def settle(self, name: str) -> None:
        """Decide and, when approved, sign request `name`."""
        req = self.requests[name]
        reason = self.decide(req)
        if reason is not None:
            req.denied = reason
        else:
            lifetime = dt.timedelta(seconds=req.expiration_seconds)
            if self.max_lifetime is not None:
                lifetime = min(lifetime, self.max_lifetime)
            req.certificate = self.ca.sign_csr(req.csr_pem, req.usages, lifetime)
        req.decided.set()

    async def wait_issued(self, name: str, timeout: float) -> bytes:
        req = self.requests[name]
        try:
            await asyncio.wait_for(req.decided.wait(), timeout)
        except TimeoutError:
            raise CsrTimeout(f"CSR {name} not issued within {timeout}s") from None
        if req.denied is not None:
            raise CsrDenied(f"CSR {name} denied: {req.denied}")
        assert req.certificate is not None
        return req.certificate
