"""Fixtures on the real PostgreSQL and Redis, for tests/service and tests/integration.

Each test run creates its own database (dropped at the end) and uses its own Redis key
prefix (deleted at the end), because the servers outlive the run. If either server cannot be
reached the tests fail and say so; they are never skipped. tests/conftest.py registers this
module as a plugin wherever the service is installed.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis
from fastapi.testclient import TestClient

from idcode.service.api.app import create_app
from idcode.service.auth import dev_token
from idcode.service.database import upgrade
from idcode.service.settings import Settings
from idcode.testing import random_id_number

POSTGRES_ADMIN_URL = os.environ.get(
    "IDCODE_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
REDIS_URL = os.environ.get("IDCODE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
RUN_ID = f"{os.getpid()}_{secrets.token_hex(3)}"
REDIS_RUN_PREFIX = f"idcode-test-{RUN_ID}:"


# -- real services ------------------------------------------------------------------------


def _database_url(admin_url: str, name: str) -> str:
    return admin_url.rsplit("/", 1)[0] + "/" + name


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A fresh, migrated PostgreSQL database for this test run."""
    name = f"idcode_test_{RUN_ID}"
    try:
        admin = psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        pytest.fail(
            f"PostgreSQL is not reachable at {POSTGRES_ADMIN_URL} ({exc}). Start it "
            "(README, 'Running the tests') or set IDCODE_TEST_POSTGRES_URL.",
            pytrace=False,
        )
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        url = _database_url(POSTGRES_ADMIN_URL, name)
        try:
            upgrade(Settings(database_url=url).sqlalchemy_url)
            yield url
        finally:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def fresh_postgres_url() -> Iterator[Callable[..., str]]:
    """Makes more fresh PostgreSQL databases for one test, migrated to ``revision`` (head by
    default): for a deployment that must not share the run's database, such as one of the GM
    crypto profile (the database records its profile; idcode.service.profilerecord)."""
    admin = psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True, connect_timeout=5)
    names: list[str] = []

    def make(revision: str = "head") -> str:
        name = f"idcode_test_{RUN_ID}_{secrets.token_hex(3)}"
        admin.execute(f'CREATE DATABASE "{name}"')
        names.append(name)
        url = _database_url(POSTGRES_ADMIN_URL, name)
        upgrade(Settings(database_url=url).sqlalchemy_url, revision)
        return url

    with admin:
        try:
            yield make
        finally:
            for name in names:
                admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """The test Redis; every key this run writes starts with REDIS_RUN_PREFIX."""
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=5)
    try:
        client.ping()
    except redis.ConnectionError as exc:
        pytest.fail(
            f"Redis is not reachable at {REDIS_URL} ({exc}). Start it (README, 'Running the "
            "tests') or set IDCODE_TEST_REDIS_URL.",
            pytrace=False,
        )
    try:
        yield REDIS_URL
    finally:
        for key in client.scan_iter(match=REDIS_RUN_PREFIX + "*", count=1000):
            client.delete(key)
        client.close()


@pytest.fixture
def make_settings(tmp_path: Path) -> Callable[..., Settings]:
    """Development settings in tmp_path (keys, data); keyword arguments override."""

    def build(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "environment": "development",
            "keys_dir": tmp_path / "keys",
            "data_dir": tmp_path / "data",
            "demo_data": False,
            "redis_prefix": f"{REDIS_RUN_PREFIX}{secrets.token_hex(3)}:",
        }
        values.update(overrides)
        return Settings(**values)

    return build


@pytest.fixture
def service_settings(
    make_settings: Callable[..., Settings], postgres_url: str, redis_url: str
) -> Settings:
    """The service on the real PostgreSQL and Redis, with a test-private key store."""
    return make_settings(database_url=postgres_url, redis_url=redis_url)


@pytest.fixture
def client(service_settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(service_settings)) as test_client:
        yield test_client


class Tokens:
    """ID tokens from the development identity provider, for one service's settings."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def citizen(self, id_number: str, **kwargs: Any) -> dict[str, str]:
        token = dev_token(self.settings, f"citizen-{id_number[-6:]}", id_number=id_number, **kwargs)
        return {"Authorization": f"Bearer {token}"}

    def operator(self, **kwargs: Any) -> dict[str, str]:
        role = self.settings.operator_role
        return {
            "Authorization": "Bearer " + dev_token(self.settings, "op", roles=(role,), **kwargs)
        }

    def verifier(self) -> dict[str, str]:
        role = self.settings.verifier_role
        return {"Authorization": "Bearer " + dev_token(self.settings, "term", roles=(role,))}


@pytest.fixture
def tokens(service_settings: Settings) -> Tokens:
    return Tokens(service_settings)


@pytest.fixture
def enrol(client: TestClient, tokens: Tokens) -> Callable[..., tuple[str, str]]:
    """Enrol a card through the API; returns (card id, ID number)."""

    def enrol_card(**fields: Any) -> tuple[str, str]:
        body = {"id_number": random_id_number(), "name": "测试", **fields}
        response = client.post("/v1/cards", json=body, headers=tokens.operator())
        assert response.status_code == 201, response.text
        return response.json()["id"], body["id_number"]

    return enrol_card
