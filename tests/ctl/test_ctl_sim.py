"""ravectl against the simulated cluster: status from the API, diagnose on a real node namespace.

The cluster runs without agents; the test plays the agent's part on the hangzhou gateway node
(wireguard-go `raven-wg0`, `raven0`, rules, routes, nft MSS clamp, sysctls) so diagnose sees a
healthy node, then breaks one thing at a time (a deleted route, a stopped wireguard-go, an
expired certificate, a wrong sysctl, a missing MSS clamp) and checks ravectl detects and
explains each, through the real CLI entry and the real `ip`/`wg`/`nft` output.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from ravend.ctl.cli import parser, run
from ravend.kube.client import connect
from ravend.kube.resources import GATEWAYS
from ravend.sim import netns
from ravend.sim.cluster import ClusterOptions, SimCluster
from ravend.sim.netns_state import stop_processes
from ravend.sim.topology_default import default_topology

pytestmark = [
    pytest.mark.netns,
    pytest.mark.slow,
    pytest.mark.skipif(
        os.geteuid() != 0 or not all(shutil.which(t) for t in ("ip", "nft", "wg", "wireguard-go")),
        reason="needs root, ip, nft, wg and wireguard-go",
    ),
]

HZ = "izbp15inok0kbfkg3in52rz"
REMOTE = ("10.244.0.0/24", "10.244.1.0/24")
MSS_RULESET = """\
table inet ravend {
  chain clamp {
    type filter hook forward priority 0; policy accept;
    tcp flags syn tcp option maxseg size set 1380
  }
}
"""


@pytest.fixture
async def sim(tmp_path: Path) -> AsyncIterator[SimCluster]:
    cluster = SimCluster(default_topology(), ClusterOptions(run_dir=tmp_path / "sim", agents=False))
    await cluster.up()
    try:
        yield cluster
    finally:
        await cluster.down()


async def ctl(capsys: pytest.CaptureFixture[str], sim: SimCluster, *argv: str) -> tuple[int, Any]:
    args = parser().parse_args(["--sim", "--run-dir", str(sim.run_dir), "-o", "json", *argv])
    capsys.readouterr()
    rc = await run(args)
    return rc, json.loads(capsys.readouterr().out)


async def elect(sim: SimCluster) -> None:
    """Write status as the leader would: hangzhou and cloud active, with their nodes."""
    client = await connect(sim.admin_kubeconfig)
    try:
        for name, node, cidr in (("gw-hangzhou", HZ, "10.244.2.0/24"),
                                 ("gw-cloud", "izwz9dohcv74iegqecp4axz", REMOTE[0])):  # fmt: skip
            gw = await client.get(GATEWAYS, name)
            active = [dict(e) for e in gw["spec"]["endpoints"]]
            for e in active:
                e["config"] = {
                    "enable-l3-tunnel" if e["type"] == "tunnel" else "enable-l7-proxy": "true"
                }
            nodes = [{"nodeName": node, "privateIP": sim.topology.node(node).ip, "subnets": [cidr]}]
            if name == "gw-cloud":
                nodes.append({"nodeName": "izwz9ey0js5z7mornclpd6z", "privateIP": "192.168.0.196",
                              "subnets": [REMOTE[1]]})  # fmt: skip
            gw["status"] = {"activeEndpoints": active, "nodes": nodes}
            await client.replace_status(GATEWAYS, gw)
    finally:
        await client.close()


async def sh(sim: SimCluster, script: str) -> None:
    res = await sim.exec_on_node(HZ, ["sh", "-ec", script])
    assert res.ok, res.stderr


def cert(path: Path, not_after: dt.datetime) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "t")])
    c = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
         .serial_number(1).not_valid_before(not_after - dt.timedelta(days=30))
         .not_valid_after(not_after).sign(key, hashes.SHA256()))  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(c.public_bytes(serialization.Encoding.PEM))


def by_check(doc: Any) -> dict[str, dict[str, str]]:
    return {r["check"]: r for r in doc["results"] if r["node"] in ("", HZ)}


async def test_status_shows_roles_from_gateway_status(
    sim: SimCluster, capsys: pytest.CaptureFixture[str]
) -> None:
    rc, doc = await ctl(capsys, sim, "status")
    assert rc == 0 and {g["name"] for g in doc["gateways"]} == {
        "gw-cloud",
        "gw-hangzhou",
        "gw-qingdao",
    }
    await elect(sim)
    rc, doc = await ctl(capsys, sim, "status")
    nodes = {n["name"]: n for n in doc["nodes"]}
    assert (nodes[HZ]["l3_role"], nodes[HZ]["l7_role"]) == ("gateway", "proxy-client")
    assert nodes["izwz9dohcv74iegqecp4axz"]["l7_role"] == "proxy-server"
    assert nodes["izbp15inok0kbfkg3in52sz"]["l3_role"] == "member"
    assert {n["agent"] for n in doc["nodes"]} == {"unreachable"}  # no agents in this run


async def test_diagnose_detects_and_explains_each_breakage(
    sim: SimCluster, capsys: pytest.CaptureFixture[str]
) -> None:
    await elect(sim)
    wg = await asyncio.create_subprocess_exec(
        *sim.node_argv(HZ, ["wireguard-go", "-f", "raven-wg0"])
    )
    try:
        await asyncio.sleep(0.3)
        hz_ip = sim.topology.node(HZ).ip
        for line in (
            f"umask 077; wg genkey > /tmp/{sim.prefix}k",
            f"wg set raven-wg0 private-key /tmp/{sim.prefix}k listen-port 4500",
            f"rm /tmp/{sim.prefix}k; ip link set raven-wg0 mtu 1420 up",
            f"ip link add raven0 type vxlan id 200 dstport 4472 local {hz_ip} nolearning",
            "ip link set raven0 mtu 1450 up; ip rule add lookup 9028 priority 101",
            f"ip route add {REMOTE[0]} dev raven-wg0 table 9028",
            f"ip route add {REMOTE[1]} dev raven-wg0 table 9028",
            "sysctl -qw net.ipv4.ip_forward=1 net.ipv4.conf.all.rp_filter=2",
            "sysctl -qw net.ipv4.conf.all.send_redirects=0",
        ):
            await sh(sim, line)
        res = await netns.run(sim.node_argv(HZ, ["nft", "-f", "-"]), stdin=MSS_RULESET, check=False)
        assert res.ok, res.stderr
        certs = sim.run_dir / "nodes" / HZ / "state" / "certs"
        cert(certs / "tunnel-client.crt", dt.datetime.now(dt.UTC) + dt.timedelta(days=200))
        rc, doc = await ctl(capsys, sim, "diagnose", HZ)
        checks = by_check(doc)
        healthy = [
            "api", "kernel/wireguard", "sysctl/ip_forward", "sysctl/rp_filter",
            "sysctl/send_redirects", "links/raven-wg0", "links/raven0", "routing/rule",
            "routing/routes", "mtu/raven-wg0", "mtu/mss-clamp", "certs/tunnel-client",
        ]  # fmt: skip
        assert {c: checks[c]["status"] for c in healthy} == dict.fromkeys(healthy, "ok")
        # no real tunnel behind raven-wg0: the data-path probe and the handshakes must fail
        assert checks[f"probe/{REMOTE[0]}"]["status"] == "fail" and rc == 1
        assert checks["tunnels"]["status"] == "fail"

        await sh(sim, f"ip route del {REMOTE[1]} table 9028")
        await sh(sim, "sysctl -qw net.ipv4.conf.all.rp_filter=1; nft delete table inet ravend")
        cert(certs / "old.crt", dt.datetime.now(dt.UTC) - dt.timedelta(days=3))
        rc, doc = await ctl(capsys, sim, "diagnose", HZ)
        checks = by_check(doc)
        assert rc == 1
        assert (
            checks["routing/routes"]["status"] == "fail"
            and REMOTE[1] in checks["routing/routes"]["detail"]
        )
        assert (
            checks["sysctl/rp_filter"]["status"] == "fail"
            and "rp_filter=2" in checks["sysctl/rp_filter"]["fix"]
        )
        assert checks["mtu/mss-clamp"]["status"] == "fail"
        assert (
            checks["certs/old"]["status"] == "fail" and "expired" in checks["certs/old"]["detail"]
        )
        assert checks["certs/tunnel-client"]["status"] == "ok"
    finally:
        wg.kill()
        await wg.wait()
    await asyncio.sleep(0.2)  # wireguard-go gone: its TUN device goes with it
    rc, doc = await ctl(capsys, sim, "diagnose", HZ)
    checks = by_check(doc)
    assert (
        checks["links/raven-wg0"]["status"] == "fail"
        and "missing" in checks["links/raven-wg0"]["detail"]
    )
    assert "wireguard-go" in checks["links/raven-wg0"]["fix"]


async def test_unreachable_api_exits_3(sim: SimCluster, capsys: pytest.CaptureFixture[str]) -> None:
    await stop_processes([sim.state.procs["apiserver"]])
    rc, doc = await ctl(capsys, sim, "diagnose")
    assert rc == 3
    assert doc["results"][0]["check"] == "api" and doc["results"][0]["status"] == "fail"
