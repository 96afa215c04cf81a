"""Settings of the election subsystem: controller leadership, node heartbeats, gateway pickup.

Pure values, no I/O. The timings are chosen together; docs/failover.md explains how they bound
the failover time and why the inequalities checked in `__post_init__` keep split-brain away.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from ravend.model import EDGE_WORKER_LABEL, RAVEN_NAMESPACE

MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
"""Label ravend puts on every Lease it owns, so the informer watches only those."""

MANAGED_BY_VALUE = "ravend"


@dataclass(frozen=True)
class ElectionSettings:
    """Everything the election loops need to know; built once at start-up, never mutated."""

    namespace: str = RAVEN_NAMESPACE
    """Namespace of every Lease ravend writes (controller and node heartbeats)."""

    controller_lease: str = "ravend-controller"
    """Name of the Lease whose holder runs the cluster controllers, gateway pickup included."""

    controller_lease_duration_s: float = 6.0
    """Seconds a follower waits, counted from when *it* saw the last change of the controller
    Lease, before it may take over. Stored as whole seconds in the Lease (rounded up)."""

    controller_renew_deadline_s: float = 4.0
    """Seconds after the send time of its last successful renewal at which a leader gives up
    leading. Must be below the lease duration so the old leader stops before a peer can start."""

    controller_retry_period_s: float = 1.0
    """Seconds between renewals (leader) and between acquisition attempts (followers)."""

    view_echo_timeout_s: float = 4.0
    """Seconds a leader waits for one of its own controller-Lease renewals to come back through
    its Lease watch. Longer means its view is stale: it cannot prove any heartbeat expired, so it
    could never fail anything over, yet its writes still work and would keep it leading for
    ever. It steps down instead (releasing the Lease) and competes again once its watch shows
    progress, so a peer whose view is current takes over (docs/failover.md)."""

    release_duration_s: int = 1
    """Lease duration written on graceful release: a peer takes over within about a second."""

    eligible_exclude_labels: Mapping[str, str] = field(
        default_factory=lambda: MappingProxyType({EDGE_WORKER_LABEL: "true"})
    )
    """Nodes carrying any of these label=value pairs never compete for controller leadership
    (default: OpenYurt edge workers, whose apiserver link is the least reliable)."""

    heartbeat_prefix: str = "ravend-node-"
    """Node heartbeat Lease name = prefix + node name; the holder is the node name."""

    active_renew_period_s: float = 0.7
    """Heartbeat period of a node that is an active endpoint of some Gateway. With the 2 s
    duration below, one lost or late renewal is tolerated without a failover (~1.4 writes/s)."""

    active_lease_duration_s: int = 2
    """Heartbeat lease duration while active: the bound on failure detection."""

    standby_renew_period_s: float = 3.0
    """Heartbeat period of a node that is only a candidate (spec.endpoints), not active."""

    standby_lease_duration_s: int = 10
    """Heartbeat duration of a standby: a dead standby stops being picked within this time."""

    restart_grace_s: int = 10
    """Duration written into the heartbeat on graceful shutdown, so a quick restart of ravend on
    an active node is not a failover. A crash writes nothing and fails over after the active
    duration; the price is that a deliberate stop of an active node takes this long."""

    require_heartbeat: bool = False
    """If true, a candidate without any heartbeat Lease is unhealthy. Default false: such a node
    is judged by NodeReady alone (Raven's behaviour), e.g. while its agent starts for the first
    time or when the cluster still runs Raven's agents."""

    def __post_init__(self) -> None:
        if not 0 < self.controller_retry_period_s < self.controller_renew_deadline_s:
            raise ValueError("need 0 < controller_retry_period_s < controller_renew_deadline_s")
        if self.controller_renew_deadline_s >= self.controller_lease_duration_s:
            raise ValueError("controller_renew_deadline_s must be < controller_lease_duration_s")
        if not 0 < self.active_renew_period_s < self.active_lease_duration_s:
            raise ValueError("need 0 < active_renew_period_s < active_lease_duration_s")
        if not 0 < self.standby_renew_period_s < self.standby_lease_duration_s:
            raise ValueError("need 0 < standby_renew_period_s < standby_lease_duration_s")
        if self.view_echo_timeout_s <= self.controller_retry_period_s:
            raise ValueError("view_echo_timeout_s must be > controller_retry_period_s")
        if self.release_duration_s < 1 or self.restart_grace_s < 1:
            raise ValueError("durations are whole seconds >= 1")

    def heartbeat_lease(self, node_name: str) -> str:
        """Name of the heartbeat Lease of `node_name`."""
        return self.heartbeat_prefix + node_name

    def node_of_heartbeat(self, lease_name: str) -> str | None:
        """Inverse of `heartbeat_lease`; None for Leases that are not heartbeats."""
        if lease_name.startswith(self.heartbeat_prefix):
            return lease_name[len(self.heartbeat_prefix) :] or None
        return None

    def is_eligible(self, labels: Mapping[str, str]) -> bool:
        """Whether a node with these labels may compete for controller leadership."""
        return not any(labels.get(k) == v for k, v in self.eligible_exclude_labels.items())
