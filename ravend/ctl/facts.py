"""What `ravectl diagnose` collects about a node, as plain values (pure, no I/O).

Collectors (`collect`) fill these from the node, its agent and the API server; the checks
(`checks`) decide over them. A field left at None means "could not be collected", which a check
reports as skipped or a warning, never as a pass.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType

VXLAN_LINK = "raven0"
WG_LINK = "raven-wg0"
MEMBER_TABLE = 9027
TUNNEL_TABLE = 9028
FWMARK = "0x40"


class Status(StrEnum):
    OK = "ok"
    WARN = "warn"
    FAIL = "fail"
    SKIP = "skip"


@dataclass(frozen=True)
class CheckResult:
    """One line of the diagnose report; `fix` says what to do when it is not ok."""

    check: str
    status: Status
    detail: str
    fix: str = ""
    node: str = ""


@dataclass(frozen=True)
class LinkFact:
    name: str
    kind: str
    mtu: int
    up: bool


@dataclass(frozen=True)
class WgPeerFact:
    public_key: str
    endpoint: str
    latest_handshake: int
    """Unix seconds of the last handshake; 0 = never (as `wg show dump` prints it)."""
    allowed_ips: tuple[str, ...] | None = None
    """AllowedIPs; () for a warm-standby peer (no routes until elected), None if unknown."""


@dataclass(frozen=True)
class ProbeFact:
    """A ping through the data path to a remote pod subnet's gateway address."""

    gateway: str
    subnet: str
    target: str
    ok: bool
    rtt_ms: float | None = None


@dataclass(frozen=True)
class KubeletFact:
    """One kubelet reached (or not) through the L7 proxy."""

    node: str
    ok: bool
    detail: str = ""


@dataclass(frozen=True)
class CertFact:
    name: str
    not_after: dt.datetime
    """Timezone-aware (UTC)."""


def _no_map() -> Mapping[str, str | None]:
    return MappingProxyType({})


@dataclass(frozen=True)
class NodeFacts:
    """Everything known about one node when the checks run; see the module docstring."""

    node: str
    role: str | None = None
    """"gateway", "member" or None (L3 off or not in a Gateway) per the cluster view."""
    remote_subnets: tuple[str, ...] = ()
    """Pod subnets of the other Gateways' nodes: what the tunnels must carry."""
    has_members: bool = False
    """The node's pool has other nodes (so the gateway needs raven0 for them)."""
    standby: bool = False
    """A tunnel candidate of its Gateway that is not active: it keeps a warm raven-wg0 with the
    gateway's peers and no routes (ravend/l3/plan.py)."""
    wg_module: bool | None = None
    wg_go: bool | None = None
    vxlan: bool | None = None
    policy_routing: bool | None = None
    sysctls: Mapping[str, str | None] = field(default_factory=_no_map)
    links: tuple[LinkFact, ...] | None = None
    underlay_mtu: int | None = None
    rules: tuple[str, ...] | None = None
    routes: Mapping[int, tuple[str, ...]] | None = None
    planned: Mapping[str, tuple[str, ...]] | None = None
    """Agent's l3.planned (kind -> canonical lines), when it publishes it."""
    present: Mapping[str, tuple[str, ...]] | None = None
    nft: str | None = None
    """`nft list table inet ravend` output, "" when the table is absent."""
    wg_peers: tuple[WgPeerFact, ...] | None = None
    """`wg show raven-wg0 dump` peers; None when the device does not answer."""
    probes: tuple[ProbeFact, ...] | None = None
    kubelets: tuple[KubeletFact, ...] | None = None
    certs: tuple[CertFact, ...] | None = None
    now: dt.datetime | None = None

    def link(self, name: str) -> LinkFact | None:
        return next((x for x in self.links or () if x.name == name), None)


@dataclass(frozen=True)
class ClusterFacts:
    """Facts about the control plane, seen from where ravectl runs."""

    api_ok: bool
    api_detail: str = ""
    clock_skew_s: float | None = None
    """Local clock minus the API server's Date header, seconds (None: not measured)."""


def result(f: NodeFacts, check: str, status: Status, detail: str, fix: str = "") -> CheckResult:
    """A node check's result; the fix is dropped when the check passed."""
    return CheckResult(check, status, detail, fix if status != Status.OK else "", f.node)
