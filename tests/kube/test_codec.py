"""JSON <-> model codecs: the manual's Gateways, malformed objects, round trips."""

from __future__ import annotations

import copy
from types import MappingProxyType
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ravend.kube.codec import (
    CodecError,
    gateway_from_json,
    gateway_status_to_json,
    gateway_to_json,
    lease_from_json,
    lease_to_json,
    node_from_json,
    node_to_json,
    raven_config_from_configmap,
)
from ravend.kube.conversion import V1ALPHA1, V1BETA1
from ravend.model import (
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
    TunnelConfig,
)

JSON = dict[str, Any]
CLOUD_NODE = "izwz9dohcv74iegqecp4axz"

GW_CLOUD: JSON = {
    "apiVersion": V1BETA1,
    "kind": "Gateway",
    "metadata": {"name": "gw-cloud", "resourceVersion": "12", "uid": "u-1"},
    "spec": {
        "exposeType": "PublicIP",
        "proxyConfig": {
            "Replicas": 1,
            "proxyHTTPPort": "10255,9445",
            "proxyHTTPSPort": "10250,9100",
        },
        "tunnelConfig": {"Replicas": 1},
        "endpoints": [
            {
                "nodeName": CLOUD_NODE,
                "underNAT": False,
                "port": 10262,
                "type": "proxy",
                "publicIP": "47.0.0.1",
            },
            {
                "nodeName": CLOUD_NODE,
                "underNAT": False,
                "port": 4500,
                "type": "tunnel",
                "publicIP": "47.0.0.1",
            },
        ],
    },
    "status": {
        "nodes": [
            {"nodeName": CLOUD_NODE, "privateIP": "192.168.0.195", "subnets": ["10.244.0.0/26"]},
            {
                "nodeName": "izwz9ey0js5z7mornclpd6z",
                "privateIP": "192.168.0.196",
                "subnets": ["10.244.0.64/26"],
            },
        ],
        "activeEndpoints": [
            {
                "nodeName": CLOUD_NODE,
                "type": "proxy",
                "port": 10262,
                "underNAT": False,
                "publicIP": "47.0.0.1",
                "config": {"enable-l7-proxy": "true"},
            },
            {
                "nodeName": CLOUD_NODE,
                "type": "tunnel",
                "port": 4500,
                "underNAT": False,
                "publicIP": "47.0.0.1",
                "config": {"enable-l3-tunnel": "true"},
            },
        ],
    },
}


def test_manual_gateway_parses_to_the_model() -> None:
    gw = gateway_from_json(GW_CLOUD)
    assert gw.name == "gw-cloud"
    assert gw.meta.resource_version == "12"
    assert gw.is_exposed and gw.spec.expose_type is ExposeType.PUBLIC_IP
    assert gw.spec.proxy_config.http_ports == (9445, 10255)
    assert gw.spec.proxy_config.https_ports == (9100, 10250)
    assert gw.spec.tunnel_config.replicas == 1
    assert [(e.type, e.port, e.public_ip) for e in gw.spec.endpoints] == [
        (EndpointType.PROXY, 10262, "47.0.0.1"),
        (EndpointType.TUNNEL, 4500, "47.0.0.1"),
    ]
    (tunnel,) = gw.active(EndpointType.TUNNEL)
    assert tunnel.node_name == CLOUD_NODE
    assert tunnel.config == {"enable-l3-tunnel": "true"}
    assert [n.private_ip for n in gw.status.nodes] == ["192.168.0.195", "192.168.0.196"]
    assert gw.status.nodes[1].subnets == ("10.244.0.64/26",)


def test_manual_gateway_status_serialises_back_unchanged() -> None:
    gw = gateway_from_json(GW_CLOUD)
    assert gateway_status_to_json(gw.status) == GW_CLOUD["status"]
    assert gateway_from_json(gateway_to_json(gw)) == gw


def test_missing_ports_get_ravens_defaults() -> None:
    obj: JSON = {
        "apiVersion": V1BETA1,
        "kind": "Gateway",
        "metadata": {"name": "g"},
        "spec": {
            "endpoints": [{"nodeName": "a", "type": "proxy"}, {"nodeName": "a", "type": "tunnel"}]
        },
    }
    gw = gateway_from_json(obj)
    assert [e.port for e in gw.spec.endpoints] == [10262, 4500]
    assert gw.status == GatewayStatus()


