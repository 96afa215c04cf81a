"""Teardown stops the agents before the API server, as a real cluster's nodes would shut down
while its control plane is still up (their last heartbeats and lease releases reach it)."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

from ravend.sim.netns import teardown
from ravend.sim.netns_state import ProcRecord, RunState, is_running, spawn

# Writes the monotonic time of its SIGTERM to argv[1], lingers a little (as an agent's ordered
# shutdown does), then exits.
ON_TERM = """
import signal, sys, time
def term(*_):
    with open(sys.argv[1], "w") as f:
        f.write(repr(time.monotonic()))
    time.sleep(0.3)
    sys.exit(0)
signal.signal(signal.SIGTERM, term)
open(sys.argv[1] + ".ready", "w").close()
while True:
    time.sleep(1)
"""


def _start(name: str, tmp: Path) -> ProcRecord:
    mark = tmp / name.replace(":", "-")
    argv = [sys.executable, "-c", ON_TERM, str(mark)]
    pid, start = spawn(argv, tmp / f"{mark.name}.log")
    deadline = time.monotonic() + 10
    while not Path(f"{mark}.ready").exists():
        assert time.monotonic() < deadline, f"{name} did not start"
        time.sleep(0.01)
    return ProcRecord(name, pid, start, "", argv, str(tmp / f"{mark.name}.log"))


async def test_processes_named_last_are_stopped_after_the_others(tmp_path: Path) -> None:
    state = RunState(run_dir=str(tmp_path), prefix="rvtest")
    recs = [_start(name, tmp_path) for name in ("apiserver", "agent:a", "agent:b")]
    try:
        state.procs = {r.name: r for r in recs}
        await teardown(state, last=("apiserver",))
        assert not any(is_running(r) for r in recs)
        termed = {r.name: float((tmp_path / r.name.replace(":", "-")).read_text()) for r in recs}
        # The API server got its SIGTERM only once both agents had exited (each lingers 0.3 s).
        assert termed["apiserver"] >= max(termed["agent:a"], termed["agent:b"]) + 0.25
    finally:
        for r in recs:
            if is_running(r):
                os.kill(r.pid, signal.SIGKILL)
