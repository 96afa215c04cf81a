"""Fixtures for L3 tests: throwaway network namespaces and wireguard-go instances.

Everything gets a unique per-run prefix; teardown kills processes by PID first and only then
deletes namespaces (a namespace deleted under a live process lingers as a ghost).
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

RUN = f"rl3{secrets.token_hex(2)}"


def _can_netns() -> bool:
    return os.geteuid() == 0 and shutil.which("ip") is not None


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    if _can_netns():
        return
    skip = pytest.mark.skip(reason="needs root and iproute2")
    for item in items:
        if item.get_closest_marker("netns") is not None:
            item.add_marker(skip)


@pytest.fixture
def netns() -> Iterator[Callable[[], str]]:
    """Factory: each call creates a fresh namespace with loopback up and returns its name."""
    made: list[str] = []

    def make() -> str:
        name = f"{RUN}-{secrets.token_hex(3)}"
        subprocess.run(["ip", "netns", "add", name], check=True)
        made.append(name)
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
        return name

    yield make
    for name in made:
        subprocess.run(["ip", "netns", "del", name], check=False)


def unique_ifname() -> str:
    """A link name unique on this host (/var/run/wireguard is shared by all namespaces)."""
    return f"rw{secrets.token_hex(4)}"


@pytest.fixture
def ifname() -> Callable[[], str]:
    return unique_ifname


@pytest.fixture
def wireguard_go() -> Iterator[Callable[[str, str], subprocess.Popen[bytes]]]:
    """Factory: start `wireguard-go -f IFNAME` inside a namespace; waits for its UAPI socket."""
    procs: list[tuple[subprocess.Popen[bytes], str]] = []

    def start(ns: str, name: str) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(
            ["ip", "netns", "exec", ns, "wireguard-go", "-f", name],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env={**os.environ, "LOG_LEVEL": "error"},
        )
        procs.append((proc, name))
        sock = Path(f"/var/run/wireguard/{name}.sock")
        deadline = time.monotonic() + 5
        while not sock.exists():
            assert proc.poll() is None, "wireguard-go exited at start"
            assert time.monotonic() < deadline, "wireguard-go socket did not appear"
            time.sleep(0.01)
        return proc

    yield start
    for proc, name in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=5)
        Path(f"/var/run/wireguard/{name}.sock").unlink(missing_ok=True)
