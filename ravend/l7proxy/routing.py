"""Where a kubelet request goes: pure decisions over a request head and a ClusterView. No I/O.

Raven's rules (raven-reference.md section 5), made explicit and strict:

1. Which node: for `/exec|attach|portForward|containerLogs/<ns>/<pod>/...` the node the pod is
   scheduled on (the front end looks the pod up); otherwise `?nodeName=`; otherwise the Host
   header's name. A Host that is an IP literal is refused when it would pick the node: node IPs
   collide between pools, so we route by node name only.
2. Which port: the Host header's port (the kube-apiserver dials `<node>:10250`), defaulting to
   the kubelet port of the front end's scheme. Only kubelet ports and the ports a Gateway
   publishes are reachable (10250 + proxyHTTPSPort over TLS, 10255 + proxyHTTPPort in plain), so
   the front end is never an open proxy.
3. How: a node of this proxy's own pool (or of another exposed pool, or of no pool) is dialled
   directly at its InternalIP; a node of an edge pool is reached over the tunnel of one of that
   pool's active proxy endpoints.
The edge applies rule 2 again and only dials nodes of its own pool (`edge_destination`).
"""

from __future__ import annotations

import functools
import hashlib
import ipaddress
from dataclasses import dataclass

from ravend.l7proxy.http_head import RequestHead
from ravend.model import ClusterView, EndpointType, Gateway

KUBELET_HTTPS_PORT = 10250
KUBELET_HTTP_PORT = 10255
POD_PATHS = frozenset({"exec", "attach", "portForward", "containerLogs"})


@dataclass(frozen=True)
class Refusal:
    """Answer the caller with `status` and `reason` instead of forwarding."""

    status: int
    reason: str


@dataclass(frozen=True)
class PodRef:
    namespace: str
    name: str


@dataclass(frozen=True)
class Wanted:
    """What the request asks for, before the cluster state is consulted."""

    node: str | PodRef
    """The node by name, or the pod whose node it is."""
    port: int


@dataclass(frozen=True)
class Direct:
    """Dial `address:port` from this proxy node."""

    node: str
    address: str
    port: int
    tls: bool


@dataclass(frozen=True)
class ViaTunnel:
    """Open a stream to `node:port` over the tunnel of one of `via` (edge proxy nodes)."""

    node: str
    port: int
    tls: bool
    gateway: str
    via: tuple[str, ...]
    """Active proxy endpoints of the node's Gateway, in this request's preference order."""


Route = Direct | ViaTunnel


def pod_of_path(path: str) -> PodRef | None:
    """The pod named by a kubelet pod subresource path, else None."""
    parts = path.split("/")
    # ["", "exec", ns, pod, ...]
    if len(parts) >= 4 and parts[0] == "" and parts[1] in POD_PATHS and parts[2] and parts[3]:
        return PodRef(parts[2], parts[3])
    return None


@functools.lru_cache(maxsize=1024)  # a handful of node names, asked on every request
def is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


def split_host(host: str) -> tuple[str, int | None] | Refusal:
    """`name[:port]` or `[v6]:port` -> (name, port); Refusal(400) when malformed."""
    if host.startswith("["):
        end = host.find("]")
        if end < 0:
            return Refusal(400, f"malformed Host {host!r}")
        name, rest = host[: end + 1], host[end + 1 :]
        if rest and not rest.startswith(":"):
            return Refusal(400, f"malformed Host {host!r}")
        port_text = rest[1:] if rest else ""
    else:
        name, sep, port_text = host.rpartition(":")
        if not sep:
            name, port_text = host, ""
    if not name:
        return Refusal(400, "empty Host")
    if port_text == "":
        return name, None
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        return Refusal(400, f"malformed port in Host {host!r}")
    return name, int(port_text)


def wanted(head: RequestHead, tls: bool) -> Wanted | Refusal:
    """Rule 1 and the port of rule 2, from the request head alone."""
    split = split_host(head.host or "")
    if isinstance(split, Refusal):
        return split
    host_name, port = split
    if port is None:
        port = KUBELET_HTTPS_PORT if tls else KUBELET_HTTP_PORT
    pod = pod_of_path(head.path)
    if pod is not None:
        return Wanted(pod, port)
    by_query = [n for n in head.query.get("nodeName", []) if n]
    if by_query:
        if is_ip_literal(by_query[0]):
            return Refusal(403, "nodeName must be a node name, not an IP address")
        return Wanted(by_query[0], port)
    if is_ip_literal(host_name):
        return Refusal(403, f"Host {host_name} is an IP address: address the kubelet by node name")
    return Wanted(host_name.lower(), port)


