"""The simulated network in real namespaces: CNI-like pools, NAT, API reachability, cleanup."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path

import pytest
import pytest_asyncio

from ravend.sim import netns
from ravend.sim.cluster import ClusterOptions, SimCluster, status_main
from ravend.sim.netns_state import RunState, is_running, reap, spawn
from ravend.sim.topology import Topology
from ravend.sim.topology_default import collide_topology, default_topology

pytestmark = [pytest.mark.netns, pytest.mark.asyncio(loop_scope="module")]

ClusterCtx = Callable[..., AbstractAsyncContextManager[SimCluster]]
HZ_GW, HZ_2 = "izbp15inok0kbfkg3in52rz", "izbp15inok0kbfkg3in52sz"
QD_1, QD_2 = "izm5eb24dmjfimuaybpnqzz", "izm5eb24dmjfimuaybpnr0z"
CLOUD_1, CLOUD_2 = "izwz9dohcv74iegqecp4axz", "izwz9ey0js5z7mornclpd6z"


GET_WITH_KUBECONFIG = """
import base64, ssl, sys, urllib.request, yaml
cfg = yaml.safe_load(open(sys.argv[1]))
cluster = cfg["clusters"][0]["cluster"]
ca = base64.b64decode(cluster["certificate-authority-data"]).decode()
auth = {"Authorization": "Bearer " + cfg["users"][0]["user"]["token"]}
req = urllib.request.Request(cluster["server"] + sys.argv[2], headers=auth)
print(urllib.request.urlopen(req, context=ssl.create_default_context(cadata=ca)).read().decode())
"""
"""GET a path with a kubeconfig's server, CA and token (argv: kubeconfig, path)."""


