"""The L7 plane's role loops: `run_l7_server` (cloud proxy) and `run_l7_client` (edge). I/O.

Both run until cancelled (a return is a bug) and are started by the composition root as the
L7_SERVER / L7_CLIENT role tasks. They own the certificate managers they are given: each loop
runs its managers' `run()` (renewal) and swaps renewed certificates into its TLS contexts
without dropping open connections, so the composition root must not run those managers itself.

Server: tunnel server (10262, mutual TLS 1.3, edges named by their tunnel client certificate),
HTTPS front end (10263, serving certificate, callers need a cluster-CA client certificate) and
plain front end (10264). The serving certificate's SANs follow the ClusterView and the internal
Service's ClusterIP (`wanted_serving_sans`).
Client: one TunnelClient per tunnel server (every active proxy endpoint of every exposed
Gateway); only the servers that appear or disappear are dialled or dropped.

Given a `LoopThread` (`data=`), both loops split their work: certificate managers, SAN upkeep
and pod lookups stay on the calling (agent) loop, where the API client lives; listeners, tunnels
and every connection run on the thread's loop, which sees a mirrored ClusterView, reaches pod
lookups through `on_loop`, and gets certificate reloads through `LoopThread.call`.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from ravend.certs.csr import INTERNAL_SERVICE, INTERNAL_SERVICE_NAMESPACE, Sans, serving_sans
from ravend.certs.manager import CertManager
from ravend.certs.store import StoredCert
from ravend.certs.tls import (
    ReloadableContext,
    client_context,
    identity_from_peercert,
    load_chain,
    server_context,
)
from ravend.kube.resources import SERVICES
from ravend.l7proxy.edge import EdgeHandler
from ravend.l7proxy.front_dial import UpstreamDialer
from ravend.l7proxy.front_pods import PodLookup, PodNodeCache
from ravend.l7proxy.frontend import FrontEnd, FrontSettings
from ravend.l7proxy.settings import L7TunnelSettings
from ravend.l7proxy.tunnel_client import ServerAddress, TunnelClient
from ravend.l7proxy.tunnel_server import TunnelServer
from ravend.loopthread import LoopThread, mirror, on_loop, soon_on_loop
from ravend.model import ClusterView, EndpointType
from ravend.runtime import Latest

if TYPE_CHECKING:
    from ravend.kube.client import KubeClient

log = logging.getLogger(__name__)

Ready = Callable[[], None]
CLUSTER_IP_REFRESH = 30.0
"""Seconds between re-reads of the internal Service's ClusterIP (a SAN of the serving cert)."""
CLUSTER_IP_RETRY = 5.0
"""Seconds between re-reads while the Service has no ClusterIP yet (or does not exist)."""


@dataclass(frozen=True)
class L7Ports:
    """Where the cloud side listens (Raven's ports by default)."""

    tunnel: int = 10262
    """Tunnel server for edge connections."""
    https: int = 10263
    """HTTPS front end (the internal Service's proxyHTTPSPort ports point here)."""
    http: int = 10264
    """Plain front end for read-only ports (proxyHTTPPort ports point here)."""
    host: str | None = None
    """Bind address; None listens on every address (hostNetwork pod)."""


# ---- pure planning -------------------------------------------------------------------------


def tunnel_servers(view: ClusterView) -> tuple[tuple[str, int], ...]:
    """(address, port) of every active proxy endpoint of every exposed Gateway, sorted.

    The address is the endpoint's publicIP, else the node's InternalIP (hubs are not NATed).
    """
    out: set[tuple[str, int]] = set()
    for gw in view.gateways.values():
        if not gw.is_exposed:
            continue
        for ep in gw.active(EndpointType.PROXY):
            node = view.nodes.get(ep.node_name)
            address = ep.public_ip or (node.private_ip if node is not None else "")
            if address:
                out.add((address, ep.public_port or ep.port))
    return tuple(sorted(out))


def wanted_serving_sans(
    view: ClusterView, me: str, cluster_ips: tuple[str, ...], cluster_domain: str
) -> Sans:
    """The serving certificate's SANs: node name and IPs, internal Service, public IPs."""
    node = view.nodes.get(me)
    node_ips = [*node.internal_ips, *node.external_ips] if node is not None else []
    public = {
        ep.public_ip
        for gw in view.gateways.values()
        for ep in gw.spec.endpoints + gw.status.active_endpoints
        if ep.node_name == me and ep.public_ip
    }
    return serving_sans(me, node_ips, cluster_ips, sorted(public), cluster_domain)


# ---- TLS material --------------------------------------------------------------------------


