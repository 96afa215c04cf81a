"""What each ravend certificate must look like, and PKCS#10 CSRs for it (pure, no I/O).

ravend needs three identities from the Kubernetes CSR API (raven-reference.md section 5):

- SERVING: the cloud proxy node's server certificate, presented on the HTTPS front end (10263)
  and the tunnel server (10262). Signer `kubernetes.io/kubelet-serving`, which demands
  CN=`system:node:<node>`, O=`system:nodes`; the kube-apiserver verifies it like a kubelet's,
  because it reaches the proxy under the node's name.
- TUNNEL_CLIENT: an edge node's tunnel client certificate. Signer
  `kubernetes.io/kube-apiserver-client`, CN=`ravend:tunnel:<node>`, O=`ravend:tunnel-clients`.
  Deliberately NOT `system:node:<node>`/`system:nodes`: the same signer's certificates also
  authenticate to the kube-apiserver, and that subject would hand the holder the node's API
  rights. Under our subject the API server sees a user with no RBAC bindings, while the tunnel
  server reads the node name from the CN and requires the O.
- PROXY_CLIENT: the cloud proxy's client certificate towards kubelets. Signer
  kube-apiserver-client, CN=`ravend-proxy-client`, no O: the RBAC user bound to
  nodes/proxy,log,stats,metrics (what kubelets authorise via SubjectAccessReview).

The webhook certificate (conversion + validation, served by every ravend on 10266) is a SERVING
certificate whose SANs are exactly the webhook Service's names (`webhook_sans`): same signer,
which the kube-apiserver already trusts, and no new kind for the manager to learn; the approver
tells the two apart by those SANs (any node may hold it, the webhook being stateless).

`expected_request` is the single description of each kind; the builder here and the approval
policy (policy.py) both derive from it, so they cannot drift apart.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import NameOID

from ravend.certs.keys import PrivateKey

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

SIGNER_KUBELET_SERVING = "kubernetes.io/kubelet-serving"
SIGNER_APISERVER_CLIENT = "kubernetes.io/kube-apiserver-client"

USAGE_DIGITAL_SIGNATURE = "digital signature"
USAGE_KEY_ENCIPHERMENT = "key encipherment"
USAGE_SERVER_AUTH = "server auth"
USAGE_CLIENT_AUTH = "client auth"

NODE_USER_PREFIX = "system:node:"
NODES_GROUP = "system:nodes"
TUNNEL_CN_PREFIX = "ravend:tunnel:"
TUNNEL_CLIENTS_GROUP = "ravend:tunnel-clients"
PROXY_CLIENT_CN = "ravend-proxy-client"

INTERNAL_SERVICE = "x-raven-proxy-internal-svc"
INTERNAL_SERVICE_NAMESPACE = "kube-system"
WEBHOOK_SERVICE = "ravend-webhook"
WEBHOOK_SERVICE_NAMESPACE = "kube-system"


class CertKind(StrEnum):
    """The three certificates ravend requests."""

    SERVING = "serving"
    TUNNEL_CLIENT = "tunnel-client"
    PROXY_CLIENT = "proxy-client"


@dataclass(frozen=True)
class Sans:
    """Subject alternative names of a certificate (DNS names and IP addresses, nothing else)."""

    dns: frozenset[str] = frozenset()
    ips: frozenset[IPAddress] = frozenset()

    @classmethod
    def of(cls, dns: Iterable[str] = (), ips: Iterable[str | IPAddress] = ()) -> Sans:
        """Build from strings; IPs are normalised so "10.0.0.1" and IPv4Address compare equal."""
        return cls(frozenset(dns), frozenset(ipaddress.ip_address(ip) for ip in ips))

    def __bool__(self) -> bool:
        return bool(self.dns or self.ips)

    def __or__(self, other: Sans) -> Sans:
        return Sans(self.dns | other.dns, self.ips | other.ips)


NO_SANS = Sans()


@dataclass(frozen=True)
class CsrRequirements:
    """Everything a CSR of one kind for one node must carry, in Kubernetes' terms."""

    kind: CertKind
    node: str
    signer_name: str
    common_name: str
    organizations: tuple[str, ...]
    usages: frozenset[str]
    """Usages ravend requests (spec.usages)."""
    optional_usages: frozenset[str] = frozenset()
    """Usages a request may add on top of `usages` and still be approved."""
    sans: Sans = field(default_factory=Sans)


def internal_service_names(cluster_domain: str = "cluster.local") -> frozenset[str]:
    """Every DNS name of the internal Service a client may use to reach the proxy front end."""
    base = f"{INTERNAL_SERVICE}.{INTERNAL_SERVICE_NAMESPACE}"
    return frozenset({INTERNAL_SERVICE, base, f"{base}.svc", f"{base}.svc.{cluster_domain}"})


