"""The parties of bench/l7_proxy.py, each in its own process as in production. Loopback I/O.

`python -m bench.l7_proxy_procs ROLE --dir D --kubelet-port P --plain-port Q [...]`, where D holds
the throwaway cluster CA (ca.crt, ca.key):
  cloud  tunnel server + HTTPS and plain front ends (a cloud proxy node's ravend)
  edge   tunnel client + edge handler, dialling the cloud's tunnel (an edge gateway's ravend)
  relay  a plain asyncio byte relay in front of each kubelet port (TLS passes through)
Each prints one JSON line with its listening ports once it serves, then runs until SIGTERM.
`--loop uvloop` picks the event loop; `--profile FILE` (cloud) writes cProfile stats on exit.

The orchestrator side (spawning, the fake kubelet, the ssh tunnel, CPU accounting) is at the
bottom: `Party`, `kubelet_process`, `ssh_tunnel`, `proc_cpu`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Coroutine, Iterator, Mapping
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from ravend.certs.tls import client_context, identity_from_peercert, server_context
from ravend.l7proxy.edge import EdgeHandler
from ravend.l7proxy.front_dial import UpstreamDialer
from ravend.l7proxy.front_splice import SocketPipe, splice
from ravend.l7proxy.frontend import FrontEnd
from ravend.l7proxy.settings import L7TunnelSettings
from ravend.l7proxy.tunnel_client import ServerAddress, TunnelClient
from ravend.l7proxy.tunnel_server import TunnelServer
from ravend.l7proxy.tunnel_transport import set_nodelay
from ravend.loopthread import LoopThread
from ravend.model import (
    GATEWAY_LABEL,
    ClusterView,
    Endpoint,
    EndpointType,
    ExposeType,
    Gateway,
    GatewaySpec,
    GatewayStatus,
    Node,
    ObjectMeta,
    ProxyConfig,
)
from ravend.runtime import Latest
from ravend.sim.apiserver.pki import ClusterCA

KUBELET_IP = "127.0.0.22"
BULK_BYTES = 64 << 20
CLIENT_USAGES = ["digital signature", "key encipherment", "client auth"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def view(port: int, plain_port: int) -> ClusterView:
    """cloud-1 proxies for gw-cloud; edge-1 (gw-a) reaches the kubelet of edge-2."""
    proxy = ProxyConfig(1, proxy_https_port=str(port), proxy_http_port=str(plain_port))
    pools = {"cloud-1": "gw-cloud", "edge-1": "gw-a", "edge-2": "gw-a"}
    ips = {"cloud-1": "127.0.0.11", "edge-1": "127.0.0.21", "edge-2": KUBELET_IP}
    nodes = {n: Node(ObjectMeta(n, labels={GATEWAY_LABEL: g}), (ips[n],)) for n, g in pools.items()}
    gws = {}
    for gw, node in (("gw-cloud", "cloud-1"), ("gw-a", "edge-1")):
        ep = Endpoint(node, EndpointType.PROXY, 10262)
        expose = ExposeType.PUBLIC_IP if gw == "gw-cloud" else ExposeType.NONE
        spec = GatewaySpec(proxy_config=proxy, endpoints=(ep,), expose_type=expose)
        gws[gw] = Gateway(ObjectMeta(gw), spec, GatewayStatus(active_endpoints=(ep,)))
    return ClusterView(gws, nodes, synced=True)


def load_ca(d: Path) -> ClusterCA:
    key = serialization.load_pem_private_key((d / "ca.key").read_bytes(), None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return ClusterCA(x509.load_pem_x509_certificate((d / "ca.crt").read_bytes()), key)


def ready(**ports: int) -> None:
    print(json.dumps(ports), flush=True)


async def until_sigterm() -> None:
    """Until SIGTERM; on a data loop thread (no signals there), until cancelled by the main
    thread's loop, which got the signal."""
    stop = asyncio.Event()
    if threading.current_thread() is threading.main_thread():
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()


async def _on_data_loop(role: Coroutine[Any, Any, None], kind: str) -> None:
    """The role on a LoopThread of `kind` (as the agent runs its L7 data path) until SIGTERM."""
    async with LoopThread("l7", kind) as data:
        job = asyncio.ensure_future(data.run(lambda: role))
        stop = asyncio.ensure_future(until_sigterm())
        await asyncio.wait([job, stop], return_when=asyncio.FIRST_COMPLETED)
        for task in (job, stop):
            task.cancel()
        await asyncio.gather(job, stop, return_exceptions=True)


# ---- the parties (child processes) -------------------------------------------------------


