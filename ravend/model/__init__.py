"""Plain, immutable values shared by every plane (no I/O, no third-party imports).

This is the bottom layer of ravend: `kube/` converts API objects to and from these types at
the boundary, and every planner (election, L3, L7, controllers) decides purely over them. Keeping
them free of kubernetes_asyncio means the client library can be replaced and most tests need
neither an API server nor root.

Mappings inside frozen dataclasses are never mutated after construction; the classes are frozen
for equality and safety, not for hashing (instances holding a dict are unhashable on purpose).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType
from typing import TypeVar

T_co = TypeVar("T_co", covariant=True)

GATEWAY_LABEL = "raven.openyurt.io/gateway"
"""Node label naming the Gateway a node belongs to (Raven's membership label)."""

EDGE_WORKER_LABEL = "openyurt.io/is-edge-worker"
"""Node label OpenYurt sets to "true" on edge nodes."""

RAVEN_NAMESPACE = "kube-system"
RAVEN_CFG_NAME = "raven-cfg"
KEY_L3 = "enable-l3-tunnel"
KEY_L7 = "enable-l7-proxy"
CONFIG_PUBLIC_KEY = "publicKey"
"""`spec.endpoints[].config` key carrying the node's WireGuard public key (base64)."""

DEFAULT_PROXY_PORT = 10262
DEFAULT_TUNNEL_PORT = 4500

EMPTY_MAP: Mapping[str, str] = MappingProxyType({})


def _empty_map() -> Mapping[str, T_co]:
    """Default for mapping fields (dataclasses refuse unhashable plain defaults)."""
    return MappingProxyType({})


class EndpointType(StrEnum):
    """Gateway endpoint role: L7 reverse-tunnel server or L3 WireGuard tunnel."""

    PROXY = "proxy"
    TUNNEL = "tunnel"


class ExposeType(StrEnum):
    """How a Gateway is reachable from other pools; non-empty means a hub (cloud) gateway."""

    NONE = ""
    PUBLIC_IP = "PublicIP"
    LOAD_BALANCER = "LoadBalancer"


@dataclass(frozen=True)
class Endpoint:
    """One candidate (spec) or elected (status) endpoint of a Gateway."""

    node_name: str
    type: EndpointType
    port: int
    under_nat: bool = False
    public_ip: str = ""
    public_port: int = 0
    nat_type: str = ""
    config: Mapping[str, str] = field(default_factory=_empty_map)

    @property
    def key(self) -> tuple[str, EndpointType]:
        """Identity of an endpoint within one Gateway: a node appears once per type."""
        return (self.node_name, self.type)


@dataclass(frozen=True)
class ProxyConfig:
    """`spec.proxyConfig`: how many L7 endpoints to activate and which kubelet ports to publish."""

    replicas: int = 0
    proxy_http_port: str = ""
    """Comma list as stored by Raven, e.g. "10255,9445" (plain ports on the internal Service)."""
    proxy_https_port: str = ""
    """Comma list as stored by Raven, e.g. "10250,9100" (TLS ports on the internal Service)."""

    @property
    def http_ports(self) -> tuple[int, ...]:
        return parse_port_list(self.proxy_http_port)

    @property
    def https_ports(self) -> tuple[int, ...]:
        return parse_port_list(self.proxy_https_port)


@dataclass(frozen=True)
class TunnelConfig:
    """`spec.tunnelConfig`: how many L3 tunnel endpoints to activate."""

    replicas: int = 0


@dataclass(frozen=True)
class GatewaySpec:
    node_selector: Mapping[str, object] = field(default_factory=_empty_map)
    """The LabelSelector as JSON; membership is really the GATEWAY_LABEL label."""
    proxy_config: ProxyConfig = ProxyConfig()
    tunnel_config: TunnelConfig = TunnelConfig()
    endpoints: tuple[Endpoint, ...] = ()
    expose_type: ExposeType = ExposeType.NONE


@dataclass(frozen=True)
class NodeInfo:
    """`status.nodes[]`: a labelled node of the pool."""

    node_name: str
    private_ip: str
    subnets: tuple[str, ...] = ()


@dataclass(frozen=True)
class GatewayStatus:
    nodes: tuple[NodeInfo, ...] = ()
    active_endpoints: tuple[Endpoint, ...] = ()


@dataclass(frozen=True)
class ObjectMeta:
    """The parts of metadata ravend reads or preserves when writing back."""

    name: str
    namespace: str = ""
    uid: str = ""
    resource_version: str = ""
    generation: int = 0
    labels: Mapping[str, str] = field(default_factory=_empty_map)
    annotations: Mapping[str, str] = field(default_factory=_empty_map)


@dataclass(frozen=True)
class Gateway:
    """A Gateway in its storage version (v1beta1); v1alpha1 is converted at the boundary."""

    meta: ObjectMeta
    spec: GatewaySpec = GatewaySpec()
    status: GatewayStatus = GatewayStatus()

    @property
    def name(self) -> str:
        return self.meta.name

    @property
    def is_exposed(self) -> bool:
        """A hub gateway: reachable by the others (exposeType set, never under NAT)."""
        return self.spec.expose_type != ExposeType.NONE

    def active(self, kind: EndpointType) -> tuple[Endpoint, ...]:
        return tuple(e for e in self.status.active_endpoints if e.type == kind)


@dataclass(frozen=True)
class Node:
    """The parts of a core/v1 Node ravend uses."""

    meta: ObjectMeta
    internal_ips: tuple[str, ...] = ()
    external_ips: tuple[str, ...] = ()
    pod_cidrs: tuple[str, ...] = ()
    ready: bool = False

    @property
    def name(self) -> str:
        return self.meta.name

    @property
    def gateway(self) -> str | None:
        """Name of the Gateway this node belongs to (by label), if any."""
        return self.meta.labels.get(GATEWAY_LABEL) or None

    @property
    def is_edge_worker(self) -> bool:
        return self.meta.labels.get(EDGE_WORKER_LABEL) == "true"

    @property
    def private_ip(self) -> str:
        """First InternalIP (Raven's privateIP), falling back to the first ExternalIP."""
        if self.internal_ips:
            return self.internal_ips[0]
        return self.external_ips[0] if self.external_ips else ""


@dataclass(frozen=True)
class RavenConfig:
    """Toggles from ConfigMap kube-system/raven-cfg; an absent ConfigMap means both off."""

    l3_enabled: bool = False
    l7_enabled: bool = False
    present: bool = False


@dataclass(frozen=True)
class Lease:
    """coordination.k8s.io/v1 Lease, as used for controller leadership and gateway health."""

    meta: ObjectMeta
    holder: str = ""
    lease_duration_seconds: int = 0
    acquire_time: str = ""
    """RFC 3339 with microseconds (MicroTime), wall clock, only for the API."""
    renew_time: str = ""
    lease_transitions: int = 0


@dataclass(frozen=True)
class ClusterView:
    """One immutable snapshot of the cluster state the planes plan from.

    Built by the informers; a new instance replaces the old one on every change, so a planner
    always sees a consistent set. `synced` is true once every informer has listed once.
    """

    gateways: Mapping[str, Gateway] = field(default_factory=_empty_map)
    nodes: Mapping[str, Node] = field(default_factory=_empty_map)
    raven_cfg: RavenConfig = RavenConfig()
    leases: Mapping[str, Lease] = field(default_factory=_empty_map)
    """Leases in kube-system labelled as ravend's (health and leadership), by name."""
    invalid_gateways: Mapping[str, str] = field(default_factory=_empty_map)
    """Gateways that failed to parse: name -> reason (planners skip them, controllers report)."""
    synced: bool = False
    revision: int = 0
    """Monotonic counter of snapshots, for logging and change detection."""

    def gateway_of(self, node_name: str) -> Gateway | None:
        node = self.nodes.get(node_name)
        if node is None or node.gateway is None:
            return None
        return self.gateways.get(node.gateway)


def parse_port_list(text: str) -> tuple[int, ...]:
    """Parse Raven's comma-separated port list ("10250, 9100") into sorted unique ints.

    Entries that are not integers in 1..65535 are skipped; validation (webhook) reports them.
    """
    ports: set[int] = set()
    for raw in text.split(","):
        part = raw.strip()
        if part.isdigit() and 0 < int(part) < 65536:
            ports.add(int(part))
    return tuple(sorted(ports))
