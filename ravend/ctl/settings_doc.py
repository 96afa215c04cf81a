"""Render the settings tables of docs/settings.md from the settings dataclasses (reads files).

Every settings group is a frozen dataclass whose fields carry a docstring (house style); this
module reads them from the source with `ast` (no import, so defaults are shown as written, e.g.
`DEFAULT_OBSERVE_PORT`) and renders one table per group. `tests/core/test_settings_doc.py` fails
when the page and the code disagree; `python -m ravend.ctl.settings_doc --write` rewrites the
generated part of the page (everything after the marker heading).
"""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SOURCES = (
    "ravend/settings.py",
    "ravend/l3/settings.py",
    "ravend/l7proxy/settings.py",
    "ravend/election/settings.py",
    "ravend/certs/settings.py",
    "ravend/kube/settings.py",
)
MARKER = "## Subsystem settings (defaults)\n"
INTRO = (
    "\nThese groups are built by the composition root with the defaults below; fields not listed"
    " as\nflags above are not yet exposed on the command line. Generated from the code by\n"
    "`python -m ravend.ctl.settings_doc --write` (a test fails when this page is stale).\n"
)


def _is_dataclass(node: ast.ClassDef) -> bool:
    for deco in node.decorator_list:
        target = deco.func if isinstance(deco, ast.Call) else deco
        if isinstance(target, ast.Name) and target.id == "dataclass":
            return True
    return False


def _default(value: ast.expr | None) -> str:
    """The default as written; `field(default_factory=X)` reads as `X()`."""
    if value is None:
        return "required"
    if isinstance(value, ast.Call) and getattr(value.func, "id", "") == "field":
        for kw in value.keywords:
            if kw.arg == "default_factory" and isinstance(kw.value, ast.Lambda):
                return ast.unparse(kw.value.body)
            if kw.arg == "default_factory":
                return f"{ast.unparse(kw.value)}()"
            if kw.arg == "default":
                return ast.unparse(kw.value)
    return ast.unparse(value)


def _doc(body: list[ast.stmt], index: int) -> str:
    """The string literal right after the field at `index`, on one line (pipes escaped)."""
    if index + 1 < len(body):
        nxt = body[index + 1]
        if isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant):
            text = str(nxt.value.value)
            return " ".join(text.split()).replace("|", "\\|")
    return ""


def _table(node: ast.ClassDef) -> list[str]:
    rows = ["| field | default | meaning |", "|---|---|---|"]
    for i, stmt in enumerate(node.body):
        if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name):
            name = stmt.target.id
            rows.append(f"| `{name}` | `{_default(stmt.value)}` | {_doc(node.body, i)} |")
    return rows


def render(root: Path = ROOT) -> str:
    """The generated part of docs/settings.md: the marker heading, intro, one table per group."""
    out = [MARKER + INTRO]
    for rel in SOURCES:
        tree = ast.parse((root / rel).read_text())
        for node in tree.body:
            if isinstance(node, ast.ClassDef) and _is_dataclass(node):
                out.append(f"\n### `{node.name}` (`{rel}`)\n\n")
                out.append("\n".join(_table(node)) + "\n")
    return "".join(out)


def splice(page: str, generated: str) -> str:
    """`page` with everything from the marker heading on replaced by `generated`."""
    head, sep, _ = page.partition(MARKER)
    if not sep:
        raise ValueError(f"marker {MARKER.strip()!r} not found in the page")
    return head + generated


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--write", action="store_true", help="rewrite docs/settings.md in place")
    args = p.parse_args(argv)
    page_path = ROOT / "docs" / "settings.md"
    page = splice(page_path.read_text(), render())
    if args.write:
        page_path.write_text(page)
    else:
        sys.stdout.write(page)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
