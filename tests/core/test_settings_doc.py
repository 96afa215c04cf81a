"""docs/settings.md says what the code does: its tables are generated from the dataclasses."""

from pathlib import Path

import pytest

from ravend.ctl.settings_doc import MARKER, ROOT, render, splice


def test_settings_page_matches_the_code() -> None:
    page = (ROOT / "docs" / "settings.md").read_text()
    assert splice(page, render()) == page, (
        "docs/settings.md is stale: run `python -m ravend.ctl.settings_doc --write`"
    )


def test_every_field_is_rendered_with_its_default_and_docstring() -> None:
    text = render()
    assert "| `watch_silence_s` | `75.0` | Watchdog (seconds):" in text
    assert "| `kube` | `KubeSettings()` |" in text  # default_factory shown as a call
    assert "| `node_name` | `required` |" in text
    assert "### `L3Settings` (`ravend/l3/settings.py`)" in text


def test_splice_needs_the_marker(tmp_path: Path) -> None:
    assert splice("intro\n" + MARKER + "old", MARKER + "new") == "intro\n" + MARKER + "new"
    with pytest.raises(ValueError, match="marker"):
        splice("no marker here", MARKER)
