"""Private keys and PEM (de)serialisation of keys and certificates (pure computation, no I/O).

Keys are generated in-process and only ever written by `store.py`; nothing here touches disk.
"""

from __future__ import annotations

from enum import StrEnum

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
"""Key types ravend can use for TLS (what every Kubernetes signer accepts)."""


class KeyType(StrEnum):
    """Algorithm of newly generated keys."""

    EC_P256 = "ecdsa-p256"
    EC_P384 = "ecdsa-p384"
    RSA_2048 = "rsa-2048"


def generate_key(key_type: KeyType = KeyType.EC_P256) -> PrivateKey:
    """A fresh private key of the given type."""
    if key_type is KeyType.EC_P256:
        return ec.generate_private_key(ec.SECP256R1())
    if key_type is KeyType.EC_P384:
        return ec.generate_private_key(ec.SECP384R1())
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def key_to_pem(key: PrivateKey) -> bytes:
    """Unencrypted PKCS#8 PEM; protection comes from file permissions (0600 in a 0700 dir)."""
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def key_from_pem(pem: bytes) -> PrivateKey:
    """Parse a PEM private key; ValueError if it is not a supported type."""
    key = serialization.load_pem_private_key(pem, password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise ValueError(f"unsupported private key type {type(key).__name__}")
    return key


def cert_from_pem(pem: bytes) -> x509.Certificate:
    """The first (leaf) certificate of a PEM bundle; ValueError if there is none."""
    certs = certs_from_pem(pem)
    if not certs:
        raise ValueError("no certificate in PEM data")
    return certs[0]


def certs_from_pem(pem: bytes) -> list[x509.Certificate]:
    """Every certificate of a PEM bundle, in order (leaf first for a chain)."""
    if b"-----BEGIN CERTIFICATE-----" not in pem:
        return []
    return x509.load_pem_x509_certificates(pem)


def cert_to_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _public_der(key: PrivateKey | x509.Certificate) -> bytes:
    public = key.public_key()
    return public.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def key_matches_cert(key: PrivateKey, cert: x509.Certificate) -> bool:
    """True when `cert` certifies the public half of `key`."""
    return _public_der(key) == _public_der(cert)