def allowed_ports(gateway: Gateway | None, tls: bool) -> frozenset[int]:
    """Ports reachable on nodes of `gateway` over TLS or in plain (rule 2)."""
    https = {KUBELET_HTTPS_PORT}
    http = {KUBELET_HTTP_PORT}
    if gateway is not None:
        https.update(gateway.spec.proxy_config.https_ports)
        http.update(gateway.spec.proxy_config.http_ports)
    # A port listed as both is TLS only, as on the internal Service (controllers.desired).
    return frozenset(https) if tls else frozenset(http - https)


def _port_refusal(node: str, port: int, gateway: Gateway | None, tls: bool) -> Refusal | None:
    allowed = allowed_ports(gateway, tls)
    if port in allowed:
        return None
    scheme = "HTTPS" if tls else "plain HTTP"
    ports = ", ".join(str(p) for p in sorted(allowed))
    return Refusal(403, f"port {port} of node {node} is not reachable over {scheme} ({ports})")


def plan_route(node_name: str, port: int, tls: bool, view: ClusterView, me: str) -> Route | Refusal:
    """Rules 2 and 3 for a node chosen by name; `me` is this proxy node."""
    node = view.nodes.get(node_name)
    if node is None:
        return Refusal(404, f"node {node_name} not found")
    gateway = view.gateway_of(node_name)
    refused = _port_refusal(node_name, port, gateway, tls)
    if refused is not None:
        return refused
    mine = view.gateway_of(me)
    if gateway is None or gateway.is_exposed or (mine is not None and mine.name == gateway.name):
        if not node.private_ip:
            return Refusal(502, f"node {node_name} has no InternalIP")
        return Direct(node_name, node.private_ip, port, tls)
    via = tuple(e.node_name for e in gateway.active(EndpointType.PROXY))
    if not via:
        return Refusal(503, f"gateway {gateway.name} of node {node_name} has no active proxy")
    return ViaTunnel(node_name, port, tls, gateway.name, _spread(node_name, via))


@functools.lru_cache(maxsize=4096)  # pure and asked per request: hash once per (node, proxies)
def _spread(node: str, via: tuple[str, ...]) -> tuple[str, ...]:
    """Preference order of the pool's proxies for `node`: stable, and different per node, so
    the nodes of a pool spread over its proxy replicas (rendezvous hashing)."""

    def score(proxy: str) -> bytes:
        return hashlib.blake2b(f"{node}\0{proxy}".encode(), digest_size=8).digest()

    return tuple(sorted(via, key=score))


def choose_tunnel(route: ViaTunnel, connected: frozenset[str]) -> str | Refusal:
    """The first preferred proxy whose tunnel is up."""
    for proxy in route.via:
        if proxy in connected:
            return proxy
    return Refusal(
        503, f"no tunnel from gateway {route.gateway} is connected (proxies {', '.join(route.via)})"
    )


def edge_destination(
    node_name: str, port: int, tls: bool, view: ClusterView, me: str
) -> tuple[str, int] | Refusal:
    """Where the edge dials a stream for `node_name:port`: only nodes of its own pool."""
    mine = view.gateway_of(me)
    node = view.nodes.get(node_name)
    if mine is None or node is None or node.gateway != mine.name:
        return Refusal(404, f"node {node_name} is not in the pool of {me}")
    refused = _port_refusal(node_name, port, mine, tls)
    if refused is not None:
        return refused
    if not node.private_ip:
        return Refusal(502, f"node {node_name} has no InternalIP")
    return node.private_ip, port


DENIED_CALLER_PREFIXES = ("system:node:", "ravend:tunnel:")
DENIED_CALLER_GROUPS = frozenset({"system:nodes", "ravend:tunnel-clients"})


def authorise_caller(
    common_name: str | None, groups: frozenset[str], allowed: frozenset[str] = frozenset()
) -> Refusal | None:
    """May a TLS caller (already verified against the cluster CA) use the front end?

    Every kubelet and every edge holds a cluster-CA client certificate; letting them through
    would lend them our nodes/proxy rights on every other kubelet. So node and tunnel identities
    are refused, and `allowed` (if not empty) lists the only accepted CNs, e.g. the
    kube-apiserver's `kube-apiserver-kubelet-client`.
    """
    if not common_name:
        return Refusal(403, "client certificate has no single common name")
    if common_name.startswith(DENIED_CALLER_PREFIXES) or groups & DENIED_CALLER_GROUPS:
        return Refusal(403, f"{common_name} may not use the kubelet proxy")
    if allowed and common_name not in allowed:
        return Refusal(403, f"{common_name} is not an allowed caller")
    return None
