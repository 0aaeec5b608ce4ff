"""Database engine, sessions and migrations (Alembic) for the configured URL."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import ExceptionContext
from sqlalchemy.orm import Session, sessionmaker

from idcode.secretfiles import check_trusted_directory, check_trusted_file

MIGRATIONS = Path(__file__).parent / "migrations"
#: The PostgreSQL advisory lock held while migrating (and while making scan_events'
#: partitions, idcode.service.retention): a constant of idcode's own (the first 8 bytes of
#: SHA-256("idcode db upgrade"), as a signed 64-bit integer), so that it does not meet
#: another application's locks in a shared database.
UPGRADE_LOCK_KEY = -3241362861269674015


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            # It holds card status and terminal keys: a file another user could write (or
            # swap, through its directory or a link) could unrevoke a card or add a terminal.
            check_trusted_directory(Path(path).parent)
            if os.path.lexists(path):
                check_trusted_file(Path(path))
            # The file holds ciphertexts and keyed hashes only, but still: owner only.
            os.close(os.open(path, os.O_CREAT | os.O_WRONLY | getattr(os, "O_NOFOLLOW", 0), 0o600))
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(connection: Any, _record: Any) -> None:
            cursor = connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

        return engine
    # pre_ping: a connection broken while PostgreSQL was away is replaced before it is used,
    # so the first request after PostgreSQL returns succeeds. The timeouts turn a database
    # that does not answer into a prompt 503 rather than requests hanging. Twenty connections
    # at most, all kept: with ten kept and ten more on demand, a process under a steady 10-20
    # concurrent requests closed each extra connection as it came back and opened another
    # (PostgreSQL forks a backend for each), about 24 a second in bench/city.py's peak hour.
    engine = create_engine(
        url,
        pool_pre_ping=True,
        pool_size=20,
        max_overflow=0,
        pool_timeout=5,
        connect_args={"connect_timeout": 5},
    )
    event.listen(engine, "handle_error", _failed_ping_means_a_lost_connection)
    return engine


def _failed_ping_means_a_lost_connection(context: ExceptionContext) -> None:
    """A pooled connection whose ping fails for any reason is not used: it is replaced.

    SQLAlchemy replaces it only when the error looks like a disconnect. But when the server
    goes away under a pooled connection, psycopg can fail the ping's ``SELECT 1`` and then
    refuse to restore autocommit on the half-broken connection ("can't change 'autocommit'
    now: connection in transaction status UNKNOWN"), a ProgrammingError that hides the
    OperationalError: the request answered 500 instead of 503 ``database_unavailable``."""
    if context.is_pre_ping:
        context.is_disconnect = True


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def upgrade(url: str, revision: str = "head") -> None:
    """Bring the database at ``url`` to ``revision`` (creating a SQLite file if needed)."""
    make_engine(url).dispose()  # creates the SQLite directory
    command.upgrade(alembic_config(url), revision)


def ping(engine: Engine) -> None:
    with engine.connect() as connection:
        connection.execute(text("SELECT 1"))


def schema_revision(engine: Engine) -> tuple[str | None, str | None]:
    """(the database's Alembic revision, the newest one this code has)."""
    head = ScriptDirectory(str(MIGRATIONS)).get_current_head()
    with engine.connect() as connection:
        current = MigrationContext.configure(connection).get_current_revision()
    return current, head
