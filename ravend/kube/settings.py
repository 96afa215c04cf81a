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
    then and we resume from the last resourceVersion, which also bounds how long a silently
    dead connection (no RST through a NAT) can stall us: the client read timeout is this plus
    `watch_grace_s`."""

    watch_grace_s: float = 15.0
    """Extra seconds the client waits past `watch_timeout_s` before treating a watch as dead."""

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
