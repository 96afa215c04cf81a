"""Kubernetes objects and identities a simulated cluster starts with (pure, no I/O).

From a Topology: one Node per simulated node (InternalIP, Ready, podCIDR(s), labels), the
Gateways, ConfigMap kube-system/raven-cfg, and the per-node token identity ravend agents use
(`system:serviceaccount:kube-system:ravend` bound to its node, as a projected service account
token of a DaemonSet pod is).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ravend.model import RAVEN_CFG_NAME, RAVEN_NAMESPACE
from ravend.sim.topology import SimNode, Topology

AGENT_USER = "system:serviceaccount:kube-system:ravend"
AGENT_GROUPS = ("system:serviceaccounts", "system:serviceaccounts:kube-system")
NODE_NAME_EXTRA = "authentication.kubernetes.io/node-name"
"""User extra the API server sets for tokens bound to a pod on a node (k8s >= 1.30)."""
ADMIN_USER = "sim-admin"
ADMIN_GROUPS = ("system:masters",)


@dataclass(frozen=True)
class TokenIdentity:
    """A bearer token and who it authenticates as."""

    token: str
    user: str
    groups: tuple[str, ...] = ()
    extra: dict[str, list[str]] = field(default_factory=dict)


def agent_identity(node: str, token: str) -> TokenIdentity:
    """The identity of the ravend agent on `node`: can only ever speak for that node."""
    return TokenIdentity(token, AGENT_USER, AGENT_GROUPS, {NODE_NAME_EXTRA: [node]})


def admin_identity(token: str) -> TokenIdentity:
    return TokenIdentity(token, ADMIN_USER, ADMIN_GROUPS)


def node_manifest(node: SimNode, now: str) -> dict[str, Any]:
    """A core/v1 Node as a kubelet would register it, already Ready (`now`: RFC 3339)."""
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": node.name, "labels": dict(node.labels)},
        "spec": {"podCIDR": node.pod_cidr, "podCIDRs": list(node.pod_cidrs)},
        "status": {
            "addresses": [
                {"type": "InternalIP", "address": node.ip},
                {"type": "Hostname", "address": node.name},
            ],
            "conditions": [
                {
                    "type": "Ready",
                    "status": "True",
                    "reason": "KubeletReady",
                    "message": "simulated node",
                    "lastHeartbeatTime": now,
                    "lastTransitionTime": now,
                }
            ],
        },
    }


def raven_cfg_manifest(data: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": RAVEN_CFG_NAME, "namespace": RAVEN_NAMESPACE},
        "data": dict(data),
    }


def seed_objects(topo: Topology, now: str) -> list[tuple[str, dict[str, Any]]]:
    """(collection path, object) pairs to POST, in order: nodes, raven-cfg, gateways."""
    out: list[tuple[str, dict[str, Any]]] = [
        ("/api/v1/nodes", node_manifest(n, now)) for n in topo.nodes
    ]
    if topo.raven_cfg is not None:
        path = f"/api/v1/namespaces/{RAVEN_NAMESPACE}/configmaps"
        out.append((path, raven_cfg_manifest(dict(topo.raven_cfg))))
    out += [("/apis/raven.openyurt.io/v1beta1/gateways", g.manifest()) for g in topo.gateways]
    return out