@asynccontextmanager
async def running_cluster(topo: Topology, run_dir: Path) -> AsyncIterator[SimCluster]:
    cluster = SimCluster(topo, ClusterOptions(run_dir=run_dir, agents=False))
    elapsed = await cluster.up()
    print(
        f"bring-up of {len(topo.nodes)} nodes with API server ({cluster.prefix}): {elapsed:.2f} s"
    )
    try:
        yield cluster
    finally:
        await cluster.down()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def sim(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[SimCluster]:
    run_dir = tmp_path_factory.mktemp("sim")
    async with running_cluster(default_topology(), run_dir) as cluster:
        yield cluster


async def test_pods_reach_same_region_pods_only(sim: SimCluster) -> None:
    topo = sim.topology
    for a, b in [(HZ_GW, HZ_2), (QD_2, QD_1), (CLOUD_1, CLOUD_2)]:
        assert await sim.ping(a, topo.node(b).pod_ip), f"{a} -> {b} pod"
    # no tunnels yet: another region's pods are unreachable (the sim leaks nothing)
    assert not await sim.ping(HZ_GW, topo.node(QD_1).pod_ip)
    assert not await sim.ping(CLOUD_1, topo.node(HZ_2).pod_ip)


async def test_edge_node_reaches_api_server_across_nat(sim: SimCluster) -> None:
    port = sim.options.api_port
    for node in (HZ_2, QD_1, CLOUD_2):
        assert await sim.tcp_connect(sim.node_netns(node), sim.topology.api_ip, port), node
    # and the host reaches it over its own /30
    assert await sim.tcp_connect_host(sim.plan.host.api_ip, port)


async def test_api_server_holds_the_seeded_objects(sim: SimCluster) -> None:
    """An edge node's own kubeconfig works from inside its namespace, through the NAT."""
    code = GET_WITH_KUBECONFIG
    kube = str(sim.kubeconfig(QD_1))
    res = await sim.exec_in(
        sim.node_netns(QD_1), [sys.executable, "-c", code, kube, "/api/v1/nodes"]
    )
    assert res.ok, res.stderr
    nodes = {n["metadata"]["name"]: n for n in json.loads(res.stdout)["items"]}
    assert set(nodes) == {n.name for n in sim.topology.nodes}
    qd = nodes[QD_1]
    assert qd["spec"]["podCIDR"] == sim.topology.node(QD_1).pod_cidr
    assert {"type": "InternalIP", "address": "172.16.1.89"} in qd["status"]["addresses"]
    assert any(c["type"] == "Ready" and c["status"] == "True" for c in qd["status"]["conditions"])
    gw = "/apis/raven.openyurt.io/v1beta1/gateways/gw-cloud"
    res = await sim.exec_in(sim.node_netns(QD_1), [sys.executable, "-c", code, kube, gw])
    eps = json.loads(res.stdout)["spec"]["endpoints"]
    assert {e["publicIP"] for e in eps} == {sim.topology.node(CLOUD_1).wan_ip}


async def test_nat_hides_edges_and_masquerades(sim: SimCluster) -> None:
    hz = sim.topology.region("hangzhou")
    cloud_ns = sim.node_netns(CLOUD_1)
    cloud_wan = sim.topology.node(CLOUD_1).wan_ip
    # outbound: the cloud node sees the edge's connection coming from the NAT's public IP
    server = await asyncio.create_subprocess_exec(
        "ip", "netns", "exec", cloud_ns, sys.executable, "-c",
        "import socket;s=socket.create_server(('0.0.0.0',7001));print('ready',flush=True);"
        "c,a=s.accept();print(a[0],flush=True)",
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert server.stdout is not None
    try:
        assert (await asyncio.wait_for(server.stdout.readline(), 10)).strip() == b"ready"
        assert await sim.tcp_connect(sim.node_netns(HZ_2), cloud_wan, 7001)
        peer = (await asyncio.wait_for(server.stdout.readline(), 10)).decode().strip()
        assert peer == hz.public_ip
    finally:
        if server.returncode is None:
            server.kill()
        await server.wait()
    # inbound: even with a route to the edge LAN via the NAT, nothing gets in
    await sim.exec_in(cloud_ns, ["ip", "route", "add", hz.lan, "via", hz.public_ip])
    try:
        assert not await sim.tcp_connect(cloud_ns, sim.topology.node(HZ_2).ip, 22, timeout=1)
        assert not (await sim.exec_in(cloud_ns, ["ping", "-c1", "-W1", "172.16.2.104"])).ok
    finally:
        await sim.exec_in(cloud_ns, ["ip", "route", "del", hz.lan])


async def test_cut_and_restore_links(sim: SimCluster) -> None:
    target = sim.topology.node(HZ_2).pod_ip
    assert await sim.ping(HZ_GW, target)
    await sim.cut_links(HZ_2)
    try:
        assert not await sim.ping(HZ_GW, target)
        assert not await sim.tcp_connect(sim.node_netns(HZ_2), sim.topology.api_ip, 6443, timeout=1)
    finally:
        await sim.restore_links(HZ_2)
    assert await sim.ping(HZ_GW, target)


async def test_each_node_has_its_own_wireguard_socket_dir(sim: SimCluster) -> None:
    """wireguard-go's /run/wireguard is shared by all namespaces; nodes get a private one."""
    marker = f"{sim.prefix}probe.sock"
    res = await sim.exec_on_node(
        HZ_GW, ["sh", "-c", f"touch /run/wireguard/{marker} && ls /run/wireguard"]
    )
    assert res.ok and marker in res.stdout, res.stderr
    assert (sim.wireguard_dir(HZ_GW) / marker).exists()
    assert marker not in _listdir("/run/wireguard")
    other = await sim.exec_on_node(QD_1, ["ls", "/run/wireguard"])
    assert other.ok and marker not in other.stdout
    # the sockets are still in the node's network namespace
    res = await sim.exec_on_node(HZ_GW, ["ip", "-br", "-4", "addr", "show", "eth0"])
    assert "172.16.2.103/24" in res.stdout


async def test_status_describes_the_run(sim: SimCluster) -> None:
    st = sim.status()
    assert st["api"]["url"] == sim.api_url
    by_name = {n["name"]: n for n in st["nodes"]}
    assert by_name[QD_2]["pod_ips"] == ["10.244.5.2"]
    assert by_name[QD_2]["netns"] in await netns.existing_namespaces()
    assert [r["behind_nat"] for r in st["regions"]] == [False, True, True]


async def test_status_cli_reads_the_state_file(
    sim: SimCluster, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await status_main(["--run-dir", str(sim.run_dir), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["prefix"] == sim.prefix
    assert out["processes"]["apiserver"]["running"] is True
    assert [n["name"] for n in out["nodes"]] == [n.name for n in sim.topology.nodes]
    assert await status_main(["--run-dir", str(sim.run_dir)]) == 0
    assert "NAT via 198.18.0.10" in capsys.readouterr().out


async def test_colliding_topology_comes_up(tmp_path: Path, cluster_ctx: ClusterCtx) -> None:
    topo = collide_topology()
    async with cluster_ctx(topo, tmp_path, apiserver=False) as sim:
        for a, b in [(HZ_GW, HZ_2), (QD_1, QD_2)]:
            assert await sim.ping(a, topo.node(b).pod_ip)
        # the same LAN address answers in each region, each the region's own node
        for node in (HZ_GW, QD_1):
            res = await sim.exec_in(
                sim.node_netns(node), ["ip", "-br", "-4", "addr", "show", "eth0"]
            )
            assert "172.16.2.103/24" in res.stdout
        # both NATs work although their LANs are the same
        for node in (HZ_2, QD_2):
            res = await sim.exec_in(
                sim.node_netns(node), ["ping", "-c1", "-W1", topo.wan_router_ip]
            )
            assert res.ok, node


async def test_down_after_a_crash_removes_everything(tmp_path: Path) -> None:
    sim = SimCluster(collide_topology(), _options(tmp_path))
    await sim.up()
    namespaces = list(sim.plan.namespaces)
    state = RunState.load(tmp_path)
    api = state.procs["apiserver"]
    assert is_running(api)
    # a process nobody recorded, inside a node namespace (an agent's child, say)
    stray_pid, _ = spawn(
        ["ip", "netns", "exec", sim.node_netns(QD_1), "sleep", "300"], tmp_path / "s.log"
    )
    del sim  # the "crash": only the state file remains
    down = [sys.executable, "-m", "ravend", "sim", "down", "--run-dir", str(tmp_path)]
    done = await netns.run(down, check=False, timeout=60)  # another process, as after a crash
    assert done.ok, done.stderr
    assert not set(namespaces) & await netns.existing_namespaces()
    assert not is_running(api)
    assert _gone(stray_pid)
    reap(stray_pid)
    reap(api.pid)
    assert not (tmp_path / "state.json").exists()


def _options(run_dir: Path) -> ClusterOptions:
    return ClusterOptions(run_dir=run_dir, agents=False)


def _gone(pid: int) -> bool:
    """No such process, or only a zombie waiting for us (its parent) to reap it."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def _listdir(path: str) -> list[str]:
    try:
        return os.listdir(path)
    except FileNotFoundError:
        return []
