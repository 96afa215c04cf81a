"""Shared fixtures of the L7 tunnel tests: a byte pipe between sans-IO connections, a test PKI."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import uvloop
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from ravend.l7proxy.protocol import Connection, Role
from ravend.l7proxy.protocol_events import Event
from ravend.l7proxy.protocol_frames import ProtocolSettings


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> dict[str, Callable[[], asyncio.AbstractEventLoop]]:
    """The tunnel tests run on both loops (uvloop has crashed under churn: environment.md)."""
    if item.path.name in ("test_tunnel.py", "test_edge_splice.py"):
        return {"asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}
    return {"asyncio": asyncio.new_event_loop}


Pump = Callable[[Connection, Connection], tuple[list[Event], list[Event]]]
Pair = Callable[..., tuple[Connection, Connection]]


def pump_bytes(a: Connection, b: Connection) -> tuple[list[Event], list[Event]]:
    """Move bytes both ways until neither side has anything to send; return (a's, b's) events."""
    a_events: list[Event] = []
    b_events: list[Event] = []
    while True:
        to_b, to_a = a.data_to_send(), b.data_to_send()
        if not to_b and not to_a:
            return a_events, b_events
        if to_b:
            b_events += b.receive_data(to_b)
        if to_a:
            a_events += a.receive_data(to_a)


def make_pair(
    client_settings: ProtocolSettings | None = None,
    server_settings: ProtocolSettings | None = None,
) -> tuple[Connection, Connection]:
    """A client and a server that have already exchanged HELLOs."""
    client = Connection(Role.CLIENT, client_settings)
    server = Connection(Role.SERVER, server_settings)
    pump_bytes(client, server)
    return client, server


# Session scope: they are pure functions, and hypothesis refuses function-scoped fixtures.
@pytest.fixture(scope="session")
def pump() -> Pump:
    return pump_bytes


@pytest.fixture(scope="session")
def pair() -> Pair:
    return make_pair


# ---- throwaway PKI for the loopback TLS tests ---------------------------------------------


@dataclass(frozen=True)
class Pki:
    """Files of a throwaway CA, a server certificate and node client certificates."""

    directory: Path
    ca: Path

    def server_context(self) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(self.ca)
        ctx.load_cert_chain(self.directory / "server.pem", self.directory / "server.key")
        return ctx

    def client_context(self, name: str | None) -> ssl.SSLContext:
        """A client context presenting the certificate `name` (None: no certificate)."""
        ctx = ssl.create_default_context(cafile=self.ca)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3
        if name is not None:
            ctx.load_cert_chain(self.directory / f"{name}.pem", self.directory / f"{name}.key")
        return ctx


def _write(
    directory: Path, name: str, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey
) -> None:
    (directory / f"{name}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (directory / f"{name}.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


def _issue(
    subject: x509.Name,
    issuer: x509.Name,
    signer: ec.EllipticCurvePrivateKey,
    key: ec.EllipticCurvePrivateKey,
    *,
    ca: bool = False,
    san: list[x509.GeneralName] | None = None,
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if san:
        builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
    return builder.sign(signer, hashes.SHA256())


def _name(cn: str, org: str | None = None) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, cn)]
    if org:
        attrs.insert(0, x509.NameAttribute(NameOID.ORGANIZATION_NAME, org))
    return x509.Name(attrs)


def make_pki(directory: Path) -> Pki:
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name("ravend test CA")
    _write(directory, "ca", _issue(ca_name, ca_name, ca_key, ca_key, ca=True), ca_key)
    key = ec.generate_private_key(ec.SECP256R1())
    san: list[x509.GeneralName] = [
        x509.DNSName("localhost"),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
    ]
    _write(directory, "server", _issue(_name("tunnel"), ca_name, ca_key, key, san=san), key)
    clients = {
        # The subjects ravend's CSR flow gives tunnel clients (ravend/certs/csr.py).
        "edge-1": _name("ravend:tunnel:edge-1", "ravend:tunnel-clients"),
        "edge-2": _name("ravend:tunnel:edge-2", "ravend:tunnel-clients"),
        "intruder": _name("edge-1"),  # a valid certificate that does not name a node
        # A kubelet's client certificate proves a node, but not that it is a ravend edge.
        "kubelet-cert": _name("system:node:edge-1", "system:nodes"),
    }
    for file_name, subject in clients.items():
        key = ec.generate_private_key(ec.SECP256R1())
        _write(directory, file_name, _issue(subject, ca_name, ca_key, key), key)
    return Pki(directory, directory / "ca.pem")


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


ClientContext = Callable[[str | None], ssl.SSLContext]


@pytest.fixture
def server_ctx(pki: Pki) -> ssl.SSLContext:
    return pki.server_context()


@pytest.fixture
def client_ctx(pki: Pki) -> ClientContext:
    return pki.client_context
