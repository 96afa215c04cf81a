"""`ravend agent` as a real process against the embedded API server.

It starts, syncs, reports ready, and exits cleanly on SIGTERM within its deadline; with the API
server unreachable it logs clearly and backs off instead of spinning.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
import time
from pathlib import Path

import aiohttp

from ravend.sim.apiserver import SimApiServer


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def _spawn(kubeconfig: Path, tmp: Path, port: int) -> asyncio.subprocess.Process:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "ravend", "agent",
        "--node-name", "test-node", "--node-ip", "127.0.0.1",
        "--kubeconfig", str(kubeconfig), "--state-dir", str(tmp / "state"),
        "--observe-host", "127.0.0.1", "--observe-port", str(port),
        "--webhook-port", "0", "--shutdown-deadline", "5",
        stdout=asyncio.subprocess.DEVNULL, stderr=(tmp / "agent.log").open("wb"), env=env,
    )  # fmt: skip


async def _wait_ok(port: int, path: str, timeout: float) -> bool:
    """Poll http://127.0.0.1:port/path until it answers 200 or `timeout` seconds pass."""
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < deadline:
            with contextlib.suppress(aiohttp.ClientError):
                async with http.get(f"http://127.0.0.1:{port}/{path}") as r:
                    if r.status == 200:
                        return True
            await asyncio.sleep(0.1)
    return False


async def _wait_ready(port: int, timeout: float) -> bool:
    return await _wait_ok(port, "readyz", timeout)


async def test_agent_starts_syncs_is_ready_and_stops_on_sigterm(
    apiserver: SimApiServer, kubeconfig: Path, tmp_path: Path
) -> None:
    port = _free_port()
    proc = await _spawn(kubeconfig, tmp_path, port)
    try:
        assert await _wait_ready(port, 20), (tmp_path / "agent.log").read_text()
        lag = await _l7_loop_lag(port)
        assert lag is not None and lag < 1.0, "the L7 data loop thread is not probed"
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(proc.wait(), 10)
        took = time.monotonic() - started
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    log = (tmp_path / "agent.log").read_text()
    assert code == 0, log
    assert took < 5, f"shutdown took {took:.1f}s, beyond the 5 s deadline"
    assert "ravend stopped" in log
    assert "event loop thread l7 started (uvloop)" in log


async def _l7_loop_lag(port: int) -> float | None:
    """ravend_l7_loop_lag_seconds from /metrics, once the first probe has set it."""
    deadline = time.monotonic() + 10
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < deadline:
            async with http.get(f"http://127.0.0.1:{port}/metrics") as r:
                for line in (await r.text()).splitlines():
                    if line.startswith("ravend_l7_loop_lag_seconds "):
                        value = float(line.split()[1])
                        if value > 0:
                            return value
            await asyncio.sleep(0.2)
    return None


async def test_unreachable_apiserver_backs_off_with_clear_logs(
    apiserver: SimApiServer, kubeconfig: Path, tmp_path: Path
) -> None:
    await apiserver.faults.set_unavailable(True, mode="refuse")
    port = _free_port()
    started = time.monotonic()
    proc = await _spawn(kubeconfig, tmp_path, port)
    try:
        # Start-up time varies with machine load: wait for the health server, then let the
        # informers fail for a few seconds.
        assert await _wait_ok(port, "healthz", 30), "health server never came up"
        await asyncio.sleep(4)
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{port}/readyz") as r:
                assert r.status == 503  # never ready without the API server
            async with http.get(f"http://127.0.0.1:{port}/healthz") as r:
                assert r.status == 200  # but alive: the loop is not wedged
        elapsed = time.monotonic() - started
        log = (tmp_path / "agent.log").read_text()
        failures = [line for line in log.splitlines() if "unavailable" in line.lower()]
        assert failures, log
        # Four informers with backoff from 0.5 s: a handful of lines per second, not a busy loop.
        assert len(failures) < 15 * elapsed, f"{len(failures)} failure lines in {elapsed:.0f} s"
        await apiserver.faults.set_unavailable(False)
        assert await _wait_ready(port, 40), "agent did not recover after the API server returned"
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), 10)
        except TimeoutError:
            proc.kill()
            await proc.wait()


async def test_agent_leads_and_elects_gateway_endpoints(
    apiserver: SimApiServer, kubeconfig: Path, tmp_path: Path
) -> None:
    """The wired agent: it wins the controller Lease and writes the Gateway's status.

    L7 only: this agent runs in the test machine's own network namespace, so L3 (which would
    program links, rules and nftables) stays off here; L3 runs in the simulated cluster tests.
    """
    from ravend.kube.client import connect
    from ravend.kube.resources import CONFIGMAPS, GATEWAYS, NODES

    admin = await connect(kubeconfig)
    try:
        await admin.create(NODES, {
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": "test-node", "labels": {"raven.openyurt.io/gateway": "gw-a"}},
            "spec": {"podCIDR": "10.244.9.0/24", "podCIDRs": ["10.244.9.0/24"]},
            "status": {"addresses": [{"type": "InternalIP", "address": "127.0.0.1"}],
                       "conditions": [{"type": "Ready", "status": "True"}]},
        })  # fmt: skip
        await admin.create(CONFIGMAPS, {
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "raven-cfg", "namespace": "kube-system"},
            "data": {"enable-l3-tunnel": "false", "enable-l7-proxy": "false"},
        })  # fmt: skip
        await admin.create(GATEWAYS, {
            "apiVersion": "raven.openyurt.io/v1beta1", "kind": "Gateway",
            "metadata": {"name": "gw-a"},
            "spec": {"proxyConfig": {"Replicas": 1},
                     "endpoints": [{"nodeName": "test-node", "type": "proxy", "port": 10262}]},
        })  # fmt: skip
        await admin.replace(CONFIGMAPS, {
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "raven-cfg", "namespace": "kube-system"},
            "data": {"enable-l3-tunnel": "false", "enable-l7-proxy": "true"},
        })  # fmt: skip
        port = _free_port()
        proc = await _spawn(kubeconfig, tmp_path, port)
        try:
            active: list[dict[str, object]] = []
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and not active:
                gw = await admin.get(GATEWAYS, "gw-a")
                active = (gw.get("status") or {}).get("activeEndpoints") or []
                await asyncio.sleep(0.2)
            log = (tmp_path / "agent.log").read_text()
            assert active, log
            assert active[0]["nodeName"] == "test-node"
            assert active[0]["type"] == "proxy"
            assert active[0]["config"] == {"enable-l7-proxy": "true"}
        finally:
            proc.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(proc.wait(), 10) == 0
    finally:
        await admin.close()
