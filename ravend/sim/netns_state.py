"""Run-state file of a simulated cluster and process bookkeeping (I/O: files, /proc, signals).

Everything `up` creates is written to `<run-dir>/state.json` *before* it is created, so `down`
can clean up after a crash of the process that built it: kill recorded processes (checked by
start time, so a recycled PID is never killed), then delete the recorded namespaces.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

STATE_FILE = "state.json"


@dataclass
class ProcRecord:
    """A background process started inside a namespace."""

    name: str
    """Role name, e.g. "apiserver" or "agent:<node>"."""
    pid: int
    start_time: int
    """Field 22 of /proc/<pid>/stat (clock ticks since boot): tells a recycled PID apart."""
    netns: str
    argv: list[str]
    log: str
    """Path of the file receiving stdout and stderr."""


@dataclass
class RunState:
    """Mutable record of one simulated cluster run, persisted after every change."""

    run_dir: str
    prefix: str
    namespaces: list[str] = field(default_factory=list)
    root_links: list[str] = field(default_factory=list)
    procs: dict[str, ProcRecord] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
    """Free-form data for `status` (topology summary, URLs, kubeconfig paths)."""

    @property
    def path(self) -> Path:
        return Path(self.run_dir) / STATE_FILE

    def save(self) -> None:
        """Write atomically (rename), so a crash never leaves a half-written file."""
        Path(self.run_dir).mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2, sort_keys=True))
        tmp.replace(self.path)

    @classmethod
    def load(cls, run_dir: str | Path) -> RunState:
        data = json.loads((Path(run_dir) / STATE_FILE).read_text())
        procs = {k: ProcRecord(**v) for k, v in data.pop("procs", {}).items()}
        return cls(procs=procs, **data)


def proc_start_time(pid: int) -> int | None:
    """Start time of a live (non-zombie) process, or None if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # the command name (field 2) may contain spaces: split after its closing parenthesis
    fields = stat.rsplit(")", 1)[1].split()
    if fields[0] in ("Z", "X"):
        return None
    return int(fields[19])


def is_running(rec: ProcRecord) -> bool:
    return proc_start_time(rec.pid) == rec.start_time


def reap(pid: int) -> None:
    """Collect the exit status if `pid` is our child (no zombie left behind)."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def spawn(argv: list[str], log: Path, env: dict[str, str] | None = None) -> tuple[int, int]:
    """Start a detached process (own session, stdout+stderr to `log`); returns (pid, start)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    actions = [
        (os.POSIX_SPAWN_OPEN, 0, "/dev/null", os.O_RDONLY, 0),
        (os.POSIX_SPAWN_OPEN, 1, str(log), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644),
        (os.POSIX_SPAWN_DUP2, 1, 2),
    ]
    # own session: survives the `ravend sim up` process and can be killed as a group
    pid = os.posix_spawnp(
        argv[0],
        argv,
        env if env is not None else dict(os.environ),
        file_actions=actions,
        setsid=True,
    )
    start = proc_start_time(pid)
    return pid, start if start is not None else -1


def signal_group(pid: int, sig: signal.Signals) -> None:
    """Signal the process group led by `pid` (our processes lead their own), else the pid."""
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


async def stop_processes(recs: list[ProcRecord], grace: float = 3.0) -> None:
    """SIGTERM every live recorded process group, wait up to `grace` s, then SIGKILL."""
    live = [r for r in recs if is_running(r)]
    for r in live:
        signal_group(r.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while live and time.monotonic() < deadline:
        for r in live:
            reap(r.pid)
        live = [r for r in live if is_running(r)]
        if live:
            await asyncio.sleep(0.05)
    for r in live:
        signal_group(r.pid, signal.SIGKILL)
    for r in recs:
        reap(r.pid)


async def kill_pids(pids: list[int]) -> None:
    """SIGKILL stray processes found inside our namespaces (children of agents, leftovers)."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 2.0
    while time.monotonic() < deadline:
        for pid in pids:
            reap(pid)
        if all(proc_start_time(p) is None for p in pids):
            return
        await asyncio.sleep(0.02)
