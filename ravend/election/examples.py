"""Builders of model values for election tests and benchmarks (pure, no I/O).

`manual_view()` is the topology of Raven's user manual (raven-reference section 8); the small
constructors keep tables of test cases short.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from types import MappingProxyType

from ravend.model import (
    EDGE_WORKER_LABEL,
    GATEWAY_LABEL,
    ClusterView,
    Endpoint,
    EndpointType,
    ExposeType,
    Gateway,
    GatewaySpec,
    GatewayStatus,
    Node,
    ObjectMeta,
    ProxyConfig,
    RavenConfig,
    TunnelConfig,
)

CLOUD_PUBLIC_IP = "203.0.113.10"

MANUAL_NODES: tuple[tuple[str, str, str, str, bool], ...] = (
    # name, gateway, InternalIP, podCIDR, edge
    ("izwz9dohcv74iegqecp4axz", "gw-cloud", "192.168.0.195", "10.244.0.0/24", False),
    ("izwz9ey0js5z7mornclpd6z", "gw-cloud", "192.168.0.196", "10.244.1.0/24", False),
    ("izbp15inok0kbfkg3in52rz", "gw-hangzhou", "172.16.2.103", "10.244.2.0/26", True),
    ("izbp15inok0kbfkg3in52sz", "gw-hangzhou", "172.16.2.104", "10.244.2.64/26", True),
    ("izm5eb24dmjfimuaybpnqzz", "gw-qingdao", "172.16.1.89", "10.244.3.0/26", True),
    ("izm5eb24dmjfimuaybpnr0z", "gw-qingdao", "172.16.1.90", "10.244.3.64/26", True),
)


def node(
    name: str,
    gateway: str | None = None,
    *,
    ip: str = "10.0.0.1",
    cidrs: Iterable[str] = (),
    ready: bool = True,
    edge: bool = False,
) -> Node:
    labels: dict[str, str] = {}
    if gateway:
        labels[GATEWAY_LABEL] = gateway
    if edge:
        labels[EDGE_WORKER_LABEL] = "true"
    return Node(
        ObjectMeta(name=name, labels=MappingProxyType(labels)),
        internal_ips=(ip,),
        pod_cidrs=tuple(cidrs),
        ready=ready,
    )


def ep(
    node_name: str,
    kind: EndpointType = EndpointType.TUNNEL,
    public_ip: str = "",
    under_nat: bool = False,
    config: Mapping[str, str] | None = None,
) -> Endpoint:
    port = 10262 if kind == EndpointType.PROXY else 4500
    return Endpoint(
        node_name,
        kind,
        port,
        under_nat=under_nat,
        public_ip=public_ip,
        config=MappingProxyType(dict(config or {})),
    )


def gateway(
    name: str,
    endpoints: Iterable[Endpoint],
    *,
    proxy_replicas: int = 1,
    tunnel_replicas: int = 1,
    active: Iterable[Endpoint] = (),
    expose: ExposeType = ExposeType.NONE,
    resource_version: str = "1",
) -> Gateway:
    spec = GatewaySpec(
        proxy_config=ProxyConfig(replicas=proxy_replicas),
        tunnel_config=TunnelConfig(replicas=tunnel_replicas),
        endpoints=tuple(endpoints),
        expose_type=expose,
    )
    return Gateway(
        ObjectMeta(name=name, resource_version=resource_version),
        spec,
        GatewayStatus(active_endpoints=tuple(active)),
    )


def view(
    gateways: Iterable[Gateway],
    nodes: Iterable[Node],
    l3: bool = True,
    l7: bool = True,
    present: bool = True,
) -> ClusterView:
    return ClusterView(
        gateways=MappingProxyType({g.name: g for g in gateways}),
        nodes=MappingProxyType({n.name: n for n in nodes}),
        raven_cfg=RavenConfig(l3_enabled=l3, l7_enabled=l7, present=present),
        synced=True,
    )


def manual_gateways() -> list[Gateway]:
    """The three Gateways of the manual, as v1beta1."""
    p, t = EndpointType.PROXY, EndpointType.TUNNEL
    hz, cloud = "izbp15inok0kbfkg3in52rz", "izwz9dohcv74iegqecp4axz"
    qd_proxy, qd_tunnel = "izm5eb24dmjfimuaybpnqzz", "izm5eb24dmjfimuaybpnr0z"
    return [
        gateway("gw-hangzhou", [ep(hz, p, under_nat=True), ep(hz, t, under_nat=True)]),
        gateway(
            "gw-cloud",
            [ep(cloud, p, CLOUD_PUBLIC_IP), ep(cloud, t, CLOUD_PUBLIC_IP)],
            expose=ExposeType.PUBLIC_IP,
        ),
        gateway("gw-qingdao", [ep(qd_proxy, p, under_nat=True), ep(qd_tunnel, t, under_nat=True)]),
    ]


def manual_nodes() -> list[Node]:
    return [node(n, gw, ip=ip, cidrs=[cidr], edge=edge) for n, gw, ip, cidr, edge in MANUAL_NODES]


def manual_view() -> ClusterView:
    return view(manual_gateways(), manual_nodes())
