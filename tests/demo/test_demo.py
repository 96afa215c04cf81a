"""`ravend sim demo --once` end to end: exit 0 and every summary section (netns, slow).

Fails until the planes are wired into the agent: that failure is the signal the product does
not work yet. Runs the real command in a subprocess with its own run directory, and always
removes that cluster afterwards, whatever happened.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
from pathlib import Path

import pytest

from ravend.sim import demo_report as rep
from ravend.sim.cluster import down_run_dir

pytestmark = [
    pytest.mark.netns,
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0 or shutil.which("ip") is None, reason="needs root and ip"),
    pytest.mark.timeout(600),
]


async def test_demo_once_passes_and_prints_every_section(tmp_path: Path) -> None:
    run_dir = tmp_path / "sim"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "ravend", "sim", "demo", "--once", "--run-dir", str(run_dir),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), 540)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await down_run_dir(run_dir)
    text = out.decode(errors="replace")
    print(text)
    for title in rep.SECTIONS:
        assert f"== {title}" in text
    assert "tearing down" in text
    assert not (run_dir / "state.json").exists()
    assert "RESULT: PASS" in text
    assert proc.returncode == 0
