"""The agent's pass against a real kernel with its netlink watch running: once a pass has
verified the kernel, the next ones reuse that snapshot, and deleting any of ravend's objects
behind its back (route, rule, neighbour, FDB entry, address) is announced and re-added by the
very next pass, while changes to other links are not ravend's business."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import subprocess
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from types import MappingProxyType

import pytest

from ravend.l3.agent import L3Agent
from ravend.l3.kernel import LinuxKernel
from ravend.l3.settings import L3Settings
from ravend.l3.wireguard import UserspaceWireGuard
from ravend.model import (
    GATEWAY_LABEL,
    ClusterView,
    Endpoint,
    EndpointType,
    Gateway,
    GatewayStatus,
    Node,
    ObjectMeta,
    RavenConfig,
)
from ravend.runtime import Latest

pytestmark = pytest.mark.netns
ME_IP = "172.20.1.3"


def sh(*argv: str) -> str:
    return subprocess.run(argv, check=True, capture_output=True, text=True).stdout


def cluster() -> ClusterView:
    def ep(node: str, nat: bool) -> Endpoint:
        cfg = MappingProxyType({"publicKey": f"k-{node}"})
        return Endpoint(
            node, EndpointType.TUNNEL, 4500, nat, "" if nat else "198.51.100.1", config=cfg
        )

    gws = {
        g: Gateway(ObjectMeta(g), status=GatewayStatus(active_endpoints=(ep(n, g == "edge"),)))
        for g, n in [("cloud", "c-gw"), ("edge", "e-gw")]
    }
    nodes = {
        name: Node(
            ObjectMeta(name, labels=MappingProxyType({GATEWAY_LABEL: g})),
            (ip,),
            pod_cidrs=(cidr,),
            ready=True,
        )
        for name, g, ip, cidr in [
            ("c-gw", "cloud", "192.168.9.1", "10.10.0.0/24"),
            ("e-gw", "edge", "172.20.1.2", "10.20.0.0/24"),
            ("e-w", "edge", ME_IP, "10.20.1.0/24"),
        ]
    }
    return ClusterView(
        MappingProxyType(gws), MappingProxyType(nodes), RavenConfig(True, True, True), synced=True
    )


@pytest.fixture
async def agent(netns: Callable[[], str], tmp_path: Path) -> AsyncIterator[L3Agent]:
    """A member node's agent (no WireGuard device) with its netlink watch running."""
    ns = netns()
    # No IPv6 link-local addresses: their DAD completing a second after a link comes up is an
    # (owned) address event that would make the "nothing changed" checks below race with it.
    sh("ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv6.conf.default.addr_gen_mode=1")
    sh("ip", "-n", ns, "link", "add", "u0", "type", "veth", "peer", "name", "u1")
    sh("ip", "-n", ns, "addr", "add", f"{ME_IP}/24", "dev", "u0")
    sh("ip", "-n", ns, "link", "set", "u0", "up")
    tag = secrets.token_hex(3)
    s = L3Settings(vxlan_link=f"rv{tag}", wireguard_link=f"rw{tag}", state_dir=str(tmp_path))
    kernel = LinuxKernel(s, UserspaceWireGuard(s, ns), ns, node_ip=ME_IP)
    a = L3Agent("e-w", ME_IP, s, tmp_path, Latest(cluster()), client=None, netns=ns, kernel=kernel)
    await a.prepare()
    watch = asyncio.create_task(a.watch_kernel())
    try:
        async with asyncio.timeout(5):
            while not a.snaps.watching:
                await asyncio.sleep(0.01)
        yield a
    finally:
        watch.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watch


async def settle(a: L3Agent) -> None:
    """Until the events of our own changes stop arriving (0.3 s of silence)."""
    async with asyncio.timeout(5):
        while True:
            gen = a.snaps.generation
            await asyncio.sleep(0.3)
            if a.snaps.generation == gen:
                return


async def verified(a: L3Agent) -> None:
    """Converge, let our own events pass, and check that the next pass trusts the kernel."""
    assert await a.reconcile_once(cluster())
    await settle(a)
    assert await a.reconcile_once(cluster())  # our own changes were announced: reads
    hits = a.snaps.hits
    assert await a.reconcile_once(cluster()) and a.snaps.hits == hits + 1


@pytest.mark.parametrize("kind", ["route", "rule", "neigh", "fdb", "addr"])
async def test_a_deleted_object_is_announced_and_re_added_by_the_next_pass(
    agent: L3Agent, kind: str
) -> None:
    a, ns, vx = agent, agent.netns or "", agent.s.vxlan_link
    await verified(a)
    gw_overlay, gw_mac = "240.20.1.2", "0e:72:ac:14:01:02"
    damage, show, expect = {
        "route": (
            ["ip", "-n", ns, "route", "del", "default", "table", "9027"],
            ["ip", "-n", ns, "route", "show", "table", "9027"],
            f"via {gw_overlay} dev {vx}",
        ),
        "rule": (
            ["ip", "-n", ns, "rule", "del", "fwmark", "0x40/0x40", "lookup", "9027"],
            ["ip", "-n", ns, "rule"],
            "lookup 9027",
        ),
        "neigh": (
            ["ip", "-n", ns, "neigh", "del", gw_overlay, "dev", vx],
            ["ip", "-n", ns, "neigh", "show", "dev", vx],
            f"{gw_overlay} lladdr {gw_mac} PERMANENT",
        ),
        "fdb": (
            ["bridge", "-n", ns, "fdb", "del", gw_mac, "dev", vx, "dst", "172.20.1.2", "self"],
            ["bridge", "-n", ns, "fdb", "show", "dev", vx],
            f"{gw_mac} dst 172.20.1.2",
        ),
        "addr": (
            ["ip", "-n", ns, "addr", "flush", "dev", vx],
            ["ip", "-n", ns, "addr", "show", "dev", vx],
            "inet 240.20.1.3/8",
        ),
    }[kind]
    assert expect in sh(*show)
    gen = a.snaps.generation
    sh(*damage)
    assert expect not in sh(*show)
    async with asyncio.timeout(3):  # the watch reports it
        while a.snaps.generation == gen:
            await asyncio.sleep(0.01)
    hits = a.snaps.hits
    assert await a.reconcile_once(cluster())
    assert a.snaps.hits == hits and expect in sh(*show)


async def test_other_links_changing_does_not_cost_a_kernel_read(agent: L3Agent) -> None:
    a, ns = agent, agent.netns or ""
    await verified(a)
    gen = a.snaps.generation
    sh("ip", "-n", ns, "addr", "add", "10.99.0.1/24", "dev", "u0")
    sh("ip", "-n", ns, "route", "add", "10.98.0.0/24", "dev", "u0")
    sh("ip", "-n", ns, "neigh", "replace", "172.20.1.9", "lladdr", "02:00:00:00:00:09", "dev", "u0")
    await asyncio.sleep(0.3)
    assert a.snaps.generation == gen
    hits = a.snaps.hits
    assert await a.reconcile_once(cluster()) and a.snaps.hits == hits + 1
