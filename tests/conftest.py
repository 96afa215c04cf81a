"""Shared fixtures: a started in-memory API server (`apiserver`) and an admin kubeconfig."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

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


@pytest.fixture(autouse=True)
async def _no_unhandled_loop_errors() -> AsyncIterator[None]:
    """Fail a test whose event loop was told of an error nobody handled: a transport or loop
    callback that raised, a task whose exception nobody retrieved. The daemon must not leave
    such errors to the loop (house style); a test that provokes one on purpose says so by
    setting its own exception handler."""
    loop = asyncio.get_running_loop()
    seen: list[str] = []

    def record(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        seen.append(f"{context.get('message')}: {context.get('exception')!r}")
        loop.default_exception_handler(context)

    loop.set_exception_handler(record)
    yield
    if loop.get_exception_handler() is record:
        loop.set_exception_handler(None)
    assert not seen, f"errors reported to the event loop: {seen}"
