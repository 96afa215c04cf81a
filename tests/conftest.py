"""Shared fixtures: a started in-memory API server (`apiserver`) and an admin kubeconfig."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from ravend.sim.apiserver import SimApiServer


@pytest.fixture
async def apiserver() -> AsyncIterator[SimApiServer]:
    """A fresh SimApiServer on 127.0.0.1 (random port), stopped after the test."""
    server = SimApiServer()
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
def kubeconfig(apiserver: SimApiServer, tmp_path: Path) -> Path:
    """Path of an admin kubeconfig (bearer token, inlined CA) for `apiserver`."""
    return apiserver.write_kubeconfig(tmp_path / "kubeconfig")
