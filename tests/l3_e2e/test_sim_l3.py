"""L3 end to end on the simulated three-region cluster (raven-reference section 8).

One cluster per module (bring-up ~3 s, tunnels ~5 s); tests run in file order and each leaves
the cluster as it found it, the failover test last. Every node runs the real `ravend agent`
process (election, L3 role, L7), so gateway status is written by the real leader: nothing here
stands in for the election.
"""

from __future__ import annotations

import asyncio
import re
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from bench.l3_sim import L3Sim
from ravend.model import CONFIG_PUBLIC_KEY, EndpointType
from ravend.sim.topology_default import default_topology

pytestmark = [pytest.mark.netns, pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]

CLOUD_GW, CLOUD_W = "izwz9dohcv74iegqecp4axz", "izwz9ey0js5z7mornclpd6z"
HZ_GW, HZ_W = "izbp15inok0kbfkg3in52rz", "izbp15inok0kbfkg3in52sz"
QD_PROXY, QD_GW = "izm5eb24dmjfimuaybpnqzz", "izm5eb24dmjfimuaybpnr0z"
PODS = "10.244.0.0/16"


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def l3(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[L3Sim]:
    sim = L3Sim(default_topology(), tmp_path_factory.mktemp("l3sim"), real_agents=True)
    async with sim.meshed(40) as s:
        yield s


async def sh(s: L3Sim, ns: str, script: str) -> str:
    res = await s.sim.exec_in(ns, ["sh", "-c", script], timeout=60)
    assert res.ok, f"{ns}: {script}: {res.stderr}"
    return res.stdout


def counters(nft_text: str) -> list[int]:
    return [int(n) for n in re.findall(r"counter packets (\d+)", nft_text)]


async def test_every_pod_reaches_every_pod_and_the_wan_sees_only_wireguard(l3: L3Sim) -> None:
    wan = l3.sim.plan.wan_ns
    rules = (
        f"ip saddr {PODS} counter\\n ip daddr {PODS} counter\\n"
        "udp dport 4500 counter\\n udp sport 4500 counter\\n udp dport 4472 counter"
    )
    table = (
        "table bridge l3e2e { chain cnt { type filter hook forward priority 0; "
        "policy accept;\\n " + rules + "\\n }\\n}"
    )
    await sh(l3, wan, f"printf '{table}' | nft -f -")
    try:
        mesh = await l3.ping_all()
        assert all(mesh.values()), [k for k, ok in mesh.items() if not ok]
        clear_src, clear_dst, wg_out, wg_in, vxlan = counters(
            await sh(l3, wan, "nft list table bridge l3e2e")
        )
    finally:
        await sh(l3, wan, "nft delete table bridge l3e2e")
    assert (clear_src, clear_dst, vxlan) == (0, 0, 0)  # no pod address in the clear, no VXLAN
    assert wg_out > 30 and wg_in > 30  # 30 pings and their replies crossed as WireGuard UDP


async def test_intra_pool_traffic_never_enters_ravend_links(l3: L3Sim) -> None:
    links = {n: l3.settings_for(n) for n in (CLOUD_GW, CLOUD_W)}
    a, b = l3.pod_ip(CLOUD_GW), l3.pod_ip(CLOUD_W)
    remote = l3.pod_ip(HZ_W)
    for node, s in links.items():
        ours = f'{{ "{s.vxlan_link}", "{s.wireguard_link}" }}'
        table = (
            "table inet l3e2e { chain cnt { type filter hook postrouting priority 0; "
            f"policy accept;\\n oifname {ours} ip saddr {a} ip daddr {b} counter\\n"
            f" oifname {ours} ip saddr {b} ip daddr {a} counter\\n"
            f" oifname {ours} ip daddr {remote} counter\\n }}\\n}}"
        )
        await sh(l3, l3.sim.node_netns(node), f"printf '{table}' | nft -f -")
    try:
        assert await l3.sim.ping(CLOUD_GW, b, count=20, wait=1)
        assert await l3.sim.ping(CLOUD_W, a, count=20, wait=1)
        assert await l3.sim.ping(CLOUD_W, remote, count=3, wait=1)
        seen = {
            n: counters(await sh(l3, l3.sim.node_netns(n), "nft list table inet l3e2e"))
            for n in links
        }
    finally:
        for node in links:
            await sh(l3, l3.sim.node_netns(node), "nft delete table inet l3e2e")
    for node, (ab, ba, _cross) in seen.items():
        assert (ab, ba) == (0, 0), node
    # the counters do count: the cross-pool pings left the worker over raven0
    assert seen[CLOUD_W][2] >= 3


RECEIVER = """
import socket, sys
srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("0.0.0.0", 5001)); srv.listen(1); print("ready", flush=True)
conn, _ = srv.accept(); total = 0
while chunk := conn.recv(65536):
    total += len(chunk)
print(total, flush=True)
"""
SENDER = """
import socket, sys
s = socket.create_connection((sys.argv[1], 5001), timeout=30)
s.sendall(b"x" * (10 * 1024 * 1024)); s.shutdown(socket.SHUT_WR); s.recv(1); s.close()
"""


async def test_10mb_tcp_across_natted_regions_with_1500_mtu_pods(l3: L3Sim) -> None:
    recv_ns, send_ns = l3.sim.pod_netns(HZ_W), l3.sim.pod_netns(QD_PROXY)
    for ns in (recv_ns, send_ns):
        assert "mtu 1500" in await sh(l3, ns, "ip link show eth0")
    py = l3.sim.options.python
    recv = await asyncio.create_subprocess_exec(
        "ip", "netns", "exec", recv_ns, py, "-c", RECEIVER,
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        assert recv.stdout is not None
        assert (await asyncio.wait_for(recv.stdout.readline(), 10)).strip() == b"ready"
        send = await l3.sim.exec_in(send_ns, [py, "-c", SENDER, l3.pod_ip(HZ_W)], timeout=60)
        assert send.ok, send.stderr
        total = await asyncio.wait_for(recv.stdout.readline(), 30)
        assert int(total) == 10 * 1024 * 1024
    finally:
        if recv.returncode is None:
            recv.kill()
        await recv.wait()


async def _ping_stream(l3: L3Sim, src: str, dst_ip: str, count: int) -> int:
    """Pings every 50 ms; returns how many were answered."""
    argv = ["ping", "-n", "-q", "-i", "0.05", "-W", "1", "-c", str(count), dst_ip]
    res = await l3.sim.exec_in(l3.sim.pod_netns(src), argv, timeout=count * 0.05 + 15)
    m = re.search(r"(\d+) received", res.stdout)
    assert m, res.stdout + res.stderr
    return int(m.group(1))


async def test_gateway_restart_keeps_traffic_flowing(l3: L3Sim) -> None:
    stream = asyncio.create_task(_ping_stream(l3, HZ_W, l3.pod_ip(CLOUD_W), 100))
    await asyncio.sleep(0.5)
    for node in (HZ_GW, CLOUD_GW):
        await l3.restart_agent(node)
        await asyncio.sleep(1.0)
    received = await stream
    assert received >= 97, f"{100 - received} of 100 probes lost during gateway restarts"


async def _owned_objects(l3: L3Sim, node: str) -> str:
    s = l3.settings_for(node)
    script = (
        f"ip -o link show {s.vxlan_link} 2>/dev/null; ip -o link show {s.wireguard_link} "
        "2>/dev/null; ip route show table all proto 76; ip -6 route show table all proto 76; "
        "ip rule | grep -E '9027|9028'; nft list table inet ravend 2>/dev/null; "
        "for p in $(ip netns identify $$ >/dev/null; ip netns pids $(ip netns identify $$)); do "
        "cat /proc/$p/comm; done | grep wireguard; true"
    )
    return (await sh(l3, l3.sim.node_netns(node), script)).strip()


async def test_l3_toggle_off_removes_everything_and_on_restores(l3: L3Sim) -> None:
    names = [n.name for n in l3.topology.nodes]
    assert await _owned_objects(l3, CLOUD_GW)  # sanity: the probe sees ravend's objects
    await l3.set_l3(False)
    try:
        async with asyncio.timeout(20):
            while left := {n: o for n in names if (o := await _owned_objects(l3, n))}:
                await asyncio.sleep(0.3)
    except TimeoutError:
        pytest.fail(f"left behind after enable-l3-tunnel=false: {left}")
    finally:
        await l3.set_l3(True)
    mesh = await l3.wait_mesh(30)
    assert all(mesh.values()), [k for k, ok in mesh.items() if not ok]


async def _candidate_ready(l3: L3Sim, gateway: str, node: str) -> None:
    """Wait until `node` is a tunnel candidate of `gateway` that has published its key."""
    async with asyncio.timeout(20):
        while True:
            gw = l3.view.value.gateways.get(gateway)
            eps = [e for e in gw.spec.endpoints if e.node_name == node] if gw else []
            if any(e.type == EndpointType.TUNNEL and e.config.get(CONFIG_PUBLIC_KEY) for e in eps):
                return
            await l3.view.wait_newer(l3.view.version)


def _active_tunnel(l3: L3Sim, gateway: str) -> list[str]:
    gw = l3.view.value.gateways[gateway]
    return [e.node_name for e in gw.active(EndpointType.TUNNEL)]


async def _wait_active(l3: L3Sim, gateway: str, nodes: list[str], timeout: float = 5) -> None:
    async with asyncio.timeout(timeout):
        while _active_tunnel(l3, gateway) != nodes:
            await l3.view.wait_newer(l3.view.version)


async def test_failover_to_the_second_tunnel_candidate(l3: L3Sim) -> None:
    """Two tunnel candidates; the active one's links are cut; the real leader moves the
    endpoint and cross-pool traffic comes back through the other one."""
    await l3.add_tunnel_candidate("gw-qingdao", QD_PROXY)
    await _candidate_ready(l3, "gw-qingdao", QD_PROXY)
    assert _active_tunnel(l3, "gw-qingdao") == [QD_GW]
    targets = [l3.pod_ip(CLOUD_W), l3.pod_ip(HZ_W)]
    await l3.sim.cut_links(QD_GW)
    loop = asyncio.get_running_loop()
    start = loop.time()
    try:
        async with asyncio.timeout(30):
            while not all(
                await asyncio.gather(*(l3.sim.ping(QD_PROXY, t, wait=0.5) for t in targets))
            ):
                await asyncio.sleep(0.1)
        print(f"cross-pool traffic restored {loop.time() - start:.2f} s after the cut")
        await _wait_active(l3, "gw-qingdao", [QD_PROXY])  # the real election moved it
        assert await l3.sim.ping(CLOUD_W, l3.pod_ip(QD_PROXY))
    finally:
        await l3.sim.restore_links(QD_GW)
