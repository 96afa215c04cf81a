"""The L3 plane's reconcile loop: view -> plan -> kernel snapshot -> diff -> apply (I/O).

`L3Agent.run()` is the plane's entry point (a role task of the composition root). It loads the
persisted WireGuard key, picks the WireGuard backend, publishes the public key into this node's
tunnel endpoints, then reconciles whenever one of these happens:

- the informers publish a newer *synced* view (an unsynced view plans to "nothing" and would
  tear every tunnel down, so it is never planned from);
- the kernel reports a change to ravend's links, addresses, neighbours, FDB entries, routes or
  rules (netlink multicast groups, `ravend.l3.netlink.watch_owned`): a deleted route comes
  back within one pass;
- wireguard-go exits (it is restarted by the next pass, with backoff);
- the periodic resync (`L3Settings.resync_period_s`) repairs anything else, e.g. sysctls, the
  nft table or WireGuard peers, which send no netlink events; after a failed pass it retries
  sooner (backoff).

A pass woken by a view change diffs against the snapshot the previous clean pass verified when
no kernel change was announced since (`ravend.l3.reconcile.SnapshotCache` has the exact rule);
the periodic resync, an event, a failure or an unwatched kernel always means a full read.

Every pass is counted (`ravend_reconciles_total{subsystem="l3"}`), failures are logged with the
op and counted, and `ready(ok, detail)` reports whether the kernel now matches the plan. On
cancellation (shutdown) the kernel is left as it is so traffic keeps flowing through a restart;
`disable()` removes everything ravend owns (L3 toggled off).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from ravend.l3.kernel import LinuxKernel, OpFailure
from ravend.l3.keys import load_or_create, public_from_private
from ravend.l3.metrics import PASS_SECONDS
from ravend.l3.netlink import EventsLost, underlay_mtu, watch_owned
from ravend.l3.plan import KEY_FILE, LocalFacts, PlanCache
from ravend.l3.probe import ProbeSettings
from ravend.l3.probe_io import Prober
from ravend.l3.probe_verdict import ProbeVerdict
from ravend.l3.publish import publish_public_key
from ravend.l3.reconcile import Kernel, Reconciler, SnapshotCache
from ravend.l3.settings import L3Settings
from ravend.l3.state import EMPTY, KernelSnapshot, L3State, Role, WgDeviceState
from ravend.l3.targets import gateway_nodes
from ravend.l3.targets import targets as probe_targets
from ravend.l3.wireguard import UserspaceWireGuard, WireGuard, choose_backend
from ravend.model import ClusterView
from ravend.observe.metrics import ERRORS, RECONCILES
from ravend.runtime import Latest

if TYPE_CHECKING:
    from ravend.kube.client import KubeClient

log = logging.getLogger(__name__)

ReadyFn = Callable[[bool, str], None]
MIN_RETRY_S = 0.5
"""First retry delay after a failed pass; doubles up to the resync period."""


def _counts(state: L3State | KernelSnapshot) -> dict[str, int]:
    if isinstance(state, L3State):
        wg, vx = state.wireguard, state.vxlan
        return {
            "links": (wg is not None) + (vx is not None),
            # Warm-standby peers are in the kernel too: count them, or planned != present.
            "peers": len(wg.all_peers) if wg else 0,
            "routes": len(state.routes),
            "rules": len(state.rules),
            "fdb": len(vx.fdb) if vx else 0,
            "neighbours": len(vx.neighbours) if vx else 0,
            "remote_subnets": len(state.remote_subnets),
        }
    return {
        "links": len(state.links),
        "peers": len(state.wireguard.peers) if state.wireguard else 0,
        "routes": len(state.routes),
        "rules": len(state.rules),
        "fdb": len(state.fdb),
        "neighbours": len(state.neighbours),
        "nft_table": int(state.nft_digest is not None),
    }


class L3Agent:
    """See the module docstring. One per node (or per network namespace in tests)."""

    def __init__(
        self,
        node_name: str,
        node_ip: str,
        settings: L3Settings,
        state_dir: Path,
        view: Latest[ClusterView],
        *,
        client: KubeClient | None,
        netns: str | None = None,
        ready: ReadyFn | None = None,
        probe: ProbeSettings | None = None,
        kernel: Kernel | None = None,
        watch_kernel: bool = True,
        probe_failed: Latest[frozenset[str]] | None = None,
    ) -> None:
        self.node_name = node_name
        self.node_ip = node_ip
        self.s = replace(settings, state_dir=str(state_dir))
        self.view = view
        self.client = client
        self.netns = netns
        self._ready = ready
        self._kernel = kernel
        self._injected = kernel is not None
        self._watch_kernel = watch_kernel and not self._injected
        self._wg: WireGuard | None = None
        self._wake = asyncio.Event()
        self.public_key = ""
        self.prober = Prober(node_ip, self.s.probe_interval_s, probe, netns=netns)
        self.probe_failed = probe_failed if probe_failed is not None else Latest(frozenset[str]())
        """Peer gateway nodes the link probes show down, as failover evidence for the
        election (`ravend.l3.probe_verdict` has the rule); empty unless this node is a gateway."""
        self._verdict = ProbeVerdict(probe)
        self.planned: L3State = EMPTY
        self.plans = PlanCache()
        self.snaps = SnapshotCache(self.s.resync_period_s)
        """When a pass may skip reading the kernel (`ravend.l3.reconcile`); fed by the watch."""
        self._rec: Reconciler | None = None
        self._mtu = 0
        """Underlay MTU the plan uses: read once at start, then from each full snapshot."""
        self.present: KernelSnapshot = KernelSnapshot()
        self.last_failures: list[OpFailure] = []
        self.passes = 0

    # ---- entry points -------------------------------------------------------------------------

    async def run(self) -> None:
        """Reconcile until cancelled (never returns); the kernel is left as it is on exit."""
        await self.prepare()
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._forward_views(), name="l3-views")
                tg.create_task(self.prober.run(), name="l3-prober")
                tg.create_task(self._publish_verdicts(), name="l3-probe-verdict")
                if self._watch_kernel:
                    tg.create_task(self.watch_kernel(), name="l3-netlink")
                if isinstance(self._wg, UserspaceWireGuard):
                    tg.create_task(self._watch_wireguard(self._wg), name="l3-wireguard-go")
                if self.client is not None:
                    tg.create_task(self._publish_key_loop(), name="l3-publish-key")
                await self._loop()
        finally:
            self._set_verdict(frozenset())  # no agent, no evidence: never a stale "down"
            if isinstance(self._wg, UserspaceWireGuard):
                await self._wg.close()  # forget, do not stop: tunnels outlive ravend

    async def disable(self) -> None:
        """Remove every kernel object ravend owns (diff against the empty state)."""
        kernel = self._kernel or await self._make_kernel()
        rec = self._rec or Reconciler(kernel, self.s, snaps=self.snaps)
        done = await rec.converge(EMPTY, resync=True)
        log.info("L3 disabled: removed %d objects, %d failures", len(done.ops), len(done.failures))
        self.planned, self.last_failures = EMPTY, list(done.failures)
        self.plans.clear()
        self.present = done.actual
        self.prober.targets.publish(("", ()))
        self._verdict.clear()
        self._set_verdict(frozenset())

    def debug_state(self) -> dict[str, object]:
        """The /debug/state "l3" section: role, peers with health, planned vs present."""
        p = self.planned
        health = self.prober.health.value
        have = {
            x.public_key: x
            for x in (self.present.wireguard.peers if self.present.wireguard else ())
        }
        peers = []
        standby = {x.public_key for x in p.wireguard.standby_peers} if p.wireguard else set()
        for peer in p.wireguard.all_peers if p.wireguard else ():
            h = health.get(peer.gateway)
            seen = have.get(peer.public_key)
            peers.append(
                {
                    "gateway": peer.gateway,
                    "node": h.node if h else "",
                    "endpoint": (seen.endpoint if seen else None) or peer.endpoint,
                    "allowed_ips": list(peer.allowed_ips),
                    "rtt_ms": round(h.rtt_ewma_s * 1e3, 3) if h and h.rtt_ewma_s else None,
                    "loss": h.loss if h else None,
                    "up": h.up if h else None,
                    "handshake_age_s": h.handshake_age_s if h else None,
                    "standby": peer.public_key in standby,
                }
            )
        return {
            "role": p.role.value,
            "gateway": p.gateway,
            "public_key": self.public_key,
            "peers": peers,
            "planned": {**_counts(p), "remote": list(p.remote_subnets)},
            "present": _counts(self.present),
            "skipped": [f"{x.subject}: {x.reason}" for x in p.skipped],
            "failures": [f"{f.op}: {f.error}" for f in self.last_failures],
            "passes": self.passes,
            "backend": "userspace" if isinstance(self._wg, UserspaceWireGuard) else "kernel",
        }

    # ---- the loop -----------------------------------------------------------------------------

    async def prepare(self) -> None:
        """Load the key and open the kernel adapter (`run()` does this first; the bench too)."""
        path = Path(self.s.state_dir) / KEY_FILE
        private = await asyncio.to_thread(load_or_create, path)
        self.public_key = public_from_private(private)
        if self._kernel is None:
            self._kernel = await self._make_kernel()
        self._rec = Reconciler(self._kernel, self.s, snaps=self.snaps)
        log.info("L3 agent for %s: public key %s", self.node_name, self.public_key)

    async def _make_kernel(self) -> Kernel:
        self._wg = await choose_backend(self.s, self.netns, on_exit=self._wireguard_exited)
        self.prober.wg_state = self._state_of_wg
        return LinuxKernel(self.s, self._wg, self.netns, node_ip=self.node_ip)

    async def _state_of_wg(self) -> WgDeviceState | None:
        return await self._wg.state(self.s.wireguard_link) if self._wg else None

    async def _loop(self) -> None:
        retry = 0.0
        while True:
            timeout = retry or self.s.resync_period_s
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow our own cancellation
            # when the wake-up races with it, and shutdown would hang.
            try:
                async with asyncio.timeout(timeout):
                    await self._wake.wait()
                resync = False
            except TimeoutError:
                resync = True  # the periodic resync reads everything (what no event announces)
            self._wake.clear()
            view = self.view.value
            if not view.synced:
                continue
            ok = await self.reconcile_once(view, resync=resync)
            retry = 0.0 if ok else min(self.s.resync_period_s, max(MIN_RETRY_S, retry * 2))

    async def reconcile_once(self, view: ClusterView, *, resync: bool = False) -> bool:
        """One counted pass over `view` (after `prepare()`); `resync` reads the whole kernel
        even if no change was announced. Returns whether the kernel now matches the plan."""
        start = time.monotonic()
        RECONCILES.labels(subsystem="l3").inc()
        self.passes += 1
        try:
            ok, detail = await self._reconcile(view, resync)
        except Exception as e:  # one bad pass must not end the plane; retried with backoff
            ERRORS.labels(subsystem="l3", kind="pass").inc()
            log.exception("L3 reconcile pass failed")
            ok, detail = False, f"pass failed: {e}"
        PASS_SECONDS.observe(time.monotonic() - start)
        if self._ready is not None:
            self._ready(ok, detail)
        return ok

    async def _reconcile(self, view: ClusterView, resync: bool) -> tuple[bool, str]:
        assert self._rec is not None, "prepare() first"
        if not self._mtu:  # later passes take it from their snapshots
            self._mtu = 1500 if self._injected else await underlay_mtu(self.node_ip, self.netns)
        facts = LocalFacts(self.public_key, self._mtu, self.node_ip)
        hits = self.plans.hits
        desired = self.plans.plan(view, self.node_name, self.s, facts)
        if self.plans.hits == hits:  # replanned: a different view, so maybe other probe targets
            self._new_plan(desired, view)
        done = await self._rec.converge(desired, resync=resync)
        self.present, self.last_failures = done.actual, list(done.failures)
        if done.actual.underlay_mtu and done.actual.underlay_mtu != self._mtu:
            # The underlay changed under us (read with the snapshot): plan again at once.
            log.info("L3 underlay MTU %d -> %d", self._mtu, done.actual.underlay_mtu)
            self._mtu = done.actual.underlay_mtu
            self._wake.set()
        if done.failures:
            first = done.failures[0]
            return False, f"{len(done.failures)} ops failed, first: {first.op}: {first.error}"
        if done.remaining:
            return False, f"{len(done.remaining)} ops still pending, first: {done.remaining[0]}"
        return True, f"{desired.role.value} {desired.gateway}".strip()

    def _new_plan(self, desired: L3State, view: ClusterView) -> None:
        if desired != self.planned:
            log.info(
                "L3 plan: role=%s gateway=%s %s skipped=%s",
                desired.role.value, desired.gateway, _counts(desired),
                [f"{x.subject}: {x.reason}" for x in desired.skipped],
            )  # fmt: skip
        self.planned = desired
        memo = self.plans.memo
        targets = probe_targets(desired, gateway_nodes(view, self.s, memo), memo)
        if self.prober.targets.value != (desired.gateway, targets):
            self.prober.targets.publish((desired.gateway, targets))

    # ---- triggers -----------------------------------------------------------------------------

    async def _forward_views(self) -> None:
        # Only views that change what L3 plans from wake a pass (not heartbeat Leases).
        seen: tuple[object, ...] | None = None
        async for view in self.view.updates():
            key = (view.synced, view.gateways, view.nodes, view.raven_cfg)
            if key != seen:
                seen = key
                self._wake.set()

    async def _publish_verdicts(self) -> None:
        async for health in self.prober.health.updates():
            gateway = self.planned.role == Role.GATEWAY
            self._set_verdict(self._verdict.observe(health, gateway, time.monotonic()))

    def _set_verdict(self, failed: frozenset[str]) -> None:
        if failed != self.probe_failed.value:
            if failed:
                log.warning("link probes: peer gateway nodes down: %s", ", ".join(sorted(failed)))
            self.probe_failed.publish(failed)

    async def watch_kernel(self) -> None:
        """Wake a pass on every netlink change to ravend's objects (runs until cancelled)."""
        while True:
            delay, started = 5.0, time.monotonic()
            try:
                await watch_owned(
                    self.s, self.netns, self._kernel_changed, self.snaps.watch_started
                )
            except EventsLost as e:  # a burst overflowed the socket: resubscribe at once
                log.info("L3 netlink events lost (%s); resubscribing", e)
                delay = 0.1 if time.monotonic() - started > 1.0 else 5.0  # never a tight loop
            except Exception as e:  # netlink unavailable: the periodic resync still repairs
                ERRORS.labels(subsystem="l3", kind="netlink-events").inc()
                log.warning("L3 netlink event watch failed (%s); retrying in 5 s", e)
            finally:
                self.snaps.watch_stopped()  # unwatched: no snapshot is trusted
            await asyncio.sleep(delay)

    def _kernel_changed(self) -> None:
        self.snaps.changed()
        self._wake.set()

    def _wireguard_exited(self, name: str) -> None:
        ERRORS.labels(subsystem="l3", kind="wireguard-exit").inc()
        log.warning("wireguard-go for %s exited; the next pass restarts it", name)
        self._kernel_changed()

    async def _watch_wireguard(self, wg: UserspaceWireGuard) -> None:
        watched: object = None
        while True:
            proc = wg.procs.get(self.s.wireguard_link)
            if proc is None or proc is watched:
                # Not started by us (adopted or absent): its TUN link's deletion is a
                # netlink event, so polling for a new process is all this task does.
                await asyncio.sleep(1.0)
                continue
            watched = proc
            await wg.watch(self.s.wireguard_link)

    async def _publish_key_loop(self) -> None:
        assert self.client is not None
        seen = -1
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(30.0):
                    seen, _ = await self.view.wait_newer(seen)
            view = self.view.value
            if not view.synced:
                continue
            try:
                written = await publish_public_key(
                    self.client, view, self.node_name, self.public_key
                )
            except Exception as e:  # API trouble: the next view or the timer retries
                ERRORS.labels(subsystem="l3", kind="publish-key").inc()
                log.warning("publishing the WireGuard public key failed: %s", e)
                continue
            if written:
                log.info("published WireGuard public key in %s", ", ".join(written))


__all__ = ["L3Agent", "publish_public_key"]
