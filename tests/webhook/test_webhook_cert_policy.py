"""The webhook certificate: every node may hold it, and it names the webhook Service only."""

from __future__ import annotations

from types import MappingProxyType

import pytest

from ravend.certs.csr import (
    CertKind,
    Sans,
    build_csr,
    expected_request,
    serving_sans,
    webhook_sans,
)
from ravend.certs.keys import generate_key
from ravend.certs.policy import NODE_NAME_EXTRA, PolicyView, Requester, check_request
from ravend.controllers.csr_approver import decide
from ravend.election.examples import manual_view
from ravend.kube.models import CertificateSigningRequest
from ravend.model import ObjectMeta

MEMBER = "izbp15inok0kbfkg3in52sz"  # a plain edge member of the manual's example: no proxy role
SA = "system:serviceaccount:kube-system:ravend"


def webhook_request(node: str, sans: Sans) -> tuple[bytes, str, list[str]]:
    req = expected_request(CertKind.SERVING, node, sans)
    return build_csr(req, generate_key()), req.signer_name, sorted(req.usages)


def requester(node: str) -> Requester:
    return Requester(SA, extra=MappingProxyType({NODE_NAME_EXTRA: (node,)}))


def test_webhook_names_are_the_service_dns_names() -> None:
    assert webhook_sans("corp.example").dns == {
        "ravend-webhook",
        "ravend-webhook.kube-system",
        "ravend-webhook.kube-system.svc",
        "ravend-webhook.kube-system.svc.corp.example",
    }
    assert not webhook_sans().ips


def test_policy_allows_the_webhook_certificate_for_its_own_node() -> None:
    pem, signer, usages = webhook_request(MEMBER, webhook_sans())
    assert check_request(pem, requester(MEMBER), signer, usages) is None


@pytest.mark.parametrize(
    ("sans", "needle"),
    [
        # Another node's name next to the webhook names: any node could impersonate it.
        (webhook_sans() | Sans.of(["izwz9dohcv74iegqecp4axz"]), "exactly the webhook Service"),
        # Its own node name is not allowed either: the webhook cert is granted to every node.
        (webhook_sans() | Sans.of([MEMBER]), "exactly the webhook Service"),
        (webhook_sans() | Sans.of(ips=["10.96.0.10"]), "exactly the webhook Service"),
        # Only some of the names: still a webhook certificate, still not exact.
        (Sans.of(["ravend-webhook.kube-system.svc"]), "exactly the webhook Service"),
        # The internal proxy Service mixed in.
        (webhook_sans() | serving_sans(MEMBER), "exactly the webhook Service"),
        # The webhook names of another cluster domain are something else.
        (webhook_sans("evil.example"), "exactly the webhook Service"),
    ],
)
def test_policy_denies_a_webhook_certificate_naming_anything_else(sans: Sans, needle: str) -> None:
    pem, signer, usages = webhook_request(MEMBER, sans)
    reason = check_request(pem, requester(MEMBER), signer, usages, PolicyView())
    assert reason is not None and needle in reason


def test_policy_still_refuses_another_nodes_subject() -> None:
    pem, signer, usages = webhook_request("izwz9dohcv74iegqecp4axz", webhook_sans())
    reason = check_request(pem, requester(MEMBER), signer, usages)
    assert reason is not None and "may not request a certificate for node" in reason


def _csr(node: str, sans: Sans) -> CertificateSigningRequest:
    pem, signer, usages = webhook_request(node, sans)
    return CertificateSigningRequest(
        meta=ObjectMeta(name=f"ravend-webhook-{node}"),
        request_pem=pem,
        signer_name=signer,
        usages=tuple(usages),
        username=SA,
        groups=(),
        extra=MappingProxyType({NODE_NAME_EXTRA: (node,)}),
    )


def test_approver_grants_the_webhook_certificate_to_a_node_without_proxy_role() -> None:
    view = manual_view()
    policy = PolicyView()
    verdict = decide(_csr(MEMBER, webhook_sans()), view, policy)
    assert verdict.approve, verdict.message
    assert "webhook certificate" in verdict.message
    # The same node asking for an ordinary serving certificate is still refused by role.
    ordinary = decide(_csr(MEMBER, serving_sans(MEMBER)), view, policy)
    assert not ordinary.approve
    assert ordinary.reason == "RavendRoleDenied"
