"""The demo's summary rendering, verdict and ping arithmetic, on plain records (no cluster)."""

from __future__ import annotations

import pytest

from ravend.sim import demo_report as rep
from ravend.sim.demo import parse_args
from ravend.sim.demo_report import (
    CheckRecord,
    all_passed,
    longest_gap,
    pair,
    parse_ping,
    recovery_seconds,
    render_summary,
)


def full_run(fail: str | None = None) -> list[CheckRecord]:
    recs = [
        CheckRecord(rep.GATEWAYS, "gw-cloud", True, "proxy a  tunnel a"),
        CheckRecord(rep.TUNNELS, "gw-cloud -> gw-hangzhou", True, "1.20 ms", 1.2, "ms"),
        CheckRecord(rep.PODS, pair("a", "b"), True, "ok"),
        CheckRecord(rep.PODS, pair("b", "a"), fail != "pod", "no reply"),
        CheckRecord(rep.MEMBERS, pair("a", "c"), True),
        CheckRecord(rep.L7, "logs b", True, "HTTP 200"),
        CheckRecord(rep.FAILOVER, "gw-hangzhou", True, "recovered after 1.20 s", 1.2, "s"),
    ]
    return recs


def test_summary_shows_every_section_and_passes() -> None:
    text = render_summary(full_run(), {"a": "cloud/a", "b": "hz/b"})
    for title in rep.SECTIONS:
        assert f"== {title}" in text
    assert text.rstrip().endswith("RESULT: PASS (7 checks)")
    assert all_passed(full_run())


def test_matrix_marks_failures_and_names_them() -> None:
    text = render_summary(full_run(fail="pod"), {"a": "cloud/a", "b": "hz/b"})
    rows = [
        line.split() for line in text.splitlines() if line.strip().startswith(("cloud/a", "hz/b"))
    ]
    assert rows[0] == ["cloud/a", "hz/b"]  # the header
    assert rows[1] == ["cloud/a", ".", "ok"]
    assert rows[2] == ["hz/b", "FAIL", "."]
    assert "FAIL b -> a: no reply" in text
    assert "RESULT: FAIL (1 failed checks" in text
    assert not all_passed(full_run(fail="pod"))


def test_missing_section_fails_the_run() -> None:
    recs = [r for r in full_run() if r.section != rep.FAILOVER]
    assert not all_passed(recs)
    text = render_summary(recs)
    assert f"== {rep.FAILOVER} (not run)" in text
    assert f"sections not run: {rep.FAILOVER}" in text
    assert not all_passed([])


def test_long_failure_lists_are_counted_not_dumped() -> None:
    recs = [CheckRecord(rep.PODS, pair(f"n{i}", f"m{i}"), False, "x") for i in range(10)]
    text = render_summary(recs)
    assert text.count("FAIL n") == rep.MAX_LISTED
    assert f"... and {10 - rep.MAX_LISTED} more failed pairs" in text


PING_LOG = """\
PING 10.244.1.2 (10.244.1.2) 56(84) bytes of data.
[1000.000000] 64 bytes from 10.244.1.2: icmp_seq=1 ttl=62 time=0.5 ms
[1000.050000] 64 bytes from 10.244.1.2: icmp_seq=2 ttl=62 time=0.5 ms
[1001.100000] no answer yet for icmp_seq=3
[1002.000000] 64 bytes from 10.244.1.2: icmp_seq=20 ttl=62 time=2.0 ms
[1002.050000] 64 bytes from 10.244.1.2: icmp_seq=21 ttl=62 time=0.4 ms
""".splitlines()


def test_ping_parsing_and_recovery_time() -> None:
    replies = parse_ping(PING_LOG)
    assert [r.seq for r in replies] == [1, 2, 20, 21]
    assert recovery_seconds(replies, cut_at=1000.1) == pytest.approx(1.9)
    # a reply to a probe sent before the cut does not count as recovery
    assert recovery_seconds(replies, cut_at=1001.999) == pytest.approx(0.051)
    assert recovery_seconds(replies, cut_at=1003.0) is None
    assert longest_gap(replies, since=1000.1) == pytest.approx(1.9)


def test_once_follows_ci_env() -> None:
    assert parse_args([], {"CI": "true"}).once
    assert not parse_args([], {}).once
    assert parse_args(["--once"], {}).once