def _kubelet_context(cert: StoredCert, kubelet_ca_pem: bytes | None) -> ssl.SSLContext:
    # Kubelets may still speak TLS 1.2 only.
    return client_context(kubelet_ca_pem, cert.cert_pem, cert.key_pem, ssl.TLSVersion.TLSv1_2)


async def _follow_cert(manager: CertManager, apply: Callable[[StoredCert], None]) -> None:
    """Apply every certificate the manager publishes after the current one (runs forever)."""
    seen = manager.latest.version
    while True:
        seen, cert = await manager.latest.wait_newer(seen)
        if cert is not None:
            apply(cert)


async def _run_manager(manager: CertManager) -> None:
    await manager.run()


def _reload_in_place(ctx: ssl.SSLContext) -> Callable[[StoredCert], None]:
    """Client contexts are reloaded in place: new handshakes use the new chain."""
    return lambda cert: load_chain(ctx, cert.cert_pem, cert.key_pem)


# ---- server --------------------------------------------------------------------------------


async def _cluster_ips(kube: KubeClient) -> tuple[str, ...]:
    try:
        svc = await kube.get(SERVICES, INTERNAL_SERVICE, INTERNAL_SERVICE_NAMESPACE)
    except Exception as exc:  # absent Service or API down: the SAN follows on a later pass
        log.debug("internal Service ClusterIP unavailable: %s", exc)
        return ()
    spec = svc.get("spec", {})
    ips = spec.get("clusterIPs") or [spec.get("clusterIP")]
    return tuple(ip for ip in ips if isinstance(ip, str) and ip and ip != "None")


async def _keep_serving_sans(
    serving: CertManager, view: Latest[ClusterView], kube: KubeClient, me: str
) -> None:
    cluster_ips: tuple[str, ...] = ()
    fetched = float("-inf")
    domain = serving.settings.cluster_domain
    async for snapshot in view.updates():
        # Views change with every lease renewal: re-read the Service at a bounded rate.
        interval = CLUSTER_IP_REFRESH if cluster_ips else CLUSTER_IP_RETRY
        if time.monotonic() - fetched > interval:
            cluster_ips, fetched = await _cluster_ips(kube), time.monotonic()
        serving.set_wanted_sans(wanted_serving_sans(snapshot, me, cluster_ips, domain))


async def run_l7_server(
    node: str,
    view: Latest[ClusterView],
    kube: KubeClient,
    *,
    serving: CertManager,
    proxy_client: CertManager,
    client_ca_pem: bytes,
    kubelet_ca_pem: bytes | None = None,
    ports: L7Ports | None = None,
    tunnel_settings: L7TunnelSettings | None = None,
    front_settings: FrontSettings | None = None,
    pods: PodLookup | None = None,
    ready: Ready = lambda: None,
    data: LoopThread | None = None,
) -> None:
    """Cloud proxy role: tunnel server + both front ends, until cancelled. Certificates, SANs
    and pod lookups stay on this loop; the listeners and their connections run on `data`'s
    loop when given (module docstring of ravend.loopthread), else on this one."""
    ports = ports or L7Ports()
    settings = replace(tunnel_settings or L7TunnelSettings(), port=ports.tunnel)
    async with asyncio.TaskGroup() as tg:
        tg.create_task(_keep_serving_sans(serving, view, kube, node))
        server_cert = await serving.ensure()
        kubelet_cert = await proxy_client.ensure()
        front_tls = ReloadableContext(
            server_context(server_cert.cert_pem, server_cert.key_pem, client_ca_pem)
        )
        kubelet_tls = _kubelet_context(kubelet_cert, kubelet_ca_pem)
        tg.create_task(_run_manager(serving))
        tg.create_task(_run_manager(proxy_client))

        def reload_front(c: StoredCert) -> None:
            front_tls.reload(server_context(c.cert_pem, c.key_pem, client_ca_pem))

        tg.create_task(_follow_cert(serving, _there(data, reload_front)))
        tg.create_task(_follow_cert(proxy_client, _there(data, _reload_in_place(kubelet_tls))))
        lookup = pods or PodNodeCache(kube)
        if data is not None:
            lookup = on_loop(asyncio.get_running_loop(), lookup)

        async def serve(local: Latest[ClusterView], up: Ready) -> None:
            tunnels = TunnelServer(
                front_tls.listener, settings, identity_of=identity_from_peercert, host=ports.host
            )
            dialer = UpstreamDialer(lambda: kubelet_tls, tunnels)

            def front(tls: ssl.SSLContext | None, port: int) -> FrontEnd:
                return FrontEnd(
                    me=node,
                    view=local,
                    pods=lookup,
                    upstreams=dialer,
                    ssl_context=tls,
                    host=ports.host,
                    port=port,
                    settings=front_settings,
                )

            async with tunnels, front(front_tls.listener, ports.https), front(None, ports.http):
                log.info(
                    "L7 server of %s up (tunnel %d, https %d, http %d)",
                    node,
                    ports.tunnel,
                    ports.https,
                    ports.http,
                )
                up()
                await asyncio.Event().wait()

        await _data_path(data, view, ready, serve)


