"""Find and stop wireguard-go processes by interface name and network namespace (I/O: /proc).

Why this exists: wireguard-go removes its UAPI socket *by path* when it exits (Go's
`UnixListener.SetUnlinkOnClose`), and it exits when its socket path is removed (inotify). So an
instance that is still shutting down when a new one of the same name starts deletes the new
one's socket, and the new one exits too: a ravend that deleted an adopted instance's link and
started a new instance at once lost the tunnel (the flaky L3 toggle and failover e2e tests).
Before starting an instance, and when deleting one, ravend therefore finds every process serving
that name in the target namespace and waits for it to be gone (SIGTERM, then SIGKILL).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from pathlib import Path

STOP_TIMEOUT_S = 3.0
"""How long a wireguard-go gets to exit after SIGTERM before it is killed."""


def _netns_id(netns: str | None) -> tuple[int, int] | None:
    path = f"/run/netns/{netns}" if netns else "/proc/self/ns/net"
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _matches(pid: int, name: str, binary: str, want: tuple[int, int]) -> bool:
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        st = os.stat(f"/proc/{pid}/ns/net")
    except OSError:
        return False  # gone, or not ours to read
    args = [a.decode(errors="replace") for a in argv if a]
    if len(args) < 2 or args[-1] != name:
        return False
    if Path(args[0]).name != Path(binary).name:
        return False
    return (st.st_dev, st.st_ino) == want and alive(pid)


def instances(name: str, netns: str | None, binary: str = "wireguard-go") -> list[int]:
    """PIDs of live `wireguard-go ... <name>` processes in `netns` (None: ours)."""
    want = _netns_id(netns)
    if want is None:
        return []
    pids = (int(p) for p in os.listdir("/proc") if p.isdigit())
    return sorted(p for p in pids if p != os.getpid() and _matches(p, name, binary, want))


def alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie does not: it has exited, only its parent has not reaped it)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] not in ("Z", "X")


async def stop(pids: list[int], timeout_s: float = STOP_TIMEOUT_S) -> None:
    """SIGTERM `pids`, wait up to `timeout_s` for them to exit, SIGKILL the rest, wait again.

    SIGTERM first because wireguard-go then removes its own TUN link and socket; a SIGKILLed
    one leaves a stale socket file that the next instance replaces (it tests and removes it)."""
    for sig, wait in ((signal.SIGTERM, timeout_s), (signal.SIGKILL, 2.0)):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + wait
        while (pids := [p for p in pids if alive(p)]) and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        if not pids:
            return
    raise RuntimeError(f"wireguard-go {pids} survived SIGKILL")


__all__ = ["STOP_TIMEOUT_S", "alive", "instances", "stop"]
