"""wireguard-go lifecycle races with real processes in a throwaway namespace.

wireguard-go removes its UAPI socket by path when it exits and exits when its socket path goes
away, so two instances of one name overlapping for even a moment take each other down. These
tests pin the interleavings with SIGSTOP/SIGCONT instead of hoping for an unlucky schedule.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from ravend.l3 import wgproc
from ravend.l3.settings import L3Settings
from ravend.l3.wireguard import UserspaceWireGuard

pytestmark = pytest.mark.netns


@pytest.fixture
async def backends(
    netns: Callable[[], str], ifname: Callable[[], str], tmp_path: Path
) -> AsyncIterator[tuple[L3Settings, str, list[UserspaceWireGuard]]]:
    """Settings with a unique link name, a namespace, and a list the test adds backends to;
    every wireguard-go of that name is killed by PID before the namespace goes."""
    name, ns = ifname(), netns()
    made: list[UserspaceWireGuard] = []
    try:
        yield L3Settings(wireguard_link=name, state_dir=str(tmp_path)), ns, made
    finally:
        for pid in wgproc.instances(name, ns):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
        await wgproc.stop(wgproc.instances(name, ns), 0.5)
        for wg in made:
            for proc in wg.procs.values():
                await proc.wait()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(f"/var/run/wireguard/{name}.sock")


async def freeze(pid: int) -> None:
    """SIGSTOP `pid` and wait until every thread has stopped (the group stop is asynchronous:
    a Go thread may still answer a request for a moment after kill() returns)."""
    os.kill(pid, signal.SIGSTOP)

    def states() -> set[str]:
        tasks = Path(f"/proc/{pid}/task")
        return {(t / "stat").read_text().rsplit(")", 1)[-1].split()[0] for t in tasks.iterdir()}

    async with asyncio.timeout(2):
        while states() != {"T"}:
            await asyncio.sleep(0.005)


def backend(s: L3Settings, ns: str, made: list[UserspaceWireGuard]) -> UserspaceWireGuard:
    wg = UserspaceWireGuard(s, ns)
    wg.stop_timeout_s, wg.uapi_timeout_s = 0.5, 0.5
    made.append(wg)
    return wg


async def test_delete_then_create_survives_an_adopted_instance_that_exits_late(
    backends: tuple[L3Settings, str, list[UserspaceWireGuard]],
) -> None:
    s, ns, made = backends
    name = s.wireguard_link
    first = backend(s, ns, made)
    await first.ensure(name)
    (old,) = first.procs.values()
    await first.close()  # ravend restarts; the next one adopts the running instance
    # Hold the old instance mid-shutdown: its exit (and socket unlink) comes after the new start.
    await freeze(old.pid)
    second = backend(s, ns, made)
    await second.delete(name)  # L3 toggled off
    await second.ensure(name)  # ... and on again
    with contextlib.suppress(ProcessLookupError):
        os.kill(old.pid, signal.SIGCONT)
    await asyncio.sleep(1.0)  # time for a late exit to remove the new socket
    assert not wgproc.alive(old.pid)
    (new,) = second.procs.values()
    assert new.returncode is None, "the new wireguard-go died with the old one"
    assert await second.state(name) is not None, "the new instance lost its UAPI socket"
    assert wgproc.instances(name, ns) == [new.pid]


async def test_a_slow_instance_is_reported_not_replaced(
    backends: tuple[L3Settings, str, list[UserspaceWireGuard]],
) -> None:
    s, ns, made = backends
    name = s.wireguard_link
    wg = backend(s, ns, made)
    await wg.ensure(name)
    (proc,) = wg.procs.values()
    await freeze(proc.pid)  # alive, but its UAPI does not answer in time
    try:
        with pytest.raises(TimeoutError):
            await wg.ensure(name)
    finally:
        os.kill(proc.pid, signal.SIGCONT)
    assert wg.starts == 1
    assert await wg.state(name) is not None, "the running instance was taken down"
    assert wgproc.instances(name, ns) == [proc.pid]


async def test_delete_leaves_no_process_link_or_socket(
    backends: tuple[L3Settings, str, list[UserspaceWireGuard]],
) -> None:
    s, ns, made = backends
    name = s.wireguard_link
    first = backend(s, ns, made)
    await first.ensure(name)
    await first.close()
    second = backend(s, ns, made)
    await second.delete(name)
    assert wgproc.instances(name, ns) == []
    assert f"{name}.sock" not in os.listdir("/var/run/wireguard")
    proc = await asyncio.create_subprocess_exec(
        "ip", "-n", ns, "link", "show", name, stderr=asyncio.subprocess.DEVNULL
    )
    assert await proc.wait() != 0, "the TUN link is still there"
