"""Where ravectl looks: a real cluster (kubeconfig) or the simulated one (its state file) (I/O).

A target gives three things: an API client, an agent's /debug/state, and a way to run a command
*on* a node. On the simulated cluster every node is a network namespace, so commands run with
`ip netns exec` (plus the node's private /run/wireguard, as the agent sees it) and the observe
endpoint is read from inside the namespace over loopback, which the agent allows without a
token. On a real cluster the observe endpoint is `InternalIP:10265` with a bearer token, and
commands can only run on the node ravectl itself runs on (`--local`).
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import aiohttp

from ravend.kube.client import KubeClient, connect
from ravend.settings import DEFAULT_OBSERVE_PORT, DEFAULT_STATE_DIR
from ravend.sim.netns import CmdResult, run
from ravend.sim.netns_state import RunState

log = logging.getLogger(__name__)

STATE_TIMEOUT_S = 3.0

_GET_STATE = """\
import json, sys, urllib.request
try:
    with urllib.request.urlopen("http://127.0.0.1:%d/debug/state", timeout=%s) as r:
        sys.stdout.write(r.read().decode())
except Exception as exc:
    sys.stdout.write(json.dumps({"__error__": str(exc)}))
"""


class TargetError(Exception):
    """The target cannot be reached at all (no state file, no kubeconfig): exit code 3."""


class Target(Protocol):
    name: str

    async def client(self) -> KubeClient: ...

    async def agent_state(self, node: str, node_ip: str) -> Mapping[str, Any] | None: ...

    async def run_on(
        self, node: str, argv: Sequence[str], timeout: float = 10.0
    ) -> CmdResult | None:
        """Run `argv` on `node`; None when ravectl cannot run commands there."""
        ...

    def cert_dir(self, node: str) -> Path | None: ...

    async def close(self) -> None: ...


def _parse_state(text: str) -> Mapping[str, Any] | None:
    try:
        doc = json.loads(text)
    except ValueError:
        return None
    if not isinstance(doc, dict) or "__error__" in doc:
        return None
    return doc


class _ClientMixin:
    _kubeconfig: Path | None
    _client: KubeClient | None = None

    async def client(self) -> KubeClient:
        if self._client is None:
            try:
                self._client = await connect(self._kubeconfig)
            except Exception as exc:
                raise TargetError(f"cannot load credentials: {exc}") from exc
        return self._client

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None


class SimTarget(_ClientMixin):
    """The simulated cluster recorded in `run_dir` (default /run/ravend-sim)."""

    def __init__(self, run_dir: Path, observe_port: int = DEFAULT_OBSERVE_PORT) -> None:
        try:
            self.state = RunState.load(run_dir)
        except FileNotFoundError as exc:
            raise TargetError(
                f"no simulated cluster in {run_dir}: run `make demo` or `ravend sim up` first"
            ) from exc
        self.name = f"sim {self.state.prefix} ({run_dir})"
        self.run_dir = Path(run_dir)
        self._kubeconfig = Path(self.state.info["api"]["kubeconfig"])
        self._ns = {n["name"]: n["netns"] for n in self.state.info.get("nodes", [])}
        self._observe_port = observe_port

    def node_netns(self, node: str) -> str | None:
        return self._ns.get(node)

    def node_argv(self, node: str, argv: Sequence[str]) -> list[str] | None:
        """Like SimCluster.node_argv: the node's netns plus its private /run/wireguard."""
        ns = self._ns.get(node)
        if ns is None:
            return None
        wg = self.run_dir / "nodes" / node / "wireguard"
        wg.mkdir(parents=True, exist_ok=True)
        script = 'mkdir -p /run/wireguard && mount --bind "$1" /run/wireguard && shift && exec "$@"'
        return ["ip", "netns", "exec", ns, "sh", "-c", script, "sh", str(wg), *argv]

    async def run_on(
        self, node: str, argv: Sequence[str], timeout: float = 10.0
    ) -> CmdResult | None:
        full = self.node_argv(node, argv)
        if full is None:
            return None
        return await run(full, check=False, timeout=timeout)

    async def agent_state(self, node: str, node_ip: str) -> Mapping[str, Any] | None:
        code = _GET_STATE % (self._observe_port, STATE_TIMEOUT_S)
        res = await self.run_on(node, [sys.executable, "-c", code], timeout=STATE_TIMEOUT_S + 10)
        return None if res is None or not res.ok else _parse_state(res.stdout)

    def cert_dir(self, node: str) -> Path | None:
        return self.run_dir / "nodes" / node / "state" / "certs"


class KubeTarget(_ClientMixin):
    """A real cluster: kubeconfig (or in-cluster), agents at InternalIP:observe_port."""

    def __init__(
        self,
        kubeconfig: Path | None,
        agent_token: str | None = None,
        local_node: str | None = None,
        observe_port: int = DEFAULT_OBSERVE_PORT,
        state_dir: Path = DEFAULT_STATE_DIR,
    ) -> None:
        self.name = str(kubeconfig) if kubeconfig else "in-cluster / $KUBECONFIG"
        self._kubeconfig = kubeconfig
        self._token = agent_token
        self._local = local_node
        self._port = observe_port
        self._state_dir = state_dir

    async def agent_state(self, node: str, node_ip: str) -> Mapping[str, Any] | None:
        host = "127.0.0.1" if node == self._local else node_ip
        if not host:
            return None
        if ":" in host:
            host = f"[{host}]"
        headers = {"Authorization": f"Bearer {self._token}"} if self._token else {}
        timeout = aiohttp.ClientTimeout(total=STATE_TIMEOUT_S)
        try:
            async with (
                aiohttp.ClientSession(timeout=timeout) as session,
                session.get(f"http://{host}:{self._port}/debug/state", headers=headers) as resp,
            ):
                if resp.status != 200:
                    log.info("agent %s: /debug/state answered %s", node, resp.status)
                    return None
                return _parse_state(await resp.text())
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            log.info("agent %s unreachable: %s", node, exc)
            return None

    async def run_on(
        self, node: str, argv: Sequence[str], timeout: float = 10.0
    ) -> CmdResult | None:
        if node != self._local:
            return None
        return await run(list(argv), check=False, timeout=timeout)

    def cert_dir(self, node: str) -> Path | None:
        return self._state_dir / "certs" if node == self._local else None
