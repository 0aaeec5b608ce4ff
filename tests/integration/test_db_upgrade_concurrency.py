"""``idcode db upgrade`` run by replicas starting together, against the real PostgreSQL: the
migrations run once, under an advisory lock held for the whole upgrade, and every replica ends
on the newest revision. Before the lock, all but one failed with a unique violation in pg_type
(issue 15, item 7)."""

from __future__ import annotations

import multiprocessing
import secrets
import time
import traceback
from collections.abc import Iterator
from multiprocessing.synchronize import Barrier

import psycopg
import pytest

from idcode.service.database import UPGRADE_LOCK_KEY, make_engine, schema_revision, upgrade
from idcode.service.settings import Settings
from tests.services import POSTGRES_ADMIN_URL

REPLICAS = 3


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
    assert_at_head(empty_database)


def assert_at_head(url: str) -> None:
    engine = make_engine(url)
    try:
        current, head = schema_revision(engine)
    finally:
        engine.dispose()
    assert current == head


def _waiting_for_the_upgrade_lock(connection: psycopg.Connection[tuple[int]]) -> int:
    # A bigint advisory key shows in pg_locks as its high and low 32 bits.
    key = UPGRADE_LOCK_KEY & 0xFFFF_FFFF_FFFF_FFFF
    found = connection.execute(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
        " AND classid = %s AND objid = %s AND objsubid = 1"
        " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
        (key >> 32, key & 0xFFFF_FFFF),
    ).fetchone()
    assert found is not None
    return found[0]


def test_replicas_wait_for_the_upgrade_lock_and_migrate_nothing_before_they_hold_it(
    empty_database: str,
) -> None:
    """The test holds the lock the upgrade takes: every replica waits for it (pg_locks shows
    them waiting) and the database stays empty until the test lets go; then one migrates it
    and the others find it at the newest revision."""
    holder = psycopg.connect(
        empty_database.replace("postgresql+psycopg://", "postgresql://"), autocommit=True
    )
    with holder:
        holder.execute("SELECT pg_advisory_lock(%s)", (UPGRADE_LOCK_KEY,))
        processes = multiprocessing.get_context("fork")
        start, failures = processes.Barrier(REPLICAS), processes.Queue()
        replicas = [
            processes.Process(target=_replica, args=(empty_database, start, failures))
            for _ in range(REPLICAS)
        ]
        for replica in replicas:
            replica.start()
        # Polled, not timed: the replicas are waiting once pg_locks lists them all.
        for _ in range(1200):
            if _waiting_for_the_upgrade_lock(holder) == REPLICAS:
                break
            time.sleep(0.05)
        assert _waiting_for_the_upgrade_lock(holder) == REPLICAS
        assert all(replica.is_alive() for replica in replicas)
        found = holder.execute("SELECT to_regclass('alembic_version')").fetchone()
        assert found == (None,)  # nothing migrated while the lock was held elsewhere
        holder.execute("SELECT pg_advisory_unlock(%s)", (UPGRADE_LOCK_KEY,))
        for replica in replicas:
            replica.join(timeout=120)

    assert [replica.exitcode for replica in replicas] == [0] * REPLICAS
    assert failures.empty(), failures.get()
    assert_at_head(empty_database)
