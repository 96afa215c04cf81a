"""On-disk store: permissions, atomic replacement, validation on load."""

from __future__ import annotations

import datetime as dt
import os
import stat
from pathlib import Path

import pytest

from ravend.certs.csr import CertKind, expected_request
from ravend.certs.localca import LocalCa
from ravend.certs.store import CertStore, StoreError

NOW = dt.datetime.now(dt.UTC)
REQ = expected_request(CertKind.TUNNEL_CLIENT, "edge-1")


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_save_sets_private_permissions(tmp_path: Path, ca: LocalCa) -> None:
    os.umask(0o022)  # a typical umask must not leak into the key's mode
    store = CertStore(tmp_path / "state" / "certs")
    key, cert = ca.issue_pair(REQ)
    store.save("tunnel-client", key, cert)
    assert mode(store.directory) == 0o700
    for path in store.paths("tunnel-client"):
        assert mode(path) == 0o600
    loaded = store.load("tunnel-client", NOW)
    assert loaded is not None and loaded.key_pem == key and loaded.cert_pem == cert


def test_existing_loose_directory_is_tightened(tmp_path: Path, ca: LocalCa) -> None:
    d = tmp_path / "certs"
    d.mkdir(mode=0o755)
    os.chmod(d, 0o755)
    CertStore(d).save("x", *ca.issue_pair(REQ))
    assert mode(d) == 0o700


def test_absent_is_none(tmp_path: Path) -> None:
    assert CertStore(tmp_path).load("nothing", NOW) is None


def test_replace_is_atomic_and_leaves_no_temp_files(tmp_path: Path, ca: LocalCa) -> None:
    store = CertStore(tmp_path)
    store.save("a", *ca.issue_pair(REQ))
    key_path, cert_path = store.paths("a")
    old_inode = key_path.stat().st_ino
    key2, cert2 = ca.issue_pair(REQ)
    store.save("a", key2, cert2)
    # Replaced by rename (new inode), never rewritten in place (a reader never sees a torn file).
    assert key_path.stat().st_ino != old_inode
    assert key_path.read_bytes() == key2 and cert_path.read_bytes() == cert2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.crt", "a.key"]


def test_failed_write_keeps_old_file(
    tmp_path: Path, ca: LocalCa, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = CertStore(tmp_path)
    key, cert = ca.issue_pair(REQ)
    store.save("a", key, cert)

    def boom(fd: int) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", boom)
    with pytest.raises(OSError, match="disk full"):
        store.save("a", *ca.issue_pair(REQ))
    monkeypatch.undo()
    loaded = store.load("a", NOW)
    assert loaded is not None and loaded.key_pem == key
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.crt", "a.key"]


def test_stale_temp_files_cleaned(tmp_path: Path) -> None:
    (tmp_path / ".a.key.xyz.tmp").write_bytes(b"half a key")
    store = CertStore(tmp_path)
    store.clean_stale()
    assert list(tmp_path.iterdir()) == []


def test_key_and_cert_mismatch_is_unusable(tmp_path: Path, ca: LocalCa) -> None:
    """A crash between the key and the certificate rename pairs a new key with an old cert."""
    store = CertStore(tmp_path)
    key1, cert1 = ca.issue_pair(REQ)
    key2, _ = ca.issue_pair(REQ)
    store.save("a", key2, cert1)
    with pytest.raises(StoreError, match="does not match"):
        store.load("a", NOW)
    store.save("a", key1, cert1)
    assert store.load("a", NOW) is not None


def test_expired_is_unusable(tmp_path: Path, ca: LocalCa) -> None:
    store = CertStore(tmp_path)
    store.save(
        "a",
        *ca.issue_pair(REQ, lifetime=dt.timedelta(hours=1), not_before=NOW - dt.timedelta(days=1)),
    )
    with pytest.raises(StoreError, match="expired"):
        store.load("a", NOW)


def test_garbage_is_unusable(tmp_path: Path, ca: LocalCa) -> None:
    store = CertStore(tmp_path)
    key, _ = ca.issue_pair(REQ)
    store.save("a", key, b"not a certificate")
    with pytest.raises(StoreError, match="unreadable"):
        store.load("a", NOW)


@pytest.mark.parametrize("name", ["../etc/passwd", "a/b", "", ".hidden", "UPPER"])
def test_names_cannot_escape(tmp_path: Path, name: str) -> None:
    with pytest.raises(ValueError, match="invalid certificate name"):
        CertStore(tmp_path).paths(name)
