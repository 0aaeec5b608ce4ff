"""``idcode db upgrade`` run by replicas starting together, against the real PostgreSQL: the
migrations run once, under an advisory lock, and every replica ends on the newest revision.
Before the lock, all but one failed with a unique violation in pg_type (issue 15, item 7)."""

from __future__ import annotations

import multiprocessing
import secrets
import traceback
from collections.abc import Iterator
from multiprocessing.synchronize import Barrier

import psycopg
import pytest

from idcode.service.database import make_engine, schema_revision, upgrade
from idcode.service.settings import Settings
from tests.services import POSTGRES_ADMIN_URL

REPLICAS = 2


@pytest.fixture
def empty_database() -> Iterator[str]:
    name = f"idcode_test_upgrade_{secrets.token_hex(4)}"
    with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True, connect_timeout=5) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield Settings(
                database_url=POSTGRES_ADMIN_URL.rsplit("/", 1)[0] + "/" + name
            ).sqlalchemy_url
        finally:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _replica(url: str, start: Barrier, failures: multiprocessing.Queue[str]) -> None:
    start.wait(timeout=30)
    try:
        upgrade(url)
    except Exception:
        failures.put(traceback.format_exc(limit=1))


def test_replicas_upgrading_an_empty_database_together_all_succeed_and_migrate_it_once(
    empty_database: str,
) -> None:
    # Each replica in a process of its own, as Alembic's context is one per process; forked,
    # so that they need not import idcode again and start together at the barrier.
    processes = multiprocessing.get_context("fork")
    start, failures = processes.Barrier(REPLICAS), processes.Queue()
    replicas = [
        processes.Process(target=_replica, args=(empty_database, start, failures))
        for _ in range(REPLICAS)
    ]
    for replica in replicas:
        replica.start()
    for replica in replicas:
        replica.join(timeout=120)

    assert [replica.exitcode for replica in replicas] == [0] * REPLICAS
    assert failures.empty(), failures.get()
    engine = make_engine(empty_database)
    try:
        current, head = schema_revision(engine)
    finally:
        engine.dispose()
    assert current == head
