"""Objects and identities a simulated cluster starts with."""

from __future__ import annotations

from ravend.sim.topology_default import default_topology
from ravend.sim.topology_k8s import (
    AGENT_USER,
    NODE_NAME_EXTRA,
    agent_identity,
    node_manifest,
    seed_objects,
)

NOW = "2025-01-01T00:00:00Z"


def test_node_is_registered_ready_with_internal_ip_and_pod_cidr() -> None:
    node = default_topology().node("izm5eb24dmjfimuaybpnr0z")
    obj = node_manifest(node, NOW)
    assert obj["metadata"]["labels"] == {
        "raven.openyurt.io/gateway": "gw-qingdao",
        "openyurt.io/is-edge-worker": "true",
    }
    assert obj["spec"] == {"podCIDR": "10.244.5.0/24", "podCIDRs": ["10.244.5.0/24"]}
    assert obj["status"]["addresses"][0] == {"type": "InternalIP", "address": "172.16.1.90"}
    [ready] = obj["status"]["conditions"]
    assert (ready["type"], ready["status"], ready["lastHeartbeatTime"]) == ("Ready", "True", NOW)


def test_seed_order_nodes_then_config_then_gateways() -> None:
    objs = seed_objects(default_topology(), NOW)
    kinds = [o["kind"] for _, o in objs]
    assert kinds == ["Node"] * 6 + ["ConfigMap"] + ["Gateway"] * 3
    path, cfg = objs[6]
    assert path == "/api/v1/namespaces/kube-system/configmaps"
    assert cfg["metadata"] == {"name": "raven-cfg", "namespace": "kube-system"}
    assert cfg["data"] == {"enable-l3-tunnel": "true", "enable-l7-proxy": "true"}


def test_agent_identity_is_bound_to_its_node() -> None:
    ident = agent_identity("node-a", "tok")
    assert (ident.token, ident.user) == ("tok", AGENT_USER)
    assert ident.extra == {NODE_NAME_EXTRA: ["node-a"]}
