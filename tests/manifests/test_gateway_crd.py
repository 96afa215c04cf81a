"""The Gateway CRD: Raven's shape, both versions, what it accepts and rejects (via sim.schema)."""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import pytest

from ravend.sim.schema import FieldCause, admit, prune, unknown_fields, validate

Schema = Mapping[str, Any]
Doc = dict[str, Any]
Load = Callable[[str], list[Doc]]

GW_CLOUD: Doc = {
    "apiVersion": "raven.openyurt.io/v1beta1",
    "kind": "Gateway",
    "metadata": {"name": "gw-cloud"},
    "spec": {
        "exposeType": "PublicIP",
        "proxyConfig": {"Replicas": 1, "proxyHTTPPort": "10255,9445"},
        "tunnelConfig": {"Replicas": 1},
        "endpoints": [
            {"nodeName": "n1", "underNAT": False, "port": 10262, "type": "proxy"},
            {"nodeName": "n1", "underNAT": False, "port": 4500, "type": "tunnel"},
        ],
    },
}


def broken(**changes: Any) -> Doc:
    """GW_CLOUD with dotted paths set (a None value deletes), e.g. spec.endpoints.0.type="x"."""
    gw = copy.deepcopy(GW_CLOUD)
    for dotted, value in changes.items():
        *parents, leaf = dotted.split("__")
        node: Any = gw
        for p in parents:
            node = node[int(p)] if p.isdigit() else node[p]
        key: Any = int(leaf) if leaf.isdigit() else leaf
        if value is None:
            del node[key]
        else:
            node[key] = value
    return gw


def test_crd_identity(crd: Doc) -> None:
    spec = crd["spec"]
    assert crd["apiVersion"] == "apiextensions.k8s.io/v1"
    assert crd["metadata"]["name"] == "gateways.raven.openyurt.io"
    assert spec["group"] == "raven.openyurt.io" and spec["scope"] == "Cluster"
    assert spec["names"]["kind"] == "Gateway" and spec["names"]["plural"] == "gateways"
    assert "gw" in spec["names"]["shortNames"] and spec["names"]["categories"]
    versions = {v["name"]: v for v in spec["versions"]}
    assert set(versions) == {"v1beta1", "v1alpha1"}
    assert all(v["served"] for v in versions.values()), "a Raven cluster applies both versions"
    assert [n for n, v in versions.items() if v["storage"]] == ["v1beta1"]
    for v in versions.values():
        assert v["subresources"] == {"status": {}}
        assert any(c["name"] == "Age" for c in v["additionalPrinterColumns"])
    beta_cols = {c["jsonPath"] for c in versions["v1beta1"]["additionalPrinterColumns"]}
    assert ".status.activeEndpoints[*].nodeName" in beta_cols


def test_conversion_goes_to_the_ravend_webhook(crd: Doc) -> None:
    conv = crd["spec"]["conversion"]
    assert conv["strategy"] == "Webhook"
    assert conv["webhook"]["conversionReviewVersions"] == ["v1"]
    service = conv["webhook"]["clientConfig"]["service"]
    assert service == {
        "namespace": "kube-system",
        "name": "ravend-webhook",
        "path": "/convert",
        "port": 443,
    }


def walk(schema: Schema, path: str = "") -> Iterator[tuple[str, Schema]]:
    yield path, schema
    for name, sub in (schema.get("properties") or {}).items():
        yield from walk(sub, f"{path}.{name}")
    if isinstance(schema.get("items"), Mapping):
        yield from walk(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), Mapping):
        yield from walk(schema["additionalProperties"], f"{path}{{}}")


@pytest.mark.parametrize("version", ["v1beta1", "v1alpha1"])
def test_schemas_are_structural(schemas: dict[str, Schema], version: str) -> None:
    """What kube-apiserver demands of a v1 CRD, or it refuses the CRD outright."""
    for path, node in walk(schemas[version]):
        assert node.get("type") in {"object", "array", "string", "integer", "boolean"}, path
        assert not ("properties" in node and "additionalProperties" in node), path
        if node.get("x-kubernetes-list-type") == "map":
            keys = node["x-kubernetes-list-map-keys"]
            item = node["items"]
            for key in keys:  # map keys must be required (or defaulted) scalars
                assert key in item.get("required", []) or "default" in item["properties"][key]
        if "default" in node:
            assert validate(node, node["default"]) == [], f"{path}: default breaks its own schema"


