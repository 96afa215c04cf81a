"""The demo's result records, its summary rendering and ping-log arithmetic (pure, no I/O).

Every demo check returns `CheckRecord`s; the summary only renders them, so what the demo prints
is tested without a cluster. The reachability matrix is built from records named "src>dst".
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

GATEWAYS = "Gateways"
TUNNELS = "Tunnels"
PODS = "Pod-to-pod reachability"
MEMBERS = "Member node to member node"
L7 = "L7 through the proxy"
FAILOVER = "Gateway failover"
SECTIONS = (GATEWAYS, TUNNELS, PODS, MEMBERS, L7, FAILOVER)
"""Every section the summary shows, in order (shown even when it has no record)."""
MAX_LISTED = 6
"""Failed matrix pairs listed one by one; the rest are counted (the matrix shows them all)."""


@dataclass(frozen=True)
class CheckRecord:
    section: str
    name: str
    ok: bool
    detail: str = ""
    value: float | None = None
    unit: str = ""


def pair(src: str, dst: str) -> str:
    return f"{src}>{dst}"


def matrix(records: Sequence[CheckRecord], labels: dict[str, str]) -> list[str]:
    """Rows "from \\ to" of ok/FAIL cells; `labels` shortens node names (e.g. region/n)."""
    names = sorted({n for r in records for n in r.name.split(">")}, key=lambda n: labels.get(n, n))
    ok = {r.name: r.ok for r in records}
    short = [labels.get(n, n) for n in names]
    width = max([len(s) for s in short] + [4])
    lines = [" " * width + "  " + " ".join(s.rjust(width) for s in short)]
    for src, label in zip(names, short, strict=True):
        cells = []
        for dst in names:
            value = ok.get(pair(src, dst))
            cells.append(
                ("." if src == dst else "-") if value is None else "ok" if value else "FAIL"
            )
        lines.append(label.rjust(width) + "  " + " ".join(c.rjust(width) for c in cells))
    return lines


def render_summary(records: Sequence[CheckRecord], labels: dict[str, str] | None = None) -> str:
    """The demo's one readable summary: every section, then the verdict."""
    labels = labels or {}
    out = []
    for title in SECTIONS:
        mine = [r for r in records if r.section == title]
        passed = sum(r.ok for r in mine)
        verdict = "not run" if not mine else f"{passed}/{len(mine)} ok"
        out.append(f"== {title} ({verdict})")
        if title in (PODS, MEMBERS) and mine:
            out += ["  " + line for line in matrix(mine, labels)]
            bad = [r for r in mine if not r.ok]
            out += [f"  FAIL {r.name.replace('>', ' -> ')}: {r.detail}" for r in bad[:MAX_LISTED]]
            if len(bad) > MAX_LISTED:
                out.append(f"  ... and {len(bad) - MAX_LISTED} more failed pairs")
        else:
            out += [f"  {'ok  ' if r.ok else 'FAIL'} {r.name}: {r.detail}" for r in mine]
        out.append("")
    failed = [r for r in records if not r.ok]
    missing = [t for t in SECTIONS if not any(r.section == t for r in records)]
    if failed or missing:
        out.append(
            f"RESULT: FAIL ({len(failed)} failed checks, sections not run: "
            f"{', '.join(missing) or 'none'})"
        )
    else:
        out.append(f"RESULT: PASS ({len(records)} checks)")
    return "\n".join(out)


def all_passed(records: Sequence[CheckRecord]) -> bool:
    return (
        bool(records)
        and all(r.ok for r in records)
        and all(any(r.section == t for r in records) for t in SECTIONS)
    )


_REPLY = re.compile(r"^\[(\d+\.\d+)\].*icmp_seq=(\d+).*time=([0-9.]+) ms")


@dataclass(frozen=True)
class Reply:
    at: float
    """Unix time the reply was printed (ping -D)."""
    seq: int
    rtt_ms: float

    @property
    def sent(self) -> float:
        return self.at - self.rtt_ms / 1000


def parse_ping(lines: Iterable[str]) -> list[Reply]:
    """Replies from `ping -D -O` output ("no answer yet" lines are skipped)."""
    out = []
    for line in lines:
        m = _REPLY.match(line.strip())
        if m:
            out.append(Reply(float(m.group(1)), int(m.group(2)), float(m.group(3))))
    return out


def recovery_seconds(replies: Sequence[Reply], cut_at: float) -> float | None:
    """Time from the cut until traffic flows again: the first reply to a probe sent after the
    cut, minus the cut time; None when nothing came back."""
    after = [r for r in replies if r.sent >= cut_at]
    return None if not after else min(r.at for r in after) - cut_at


def longest_gap(replies: Sequence[Reply], since: float) -> float:
    """Longest interval without replies after `since` (the outage a user would notice)."""
    times = [since, *sorted(r.at for r in replies if r.at >= since)]
    return max((b - a for a, b in itertools.pairwise(times)), default=0.0)
