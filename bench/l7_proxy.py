"""Benchmark: kubelet requests through the L7 proxy vs direct, a byte relay and `ssh -tt -R`.

Paths to the same fake kubelet (TLS, client certificate required) on 127.0.0.22:
  direct  the caller dials the kubelet
  relay   a plain asyncio byte relay in between (TLS passes through)
  ravend  HTTPS front end -> tunnel (mutual TLS) -> edge -> TLS to the kubelet
  ssh     `ssh -tt -R` reverse tunnel through a throwaway sshd on loopback (skipped with a reason
          when sshd cannot start)
Small requests: GET /healthz at concurrency 1 and 32, in two caller modes, on every path alike:
"new" opens a connection (and TLS handshake) per request; "keepalive" keeps one connection per
concurrent caller, as the kube-apiserver does with its kubelet connections. Figures: req/s, p50,
p99, CPU per request (this process: caller + proxy; plus the kubelet process, and ssh/sshd for
the ssh path). Large stream: GET /metrics of 64 MiB, MB/s. `main()` returns bench records
(bench/common.py: ravend's figures against ssh, or direct for the bulk share); run as
`python -m bench.l7_proxy` it also prints every row as JSON and a table.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import os
import shutil
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

from ravend.certs.tls import client_context, identity_from_peercert, server_context
from ravend.l7proxy.edge import EdgeHandler
from ravend.l7proxy.front_dial import UpstreamDialer
from ravend.l7proxy.front_framing import ResponseFramer
from ravend.l7proxy.front_splice import SocketPipe, set_nodelay, splice
from ravend.l7proxy.frontend import FrontEnd
from ravend.l7proxy.settings import L7TunnelSettings
from ravend.l7proxy.tunnel_client import ServerAddress, TunnelClient
from ravend.l7proxy.tunnel_server import TunnelServer
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
from ravend.sim.kubelet_client import KubeletClient, fixed_resolver

KUBELET_IP = "127.0.0.22"
BULK_BYTES = 64 << 20
CLIENT_USAGES = ["digital signature", "key encipherment", "client auth"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def view(port: int, plain_port: int) -> ClusterView:
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


async def _relay_conn(r: asyncio.StreamReader, w: asyncio.StreamWriter, port: int) -> None:
    set_nodelay(w)
    ur, uw = await asyncio.open_connection(KUBELET_IP, port)
    set_nodelay(uw)
    caller, upstream = SocketPipe(r, w), SocketPipe(ur, uw)
    await splice(caller, upstream)
    caller.close()
    upstream.close()


@contextlib.asynccontextmanager
async def ravend_paths(
    ca: ClusterCA, port: int, plain_port: int
) -> AsyncIterator[dict[str, tuple[str, int]]]:
    """Kubelet, byte relays and the proxy; yields path name -> address to dial."""
    front_cert, front_key = ca.issue(
        "system:node:cloud-1",
        ["system:nodes"],
        usages=["digital signature", "server auth"],
        sans=["127.0.0.1"],
    )
    proxy_cert, proxy_key = ca.issue("ravend-proxy-client", usages=CLIENT_USAGES)
    edge_cert, edge_key = ca.issue(
        "ravend:tunnel:edge-1", ["ravend:tunnel-clients"], usages=CLIENT_USAGES
    )
    kubelet_ctx = client_context(None, proxy_cert, proxy_key)
    latest = Latest(view(port, plain_port))
    server_tls = server_context(front_cert, front_key, ca.cert_pem)
    settings = L7TunnelSettings(port=0)
    tunnels = TunnelServer(
        server_tls, settings, identity_of=identity_from_peercert, host="127.0.0.1"
    )

    async def no_pods(_ns: str, _name: str) -> str | None:
        return None

    dialer = UpstreamDialer(lambda: kubelet_ctx, tunnels)

    def front_end(tls: ssl.SSLContext | None) -> FrontEnd:
        return FrontEnd(
            me="cloud-1",
            view=latest,
            pods=no_pods,
            host="127.0.0.1",
            upstreams=dialer,
            ssl_context=tls,
        )

    front, plain_front = front_end(server_tls), front_end(None)
    relay = await asyncio.start_server(lambda r, w: _relay_conn(r, w, port), "127.0.0.1", 0)
    plain_relay = await asyncio.start_server(
        lambda r, w: _relay_conn(r, w, plain_port), "127.0.0.1", 0
    )
    async with tunnels, front, plain_front, asyncio.TaskGroup() as tg:
        edge_tls = client_context(ca.cert_pem, edge_cert, edge_key)
        handler = EdgeHandler("edge-1", latest, lambda: kubelet_ctx)
        client = TunnelClient(
            [ServerAddress("127.0.0.1", tunnels.port, edge_tls)], handler, settings
        )
        task = tg.create_task(client.run())
        while "edge-1" not in tunnels.connected.value:
            await asyncio.sleep(0.01)
        try:
            yield {
                "direct": (KUBELET_IP, port),
                "relay": ("127.0.0.1", relay.sockets[0].getsockname()[1]),
                "ravend": ("127.0.0.1", front.port),
                "direct-plain": (KUBELET_IP, plain_port),
                "relay-plain": ("127.0.0.1", plain_relay.sockets[0].getsockname()[1]),
                "ravend-plain": ("127.0.0.1", plain_front.port),
            }
        finally:
            task.cancel()
            relay.close()
            plain_relay.close()


def _proc_cpu(pids: list[int]) -> float:
    """User+system CPU seconds of `pids` and all their descendants (from /proc)."""
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


@contextlib.contextmanager
def kubelet_process(ca: ClusterCA, port: int, plain_port: int) -> Any:
    """The fake kubelet in its own process (as on a real node), so the proxy and the caller
    do not share its CPU; yields its pid."""
    with tempfile.TemporaryDirectory(prefix="bench-kubelet-") as tmp:
        (Path(tmp) / "ca.crt").write_bytes(ca.cert_pem)
        (Path(tmp) / "ca.key").write_bytes(ca.key_pem)
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "ravend.sim.kubelet",
                "--node",
                "edge-2",
                "--listen",
                KUBELET_IP,
                "--port",
                str(port),
                "--read-only-port",
                str(plain_port),
                "--ca",
                f"{tmp}/ca.crt",
                "--ca-key",
                f"{tmp}/ca.key",
                "--metrics-bytes",
                str(BULK_BYTES),
            ],
            stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                with contextlib.suppress(OSError), socket.create_connection((KUBELET_IP, port)):
                    break
                time.sleep(0.1)
            yield proc.pid
        finally:
            proc.terminate()
            proc.wait(5)


@contextlib.contextmanager
def ssh_tunnel(kubelet_port: int, plain_port: int) -> Any:
    """Yields (TLS port, plain port, pids) of `ssh -tt -R` to the kubelet, or a skip reason."""
    sshd, ssh = shutil.which("sshd") or "/usr/sbin/sshd", shutil.which("ssh")
    if not (os.path.exists(sshd) and ssh and os.geteuid() == 0):
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
        time.sleep(0.5)
        client = subprocess.Popen(
            [
                ssh,
                "-tt",
                "-i",
                str(d / "user"),
                "-p",
                str(port),
                "-o",
                "StrictHostKeyChecking=no",
                "-o",
                "UserKnownHostsFile=/dev/null",
                "-o",
                "BatchMode=yes",
                "-o",
                "LogLevel=ERROR",
                "-R",
                f"{rport}:{KUBELET_IP}:{kubelet_port}",
                "-R",
                f"{rplain}:{KUBELET_IP}:{plain_port}",
                "root@127.0.0.1",
                "sleep",
                "3600",
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", rport)):
                    break
                time.sleep(0.1)
            else:
                yield "ssh -R did not come up"
                return
            yield rport, rplain, [daemon.pid, client.pid]
        finally:
            for proc in (client, daemon):
                proc.terminate()
                proc.wait(5)


Getter = Callable[[], Awaitable[int]]


class KeptConnection:
    """One caller connection reused for every request (re-dialled only if the server closes)."""

    def __init__(self, address: tuple[str, int], tls: ssl.SSLContext | None, port: int) -> None:
        self.address, self.tls = address, tls
        self.request = f"GET /healthz HTTP/1.1\r\nHost: edge-2:{port}\r\n\r\n".encode()
        self.conn: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        self.connects = 0

    async def get(self) -> int:
        if self.conn is None:
            host, port = self.address
            self.conn = await asyncio.open_connection(
                host, port, ssl=self.tls, server_hostname=host if self.tls else None
            )
            set_nodelay(self.conn[1])
            self.connects += 1
        reader, writer = self.conn
        writer.write(self.request)
        framer = ResponseFramer("GET")
        while not framer.done:
            data = await reader.read(65536)
            if not data:
                raise ConnectionError("server closed the kept connection mid-response")
            framer.feed(data)
        if not framer.reusable:
            writer.close()
            self.conn = None
        assert framer.head is not None
        return framer.head.status

    def close(self) -> None:
        if self.conn is not None:
            self.conn[1].close()
            self.conn = None


async def rr_case(
    name: str,
    getter: Callable[[], Getter],
    conc: int,
    total: int,
    extra_cpu: Callable[[], float],
    *,
    mode: str = "new",
) -> dict[str, Any]:
    """`getter()` is called once per concurrent worker (one kept connection each)."""
    latencies: list[float] = []

    async def worker(n: int) -> None:
        get = getter()
        for _ in range(n):
            t0 = time.perf_counter()
            assert await get() == 200
            latencies.append(time.perf_counter() - t0)

    cpu0, extra0, t0 = time.process_time(), extra_cpu(), time.perf_counter()
    async with asyncio.TaskGroup() as tg:
        for _ in range(conc):
            tg.create_task(worker(total // conc))
    wall = time.perf_counter() - t0
    cpu = time.process_time() - cpu0 + extra_cpu() - extra0
    q = statistics.quantiles(latencies, n=100)
    return {
        "path": name,
        "case": f"{mode} c{conc}",
        "requests": len(latencies),
        "req_per_s": round(len(latencies) / wall),
        "p50_us": round(q[49] * 1e6),
        "p99_us": round(q[98] * 1e6),
        "cpu_us_per_req": round(cpu / len(latencies) * 1e6),
    }


async def bulk_case(name: str, client: KubeletClient, repeat: int) -> dict[str, Any]:
    rates = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        resp = await client.get("edge-2", "/metrics")
        assert resp.status == 200 and len(resp.body) == BULK_BYTES, resp.status
        rates.append(BULK_BYTES / (time.perf_counter() - t0) / 1e6)
    return {"path": name, "case": "bulk-64MiB", "mb_per_s": round(statistics.median(rates))}


async def measure(
    name: str,
    address: tuple[str, int],
    ca: ClusterCA,
    quick: bool,
    extra_cpu: Callable[[], float] = lambda: 0.0,
) -> list[dict[str, Any]]:
    cert, key = ca.issue("kube-apiserver-kubelet-client", ["system:masters"], usages=CLIENT_USAGES)
    if name.endswith("-plain"):
        client = KubeletClient(fixed_resolver(*address), None, plain_port)
    else:
        client = KubeletClient(
            fixed_resolver(*address), client_context(None, cert, key), kubelet_port
        )

    async def get() -> int:
        return (await client.get("edge-2", "/healthz")).status

    kept: list[KeptConnection] = []

    def keep_alive() -> Getter:
        kept.append(KeptConnection(address, client.ssl, client.port))
        return kept[-1].get

    n = 200 if quick else 1000
    rows = []
    for mode, getter in (("new", lambda: get), ("keepalive", keep_alive)):
        await rr_case(name, getter, 4, 40, extra_cpu, mode=mode)  # warm-up (and pools filled)
        rows.append(await rr_case(name, getter, 1, n, extra_cpu, mode=mode))
        rows.append(await rr_case(name, getter, 32, n * 2, extra_cpu, mode=mode))
    for conn in kept:
        conn.close()
    rows[-1]["caller_connects"] = sum(k.connects for k in kept)
    rows.append(await bulk_case(name, client, 2 if quick else 5))
    return rows


kubelet_port, plain_port = free_port(), free_port()


def table(rows: list[dict[str, Any]]) -> str:
    cols = ["path", "case", "req_per_s", "p50_us", "p99_us", "cpu_us_per_req", "mb_per_s"]
    lines = [" | ".join(f"{c:>14}" for c in cols)]
    lines += [" | ".join(f"{row.get(c, ''):>14}" for c in cols) for row in rows]
    return "\n".join(lines)


async def run(quick: bool) -> list[dict[str, Any]]:
    ca = ClusterCA.create()
    rows: list[dict[str, Any]] = []
    with kubelet_process(ca, kubelet_port, plain_port) as kubelet_pid:
        async with ravend_paths(ca, kubelet_port, plain_port) as paths:
            rows += await measure_all(ca, paths, kubelet_pid, quick)
    return rows


async def measure_all(
    ca: ClusterCA, paths: dict[str, tuple[str, int]], kubelet_pid: int, quick: bool
) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    with ssh_tunnel(kubelet_port, plain_port) as ssh:
        ssh_pids: list[int] = []
        if isinstance(ssh, str):
            rows.append({"path": "ssh", "skipped": ssh})
        else:
            rport, rplain, ssh_pids = ssh
            paths["ssh"], paths["ssh-plain"] = ("127.0.0.1", rport), ("127.0.0.1", rplain)
        for name, address in sorted(paths.items(), key=lambda kv: kv[0].endswith("plain")):
            extra = [*ssh_pids, kubelet_pid] if name.startswith("ssh") else [kubelet_pid]
            rows += await measure(name, address, ca, quick, functools.partial(_proc_cpu, extra))
    return rows


FIELDS = (
    ("req_per_s", "req/s", True),
    ("p50_us", "µs", False),
    ("p99_us", "µs", False),
    ("cpu_us_per_req", "µs", False),
    ("mb_per_s", "MB/s", True),
)
"""(row field, unit, higher is better)."""


def records(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Bench records: every figure of every path; ravend's against ssh of the same case (the
    goal: better on every figure), its c32 p99 against 2 ms, its bulk rate against direct."""
    by_case = {(r["path"], r["case"]): r for r in rows if "case" in r}
    out: list[dict[str, Any]] = []
    for row in (r for r in rows if "case" in r):
        path, case = row["path"], row["case"]
        for key, unit, higher in FIELDS:
            if key not in row:
                continue
            rec: dict[str, Any] = {
                "bench": "l7_proxy",
                "metric": f"{path} {case} {key}",
                "value": float(row[key]),
                "unit": unit,
            }
            ssh = by_case.get((path.replace("ravend", "ssh"), case), {})
            if path.startswith("ravend") and key in ssh and ssh[key]:
                rec["baseline"] = float(ssh[key])
                rec["ratio"] = rec["value"] / rec["baseline"]
                rec["goal"] = f"{'>' if higher else '<'} ssh -R (baseline)"
                if key == "p99_us" and case.endswith("c32"):
                    rec["goal"] = "< 2000 µs and < ssh -R"
            out.append(rec)
            direct = by_case.get((path.replace("ravend", "direct"), case), {})
            if path.startswith("ravend") and key == "mb_per_s" and direct.get(key):
                share = {**rec, "metric": f"{path} {case} share of direct"}
                share.update(baseline=float(direct[key]), goal=">= 0.4x direct")
                share["ratio"] = rec["value"] / share["baseline"]
                out.append(share)
    return out


async def main(quick: bool = False) -> list[dict[str, Any]]:
    """Run every path in both caller modes; the bench records (see `records`)."""
    return records(await run(quick))


if __name__ == "__main__":
    from bench.common import table as records_table

    parser = argparse.ArgumentParser(prog="python -m bench.l7_proxy")
    parser.add_argument("--quick", action="store_true", help="fewer requests (smoke run)")
    parser.add_argument("--loop", choices=["asyncio", "uvloop"], default="asyncio")
    args = parser.parse_args()
    if args.loop == "uvloop":
        import uvloop

        result = uvloop.run(run(args.quick))
    else:
        result = asyncio.run(run(args.quick))
    for line in result:
        print(json.dumps({"bench": "l7_proxy", "loop": args.loop, **line}))
    print(table(result))
    print(records_table(records(result)))
