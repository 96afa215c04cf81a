"""run_webhook without an approver yet, and the sim's registration following answering agents."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable
from pathlib import Path

import pytest

import ravend.controllers.webhook_serving as serving
from ravend.controllers.csr_approver import CsrApprover
from ravend.election.examples import manual_view
from ravend.kube.client import KubeClient
from ravend.runtime import Latest
from ravend.sim.apiserver import SimApiServer
from ravend.sim.cluster_webhooks import WebhookTargets, answers, follow_webhooks

from .conftest import NODE, cert_settings, free_port, node_client, running


async def test_waits_for_approval_with_a_clear_log_then_serves(
    apiserver: SimApiServer,
    admin: KubeClient,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(serving, "WAIT_LOG_INTERVAL", 0.2)
    client = await node_client(apiserver, tmp_path, NODE)
    port, ready = free_port(), asyncio.Event()
    url = f"https://127.0.0.1:{port}/validate"
    webhook = serving.run_webhook(
        client, NODE, cert_settings(tmp_path / "s"), port, ready.set, host="127.0.0.1"
    )
    try:
        with caplog.at_level(logging.WARNING, logger=serving.__name__):
            async with running(webhook):
                await asyncio.sleep(0.7)  # no controller elected: nothing approves the CSR
                assert not ready.is_set()
                assert not await answers(url, apiserver.ca_pem)
                waiting = [r for r in caplog.records if "waits for approval" in r.getMessage()]
                assert waiting, "no log saying why the webhook is not up"
                view = Latest(dataclasses.replace(manual_view(), synced=True))
                async with running(CsrApprover(admin, view).run()):
                    await asyncio.wait_for(ready.wait(), 10)
                    assert await answers(url, apiserver.ca_pem)
    finally:
        await client.close()


async def test_registration_waits_for_an_answer_and_moves_to_an_answering_agent(
    apiserver: SimApiServer, approver: CsrApprover, admin: KubeClient, tmp_path: Path
) -> None:
    # Two "agents" on two loopback addresses, same port: the registration must pick one that
    # answers, and move when it stops answering.
    port = free_port()
    client = await node_client(apiserver, tmp_path, NODE)
    settings = cert_settings(tmp_path / "s")
    registered: list[str] = []
    follow = follow_webhooks(
        apiserver,
        WebhookTargets(("127.0.0.1", "127.0.0.2"), port),
        on_registered=registered.append,
        poll=0.1,
    )
    ready_a, ready_b = asyncio.Event(), asyncio.Event()
    try:
        async with running(follow):
            await asyncio.sleep(0.3)
            assert registered == []  # nothing answers: nothing registered, built-in path
            first = serving.run_webhook(client, NODE, settings, port, ready_a.set, host="127.0.0.1")
            async with running(first) as (task_a,):
                await asyncio.wait_for(ready_a.wait(), 10)
                await _until(lambda: registered == ["127.0.0.1"])
                second = serving.run_webhook(
                    client, NODE, settings, port, ready_b.set, host="127.0.0.2"
                )
                async with running(second):
                    await asyncio.wait_for(ready_b.wait(), 10)
                    task_a.cancel()
                    await _until(lambda: registered == ["127.0.0.1", "127.0.0.2"])
                    assert apiserver.api.validating is not None
                    assert "127.0.0.2" in apiserver.api.validating.url
    finally:
        await client.close()


async def _until(cond: Callable[[], bool], timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not cond():
            await asyncio.sleep(0.05)
