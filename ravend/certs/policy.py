"""Approval policy for ravend's CSRs: may this requester have this certificate? (pure, no I/O)

Used by the CSR approver controller. The rule behind every check: a node can only ever speak for
itself (design.md). The requester must be a node (the node's own credentials, or ravend's
service account bound to a pod on that node), the subject must name that same node, and the
signer, usages and SANs must be exactly those of one of the three kinds in csr.py. IP SANs are
accepted only when the caller's view of the cluster says they belong to the requesting node (or
are shared, like the internal Service's ClusterIP), so a node cannot claim another's address.

The policy does not decide whether a node *should* hold a kind (e.g. only proxy nodes need a
serving certificate); `classify_request` returns the kind and node so the approver can add that.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from ravend.certs.csr import (
    NO_SANS,
    NODE_USER_PREFIX,
    PROXY_CLIENT_CN,
    SIGNER_APISERVER_CLIENT,
    SIGNER_KUBELET_SERVING,
    TUNNEL_CLIENTS_GROUP,
    TUNNEL_CN_PREFIX,
    CertKind,
    CsrRequirements,
    IPAddress,
    cert_sans,
    expected_request,
    internal_service_names,
    subject_name,
    webhook_sans,
    webhook_service_names,
)

NODE_NAME_EXTRA = "authentication.kubernetes.io/node-name"
"""User-info extra the API server sets for service-account tokens bound to a pod (the node)."""

DEFAULT_SERVICE_ACCOUNTS = frozenset({"system:serviceaccount:kube-system:ravend"})
"""ravend's DaemonSet service account (manifests/serviceaccount.yaml)."""

_ALLOWED_CURVES = (ec.SECP256R1, ec.SECP384R1)
_MIN_RSA_BITS = 2048


@dataclass(frozen=True)
class Requester:
    """Who created the CSR: the API server's `spec.username`, `spec.groups`, `spec.extra`."""

    username: str
    groups: tuple[str, ...] = ()
    extra: Mapping[str, tuple[str, ...]] = field(default_factory=lambda: MappingProxyType({}))


@dataclass(frozen=True)
class PolicyView:
    """What the approver knows about the cluster when deciding."""

    node_addresses: Mapping[str, frozenset[IPAddress]] = field(
        default_factory=lambda: MappingProxyType({})
    )
    """Addresses that belong to each node: InternalIP/ExternalIP and its public endpoint IPs."""
    shared_addresses: frozenset[IPAddress] = frozenset()
    """Addresses any proxy node may claim: the internal Service's ClusterIP."""
    service_accounts: frozenset[str] = DEFAULT_SERVICE_ACCOUNTS
    """Service-account usernames trusted to request for the node their pod runs on; any other
    pod on a node must not be able to obtain that node's identity."""
    cluster_domain: str = "cluster.local"


def requester_node(requester: Requester, view: PolicyView) -> str | None:
    """The node a requester speaks for, or None if it is not a node identity."""
    if requester.username.startswith(NODE_USER_PREFIX):
        node = requester.username.removeprefix(NODE_USER_PREFIX)
        return node or None
    if requester.username in view.service_accounts:
        names = requester.extra.get(NODE_NAME_EXTRA, ())
        # Exactly one value: an ambiguous token must not be read as "any of these nodes".
        if len(names) == 1 and names[0]:
            return names[0]
    return None


def _attrs(name: x509.Name, oid: x509.ObjectIdentifier) -> list[str]:
    return [str(a.value) for a in name.get_attributes_for_oid(oid)]


def classify_request(
    csr: x509.CertificateSigningRequest, signer_name: str
) -> tuple[CertKind, str] | str:
    """(kind, node named in the subject), or the reason it is none of ravend's kinds."""
    cns = _attrs(csr.subject, NameOID.COMMON_NAME)
    orgs = _attrs(csr.subject, NameOID.ORGANIZATION_NAME)
    if len(cns) != 1:
        return "subject must have exactly one CN"
    cn = cns[0]
    if signer_name == SIGNER_KUBELET_SERVING and cn.startswith(NODE_USER_PREFIX):
        return CertKind.SERVING, cn.removeprefix(NODE_USER_PREFIX)
    if signer_name == SIGNER_APISERVER_CLIENT:
        if cn.startswith(TUNNEL_CN_PREFIX) and TUNNEL_CLIENTS_GROUP in orgs:
            return CertKind.TUNNEL_CLIENT, cn.removeprefix(TUNNEL_CN_PREFIX)
        if cn == PROXY_CLIENT_CN:
            return CertKind.PROXY_CLIENT, ""
    return f"not a ravend certificate kind (signer {signer_name!r}, CN {cn!r})"


