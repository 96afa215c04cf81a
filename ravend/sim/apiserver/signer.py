"""The CSR signer, as kube-controller-manager's csrsigning controller runs it.

`decide` is pure: given a CSR object and the CA it returns the certificate (PEM) or a failure
condition. `CsrSigner.run` is the thin async loop: it watches CSRs in the store and, shortly
after a CSR is approved, writes status.certificate (or a Failed condition) through /status.
Denied or failed CSRs are never signed; other signer names are left alone, as upstream.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from ravend.sim.apiserver.errors import ApiError
from ravend.sim.apiserver.pki import LEAF_VALIDITY, ClusterCA
from ravend.sim.apiserver.store import Store
from ravend.sim.apiserver.strategies import now_rfc3339

log = logging.getLogger(__name__)

KUBELET_SERVING = "kubernetes.io/kubelet-serving"
APISERVER_CLIENT = "kubernetes.io/kube-apiserver-client"
APISERVER_CLIENT_KUBELET = "kubernetes.io/kube-apiserver-client-kubelet"
SIGNERS = (KUBELET_SERVING, APISERVER_CLIENT, APISERVER_CLIENT_KUBELET)
_SERVING = (
    {"digital signature", "key encipherment", "server auth"},
    {"digital signature", "server auth"},
)
_KUBELET_CLIENT = (
    {"digital signature", "key encipherment", "client auth"},
    {"digital signature", "client auth"},
)


@dataclass(frozen=True)
class Decision:
    """Either a certificate to publish or a reason the signer refuses."""

    certificate_pem: bytes | None = None
    failure: str | None = None


def needs_signing(csr: Mapping[str, Any]) -> bool:
    """Approved, not denied/failed, not yet issued, and addressed to a signer we run."""
    status = csr.get("status") or {}
    types = {
        c.get("type") for c in status.get("conditions") or [] if c.get("status", "True") == "True"
    }
    return (
        "Approved" in types
        and not types & {"Denied", "Failed"}
        and not status.get("certificate")
        and csr.get("spec", {}).get("signerName") in SIGNERS
    )


def _check(signer: str, req: x509.CertificateSigningRequest, usages: set[str]) -> str | None:
    """The signer's own validation (kube's ValidateKubeletServingCSR and friends)."""
    orgs = [a.value for a in req.subject.get_attributes_for_oid(x509.NameOID.ORGANIZATION_NAME)]
    cns = req.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    cn = str(cns[0].value) if cns else ""
    # The names as a plain list: recent cryptography (51 on a fresh install) refuses an empty
    # SubjectAlternativeName.
    try:
        sans = list(req.extensions.get_extension_for_class(x509.SubjectAlternativeName).value)
    except x509.ExtensionNotFound:
        sans = []
    if signer == APISERVER_CLIENT:
        bad = usages - {"digital signature", "key encipherment", "client auth"}
        if bad:
            return f"invalid usage for client certificate: {sorted(bad)[0]}"
        return (
            None
            if "client auth" in usages
            else "missing required usage for client certificate: client auth"
        )
    if orgs != ["system:nodes"]:
        return "subject organization is not system:nodes"
    if not cn.startswith("system:node:"):
        return "subject common name does not begin with system:node:"
    if signer == APISERVER_CLIENT_KUBELET:
        if sans:
            return "subjectAltNames are not allowed"
        return (
            None
            if usages in _KUBELET_CLIENT
            else "usages did not match [client auth digital signature key encipherment]"
        )
    if not any(isinstance(n, x509.DNSName | x509.IPAddress) for n in sans):
        return "DNS or IP subjectAltName is required"
    if any(isinstance(n, x509.RFC822Name) for n in sans):
        return "Email subjectAltNames are not allowed"
    if any(isinstance(n, x509.UniformResourceIdentifier) for n in sans):
        return "URI subjectAltNames are not allowed"
    return (
        None
        if usages in _SERVING
        else "usages did not match [digital signature key encipherment server auth]"
    )


def decide(
    ca: ClusterCA, csr: Mapping[str, Any], max_validity: dt.timedelta = LEAF_VALIDITY
) -> Decision:
    """Sign `csr` with `ca` (honouring expirationSeconds and usages) or say why not."""
    spec = csr["spec"]
    req = x509.load_pem_x509_csr(base64.b64decode(spec["request"]))
    usages = set(spec.get("usages") or [])
    problem = _check(spec["signerName"], req, usages)
    if problem is not None:
        return Decision(failure=problem)
    validity = max_validity
    if spec.get("expirationSeconds"):
        validity = min(validity, dt.timedelta(seconds=int(spec["expirationSeconds"])))
    try:
        sans = list(req.extensions.get_extension_for_class(x509.SubjectAlternativeName).value)
    except x509.ExtensionNotFound:
        sans = []
    cert = ca.sign(
        req.subject, req.public_key(), usages=sorted(usages), sans=sans, validity=validity
    )
    return Decision(certificate_pem=cert.public_bytes(serialization.Encoding.PEM))


class CsrSigner:
    """Watches CSRs and signs approved ones after `delay` seconds (the controller's reaction)."""

    def __init__(self, store: Store, ca: ClusterCA, delay: float = 0.05) -> None:
        self.store, self.ca, self.delay = store, ca, delay

    async def run(self) -> None:
        while True:  # a closed watch (fault hook) is reopened; the loop never returns on its own
            watcher = self.store.watch("certificatesigningrequests")
            try:
                while (item := await watcher.queue.get()) is not None:
                    if item[0] != "DELETED" and needs_signing(item[1]):
                        await asyncio.sleep(self.delay)
                        self._sign(item[1]["metadata"]["name"])
            finally:
                self.store.unwatch("certificatesigningrequests", watcher)

    def _sign(self, name: str) -> None:
        try:
            csr = self.store.get("certificatesigningrequests", name)
        except ApiError:
            return
        if not needs_signing(csr):
            return
        decision = decide(self.ca, csr)
        status = csr.setdefault("status", {})
        if decision.certificate_pem is not None:
            status["certificate"] = base64.b64encode(decision.certificate_pem).decode()
        else:
            now = now_rfc3339()
            status.setdefault("conditions", []).append(
                {
                    "type": "Failed",
                    "status": "True",
                    "reason": "SignerValidationFailure",
                    "message": decision.failure,
                    "lastUpdateTime": now,
                    "lastTransitionTime": now,
                }
            )
        try:
            self.store.update_status(csr)
            log.info("csr %s: %s", name, "issued" if decision.certificate_pem else decision.failure)
        except ApiError as exc:  # raced with another writer: the next event retries
            log.debug("csr %s: status write failed: %s", name, exc.message)
