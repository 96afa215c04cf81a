"""Settings of the certificate subsystem (pure, no I/O).

One frozen group, built by the composition root from the agent settings; every field says its
unit, default and why (house style 6).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ravend.certs.keys import KeyType

DEFAULT_STATE_DIR = Path("/var/lib/raven")


@dataclass(frozen=True)
class CertSettings:
    """How ravend obtains, stores and renews its certificates."""

    state_dir: Path = DEFAULT_STATE_DIR
    """Root of ravend's on-disk state; certificates live in `<state_dir>/certs` (0700, files
    0600). Default /var/lib/raven, Raven's directory, so the DaemonSet's hostPath is unchanged."""
    key_type: KeyType = KeyType.EC_P256
    """Private key algorithm for new keys. EC P-256: what kubelets use, small and fast handshakes,
    and accepted by every Kubernetes signer."""
    lifetime_seconds: int = 30 * 24 * 3600
    """Requested certificate lifetime (CSR `spec.expirationSeconds`), 30 days. The signer may
    cap it (kube-controller-manager --cluster-signing-duration); rotation works from the real
    notBefore/notAfter, not from this value. Short on purpose: renewal is automatic, and a leaked
    key stops working soon. Kubernetes refuses values below 600."""
    renew_fraction: float = 0.8
    """Renew once this fraction of the lifetime has passed (0.8: at 24 of 30 days), leaving a
    fifth of the lifetime to ride out an API server or approver outage."""
    wait_timeout: float = 300.0
    """Seconds to wait for a submitted CSR to be approved and signed before giving up on it and
    submitting a fresh one after `retry_delay`."""
    retry_delay: float = 10.0
    """Seconds before retrying after a denied, failed or timed-out CSR (doubles up to
    `max_retry_delay`), so a broken approver is not flooded with requests."""
    max_retry_delay: float = 300.0
    """Upper bound of the retry back-off, seconds."""
    cluster_domain: str = "cluster.local"
    """DNS suffix of the cluster, used for the internal Service's fully qualified SAN."""

    @property
    def cert_dir(self) -> Path:
        """Directory holding `<name>.key` and `<name>.crt`."""
        return self.state_dir / "certs"
