"""Settings of the Kubernetes client and informers (pure values, no I/O)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ravend.model import RAVEN_CFG_NAME, RAVEN_NAMESPACE

DEFAULT_SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")


@dataclass(frozen=True)
class KubeSettings:
    """How ravend talks to the API server; built once at start-up."""

    kubeconfig: Path | None = None
    """kubeconfig file; None = in-cluster service account, then $KUBECONFIG / ~/.kube/config."""

    request_timeout_s: float = 15.0
    """Total timeout of one non-watch request (seconds). Short enough that a hung API server is
    noticed well within a Lease duration, long enough for a big list over a slow edge link."""

    connect_timeout_s: float = 5.0
    """TCP+TLS connect timeout (seconds) for every request, watches included."""

    watch_timeout_s: int = 300
    """`timeoutSeconds` asked of the server per watch (seconds). The server ends the watch
    then and we resume from the last resourceVersion. The client read timeout is this (or
    `watch_silence_s` if shorter, when bookmarks are asked for) plus `watch_grace_s`."""

    watch_grace_s: float = 15.0
    """Extra seconds the client read timeout of a watch adds to `watch_timeout_s` (or to
    `watch_silence_s`) before the watch fails as dead."""

    watch_silence_s: float = 75.0
    """Watchdog (seconds): a watch that delivers neither an event nor a bookmark for this long
    is abandoned and re-opened from the last resourceVersion, with a warning. Watches ask for
    bookmarks, which kube-apiserver sends about every minute (the embedded one every 5 s), so
    a healthy quiet watch is never this silent; a stream a middlebox stopped forwarding, or a
    server-side watch that got stuck, is. Catches it well before `watch_timeout_s`. 0 = off
    (only for servers that send no bookmarks)."""

    watch_keepalive_s: float = 30.0
    """Idle seconds before the kernel sends the first TCP keepalive probe on a watch
    connection (then every third of that, 3 unanswered probes = dead). A peer that vanished
    without a RST (NAT state lost) then fails the read instead of waiting on the watchdog or
    the read timeout. 0 = the OS default (no keepalive)."""

    resync_period_s: float = 600.0
    """Seconds between full re-lists of each informer (catches anything a watch missed)."""

    backoff_initial_s: float = 0.5
    """First retry delay (seconds) after a failed list/watch; doubles per failure."""

    backoff_max_s: float = 30.0
    """Cap of the retry delay (seconds); full jitter is applied below it."""

    coalesce_s: float = 0.05
    """Seconds to wait after a change before publishing a new ClusterView, so a burst of
    events (a relist, a rollout) becomes one snapshot and one replan."""

    namespace: str = RAVEN_NAMESPACE
    """Namespace of raven-cfg and of ravend's Leases."""

    raven_cfg_name: str = RAVEN_CFG_NAME
    """Name of Raven's toggle ConfigMap."""

    lease_selector: str = "app.kubernetes.io/managed-by=ravend"
    """Label selector of the Leases the informers watch (controller and node heartbeats)."""

    service_account_dir: Path = DEFAULT_SERVICE_ACCOUNT_DIR
    """Where the in-cluster token and ca.crt are mounted (overridable for tests)."""
