"""Shared fixtures for the certificate tests: throwaway CAs."""

from __future__ import annotations

import pytest

from ravend.certs.localca import LocalCa


@pytest.fixture(scope="module")
def ca() -> LocalCa:
    return LocalCa.generate("ravend-test-ca")


@pytest.fixture(scope="module")
def foreign_ca() -> LocalCa:
    """A CA nobody trusts: certificates from it must be refused."""
    return LocalCa.generate("someone-else")
