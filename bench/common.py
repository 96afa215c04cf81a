"""The benchmark contract and its helpers (pure, except `emit` which prints).

A benchmark is a module `bench/<name>.py` with `def main()` or `async def main()`. The
preferred form returns a list of records:

    {"bench": str, "metric": str, "value": float, "unit": str,
     "baseline"?: float,   # the same metric for the reference path, measured in the same run
     "ratio"?: float,      # value / baseline
     "goal"?: str}         # e.g. "< 2 s", from the issue that asked for the figure

and may print whatever it likes. Older modules print one JSON object per line with a "bench"
key and free-form numeric fields; `adapt` turns those into records (one per numeric field), so
`python -m bench` can show every figure in one table without editing them.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

Record = dict[str, Any]

LABEL_KEYS = ("case", "path", "name", "mode", "loop", "scenario", "concurrency", "conc")
"""Non-numeric fields that name what a legacy line measured (joined into the metric name)."""
SKIP_KEYS = frozenset({"bench", "trial", "trials", "gateways", "nodes", "requests", "count", "n"})
"""Parameters of a case, not figures."""

UNITS: tuple[tuple[str, str], ...] = (
    ("_mb_s", "MB/s"),
    ("mb_s", "MB/s"),
    ("_mbit_s", "Mbit/s"),
    ("_gbit_s", "Gbit/s"),
    ("_req_s", "req/s"),
    ("rps", "req/s"),
    ("_ms", "ms"),
    ("_us", "µs"),
    ("_s", "s"),
    ("_bytes", "B"),
    ("_kb", "KiB"),
    ("_pct", "%"),
    ("_ratio", "x"),
)
"""Key suffix -> unit, first match wins (so "_mb_s" is MB/s, not seconds)."""

GOALS: Mapping[tuple[str, str], str] = {
    ("election_failover", "failover_s"): "< 2 s (Raven: >= 45-60 s)",
    ("election_pickup", "median_s"): "< 1 s per pass",
    ("l3_failover", "recovery_s"): "< 2 s",
    ("l7_tunnel", "p99_ms"): "<= 2x direct",
}
"""(bench, numeric key) -> goal text, for legacy lines that do not carry their goal."""


def unit_of(key: str) -> str:
    for suffix, unit in UNITS:
        if key.endswith(suffix) or key == suffix.lstrip("_"):
            return unit
    return ""


def is_record(obj: Mapping[str, Any]) -> bool:
    return "bench" in obj and "metric" in obj and "value" in obj


def adapt(line: Mapping[str, Any]) -> list[Record]:
    """Records from one JSON line: contract records pass through, legacy lines are split."""
    if is_record(line):
        return [dict(line)]
    bench = str(line.get("bench", "?"))
    label = " ".join(str(line[k]) for k in LABEL_KEYS if k in line and line[k] not in ("", None))
    out: list[Record] = []
    for key, value in line.items():
        if key in SKIP_KEYS or key in LABEL_KEYS or isinstance(value, bool):
            continue
        if not isinstance(value, int | float):
            continue
        rec: Record = {
            "bench": bench,
            "metric": f"{label} {key}".strip(),
            "value": float(value),
            "unit": unit_of(key),
        }
        goal = GOALS.get((bench, key))
        if goal:
            rec["goal"] = goal
        out.append(rec)
    return out


def parse_output(text: str) -> list[Record]:
    """Every record in a benchmark's stdout (JSON object lines with a "bench" key)."""
    records: list[Record] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line.startswith("{"):
            continue
        try:
            obj = json.loads(line)
        except ValueError:
            continue
        if isinstance(obj, dict) and "bench" in obj:
            records += adapt(obj)
    return records


def with_ratio(rec: Record) -> Record:
    base = rec.get("baseline")
    if "ratio" not in rec and isinstance(base, int | float) and base:
        rec = {**rec, "ratio": float(rec["value"]) / float(base)}
    return rec


def fmt(value: object) -> str:
    if value is None or value == "":
        return "-"
    if isinstance(value, float):
        if value == 0 or 0.01 <= abs(value) < 100000:
            return f"{value:.3g}" if abs(value) < 100 else f"{value:.0f}"
        return f"{value:.3e}"
    return str(value)


def table(records: Sequence[Record]) -> str:
    """One table: ravend's figure next to its baseline, ratio and goal."""
    heads = ["BENCH", "METRIC", "VALUE", "UNIT", "BASELINE", "RATIO", "GOAL"]
    rows = [
        [
            str(r.get("bench")),
            str(r.get("metric")),
            fmt(r.get("value")),
            str(r.get("unit", "")),
            fmt(r.get("baseline")),
            fmt(r.get("ratio")),
            str(r.get("goal", "")) or "-",
        ]
        for r in (with_ratio(x) for x in records)
    ]
    widths = [max([len(h)] + [len(row[i]) for row in rows]) for i, h in enumerate(heads)]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
        for row in [heads, *rows]
    ]
    return "\n".join(lines)


def emit(records: Iterable[Record]) -> None:
    """Print records as JSON lines (what a contract benchmark's child process outputs)."""
    for rec in records:
        print(json.dumps(rec), flush=True)
