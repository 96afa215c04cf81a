"""Fixtures for kube component tests: a KubeClient on the embedded API server, helpers."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest

from ravend.kube.client import KubeClient, connect
from ravend.kube.settings import KubeSettings

FAST = KubeSettings(
    request_timeout_s=5.0,
    connect_timeout_s=2.0,
    watch_timeout_s=30,
    backoff_initial_s=0.1,
    backoff_max_s=0.8,
    coalesce_s=0.02,
)
"""Short backoffs so recovery tests finish in a second or two."""


@pytest.fixture
async def kube(kubeconfig: Path) -> AsyncIterator[KubeClient]:
    client = await connect(kubeconfig, FAST)
    try:
        yield client
    finally:
        await client.close()


async def eventually(check: Callable[[], bool], timeout: float = 5.0, what: str = "") -> None:
    """Poll `check` until it is true; fail the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what or check}")
        await asyncio.sleep(0.02)


@contextlib.asynccontextmanager
async def running(coro: Coroutine[Any, Any, None]) -> AsyncIterator[asyncio.Task[None]]:
    """Run a never-ending loop for the duration of the block; fail if it ended by itself."""
    task = asyncio.ensure_future(coro)
    try:
        yield task
        assert not task.done(), f"loop ended early: {task}"
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