def test_versions_agree_on_shared_fields(schemas: dict[str, Schema]) -> None:
    """A field both versions have obeys the same rules in both (conversion copies it)."""
    beta = dict(walk(schemas["v1beta1"]))
    alpha = dict(walk(schemas["v1alpha1"]))
    shared = sorted(set(beta) & set(alpha))
    assert {".spec.nodeSelector", ".spec.endpoints[].publicIP", ".status.nodes[].subnets"} <= set(
        shared
    )
    keys = ("type", "enum", "required", "minLength", "format", "minimum", "maximum")
    for path in shared:
        for key in keys:
            if key == "required" and path == ".spec.endpoints[]":
                continue  # v1alpha1 endpoints have no `type`, so it cannot be required there
            if key == "required" and path == ".spec":
                continue  # v1alpha1 requires endpoints (as Raven's did); v1beta1 does not
            assert beta[path].get(key) == alpha[path].get(key), f"{path}: {key}"
    assert set(alpha) - set(beta) == {
        ".status.activeEndpoint",
        ".status.activeEndpoint.nodeName",
        ".status.activeEndpoint.underNAT",
        ".status.activeEndpoint.publicIP",
        ".status.activeEndpoint.config",
        ".status.activeEndpoint.config{}",
    }


def test_manual_examples_are_valid_v1beta1(schemas: dict[str, Schema], manifest: Load) -> None:
    gateways = manifest("examples/gateways.yaml")
    assert [g["metadata"]["name"] for g in gateways] == ["gw-hangzhou", "gw-cloud", "gw-qingdao"]
    for gw in gateways:
        version = gw["apiVersion"].split("/")[1]
        assert version == "v1beta1"
        stored, causes = admit(schemas[version], gw)
        assert causes == [], gw["metadata"]["name"]
        assert stored == gw, "nothing pruned, nothing defaulted: the examples are complete"
    cloud = gateways[1]["spec"]
    assert {e["publicIP"] for e in cloud["endpoints"]} == {"203.0.113.10"}


def test_legacy_example_is_valid_v1alpha1_only(schemas: dict[str, Schema], manifest: Load) -> None:
    (gw,) = manifest("examples/gw-legacy-v1alpha1.yaml")
    assert gw["apiVersion"] == "raven.openyurt.io/v1alpha1"
    assert admit(schemas["v1alpha1"], gw) == (gw, [])
    # As v1beta1 it lacks the endpoint type: proof the two schemas really differ.
    assert FieldCause("FieldValueRequired", "Required value", "spec.endpoints[0].type") in (
        validate(schemas["v1beta1"], gw)
    )


