"""CSR flow: requester fields, /approval, signing by the sim signer, denial, signer checks."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import ipaddress
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from kubernetes_asyncio import client, config

from ravend.sim.apiserver import SimApiServer

SERVING = "kubernetes.io/kubelet-serving"
CLIENT = "kubernetes.io/kube-apiserver-client"


def csr_pem(cn: str, orgs: list[str], ips: list[str] = (), dns: list[str] = ()) -> bytes:  # type: ignore[assignment]
    key = ec.generate_private_key(ec.SECP256R1())
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in orgs]
    builder = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([*attrs, x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    )
    sans: list[x509.GeneralName] = [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
    sans += [x509.DNSName(d) for d in dns]
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


def csr_obj(
    name: str, pem: bytes, signer: str, usages: list[str], seconds: int | None = None
) -> client.V1CertificateSigningRequest:
    return client.V1CertificateSigningRequest(
        metadata=client.V1ObjectMeta(name=name),
        spec=client.V1CertificateSigningRequestSpec(
            request=base64.b64encode(pem).decode(),
            signer_name=signer,
            usages=usages,
            expiration_seconds=seconds,
            username="forged",
            groups=["system:masters"],
        ),
    )


async def certs_api(
    server: SimApiServer, tmp_path: Path, token: str
) -> tuple[client.ApiClient, client.CertificatesV1Api]:
    cfg = client.Configuration()
    path = server.write_kubeconfig(tmp_path / f"kc-{token}", token=token)
    await config.load_kube_config(config_file=str(path), client_configuration=cfg)
    api = client.ApiClient(cfg)
    return api, client.CertificatesV1Api(api)


async def approve(certs: client.CertificatesV1Api, name: str, kind: str = "Approved") -> None:
    csr = await certs.read_certificate_signing_request(name)
    csr.status.conditions = [
        client.V1CertificateSigningRequestCondition(
            type=kind, status="True", reason="Test", message="by test"
        )
    ]
    await certs.replace_certificate_signing_request_approval(name, csr)


async def wait_cert(
    certs: client.CertificatesV1Api, name: str
) -> client.V1CertificateSigningRequest:
    async with asyncio.timeout(5):
        while True:
            csr = await certs.read_certificate_signing_request(name)
            if csr.status.certificate or any(
                c.type == "Failed" for c in csr.status.conditions or []
            ):
                return csr
            await asyncio.sleep(0.02)


async def test_kubelet_serving_csr_is_signed_after_approval(
    apiserver: SimApiServer, tmp_path: Path
) -> None:
    apiserver.add_identity(
        "node-token", "system:node:n1", ["system:nodes"], {"k": ["v1", "v2"]}, uid="u-1"
    )
    api, certs = await certs_api(apiserver, tmp_path, "node-token")
    async with api:
        pem = csr_pem("system:node:n1", ["system:nodes"], ips=["192.168.0.195"], dns=["n1"])
        usages = ["digital signature", "server auth"]
        created = await certs.create_certificate_signing_request(
            csr_obj("c1", pem, SERVING, usages, 3600)
        )
        # The requester fields come from the authenticated identity, never from the body.
        assert created.spec.username == "system:node:n1"
        assert created.spec.groups == ["system:nodes", "system:authenticated"]
        assert created.spec.uid == "u-1" and created.spec.extra == {"k": ["v1", "v2"]}
        await asyncio.sleep(0.2)
        assert not (
            await certs.read_certificate_signing_request("c1")
        ).status.certificate  # not approved
        await approve(certs, "c1")
        done = await wait_cert(certs, "c1")
    cert = x509.load_pem_x509_certificate(base64.b64decode(done.status.certificate))
    ca = x509.load_pem_x509_certificate(apiserver.ca_cert_pem)
    cert.verify_directly_issued_by(ca)
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "system:node:n1"
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("192.168.0.195")]
    lifetime = cert.not_valid_after_utc - dt.datetime.now(dt.UTC)
    assert dt.timedelta(minutes=55) < lifetime <= dt.timedelta(hours=1)


async def test_client_csr_signed_with_client_auth(apiserver: SimApiServer, tmp_path: Path) -> None:
    api, certs = await certs_api(apiserver, tmp_path, apiserver.admin_token)
    async with api:
        pem = csr_pem("ravend:n1", ["ravend"])
        await certs.create_certificate_signing_request(
            csr_obj("c2", pem, CLIENT, ["digital signature", "key encipherment", "client auth"])
        )
        await approve(certs, "c2")
        done = await wait_cert(certs, "c2")
    cert = x509.load_pem_x509_certificate(base64.b64decode(done.status.certificate))
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert ku.digital_signature and ku.key_encipherment


async def test_denied_csr_is_never_signed(apiserver: SimApiServer, tmp_path: Path) -> None:
    api, certs = await certs_api(apiserver, tmp_path, apiserver.admin_token)
    async with api:
        pem = csr_pem("system:node:n1", ["system:nodes"], ips=["10.0.0.1"])
        await certs.create_certificate_signing_request(
            csr_obj("c3", pem, SERVING, ["digital signature", "server auth"])
        )
        await approve(certs, "c3", "Denied")
        await asyncio.sleep(0.3)
        csr = await certs.read_certificate_signing_request("c3")
    assert not csr.status.certificate
    assert [c.type for c in csr.status.conditions] == ["Denied"]


async def test_signer_refuses_bad_usages_with_failed_condition(
    apiserver: SimApiServer, tmp_path: Path
) -> None:
    api, certs = await certs_api(apiserver, tmp_path, apiserver.admin_token)
    async with api:
        pem = csr_pem("someone", [])
        await certs.create_certificate_signing_request(
            csr_obj("c4", pem, CLIENT, ["server auth", "client auth"])
        )
        await approve(certs, "c4")
        done = await wait_cert(certs, "c4")
        pem_bad = csr_pem("system:node:n2", ["system:nodes"])  # serving CSR without any SAN
        await certs.create_certificate_signing_request(
            csr_obj("c5", pem_bad, SERVING, ["digital signature", "server auth"])
        )
        await approve(certs, "c5")
        done5 = await wait_cert(certs, "c5")
    assert not done.status.certificate
    failed = next(c for c in done.status.conditions if c.type == "Failed")
    assert failed.reason == "SignerValidationFailure"
    assert failed.message == "invalid usage for client certificate: server auth"
    assert (
        next(c for c in done5.status.conditions if c.type == "Failed").message
        == "DNS or IP subjectAltName is required"
    )


async def test_invalid_csr_rejected_on_create(apiserver: SimApiServer, tmp_path: Path) -> None:
    from kubernetes_asyncio.client.exceptions import ApiException

    api, certs = await certs_api(apiserver, tmp_path, apiserver.admin_token)
    async with api:
        bad = csr_obj("c6", b"not a csr", CLIENT, ["client auth"], seconds=60)
        try:
            await certs.create_certificate_signing_request(bad)
        except ApiException as exc:
            assert exc.status == 422
            body = str(exc.body)
            assert "spec.request" in body and "spec.expirationSeconds" in body
        else:
            raise AssertionError("invalid CSR accepted")
