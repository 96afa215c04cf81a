"""Fixtures for the L3 end-to-end tests: throwaway namespaces and the simulated cluster.

Every name carries a per-run prefix; teardown kills processes by PID before deleting
namespaces (a namespace deleted under a live process lingers as a ghost).
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
from collections.abc import Callable, Iterator

import pytest

RUN = f"re3{secrets.token_hex(2)}"
HAVE_NETNS = (
    os.geteuid() == 0
    and shutil.which("ip") is not None
    and shutil.which("nft") is not None
    and shutil.which("wireguard-go") is not None
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    skip = pytest.mark.skip(reason="needs root, ip, nft and wireguard-go")
    for item in items:
        if not HAVE_NETNS and "netns" in item.keywords and "l3_e2e" in str(item.path):
            item.add_marker(skip)


@pytest.fixture
def netns_pair() -> Iterator[Callable[[], tuple[str, str]]]:
    """Factory: two namespaces joined by a veth (a: 10.99.0.1/24 on va, b: 10.99.0.2 on vb)."""
    made: list[str] = []

    def make() -> tuple[str, str]:
        a, b = f"{RUN}-{secrets.token_hex(3)}", f"{RUN}-{secrets.token_hex(3)}"
        for ns in (a, b):
            subprocess.run(["ip", "netns", "add", ns], check=True)
            made.append(ns)
            subprocess.run(["ip", "-n", ns, "link", "set", "lo", "up"], check=True)
        subprocess.run(
            ["ip", "link", "add", "va", "netns", a, "type", "veth", "peer", "vb", "netns", b],
            check=True,
        )
        for ns, dev, ip in ((a, "va", "10.99.0.1/24"), (b, "vb", "10.99.0.2/24")):
            subprocess.run(["ip", "-n", ns, "addr", "add", ip, "dev", dev], check=True)
            subprocess.run(["ip", "-n", ns, "link", "set", dev, "up"], check=True)
        return a, b

    yield make
    for ns in made:
        subprocess.run(["ip", "netns", "del", ns], check=False)
