"""Alembic environment: runs idcode's migrations against the URL in the Alembic config."""

from __future__ import annotations

from datetime import UTC, datetime

from alembic import context
from sqlalchemy import create_engine, pool, text

from idcode.service.database import UPGRADE_LOCK_KEY
from idcode.service.models import Base

target_metadata = Base.metadata


def run_migrations() -> None:
    url = context.config.get_main_option("sqlalchemy.url")
    assert url is not None
    if context.is_offline_mode():
        context.configure(url=url, target_metadata=target_metadata, literal_binds=True)
        with context.begin_transaction():
            context.run_migrations()
        return
    connectable = create_engine(url, poolclass=pool.NullPool)
    with connectable.connect() as connection:
        postgres = connection.dialect.name == "postgresql"
        if postgres:
            # Replicas that start together each run `idcode db upgrade`: without this they
            # raced, creating the same tables, and all but one failed (a unique violation in
            # pg_type). The lock is the session's, taken before Alembic reads the current
            # revision and held for the whole upgrade (whatever transactions the migrations
            # use), so a replica that waited finds the newest revision and has nothing to do.
            # The connection is not pooled: closing it below ends the session and releases
            # the lock, also when a migration failed; so does the process dying.
            connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": UPGRADE_LOCK_KEY})
            connection.commit()
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            render_as_batch=connection.dialect.name == "sqlite",
        )
        with context.begin_transaction():
            context.run_migrations()
            if postgres:
                # Imported here: it imports the service's modules, which a migration run
                # from Alembic's own command line need not load on SQLite.
                from idcode.service.retention import ensure_partitions

                # The coming months' partitions of scan_events (once it is partitioned), on
                # every upgrade, under the same lock.
                ensure_partitions(connection, datetime.now(UTC))


run_migrations()
