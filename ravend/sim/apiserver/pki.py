"""The sim cluster's CA: key generation, serving/client certificates, CSR signing (pure crypto).

No network I/O; `ClusterCA.load_or_create` reads/writes PEM files only when given a directory.
Keys are EC P-256. Certificates are backdated 5 minutes, as kube-controller-manager's signer does,
so small clock skew between namespaces never makes a fresh certificate "not yet valid".
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

BACKDATE = dt.timedelta(minutes=5)
CA_VALIDITY = dt.timedelta(days=3650)
LEAF_VALIDITY = dt.timedelta(days=365)

_EKU = {
    "server auth": ExtendedKeyUsageOID.SERVER_AUTH,
    "client auth": ExtendedKeyUsageOID.CLIENT_AUTH,
    "code signing": ExtendedKeyUsageOID.CODE_SIGNING,
    "email protection": ExtendedKeyUsageOID.EMAIL_PROTECTION,
}
_KU = {
    "digital signature",
    "key encipherment",
    "cert sign",
    "crl sign",
    "content commitment",
    "key agreement",
    "data encipherment",
    "encipher only",
    "decipher only",
    "signing",
}


def new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _name(cn: str, orgs: Sequence[str] = ()) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in orgs]
    return x509.Name([*attrs, x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _sans(names: Sequence[str]) -> list[x509.GeneralName]:
    out: list[x509.GeneralName] = []
    for n in dict.fromkeys(names):
        try:
            out.append(x509.IPAddress(ipaddress.ip_address(n)))
        except ValueError:
            out.append(x509.DNSName(n))
    return out


def _key_usage(usages: Sequence[str]) -> x509.KeyUsage:
    u = set(usages)
    return x509.KeyUsage(
        digital_signature="digital signature" in u or "signing" in u,
        content_commitment="content commitment" in u,
        key_encipherment="key encipherment" in u,
        data_encipherment="data encipherment" in u,
        key_agreement="key agreement" in u,
        key_cert_sign="cert sign" in u,
        crl_sign="crl sign" in u,
        encipher_only=False,
        decipher_only=False,
    )


@dataclass
class ClusterCA:
    """The cluster CA (CN "kubernetes", like kubeadm's) and everything it signs."""

    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @classmethod
    def create(cls) -> ClusterCA:
        key = new_key()
        now = dt.datetime.now(dt.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name("kubernetes"))
            .issuer_name(_name("kubernetes"))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - BACKDATE)
            .not_valid_after(now + CA_VALIDITY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                _key_usage(["digital signature", "key encipherment", "cert sign"]), critical=True
            )
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
            )
            .sign(key, hashes.SHA256())
        )
        return cls(cert, key)

    @classmethod
    def load_or_create(cls, state_dir: Path | None) -> ClusterCA:
        """Reuse ca.crt/ca.key from state_dir so a restarted server keeps its trust root."""
        if state_dir is None:
            return cls.create()
        crt, keyf = state_dir / "ca.crt", state_dir / "ca.key"
        if crt.exists() and keyf.exists():
            key = serialization.load_pem_private_key(keyf.read_bytes(), None)
            assert isinstance(key, ec.EllipticCurvePrivateKey)
            return cls(x509.load_pem_x509_certificate(crt.read_bytes()), key)
        ca = cls.create()
        state_dir.mkdir(parents=True, exist_ok=True)
        crt.write_bytes(ca.cert_pem)
        keyf.touch(mode=0o600)
        keyf.write_bytes(key_pem(ca.key))
        return ca

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    @property
    def key_pem(self) -> bytes:
        return key_pem(self.key)

    def sign(
        self,
        subject: x509.Name,
        public_key: ec.EllipticCurvePublicKey | object,
        *,
        usages: Sequence[str],
        sans: Sequence[x509.GeneralName] = (),
        validity: dt.timedelta = LEAF_VALIDITY,
    ) -> x509.Certificate:
        """Issue a leaf certificate with the given kube `usages` ("server auth", ...)."""
        now = dt.datetime.now(dt.UTC)
        not_after = min(now + validity, self.cert.not_valid_after_utc)
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(self.cert.subject)
            .public_key(public_key)  # type: ignore[arg-type]
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - BACKDATE)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_key_usage(usages), critical=True)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),
                critical=False,
            )
        )
        ekus = [_EKU[u] for u in usages if u in _EKU]
        if ekus:
            builder = builder.add_extension(x509.ExtendedKeyUsage(ekus), critical=False)
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(list(sans)), critical=False)
        return builder.sign(self.key, hashes.SHA256())

    def issue(
        self,
        common_name: str,
        orgs: Sequence[str] = (),
        *,
        usages: Sequence[str],
        sans: Sequence[str] = (),
    ) -> tuple[bytes, bytes]:
        """A fresh key and certificate (both PEM) for a client or server."""
        key = new_key()
        cert = self.sign(
            _name(common_name, orgs), key.public_key(), usages=usages, sans=_sans(sans)
        )
        return cert.public_bytes(serialization.Encoding.PEM), key_pem(key)


def known_usage(usage: str) -> bool:
    """True for the key usages certificates.k8s.io/v1 accepts."""
    return (
        usage in _EKU
        or usage in _KU
        or usage
        in {
            "any",
            "s/mime",
            "ipsec end system",
            "ipsec tunnel",
            "ipsec user",
            "timestamping",
            "ocsp signing",
            "microsoft sgc",
            "netscape sgc",
        }
    )


def sans_of(names: Sequence[str]) -> list[x509.GeneralName]:
    return _sans(names)
