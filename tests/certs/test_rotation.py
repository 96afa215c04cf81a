"""Renewal decisions: when a certificate must be replaced, and when to look again."""

from __future__ import annotations

import datetime as dt

import pytest
from cryptography import x509

from ravend.certs.csr import CertKind, Sans, expected_request
from ravend.certs.keys import cert_from_pem, generate_key
from ravend.certs.localca import LocalCa
from ravend.certs.rotation import needs_renewal, next_check, renew_at

START = dt.datetime.now(dt.UTC).replace(microsecond=0)  # within the test CA's validity
LIFE = dt.timedelta(days=10)
SANS = Sans.of(["cloud-1"], ["10.0.0.1"])


@pytest.fixture(scope="module")
def cert(ca: LocalCa) -> x509.Certificate:
    req = expected_request(CertKind.SERVING, "cloud-1", SANS)
    return cert_from_pem(ca.issue(req, generate_key(), LIFE, not_before=START))


@pytest.mark.parametrize(
    ("elapsed", "due"),
    [
        (dt.timedelta(0), False),
        (dt.timedelta(days=7, hours=23), False),
        (dt.timedelta(days=8), True),  # 80 % of 10 days
        (dt.timedelta(days=9, hours=23), True),
    ],
)
def test_renews_at_80_percent(cert: x509.Certificate, elapsed: dt.timedelta, due: bool) -> None:
    reason = needs_renewal(cert, START + elapsed, SANS)
    assert (reason is not None) == due
    if due:
        assert reason is not None and "80% of lifetime" in reason


def test_expired(cert: x509.Certificate) -> None:
    reason = needs_renewal(cert, START + LIFE + dt.timedelta(seconds=1), SANS)
    assert reason is not None and reason.startswith("expired")


def test_san_change(cert: x509.Certificate) -> None:
    reason = needs_renewal(cert, START, SANS | Sans.of(ips=["203.0.113.9"]))
    assert reason is not None and "203.0.113.9" in reason and "add" in reason
    removed = needs_renewal(cert, START, Sans.of(["cloud-1"]))
    assert removed is not None and "remove ['10.0.0.1']" in removed
    # Same SANs given as strings compare equal to the certificate's parsed ones.
    assert needs_renewal(cert, START, Sans.of(["cloud-1"], ["10.0.0.1"])) is None
    # Client certificates: SANs do not matter.
    assert needs_renewal(cert, START, None) is None


def test_key_mismatch(cert: x509.Certificate) -> None:
    reason = needs_renewal(cert, START, SANS, key=generate_key())
    assert reason is not None and "does not match" in reason


def test_custom_fraction(cert: x509.Certificate) -> None:
    assert needs_renewal(cert, START + dt.timedelta(days=5), SANS, renew_fraction=0.5)
    assert needs_renewal(cert, START + dt.timedelta(days=4), SANS, renew_fraction=0.5) is None


def test_next_check(cert: x509.Certificate) -> None:
    assert renew_at(cert) == START + dt.timedelta(days=8)
    assert next_check(cert, START) == dt.timedelta(days=8).total_seconds()
    assert next_check(cert, START + dt.timedelta(days=7)) == 86400
    # Overdue: a floor, not zero or negative, so a loop cannot spin.
    assert next_check(cert, START + dt.timedelta(days=9)) == 1.0
