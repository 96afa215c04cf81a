"""kubectl-style tables and JSON for ravectl (pure: values in, text out).

Tables have upper-case headers, columns separated by three spaces and no borders, like
`kubectl get`; a None or empty cell prints as "-" so a missing value is visible, never blank.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import asdict, is_dataclass
from typing import Any

from ravend.ctl.statekeys import MISSING

Cell = object


def cell(value: Cell) -> str:
    """One table cell: "-" for None/empty, floats without noise, lists comma-joined."""
    if value is None or value in ("", []):
        return MISSING
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.1f}" if abs(value) >= 10 else f"{value:.2f}"
    if isinstance(value, list | tuple):
        return ",".join(cell(v) for v in value) or MISSING
    return str(value)


def table(headers: Sequence[str], rows: Iterable[Sequence[Cell]]) -> str:
    """Render rows under upper-case headers, columns padded to the widest cell."""
    text_rows = [[cell(v) for v in row] for row in rows]
    heads = [h.upper() for h in headers]
    widths = [len(h) for h in heads]
    for row in text_rows:
        for i, value in enumerate(row):
            widths[i] = max(widths[i], len(value))
    lines = []
    for row in [heads, *text_rows]:
        padded = [value.ljust(widths[i]) for i, value in enumerate(row)]
        lines.append("   ".join(padded).rstrip())
    return "\n".join(lines)


def section(title: str, body: str) -> str:
    """A titled block; an empty body says so instead of printing a bare header."""
    return f"{title}\n{body if body.strip() else '  (none)'}\n"


def to_jsonable(value: Any) -> Any:
    """Dataclasses (nested) to dicts, tuples to lists: what `-o json` prints."""
    if is_dataclass(value) and not isinstance(value, type):
        return to_jsonable(asdict(value))
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_jsonable(v) for v in value]
    return value


def dumps(value: Any) -> str:
    return json.dumps(to_jsonable(value), indent=2, sort_keys=True, default=str)
