"""Shared fixtures for the manifest tests: every YAML document under manifests/, parsed once."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from ravend.sim.schema import load_crd_versions

MANIFESTS = Path(__file__).resolve().parents[2] / "manifests"

Doc = dict[str, Any]


def load_docs(path: Path) -> list[Doc]:
    """Every non-empty document of a YAML file; fails the test on anything but mappings."""
    with path.open() as f:
        docs = [d for d in yaml.safe_load_all(f) if d is not None]
    for d in docs:
        assert isinstance(d, dict), f"{path}: a document is not a mapping"
    return docs


@pytest.fixture(scope="session")
def manifest() -> Callable[[str], list[Doc]]:
    """Load a file by its path under manifests/, e.g. manifest("examples/gateways.yaml")."""
    return lambda rel: load_docs(MANIFESTS / rel)


@pytest.fixture(scope="session")
def manifests_dir() -> Path:
    return MANIFESTS


@pytest.fixture(scope="session")
def install_docs() -> list[Doc]:
    """The documents `kubectl apply -k manifests/` installs (the kustomization's resources)."""
    kust = load_docs(MANIFESTS / "kustomization.yaml")[0]
    docs: list[Doc] = []
    for name in kust["resources"]:
        docs.extend(load_docs(MANIFESTS / name))
    return docs


@pytest.fixture(scope="session")
def crd() -> Doc:
    return load_docs(MANIFESTS / "gateway-crd.yaml")[0]


@pytest.fixture(scope="session")
def schemas(crd: Doc) -> dict[str, Mapping[str, Any]]:
    """Gateway openAPIV3Schema by version name."""
    return load_crd_versions(crd)


@pytest.fixture(scope="session")
def beta(schemas: dict[str, Mapping[str, Any]]) -> Mapping[str, Any]:
    return schemas["v1beta1"]


@pytest.fixture(scope="session")
def alpha(schemas: dict[str, Mapping[str, Any]]) -> Mapping[str, Any]:
    return schemas["v1alpha1"]