async def cloud(args: argparse.Namespace) -> None:
    ca = load_ca(args.dir)
    front_cert, front_key = ca.issue(
        "system:node:cloud-1",
        ["system:nodes"],
        usages=["digital signature", "server auth"],
        sans=["127.0.0.1"],
    )
    proxy_cert, proxy_key = ca.issue("ravend-proxy-client", usages=CLIENT_USAGES)
    kubelet_ctx = client_context(None, proxy_cert, proxy_key)
    latest = Latest(view(args.kubelet_port, args.plain_port))
    server_tls = server_context(front_cert, front_key, ca.cert_pem)
    tunnels = TunnelServer(
        server_tls, L7TunnelSettings(port=0), identity_of=identity_from_peercert, host="127.0.0.1"
    )

    async def no_pods(_ns: str, _name: str) -> str | None:
        return None

    dialer = UpstreamDialer(lambda: kubelet_ctx, tunnels)

    def front_end(tls: Any) -> FrontEnd:
        return FrontEnd(
            me="cloud-1", view=latest, pods=no_pods, host="127.0.0.1", upstreams=dialer,
            ssl_context=tls,
        )  # fmt: skip

    async with tunnels, front_end(server_tls) as front, front_end(None) as plain:
        ready(tunnel=tunnels.port, https=front.port, http=plain.port)
        await until_sigterm()


async def edge(args: argparse.Namespace) -> None:
    ca = load_ca(args.dir)
    proxy_cert, proxy_key = ca.issue("ravend-proxy-client", usages=CLIENT_USAGES)
    edge_cert, edge_key = ca.issue(
        "ravend:tunnel:edge-1", ["ravend:tunnel-clients"], usages=CLIENT_USAGES
    )
    kubelet_ctx = client_context(None, proxy_cert, proxy_key)
    latest = Latest(view(args.kubelet_port, args.plain_port))
    handler = EdgeHandler("edge-1", latest, lambda: kubelet_ctx)
    edge_tls = client_context(ca.cert_pem, edge_cert, edge_key)
    server = ServerAddress("127.0.0.1", args.tunnel_port, edge_tls)
    client = TunnelClient([server], handler, L7TunnelSettings(port=0))
    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(client.run())
        ready()
        await until_sigterm()
        task.cancel()


async def _relay_conn(r: asyncio.StreamReader, w: asyncio.StreamWriter, port: int) -> None:
    set_nodelay(w)
    ur, uw = await asyncio.open_connection(KUBELET_IP, port)
    set_nodelay(uw)
    caller, upstream = SocketPipe(r, w), SocketPipe(ur, uw)
    await splice(caller, upstream)
    caller.close()
    upstream.close()


async def relay(args: argparse.Namespace) -> None:
    servers = [
        await asyncio.start_server(functools.partial(_relay_conn, port=p), "127.0.0.1", 0)
        for p in (args.kubelet_port, args.plain_port)
    ]
    ports = [s.sockets[0].getsockname()[1] for s in servers]
    ready(https=ports[0], http=ports[1])
    await until_sigterm()


ROLES = {"cloud": cloud, "edge": edge, "relay": relay}


def run_role(
    roles: Mapping[str, Callable[[argparse.Namespace], Coroutine[Any, Any, None]]], prog: str
) -> None:
    """A child process's main: parse the common flags, run `roles[role]` on the chosen loop."""
    p = argparse.ArgumentParser(prog=prog)
    p.add_argument("role", choices=sorted(roles))
    p.add_argument("--dir", type=Path, required=True)
    p.add_argument("--kubelet-port", type=int, required=True)
    p.add_argument("--plain-port", type=int, required=True)
    p.add_argument("--tunnel-port", type=int, default=0)
    p.add_argument("--loop", choices=["asyncio", "uvloop"], default="asyncio")
    p.add_argument(
        "--data-loop",
        choices=["same", "asyncio", "uvloop"],
        default="same",
        help="run the role on a LoopThread of this kind (as the agent's --l7-event-loop)",
    )
    p.add_argument("--profile", type=Path, default=None)
    args = p.parse_args()
    factory = None
    if args.loop == "uvloop":
        import uvloop

        factory = uvloop.new_event_loop
    profiler = None
    if args.profile is not None:
        import cProfile

        # CPU time, not wall time: on a shared 2-core machine wall time mostly shows preemption.
        profiler = cProfile.Profile(time.thread_time)
        profiler.enable()
    try:
        with asyncio.Runner(loop_factory=factory) as runner:
            role = roles[args.role](args)
            runner.run(role if args.data_loop == "same" else _on_data_loop(role, args.data_loop))
    finally:
        if profiler is not None:
            profiler.disable()
            profiler.dump_stats(str(args.profile))