def check_request(
    csr_pem: bytes,
    requester: Requester,
    signer_name: str,
    usages: Sequence[str],
    view: PolicyView | None = None,
) -> str | None:
    """None if the CSR may be approved, else a human-readable reason for denying it."""
    view = view or PolicyView()
    try:
        csr = x509.load_pem_x509_csr(csr_pem)
    except ValueError as e:
        return f"unparseable CSR: {e}"
    if not csr.is_signature_valid:
        return "CSR signature does not verify (proof of key possession failed)"
    node = requester_node(requester, view)
    if node is None:
        return f"requester {requester.username!r} is not a node identity"
    kind_node = classify_request(csr, signer_name)
    if isinstance(kind_node, str):
        return kind_node
    kind, subject_node = kind_node
    if subject_node and subject_node != node:
        return f"node {node!r} may not request a certificate for node {subject_node!r}"
    requested = cert_sans(csr)
    if kind is CertKind.SERVING and not requested:
        return "a serving certificate needs at least one DNS or IP SAN"
    req = expected_request(kind, node, requested if kind is CertKind.SERVING else NO_SANS)
    return (
        _check_key(csr)
        or _check_subject(csr, req)
        or _check_extensions(csr, req)
        or _check_usages(usages, req)
        or _check_sans(csr, req, view)
    )


def _check_key(csr: x509.CertificateSigningRequest) -> str | None:
    key = csr.public_key()
    if isinstance(key, ec.EllipticCurvePublicKey):
        if isinstance(key.curve, _ALLOWED_CURVES):
            return None
        return f"EC curve {key.curve.name} not allowed"
    if isinstance(key, rsa.RSAPublicKey):
        return None if key.key_size >= _MIN_RSA_BITS else f"RSA key of {key.key_size} bits"
    return f"key type {type(key).__name__} not allowed"


def _check_subject(csr: x509.CertificateSigningRequest, req: CsrRequirements) -> str | None:
    # Compare as a set of attributes: order is irrelevant to authorisation, but any extra
    # attribute (another O, an OU) could be read as a group by some consumer, so it is refused.
    want = set(subject_name(req.common_name, req.organizations))
    got = set(csr.subject)
    if len(got) != len(list(csr.subject)) or got != want:
        return f"subject {csr.subject.rfc4514_string()!r} is not {req.kind} subject " + (
            repr(subject_name(req.common_name, req.organizations).rfc4514_string())
        )
    return None


def _check_extensions(csr: x509.CertificateSigningRequest, req: CsrRequirements) -> str | None:
    # Kubernetes signers ignore requested extensions other than SANs; refusing them anyway
    # keeps requests honest (nobody gets approved for "CA:TRUE" even if it would be dropped).
    for ext in csr.extensions:
        if not isinstance(ext.value, x509.SubjectAlternativeName):
            return f"unexpected CSR extension {ext.oid.dotted_string}"
        if req.kind is not CertKind.SERVING:
            return f"{req.kind} certificates carry no SANs"
    return None


def _check_usages(usages: Sequence[str], req: CsrRequirements) -> str | None:
    got = set(usages)
    if len(got) != len(usages):
        return "duplicate usages"
    missing = req.usages - got
    if missing:
        return f"missing usages {sorted(missing)}"
    extra = got - req.usages - req.optional_usages
    if extra:
        return f"usages {sorted(extra)} not allowed for {req.kind}"
    return None


def _check_webhook_sans(req: CsrRequirements, view: PolicyView) -> str | None:
    # A webhook certificate is granted to every node, so it must name the webhook Service and
    # nothing else: mixed in, a node name or address would let any node impersonate that one.
    want = webhook_sans(view.cluster_domain)
    if req.sans != want:
        return (
            f"a webhook certificate must name exactly the webhook Service {sorted(want.dns)}; "
            f"got DNS {sorted(req.sans.dns)}, IPs {sorted(str(ip) for ip in req.sans.ips)}"
        )
    return None


def _check_sans(
    csr: x509.CertificateSigningRequest, req: CsrRequirements, view: PolicyView
) -> str | None:
    if req.kind is not CertKind.SERVING:
        return None
    try:
        san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return None
    for g in san:
        if not isinstance(g, x509.DNSName | x509.IPAddress):
            return "only DNS and IP SANs are allowed"
        if isinstance(g, x509.IPAddress) and not isinstance(g.value, IPAddress):
            return f"IP SAN {g.value} is a network, not an address"
    if req.sans.dns & webhook_service_names(view.cluster_domain):
        return _check_webhook_sans(req, view)
    allowed_dns = {req.node} | internal_service_names(view.cluster_domain)
    for dns in sorted(req.sans.dns - allowed_dns):
        if dns in view.node_addresses:
            return f"SAN {dns!r} names another node"
        return f"DNS SAN {dns!r} is neither the node name nor the internal Service"
    own = view.node_addresses.get(req.node, frozenset()) | view.shared_addresses
    for ip in sorted(req.sans.ips - own, key=lambda a: (a.version, a)):
        owners = sorted(n for n, ips in view.node_addresses.items() if ip in ips)
        if owners:
            return f"IP SAN {ip} belongs to node {owners[0]!r}"
        return f"IP SAN {ip} is not an address of node {req.node!r}"
    return None
