"""Alembic environment: runs idcode's migrations against the URL in the Alembic config."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine, pool, text

from idcode.service.models import Base

target_metadata = Base.metadata

#: The PostgreSQL advisory lock held while migrating: a constant of idcode's own (the first
#: 8 bytes of SHA-256("idcode db upgrade"), as a signed 64-bit integer), so that it does not
#: meet another application's locks in a shared database.
UPGRADE_LOCK_KEY = -3241362861269674015


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
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            render_as_batch=connection.dialect.name == "sqlite",
        )
        with context.begin_transaction():
            if connection.dialect.name == "postgresql":
                # Replicas that start together each run `idcode db upgrade`: without this
                # they raced, creating the same tables, and all but one failed (a unique
                # violation in pg_type). The lock is the transaction's, taken before Alembic
                # reads the current revision, so the replica that waited finds the newest one
                # and has nothing to do; it is released at commit, or if the process dies.
                connection.execute(
                    text("SELECT pg_advisory_xact_lock(:key)"), {"key": UPGRADE_LOCK_KEY}
                )
            context.run_migrations()


run_migrations()
