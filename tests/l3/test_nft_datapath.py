"""ravend's nft table on a real data path: tunnelled traffic escapes the CNI's masquerade."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable

import pytest

from ravend.l3.nftgen import ruleset

pytestmark = pytest.mark.netns


def sh(*argv: str, stdin: str | None = None) -> str:
    return subprocess.run(argv, check=True, capture_output=True, text=True, input=stdin).stdout


def _table(name: str, hook: str, rule: str) -> str:
    # nft 1.0.6 rejects a whole table on one line: one statement per line.
    return f"table ip {name} {{\n chain c {{\n {hook}\n {rule}\n }}\n}}\n"


def _wire(pod: str, node: str, far: str) -> None:
    sh("ip", "-n", pod, "link", "add", "p0", "type", "veth", "peer", "name", "n0", "netns", node)
    sh("ip", "-n", node, "link", "add", "n1", "type", "veth", "peer", "name", "f0", "netns", far)
    for ns, link, addr in [
        (pod, "p0", "10.20.0.2/24"),
        (node, "n0", "10.20.0.1/24"),
        (node, "n1", "172.30.0.1/24"),
        (far, "f0", "172.30.0.2/24"),
    ]:
        sh("ip", "-n", ns, "addr", "add", addr, "dev", link)
        sh("ip", "-n", ns, "link", "set", link, "up")
    sh("ip", "-n", pod, "route", "add", "default", "via", "10.20.0.1")
    sh("ip", "-n", far, "route", "add", "10.20.0.0/24", "via", "172.30.0.1")
    sh("ip", "netns", "exec", node, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1")
    # The CNI: masquerade everything leaving the node (flannel/calico do this for non-pod dsts).
    cni = _table("cni", "type nat hook postrouting priority srcnat", "masquerade")
    sh("ip", "netns", "exec", node, "nft", "-f", "-", stdin=cni)
    count = _table("seen", "type filter hook input priority 0", "ip saddr 10.20.0.2 counter")
    sh("ip", "netns", "exec", far, "nft", "-f", "-", stdin=count)


def _pod_ip_seen(far: str) -> bool:
    return "packets 0 " not in sh("ip", "netns", "exec", far, "nft", "list", "table", "ip", "seen")


def test_pod_source_survives_cni_masquerade_only_towards_remote_subnets(
    netns: Callable[[], str],
) -> None:
    pod, node, far = netns(), netns(), netns()
    _wire(pod, node, far)
    sh("ip", "netns", "exec", pod, "ping", "-c1", "-W1", "172.30.0.2")
    assert not _pod_ip_seen(far), "the CNI masquerades when ravend has no table"
    table = ruleset("ravend", ["172.30.0.0/24"], ["10.20.0.0/24"], 1420, mark=None)
    sh("ip", "netns", "exec", node, "nft", "-f", "-", stdin=table.script())
    sh("ip", "netns", "exec", pod, "ping", "-c1", "-W1", "172.30.0.2")
    assert _pod_ip_seen(far), "tunnelled traffic must keep the pod IP"


def _counters(ns: str, table: str) -> dict[str, int]:
    """Packets counted by each rule of `table`, keyed by the rule's comment."""
    out = sh("ip", "netns", "exec", ns, "nft", "list", "table", "ip", table)
    got = {}
    for line in out.splitlines():
        if "counter packets" in line and "comment" in line:
            packets = int(line.split("counter packets ")[1].split()[0])
            got[line.split('comment "')[1].split('"')[0]] = packets
    return got


def _syn(pod: str, dst: str) -> None:
    # A SYN is all we need; the far side answers with a RST (nothing listens).
    code = f"import socket\ntry: socket.create_connection(('{dst}', 9), 1)\nexcept OSError: pass"
    sh("ip", "netns", "exec", pod, sys.executable, "-c", code)


@pytest.mark.parametrize("mark", [None, 0x40], ids=["gateway", "member"])
def test_syn_mss_is_clamped_towards_remote_subnets_only(
    netns: Callable[[], str], mark: int | None
) -> None:
    pod, node, far = netns(), netns(), netns()
    _wire(pod, node, far)
    sh("ip", "-n", far, "addr", "add", "172.31.0.2/24", "dev", "f0")
    sh("ip", "-n", node, "route", "add", "172.31.0.0/24", "via", "172.30.0.2")
    seen = (
        "table ip seen2 {\n chain c {\n type filter hook input priority 0\n"
        ' tcp flags syn tcp option maxseg size 1380 counter comment "clamped"\n'
        ' tcp flags syn tcp option maxseg size 1460 counter comment "untouched"\n }\n}\n'
    )
    sh("ip", "netns", "exec", far, "nft", "-f", "-", stdin=seen)
    table = ruleset("ravend", ["172.30.0.0/24"], ["10.20.0.0/24"], 1420, mark=mark)
    sh("ip", "netns", "exec", node, "nft", "-f", "-", stdin=table.script())
    _syn(pod, "172.30.0.2")  # a remote subnet: 1500-byte pod MTU, 1420 tunnel MTU
    assert _counters(far, "seen2") == {"clamped": 1, "untouched": 0}
    _syn(pod, "172.31.0.2")  # not remote: ravend leaves it alone
    assert _counters(far, "seen2") == {"clamped": 1, "untouched": 1}


def test_member_mark_bit_is_cleared_on_the_way_out_and_other_bits_are_kept(
    netns: Callable[[], str],
) -> None:
    """The VXLAN driver routes the outer packet with the inner packet's mark, so ravend's bit
    must be gone after its postrouting chain; the CNI's bits (0x4000 here) must survive."""
    pod, node, far = netns(), netns(), netns()
    _wire(pod, node, far)
    probe = (
        "table ip probe {\n"
        " chain pre {\n type filter hook prerouting priority -300\n meta mark set 0x4000\n }\n"
        " chain early {\n type filter hook postrouting priority -200\n"
        ' meta mark 0x4040 counter comment "marked"\n }\n'
        " chain late {\n type filter hook postrouting priority 0\n"
        ' meta mark 0x4000 counter comment "cleared"\n'
        ' meta mark & 0x40 != 0 counter comment "leaked"\n }\n}\n'
    )
    sh("ip", "netns", "exec", node, "nft", "-f", "-", stdin=probe)
    table = ruleset("ravend", ["172.30.0.0/24"], ["10.20.0.0/24"], 1420, mark=0x40)
    sh("ip", "netns", "exec", node, "nft", "-f", "-", stdin=table.script())
    sh("ip", "netns", "exec", pod, "ping", "-c1", "-W1", "172.30.0.2")
    got = _counters(node, "probe")
    # The echo request (and its reply, forwarded back to the pod, is not remote-bound).
    assert got["marked"] >= 1 and got["leaked"] == 0
    assert got["cleared"] >= got["marked"]
