"""DNS hosts and proxy Services planned from the view (pure)."""

from types import MappingProxyType

from ravend.controllers.desired import (
    internal_endpoints,
    internal_service,
    public_services,
    tunnel_nodes,
)
from ravend.model import (
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
)


def view(l7: bool = True, expose: ExposeType = ExposeType.PUBLIC_IP) -> ClusterView:
    nodes = {
        "cloud-a": Node(ObjectMeta("cloud-a"), internal_ips=("192.168.0.195",)),
        "edge-b": Node(ObjectMeta("edge-b"), internal_ips=("172.16.2.103",)),
        "ext-only": Node(ObjectMeta("ext-only"), external_ips=("198.51.100.7",)),
    }
    cloud = Gateway(
        ObjectMeta("gw-cloud"),
        GatewaySpec(
            proxy_config=ProxyConfig(1, "10255,9445", "10250,9100"),
            expose_type=expose,
        ),
        GatewayStatus(
            active_endpoints=(
                Endpoint("cloud-a", EndpointType.PROXY, 10262),
                Endpoint("cloud-a", EndpointType.TUNNEL, 4500),
            )
        ),
    )
    edge = Gateway(
        ObjectMeta("gw-edge"),
        GatewaySpec(),
        GatewayStatus(active_endpoints=(Endpoint("edge-b", EndpointType.PROXY, 10262),)),
    )
    return ClusterView(
        gateways=MappingProxyType({"gw-cloud": cloud, "gw-edge": edge}),
        nodes=MappingProxyType(nodes),
        raven_cfg=RavenConfig(l3_enabled=True, l7_enabled=l7, present=True),
        synced=True,
    )


def test_dns_points_every_node_at_the_proxy_while_l7_is_on() -> None:
    assert tunnel_nodes(view(), "10.96.0.50") == (
        "10.96.0.50\tcloud-a\n10.96.0.50\tedge-b\n10.96.0.50\text-only\n"
    )


def test_dns_uses_node_ips_when_l7_is_off_or_no_cluster_ip() -> None:
    expected = "192.168.0.195\tcloud-a\n172.16.2.103\tedge-b\n198.51.100.7\text-only\n"
    assert tunnel_nodes(view(l7=False), "10.96.0.50") == expected
    assert tunnel_nodes(view(), None) == expected


def test_internal_service_ports_and_endpoints() -> None:
    svc = internal_service(view())
    ports = {(p["port"], p["targetPort"]) for p in svc["spec"]["ports"]}
    assert ports == {(9100, 10263), (10250, 10263), (9445, 10264), (10255, 10264)}
    eps = internal_endpoints(view())
    # Only exposed gateways' active proxies serve the front ends.
    assert eps["subsets"][0]["addresses"] == [{"ip": "192.168.0.195"}]
    assert {p["port"] for p in eps["subsets"][0]["ports"]} == {10263, 10264}


def test_load_balancer_services_per_active_endpoint() -> None:
    assert public_services(view()) == {}
    services = public_services(view(expose=ExposeType.LOAD_BALANCER))
    protocols = sorted(s["spec"]["ports"][0]["protocol"] for s in services.values())
    assert protocols == ["TCP", "UDP"]
    assert all(len(name) <= 63 for name in services)
