"""SimCluster: topology + network namespaces + embedded API server + one agent per node (I/O).

`up()` builds the network (netns), starts the API server inside the API namespace, seeds
Nodes/Gateways/raven-cfg, writes one kubeconfig per node and starts `python -m ravend agent`
inside every node namespace. Everything is recorded in `<run-dir>/state.json` first, so `down`
(here or `ravend sim down` from another process, even after a crash) removes it all.

Host access to the API server: a veth between the root namespace and the API namespace with a
dedicated /30 from 198.19.0.0/16 (the only address ravend.sim adds to the root namespace, and
only on its own link). Nodes use the server's WAN address, edges through their NAT.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import secrets
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ravend.sim import netns
from ravend.sim.cluster_api import AdminClient, ApiServerSpec, KubeconfigOut
from ravend.sim.cluster_webhooks import reachable_addresses
from ravend.sim.netns_plan import NetPlan, plan_network
from ravend.sim.netns_state import ProcRecord, RunState, is_running, spawn, stop_processes
from ravend.sim.topology import Topology
from ravend.sim.topology_k8s import admin_identity, agent_identity, seed_objects

log = logging.getLogger(__name__)

DEFAULT_RUN_DIR = Path("/run/ravend-sim")
API_PORT = 6443
API_PROC = "apiserver"


@dataclass(frozen=True)
class ClusterOptions:
    run_dir: Path = DEFAULT_RUN_DIR
    """Where the state file, kubeconfigs, agent state dirs and logs go."""
    agents: bool = True
    """Start one `ravend agent` per node (off: network + API server only, for harness tests)."""
    apiserver: bool = True
    """Start the embedded API server and seed the topology's objects."""
    api_port: int = API_PORT
    """TCP port of the API server inside its namespace (no clash: its own namespace)."""
    agent_args: tuple[str, ...] = ()
    """Extra flags appended to every agent's command line."""
    python: str = sys.executable
    """Interpreter for child processes (the venv's, so `ravend` is importable)."""
    ready_timeout: float = 20.0
    """Seconds to wait for the API server to listen and write its kubeconfigs."""
    kubelets: bool = True
    """Start a fake kubelet (ravend.sim.kubelet) on every node, on its InternalIP :10250/:10255,
    so the L7 path ends at something that behaves like a kubelet."""
    webhooks: bool = True
    """With agents: once an agent on a WAN-reachable node serves the webhooks (10266), the API
    server calls them for Gateway conversion and validation, as kube-apiserver does (see
    ravend.sim.cluster_webhooks). Off: built-in conversion, no validating webhook."""


def agent_proc(node: str) -> str:
    return f"agent:{node}"


