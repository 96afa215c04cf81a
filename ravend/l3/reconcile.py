"""One convergence step of the L3 plane: snapshot -> diff -> apply -> read-back (I/O through
the `Kernel` protocol), and `SnapshotCache`, the pure rule for when a pass may diff against the
kernel state the previous pass verified instead of reading it again.

Reading a hub's kernel (4,000 routes, links, rules, FDB, neighbours, nft, sysctls, 200
WireGuard peers) costs ~60-70 ms, more than the rest of a gateway-switch pass together
(bench/l3_plan.py). Most passes are woken by a cluster view change while the kernel has not
moved at all, so the snapshot the previous pass verified is reused when, and only when:

- the netlink event watch is subscribed and has reported no change to ravend's links,
  addresses, neighbours, FDB entries, routes or rules since that snapshot was read
  (`ravend.l3.netlink.watch_owned`), and wireguard-go has not exited;
- the previous pass was clean: no failed op, nothing left to do, no exception;
- the last full read is younger than the resync period, and this is not the periodic resync;
- the plan asks for the same sysctl paths (the snapshot only holds those it was asked for).

WireGuard peers, the nft table and sysctls announce no change, so drift there (someone running
`wg set` or `nft flush`) is repaired by the periodic resync, which always reads everything.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from ravend.l3.diff import diff
from ravend.l3.kernel import OpFailure
from ravend.l3.metrics import OPS_APPLIED, OPS_FAILED
from ravend.l3.ops import Op
from ravend.l3.settings import L3Settings
from ravend.l3.state import KernelSnapshot, L3State
from ravend.observe.metrics import ERRORS

log = logging.getLogger(__name__)


class Kernel(Protocol):
    """What the loop needs from a kernel adapter (LinuxKernel; an in-memory one in tests)."""

    async def snapshot(self, desired: L3State) -> KernelSnapshot: ...
    async def apply(self, ops: Sequence[Op]) -> list[OpFailure]: ...
    async def readback(
        self, desired: L3State, before: KernelSnapshot, ops: Sequence[Op]
    ) -> KernelSnapshot:
        """The kernel after `ops` were applied to `before` (may re-read only what they wrote)."""
        ...


def _sysctl_paths(desired: L3State) -> frozenset[str]:
    return frozenset(x.path for x in desired.sysctls)


class SnapshotCache:
    """The last verified kernel snapshot and whether it may stand in for a fresh read (pure).

    The caller bumps `generation` (`changed()`) on every sign that the kernel may have moved:
    a netlink event, a wireguard-go exit, the event watch starting or stopping. A pass takes
    `token()` *before* reading anything, so a change that happens while it runs, even one
    whose event is delivered only after the pass ends, makes the next pass read afresh.
    """

    def __init__(self, max_age_s: float) -> None:
        self.max_age_s = max_age_s
        """Reuse window after a full read (the resync period: nothing is trusted for longer)."""
        self.generation = 0
        self.watching = False
        """True while kernel change events are being received (nothing is reused otherwise)."""
        self.hits = 0
        """Passes that diffed against the cached snapshot (for tests, the bench, /debug)."""
        self._snap: KernelSnapshot | None = None
        self._token = -1
        self._read_at = 0.0
        self._paths: frozenset[str] = frozenset()

    def changed(self) -> None:
        """The kernel may have changed: the next pass reads it."""
        self.generation += 1

    def watch_started(self) -> None:
        self.watching = True
        self.changed()  # changes made before the subscription were never announced

    def watch_stopped(self) -> None:
        self.watching = False
        self.changed()

    def token(self) -> int:
        return self.generation

    def lookup(self, desired: L3State, now: float) -> KernelSnapshot | None:
        """The verified snapshot if it still describes the kernel, else None (read it)."""
        if (
            self._snap is None
            or not self.watching
            or self._token != self.generation
            or now - self._read_at >= self.max_age_s
            or _sysctl_paths(desired) != self._paths
        ):
            return None
        self.hits += 1
        return self._snap

    def store(
        self, snap: KernelSnapshot, desired: L3State, token: int, read_at: float | None
    ) -> None:
        """Keep `snap`, the kernel as a clean pass left it. `token` is from before the pass read
        anything; `read_at` is when it read everything (None: it reused the cached snapshot,
        whose age keeps counting from the earlier full read)."""
        self._snap, self._token, self._paths = snap, token, _sysctl_paths(desired)
        if read_at is not None:
            self._read_at = read_at

    def drop(self) -> None:
        self._snap = None


@dataclass(frozen=True)
class Converged:
    """What one convergence step did and found."""

    actual: KernelSnapshot
    """The kernel after the step (read back, or the verified snapshot plus what was re-read)."""
    ops: tuple[Op, ...]
    failures: tuple[OpFailure, ...]
    remaining: tuple[Op, ...]
    """Ops a diff against the read-back kernel still finds (something did not take)."""
    cached: bool
    """The step diffed against the cached snapshot instead of reading the kernel."""

    @property
    def clean(self) -> bool:
        return not self.failures and not self.remaining


class Reconciler:
    """Converges a kernel on a desired `L3State`, reading it only when it may have moved."""

    def __init__(
        self,
        kernel: Kernel,
        settings: L3Settings,
        *,
        snaps: SnapshotCache | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.kernel = kernel
        self.s = settings
        self.snaps = snaps or SnapshotCache(settings.resync_period_s)
        self._clock = clock

    async def converge(self, desired: L3State, *, resync: bool = False) -> Converged:
        """Diff `desired` against the kernel and apply; `resync` forces a full read."""
        token, now = self.snaps.token(), self._clock()
        before = None if resync else self.snaps.lookup(desired, now)
        # Nothing is trusted while this step runs: an exception (a failed read or apply)
        # leaves no snapshot behind, so the retry reads the kernel.
        self.snaps.drop()
        cached = before is not None
        if before is None:
            before = await self.kernel.snapshot(desired)
        ops = diff(desired, before, self.s)
        actual, failures, remaining = before, list[OpFailure](), list[Op]()
        if ops:
            log.info("L3 applying %d ops (%s)", len(ops), _summary(ops))
            failures = await self.kernel.apply(ops)
            _count(ops, failures)
            actual = await self.kernel.readback(desired, before, ops)
            remaining = diff(desired, actual, self.s)
        out = Converged(actual, tuple(ops), tuple(failures), tuple(remaining), cached)
        if out.clean:
            self.snaps.store(actual, desired, token, None if cached else now)
        return out


def _count(ops: Sequence[Op], failures: Sequence[OpFailure]) -> None:
    for op in ops:
        OPS_APPLIED.labels(op=type(op).__name__).inc()
    for f in failures:
        OPS_FAILED.labels(op=type(f.op).__name__).inc()
        ERRORS.labels(subsystem="l3", kind="op").inc()  # LinuxKernel logs each one


def _summary(ops: Sequence[Op]) -> str:
    kinds: dict[str, int] = {}
    for op in ops:
        kinds[type(op).__name__] = kinds.get(type(op).__name__, 0) + 1
    return ", ".join(f"{k}={v}" for k, v in sorted(kinds.items()))


__all__ = ["Converged", "Kernel", "Reconciler", "SnapshotCache"]
