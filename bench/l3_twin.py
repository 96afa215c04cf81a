"""Hand-made WireGuard twins of ravend's tunnel and the TCP transfers that compare them
(I/O: processes, namespaces, UAPI sockets). Used by `bench.l3_tunnel`.

`hand_twin()` starts a second wireguard-go pair between two gateway nodes of the simulated
cluster and configures it by hand through UAPI (no addresses, same MTU, the NATed edge dials
the hub with keepalive 5 s, as ravend does); policy rules in front of ravend's send the flows
on TWIN_PORT through it and what comes out of it on through ravend's member table, so a twin
flow crosses the same namespaces, bridges, VXLAN legs, NAT and nftables as ravend's flow on
PORT and only the WireGuard leg differs. `by_hand()` is the pair on a bare veth.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import resource
import secrets
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from bench.l3_sim import L3Sim
from ravend.l3.keys import generate_private, public_from_private
from ravend.l3.settings import L3Settings
from ravend.l3.uapi import PeerUpdate, SetRequest, UapiClient, socket_path

SECONDS = 3.0
"""Duration of one throughput transfer."""
PORT, TWIN_PORT = 5201, 5301
"""TCP ports of the transfers through ravend's tunnel and through the hand-made twin."""
TWIN_TABLE, TWIN_RULE_PRIORITY = 9301, 50
"""Routing table and first rule priority of the twin's steering (below ravend's 100/101)."""
PY = sys.executable

RECEIVER = """
import socket, sys, time
srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.setsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, b"cubic")
srv.bind(("0.0.0.0", int(sys.argv[1]))); srv.listen(1); print("ready", flush=True)
conn, _ = srv.accept(); total = 0; start = None
while chunk := conn.recv(1 << 18):
    start = start or time.monotonic(); total += len(chunk)
print(total, time.monotonic() - start, flush=True)
"""
SENDER = """
import socket, sys, time
s = socket.socket(); s.settimeout(30)
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, b"cubic")
s.connect((sys.argv[1], int(sys.argv[3])))
assert s.getsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, 16).rstrip(b"\\0") == b"cubic"
buf, end = b"x" * (1 << 18), time.monotonic() + float(sys.argv[2])
while time.monotonic() < end:
    s.sendall(buf)
s.shutdown(socket.SHUT_WR); s.recv(1); s.close()
"""


def _unlink(path: str) -> None:
    # Left behind by the killed wireguard-go; microseconds, not worth a thread.
    Path(path).unlink(missing_ok=True)


async def sh(*argv: str, stdin: str | None = None) -> str:
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate(stdin.encode() if stdin is not None else None)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {err.decode().strip()}")
    return out.decode()


async def spawn_ready(ns: str, script: str, *args: str) -> asyncio.subprocess.Process:
    proc = await asyncio.create_subprocess_exec(
        "ip", "netns", "exec", ns, PY, "-c", script, *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), 10)
    if line.strip() != b"ready":
        raise RuntimeError(f"helper in {ns} did not start")
    return proc


