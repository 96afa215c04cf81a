"""The Linux adapter in a throwaway namespace: converge, repair drift, adopt, never touch others."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import subprocess
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace
from pathlib import Path
from types import MappingProxyType

import pytest

from ravend.l3 import ops as o
from ravend.l3.diff import diff
from ravend.l3.kernel import LinuxKernel, OpFailure, ip_line
from ravend.l3.keys import generate_private, load_or_create, public_from_private
from ravend.l3.plan import LocalFacts, plan
from ravend.l3.settings import L3Settings
from ravend.l3.state import EMPTY, L3State, Role, Route, Rule, Sysctl
from ravend.l3.wireguard import UserspaceWireGuard
from ravend.model import (
    GATEWAY_LABEL,
    ClusterView,
    Endpoint,
    EndpointType,
    Gateway,
    GatewaySpec,
    GatewayStatus,
    Node,
    ObjectMeta,
    RavenConfig,
)

pytestmark = pytest.mark.netns


def sh(*argv: str) -> str:
    return subprocess.run(argv, check=True, capture_output=True, text=True).stdout


def cluster(gw_key: str) -> ClusterView:
    def ep(node: str, nat: bool, key: str) -> Endpoint:
        cfg = MappingProxyType({"publicKey": key})
        return Endpoint(
            node, EndpointType.TUNNEL, 4500, nat, "" if nat else "198.51.100.1", config=cfg
        )

    peer_key = public_from_private(generate_private())
    gws = {
        "cloud": Gateway(
            ObjectMeta("cloud"),
            status=GatewayStatus(active_endpoints=(ep("c-gw", False, peer_key),)),
        ),
        "edge": Gateway(
            ObjectMeta("edge"),
            GatewaySpec(),
            GatewayStatus(active_endpoints=(ep("e-gw", True, gw_key),)),
        ),
    }
    nodes = {
        name: Node(
            ObjectMeta(name, labels=MappingProxyType({GATEWAY_LABEL: g})),
            (ip,),
            (),
            (cidr, v6),
            True,
        )
        for name, g, ip, cidr, v6 in [
            ("c-gw", "cloud", "192.168.9.1", "10.10.0.0/24", "fd00:10::/64"),
            ("e-gw", "edge", "172.20.1.2", "10.20.0.0/24", "fd00:20::/64"),
            ("e-w", "edge", "172.20.1.3", "10.20.1.0/24", "fd00:21::/64"),
        ]
    }
    return ClusterView(
        MappingProxyType(gws), MappingProxyType(nodes), RavenConfig(True, True, True), synced=True
    )


@dataclass
class Node_:
    ns: str
    s: L3Settings
    wg: UserspaceWireGuard
    k: LinuxKernel
    public_key: str


@pytest.fixture
async def node(netns: Callable[[], str], tmp_path: Path) -> AsyncIterator[Node_]:
    ns = netns()
    # An underlay: a veth pair inside the namespace carrying the node IP.
    sh("ip", "-n", ns, "link", "add", "u0", "type", "veth", "peer", "name", "u1")
    sh("ip", "-n", ns, "addr", "add", "172.20.1.2/24", "dev", "u0")
    sh("ip", "-n", ns, "link", "set", "u0", "up")
    sh("ip", "-n", ns, "link", "set", "u1", "up")
    tag = secrets.token_hex(3)
    s = L3Settings(vxlan_link=f"rv{tag}", wireguard_link=f"rw{tag}", state_dir=str(tmp_path))
    key = load_or_create(tmp_path / "wireguard.key")
    wg = UserspaceWireGuard(s, ns)
    try:
        yield Node_(ns, s, wg, LinuxKernel(s, wg, ns), public_from_private(key))
    finally:
        for proc in wg.procs.values():  # by PID, before the namespace goes
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(f"/var/run/wireguard/{s.wireguard_link}.sock")


def desired(n: Node_, me: str = "e-gw", ip: str = "172.20.1.2") -> L3State:
    return plan(cluster(n.public_key), me, n.s, LocalFacts(n.public_key, 1500, ip))


async def converge(n: Node_, want: L3State) -> list[o.Op]:
    ops = diff(want, await n.k.snapshot(want), n.s)
    failures = await n.k.apply(ops)
    assert failures == []
    left = diff(want, await n.k.snapshot(want), n.s)
    assert left == [], f"not converged after one pass: {left}"
    return ops


async def test_gateway_converges_repairs_and_tears_down_only_its_own(node: Node_) -> None:
    n = node
    # Objects that are not ravend's: same table but another protocol, a foreign rule, nft table.
    sh(
        "ip",
        "-n",
        n.ns,
        "route",
        "add",
        "10.99.0.0/16",
        "dev",
        "u0",
        "table",
        str(n.s.member_table),
    )
    sh("ip", "-n", n.ns, "rule", "add", "lookup", "100", "prio", "200")
    sh("ip", "netns", "exec", n.ns, "nft", "add", "table", "inet", "other")
    want = desired(n)
    assert want.role is Role.GATEWAY and want.vxlan is not None and want.wireguard is not None
    await converge(n, want)

    routes = sh("ip", "-n", n.ns, "route", "show", "table", "all", "proto", "76")
    assert f"10.10.0.0/24 dev {n.s.wireguard_link} table 9028" in routes
    assert f"10.20.1.0/24 via 240.20.1.3 dev {n.s.vxlan_link} table 9027" in routes
    assert "fd00:10::/64" in sh("ip", "-n", n.ns, "-6", "route", "show", "table", "9028")
    assert "fwmark" not in sh("ip", "-n", n.ns, "rule")
    assert "lookup 9028 proto 76" in sh("ip", "-n", n.ns, "-6", "rule")
    assert "0e:72:ac:14:01:03 dst 172.20.1.3" in sh(
        "bridge", "-n", n.ns, "fdb", "show", "dev", n.s.vxlan_link
    )
    dump = sh("ip", "netns", "exec", n.ns, "wg", "show", n.s.wireguard_link, "dump").splitlines()
    assert dump[0].split("\t")[1] == n.public_key and dump[1].split("\t")[2] == "198.51.100.1:4500"
    assert 'comment "ravend' in sh(
        "ip", "netns", "exec", n.ns, "nft", "list", "table", "inet", "ravend"
    )
    assert sh("ip", "netns", "exec", n.ns, "sysctl", "-n", "net.ipv4.ip_forward").strip() == "1"

    # Someone deletes a route and a rule behind ravend's back: exactly those come back.
    sh("ip", "-n", n.ns, "route", "del", "10.10.0.0/24", "table", "9028")
    sh("ip", "-n", n.ns, "rule", "del", "prio", "101")
    ops = await converge(n, want)
    assert [type(op) for op in ops] == [o.AddRoute, o.AddRule]

    await converge(n, EMPTY)
    assert sh("ip", "-n", n.ns, "route", "show", "table", "all", "proto", "76") == ""
    assert n.s.vxlan_link not in sh("ip", "-n", n.ns, "link")
    # What was not ravend's is still there.
    assert "10.99.0.0/16" in sh("ip", "-n", n.ns, "route", "show", "table", str(n.s.member_table))
    assert "lookup 100" in sh("ip", "-n", n.ns, "rule")
    assert "table inet other" in sh("ip", "netns", "exec", n.ns, "nft", "list", "tables")
    assert "ravend" not in sh("ip", "netns", "exec", n.ns, "nft", "list", "tables")


async def test_restart_adopts_running_wireguard_go_and_dead_one_is_restarted(node: Node_) -> None:
    n = node
    want = desired(n)
    await converge(n, want)
    (proc,) = n.wg.procs.values()
    # A new ravend (new backend object): nothing to do, wireguard-go not restarted.
    wg2 = UserspaceWireGuard(n.s, n.ns)
    k2 = LinuxKernel(n.s, wg2, n.ns)
    assert diff(want, await k2.snapshot(want), n.s) == []
    assert wg2.starts == 0
    # wireguard-go dies: the next pass recreates and reconfigures it.
    os.kill(proc.pid, signal.SIGKILL)
    await proc.wait()
    await asyncio.sleep(0.05)
    ops = await converge(n, want)
    assert o.CreateWireGuard(n.s.wireguard_link) in ops
    assert any(isinstance(op, o.ConfigureWireGuard) and op.upsert for op in ops)
    assert n.wg.starts == 2


async def test_member_marks_remote_traffic_into_its_table(node: Node_) -> None:
    n = node
    sh("ip", "-n", n.ns, "addr", "add", "172.20.1.3/24", "dev", "u0")
    want = desired(n, "e-w", "172.20.1.3")
    assert want.role is Role.MEMBER
    await converge(n, want)
    assert "fwmark 0x40/0x40 lookup 9027 proto 76" in sh("ip", "-n", n.ns, "rule")
    route = sh("ip", "-n", n.ns, "route", "get", "10.10.0.5", "mark", "0x40")
    assert f"via 240.20.1.2 dev {n.s.vxlan_link} table 9027" in route
    assert sh("ip", "-n", n.ns, "route", "show", "table", "9027").strip().endswith("mtu 1420")


async def test_real_failure_is_reported_per_op(node: Node_) -> None:
    n = node
    bad = o.AddRoute(Route(9027, "10.77.0.0/24", "nosuchlink0"))
    good = o.AddRule(Rule(4, 150, 9027))
    failures = await n.k.apply([bad, good])
    assert [f.op for f in failures] == [bad] and isinstance(failures[0], OpFailure)
    assert "lookup 9027" in sh("ip", "-n", n.ns, "rule")


def test_ip_lines_are_what_iproute2_expects() -> None:
    s = L3Settings()
    assert (
        ip_line(o.AddRule(Rule(6, 101, 9028)), s)
        == "rule add from all lookup 9028 prio 101 proto 76"
    )
    r = Route(9027, "0.0.0.0/0", "raven0", "240.0.0.1", 1420)
    assert (
        ip_line(o.AddRoute(r), s)
        == "route replace 0.0.0.0/0 via 240.0.0.1 dev raven0 table 9027 proto 76 mtu 1420"
    )
    assert ip_line(o.SetSysctl(Sysctl("net/ipv4/ip_forward", "1")), s) is None


async def test_targeted_readback_after_a_peer_switch_matches_a_full_snapshot(node: Node_) -> None:
    n = node
    await converge(n, desired(n))
    # The far gateway switched node: a new peer key, the same subnets. One WireGuard op.
    want = desired(n)
    before = await n.k.snapshot(want)
    ops = diff(want, before, n.s)
    assert [type(op) for op in ops] == [o.ConfigureWireGuard]
    assert await n.k.apply(ops) == []
    after = await n.k.readback(want, before, ops)
    full = await n.k.snapshot(want)
    assert diff(want, after, n.s) == [] == diff(want, full, n.s)
    assert replace(after, wireguard=None) == replace(full, wireguard=None)
    assert after.wireguard is not None and full.wireguard is not None
    keys = {p.public_key for p in after.wireguard.peers}
    assert keys == {p.public_key for p in full.wireguard.peers}
    # Dropping a route is not something a WireGuard read-back can see: that pass reads all.
    sh("ip", "-n", n.ns, "route", "del", "10.10.0.0/24", "table", str(n.s.tunnel_table))
    gone = await n.k.readback(want, after, [o.DelRoute(want.routes[0])])
    assert diff(want, gone, n.s) != []
