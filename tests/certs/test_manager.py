"""CertManager against an in-memory CSR API backed by a throwaway CA."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from ravend.certs.csr import (
    SIGNER_APISERVER_CLIENT,
    SIGNER_KUBELET_SERVING,
    CertKind,
    Sans,
    cert_sans,
    expected_request,
)
from ravend.certs.localca import Decider, InMemoryCsrApi, LocalCa, SubmittedCsr
from ravend.certs.manager import CertManager, CertSpec
from ravend.certs.policy import Requester, check_request
from ravend.certs.settings import CertSettings
from ravend.certs.store import CertStore, StoredCert

DAY = dt.timedelta(days=1)
SANS = Sans.of(["cloud-1"], ["10.0.0.1"])


class FakeClock:
    def __init__(self) -> None:
        self.now = dt.datetime.now(dt.UTC).replace(microsecond=0)

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, delta: dt.timedelta) -> None:
        self.now += delta


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def fake_ca(clock: FakeClock) -> LocalCa:
    return LocalCa.generate(clock=clock)


def settings(tmp_path: Path) -> CertSettings:
    return CertSettings(
        state_dir=tmp_path,
        lifetime_seconds=int((10 * DAY).total_seconds()),
        wait_timeout=2.0,
        retry_delay=0.01,
        max_retry_delay=0.05,
    )


def node_policy(node: str) -> Decider:
    """The real approval policy, as the approver would apply it for requester `node`."""

    def decide(req: SubmittedCsr) -> str | None:
        return check_request(
            req.csr_pem, Requester(f"system:node:{node}"), req.signer_name, req.usages
        )

    return decide


async def newer(m: CertManager, seen: int) -> StoredCert:
    _, value = await asyncio.wait_for(m.latest.wait_newer(seen), 5)
    assert value is not None
    return value


@pytest.fixture
async def running() -> AsyncIterator[list[asyncio.Task[None]]]:
    tasks: list[asyncio.Task[None]] = []
    yield tasks
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def start(m: CertManager, tasks: list[asyncio.Task[None]]) -> None:
    tasks.append(asyncio.ensure_future(m.run()))


async def test_issue_store_and_reload_after_restart(
    tmp_path: Path, fake_ca: LocalCa, clock: FakeClock
) -> None:
    api = InMemoryCsrApi(fake_ca, node_policy("edge-1"))
    spec = CertSpec("tunnel-client", CertKind.TUNNEL_CLIENT, "edge-1")
    m = CertManager(settings(tmp_path), spec, api, clock=clock)
    got = await m.ensure()
    assert m.latest.value == got
    [req] = api.requests.values()
    assert req.signer_name == SIGNER_APISERVER_CLIENT
    assert set(req.usages) == {"digital signature", "client auth"}
    assert req.expiration_seconds == 10 * 86400
    assert got.cert.subject.rfc4514_string() == "CN=ravend:tunnel:edge-1,O=ravend:tunnel-clients"
    assert (tmp_path / "certs" / "tunnel-client.key").exists()
    # A restart finds it on disk: no new request.
    m2 = CertManager(settings(tmp_path), spec, api, clock=clock)
    again = await m2.ensure()
    assert again.cert_pem == got.cert_pem and len(api.requests) == 1


async def test_rotates_at_80_percent_with_a_new_key(
    tmp_path: Path, fake_ca: LocalCa, clock: FakeClock, running: list[asyncio.Task[None]]
) -> None:
    api = InMemoryCsrApi(fake_ca)
    m = CertManager(
        settings(tmp_path),
        CertSpec("proxy-client", CertKind.PROXY_CLIENT, "cloud-1"),
        api,
        clock=clock,
    )
    start(m, running)
    first = await newer(m, 0)
    seen = m.latest.version
    clock.advance(7 * DAY)
    m.check_now()
    await asyncio.sleep(0.05)
    assert m.latest.version == seen and m.issued == 1  # 70 %: nothing to do
    clock.advance(1 * DAY + dt.timedelta(minutes=1))
    m.check_now()
    second = await newer(m, seen)
    assert m.issued == 2
    assert second.key_pem != first.key_pem
    assert second.cert.not_valid_before_utc == clock.now
    assert CertStore(tmp_path / "certs").load("proxy-client", clock.now) == second


async def test_san_change_renews(
    tmp_path: Path, fake_ca: LocalCa, clock: FakeClock, running: list[asyncio.Task[None]]
) -> None:
    api = InMemoryCsrApi(fake_ca)
    m = CertManager(
        settings(tmp_path), CertSpec("serving", CertKind.SERVING, "cloud-1"), api, clock=clock
    )
    start(m, running)
    await asyncio.sleep(0.02)
    assert api.requests == {}  # a serving certificate waits for its SANs
    m.set_wanted_sans(SANS)
    first = await newer(m, 0)
    assert cert_sans(first.cert) == SANS
    assert next(iter(api.requests.values())).signer_name == SIGNER_KUBELET_SERVING
    seen = m.latest.version
    m.set_wanted_sans(SANS)  # unchanged: no request
    await asyncio.sleep(0.02)
    assert m.issued == 1
    wider = SANS | Sans.of(ips=["203.0.113.5"])
    m.set_wanted_sans(wider)
    second = await newer(m, seen)
    assert cert_sans(second.cert) == wider


async def test_denied_then_retried(tmp_path: Path, fake_ca: LocalCa, clock: FakeClock) -> None:
    verdicts = ["denied by test", "denied again", None]

    def decide(_req: SubmittedCsr) -> str | None:
        return verdicts.pop(0)

    api = InMemoryCsrApi(fake_ca, decide)
    m = CertManager(
        settings(tmp_path), CertSpec("tc", CertKind.TUNNEL_CLIENT, "edge-1"), api, clock=clock
    )
    got = await asyncio.wait_for(m.ensure(), 5)
    assert len(api.requests) == 3 and verdicts == []
    assert [r.denied for r in api.requests.values()] == ["denied by test", "denied again", None]
    assert got.cert_pem == list(api.requests.values())[-1].certificate


async def test_timeout_then_retried(tmp_path: Path, fake_ca: LocalCa, clock: FakeClock) -> None:
    api = InMemoryCsrApi(fake_ca, auto=False)
    s = CertSettings(state_dir=tmp_path, wait_timeout=0.05, retry_delay=0.01)
    m = CertManager(s, CertSpec("tc", CertKind.TUNNEL_CLIENT, "edge-1"), api, clock=clock)
    task = asyncio.ensure_future(m.ensure())
    while len(api.requests) < 2:
        await asyncio.sleep(0.01)
    api.auto = True  # the approver comes back
    got = await asyncio.wait_for(task, 5)
    assert len(api.requests) >= 3 and m.issued == 1
    assert got.cert_pem == list(api.requests.values())[-1].certificate


class WrongSubjectApi(InMemoryCsrApi):
    """A misbehaving signer: the first answer is a certificate for another node."""

    lied = False

    async def wait_issued(self, name: str, timeout: float) -> bytes:
        if not self.lied:
            self.lied = True
            _, pem = self.ca.issue_pair(expected_request(CertKind.TUNNEL_CLIENT, "edge-2"))
            return pem
        return await super().wait_issued(name, timeout)


async def test_unexpected_certificate_refused(
    tmp_path: Path, fake_ca: LocalCa, clock: FakeClock
) -> None:
    api = WrongSubjectApi(fake_ca)
    m = CertManager(
        settings(tmp_path), CertSpec("tc", CertKind.TUNNEL_CLIENT, "edge-1"), api, clock=clock
    )
    got = await asyncio.wait_for(m.ensure(), 5)
    assert api.lied and len(api.requests) == 2
    assert "edge-1" in got.cert.subject.rfc4514_string()


async def test_old_certificate_stays_in_use_while_renewal_fails(
    tmp_path: Path, fake_ca: LocalCa, clock: FakeClock, running: list[asyncio.Task[None]]
) -> None:
    approve = True
    api = InMemoryCsrApi(fake_ca, lambda _r: None if approve else "approver down")
    m = CertManager(
        settings(tmp_path), CertSpec("tc", CertKind.TUNNEL_CLIENT, "edge-1"), api, clock=clock
    )
    start(m, running)
    first = await newer(m, 0)
    approve = False
    clock.advance(9 * DAY)
    m.check_now()
    while len(api.requests) < 3:
        await asyncio.sleep(0.01)
    assert m.latest.value == first  # still valid, still served
    approve = True
    second = await newer(m, m.latest.version)
    assert second.cert_pem != first.cert_pem


async def test_unusable_store_is_replaced(
    tmp_path: Path, fake_ca: LocalCa, clock: FakeClock
) -> None:
    store = CertStore(tmp_path / "certs")
    _, c1 = fake_ca.issue_pair(expected_request(CertKind.TUNNEL_CLIENT, "edge-1"))
    k2, _ = fake_ca.issue_pair(expected_request(CertKind.TUNNEL_CLIENT, "edge-1"))
    store.save("tc", k2, c1)  # torn pair: key from one issue, cert from another
    api = InMemoryCsrApi(fake_ca)
    m = CertManager(
        settings(tmp_path), CertSpec("tc", CertKind.TUNNEL_CLIENT, "edge-1"), api, clock=clock
    )
    got = await m.ensure()
    assert len(api.requests) == 1 and got.cert_pem != c1
    assert store.load("tc", clock.now) == got


def test_client_kinds_refuse_sans(tmp_path: Path, fake_ca: LocalCa) -> None:
    m = CertManager(
        settings(tmp_path), CertSpec("tc", CertKind.TUNNEL_CLIENT, "e"), InMemoryCsrApi(fake_ca)
    )
    with pytest.raises(ValueError, match="no SANs"):
        m.set_wanted_sans(SANS)
