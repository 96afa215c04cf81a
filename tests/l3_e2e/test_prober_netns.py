"""The prober over a real link: RTT and up while the path works, loss and down when cut."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
from collections.abc import Callable

import pytest

from ravend.l3.probe import ProbeSettings, ProbeTarget
from ravend.l3.probe_io import Prober

pytestmark = pytest.mark.netns


async def _run(*argv: str) -> str:
    proc = await asyncio.create_subprocess_exec(*argv, stdout=subprocess.PIPE)
    out, _ = await proc.communicate()
    assert proc.returncode == 0, argv
    return out.decode()


async def test_two_probers_measure_and_detect_a_cut(
    netns_pair: Callable[[], tuple[str, str]],
) -> None:
    a, b = netns_pair()
    s = ProbeSettings(timeout_s=0.3, window=10, down_after_s=0.5)
    pa = Prober("10.99.0.1", 0.05, s, netns=a)
    pb = Prober("10.99.0.2", 0.05, s, netns=b)
    pa.targets.publish(("gw-a", (ProbeTarget("gw-b", "nb", "10.99.0.2", "kb"),)))
    pb.targets.publish(("gw-b", (ProbeTarget("gw-a", "na", "10.99.0.1", "ka"),)))
    tasks = [asyncio.create_task(p.run()) for p in (pa, pb)]
    try:
        await asyncio.sleep(0.3)  # both sockets bound (the very first probe may find none)
        before = pa.health.value["gw-b"]
        await asyncio.sleep(0.5)
        h = pa.health.value["gw-b"]
        assert h.up and h.rtt_s is not None and 0 < h.rtt_s < 0.05
        assert h.target == "10.99.0.2" and h.sent - before.sent >= 5
        assert h.received - before.received >= h.sent - before.sent - 1  # one may be in flight
        await _run("ip", "-n", b, "link", "set", "vb", "down")
        await asyncio.sleep(1.2)
        h = pa.health.value["gw-b"]
        assert not h.up and h.loss > 0.5
        # no targets: the socket is closed (a member has no open port)
        pb.targets.publish(("", ()))
        await asyncio.sleep(0.1)
        out = await _run("ip", "netns", "exec", b, "ss", "-uln")
        assert ":10267" not in out
    finally:
        for t in tasks:
            t.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await t
