"""Routing tables: which node, which port, direct or through which tunnel; edge-side checks."""

from __future__ import annotations

import ipaddress
from dataclasses import replace

import pytest

from ravend.l7proxy.http_head import parse_request_head
from ravend.l7proxy.plane import tunnel_servers, wanted_serving_sans
from ravend.l7proxy.routing import (
    Direct,
    PodRef,
    Refusal,
    ViaTunnel,
    Wanted,
    authorise_caller,
    choose_tunnel,
    edge_destination,
    plan_route,
    pod_of_path,
    split_host,
    wanted,
)
from ravend.model import Endpoint, EndpointType

from .conftest import build_view

VIEW = build_view(9100, 9101)


def head(target: str, host: str) -> bytes:
    return f"GET {target} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()


@pytest.mark.parametrize(
    ("target", "host", "tls", "expected"),
    [
        ("/exec/ns/p/c?command=sh", "edge-1:10250", True, Wanted(PodRef("ns", "p"), 10250)),
        ("/containerLogs/ns/p/c", "whatever:10250", True, Wanted(PodRef("ns", "p"), 10250)),
        ("/portForward/ns/p", "10.0.0.1:10250", True, Wanted(PodRef("ns", "p"), 10250)),
        ("/attach/ns/p/c", "edge-1", True, Wanted(PodRef("ns", "p"), 10250)),
        ("/metrics", "Edge-1:10250", True, Wanted("edge-1", 10250)),
        ("/metrics", "edge-1", False, Wanted("edge-1", 10255)),
        ("/stats/summary?nodeName=edge-2", "proxy:9100", True, Wanted("edge-2", 9100)),
        ("/metrics", "10.0.0.1:10250", True, Refusal(403, "")),
        ("/metrics", "[fd00::1]:10250", True, Refusal(403, "")),
        ("/metrics?nodeName=10.1.1.1", "edge-1", True, Refusal(403, "")),
        ("/metrics", "edge-1:99999", True, Refusal(400, "")),
        ("/metrics", "edge-1:abc", True, Refusal(400, "")),
        ("/exec/ns", "edge-1", True, Wanted("edge-1", 10250)),  # too short to name a pod
    ],
)
def test_wanted(target: str, host: str, tls: bool, expected: Wanted | Refusal) -> None:
    got = wanted(parse_request_head(head(target, host)), tls)
    if isinstance(expected, Refusal):
        assert isinstance(got, Refusal) and got.status == expected.status
    else:
        assert got == expected


def test_split_host_ipv6() -> None:
    assert split_host("[fd00::1]:10250") == ("[fd00::1]", 10250)
    assert split_host("node") == ("node", None)
    assert isinstance(split_host("[fd00::1"), Refusal)


def test_pod_of_path() -> None:
    assert pod_of_path("/containerLogs/kube-system/coredns-1/coredns") == PodRef(
        "kube-system", "coredns-1"
    )
    assert pod_of_path("/logs/x/y") is None
    assert pod_of_path("/exec//p/c") is None


@pytest.mark.parametrize(
    ("node", "port", "tls", "expected"),
    [
        ("cloud-2", 10250, True, Direct("cloud-2", "127.0.0.12", 10250, True)),
        ("cloud-1", 9100, True, Direct("cloud-1", "127.0.0.11", 9100, True)),
        ("cloud-2", 9101, False, Direct("cloud-2", "127.0.0.12", 9101, False)),
        ("edge-2", 10250, True, ViaTunnel("edge-2", 10250, True, "gw-a", ("edge-1",))),
        ("edge-3", 10255, False, ViaTunnel("edge-3", 10255, False, "gw-b", ("edge-3",))),
        ("nosuch", 10250, True, Refusal(404, "node nosuch not found")),
        ("edge-2", 22, True, Refusal(403, "")),
        ("edge-2", 10250, False, Refusal(403, "")),  # TLS port on the plain front end
        ("edge-2", 9101, True, Refusal(403, "")),  # plain port on the TLS front end
    ],
)
def test_plan_route(node: str, port: int, tls: bool, expected: object) -> None:
    got = plan_route(node, port, tls, VIEW, "cloud-1")
    if isinstance(expected, Refusal):
        assert isinstance(got, Refusal) and got.status == expected.status
        assert expected.reason in got.reason
    else:
        assert got == expected