class SimCluster:
    """One simulated cluster run; see the module docstring."""

    def __init__(self, topology: Topology, options: ClusterOptions | None = None) -> None:
        self.topology = topology
        self.options = options or ClusterOptions()
        self.prefix = netns.new_prefix()
        self.state = RunState(run_dir=str(self.options.run_dir), prefix=self.prefix)
        self._plan: NetPlan | None = None
        self._tokens = {n.name: secrets.token_urlsafe(24) for n in topology.nodes}
        self._admin_token = secrets.token_urlsafe(24)

    @property
    def plan(self) -> NetPlan:
        if self._plan is None:
            raise RuntimeError("SimCluster.up() has not run")
        return self._plan

    @property
    def run_dir(self) -> Path:
        return self.options.run_dir

    def node_netns(self, node: str) -> str:
        return self.plan.node_ns[node]

    def pod_netns(self, node: str) -> str:
        return self.plan.pod_ns[node]

    def kubeconfig(self, node: str) -> Path:
        return self.run_dir / "kubeconfigs" / f"{node}.yaml"

    @property
    def admin_kubeconfig(self) -> Path:
        return self.run_dir / "kubeconfigs" / "admin.yaml"

    @property
    def api_url(self) -> str:
        """URL for clients in the root namespace (over the host link)."""
        return f"https://{self.plan.host.api_ip}:{self.options.api_port}"

    @property
    def api_wan_url(self) -> str:
        """URL for the nodes (over the simulated WAN)."""
        return f"https://{self.topology.api_ip}:{self.options.api_port}"

    async def up(self) -> float:
        """Build everything; returns the bring-up time in seconds. Cleans up on failure."""
        if self.state.path.exists():
            raise RuntimeError(f"{self.state.path} exists: run `ravend sim down` first")
        loop = asyncio.get_running_loop()
        start = loop.time()
        try:
            host = await netns.choose_host_link(self.prefix)
            self._plan = plan_network(self.topology, self.prefix, host)
            self.state.info = self.status()
            await netns.build(self._plan, self.state)
            if self.options.apiserver:
                await self._start_apiserver()
                await AdminClient.from_kubeconfig(self.admin_kubeconfig).create_all(
                    seed_objects(self.topology, _now())
                )
            if self.options.apiserver and self.options.kubelets:
                for node in self.topology.nodes:
                    self.start_kubelet(node.name)
            if self.options.agents:
                for node in self.topology.nodes:
                    self.start_agent(node.name)
        except BaseException:
            await self.down()
            raise
        elapsed = loop.time() - start
        self.state.info = {**self.status(), "up_seconds": round(elapsed, 3)}
        self.state.save()
        log.info("simulated cluster %s up in %.2f s", self.prefix, elapsed)
        return elapsed

    async def down(self) -> None:
        """Kill every process, delete every namespace; the state file goes last."""
        await down_run_dir(self.run_dir, self.state)

    async def _start_apiserver(self) -> None:
        kube_dir = self.run_dir / "kubeconfigs"
        kube_dir.mkdir(parents=True, exist_ok=True)
        ready = self.run_dir / "apiserver.ready"
        ready.unlink(missing_ok=True)
        spec = ApiServerSpec(
            host="0.0.0.0",
            port=self.options.api_port,
            sans=[self.topology.api_ip, self.plan.host.api_ip],
            ready_file=str(ready),
            state_dir=str(self.run_dir / "apiserver"),
            identities=[admin_identity(self._admin_token)]
            + [agent_identity(n, tok) for n, tok in self._tokens.items()],
            kubeconfigs=[KubeconfigOut(str(self.admin_kubeconfig), self._admin_token, self.api_url)]
            + [
                KubeconfigOut(str(self.kubeconfig(n)), tok, self.api_wan_url)
                for n, tok in self._tokens.items()
            ],
            webhook_addresses=list(self._webhook_addresses()),
            webhooks_ready_file=str(self.webhooks_ready_file),
        )
        self.webhooks_ready_file.unlink(missing_ok=True)
        spec_path = self.run_dir / "apiserver.json"
        spec.write(spec_path)
        argv = [self.options.python, "-m", "ravend.sim.cluster_api", str(spec_path)]
        rec = self._spawn(API_PROC, self.plan.api_ns, argv)
        await self._wait_ready(rec, ready)

    @property
    def webhooks_ready_file(self) -> Path:
        return self.run_dir / "webhooks.ready"

    def _webhook_addresses(self) -> tuple[str, ...]:
        if not (self.options.webhooks and self.options.agents):
            return ()
        return reachable_addresses([n.wan_ip for n in self.topology.nodes])

    async def wait_webhooks(self, timeout: float = 60.0) -> str:
        """Wait until the API server calls an agent's webhooks; returns that agent's address."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not _exists(self.webhooks_ready_file):
            if loop.time() > deadline:
                raise TimeoutError(f"no agent webhook registered within {timeout:.0f} s")
            await asyncio.sleep(0.1)
        return self.webhooks_ready_file.read_text().strip()

    async def _wait_ready(self, rec: ProcRecord, ready: Path) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.options.ready_timeout
        while not _exists(ready):
            if not is_running(rec):
                raise RuntimeError(f"API server exited early:\n{_tail(Path(rec.log))}")
            if loop.time() > deadline:
                raise RuntimeError(f"API server not ready:\n{_tail(Path(rec.log))}")
            await asyncio.sleep(0.05)

    def _spawn(self, name: str, ns: str, argv: list[str]) -> ProcRecord:
        full = argv if argv[:3] == ["ip", "netns", "exec"] else ["ip", "netns", "exec", ns, *argv]
        log_path = self.run_dir / "logs" / f"{name.replace(':', '-')}.log"
        pid, started = spawn(full, log_path)
        rec = ProcRecord(name, pid, started, ns, full, str(log_path))
        self.state.procs[name] = rec
        self.state.save()
        return rec

    def wireguard_dir(self, node: str) -> Path:
        """The node's private /run/wireguard (wireguard-go UAPI sockets)."""
        return self.run_dir / "nodes" / node / "wireguard"

    def node_argv(self, node: str, argv: list[str]) -> list[str]:
        """`argv` as run "on" the node: its netns plus its own /run/wireguard.

        /run/wireguard is shared by all namespaces, so every node's `raven-wg0` would collide
        (environment.md). `ip netns exec` already gives the command a private mount namespace
        (slave of the root's), so a bind mount there is seen by the command and its children only.
        """
        wg = self.wireguard_dir(node)
        wg.mkdir(parents=True, exist_ok=True)
        script = 'mkdir -p /run/wireguard && mount --bind "$1" /run/wireguard && shift && exec "$@"'
        return [
            "ip",
            "netns",
            "exec",
            self.node_netns(node),
            "sh",
            "-c",
            script,
            "sh",
            str(wg),
            *argv,
        ]

    async def exec_on_node(
        self, node: str, argv: list[str], *, timeout: float = 30.0
    ) -> netns.CmdResult:
        """Run a command on a node (its netns and WireGuard sockets), e.g. `wg show`."""
        return await netns.run(self.node_argv(node, argv), check=False, timeout=timeout)

    def start_agent(self, node: str) -> ProcRecord:
        """Start (or restart) the ravend agent of `node` inside its namespace."""
        n = self.topology.node(node)
        argv = [
            self.options.python, "-m", "ravend", "agent",
            "--node-name", n.name, "--node-ip", n.ip,
            "--kubeconfig", str(self.kubeconfig(n.name)),
            "--state-dir", str(self.run_dir / "nodes" / n.name / "state"),
            *self.options.agent_args,
        ]  # fmt: skip
        return self._spawn(agent_proc(node), self.node_netns(node), self.node_argv(node, argv))

    def start_kubelet(self, node: str) -> ProcRecord:
        """Start the fake kubelet of `node` (serving cert minted from the sim CA)."""
        n = self.topology.node(node)
        ca_dir = self.run_dir / "apiserver"
        argv = [
            self.options.python, "-m", "ravend.sim.kubelet", "--node", n.name, "--listen", n.ip,
            "--ca", str(ca_dir / "ca.crt"), "--ca-key", str(ca_dir / "ca.key"),
        ]  # fmt: skip
        return self._spawn(f"kubelet:{node}", self.node_netns(node), argv)

    async def kill_agent(self, node: str, grace: float = 3.0) -> None:
        """Stop the agent of `node` (SIGTERM, SIGKILL after `grace` s); its kernel state stays."""
        rec = self.state.procs.get(agent_proc(node))
        if rec is not None:
            await stop_processes([rec], grace)

    def agent_running(self, node: str) -> bool:
        rec = self.state.procs.get(agent_proc(node))
        return rec is not None and is_running(rec)

    async def exec_in(self, ns: str, argv: list[str], *, timeout: float = 30.0) -> netns.CmdResult:
        return await netns.exec_in(ns, argv, timeout=timeout)

    async def ping(self, from_pod: str, to_ip: str, count: int = 1, wait: float = 1.0) -> bool:
        """Ping from the pod of node `from_pod`; True if a reply came back."""
        argv = ["ping", "-n", "-q", "-c", str(count), "-W", str(wait), to_ip]
        return (await self.exec_in(self.pod_netns(from_pod), argv)).ok

    async def tcp_connect(self, ns: str, ip: str, port: int, timeout: float = 2.0) -> bool:
        """Whether a TCP connection from namespace `ns` to ip:port is accepted."""
        code = f"import socket; socket.create_connection(({ip!r}, {port}), timeout={timeout})"
        res = await self.exec_in(ns, [self.options.python, "-c", code], timeout=timeout + 10)
        return res.ok

    async def tcp_connect_host(self, ip: str, port: int, timeout: float = 2.0) -> bool:
        """Whether a TCP connection from the root namespace to ip:port is accepted."""
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection(ip, port), timeout)
        except (OSError, TimeoutError):
            return False
        writer.close()
        await writer.wait_closed()
        return True

    async def cut_links(self, node: str) -> None:
        await netns.cut_links(self.node_netns(node))

    async def restore_links(self, node: str) -> None:
        await netns.restore_links(self.node_netns(node))

    def status(self) -> dict[str, Any]:
        """Regions, nodes (namespaces, addresses, pods, agents), API server; JSON-compatible."""
        plan, topo = self.plan, self.topology
        return {
            "prefix": self.prefix,
            "run_dir": str(self.run_dir),
            "wan": topo.wan_cidr,
            "api": {
                "netns": plan.api_ns,
                "url": self.api_url,
                "wan_url": self.api_wan_url,
                "kubeconfig": str(self.admin_kubeconfig),
            },
            "regions": [
                {
                    "name": r.name,
                    "behind_nat": r.behind_nat,
                    "lan": r.lan,
                    "router_ip": r.router_ip,
                    "public_ip": r.public_ip,
                    "netns": plan.region_ns[r.name],
                }
                for r in topo.regions
            ],
            "nodes": [
                {
                    "name": n.name,
                    "region": n.region,
                    "ip": n.ip,
                    "wan_ip": n.wan_ip,
                    "gateway": n.gateway,
                    "pod_cidrs": list(n.pod_cidrs),
                    "netns": plan.node_ns[n.name],
                    "pod_netns": plan.pod_ns[n.name],
                    "pod_ips": [ip for ip in (n.pod_ip, n.pod_ip_v6) if ip],
                    "kubeconfig": str(self.kubeconfig(n.name)),
                    "agent_log": str(self.run_dir / "logs" / f"agent-{n.name}.log"),
                }
                for n in topo.nodes
            ],
        }


async def down_run_dir(run_dir: Path, state: RunState | None = None) -> bool:
    """Tear down the run recorded in `run_dir`; False if there was nothing to tear down."""
    if state is None:
        try:
            state = RunState.load(run_dir)
        except FileNotFoundError:
            return False
    await netns.teardown(state, last=(API_PROC,))
    state.path.unlink(missing_ok=True)
    return True


def _exists(path: Path) -> bool:
    return path.exists()


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log)"


# `ravend sim up|status|down` entry points (ravend/sim/cli.py calls these); the argument
# parsing and printing live in cluster_cli to keep this module about the cluster itself.
async def up_main(argv: list[str]) -> int:
    from ravend.sim.cluster_cli import up_main as main

    return await main(argv)


async def status_main(argv: list[str]) -> int:
    from ravend.sim.cluster_cli import status_main as main

    return await main(argv)


async def down_main(argv: list[str]) -> int:
    from ravend.sim.cluster_cli import down_main as main

    return await main(argv)