def test_v1alpha1_gateway_is_converted_before_parsing() -> None:
    obj: JSON = {
        "apiVersion": V1ALPHA1,
        "kind": "Gateway",
        "metadata": {"name": "gw-legacy"},
        "spec": {
            "exposeType": "LoadBalancer",
            "endpoints": [
                {"nodeName": "node-a", "underNAT": False},
                {"nodeName": "node-b", "underNAT": False, "config": {"foo": "bar"}},
            ],
        },
    }
    gw = gateway_from_json(obj)
    assert gw.spec.proxy_config.replicas == 1 and gw.spec.tunnel_config.replicas == 1
    assert [(e.node_name, e.type, e.port) for e in gw.spec.endpoints] == [
        ("node-a", EndpointType.TUNNEL, 4500),
        ("node-b", EndpointType.TUNNEL, 4500),
    ]
    assert gw.spec.endpoints[1].config == {"foo": "bar"}


def _broken(path: list[str | int], value: object) -> JSON:
    obj = copy.deepcopy(GW_CLOUD)
    target: Any = obj
    for step in path[:-1]:
        target = target[step]
    if value is KeyError:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return obj


@pytest.mark.parametrize(
    ("path", "value", "field"),
    [
        (["spec", "endpoints", 1, "type"], "ipsec", "spec.endpoints[1].type"),
        (["spec", "endpoints", 0, "port"], "10262", "spec.endpoints[0].port"),
        (["spec", "endpoints", 0, "port"], 70000, "spec.endpoints[0].port"),
        (["spec", "endpoints", 1, "underNAT"], "yes", "spec.endpoints[1].underNAT"),
        (["spec", "endpoints", 1, "nodeName"], KeyError, "spec.endpoints[1].nodeName"),
        (["spec", "endpoints", 1, "nodeName"], "", "spec.endpoints[1].nodeName"),
        (
            ["spec", "endpoints", 0, "config"],
            {"publicKey": 5},
            "spec.endpoints[0].config.publicKey",
        ),
        (["spec", "endpoints"], {"a": 1}, "spec.endpoints"),
        (["spec", "exposeType"], "NodePort", "spec.exposeType"),
        (["spec", "proxyConfig", "Replicas"], -1, "spec.proxyConfig.Replicas"),
        (["spec", "tunnelConfig", "Replicas"], True, "spec.tunnelConfig.Replicas"),
        (["status", "nodes", 0, "subnets"], [1], "status.nodes[0].subnets"),
        (["status", "activeEndpoints", 0, "type"], 3, "status.activeEndpoints[0].type"),
        (["metadata", "name"], KeyError, "metadata.name"),
    ],
)
def test_malformed_gateway_names_the_field(
    path: list[str | int], value: object, field: str
) -> None:
    with pytest.raises(CodecError) as info:
        gateway_from_json(_broken(path, value))
    assert info.value.path == field
    assert isinstance(info.value, ValueError)
    assert field in str(info.value)


def test_node_parsing() -> None:
    obj: JSON = {
        "metadata": {
            "name": "izbp15inok0kbfkg3in52rz",
            "labels": {
                "raven.openyurt.io/gateway": "gw-hangzhou",
                "openyurt.io/is-edge-worker": "true",
            },
        },
        "spec": {"podCIDR": "10.244.2.0/24", "podCIDRs": ["10.244.2.0/24", "fd00::/64"]},
        "status": {
            "addresses": [
                {"type": "Hostname", "address": "izbp15inok0kbfkg3in52rz"},
                {"type": "ExternalIP", "address": "120.0.0.5"},
                {"type": "InternalIP", "address": "172.16.2.103"},
            ],
            "conditions": [
                {"type": "MemoryPressure", "status": "False"},
                {"type": "Ready", "status": "True"},
            ],
        },
    }
    node = node_from_json(obj)
    assert node.gateway == "gw-hangzhou" and node.is_edge_worker
    assert node.private_ip == "172.16.2.103"
    assert node.external_ips == ("120.0.0.5",)
    assert node.pod_cidrs == ("10.244.2.0/24", "fd00::/64")
    assert node.ready
    assert node_from_json(node_to_json(node)) == node


@pytest.mark.parametrize(
    ("conditions", "ready"),
    [
        ([], False),
        ([{"type": "Ready", "status": "False"}], False),
        ([{"type": "Ready", "status": "Unknown"}], False),
        ([{"type": "Ready", "status": "True"}], True),
    ],
)
def test_node_ready_condition(conditions: list[JSON], ready: bool) -> None:
    obj: JSON = {
        "metadata": {"name": "n"},
        "spec": {"podCIDR": "10.0.0.0/24"},
        "status": {"conditions": conditions},
    }
    node = node_from_json(obj)
    assert node.ready is ready
    assert node.pod_cidrs == ("10.0.0.0/24",)  # single-stack podCIDR fallback