def test_tunnel_choice_spreads_and_falls_back() -> None:
    gw = VIEW.gateways["gw-a"]
    eps = tuple(Endpoint(f"proxy-{i}", EndpointType.PROXY, 10262) for i in range(4))
    gw4 = replace(gw, status=replace(gw.status, active_endpoints=eps))
    node = VIEW.nodes["edge-2"]
    nodes = {f"n{i}": replace(node, meta=replace(node.meta, name=f"n{i}")) for i in range(40)}
    view = replace(VIEW, gateways={**VIEW.gateways, "gw-a": gw4}, nodes={**VIEW.nodes, **nodes})
    firsts = set()
    for name in nodes:
        route = plan_route(name, 10250, True, view, "cloud-1")
        assert isinstance(route, ViaTunnel) and sorted(route.via) == [e.node_name for e in eps]
        firsts.add(route.via[0])
    assert len(firsts) > 1  # the pool's nodes spread over its proxy replicas
    route = ViaTunnel("n1", 10250, True, "g", ("a", "b"))
    assert choose_tunnel(route, frozenset({"b"})) == "b"
    refused = choose_tunnel(route, frozenset())
    assert isinstance(refused, Refusal) and refused.status == 503


def test_spread_is_stable_per_node() -> None:
    r1 = plan_route("edge-2", 10250, True, VIEW, "cloud-1")
    r2 = plan_route("edge-2", 10250, True, VIEW, "cloud-1")
    assert r1 == r2


def test_edge_destination_only_in_own_pool() -> None:
    assert edge_destination("edge-2", 10250, True, VIEW, "edge-1") == ("127.0.0.22", 10250)
    assert edge_destination("edge-3", 10250, True, VIEW, "edge-3") == ("127.0.0.22", 10250)
    other = edge_destination("edge-3", 10250, True, VIEW, "edge-1")
    assert isinstance(other, Refusal) and "not in the pool" in other.reason
    port = edge_destination("edge-2", 6443, True, VIEW, "edge-1")
    assert isinstance(port, Refusal) and port.status == 403


@pytest.mark.parametrize(
    ("cn", "groups", "allowed", "ok"),
    [
        ("kube-apiserver-kubelet-client", {"system:masters"}, set(), True),
        ("system:node:edge-1", {"system:nodes"}, set(), False),
        ("ravend:tunnel:edge-1", {"ravend:tunnel-clients"}, set(), False),
        ("someone", {"system:nodes"}, set(), False),
        (None, set(), set(), False),
        ("admin", set(), {"kube-apiserver-kubelet-client"}, False),
        ("kube-apiserver-kubelet-client", set(), {"kube-apiserver-kubelet-client"}, True),
    ],
)
def test_authorise_caller(cn: str | None, groups: set[str], allowed: set[str], ok: bool) -> None:
    refused = authorise_caller(cn, frozenset(groups), frozenset(allowed))
    assert (refused is None) == ok


def test_tunnel_servers_and_serving_sans() -> None:
    assert tunnel_servers(VIEW) == (("127.0.0.11", 10262),)
    gw = VIEW.gateways["gw-cloud"]
    ep = Endpoint("cloud-1", EndpointType.PROXY, 10262, public_ip="203.0.113.5")
    view = replace(
        VIEW,
        gateways={
            **VIEW.gateways,
            "gw-cloud": replace(gw, status=replace(gw.status, active_endpoints=(ep,))),
        },
    )
    assert tunnel_servers(view) == (("203.0.113.5", 10262),)
    sans = wanted_serving_sans(view, "cloud-1", ("10.96.0.20",), "cluster.local")
    assert "cloud-1" in sans.dns
    assert "x-raven-proxy-internal-svc.kube-system.svc.cluster.local" in sans.dns
    assert {ipaddress.ip_address(a) for a in ("127.0.0.11", "10.96.0.20", "203.0.113.5")} <= set(
        sans.ips
    )