async def _data_path(
    data: LoopThread | None,
    view: Latest[ClusterView],
    ready: Ready,
    serve: Callable[[Latest[ClusterView], Ready], Coroutine[Any, Any, None]],
) -> None:
    """Run `serve(view, ready)` here, or on `data`'s loop with a mirrored view and a ready
    callback that comes back to this loop."""
    if data is None:
        await serve(view, ready)
        return
    local = Latest(view.value)
    up = soon_on_loop(asyncio.get_running_loop(), ready)
    async with asyncio.TaskGroup() as tg:
        tg.create_task(mirror(view, local, data))
        await data.run(lambda: serve(local, up))


def _there(
    data: LoopThread | None, apply: Callable[[StoredCert], None]
) -> Callable[[StoredCert], None]:
    """A certificate reload applied on the loop that uses the TLS context."""
    if data is None:
        return apply
    return lambda cert: data.call(apply, cert)


# ---- client --------------------------------------------------------------------------------


async def _signal_ready(client: TunnelClient, ready: Ready) -> None:
    seen = -1
    while True:
        seen, connected = await client.connected.wait_newer(seen)
        if connected:
            ready()


async def _run_tunnel_client(client: TunnelClient, ready: Ready) -> None:
    async with asyncio.TaskGroup() as tg:
        tg.create_task(_signal_ready(client, ready))
        await client.run()


async def run_l7_client(
    node: str,
    view: Latest[ClusterView],
    *,
    tunnel_client: CertManager,
    proxy_client: CertManager,
    server_ca_pem: bytes,
    kubelet_ca_pem: bytes | None = None,
    tunnel_settings: L7TunnelSettings | None = None,
    ready: Ready = lambda: None,
    data: LoopThread | None = None,
) -> None:
    """Edge proxy role: keep a tunnel to every cloud tunnel server, serve their streams (on
    `data`'s loop when given; certificates stay on this one)."""
    async with asyncio.TaskGroup() as tg:
        tunnel_cert = await tunnel_client.ensure()
        kubelet_cert = await proxy_client.ensure()
        tunnel_tls = client_context(server_ca_pem, tunnel_cert.cert_pem, tunnel_cert.key_pem)
        kubelet_tls = _kubelet_context(kubelet_cert, kubelet_ca_pem)
        tg.create_task(_run_manager(tunnel_client))
        tg.create_task(_run_manager(proxy_client))
        tg.create_task(_follow_cert(tunnel_client, _there(data, _reload_in_place(tunnel_tls))))
        tg.create_task(_follow_cert(proxy_client, _there(data, _reload_in_place(kubelet_tls))))

        async def serve(local: Latest[ClusterView], up: Ready) -> None:
            await _serve_edge(
                node, local, tunnel_tls, kubelet_tls, tunnel_settings=tunnel_settings, ready=up
            )

        await _data_path(data, view, ready, serve)


async def _serve_edge(
    node: str,
    view: Latest[ClusterView],
    tunnel_tls: ssl.SSLContext,
    kubelet_tls: ssl.SSLContext,
    *,
    tunnel_settings: L7TunnelSettings | None,
    ready: Ready,
) -> None:
    """One TunnelClient per wanted tunnel server; only the ones that change are touched."""
    async with asyncio.TaskGroup() as tg:
        handler = EdgeHandler(node, view, lambda: kubelet_tls)
        running: dict[tuple[str, int], asyncio.Task[None]] = {}
        async for snapshot in view.updates():
            wanted = set(tunnel_servers(snapshot))
            for address in set(running) - wanted:
                log.info("L7 client %s: dropping tunnel server %s:%d", node, *address)
                running.pop(address).cancel()
            for host, port in sorted(wanted - set(running)):
                log.info("L7 client %s: dialling tunnel server %s:%d", node, host, port)
                client = TunnelClient(
                    [ServerAddress(host, port, tunnel_tls)], handler, tunnel_settings
                )
                running[(host, port)] = tg.create_task(_run_tunnel_client(client, ready))
            if not wanted:
                ready()  # nothing to connect to is a settled state, not a failure
