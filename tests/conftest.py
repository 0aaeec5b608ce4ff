"""Fixtures of the core tests: an in-memory issuer (the same helper integrators use) at a
fixed time. The service and integration folders add the real PostgreSQL and Redis
(tests/services.py); nothing here needs them, so ``pytest tests/core tests/adapters
tests/terminal`` runs on a gate vendor's install.
"""

from __future__ import annotations

import importlib.util

import pytest

from idcode.cose import Algorithm
from idcode.testing import TestIssuer
from idcode.verifier import Trust

# The fixtures on PostgreSQL, Redis and the app, registered once for tests/service and
# tests/integration. A core-only install (scripts/lowest-deps, which runs tests/core,
# tests/adapters and tests/terminal) has no FastAPI, and needs none of them.
pytest_plugins = ["tests.services"] if importlib.util.find_spec("fastapi") else []

NOW = 1_796_112_000  # 2026-12-01T08:00:00Z, fixed so core tests never depend on the clock


# -- core ---------------------------------------------------------------------------------


@pytest.fixture
def issuer() -> TestIssuer:
    return TestIssuer(now=NOW)


@pytest.fixture
def es256_issuer() -> TestIssuer:
    return TestIssuer(alg=Algorithm.ES256, kid="E", now=NOW)


@pytest.fixture
def trust(issuer: TestIssuer) -> Trust:
    return issuer.trust()