def webhook_service_names(cluster_domain: str = "cluster.local") -> frozenset[str]:
    """Every DNS name of the webhook Service (manifests/webhook-service.yaml).

    kube-apiserver verifies a Service-referenced webhook against `<name>.<namespace>.svc`; the
    other forms cover clients that dial the Service by a shorter or fully qualified name.
    """
    base = f"{WEBHOOK_SERVICE}.{WEBHOOK_SERVICE_NAMESPACE}"
    return frozenset({WEBHOOK_SERVICE, base, f"{base}.svc", f"{base}.svc.{cluster_domain}"})


def webhook_sans(cluster_domain: str = "cluster.local") -> Sans:
    """SANs of the webhook serving certificate: the webhook Service's names and nothing else."""
    return Sans.of(webhook_service_names(cluster_domain))


def serving_sans(
    node: str,
    node_ips: Iterable[str | IPAddress] = (),
    service_ips: Iterable[str | IPAddress] = (),
    public_ips: Iterable[str | IPAddress] = (),
    cluster_domain: str = "cluster.local",
) -> Sans:
    """SANs of a proxy node's server certificate: its name, its addresses, the internal Service."""
    dns = {node} | internal_service_names(cluster_domain)
    return Sans.of(dns, [*node_ips, *service_ips, *public_ips])


def expected_request(kind: CertKind, node: str, sans: Sans = NO_SANS) -> CsrRequirements:
    """The requirements for `kind` on behalf of `node`; client kinds carry no SANs."""
    if not node:
        raise ValueError("node name must not be empty")
    if kind is CertKind.SERVING:
        if not sans:
            raise ValueError("a serving certificate needs at least one SAN")
        return CsrRequirements(
            kind=kind,
            node=node,
            signer_name=SIGNER_KUBELET_SERVING,
            common_name=f"{NODE_USER_PREFIX}{node}",
            organizations=(NODES_GROUP,),
            usages=frozenset({USAGE_DIGITAL_SIGNATURE, USAGE_SERVER_AUTH}),
            # RSA keys need key encipherment for TLS 1.2 key exchange; allowed, not required.
            optional_usages=frozenset({USAGE_KEY_ENCIPHERMENT}),
            sans=sans,
        )
    if sans:
        raise ValueError(f"{kind} certificates carry no SANs")
    client_usages = frozenset({USAGE_DIGITAL_SIGNATURE, USAGE_CLIENT_AUTH})
    if kind is CertKind.TUNNEL_CLIENT:
        return CsrRequirements(
            kind=kind,
            node=node,
            signer_name=SIGNER_APISERVER_CLIENT,
            common_name=f"{TUNNEL_CN_PREFIX}{node}",
            organizations=(TUNNEL_CLIENTS_GROUP,),
            usages=client_usages,
            optional_usages=frozenset({USAGE_KEY_ENCIPHERMENT}),
        )
    return CsrRequirements(
        kind=kind,
        node=node,
        signer_name=SIGNER_APISERVER_CLIENT,
        common_name=PROXY_CLIENT_CN,
        organizations=(),
        usages=client_usages,
        optional_usages=frozenset({USAGE_KEY_ENCIPHERMENT}),
    )


def subject_name(common_name: str, organizations: Iterable[str]) -> x509.Name:
    """The X.509 subject for CN + O values (O first, as Kubernetes and openssl print them)."""
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in organizations]
    attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    return x509.Name(attrs)


def san_extension(sans: Sans) -> x509.SubjectAlternativeName:
    # Sorted so the same SANs always encode to the same bytes (stable CSRs, stable diffs).
    general: list[x509.GeneralName] = [x509.DNSName(d) for d in sorted(sans.dns)]
    general += [x509.IPAddress(ip) for ip in sorted(sans.ips, key=lambda a: (a.version, a))]
    return x509.SubjectAlternativeName(general)


def build_csr(req: CsrRequirements, key: PrivateKey) -> bytes:
    """A PEM PKCS#10 request with the subject and SANs of `req`, signed by `key`.

    Usages and signer are not in the CSR: Kubernetes takes them from the CSR object's spec.
    """
    builder = x509.CertificateSigningRequestBuilder().subject_name(
        subject_name(req.common_name, req.organizations)
    )
    if req.sans:
        builder = builder.add_extension(san_extension(req.sans), critical=False)
    csr = builder.sign(key, hashes.SHA256())
    return csr.public_bytes(serialization.Encoding.PEM)


def cert_sans(cert: x509.Certificate | x509.CertificateSigningRequest) -> Sans:
    """DNS and IP SANs of a certificate or CSR (other name types are ignored here)."""
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return Sans()
    ips = frozenset(
        ip
        for ip in ext.get_values_for_type(x509.IPAddress)
        if isinstance(ip, ipaddress.IPv4Address | ipaddress.IPv6Address)
    )
    return Sans(frozenset(ext.get_values_for_type(x509.DNSName)), ips)
