"""Shared fixtures: an in-memory issuer (the same helper integrators use) and its trust."""

from __future__ import annotations

import pytest

from idcode.cose import Algorithm
from idcode.testing import TestIssuer
from idcode.verifier import Trust

NOW = 1_796_112_000  # 2026-12-01T08:00:00Z, fixed so tests never depend on the wall clock


@pytest.fixture
def issuer() -> TestIssuer:
    return TestIssuer(now=NOW)


@pytest.fixture
def es256_issuer() -> TestIssuer:
    return TestIssuer(alg=Algorithm.ES256, kid="E", now=NOW)


@pytest.fixture
def trust(issuer: TestIssuer) -> Trust:
    return issuer.trust()
