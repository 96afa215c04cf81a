"""Desired Kubernetes objects the leader keeps in order (pure planning, no I/O).

- DNS: ConfigMap kube-system/edge-tunnel-nodes, key `tunnel-nodes`: one `<ip>\\t<nodeName>` line
  per node, sorted. While L7 is on and the internal Service has a ClusterIP, every node name
  resolves to that ClusterIP (the kube-apiserver then reaches kubelets through the proxy);
  otherwise to the node's InternalIP (ExternalIP as fallback), as Raven's DNS controller does.
- The internal Service x-raven-proxy-internal-svc: `proxyHTTPSPort` ports -> 10263,
  `proxyHTTPPort` ports -> 10264 (10250/10255 always), Endpoints = InternalIPs of the active proxy
  endpoints of every exposed Gateway.
- For `exposeType: LoadBalancer`: one LoadBalancer Service + Endpoints per active endpoint.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from ravend.model import RAVEN_NAMESPACE, ClusterView, EndpointType, ExposeType, Gateway

DNS_CONFIGMAP = "edge-tunnel-nodes"
DNS_KEY = "tunnel-nodes"
INTERNAL_SERVICE = "x-raven-proxy-internal-svc"
HTTPS_FRONT_PORT = 10263
HTTP_FRONT_PORT = 10264
DEFAULT_HTTPS_PORTS = (10250,)
DEFAULT_HTTP_PORTS = (10255,)
MANAGED_BY = {"app.kubernetes.io/managed-by": "ravend"}


def tunnel_nodes(view: ClusterView, proxy_cluster_ip: str | None) -> str:
    """The `tunnel-nodes` hosts file content."""
    use_proxy = view.raven_cfg.l7_enabled and bool(proxy_cluster_ip)
    lines = []
    for name, node in sorted(view.nodes.items()):
        ip = proxy_cluster_ip if use_proxy else node.private_ip
        if ip:
            lines.append(f"{ip}\t{name}")
    return "\n".join(lines) + ("\n" if lines else "")


@dataclass(frozen=True)
class ServicePort:
    name: str
    port: int
    target_port: int
    protocol: str = "TCP"


def internal_service_ports(view: ClusterView) -> tuple[ServicePort, ...]:
    https = set(DEFAULT_HTTPS_PORTS)
    http = set(DEFAULT_HTTP_PORTS)
    for gw in view.gateways.values():
        https.update(gw.spec.proxy_config.https_ports)
        http.update(gw.spec.proxy_config.http_ports)
    # A port listed as both stays HTTPS: TLS to the kubelet is the safe reading.
    http -= https
    ports = [ServicePort(f"https-{p}", p, HTTPS_FRONT_PORT) for p in https]
    ports += [ServicePort(f"http-{p}", p, HTTP_FRONT_PORT) for p in http]
    return tuple(sorted(ports, key=lambda sp: sp.port))


def proxy_server_ips(view: ClusterView) -> tuple[str, ...]:
    """InternalIPs of the active proxy endpoints of every exposed Gateway."""
    ips: set[str] = set()
    for gw in view.gateways.values():
        if not gw.is_exposed:
            continue
        for ep in gw.active(EndpointType.PROXY):
            node = view.nodes.get(ep.node_name)
            if node is not None and node.private_ip:
                ips.add(node.private_ip)
    return tuple(sorted(ips))


def internal_service(view: ClusterView) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": INTERNAL_SERVICE, "namespace": RAVEN_NAMESPACE, "labels": MANAGED_BY},
        "spec": {
            "type": "ClusterIP",
            "ports": [_port_json(sp) for sp in internal_service_ports(view)],
        },
    }


def internal_endpoints(view: ClusterView) -> dict[str, Any]:
    ips = proxy_server_ips(view)
    subsets = []
    if ips:
        ports = [
            {"name": sp.name, "port": sp.target_port, "protocol": sp.protocol}
            for sp in internal_service_ports(view)
        ]
        subsets.append({"addresses": [{"ip": ip} for ip in ips], "ports": ports})
    return {
        "apiVersion": "v1",
        "kind": "Endpoints",
        "metadata": {"name": INTERNAL_SERVICE, "namespace": RAVEN_NAMESPACE, "labels": MANAGED_BY},
        "subsets": subsets,
    }


def public_service_name(gateway: str, node: str, kind: EndpointType) -> str:
    """x-raven-<proxy|tunnel>-svc-<hash>: names stay under 63 characters for any inputs."""
    digest = hashlib.sha256(f"{gateway}/{node}".encode()).hexdigest()[:10]
    return f"x-raven-{kind.value}-svc-{digest}"


def public_services(view: ClusterView) -> dict[str, dict[str, Any]]:
    """LoadBalancer Services (one per active endpoint of LoadBalancer Gateways), by name."""
    out: dict[str, dict[str, Any]] = {}
    for gw in sorted(view.gateways.values(), key=lambda g: g.name):
        if gw.spec.expose_type != ExposeType.LOAD_BALANCER:
            continue
        for ep in gw.status.active_endpoints:
            name = public_service_name(gw.name, ep.node_name, ep.type)
            out[name] = _lb_service(gw, name, ep.node_name, ep.type, ep.port)
    return out


def _lb_service(gw: Gateway, name: str, node: str, kind: EndpointType, port: int) -> dict[str, Any]:
    protocol = "UDP" if kind == EndpointType.TUNNEL else "TCP"
    labels = {
        **MANAGED_BY,
        "raven.openyurt.io/gateway": gw.name,
        "raven.openyurt.io/endpoint-node": node,
        "raven.openyurt.io/endpoint-type": kind.value,
    }
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": RAVEN_NAMESPACE, "labels": labels},
        "spec": {
            "type": "LoadBalancer",
            "ports": [{"name": kind.value, "port": port, "targetPort": port, "protocol": protocol}],
        },
    }


def _port_json(sp: ServicePort) -> dict[str, Any]:
    return {"name": sp.name, "port": sp.port, "targetPort": sp.target_port, "protocol": sp.protocol}
