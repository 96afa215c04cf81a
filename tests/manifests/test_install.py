"""What `kubectl apply -k manifests/` installs: complete, least-privilege, wired together."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from ravend.settings import DEFAULT_OBSERVE_PORT, DEFAULT_STATE_DIR, DEFAULT_WEBHOOK_PORT

Doc = dict[str, Any]
NAMESPACED = {
    "ServiceAccount", "Role", "RoleBinding", "ConfigMap", "DaemonSet", "Deployment", "Service"
}  # fmt: skip
CLUSTER_SCOPED = {
    "CustomResourceDefinition",
    "ClusterRole",
    "ClusterRoleBinding",
    "ValidatingWebhookConfiguration",
}


def find(docs: list[Doc], kind: str, name: str) -> Doc:
    matches = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(matches) == 1, f"want exactly one {kind}/{name}, found {len(matches)}"
    return matches[0]


def container(docs: list[Doc]) -> Doc:
    (c,) = find(docs, "DaemonSet", "ravend")["spec"]["template"]["spec"]["containers"]
    assert isinstance(c, dict)
    return c


def test_every_manifest_parses_and_names_its_kind(manifests_dir: Path) -> None:
    files = sorted(manifests_dir.rglob("*.yaml"))
    assert len(files) >= 10
    for path in files:
        docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
        assert docs, f"{path} is empty"
        for d in docs:
            assert isinstance(d, dict) and d.get("apiVersion") and d.get("kind"), path


def test_kustomization_lists_exactly_the_files_present(manifests_dir: Path) -> None:
    kust = yaml.safe_load((manifests_dir / "kustomization.yaml").read_text())
    present = {p.name for p in manifests_dir.glob("*.yaml")} - {"kustomization.yaml"}
    assert sorted(kust["resources"]) == sorted(present)
    assert len(set(kust["resources"])) == len(kust["resources"])


def test_objects_are_unique_and_in_kube_system(install_docs: list[Doc]) -> None:
    seen = set()
    for d in install_docs:
        key = (d["kind"], d["metadata"].get("namespace"), d["metadata"]["name"])
        assert key not in seen, key
        seen.add(key)
        if d["kind"] in NAMESPACED:
            assert d["metadata"].get("namespace") == "kube-system", key
        else:
            assert d["kind"] in CLUSTER_SCOPED and "namespace" not in d["metadata"], key


def test_daemonset_runs_the_agent_on_every_node(install_docs: list[Doc]) -> None:
    ds = find(install_docs, "DaemonSet", "ravend")
    pod = ds["spec"]["template"]["spec"]
    assert (
        ds["spec"]["selector"]["matchLabels"].items()
        <= ds["spec"]["template"]["metadata"]["labels"].items()
    )
    assert pod["hostNetwork"] is True
    assert pod["dnsPolicy"] == "ClusterFirstWithHostNet"
    assert {"operator": "Exists"} in pod["tolerations"], "must tolerate every taint"
    assert pod["priorityClassName"] == "system-node-critical"
    assert pod["terminationGracePeriodSeconds"] == 30
    assert pod["serviceAccountName"] == "ravend"
    assert ds["spec"]["updateStrategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxUnavailable": 1},
    }
    c = container(install_docs)
    assert c["args"] == ["agent"]
    assert c["image"] == "ghcr.io/ravend/ravend:0.1.0"
    assert c["securityContext"].get("privileged") is True
    assert c["resources"]["requests"]["cpu"] and c["resources"]["requests"]["memory"]


def test_daemonset_env_comes_from_the_downward_api(install_docs: list[Doc]) -> None:
    env = {e["name"]: e for e in container(install_docs)["env"]}
    assert env["NODE_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "spec.nodeName"}}
    assert env["NODE_IP"]["valueFrom"] == {"fieldRef": {"fieldPath": "status.hostIP"}}
    assert env["RAVEND_STATE_DIR"]["value"] == str(DEFAULT_STATE_DIR)


def test_probes_hit_the_observe_port_ravend_listens_on(install_docs: list[Doc]) -> None:
    c = container(install_docs)
    env = {e["name"]: e.get("value") for e in c["env"]}
    port = int(env.get("RAVEND_OBSERVE_PORT") or DEFAULT_OBSERVE_PORT)
    assert port == DEFAULT_OBSERVE_PORT == 10265
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": port}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": port}
    ports = {(p["containerPort"], p["protocol"]) for p in c["ports"]}
    assert {(10262, "TCP"), (10263, "TCP"), (10264, "TCP"), (port, "TCP")} <= ports
    assert {(4500, "UDP"), (4472, "UDP")} <= ports


def test_host_paths(install_docs: list[Doc]) -> None:
    pod = find(install_docs, "DaemonSet", "ravend")["spec"]["template"]["spec"]
    host = {v["name"]: v["hostPath"]["path"] for v in pod["volumes"]}
    mounts = {m["name"]: m for m in pod["containers"][0]["volumeMounts"]}
    by_path = {host[n]: m for n, m in mounts.items()}
    assert by_path[str(DEFAULT_STATE_DIR)]["mountPath"] == str(DEFAULT_STATE_DIR)
    assert by_path["/run/wireguard"]["mountPath"] == "/run/wireguard"
    assert by_path["/lib/modules"]["readOnly"] is True


def test_webhook_service_reaches_every_ravend_webhook_port(install_docs: list[Doc]) -> None:
    svc = find(install_docs, "Service", "ravend-webhook")
    pod_labels = find(install_docs, "DaemonSet", "ravend")["spec"]["template"]["metadata"]["labels"]
    assert svc["spec"]["selector"].items() <= pod_labels.items()
    (port,) = svc["spec"]["ports"]
    assert port["port"] == 443 and port["targetPort"] == DEFAULT_WEBHOOK_PORT
    env = {e["name"]: e.get("value") for e in container(install_docs)["env"]}
    assert int(env["RAVEND_WEBHOOK_PORT"]) == DEFAULT_WEBHOOK_PORT
    assert svc["spec"]["internalTrafficPolicy"] == "Local"


def test_validating_webhook_points_at_the_service(install_docs: list[Doc]) -> None:
    cfg = find(install_docs, "ValidatingWebhookConfiguration", "ravend-gateway-validation")
    (hook,) = cfg["webhooks"]
    assert hook["failurePolicy"] == "Fail" and hook["sideEffects"] == "None"
    assert hook["admissionReviewVersions"] == ["v1"]
    assert hook["clientConfig"]["service"] == {
        "namespace": "kube-system",
        "name": "ravend-webhook",
        "path": "/validate",
        "port": 443,
    }
    (rule,) = hook["rules"]
    assert rule["apiGroups"] == ["raven.openyurt.io"] and rule["resources"] == ["gateways"]
    assert set(rule["operations"]) == {"CREATE", "UPDATE"}
    assert hook["matchPolicy"] == "Equivalent", "v1alpha1 writes must be validated too"


def test_raven_cfg_turns_both_planes_on(install_docs: list[Doc]) -> None:
    cfg = find(install_docs, "ConfigMap", "raven-cfg")
    assert cfg["data"] == {"enable-l3-tunnel": "true", "enable-l7-proxy": "true"}


def rules_of(docs: list[Doc]) -> list[tuple[str, Doc]]:
    return [
        (f"{d['kind']}/{d['metadata']['name']}", r)
        for d in docs
        if d["kind"] in ("ClusterRole", "Role")
        for r in d["rules"]
    ]


def test_rbac_has_no_wildcards(install_docs: list[Doc]) -> None:
    rules = rules_of(install_docs)
    assert rules
    for where, rule in rules:
        for key in ("verbs", "resources", "apiGroups", "resourceNames"):
            assert "*" not in rule.get(key, []), f"{where}: wildcard {key}"
        assert "escalate" not in rule["verbs"] and "bind" not in rule["verbs"], where
        assert "secrets" not in rule["resources"], where


def allows(docs: list[Doc], role: str, group: str, resource: str, verb: str) -> bool:
    return any(
        where == role and group in r["apiGroups"] and resource in r["resources"]
        and verb in r["verbs"]
        for where, r in rules_of(docs)
    )  # fmt: skip


@pytest.mark.parametrize(
    ("role", "group", "resource", "verbs"),
    [
        ("ClusterRole/ravend", "raven.openyurt.io", "gateways", "get list watch update patch"),
        ("ClusterRole/ravend", "raven.openyurt.io", "gateways/status", "update patch"),
        ("ClusterRole/ravend", "", "nodes", "get list watch"),
        ("ClusterRole/ravend", "", "pods", "get list watch"),
        ("ClusterRole/ravend", "", "events", "create patch"),
        ("ClusterRole/ravend", "certificates.k8s.io", "certificatesigningrequests",
         "create get list watch"),
        ("ClusterRole/ravend", "certificates.k8s.io", "certificatesigningrequests/approval",
         "update"),
        ("Role/ravend", "", "configmaps", "get list watch create update patch delete"),
        ("Role/ravend", "", "services", "get list watch create update patch delete"),
        ("Role/ravend", "", "endpoints", "get list watch create update patch delete"),
        ("Role/ravend", "coordination.k8s.io", "leases", "get list watch create update"),
        ("ClusterRole/ravend-proxy-client", "", "nodes/proxy", "get create"),
        ("ClusterRole/ravend-proxy-client", "", "nodes/log", "get"),
        ("ClusterRole/ravend-proxy-client", "", "nodes/stats", "get"),
        ("ClusterRole/ravend-proxy-client", "", "nodes/metrics", "get"),
    ],
)  # fmt: skip
def test_rbac_grants_what_ravend_uses(
    install_docs: list[Doc], role: str, group: str, resource: str, verbs: str
) -> None:
    for verb in verbs.split():
        assert allows(install_docs, role, group, resource, verb), f"{role}: {verb} {resource}"


def test_rbac_withholds_what_ravend_does_not_need(install_docs: list[Doc]) -> None:
    assert not allows(install_docs, "ClusterRole/ravend", "", "nodes", "update")
    assert not allows(install_docs, "ClusterRole/ravend", "", "pods", "create")
    assert not allows(install_docs, "ClusterRole/ravend", "", "configmaps", "update"), (
        "ConfigMap writes belong to the kube-system Role, not cluster-wide"
    )
    assert not allows(install_docs, "ClusterRole/ravend", "raven.openyurt.io", "gateways", "delete")
    assert not allows(install_docs, "ClusterRole/ravend-proxy-client", "", "nodes", "get")
    (signers,) = [r for w, r in rules_of(install_docs) if "signers" in r["resources"]]
    assert signers["verbs"] == ["approve"]
    assert set(signers["resourceNames"]) == {
        "kubernetes.io/kubelet-serving",
        "kubernetes.io/kube-apiserver-client",
    }
    for where, rule in rules_of(install_docs):
        if set(rule["resources"]) & {
            "customresourcedefinitions",
            "validatingwebhookconfigurations",
        }:
            assert rule.get("resourceNames"), f"{where}: webhook patching must be by name"


def test_bindings_reach_the_right_subjects(install_docs: list[Doc]) -> None:
    sa = {"kind": "ServiceAccount", "name": "ravend", "namespace": "kube-system"}
    assert find(install_docs, "ServiceAccount", "ravend")
    for kind, name in [("ClusterRoleBinding", "ravend"), ("RoleBinding", "ravend")]:
        binding = find(install_docs, kind, name)
        assert binding["subjects"] == [sa]
        role_kind = "ClusterRole" if kind == "ClusterRoleBinding" else "Role"
        assert binding["roleRef"]["kind"] == role_kind
        assert find(install_docs, role_kind, binding["roleRef"]["name"])
    proxy = find(install_docs, "ClusterRoleBinding", "ravend-proxy-client")
    assert proxy["roleRef"]["name"] == "ravend-proxy-client"
    assert proxy["subjects"] == [
        {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "ravend-proxy-client"}
    ]


def test_coredns_serves_edge_tunnel_nodes(install_docs: list[Doc]) -> None:
    corefile = find(install_docs, "ConfigMap", "raven-coredns")["data"]["Corefile"]
    assert "hosts /etc/edge/tunnel-nodes" in corefile and "fallthrough" in corefile
    deploy = find(install_docs, "Deployment", "raven-coredns")
    pod = deploy["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    (mount,) = [m for m in pod["containers"][0]["volumeMounts"] if m["mountPath"] == "/etc/edge"]
    source = volumes[mount["name"]]["configMap"]
    assert source["name"] == "edge-tunnel-nodes" and source["optional"] is True
    assert source["items"] == [{"key": "tunnel-nodes", "path": "tunnel-nodes"}]
    svc = find(install_docs, "Service", "raven-coredns")
    assert svc["spec"]["selector"].items() <= pod_labels(deploy).items()
    assert {(p["port"], p["protocol"]) for p in svc["spec"]["ports"]} == {(53, "UDP"), (53, "TCP")}
    assert not any(d["metadata"]["name"] == "edge-tunnel-nodes" for d in install_docs), (
        "ravend owns edge-tunnel-nodes; shipping it would let kubectl apply wipe its content"
    )


def pod_labels(workload: Doc) -> dict[str, str]:
    labels: dict[str, str] = workload["spec"]["template"]["metadata"]["labels"]
    return labels


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl not installed")
def test_kubectl_kustomize_builds_everything(manifests_dir: Path, install_docs: list[Doc]) -> None:
    out = subprocess.run(
        ["kubectl", "kustomize", str(manifests_dir)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    built = [d for d in yaml.safe_load_all(out) if d]
    key = lambda d: (d["kind"], d["metadata"]["name"])  # noqa: E731
    assert sorted(map(key, built)) == sorted(map(key, install_docs))
