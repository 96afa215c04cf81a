"""Leader-only approver of ravend's own CertificateSigningRequests (pure decision + thin loop).

Scope: only CSRs labelled `app.kubernetes.io/managed-by=ravend` are looked at (a kubelet's own
serving CSR has the same shape, and it is not ours to decide); among those, anything that is not
one of ravend's certificate kinds is denied. The identity rules live in `ravend.certs.policy`
(a node can only ever speak for itself); on top of them this module adds the *role* rule: a
node gets a certificate kind only if some Gateway lists it as a proxy endpoint candidate
(candidates, not just the active one, so a standby holds its certificate before a failover).
The webhook serving certificate (SANs = the webhook Service's names only) is the exception:
every node serves the stateless webhooks, so every node may hold it.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from collections.abc import Iterable
from dataclasses import dataclass

from cryptography import x509

from ravend.certs.csr import CertKind, IPAddress, cert_sans, webhook_sans
from ravend.certs.policy import (
    PolicyView,
    Requester,
    check_request,
    classify_request,
    requester_node,
)
from ravend.controllers.desired import INTERNAL_SERVICE
from ravend.kube import errors
from ravend.kube.client import KubeClient
from ravend.kube.informer import Informer
from ravend.kube.models import CertificateSigningRequest, parse_csr
from ravend.kube.resources import CSRS, SERVICES
from ravend.model import ClusterView, EndpointType
from ravend.observe.metrics import ERRORS, RECONCILES
from ravend.runtime import Latest, Trigger

log = logging.getLogger(__name__)

MANAGED_SELECTOR = "app.kubernetes.io/managed-by=ravend"
SERVICE_ACCOUNTS = frozenset({"system:serviceaccount:kube-system:ravend"})


@dataclass(frozen=True)
class Verdict:
    approve: bool
    reason: str
    message: str


def policy_view(view: ClusterView, shared: frozenset[str] = frozenset()) -> PolicyView:
    """Which addresses belong to which node, from Node objects and Gateway endpoints."""
    owned: dict[str, set[str]] = {}
    for name, node in view.nodes.items():
        owned.setdefault(name, set()).update(node.internal_ips + node.external_ips)
    for gw in view.gateways.values():
        for ep in gw.spec.endpoints:
            if ep.public_ip:
                owned.setdefault(ep.node_name, set()).add(ep.public_ip)
    return PolicyView(
        node_addresses={n: frozenset(_ips(a)) for n, a in owned.items()},
        shared_addresses=frozenset(_ips(shared)),
        service_accounts=SERVICE_ACCOUNTS,
    )


def decide(csr: CertificateSigningRequest, view: ClusterView, policy: PolicyView) -> Verdict:
    """Approve or deny one pending CSR of ravend's (pure)."""
    requester = Requester(csr.username, csr.groups, csr.extra)
    reason = check_request(csr.request_pem, requester, csr.signer_name, csr.usages, policy)
    if reason is not None:
        return Verdict(False, "RavendPolicyDenied", reason)
    request = x509.load_pem_x509_csr(csr.request_pem)
    parsed = classify_request(request, csr.signer_name)
    assert not isinstance(parsed, str)  # check_request accepted it, so it classifies
    kind, subject_node = parsed
    node = subject_node or _requester_node(requester, policy)
    if kind is CertKind.SERVING and cert_sans(request) == webhook_sans(policy.cluster_domain):
        return Verdict(True, "RavendAutoApproved", f"webhook certificate for node {node}")
    role_problem = _role_problem(kind, node, view)
    if role_problem:
        return Verdict(False, "RavendRoleDenied", role_problem)
    return Verdict(True, "RavendAutoApproved", f"{kind.value} certificate for node {node}")


def _requester_node(requester: Requester, policy: PolicyView) -> str:
    return requester_node(requester, policy) or ""


def _role_problem(kind: CertKind, node: str, view: ClusterView) -> str | None:
    """A node needs a kind only where a Gateway lists it as a proxy candidate."""
    exposed = {
        gw.is_exposed
        for gw in view.gateways.values()
        for ep in gw.spec.endpoints
        if ep.node_name == node and ep.type == EndpointType.PROXY
    }
    if not exposed:
        return f"node {node} is no proxy endpoint candidate of any Gateway"
    if kind is CertKind.SERVING and True not in exposed:
        return f"node {node} is not a proxy candidate of an exposed Gateway: no serving certificate"
    if kind is CertKind.TUNNEL_CLIENT and False not in exposed:
        return f"node {node} only serves the tunnel: it needs no tunnel client certificate"
    return None


class CsrApprover:
    """Watches ravend's CSRs and approves or denies the pending ones."""

    def __init__(self, client: KubeClient, view: Latest[ClusterView]) -> None:
        self._client = client
        self._view = view
        self._changed = Trigger()
        self._informer = Informer(client, CSRS, None, MANAGED_SELECTOR, on_change=self._changed.set)

    async def run(self) -> None:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._informer.run())
            while True:
                await self._changed.wait(timeout=10.0)
                if self._informer.synced and self._view.value.synced:
                    await self.reconcile()

    async def reconcile(self) -> None:
        RECONCILES.labels(subsystem="csr-approver").inc()
        view = self._view.value
        policy = policy_view(view, await self._shared_addresses())
        for obj in list(self._informer.store.values()):
            try:
                csr = parse_csr(obj)
            except ValueError as exc:
                log.warning("skipping unparseable CSR: %s", exc)
                continue
            if csr.approved or csr.denied:
                continue
            await self._apply(csr, decide(csr, view, policy))

    async def _apply(self, csr: CertificateSigningRequest, verdict: Verdict) -> None:
        name = csr.meta.name
        try:
            if verdict.approve:
                log.info("approving CSR %s: %s", name, verdict.message)
                await self._client.approve_csr(name, verdict.reason, verdict.message)
            else:
                log.warning("denying CSR %s: %s", name, verdict.message)
                await self._client.deny_csr(name, verdict.reason, verdict.message)
        except errors.KubeError as exc:
            ERRORS.labels(subsystem="csr-approver", kind=type(exc).__name__).inc()
            log.warning("CSR %s: could not record the decision: %s", name, exc)

    async def _shared_addresses(self) -> frozenset[str]:
        """The internal Service's ClusterIP: any proxy node may name it in its serving cert."""
        try:
            svc = await self._client.get(SERVICES, INTERNAL_SERVICE, "kube-system")
        except errors.KubeError:
            return frozenset()
        ip = (svc.get("spec") or {}).get("clusterIP")
        return frozenset({ip}) if isinstance(ip, str) and ip not in ("", "None") else frozenset()


def _ips(values: Iterable[str]) -> set[IPAddress]:
    out: set[IPAddress] = set()
    for value in values:
        try:
            out.add(ipaddress.ip_address(str(value)))
        except ValueError:
            continue
    return out
