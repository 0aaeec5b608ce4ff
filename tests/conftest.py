"""Fixtures of the core tests: an in-memory issuer (the same helper integrators use) at a
fixed time. The service and integration folders add the real PostgreSQL and Redis
(tests/services.py); nothing here needs them, so ``pytest tests/core tests/adapters
tests/terminal`` runs on a gate vendor's install.
"""

from __future__ import annotations

import gc
import importlib.util

import pytest

from idcode.cose import Algorithm
from idcode.testing import TestIssuer
from idcode.verifier import Trust

# The fixtures on PostgreSQL, Redis and the app, registered once for tests/service and
# tests/integration. A core-only install (scripts/lowest-deps, which runs tests/core,
# tests/adapters and tests/terminal) has no FastAPI, and needs none of them.
pytest_plugins = (
    ["tests.services", "tests.redisnodes"] if importlib.util.find_spec("fastapi") else []
)

NOW = 1_796_112_000  # 2026-12-01T08:00:00Z, fixed so core tests never depend on the clock


# -- the collector ------------------------------------------------------------------------

#: A full collection runs once the frozen objects have grown by this share since the last
#: one, as CPython decides on its own full collections (by 25 %): it frees what earlier tests
#: left in cycles, and keeps the run's memory near what it holds alive.
COLLECT_AFTER_GROWTH = 0.5
_frozen_after_collection = 0


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Freeze what the run holds so far out of the collector's sight, before each test.

    The service's start-up runs a full collection, then freezes what it loaded
    (idcode.service.api.app); its shutdown thaws everything. In this process a full
    collection walks the whole test run too (every collected test, Hypothesis, earlier
    tests' leftovers): 100-300 ms at each of the ~1,000 service starts of the suite. Frozen
    here, they stay out of it and the service's collection walks only what the test made.
    What earlier tests left in cycles is freed by a full collection of ours
    (COLLECT_AFTER_GROWTH) and at the end of the run (pytest_sessionfinish)."""
    global _frozen_after_collection
    gc.freeze()
    if gc.get_freeze_count() > _frozen_after_collection * (1 + COLLECT_AFTER_GROWTH):
        gc.unfreeze()
        gc.collect()
        gc.freeze()
        _frozen_after_collection = gc.get_freeze_count()


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Thaw everything, so that pytest's last collection (unraisable exceptions) sees it."""
    gc.unfreeze()


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
