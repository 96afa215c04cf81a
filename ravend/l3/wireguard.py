"""WireGuard backends: kernel module or a supervised wireguard-go (I/O: processes, sockets).

`choose_backend()` probes once: kernels without the module (raven#193, and this test bed) get
wireguard-go, driven through its UAPI socket. wireguard-go is started in its own session so a
ravend restart does not kill it, and a running instance is adopted instead of restarted, so a
restart never drops tunnel traffic. If it dies, `watch()` reports it and the next `ensure()`
restarts it, no faster than an exponential backoff. Starting and deleting wait until no other
instance of the name is left in the namespace (`ravend.l3.wgproc` says why), and an instance
that is slow to answer is never replaced.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from ravend.l3 import wgproc
from ravend.l3.keys import load_or_create
from ravend.l3.netlink import kernel_wireguard_available
from ravend.l3.ops import ConfigureWireGuard
from ravend.l3.settings import L3Settings, WireGuardBackend
from ravend.l3.state import WgDeviceState, WgPeerState
from ravend.l3.uapi import (
    SOCKET_DIR,
    PeerUpdate,
    SetRequest,
    UapiClient,
    UapiError,
    UapiProtocolError,
    socket_path,
)

log = logging.getLogger(__name__)


class WireGuard(Protocol):
    """What the kernel adapter needs from a WireGuard implementation."""

    async def ensure(self, name: str) -> None: ...
    async def delete(self, name: str) -> None: ...
    async def state(self, name: str) -> WgDeviceState | None: ...
    async def configure(self, op: ConfigureWireGuard) -> None: ...


def set_request(op: ConfigureWireGuard) -> SetRequest:
    """The UAPI request for an incremental configure op (pure)."""
    key = load_or_create(Path(op.private_key_path)) if op.private_key_path else None
    peers = tuple(
        PeerUpdate(p.public_key, False, p.endpoint, p.keepalive_s, p.allowed_ips) for p in op.upsert
    ) + tuple(PeerUpdate(k, remove=True) for k in op.remove)
    return SetRequest(private_key=key, listen_port=op.listen_port, peers=peers)


def _unlink(path: str) -> None:
    # A local unlink is microseconds; not worth a thread.
    Path(path).unlink(missing_ok=True)


def _netns_argv(netns: str | None, argv: list[str]) -> list[str]:
    return ["ip", "netns", "exec", netns, *argv] if netns else argv


class UserspaceWireGuard:
    """wireguard-go instances, one per interface name, supervised from ravend."""

    def __init__(
        self,
        settings: L3Settings,
        netns: str | None = None,
        socket_dir: str = SOCKET_DIR,
        on_exit: Callable[[str], None] | None = None,
    ) -> None:
        self.settings = settings
        self.netns = netns
        self.socket_dir = socket_dir
        self.on_exit = on_exit
        """Called with the interface name when a wireguard-go we started exits."""
        self.procs: dict[str, asyncio.subprocess.Process] = {}
        self._failures: dict[str, tuple[int, float]] = {}
        self.starts = 0
        """How many wireguard-go processes this object started (adoptions do not count)."""
        self.stop_timeout_s = wgproc.STOP_TIMEOUT_S
        """Grace after SIGTERM before a stopping wireguard-go is killed."""
        self.uapi_timeout_s = 5.0
        """Deadline of one UAPI request; a live but slower instance is reported, not replaced."""

    def client(self, name: str) -> UapiClient:
        return UapiClient(socket_path(name, self.socket_dir), self.uapi_timeout_s)

    async def state(self, name: str) -> WgDeviceState | None:
        try:
            return await self.client(name).get()
        except (OSError, UapiError, TimeoutError):
            return None

    async def _running(self, name: str) -> bool:
        """Whether an instance answers on `name`'s socket. A timeout or protocol error raises:
        a slow instance is alive, and starting a second one would kill both (see wgproc)."""
        try:
            await self.client(name).get()
        except (FileNotFoundError, ConnectionRefusedError, ConnectionResetError, UapiProtocolError):
            return False  # no socket, a stale one of a dead instance, or one on its way out
        return True

    async def ensure(self, name: str) -> None:
        if await self._running(name):
            return  # running: ours or adopted from a previous ravend
        count, not_before = self._failures.get(name, (0, 0.0))
        if time.monotonic() < not_before:
            raise RuntimeError(f"wireguard-go {name}: restart backing off")
        # An instance without a working socket is on its way out; wait for it to be gone or it
        # removes the new instance's socket when it exits. No unlink of our own: wireguard-go
        # replaces a stale socket file itself and refuses a live one.
        await self._stop_all(name)
        argv = _netns_argv(self.netns, [self.settings.wireguard_go_binary, "-f", name])
        # Own session: a signal to ravend's process group must not take the tunnel down.
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
            start_new_session=True,
        )
        self.procs[name] = proc
        self.starts += 1
        self._failures[name] = (count + 1, time.monotonic() + min(30.0, 0.5 * 2**count))
        await self._wait_ready(name, proc)
        self._failures[name] = (0, 0.0)
        log.info("started wireguard-go for %s (pid %s)", name, proc.pid)

    async def _wait_ready(self, name: str, proc: asyncio.subprocess.Process) -> None:
        async with asyncio.timeout(5):
            while await self.state(name) is None:
                if proc.returncode is not None:
                    raise RuntimeError(f"wireguard-go {name} exited with {proc.returncode}")
                await asyncio.sleep(0.01)

    async def watch(self, name: str) -> int | None:
        """Wait for the wireguard-go we started for `name` to exit; report it and return its
        exit code (None if we did not start one)."""
        proc = self.procs.get(name)
        if proc is None:
            return None
        code = await proc.wait()
        log.warning("wireguard-go for %s exited with %s", name, code)
        if self.on_exit is not None:
            self.on_exit(name)
        return code

    async def delete(self, name: str) -> None:
        # Ours or adopted alike: stop every instance of the name and wait until it is gone, so a
        # CreateWireGuard right after (L3 toggled back on) starts on a clean slate.
        self.procs.pop(name, None)
        await self._stop_all(name)
        await _run(["ip", *self._n(), "link", "del", "dev", name], ok=(1,))
        if not await self._running(name):
            _unlink(socket_path(name, self.socket_dir))  # left by a SIGKILLed instance

    async def _stop_all(self, name: str) -> None:
        binary = self.settings.wireguard_go_binary
        pids = await asyncio.to_thread(wgproc.instances, name, self.netns, binary)
        if pids:
            log.info("stopping wireguard-go for %s (pids %s)", name, pids)
            await wgproc.stop(pids, self.stop_timeout_s)

    def _n(self) -> list[str]:
        return ["-n", self.netns] if self.netns else []

    async def configure(self, op: ConfigureWireGuard) -> None:
        await self.client(op.name).set(set_request(op))

    async def close(self) -> None:
        """Forget the processes without stopping them: tunnels outlive ravend by default."""
        self.procs.clear()


class KernelWireGuard:
    """The in-kernel module, configured with `wg` (genetlink). Not exercised on the test bed,
    which has no module; kept small on purpose."""

    def __init__(self, netns: str | None = None) -> None:
        self.netns = netns

    def _ip(self, *args: str) -> list[str]:
        return ["ip", *(["-n", self.netns] if self.netns else []), *args]

    async def ensure(self, name: str) -> None:
        await _run(self._ip("link", "add", "dev", name, "type", "wireguard"), ok=(2,))

    async def delete(self, name: str) -> None:
        await _run(self._ip("link", "del", "dev", name), ok=(1,))

    async def state(self, name: str) -> WgDeviceState | None:
        out = await _run(_netns_argv(self.netns, ["wg", "show", name, "dump"]), ok=(1,))
        return parse_wg_dump(out) if out else None

    async def configure(self, op: ConfigureWireGuard) -> None:
        argv = ["wg", "set", op.name]
        if op.private_key_path:
            argv += ["private-key", op.private_key_path]
        if op.listen_port is not None:
            argv += ["listen-port", str(op.listen_port)]
        for p in op.upsert:
            argv += ["peer", p.public_key, "persistent-keepalive", str(p.keepalive_s)]
            argv += ["allowed-ips", ",".join(p.allowed_ips)]
            if p.endpoint:
                argv += ["endpoint", p.endpoint]
        for k in op.remove:
            argv += ["peer", k, "remove"]
        await _run(_netns_argv(self.netns, argv))


def parse_wg_dump(text: str) -> WgDeviceState:
    """Decode `wg show IF dump` (tab-separated; first line is the device) (pure)."""
    lines = [line.split("\t") for line in text.strip().splitlines()]
    _, pub, port, fwmark = lines[0][:4]
    peers = tuple(
        WgPeerState(
            public_key=f[0],
            endpoint=None if f[2] == "(none)" else f[2],
            allowed_ips=() if f[3] == "(none)" else tuple(f[3].split(",")),
            keepalive_s=0 if f[7] == "off" else int(f[7]),
            last_handshake_ns=int(f[4]) * 1_000_000_000,
            rx_bytes=int(f[5]),
            tx_bytes=int(f[6]),
        )
        for f in lines[1:]
    )
    mark = 0 if fwmark == "off" else int(fwmark, 0)
    return WgDeviceState(
        public_key="" if pub == "(none)" else pub, listen_port=int(port), fwmark=mark, peers=peers
    )


async def _run(argv: list[str], ok: tuple[int, ...] = ()) -> str:
    """Run a command; exit codes in `ok` count as "already so" and return ""."""
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await proc.communicate()
    if proc.returncode == 0:
        return out.decode()
    if proc.returncode in ok:
        return ""
    raise RuntimeError(f"{' '.join(argv)}: exit {proc.returncode}: {err.decode().strip()}")


async def choose_backend(
    settings: L3Settings, netns: str | None = None, on_exit: Callable[[str], None] | None = None
) -> WireGuard:
    """The configured backend, or for `auto` the kernel module when the kernel has it."""
    kind = settings.wireguard_backend
    if kind == WireGuardBackend.AUTO:
        kind = (
            WireGuardBackend.KERNEL
            if await kernel_wireguard_available(netns)
            else WireGuardBackend.USERSPACE
        )
        log.info("WireGuard backend: %s", kind)
    if kind == WireGuardBackend.KERNEL:
        return KernelWireGuard(netns)
    return UserspaceWireGuard(settings, netns, on_exit=on_exit)