def test_v1beta1_fields_in_a_v1alpha1_object_are_pruned(schemas: dict[str, Schema]) -> None:
    """The manual's mistake (v1alpha1 header, v1beta1 body): kube drops the unknown fields."""
    gw = copy.deepcopy(GW_CLOUD)
    gw["apiVersion"] = "raven.openyurt.io/v1alpha1"
    assert sorted(unknown_fields(schemas["v1alpha1"], gw)) == [
        "spec.endpoints[0].port",
        "spec.endpoints[0].type",
        "spec.endpoints[1].port",
        "spec.endpoints[1].type",
        "spec.proxyConfig",
        "spec.tunnelConfig",
    ]
    pruned = prune(schemas["v1alpha1"], gw)
    assert pruned["spec"]["endpoints"][0] == {"nodeName": "n1", "underNAT": False}
    # ...and the two endpoints of n1 then collide on the alpha list-map key.
    assert [c.reason for c in validate(schemas["v1alpha1"], pruned)] == ["FieldValueDuplicate"]


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        (
            {"spec__endpoints__0__type": "relay"},
            FieldCause(
                "FieldValueNotSupported",
                'Unsupported value: "relay": supported values: "proxy", "tunnel"',
                "spec.endpoints[0].type",
            ),
        ),
        (
            {"spec__endpoints__1__nodeName": None},
            FieldCause("FieldValueRequired", "Required value", "spec.endpoints[1].nodeName"),
        ),
        (
            {"spec__endpoints__0__type": None},
            FieldCause("FieldValueRequired", "Required value", "spec.endpoints[0].type"),
        ),
        (
            {"spec__tunnelConfig__Replicas": "string"},
            FieldCause(
                "FieldValueTypeInvalid",
                'Invalid value: "string": spec.tunnelConfig.Replicas in body must be of type '
                'integer: "string"',
                "spec.tunnelConfig.Replicas",
            ),
        ),
        (
            {"spec__proxyConfig__Replicas": -1},
            FieldCause(
                "FieldValueInvalid",
                "Invalid value: -1: spec.proxyConfig.Replicas in body should be greater than or "
                "equal to 0",
                "spec.proxyConfig.Replicas",
            ),
        ),
        (
            {"spec__exposeType": "NodePort"},
            FieldCause(
                "FieldValueNotSupported",
                'Unsupported value: "NodePort": supported values: "", "PublicIP", "LoadBalancer"',
                "spec.exposeType",
            ),
        ),
        (
            {"spec__endpoints__0__underNAT": "false"},
            FieldCause(
                "FieldValueTypeInvalid",
                'Invalid value: "string": spec.endpoints[0].underNAT in body must be of type '
                'boolean: "string"',
                "spec.endpoints[0].underNAT",
            ),
        ),
        (
            {"spec__endpoints__0__port": 70000},
            FieldCause(
                "FieldValueInvalid",
                "Invalid value: 70000: spec.endpoints[0].port in body should be less than or "
                "equal to 65535",
                "spec.endpoints[0].port",
            ),
        ),
        (
            {"spec__endpoints__1__type": "proxy"},
            FieldCause(
                "FieldValueDuplicate",
                'Duplicate value: {"nodeName":"n1","type":"proxy"}',
                "spec.endpoints[1]",
            ),
        ),
        (
            {"spec__endpoints__0__config": {"publicKey": 1}},
            FieldCause(
                "FieldValueTypeInvalid",
                'Invalid value: "integer": spec.endpoints[0].config.publicKey in body must be of '
                'type string: "integer"',
                "spec.endpoints[0].config.publicKey",
            ),
        ),
        (
            {"spec__endpoints": {"nodeName": "n1"}},
            FieldCause(
                "FieldValueTypeInvalid",
                'Invalid value: "object": spec.endpoints in body must be of type array: "object"',
                "spec.endpoints",
            ),
        ),
    ],
)
def test_broken_gateways_are_rejected(
    beta: Schema, changes: dict[str, Any], expected: FieldCause
) -> None:
    assert validate(beta, GW_CLOUD) == []
    _, causes = admit(beta, broken(**changes))
    assert causes == [expected]


def test_unknown_gateway_fields_are_pruned_not_rejected(beta: Schema) -> None:
    gw = broken(spec__proxyConfig__replicas=3, spec__endpoints__0__priority=1, spec__extra="x")
    assert sorted(unknown_fields(beta, gw)) == [
        "spec.endpoints[0].priority",
        "spec.extra",
        "spec.proxyConfig.replicas",
    ]
    assert admit(beta, gw) == (GW_CLOUD, [])


def test_empty_replica_blocks_default_to_zero(beta: Schema) -> None:
    stored, causes = admit(beta, broken(spec__proxyConfig={}, spec__tunnelConfig={}))
    assert causes == []
    assert stored["spec"]["proxyConfig"] == {"Replicas": 0}
    assert stored["spec"]["tunnelConfig"] == {"Replicas": 0}


def test_status_as_the_controller_writes_it(beta: Schema, alpha: Schema) -> None:
    status: Doc = {
        "nodes": [
            {"nodeName": "n1", "privateIP": "192.168.0.195", "subnets": ["10.244.0.0/24"]},
            {"nodeName": "n2", "privateIP": "192.168.0.196", "subnets": []},
        ],
        "activeEndpoints": [
            {"nodeName": "n1", "type": "proxy", "config": {"enable-l7-proxy": "true"}},
            {"nodeName": "n1", "type": "tunnel", "config": {"enable-l3-tunnel": "true"}},
        ],
    }  # fmt: skip
    assert admit(beta, {**GW_CLOUD, "status": status}) == ({**GW_CLOUD, "status": status}, [])
    missing_ip = copy.deepcopy(status)
    del missing_ip["nodes"][1]["privateIP"]
    assert validate(beta, {"status": missing_ip}) == [
        FieldCause("FieldValueRequired", "Required value", "status.nodes[1].privateIP")
    ]
    alpha_status = {"nodes": status["nodes"], "activeEndpoint": {"nodeName": "n1"}}
    assert validate(alpha, {"spec": {"endpoints": []}, "status": alpha_status}) == []
