"""Gateway v1alpha1 <-> v1beta1 conversion: Raven's rules, and lossless round trips."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ravend.kube.conversion import (
    SPEC_ANNOTATION,
    V1ALPHA1,
    V1BETA1,
    ConversionError,
    to_v1alpha1,
    to_v1beta1,
)

JSON = dict[str, Any]

# The valid v1alpha1 object from raven-reference section 8.
LEGACY: JSON = {
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

# gw-qingdao from the manual, with an elected status.
QINGDAO: JSON = {
    "apiVersion": V1BETA1,
    "kind": "Gateway",
    "metadata": {"name": "gw-qingdao", "resourceVersion": "7", "labels": {"a": "b"}},
    "spec": {
        "proxyConfig": {"Replicas": 1},
        "tunnelConfig": {"Replicas": 1},
        "endpoints": [
            {
                "nodeName": "izm5eb24dmjfimuaybpnqzz",
                "underNAT": True,
                "port": 10262,
                "type": "proxy",
            },
            {
                "nodeName": "izm5eb24dmjfimuaybpnr0z",
                "underNAT": True,
                "port": 4500,
                "type": "tunnel",
            },
        ],
    },
    "status": {
        "nodes": [{"nodeName": "izm5eb24dmjfimuaybpnr0z", "privateIP": "172.16.1.90"}],
        "activeEndpoints": [
            {
                "nodeName": "izm5eb24dmjfimuaybpnqzz",
                "type": "proxy",
                "port": 10262,
                "config": {"enable-l7-proxy": "true"},
            },
            {
                "nodeName": "izm5eb24dmjfimuaybpnr0z",
                "type": "tunnel",
                "port": 4500,
                "underNAT": True,
                "config": {"enable-l3-tunnel": "true"},
            },
        ],
    },
}


def test_alpha_to_beta_follows_ravens_rules() -> None:
    beta = to_v1beta1(LEGACY)
    assert beta == {
        "apiVersion": V1BETA1,
        "kind": "Gateway",
        "metadata": {"name": "gw-legacy"},
        "spec": {
            "exposeType": "LoadBalancer",
            "proxyConfig": {"Replicas": 1},
            "tunnelConfig": {"Replicas": 1},
            "endpoints": [
                {"nodeName": "node-a", "underNAT": False, "type": "tunnel", "port": 4500},
                {
                    "nodeName": "node-b",
                    "underNAT": False,
                    "config": {"foo": "bar"},
                    "type": "tunnel",
                    "port": 4500,
                },
            ],
        },
    }


def test_alpha_active_endpoint_becomes_a_list() -> None:
    alpha = copy.deepcopy(LEGACY)
    alpha["status"] = {
        "nodes": [{"nodeName": "node-a", "privateIP": "10.0.0.1", "subnets": ["10.244.0.0/24"]}],
        "activeEndpoint": {"nodeName": "node-a", "underNAT": False, "publicIP": "1.2.3.4"},
    }
    status = to_v1beta1(alpha)["status"]
    assert status["nodes"] == alpha["status"]["nodes"]
    assert status["activeEndpoints"] == [
        {
            "nodeName": "node-a",
            "underNAT": False,
            "publicIP": "1.2.3.4",
            "type": "tunnel",
            "port": 4500,
        }
    ]


def test_beta_to_alpha_keeps_tunnels_and_first_active_tunnel() -> None:
    alpha = to_v1alpha1(QINGDAO)
    assert alpha["apiVersion"] == V1ALPHA1
    assert alpha["spec"]["endpoints"] == [{"nodeName": "izm5eb24dmjfimuaybpnr0z", "underNAT": True}]
    assert alpha["status"]["activeEndpoint"] == {
        "nodeName": "izm5eb24dmjfimuaybpnr0z",
        "underNAT": True,
        "config": {"enable-l3-tunnel": "true"},
    }
    assert alpha["status"]["nodes"] == QINGDAO["status"]["nodes"]
    meta = alpha["metadata"]
    assert meta["name"] == "gw-qingdao"
    assert meta["resourceVersion"] == "7"
    assert meta["labels"] == {"a": "b"}
    assert SPEC_ANNOTATION in meta["annotations"]


def test_beta_alpha_beta_restores_everything() -> None:
    assert to_v1beta1(to_v1alpha1(QINGDAO)) == QINGDAO


def test_alpha_beta_alpha_is_identity_without_annotation() -> None:
    back = to_v1alpha1(to_v1beta1(LEGACY))
    assert back == LEGACY
    assert "annotations" not in back["metadata"]


def test_same_version_only_sets_api_version_and_strips_bookkeeping() -> None:
    assert to_v1beta1(QINGDAO) == QINGDAO
    assert to_v1alpha1(LEGACY) == LEGACY
    dirty = copy.deepcopy(QINGDAO)
    dirty["metadata"]["annotations"] = {SPEC_ANNOTATION: "{}", "keep": "me"}
    assert to_v1beta1(dirty)["metadata"]["annotations"] == {"keep": "me"}


def test_inputs_are_not_mutated() -> None:
    before = copy.deepcopy(QINGDAO)
    to_v1beta1(to_v1alpha1(QINGDAO))
    assert before == QINGDAO


def test_edit_through_alpha_wins_and_keeps_beta_extras() -> None:
    alpha = to_v1alpha1(QINGDAO)
    alpha["spec"]["endpoints"][0]["publicIP"] = "47.1.2.3"
    alpha["spec"]["endpoints"].append({"nodeName": "new-node", "underNAT": True})
    beta = to_v1beta1(alpha)
    assert beta["spec"]["proxyConfig"] == {"Replicas": 1}
    assert beta["spec"]["endpoints"] == [
        QINGDAO["spec"]["endpoints"][0],
        {
            "nodeName": "izm5eb24dmjfimuaybpnr0z",
            "underNAT": True,
            "publicIP": "47.1.2.3",
            "port": 4500,
            "type": "tunnel",
        },
        {"nodeName": "new-node", "underNAT": True, "type": "tunnel", "port": 4500},
    ]
    assert SPEC_ANNOTATION not in beta["metadata"].get("annotations", {})


def test_broken_annotation_falls_back_to_plain_conversion() -> None:
    alpha = copy.deepcopy(LEGACY)
    alpha["metadata"]["annotations"] = {SPEC_ANNOTATION: "not json"}
    assert to_v1beta1(alpha) == to_v1beta1(LEGACY)


@pytest.mark.parametrize(
    "obj",
    [
        {"apiVersion": "v1", "kind": "Gateway"},
        {"apiVersion": V1BETA1, "kind": "ConfigMap"},
        {"kind": "Gateway"},
    ],
)
def test_rejects_other_objects(obj: JSON) -> None:
    with pytest.raises(ConversionError):
        to_v1beta1(obj)
    with pytest.raises(ConversionError):
        to_v1alpha1(obj)


# ---- properties -------------------------------------------------------------------------

names = st.text("abcdefghij-0123456789", min_size=1, max_size=8)
small_map = st.dictionaries(names, names, max_size=2)
ips = st.sampled_from(["1.2.3.4", "10.0.0.1", "47.0.0.9"])


def _optional(d: st.SearchStrategy[JSON], **opt: st.SearchStrategy[Any]) -> st.SearchStrategy[JSON]:
    """A dict from `d` plus any subset of the optional keys."""
    extras = st.fixed_dictionaries({}, optional=opt)
    return st.builds(lambda a, b: {**a, **b}, d, extras)


alpha_endpoint = _optional(
    st.fixed_dictionaries({"nodeName": names}),
    underNAT=st.booleans(),
    publicIP=ips,
    config=small_map,
)
beta_endpoint = _optional(
    st.fixed_dictionaries({"nodeName": names, "type": st.sampled_from(["proxy", "tunnel"])}),
    port=st.integers(1, 65535),
    underNAT=st.booleans(),
    publicIP=ips,
    natType=st.sampled_from(["", "FullCone", "Symmetric"]),
    publicPort=st.integers(0, 65535),
    config=small_map,
)
node_info = st.fixed_dictionaries(
    {"nodeName": names, "privateIP": ips}, optional={"subnets": st.lists(names, max_size=2)}
)
metadata = st.fixed_dictionaries(
    {"name": names},
    optional={
        "labels": small_map,
        "annotations": st.dictionaries(names, names, min_size=1, max_size=2),
        "resourceVersion": names,
    },
)
selector = st.fixed_dictionaries({"matchLabels": small_map})
expose = st.sampled_from(["", "PublicIP", "LoadBalancer"])

alpha_gateway = _optional(
    st.fixed_dictionaries(
        {
            "apiVersion": st.just(V1ALPHA1),
            "kind": st.just("Gateway"),
            "metadata": metadata,
            "spec": _optional(
                st.fixed_dictionaries({}),
                nodeSelector=selector,
                exposeType=expose,
                endpoints=st.lists(alpha_endpoint, max_size=3),
            ),
        }
    ),
    status=_optional(
        st.fixed_dictionaries({}),
        nodes=st.lists(node_info, max_size=2),
        activeEndpoint=alpha_endpoint,
    ),
)
beta_gateway = _optional(
    st.fixed_dictionaries(
        {"apiVersion": st.just(V1BETA1), "kind": st.just("Gateway"), "metadata": metadata}
    ),
    spec=_optional(
        st.fixed_dictionaries({}),
        nodeSelector=selector,
        exposeType=expose,
        proxyConfig=_optional(
            st.fixed_dictionaries({"Replicas": st.integers(0, 3)}),
            proxyHTTPPort=st.sampled_from(["10255,9445", ""]),
            proxyHTTPSPort=st.sampled_from(["10250,9100", "10250"]),
        ),
        tunnelConfig=st.fixed_dictionaries({"Replicas": st.integers(0, 1)}),
        endpoints=st.lists(beta_endpoint, max_size=4),
    ),
    status=_optional(
        st.fixed_dictionaries({}),
        nodes=st.lists(node_info, max_size=2),
        activeEndpoints=st.lists(beta_endpoint, max_size=3),
    ),
)


@settings(max_examples=300)
@given(alpha_gateway)
def test_property_alpha_beta_alpha_identity(alpha: JSON) -> None:
    beta = to_v1beta1(alpha)
    assert beta["apiVersion"] == V1BETA1
    assert all(ep["type"] == "tunnel" for ep in beta["spec"].get("endpoints", []))
    assert to_v1alpha1(beta) == alpha


@settings(max_examples=300)
@given(beta_gateway)
def test_property_beta_alpha_beta_lossless(beta: JSON) -> None:
    alpha = to_v1alpha1(beta)
    assert alpha["apiVersion"] == V1ALPHA1
    # The v1alpha1 form is a real v1alpha1 object: no v1beta1-only fields outside the annotation.
    assert set(alpha.get("spec", {})) <= {"nodeSelector", "exposeType", "endpoints"}
    for ep in alpha.get("spec", {}).get("endpoints", []):
        assert set(ep) <= {"nodeName", "underNAT", "publicIP", "config"}
    json.dumps(alpha)  # serialisable
    assert to_v1beta1(alpha) == beta
