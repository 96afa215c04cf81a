"""WireGuard keys: encoding helpers (pure) and the persisted private key (file I/O).

The private key is generated once and kept in the state directory with mode 0600, so a ravend
restart keeps the same public key and peers never need reconfiguring (Raven regenerates it on
every restart, which makes every peer flap; peers.md item 9).
"""

from __future__ import annotations

import base64
import binascii
import os
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)

KEY_LEN = 32


class KeyFormatError(ValueError):
    """A key is not 32 bytes of base64 or hex."""


def b64_to_hex(key: str) -> str:
    try:
        raw = base64.b64decode(key, validate=True)
    except binascii.Error as e:
        raise KeyFormatError(f"not base64: {key!r}") from e
    if len(raw) != KEY_LEN:
        raise KeyFormatError(f"key is {len(raw)} bytes, want {KEY_LEN}")
    return raw.hex()


def hex_to_b64(key: str) -> str:
    try:
        raw = bytes.fromhex(key)
    except ValueError as e:
        raise KeyFormatError(f"not hex: {key!r}") from e
    if len(raw) != KEY_LEN:
        raise KeyFormatError(f"key is {len(raw)} bytes, want {KEY_LEN}")
    return base64.b64encode(raw).decode()


def generate_private() -> str:
    """A new private key, base64 (as `wg genkey` prints it)."""
    raw = X25519PrivateKey.generate().private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    return base64.b64encode(raw).decode()


def public_from_private(private_b64: str) -> str:
    """The public key of a base64 private key (as `wg pubkey` prints it)."""
    raw = bytes.fromhex(b64_to_hex(private_b64))
    pub = X25519PrivateKey.from_private_bytes(raw).public_key()
    return base64.b64encode(pub.public_bytes(Encoding.Raw, PublicFormat.Raw)).decode()


def load_or_create(path: Path) -> str:
    """Read the private key at `path`, creating it (mode 0600, atomically) if absent."""
    try:
        key = path.read_text().strip()
    except FileNotFoundError:
        pass
    else:
        public_from_private(key)  # validates; a corrupt file must fail loudly, not be replaced
        return key
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = generate_private()
    tmp = path.with_name(path.name + ".tmp")
    # Created 0600 from the start: the key is never readable by others, not even briefly.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(key + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return key
