"""Node heartbeat: the agent side of fast failover.

Every node that is a candidate endpoint of some Gateway renews Lease
kube-system/ravend-node-<node>: fast while it is an active endpoint, slowly while only a standby,
not at all otherwise. The pure part (`plan_heartbeat`, `heartbeat_lease`) decides the rhythm from
the ClusterView; `Heartbeat.run()` is the thin loop that writes through the kube client.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from ravend.election.settings import MANAGED_BY_LABEL, MANAGED_BY_VALUE, ElectionSettings
from ravend.model import ClusterView, Lease, ObjectMeta


class Mode(StrEnum):
    NONE = "none"
    """Not a candidate anywhere (or raven-cfg off): no heartbeat writes."""
    STANDBY = "standby"
    ACTIVE = "active"


@dataclass(frozen=True)
class HeartbeatPlan:
    mode: Mode
    period_s: float
    """Seconds between renewals (inf when mode is NONE)."""
    duration_s: int
    """leaseDurationSeconds to write."""


def plan_heartbeat(view: ClusterView, me: str, settings: ElectionSettings) -> HeartbeatPlan:
    """How this node should heartbeat, given the Gateways that name it.

    Types are not filtered by raven-cfg: turning a type on must find heartbeats already flowing,
    and a candidate of a disabled type costs one slow write per standby period.
    """
    candidate = active = False
    for gw in view.gateways.values():
        if any(e.node_name == me for e in gw.status.active_endpoints):
            active = True
            break
        if any(e.node_name == me for e in gw.spec.endpoints):
            candidate = True
    if active:
        return HeartbeatPlan(
            Mode.ACTIVE, settings.active_renew_period_s, settings.active_lease_duration_s
        )
    if candidate:
        return HeartbeatPlan(
            Mode.STANDBY, settings.standby_renew_period_s, settings.standby_lease_duration_s
        )
    return HeartbeatPlan(Mode.NONE, float("inf"), settings.standby_lease_duration_s)


def heartbeat_lease(
    me: str, duration_s: int, wall: str, settings: ElectionSettings, base: Lease | None
) -> Lease:
    """The heartbeat Lease to write: `base` (as last read, keeps resourceVersion) or a new one."""
    if base is None:
        meta = ObjectMeta(
            name=settings.heartbeat_lease(me),
            namespace=settings.namespace,
            labels={MANAGED_BY_LABEL: MANAGED_BY_VALUE},
        )
        return Lease(meta, me, duration_s, acquire_time=wall, renew_time=wall)
    return Lease(
        base.meta,
        holder=me,
        lease_duration_seconds=duration_s,
        acquire_time=base.acquire_time or wall,
        renew_time=wall,
        lease_transitions=base.lease_transitions,
    )