@pytest.mark.parametrize(
    ("data", "l3", "l7"),
    [
        ({"enable-l3-tunnel": "true", "enable-l7-proxy": "true"}, True, True),
        ({"enable-l3-tunnel": "true"}, True, False),
        ({"enable-l3-tunnel": "false", "enable-l7-proxy": "True"}, False, True),
        ({"enable-l3-tunnel": "yes"}, False, False),
        ({}, False, False),
    ],
)
def test_raven_cfg(data: dict[str, str], l3: bool, l7: bool) -> None:
    cfg = raven_config_from_configmap({"metadata": {"name": "raven-cfg"}, "data": data})
    assert (cfg.l3_enabled, cfg.l7_enabled, cfg.present) == (l3, l7, True)


def test_absent_raven_cfg_means_both_off() -> None:
    cfg = raven_config_from_configmap(None)
    assert (cfg.l3_enabled, cfg.l7_enabled, cfg.present) == (False, False, False)


def test_lease_round_trip() -> None:
    lease = Lease(
        meta=ObjectMeta(
            name="ravend-controller",
            namespace="kube-system",
            labels=MappingProxyType({"app.kubernetes.io/managed-by": "ravend"}),
        ),
        holder="node-a",
        lease_duration_seconds=6,
        acquire_time="2024-01-01T00:00:00.000000Z",
        renew_time="2024-01-01T00:00:05.123456Z",
        lease_transitions=3,
    )
    obj = lease_to_json(lease)
    assert obj["spec"]["holderIdentity"] == "node-a"
    assert obj["spec"]["renewTime"] == "2024-01-01T00:00:05.123456Z"
    assert lease_from_json(obj) == lease


# ---- property: any model Gateway survives JSON ---------------------------------------------

names = st.text("abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=12)
str_map = st.dictionaries(names, names, max_size=3).map(MappingProxyType)
endpoints = st.builds(
    Endpoint,
    node_name=names,
    type=st.sampled_from(EndpointType),
    port=st.integers(1, 65535),
    under_nat=st.booleans(),
    public_ip=st.sampled_from(["", "1.2.3.4"]),
    public_port=st.integers(0, 65535),
    nat_type=st.sampled_from(["", "FullCone"]),
    config=str_map,
)
gateways = st.builds(
    Gateway,
    meta=st.builds(
        ObjectMeta,
        name=names,
        resource_version=st.sampled_from(["", "42"]),
        labels=str_map,
        annotations=str_map,
    ),
    spec=st.builds(
        GatewaySpec,
        node_selector=st.just(MappingProxyType({"matchLabels": {"a": "b"}})),
        proxy_config=st.builds(
            ProxyConfig,
            replicas=st.integers(0, 3),
            proxy_http_port=st.sampled_from(["", "10255,9445"]),
            proxy_https_port=st.sampled_from(["", "10250"]),
        ),
        tunnel_config=st.builds(TunnelConfig, replicas=st.integers(0, 1)),
        endpoints=st.lists(endpoints, max_size=4).map(tuple),
        expose_type=st.sampled_from(ExposeType),
    ),
    status=st.builds(
        GatewayStatus,
        nodes=st.lists(
            st.builds(
                NodeInfo,
                node_name=names,
                private_ip=st.just("10.0.0.1"),
                subnets=st.lists(names, max_size=2).map(tuple),
            ),
            max_size=3,
        ).map(tuple),
        active_endpoints=st.lists(endpoints, max_size=3).map(tuple),
    ),
)


@given(gateways)
def test_property_gateway_json_round_trip(gw: Gateway) -> None:
    assert gateway_from_json(gateway_to_json(gw)) == gw


@given(
    st.builds(
        Node,
        meta=st.builds(ObjectMeta, name=names, labels=str_map),
        internal_ips=st.lists(st.just("10.0.0.2"), max_size=2).map(tuple),
        external_ips=st.lists(st.just("1.1.1.1"), max_size=1).map(tuple),
        pod_cidrs=st.lists(st.just("10.244.0.0/24"), max_size=2).map(tuple),
        ready=st.booleans(),
    )
)
def test_property_node_json_round_trip(node: Node) -> None:
    assert node_from_json(node_to_json(node)) == node