async def stop_proc(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        proc.kill()
    await proc.wait()


@dataclass(frozen=True)
class TunnelPath:
    """A flow from a host behind the hub gateway to one behind the edge gateway."""

    src_ns: str
    dst_ns: str
    src_ip: str
    dst_ip: str


async def _transfer(recv_ns: str, send_ns: str, dst_ip: str, port: int) -> tuple[int, float]:
    recv = await spawn_ready(recv_ns, RECEIVER, str(port))
    try:
        await sh("ip", "netns", "exec", send_ns, PY, "-c", SENDER, dst_ip, str(SECONDS), str(port))
        assert recv.stdout is not None
        total, secs = (await asyncio.wait_for(recv.stdout.readline(), 30)).split()
        return int(total), float(secs)
    finally:
        await stop_proc(recv)


async def throughput(recv_ns: str, send_ns: str, dst_ip: str, port: int = PORT) -> float:
    """Mbit/s of one SECONDS-long TCP transfer from `send_ns` to `dst_ip`:`port` in `recv_ns`."""
    total, secs = await _transfer(recv_ns, send_ns, dst_ip, port)
    return total * 8 / secs / 1e6


@dataclass(frozen=True)
class Transfer:
    mbit_s: float
    cpu_ms_per_mb: float
    """CPU seconds of the sender, the receiver and the tunnel's two wireguard-go per MB moved,
    in ms. Their kernel work is included (the routers forward in their softirqs); unlike the
    rate, it hardly depends on what else runs on the host."""


def _cpu_s(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / os.sysconf("SC_CLK_TCK")


def _children_cpu_s() -> float:
    # The sender and the receiver are children that have been waited for once they return.
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


async def measured(path: TunnelPath, port: int, wg_pids: list[int]) -> Transfer:
    """One transfer over `path` to `port`, with the CPU it cost (`wg_pids`: the tunnel's)."""
    before = _children_cpu_s() + _cpu_s(wg_pids)
    total, secs = await _transfer(path.dst_ns, path.src_ns, path.dst_ip, port)
    cpu = _children_cpu_s() + _cpu_s(wg_pids) - before
    return Transfer(total * 8 / secs / 1e6, cpu * 1e3 / (total / 1e6))


async def _start_wg(argv: list[str]) -> asyncio.subprocess.Process:
    # Own session, as ravend starts its wireguard-go: with autogroup scheduling (on here) a
    # session is a scheduling group, so the twin must not share the benchmark's.
    return await asyncio.create_subprocess_exec(
        *argv,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
        start_new_session=True,
    )


async def _uapi_ready(path: str) -> UapiClient:
    client = UapiClient(path)
    async with asyncio.timeout(5):
        while True:
            try:
                await client.get()
                return client
            except OSError:
                await asyncio.sleep(0.02)


async def by_hand(mtu: int) -> float:
    """The same wireguard-go, two namespaces on a veth, configured through UAPI by hand."""
    tag = secrets.token_hex(3)
    a, b = f"rl3t{tag}a", f"rl3t{tag}b"
    wgs = {a: f"rt{tag}a", b: f"rt{tag}b"}
    procs: list[asyncio.subprocess.Process] = []
    keys = {ns: generate_private() for ns in (a, b)}
    try:
        for ns in (a, b):
            await sh("ip", "netns", "add", ns)
            await sh("ip", "-n", ns, "link", "set", "lo", "up")
        await sh("ip", "link", "add", "vt0", "netns", a, "type", "veth", "peer", "vt1", "netns", b)
        for i, (ns, dev) in enumerate(((a, "vt0"), (b, "vt1"))):
            await sh("ip", "-n", ns, "addr", "add", f"192.0.2.{i + 1}/24", "dev", dev)
            await sh("ip", "-n", ns, "link", "set", dev, "up")
            procs.append(
                await _start_wg(["ip", "netns", "exec", ns, "wireguard-go", "-f", wgs[ns]])
            )
        for i, ns in enumerate((a, b)):
            other = b if ns == a else a
            client = await _uapi_ready(socket_path(wgs[ns]))
            peer = PeerUpdate(
                public_from_private(keys[other]),
                endpoint=f"192.0.2.{2 - i}:51820",
                allowed_ips=(f"10.201.0.{2 - i}/32",),
            )
            await client.set(SetRequest(private_key=keys[ns], listen_port=51820, peers=(peer,)))
            await sh("ip", "-n", ns, "addr", "add", f"10.201.0.{i + 1}/24", "dev", wgs[ns])
            await sh("ip", "-n", ns, "link", "set", wgs[ns], "mtu", str(mtu), "up")
        return await throughput(b, a, "10.201.0.2")
    finally:
        for p in procs:
            await stop_proc(p)
        for ns in (a, b):
            await sh("ip", "netns", "del", ns)
        for name in wgs.values():
            _unlink(socket_path(name))


async def wg_mtu(l3: L3Sim, node: str) -> int:
    out = await sh("ip", "-n", l3.sim.node_netns(node), "-j", "link", "show", "raven-wg0")
    return int(json.loads(out)[0]["mtu"])


async def _wan_ip(l3: L3Sim, node: str) -> str:
    out = await sh("ip", "-n", l3.sim.node_netns(node), "-j", "-4", "addr", "show", "wan0")
    return str(json.loads(out)[0]["addr_info"][0]["local"])


async def _steer(l3: L3Sim, node: str, dev: str, far: list[str], *, sport: bool) -> None:
    """Route the twin's flows on gateway `node`: to the `far` addresses into `dev` (matched by
    TWIN_PORT as destination port on the sending side, source port on the answering side), and
    what comes out of `dev` through ravend's member table, as ravend's `iif raven-wg0` rule does
    for its own tunnel. What the node originates leaves from its own address, as on raven-wg0."""
    ip, src = ["ip", "-n", l3.sim.node_netns(node)], l3.topology.node(node).ip
    for addr in far:
        await sh(
            *ip, "route", "add", f"{addr}/32", "dev", dev, "src", src, "table", str(TWIN_TABLE)
        )
    port = ("sport" if sport else "dport", str(TWIN_PORT))
    prio = str(TWIN_RULE_PRIORITY)
    await sh(*ip, "rule", "add", "pref", prio, "ipproto", "tcp", *port, "lookup", str(TWIN_TABLE))
    member = str(L3Settings().member_table)
    await sh(*ip, "rule", "add", "pref", str(TWIN_RULE_PRIORITY + 1), "iif", dev, "lookup", member)


async def _unsteer(l3: L3Sim, node: str) -> None:
    ip = ["ip", "-n", l3.sim.node_netns(node)]
    for prio in (TWIN_RULE_PRIORITY, TWIN_RULE_PRIORITY + 1):
        with contextlib.suppress(RuntimeError):
            await sh(*ip, "rule", "del", "pref", str(prio))
    with contextlib.suppress(RuntimeError):
        await sh(*ip, "route", "flush", "table", str(TWIN_TABLE))


@contextlib.asynccontextmanager
async def hand_twin(
    l3: L3Sim, hub: str, edge: str, mtu: int, paths: list[TunnelPath]
) -> AsyncIterator[list[int]]:
    """A second wireguard-go pair between the gateway nodes `hub` and `edge`, over the same
    simulated WAN and NAT, configured by hand through UAPI, carrying `paths` on TWIN_PORT;
    yields the pair's PIDs (`ip netns exec` and the bind-mount shell exec into wireguard-go)."""
    name, port = f"rth{secrets.token_hex(2)}", 51821
    keys = {hub: generate_private(), edge: generate_private()}
    hub_side = sorted({p.src_ip for p in paths})
    edge_side = sorted({p.dst_ip for p in paths})
    hub_wan = await _wan_ip(l3, hub)
    procs = []
    try:
        for node in (hub, edge):
            procs.append(await _start_wg(l3.sim.node_argv(node, ["wireguard-go", "-f", name])))
        for node, other, far in ((hub, edge, edge_side), (edge, hub, hub_side)):
            client = await _uapi_ready(str(l3.sim.wireguard_dir(node) / f"{name}.sock"))
            # The NATed edge dials the hub's WAN address, as ravend configures it.
            peer = PeerUpdate(
                public_from_private(keys[other]),
                endpoint=f"{hub_wan}:{port}" if node == edge else None,
                keepalive_s=5,
                allowed_ips=tuple(f"{a}/32" for a in far),
            )
            listen = port if node == hub else None
            await client.set(SetRequest(private_key=keys[node], listen_port=listen, peers=(peer,)))
            ns = l3.sim.node_netns(node)
            await sh("ip", "-n", ns, "link", "set", name, "mtu", str(mtu), "up")
            await _steer(l3, node, name, far, sport=node == edge)
        yield [p.pid for p in procs]
    finally:
        for node in (hub, edge):
            await _unsteer(l3, node)
        for proc in procs:
            await stop_proc(proc)
