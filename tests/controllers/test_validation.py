"""Gateway validation: Raven's rules and ravend's, table-driven; webhook reviews."""

from typing import Any

import pytest

from ravend.controllers.validation import validate_gateway
from ravend.controllers.webhook import admission_review, convert_review


def gw(**spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "raven.openyurt.io/v1beta1",
        "kind": "Gateway",
        "metadata": {"name": "g"},
        "spec": spec,
    }


def ep(node: str, kind: str = "tunnel", **kw: Any) -> dict[str, Any]:
    return {"nodeName": node, "type": kind, "port": 4500, **kw}


MANUAL_CLOUD = gw(
    exposeType="PublicIP",
    proxyConfig={"Replicas": 1, "proxyHTTPPort": "10255,9445", "proxyHTTPSPort": "10250,9100"},
    tunnelConfig={"Replicas": 1},
    endpoints=[
        ep("n", "proxy", port=10262, publicIP="203.0.113.10"),
        ep("n", "tunnel", publicIP="203.0.113.10"),
    ],
)


def test_manual_example_is_valid() -> None:
    assert validate_gateway(MANUAL_CLOUD) == []


@pytest.mark.parametrize(
    ("spec", "needle"),
    [
        ({"endpoints": [ep("a", publicIP="not-an-ip")]}, "publicIP"),
        (
            {"endpoints": [ep("a", underNAT=True), ep("b", underNAT=False)]},
            "underNAT must be the same",
        ),
        (
            {"exposeType": "PublicIP", "endpoints": [ep("a", underNAT=True)]},
            "requires underNAT=false",
        ),
        ({"proxyConfig": {"Replicas": 2}, "endpoints": [ep("a", "proxy")]}, "exceeds the 1 proxy"),
        ({"endpoints": [ep("a"), ep("a")]}, "duplicate endpoint"),
        ({"proxyConfig": {"Replicas": 3}, "endpoints": []}, "exceeds the 0 proxy"),
        ({"endpoints": [ep("a", port=70000)]}, "is not a port"),
        ({"endpoints": [ep("a", "bogus")]}, "unsupported value 'bogus'"),
        ({"tunnelConfig": {"Replicas": -1}}, "must be an integer >= 0"),
        ({"endpoints": [{"type": "proxy"}]}, "nodeName: Required value"),
        ({"exposeType": "Magic"}, "spec.exposeType: unsupported value"),
        ({"proxyConfig": {"proxyHTTPPort": "80,http"}}, "'http' is not a port"),
    ],
)
def test_violations(spec: dict[str, Any], needle: str) -> None:
    problems = validate_gateway(gw(**spec))
    assert any(needle in p for p in problems), problems


def test_converted_v1alpha1_with_one_replica_and_no_proxy_is_valid() -> None:
    # v1alpha1 -> v1beta1 sets proxyConfig.Replicas=1 and has no proxy endpoint (Raven allows it).
    assert validate_gateway(gw(proxyConfig={"Replicas": 1}, endpoints=[ep("a")])) == []


def test_admission_converts_v1alpha1_before_validating() -> None:
    alpha = {
        "apiVersion": "raven.openyurt.io/v1alpha1",
        "kind": "Gateway",
        "metadata": {"name": "legacy"},
        "spec": {"exposeType": "LoadBalancer", "endpoints": [{"nodeName": "a", "underNAT": True}]},
    }
    answer = admission_review({"request": {"uid": "u1", "object": alpha}})["response"]
    assert answer["uid"] == "u1" and answer["allowed"] is False
    assert "requires underNAT=false" in answer["status"]["message"]
    ok = admission_review({"request": {"uid": "u2", "object": MANUAL_CLOUD}})["response"]
    assert ok["allowed"] is True


def test_conversion_review_round_trip() -> None:
    alpha = {
        "apiVersion": "raven.openyurt.io/v1alpha1",
        "kind": "Gateway",
        "metadata": {"name": "legacy"},
        "spec": {"endpoints": [{"nodeName": "a", "underNAT": False, "config": {"foo": "bar"}}]},
    }
    review = {
        "request": {
            "uid": "x",
            "desiredAPIVersion": "raven.openyurt.io/v1beta1",
            "objects": [alpha],
        }
    }
    resp = convert_review(review)["response"]
    assert resp["result"]["status"] == "Success"
    beta = resp["convertedObjects"][0]
    assert beta["apiVersion"] == "raven.openyurt.io/v1beta1"
    assert beta["spec"]["endpoints"][0]["type"] == "tunnel"
    back = convert_review(
        {
            "request": {
                "uid": "y",
                "desiredAPIVersion": "raven.openyurt.io/v1alpha1",
                "objects": [beta],
            }
        }
    )["response"]["convertedObjects"][0]
    assert back["spec"] == alpha["spec"]


def test_conversion_to_unknown_version_fails_cleanly() -> None:
    resp = convert_review({"request": {"uid": "z", "desiredAPIVersion": "v9", "objects": []}})
    assert resp["response"]["result"]["status"] == "Failure"
