"""JSON <-> `ravend.model` for the objects the planes plan from (pure, no I/O).

Gateways (v1beta1 storage form; v1alpha1 is converted first), Nodes, the raven-cfg ConfigMap and
Leases are parsed here; what ravend writes (Gateway status, Leases) is serialised here. Parsing a
malformed object raises `CodecError` naming the field path, so the informer can record *why* a
Gateway is skipped (ClusterView.invalid_gateways) instead of crashing the view.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from ravend.kube import conversion
from ravend.kube.jsonpath import (
    CodecError,
    opt_bool,
    opt_int,
    opt_list,
    opt_map,
    opt_str,
    opt_str_map,
    req_str,
)
from ravend.model import (
    DEFAULT_PROXY_PORT,
    DEFAULT_TUNNEL_PORT,
    KEY_L3,
    KEY_L7,
    Endpoint,
    EndpointType,
    ExposeType,
    Gateway,
    GatewaySpec,
    GatewayStatus,
    Lease,
    Node,
    NodeInfo,
    ObjectMeta,
    ProxyConfig,
    RavenConfig,
    TunnelConfig,
)

__all__ = [
    "CodecError",
    "endpoint_to_json",
    "gateway_from_json",
    "gateway_status_to_json",
    "gateway_to_json",
    "lease_from_json",
    "lease_to_json",
    "meta_from_json",
    "meta_to_json",
    "node_from_json",
    "node_to_json",
    "raven_config_from_configmap",
]

JSON = dict[str, Any]
_DEFAULT_PORTS = {EndpointType.PROXY: DEFAULT_PROXY_PORT, EndpointType.TUNNEL: DEFAULT_TUNNEL_PORT}


# ---- metadata ------------------------------------------------------------------------------


def meta_from_json(obj: Mapping[str, Any], path: str = "metadata") -> ObjectMeta:
    meta = opt_map(obj, "metadata", "")
    return ObjectMeta(
        name=req_str(meta, "name", path),
        namespace=opt_str(meta, "namespace", path),
        uid=opt_str(meta, "uid", path),
        resource_version=opt_str(meta, "resourceVersion", path),
        generation=opt_int(meta, "generation", path),
        labels=MappingProxyType(opt_str_map(meta, "labels", path)),
        annotations=MappingProxyType(opt_str_map(meta, "annotations", path)),
    )


def meta_to_json(meta: ObjectMeta) -> JSON:
    """Metadata for a write: only what is set (resourceVersion makes a replace conditional)."""
    out: JSON = {"name": meta.name}
    for key, value in (
        ("namespace", meta.namespace),
        ("uid", meta.uid),
        ("resourceVersion", meta.resource_version),
    ):
        if value:
            out[key] = value
    if meta.labels:
        out["labels"] = dict(meta.labels)
    if meta.annotations:
        out["annotations"] = dict(meta.annotations)
    return out


# ---- Gateway --------------------------------------------------------------------------------


def gateway_from_json(obj: Mapping[str, Any]) -> Gateway:
    """Parse a Gateway of either version; raises `CodecError` with the offending field path."""
    if obj.get("apiVersion") == conversion.V1ALPHA1:
        obj = conversion.to_v1beta1(obj)
    meta = meta_from_json(obj)
    spec = opt_map(obj, "spec", "")
    status = opt_map(obj, "status", "")
    return Gateway(meta=meta, spec=_spec_from_json(spec), status=_status_from_json(status))


def _spec_from_json(spec: Mapping[str, Any]) -> GatewaySpec:
    proxy = opt_map(spec, "proxyConfig", "spec")
    tunnel = opt_map(spec, "tunnelConfig", "spec")
    expose = opt_str(spec, "exposeType", "spec")
    try:
        expose_type = ExposeType(expose)
    except ValueError:
        raise CodecError(
            "spec.exposeType", f"expected '', 'PublicIP' or 'LoadBalancer', got {expose!r}"
        ) from None
    return GatewaySpec(
        node_selector=MappingProxyType(dict(opt_map(spec, "nodeSelector", "spec"))),
        proxy_config=ProxyConfig(
            replicas=_replicas(proxy, "spec.proxyConfig"),
            proxy_http_port=opt_str(proxy, "proxyHTTPPort", "spec.proxyConfig"),
            proxy_https_port=opt_str(proxy, "proxyHTTPSPort", "spec.proxyConfig"),
        ),
        tunnel_config=TunnelConfig(replicas=_replicas(tunnel, "spec.tunnelConfig")),
        endpoints=_endpoints(spec, "endpoints", "spec"),
        expose_type=expose_type,
    )


def _replicas(cfg: Mapping[str, Any], path: str) -> int:
    value = opt_int(cfg, "Replicas", path)
    if value < 0:
        raise CodecError(f"{path}.Replicas", f"must not be negative, got {value}")
    return value


def _status_from_json(status: Mapping[str, Any]) -> GatewayStatus:
    nodes = []
    for i, raw in enumerate(opt_list(status, "nodes", "status")):
        path = f"status.nodes[{i}]"
        if not isinstance(raw, Mapping):
            raise CodecError(path, "expected an object")
        subnets = opt_list(raw, "subnets", path)
        if not all(isinstance(s, str) for s in subnets):
            raise CodecError(f"{path}.subnets", "expected a list of strings")
        nodes.append(
            NodeInfo(
                node_name=req_str(raw, "nodeName", path),
                private_ip=opt_str(raw, "privateIP", path),
                subnets=tuple(subnets),
            )
        )
    return GatewayStatus(
        nodes=tuple(nodes), active_endpoints=_endpoints(status, "activeEndpoints", "status")
    )


def _endpoints(parent: Mapping[str, Any], key: str, path: str) -> tuple[Endpoint, ...]:
    out = []
    for i, raw in enumerate(opt_list(parent, key, path)):
        out.append(_endpoint(raw, f"{path}.{key}[{i}]"))
    return tuple(out)


def _endpoint(raw: object, path: str) -> Endpoint:
    if not isinstance(raw, Mapping):
        raise CodecError(path, "expected an object")
    kind = req_str(raw, "type", path)
    try:
        ep_type = EndpointType(kind)
    except ValueError:
        raise CodecError(f"{path}.type", f"expected 'proxy' or 'tunnel', got {kind!r}") from None
    port = opt_int(raw, "port", path) or _DEFAULT_PORTS[ep_type]
    if not 0 < port < 65536:
        raise CodecError(f"{path}.port", f"expected 1..65535, got {port}")
    node_name = req_str(raw, "nodeName", path)
    if not node_name:
        raise CodecError(f"{path}.nodeName", "must not be empty")
    return Endpoint(
        node_name=node_name,
        type=ep_type,
        port=port,
        under_nat=opt_bool(raw, "underNAT", path),
        public_ip=opt_str(raw, "publicIP", path),
        public_port=opt_int(raw, "publicPort", path),
        nat_type=opt_str(raw, "natType", path),
        config=MappingProxyType(opt_str_map(raw, "config", path)),
    )


def endpoint_to_json(ep: Endpoint) -> JSON:
    """An endpoint as Raven writes it (omitempty for the optional fields)."""
    out: JSON = {
        "nodeName": ep.node_name,
        "type": str(ep.type),
        "port": ep.port,
        "underNAT": ep.under_nat,
    }
    if ep.public_ip:
        out["publicIP"] = ep.public_ip
    if ep.public_port:
        out["publicPort"] = ep.public_port
    if ep.nat_type:
        out["natType"] = ep.nat_type
    if ep.config:
        out["config"] = dict(ep.config)
    return out


def gateway_status_to_json(status: GatewayStatus) -> JSON:
    """The `status` of a Gateway, for replace_status / a merge patch of the status subresource."""
    nodes = []
    for n in status.nodes:
        # subnets is required by the CRD schema (Raven's Go type has no omitempty).
        nodes.append(
            {"nodeName": n.node_name, "privateIP": n.private_ip, "subnets": list(n.subnets)}
        )
    return {
        "nodes": nodes,
        "activeEndpoints": [endpoint_to_json(e) for e in status.active_endpoints],
    }


def gateway_to_json(gw: Gateway) -> JSON:
    """A whole v1beta1 Gateway (for creating one, in tests, the demo and the simulator)."""
    spec = gw.spec
    proxy: JSON = {"Replicas": spec.proxy_config.replicas}
    if spec.proxy_config.proxy_http_port:
        proxy["proxyHTTPPort"] = spec.proxy_config.proxy_http_port
    if spec.proxy_config.proxy_https_port:
        proxy["proxyHTTPSPort"] = spec.proxy_config.proxy_https_port
    spec_json: JSON = {
        "proxyConfig": proxy,
        "tunnelConfig": {"Replicas": spec.tunnel_config.replicas},
        "endpoints": [endpoint_to_json(e) for e in spec.endpoints],
    }
    if spec.node_selector:
        spec_json["nodeSelector"] = dict(spec.node_selector)
    if spec.expose_type:
        spec_json["exposeType"] = str(spec.expose_type)
    return {
        "apiVersion": conversion.V1BETA1,
        "kind": "Gateway",
        "metadata": meta_to_json(gw.meta),
        "spec": spec_json,
        "status": gateway_status_to_json(gw.status),
    }


# ---- Node -----------------------------------------------------------------------------------


def node_from_json(obj: Mapping[str, Any]) -> Node:
    spec = opt_map(obj, "spec", "")
    status = opt_map(obj, "status", "")
    internal: list[str] = []
    external: list[str] = []
    for i, addr in enumerate(opt_list(status, "addresses", "status")):
        path = f"status.addresses[{i}]"
        if not isinstance(addr, Mapping):
            raise CodecError(path, "expected an object")
        kind, value = opt_str(addr, "type", path), opt_str(addr, "address", path)
        if kind == "InternalIP":
            internal.append(value)
        elif kind == "ExternalIP":
            external.append(value)
    cidrs = opt_list(spec, "podCIDRs", "spec") or ([spec["podCIDR"]] if spec.get("podCIDR") else [])
    ready = any(
        isinstance(c, Mapping) and c.get("type") == "Ready" and c.get("status") == "True"
        for c in opt_list(status, "conditions", "status")
    )
    return Node(
        meta=meta_from_json(obj),
        internal_ips=tuple(internal),
        external_ips=tuple(external),
        pod_cidrs=tuple(str(c) for c in cidrs),
        ready=ready,
    )


def node_to_json(node: Node) -> JSON:
    """A core/v1 Node with the fields `node_from_json` reads (simulator and tests)."""
    addresses = [{"type": "InternalIP", "address": ip} for ip in node.internal_ips]
    addresses += [{"type": "ExternalIP", "address": ip} for ip in node.external_ips]
    spec: JSON = {}
    if node.pod_cidrs:
        spec = {"podCIDR": node.pod_cidrs[0], "podCIDRs": list(node.pod_cidrs)}
    ready = "True" if node.ready else "False"
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": meta_to_json(node.meta),
        "spec": spec,
        "status": {"addresses": addresses, "conditions": [{"type": "Ready", "status": ready}]},
    }


# ---- raven-cfg ------------------------------------------------------------------------------


def raven_config_from_configmap(obj: Mapping[str, Any] | None) -> RavenConfig:
    """Raven's toggles; an absent ConfigMap or key means off, only the string "true" means on."""
    if obj is None:
        return RavenConfig()
    data = opt_map(obj, "data", "")
    return RavenConfig(
        l3_enabled=str(data.get(KEY_L3, "")).strip().lower() == "true",
        l7_enabled=str(data.get(KEY_L7, "")).strip().lower() == "true",
        present=True,
    )


# ---- Lease ----------------------------------------------------------------------------------


def lease_from_json(obj: Mapping[str, Any]) -> Lease:
    spec = opt_map(obj, "spec", "")
    return Lease(
        meta=meta_from_json(obj),
        holder=opt_str(spec, "holderIdentity", "spec"),
        lease_duration_seconds=opt_int(spec, "leaseDurationSeconds", "spec"),
        acquire_time=opt_str(spec, "acquireTime", "spec"),
        renew_time=opt_str(spec, "renewTime", "spec"),
        lease_transitions=opt_int(spec, "leaseTransitions", "spec"),
    )


def lease_to_json(lease: Lease) -> JSON:
    spec: JSON = {}
    for key, value in (
        ("holderIdentity", lease.holder),
        ("leaseDurationSeconds", lease.lease_duration_seconds),
        ("acquireTime", lease.acquire_time),
        ("renewTime", lease.renew_time),
        ("leaseTransitions", lease.lease_transitions),
    ):
        if value:
            spec[key] = value
    return {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": meta_to_json(lease.meta),
        "spec": spec,
    }
