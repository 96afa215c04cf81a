"""The CSR approval policy: what is approved, and every way a request is refused."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import dataclass, replace
from types import MappingProxyType

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from ravend.certs.csr import (
    NO_SANS,
    SIGNER_APISERVER_CLIENT,
    SIGNER_KUBELET_SERVING,
    CertKind,
    Sans,
    build_csr,
    expected_request,
    serving_sans,
)
from ravend.certs.keys import generate_key
from ravend.certs.policy import (
    NODE_NAME_EXTRA,
    PolicyView,
    Requester,
    check_request,
)

ip = ipaddress.ip_address
NODE = "cloud-1"
NODE_IP = "192.168.0.10"
PUBLIC_IP = "203.0.113.7"
OTHER_IP = "192.168.0.11"
CLUSTER_IP = "10.96.0.42"
SA = "system:serviceaccount:kube-system:ravend"

VIEW = PolicyView(
    node_addresses=MappingProxyType(
        {
            NODE: frozenset({ip(NODE_IP), ip(PUBLIC_IP)}),
            "cloud-2": frozenset({ip(OTHER_IP)}),
        }
    ),
    shared_addresses=frozenset({ip(CLUSTER_IP)}),
)
NODE_USER = Requester(f"system:node:{NODE}", ("system:nodes", "system:authenticated"))
SA_USER = Requester(SA, extra=MappingProxyType({NODE_NAME_EXTRA: (NODE,)}))
GOOD_SANS = serving_sans(NODE, [NODE_IP], [CLUSTER_IP], [PUBLIC_IP])
SERVING_USAGES = ["digital signature", "server auth"]
CLIENT_USAGES = ["digital signature", "client auth"]


@dataclass(frozen=True)
class Case:
    csr: bytes
    signer: str
    usages: list[str]
    requester: Requester = NODE_USER


def ours(kind: CertKind, node: str = NODE, sans: Sans = NO_SANS) -> Case:
    """A request exactly as CertManager would submit it."""
    req = expected_request(kind, node, sans)
    return Case(build_csr(req, generate_key()), req.signer_name, sorted(req.usages))


def raw_csr(
    cn: str,
    orgs: tuple[str, ...] = (),
    sans: list[x509.GeneralName] | None = None,
    *,
    extra_ext: x509.ExtensionType | None = None,
    key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | None = None,
    extra_attrs: tuple[x509.NameAttribute[str], ...] = (),
) -> bytes:
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in orgs]
    attrs += [x509.NameAttribute(NameOID.COMMON_NAME, cn), *extra_attrs]
    b = x509.CertificateSigningRequestBuilder().subject_name(x509.Name(attrs))
    if sans:
        b = b.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    if extra_ext is not None:
        b = b.add_extension(extra_ext, critical=False)
    signed = b.sign(key or generate_key(), hashes.SHA256())
    return signed.public_bytes(serialization.Encoding.PEM)


def serving_raw(**kw: object) -> Case:
    sans: list[x509.GeneralName] = kw.pop("sans", [x509.DNSName(NODE)])  # type: ignore[assignment]
    csr = raw_csr(f"system:node:{NODE}", ("system:nodes",), sans, **kw)  # type: ignore[arg-type]
    return Case(csr, SIGNER_KUBELET_SERVING, SERVING_USAGES)


def check(case: Case) -> str | None:
    return check_request(case.csr, case.requester, case.signer, case.usages, VIEW)


ALLOWED: dict[str, Callable[[], Case]] = {
    "serving, node identity": lambda: ours(CertKind.SERVING, sans=GOOD_SANS),
    "serving, service account with node-name extra": lambda: replace(
        ours(CertKind.SERVING, sans=GOOD_SANS), requester=SA_USER
    ),
    "serving, name only": lambda: ours(CertKind.SERVING, sans=Sans.of([NODE])),
    "serving with optional key encipherment": lambda: replace(
        ours(CertKind.SERVING, sans=GOOD_SANS), usages=[*SERVING_USAGES, "key encipherment"]
    ),
    "serving, RSA 2048 key": lambda: serving_raw(key=rsa.generate_private_key(65537, 2048)),
    "tunnel client": lambda: ours(CertKind.TUNNEL_CLIENT),
    "proxy client": lambda: ours(CertKind.PROXY_CLIENT),
}


@pytest.mark.parametrize("name", list(ALLOWED))
def test_allowed(name: str) -> None:
    assert check(ALLOWED[name]()) is None


OTHER_NODE_USER = Requester("system:node:cloud-2")
REFUSED: dict[str, tuple[Callable[[], Case], str]] = {
    # Wrong node: the subject names a node other than the requester.
    "serving for another node": (
        lambda: replace(ours(CertKind.SERVING, sans=GOOD_SANS), requester=OTHER_NODE_USER),
        "may not request a certificate for node 'cloud-1'",
    ),
    "tunnel client for another node": (
        lambda: replace(ours(CertKind.TUNNEL_CLIENT), requester=OTHER_NODE_USER),
        "may not request",
    ),
    "service account speaking for another node": (
        lambda: replace(
            ours(CertKind.TUNNEL_CLIENT),
            requester=Requester(SA, extra=MappingProxyType({NODE_NAME_EXTRA: ("cloud-2",)})),
        ),
        "may not request",
    ),
    "untrusted service account with node-name extra": (
        lambda: replace(
            ours(CertKind.TUNNEL_CLIENT),
            requester=Requester(
                "system:serviceaccount:default:evil",
                extra=MappingProxyType({NODE_NAME_EXTRA: (NODE,)}),
            ),
        ),
        "is not a node identity",
    ),
    "service account without node-name extra": (
        lambda: replace(ours(CertKind.TUNNEL_CLIENT), requester=Requester(SA)),
        "is not a node identity",
    ),
    "service account with two node names": (
        lambda: replace(
            ours(CertKind.TUNNEL_CLIENT),
            requester=Requester(SA, extra=MappingProxyType({NODE_NAME_EXTRA: (NODE, "x")})),
        ),
        "is not a node identity",
    ),
    "plain user": (
        lambda: replace(ours(CertKind.PROXY_CLIENT), requester=Requester("alice")),
        "is not a node identity",
    ),
    # SANs naming someone else.
    "extra DNS SAN naming another node": (
        lambda: ours(CertKind.SERVING, sans=GOOD_SANS | Sans.of(["cloud-2"])),
        "SAN 'cloud-2' names another node",
    ),
    "extra IP SAN of another node": (
        lambda: ours(CertKind.SERVING, sans=GOOD_SANS | Sans.of(ips=[OTHER_IP])),
        "IP SAN 192.168.0.11 belongs to node 'cloud-2'",
    ),
    "IP SAN nobody owns": (
        lambda: ours(CertKind.SERVING, sans=GOOD_SANS | Sans.of(ips=["8.8.8.8"])),
        "is not an address of node",
    ),
    "foreign DNS SAN": (
        lambda: ours(CertKind.SERVING, sans=GOOD_SANS | Sans.of(["kubernetes.default"])),
        "neither the node name nor the internal Service",
    ),
    "URI SAN": (
        lambda: serving_raw(
            sans=[x509.DNSName(NODE), x509.UniformResourceIdentifier("spiffe://x")]
        ),
        "only DNS and IP SANs",
    ),
    "IP network SAN": (
        lambda: serving_raw(
            sans=[x509.DNSName(NODE), x509.IPAddress(ipaddress.ip_network("192.168.0.0/24"))]
        ),
        "is a network",
    ),
    "serving without SANs": (lambda: serving_raw(sans=[]), "needs at least one"),
    "client cert with SANs": (
        lambda: Case(
            raw_csr(f"ravend:tunnel:{NODE}", ("ravend:tunnel-clients",), [x509.DNSName(NODE)]),
            SIGNER_APISERVER_CLIENT,
            CLIENT_USAGES,
        ),
        "carry no SANs",
    ),
    # Usages.
    "serving asks for client auth": (
        lambda: replace(
            ours(CertKind.SERVING, sans=GOOD_SANS), usages=[*SERVING_USAGES, "client auth"]
        ),
        "usages ['client auth'] not allowed",
    ),
    "tunnel client asks for server auth": (
        lambda: replace(ours(CertKind.TUNNEL_CLIENT), usages=[*CLIENT_USAGES, "server auth"]),
        "not allowed",
    ),
    "missing client auth": (
        lambda: replace(ours(CertKind.PROXY_CLIENT), usages=["digital signature"]),
        "missing usages ['client auth']",
    ),
    "duplicate usages": (
        lambda: replace(ours(CertKind.PROXY_CLIENT), usages=[*CLIENT_USAGES, "client auth"]),
        "duplicate",
    ),
    # Signer.
    "serving subject on the client signer": (
        lambda: replace(ours(CertKind.SERVING, sans=GOOD_SANS), signer=SIGNER_APISERVER_CLIENT),
        "not a ravend certificate kind",
    ),
    "tunnel subject on the serving signer": (
        lambda: replace(ours(CertKind.TUNNEL_CLIENT), signer=SIGNER_KUBELET_SERVING),
        "not a ravend certificate kind",
    ),
    "legacy-unknown signer": (
        lambda: replace(ours(CertKind.PROXY_CLIENT), signer="kubernetes.io/legacy-unknown"),
        "not a ravend certificate kind",
    ),
    # Unknown kinds / subjects.
    "client cert as system:node (would grant node API rights)": (
        lambda: Case(
            raw_csr(f"system:node:{NODE}", ("system:nodes",)),
            SIGNER_APISERVER_CLIENT,
            CLIENT_USAGES,
        ),
        "not a ravend certificate kind",
    ),
    "tunnel CN without the tunnel-clients group": (
        lambda: Case(raw_csr(f"ravend:tunnel:{NODE}"), SIGNER_APISERVER_CLIENT, CLIENT_USAGES),
        "not a ravend certificate kind",
    ),
    "proxy client with system:masters": (
        lambda: Case(
            raw_csr("ravend-proxy-client", ("system:masters",)),
            SIGNER_APISERVER_CLIENT,
            CLIENT_USAGES,
        ),
        "is not proxy-client subject",
    ),
    "tunnel client with an extra group": (
        lambda: Case(
            raw_csr(f"ravend:tunnel:{NODE}", ("ravend:tunnel-clients", "system:masters")),
            SIGNER_APISERVER_CLIENT,
            CLIENT_USAGES,
        ),
        "is not tunnel-client subject",
    ),
    "serving with an OU": (
        lambda: serving_raw(
            extra_attrs=(x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "x"),)
        ),
        "is not serving subject",
    ),
    "two CNs": (
        lambda: Case(
            raw_csr(
                "ravend-proxy-client",
                extra_attrs=(x509.NameAttribute(NameOID.COMMON_NAME, "admin"),),
            ),
            SIGNER_APISERVER_CLIENT,
            CLIENT_USAGES,
        ),
        "exactly one CN",
    ),
    # Key and extensions.
    "CA basic constraints requested": (
        lambda: serving_raw(extra_ext=x509.BasicConstraints(ca=True, path_length=None)),
        "unexpected CSR extension",
    ),
    "weak RSA key": (
        lambda: serving_raw(key=rsa.generate_private_key(65537, 1024)),
        "RSA key of 1024 bits",
    ),
    "garbage": (
        lambda: Case(b"-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n", SIGNER_KUBELET_SERVING, []),
        "unparseable",
    ),
}


@pytest.mark.parametrize("name", list(REFUSED))
def test_refused(name: str) -> None:
    make, reason = REFUSED[name]
    got = check(make())
    assert got is not None, f"{name} was approved"
    assert reason in got


def test_ip_sans_refused_without_a_view() -> None:
    """An approver that knows nothing about the cluster must not approve any IP SAN."""
    case = ours(CertKind.SERVING, sans=Sans.of([NODE], [NODE_IP]))
    assert check_request(case.csr, NODE_USER, case.signer, case.usages) is not None
    name_only = ours(CertKind.SERVING, sans=Sans.of([NODE]))
    assert check_request(name_only.csr, NODE_USER, name_only.signer, name_only.usages) is None


def test_tampered_csr_signature_refused() -> None:
    """A CSR whose signature does not verify fails proof of key possession."""
    req = expected_request(CertKind.TUNNEL_CLIENT, NODE)
    der = bytearray(
        x509.load_pem_x509_csr(build_csr(req, generate_key())).public_bytes(
            serialization.Encoding.DER
        )
    )
    der[-1] ^= 0x01  # last byte of the ECDSA signature's s integer: still valid DER
    tampered = x509.load_der_x509_csr(bytes(der)).public_bytes(serialization.Encoding.PEM)
    reason = check_request(tampered, NODE_USER, SIGNER_APISERVER_CLIENT, CLIENT_USAGES, VIEW)
    assert reason is not None and "signature" in reason
