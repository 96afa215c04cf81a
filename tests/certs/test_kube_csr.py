"""End to end through the embedded API server: submit, approve by policy, sign, rotate."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from ravend.certs.api import CsrDenied
from ravend.certs.csr import CertKind, Sans, cert_sans
from ravend.certs.kube_csr import KubeCsrApi, csr_outcome
from ravend.certs.manager import CertManager, CertSpec
from ravend.certs.policy import NODE_NAME_EXTRA, PolicyView, Requester, check_request
from ravend.certs.settings import CertSettings
from ravend.certs.tls import client_context, identity_from_peercert, server_context
from ravend.kube.client import KubeClient, connect
from ravend.kube.resources import CSRS
from ravend.sim.apiserver import SimApiServer

SA = "system:serviceaccount:kube-system:ravend"


async def approver(admin: KubeClient, view: PolicyView) -> None:
    """Stand-in for the CSR approver controller: approve or deny by the real policy."""
    done: set[str] = set()
    while True:
        items, _ = await admin.list(CSRS)
        for csr in items:
            name = csr["metadata"]["name"]
            if name in done:
                continue
            done.add(name)
            spec = csr["spec"]
            requester = Requester(
                spec.get("username", ""),
                tuple(spec.get("groups") or ()),
                {k: tuple(v) for k, v in (spec.get("extra") or {}).items()},
            )
            reason = check_request(
                base64.b64decode(spec["request"]),
                requester,
                spec["signerName"],
                spec.get("usages") or [],
                view,
            )
            if reason is None:
                await admin.approve_csr(name, "RavendTest", "policy allowed")
            else:
                await admin.deny_csr(name, "RavendTest", reason)
        await asyncio.sleep(0.05)


async def node_client(apiserver: SimApiServer, tmp_path: Path, node: str, sa: bool) -> KubeClient:
    token = f"token-{node}-{sa}"
    if sa:
        apiserver.add_identity(token, SA, ["system:serviceaccounts"], {NODE_NAME_EXTRA: [node]})
    else:
        apiserver.add_identity(token, f"system:node:{node}", ["system:nodes"])
    return await connect(apiserver.write_kubeconfig(tmp_path / f"kc-{node}-{sa}", token=token))


@pytest.fixture
async def admin(kubeconfig: Path) -> AsyncIterator[KubeClient]:
    client = await connect(kubeconfig)
    yield client
    await client.close()


def fast(tmp_path: Path, node: str) -> CertSettings:
    return CertSettings(
        state_dir=tmp_path / node, lifetime_seconds=600, wait_timeout=5, retry_delay=0.05
    )


async def test_issue_rotate_and_san_change(
    apiserver: SimApiServer, admin: KubeClient, tmp_path: Path
) -> None:
    import ipaddress

    view = PolicyView(
        node_addresses={"cloud-1": frozenset({ipaddress.ip_address("127.0.0.1")})},
        shared_addresses=frozenset({ipaddress.ip_address("10.96.0.9")}),
    )
    cloud = await node_client(apiserver, tmp_path, "cloud-1", sa=True)
    edge = await node_client(apiserver, tmp_path, "edge-1", sa=False)
    offset = dt.timedelta(0)

    def clock() -> dt.datetime:
        # Time jumps ahead only until the serving manager rotated once: the new certificate is
        # issued at real time, so keeping the jump would make it look due again at once.
        jumped = offset if serving.issued < 2 else dt.timedelta(0)
        return dt.datetime.now(dt.UTC) + jumped

    serving = CertManager(
        fast(tmp_path, "cloud-1"),
        CertSpec("serving", CertKind.SERVING, "cloud-1"),
        KubeCsrApi(cloud),
        wanted_sans=Sans.of(["cloud-1"], ["127.0.0.1"]),
        clock=clock,
    )
    tunnel = CertManager(
        fast(tmp_path, "edge-1"),
        CertSpec("tunnel-client", CertKind.TUNNEL_CLIENT, "edge-1"),
        KubeCsrApi(edge),
        clock=clock,
    )
    try:
        async with asyncio.TaskGroup() as tg:
            tasks = [
                tg.create_task(approver(admin, view)),
                tg.create_task(serving.run()),
                tg.create_task(tunnel.run()),
            ]
            _, s1 = await asyncio.wait_for(serving.latest.wait_newer(0), 10)
            _, t1 = await asyncio.wait_for(tunnel.latest.wait_newer(0), 10)
            assert s1 is not None and t1 is not None
            # The issued pair works: mutual TLS with the cluster CA, identity from the cert.
            await handshake(apiserver.ca_pem, s1.cert_pem, s1.key_pem, t1.cert_pem, t1.key_pem)

            # Rotation: time moves past 80 % of the 600 s lifetime.
            seen = serving.latest.version
            offset = dt.timedelta(seconds=570)
            serving.check_now()
            _, s2 = await asyncio.wait_for(serving.latest.wait_newer(seen), 10)
            assert serving.issued == 2
            assert s2 is not None and s2.cert.serial_number != s1.cert.serial_number
            assert s2.key_pem != s1.key_pem

            # SAN change: the internal Service got a ClusterIP.
            seen = serving.latest.version
            wanted = Sans.of(["cloud-1"], ["127.0.0.1", "10.96.0.9"])
            serving.set_wanted_sans(wanted)
            _, s3 = await asyncio.wait_for(serving.latest.wait_newer(seen), 10)
            assert s3 is not None and cert_sans(s3.cert) == wanted
            for t in tasks:
                t.cancel()
    except* asyncio.CancelledError:
        pass
    finally:
        await cloud.close()
        await edge.close()
    csrs, _ = await admin.list(CSRS)
    assert all(c["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "ravend" for c in csrs)
    assert len(csrs) >= 4


async def handshake(ca: bytes, scert: bytes, skey: bytes, ccert: bytes, ckey: bytes) -> None:
    seen: list[str | None] = []

    async def handle(_r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        seen.append(identity_from_peercert(w.get_extra_info("peercert")))
        w.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=server_context(scert, skey, ca))
    port = server.sockets[0].getsockname()[1]
    async with server:
        r, w = await asyncio.open_connection(
            "127.0.0.1", port, ssl=client_context(ca, ccert, ckey), server_hostname="cloud-1"
        )
        await r.read()
        w.close()
    assert seen == ["edge-1"]


async def test_node_cannot_get_another_nodes_certificate(
    apiserver: SimApiServer, admin: KubeClient, tmp_path: Path
) -> None:
    """edge-2's credentials asking for edge-1's tunnel identity: denied by the policy."""
    from ravend.certs.csr import build_csr, expected_request
    from ravend.certs.keys import generate_key

    edge2 = await node_client(apiserver, tmp_path, "edge-2", sa=False)
    api = KubeCsrApi(edge2)
    req = expected_request(CertKind.TUNNEL_CLIENT, "edge-1")
    try:
        async with asyncio.TaskGroup() as tg:
            task = tg.create_task(approver(admin, PolicyView()))
            await api.create(
                "steal", build_csr(req, generate_key()), req.signer_name, sorted(req.usages), 600
            )
            with pytest.raises(CsrDenied, match="may not request a certificate for node 'edge-1'"):
                await api.wait_issued("steal", 5)
            task.cancel()
    except* asyncio.CancelledError:
        pass
    finally:
        await edge2.close()


@pytest.mark.parametrize(
    ("status", "result"),
    [
        ({}, None),
        ({"conditions": [{"type": "Approved", "status": "True"}]}, None),
        ({"certificate": base64.b64encode(b"PEM").decode()}, b"PEM"),
    ],
)
def test_csr_outcome(status: dict[str, Any], result: bytes | None) -> None:
    assert csr_outcome({"status": status}) == result


def test_csr_outcome_failed() -> None:
    from ravend.certs.api import CsrFailed

    with pytest.raises(CsrFailed, match="SignerValidationFailure"):
        csr_outcome(
            {"status": {"conditions": [{"type": "Failed", "reason": "SignerValidationFailure"}]}}
        )
    with pytest.raises(CsrDenied):
        csr_outcome({"status": {"conditions": [{"type": "Denied", "status": "True"}]}})
