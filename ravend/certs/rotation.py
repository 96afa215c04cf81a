"""When to replace a certificate (pure, no I/O).

Renewal happens well before expiry (default at 80% of the lifetime) so an approver or API server
outage has a fifth of the lifetime to heal; immediately when the certificate is expired, does not
match the key, or no longer carries the SANs the node needs (a new public IP, a new ClusterIP).
"""

from __future__ import annotations

from datetime import datetime

from cryptography import x509

from ravend.certs.csr import Sans, cert_sans
from ravend.certs.keys import PrivateKey, key_matches_cert

DEFAULT_RENEW_FRACTION = 0.8
MIN_CHECK_SECONDS = 1.0
"""Floor of `next_check`, so a certificate that is due now does not spin a loop."""


def renew_at(cert: x509.Certificate, renew_fraction: float = DEFAULT_RENEW_FRACTION) -> datetime:
    """The instant at which `renew_fraction` of the certificate's lifetime has passed."""
    start, end = cert.not_valid_before_utc, cert.not_valid_after_utc
    return start + (end - start) * renew_fraction


def needs_renewal(
    cert: x509.Certificate,
    now: datetime,
    wanted_sans: Sans | None = None,
    key: PrivateKey | None = None,
    renew_fraction: float = DEFAULT_RENEW_FRACTION,
) -> str | None:
    """Why the certificate must be replaced now, or None if it is good for the time being.

    `wanted_sans` None means "SANs do not matter" (client certificates); `key` None skips the
    key check (the caller already knows they match).
    """
    if now >= cert.not_valid_after_utc:
        return f"expired at {cert.not_valid_after_utc.isoformat()}"
    if now < cert.not_valid_before_utc:
        # Our clock is behind the signer's: a new certificate would have the same notBefore
        # problem, so renewing cannot help; the wait until it becomes valid is short.
        return None
    if key is not None and not key_matches_cert(key, cert):
        return "certificate does not match the private key"
    if wanted_sans is not None:
        have = cert_sans(cert)
        if have != wanted_sans:
            return _san_change(have, wanted_sans)
    due = renew_at(cert, renew_fraction)
    if now >= due:
        return f"{renew_fraction:.0%} of lifetime passed at {due.isoformat()}"
    return None


def _san_change(have: Sans, want: Sans) -> str:
    added = sorted(want.dns - have.dns) + sorted(str(ip) for ip in want.ips - have.ips)
    removed = sorted(have.dns - want.dns) + sorted(str(ip) for ip in have.ips - want.ips)
    return f"SANs changed (add {added}, remove {removed})"


def next_check(
    cert: x509.Certificate, now: datetime, renew_fraction: float = DEFAULT_RENEW_FRACTION
) -> float:
    """Seconds from `now` until the certificate becomes due for renewal (at least 1 s)."""
    return max(MIN_CHECK_SECONDS, (renew_at(cert, renew_fraction) - now).total_seconds())
