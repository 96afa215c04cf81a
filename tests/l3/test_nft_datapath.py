"""ravend's nft table on a real data path: tunnelled traffic escapes the CNI's masquerade."""

from __future__ import annotations

import subprocess
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