# ---- the orchestrator's side -------------------------------------------------------------


class Party:
    """One child process of this module; `ports` is its ready line."""

    def __init__(
        self,
        role: str,
        d: Path,
        kubelet_port: int,
        plain_port: int,
        *extra: str,
        module: str = "bench.l7_proxy_procs",
    ):
        cmd = [sys.executable, "-m", module, role, "--dir", str(d)]
        cmd += ["--kubelet-port", str(kubelet_port), "--plain-port", str(plain_port), *extra]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"bench party {role} exited before it was ready")
        self.ports: dict[str, int] = json.loads(line)
        self.pid = self.proc.pid

    def stop(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def proc_cpu(pids: list[int]) -> float:
    """User+system CPU seconds of `pids` and all their live descendants (from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(entry.name))
    total, todo = 0.0, list(pids)
    while todo:
        pid = todo.pop()
        todo += children.get(pid, [])
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def _wait_port(address: tuple[str, int], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(address):
            return True
        time.sleep(0.1)
    return False


@contextlib.contextmanager
def kubelet_process(d: Path, port: int, plain_port: int) -> Iterator[int]:
    """The fake kubelet (ravend.sim.kubelet) in its own process; yields its pid."""
    proc = subprocess.Popen(
        [
            *(sys.executable, "-m", "ravend.sim.kubelet", "--node", "edge-2"),
            *("--listen", KUBELET_IP, "--port", str(port), "--read-only-port", str(plain_port)),
            *("--ca", f"{d}/ca.crt", "--ca-key", f"{d}/ca.key", "--metrics-bytes", str(BULK_BYTES)),
        ],
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_port((KUBELET_IP, port), 10)
        yield proc.pid
    finally:
        proc.terminate()
        proc.wait(5)


def _ssh_command(d: Path, port: int, forwards: list[str]) -> list[str]:
    opts = ["StrictHostKeyChecking=no", "UserKnownHostsFile=/dev/null", "BatchMode=yes"]
    cmd = [shutil.which("ssh") or "ssh", "-tt", "-i", str(d / "user"), "-p", str(port)]
    for opt in [*opts, "LogLevel=ERROR"]:
        cmd += ["-o", opt]
    for forward in forwards:
        cmd += ["-R", forward]
    return [*cmd, "root@127.0.0.1", "sleep", "3600"]


@contextlib.contextmanager
def ssh_tunnel(kubelet_port: int, plain_port: int) -> Iterator[tuple[int, int, list[int]] | str]:
    """Yields (TLS port, plain port, pids) of `ssh -tt -R` to the kubelet, or a skip reason."""
    sshd = shutil.which("sshd") or "/usr/sbin/sshd"
    if not (os.path.exists(sshd) and shutil.which("ssh") and os.geteuid() == 0):
        yield "sshd/ssh missing or not root"
        return
    with tempfile.TemporaryDirectory(prefix="bench-ssh-") as tmp:
        d = Path(tmp)
        for name in ("host", "user"):
            subprocess.run(
                ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / name)], check=True
            )
        (d / "authorized_keys").write_text((d / "user.pub").read_text())
        port, rport, rplain = free_port(), free_port(), free_port()
        (d / "sshd_config").write_text(
            f"Port {port}\nListenAddress 127.0.0.1\nHostKey {d / 'host'}\nPidFile {d / 'pid'}\n"
            f"AuthorizedKeysFile {d / 'authorized_keys'}\nStrictModes no\nUsePAM no\n"
            "PermitRootLogin prohibit-password\nAllowTcpForwarding yes\n"
        )
        Path("/run/sshd").mkdir(exist_ok=True)
        daemon = subprocess.Popen(
            [sshd, "-D", "-e", "-f", str(d / "sshd_config")], stderr=subprocess.DEVNULL
        )
        _wait_port(("127.0.0.1", port), 5)
        forwards = [f"{rport}:{KUBELET_IP}:{kubelet_port}", f"{rplain}:{KUBELET_IP}:{plain_port}"]
        client = subprocess.Popen(
            _ssh_command(d, port, forwards),
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            if _wait_port(("127.0.0.1", rport), 5):
                yield rport, rplain, [daemon.pid, client.pid]
            else:
                yield "ssh -R did not come up"
        finally:
            for proc in (client, daemon):
                proc.terminate()
                proc.wait(5)


if __name__ == "__main__":
    run_role(ROLES, "python -m bench.l7_proxy_procs")
