"""Fixtures for kube component tests: a KubeClient on the embedded API server."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

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
def kube_settings() -> KubeSettings:
    return FAST


@pytest.fixture
async def kube(kubeconfig: Path, kube_settings: KubeSettings) -> AsyncIterator[KubeClient]:
    client = await connect(kubeconfig, kube_settings)
    try:
        yield client
    finally:
        await client.close()
