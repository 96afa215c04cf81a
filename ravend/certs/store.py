"""On-disk store of keys and certificates: `<state>/certs/<name>.key|.crt` (does file I/O).

The only files ravend writes (design.md: keys and certificates, nothing else). The directory is
0700 and files 0600 because the keys are unencrypted. Every write goes to a temporary file in the
same directory, is fsynced and renamed over the target, so a crash leaves either the old or the
new file, never a torn one. Key and certificate are two files, so a crash between the two renames
can pair a new key with the old certificate: `load` checks that they match and reports the pair
as unusable, which makes the manager request a fresh certificate.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from cryptography import x509

from ravend.certs.keys import (
    PrivateKey,
    cert_from_pem,
    key_from_pem,
    key_matches_cert,
)

log = logging.getLogger(__name__)

_TMP_SUFFIX = ".tmp"
_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")


@dataclass(frozen=True)
class StoredCert:
    """A key and its certificate chain as PEM, plus the parsed leaf for decisions."""

    name: str
    key_pem: bytes
    cert_pem: bytes
    key: PrivateKey = field(compare=False)
    """Parsed `key_pem` (key objects do not compare by value; `key_pem` does)."""
    cert: x509.Certificate


class StoreError(Exception):
    """The stored pair for a name exists but cannot be used (reason in the message)."""


class CertStore:
    """Keys and certificates by name under one directory."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def ensure_dir(self) -> None:
        """Create the directory (0700), and tighten it if it exists with looser permissions."""
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self.directory, 0o700)

    def clean_stale(self) -> None:
        """Remove temporary files a crash left behind (call once at startup)."""
        for stale in self.directory.glob(f".*{_TMP_SUFFIX}"):
            # Left by a crash mid-write; the real file is intact (old or new).
            stale.unlink(missing_ok=True)

    def paths(self, name: str) -> tuple[Path, Path]:
        if not _NAME.match(name):
            # Names become file names; refuse anything that could escape the directory.
            raise ValueError(f"invalid certificate name {name!r}")
        return self.directory / f"{name}.key", self.directory / f"{name}.crt"

    def save(self, name: str, key_pem: bytes, cert_pem: bytes) -> None:
        """Atomically replace the key, then the certificate, of `name`."""
        key_path, cert_path = self.paths(name)
        self.ensure_dir()
        _atomic_write(key_path, key_pem)
        _atomic_write(cert_path, cert_pem)
        _fsync_dir(self.directory)

    def load(self, name: str, now: datetime) -> StoredCert | None:
        """The stored pair, None if absent; StoreError if present but unusable.

        Unusable: unparseable, key and certificate do not match, or expired at `now`. Renewal
        before expiry is rotation.py's decision, not the store's.
        """
        key_path, cert_path = self.paths(name)
        try:
            key_pem = key_path.read_bytes()
            cert_pem = cert_path.read_bytes()
        except FileNotFoundError:
            return None
        try:
            key = key_from_pem(key_pem)
            cert = cert_from_pem(cert_pem)
        except ValueError as e:
            raise StoreError(f"{name}: unreadable PEM: {e}") from e
        if not key_matches_cert(key, cert):
            raise StoreError(f"{name}: certificate does not match the key")
        if now >= cert.not_valid_after_utc:
            raise StoreError(f"{name}: certificate expired at {cert.not_valid_after_utc}")
        return StoredCert(name, key_pem, cert_pem, key, cert)

    def remove(self, name: str) -> None:
        for path in self.paths(name):
            path.unlink(missing_ok=True)


def _atomic_write(path: Path, data: bytes) -> None:
    # mkstemp: unique name, O_EXCL and mode 0600 from the start, so the key is never readable
    # by others, not even briefly, and a leftover from a crash never blocks the next write.
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=_TMP_SUFFIX)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _fsync_dir(directory: Path) -> None:
    # Makes the renames durable: without it a power cut can lose them even after fsync(file).
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
