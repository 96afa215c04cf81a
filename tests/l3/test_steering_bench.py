"""bench/l3_steering's helpers: the prefixes it probes, and that each mechanism really steers.

A benchmark that timed a mechanism which did not steer (or steered everything) would report a
cost for the wrong thing; these tests pin that on a real kernel with a small N.
"""

from __future__ import annotations

import ipaddress
import itertools
import subprocess
import sys
from pathlib import Path

import pytest

# bench/ is not an installed package (as in tests/l3_e2e): import it from the checkout.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from bench import l3_steering as st


def _inside(addr: str, cidrs: list[str]) -> bool:
    return any(ipaddress.ip_address(addr) in ipaddress.ip_network(c) for c in cidrs)


def test_remote_prefixes_are_distinct_non_adjacent_24s_inside_the_cluster() -> None:
    nets = [ipaddress.ip_network(p) for p in st.remote_prefixes(4000)]
    assert len(set(nets)) == 4000
    assert all(n.prefixlen == 24 and n.subnet_of(st.CLUSTER) for n in nets)  # type: ignore[arg-type]
    # Gaps between every pair: an auto-merge interval set cannot collapse them into one range.
    starts = sorted(int(n.network_address) for n in nets)
    assert all(b - a == 512 for a, b in itertools.pairwise(starts))


def test_probes_hit_the_last_remote_prefix_and_a_local_one() -> None:
    remote = st.remote_prefixes(100)
    matched, unmatched = st.probes(100)
    assert _inside(matched, remote[-1:]) and not _inside(matched, remote[:-1])
    assert not _inside(unmatched, remote)
    assert ipaddress.ip_address(unmatched) in st.CLUSTER


def test_rule_batch_keeps_prefix_order_so_the_last_prefix_is_scanned_last() -> None:
    text = st.rule_batch("add", ["10.16.0.0/24", "10.16.2.0/24"])
    assert text.splitlines() == [
        "rule add to 10.16.0.0/24 lookup 9027 pref 100",
        "rule add to 10.16.2.0/24 lookup 9027 pref 100",
    ]


def test_parse_rtts_reads_every_reply_and_ignores_the_summary() -> None:
    out = (
        "64 bytes from 10.16.0.1: icmp_seq=1 ttl=63 time=0.052 ms\n"
        "64 bytes from 10.16.0.1: icmp_seq=2 ttl=63 time=1.25 ms\n"
        "rtt min/avg/max/mdev = 0.052/0.651/1.250/0.599 ms\n"
    )
    assert st.parse_rtts(out) == [0.052, 1.25]


def test_records_carry_the_same_run_baselines() -> None:
    med = {
        "none": {"matched_cpu_ns_per_pkt": 2000.0},
        "fwmark": {"install_ms": 10.0, "matched_cpu_ns_per_pkt": 3000.0},
        "rules": {"install_ms": 5.0, "matched_cpu_ns_per_pkt": 50000.0},
    }
    recs = {r["metric"]: r for r in st.records(4000, med)}
    assert recs["N=4000 rules matched_cpu_ns_per_pkt"]["baseline"] == 2000.0
    assert recs["N=4000 rules install_ms"]["baseline"] == 10.0
    assert recs["N=4000 rules matched_cpu_ns_per_pkt"]["unit"] == "ns"
    assert "baseline" not in recs["N=4000 fwmark install_ms"]


def _namespaces() -> str:
    done = subprocess.run(["ip", "netns", "list"], check=True, capture_output=True, text=True)
    return done.stdout


@pytest.mark.netns
@pytest.mark.parametrize("mech", [m for m in st.MECHANISMS if m != "none"])
def test_each_mechanism_steers_only_remote_prefixes_and_follows_a_change(mech: str) -> None:
    n = 5
    with st.lab(n) as lab:
        matched, unmatched = st.probes(n)
        prefixes = st.remote_prefixes(n)
        new = st.prefix(2 * n)
        old_addr, new_addr = (str(ipaddress.ip_network(p)[1]) for p in (prefixes[0], new))
        for addr in (old_addr, new_addr):
            lab.ip(lab.sink, "addr", "add", addr + "/32", "dev", "lo")
        assert not lab.is_steered(matched)  # nothing installed yet: the main path
        assert st.install(lab, mech, prefixes) > 0
        assert lab.is_steered(matched) and not lab.is_steered(unmatched)
        assert lab.is_steered(old_addr) and not lab.is_steered(new_addr)
        st.change_one(lab, mech, prefixes, new)
        assert lab.is_steered(new_addr) and not lab.is_steered(old_addr)
        assert lab.is_steered(matched)
        st.uninstall(lab, mech, prefixes)
        assert not lab.is_steered(matched) and not lab.is_steered(new_addr)
    assert lab.router not in _namespaces()


@pytest.mark.netns
def test_flood_is_delivered_and_one_trial_reports_every_figure() -> None:
    with st.lab(3) as lab:
        pps, cpu_ns = lab.blast(st.probes(3)[0], 0.1)
        assert pps > 0 and cpu_ns > 0
        fig = st.trial(lab, "rules", 3)
        # Uninstalled afterwards: the next mechanism starts from a clean router.
        assert not lab.is_steered(st.probes(3)[0])
    assert set(fig) == {
        "install_ms",
        "read_back_ms",
        "matched_cpu_ns_per_pkt",
        "matched_kpps",
        "matched_rtt_ms",
        "unmatched_cpu_ns_per_pkt",
        "unmatched_rtt_ms",
        "change_one_ms",
    }
    assert lab.sink not in _namespaces()
