"""Scan events kept for a bounded time (idcode.service.retention, migration 0010): monthly
partitions on the real PostgreSQL, a plain table on SQLite, the purge that removes whole
months on both and keeps their counts per hour, which the console's overview still draws.

Each PostgreSQL test has a database of its own (``fresh_postgres_url``): a purge drops
partitions, which the run's shared database must keep.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from fastapi.testclient import TestClient
from sqlalchemy import Connection, func, select, text
from sqlalchemy.orm import Session, sessionmaker

from idcode.errors import RequestRefused
from idcode.service.api.app import create_app
from idcode.service.api.deps import Services
from idcode.service.console import queries
from idcode.service.database import alembic_config, make_engine, make_session_factory, upgrade
from idcode.service.events import ScanEventIn, ingest
from idcode.service.models import (
    AuditRecord,
    ScanEvent,
    ScanHour,
    SceneDataRecord,
    TerminalRecord,
    as_utc,
)
from idcode.service.retention import (
    ensure_partitions,
    month_partitions,
    month_start,
    next_month,
    purge,
    purge_cutoff,
)
from idcode.service.settings import Settings
from idcode.service.settlements import settle
from tests.service.test_console import sign_in

NOW = datetime.now(UTC)


@pytest.fixture(params=["postgresql", "sqlite"])
def sessions(
    request: pytest.FixtureRequest, fresh_postgres_url: Callable[..., str], tmp_path: Path
) -> Iterator[sessionmaker[Session]]:
    if request.param == "postgresql":
        url = Settings(database_url=fresh_postgres_url()).sqlalchemy_url
    else:
        url = f"sqlite:///{tmp_path / 'data' / 'idcode.db'}"
        upgrade(url)
    engine = make_engine(url)
    try:
        yield make_session_factory(engine)
    finally:
        engine.dispose()


def add_terminal(session: Session, scene: str = "community", site: str = "gate-1") -> str:
    terminal_id = str(uuid.uuid4())
    session.add(TerminalRecord(id=terminal_id, scene=scene, site=site, public_jwk={}))
    session.flush()
    return terminal_id


def add_events(session: Session, terminal_id: str, at: datetime, reasons: list[str]) -> None:
    """Events as terminals uploaded them (in the window of their own time), at ``at``."""
    for reason in reasons:
        session.add(
            ScanEvent(
                terminal_id=terminal_id,
                event_id=uuid.uuid4().hex,
                occurred_at=at,
                valid=reason == "ok",
                reason=reason,
                scene_result={},
                received_at=at + timedelta(minutes=5),
            )
        )
    session.flush()


def months_ago(months: int) -> datetime:
    """An hour in the middle of the month ``months`` before this one."""
    month = month_start(NOW)
    for _ in range(months):
        month = month_start(month - timedelta(days=1))
    return month + timedelta(days=14, hours=9)


def event_times(session: Session) -> list[datetime]:
    return sorted(as_utc(at) for at in session.scalars(select(ScanEvent.occurred_at)))


def partition_names(connection: Connection) -> set[str]:
    return set(
        connection.scalars(
            text(
                "SELECT child.relname FROM pg_inherits"
                " JOIN pg_class child ON child.oid = inhrelid"
                " WHERE inhparent = 'scan_events'::regclass"
            )
        )
    )


def test_purge_removes_whole_old_months_keeps_recent_ones_and_their_counts_per_hour(
    sessions: sessionmaker[Session],
) -> None:
    old, older, recent = months_ago(7), months_ago(8), months_ago(1)
    with sessions() as session:
        postgres = session.get_bind().dialect.name == "postgresql"
        if postgres:  # the partitions the service made while it ran in those months
            ensure_partitions(session.connection(), older)
            ensure_partitions(session.connection(), old)
        gate = add_terminal(session)
        bus = add_terminal(session, "transport", "line-7")
        add_events(session, gate, older, ["ok", "ok", "revoked"])
        add_events(session, bus, old, ["ok", "expired"])
        add_events(session, gate, recent, ["ok"])
        session.commit()
        if postgres:
            before = partition_names(session.connection())
            assert {f"scan_events_{older:%Y_%m}", f"scan_events_{old:%Y_%m}"} <= before

        done = purge(session, 184, NOW, "cli:test")
        session.commit()

        assert done.before == month_start(NOW - timedelta(days=184))
        assert done.events == 5
        assert event_times(session) == [recent]
        kept = {
            (as_utc(row.hour), row.scene, row.site, row.reason, row.count)
            for row in session.scalars(select(ScanHour))
        }
        assert kept == {
            (older, "community", "gate-1", "ok", 2),
            (older, "community", "gate-1", "revoked", 1),
            (old, "transport", "line-7", "ok", 1),
            (old, "transport", "line-7", "expired", 1),
        }
        [record] = session.scalars(select(AuditRecord).where(AuditRecord.action == "events.purge"))
        assert record.actor == "cli:test"
        assert record.detail["events"] == 5 and record.detail["older_than_days"] == 184
        if postgres:
            after = partition_names(session.connection())
            gone = {f"scan_events_{older:%Y_%m}", f"scan_events_{old:%Y_%m}"}
            assert gone <= set(done.partitions) and not set(done.partitions) & after
            assert f"scan_events_{recent:%Y_%m}" in after and "scan_events_default" in after

        # The console's overview draws the purged hours from the counts kept, the recent
        # one from its event.
        assert queries.scans_per_scene_per_hour(session, older + timedelta(minutes=30)).series == {
            "community": (0,) * 23 + (3,)
        }
        assert queries.denials_by_reason(session, old) == [("expired", 1)]
        assert queries.scans_per_scene_per_hour(session, recent).series == {
            "community": (0,) * 23 + (1,)
        }

        # A day whose events are gone is no longer settled (a file of nothing would look
        # like a day without passengers); a later one is.
        session.add(
            SceneDataRecord(scene="transport", site="line-7", document={"lines": {"7": 200}})
        )
        session.commit()
        with pytest.raises(RequestRefused, match="can no longer be settled") as refused:
            settle(session, "transport", "line-7", old.date(), NOW.timestamp())
        assert refused.value.reason == "events_purged"
        assert settle(session, "transport", "line-7", recent.date(), NOW.timestamp()).events == 0

        # A second purge finds nothing more and counts nothing twice.
        again = purge(session, 184, NOW, "cli:test")
        session.commit()
        assert (again.events, again.partitions) == (0, ())
        assert session.scalar(select(func.sum(ScanHour.count))) == 5


def test_dry_run_counts_what_a_purge_would_remove_and_changes_nothing(
    sessions: sessionmaker[Session],
) -> None:
    with sessions() as session:
        gate = add_terminal(session)
        add_events(session, gate, months_ago(9), ["ok", "revoked"])
        session.commit()

        done = purge(session, 60, NOW, "cli:test", dry_run=True)
        session.commit()

        assert (done.events, done.hour_counts) == (2, 2)
        assert len(event_times(session)) == 2
        assert session.scalar(select(func.count()).select_from(ScanHour)) == 0
        assert session.scalar(select(func.count()).select_from(AuditRecord)) == 0


def test_a_retention_shorter_than_terminals_may_upload_late_is_refused() -> None:
    with pytest.raises(RequestRefused, match="at least 35 days"):
        purge_cutoff(34, NOW)
    assert purge_cutoff(35, NOW) == month_start(NOW - timedelta(days=35))


def upload(session: Session, terminal_id: str, event_id: str, at: datetime) -> int:
    terminal = session.get(TerminalRecord, terminal_id)
    assert terminal is not None
    event = ScanEventIn(event_id=event_id, occurred_at=at, valid=True, reason="ok")
    stored = ingest(session, terminal, [event])
    session.commit()
    return stored


def test_an_event_id_is_stored_once_even_sent_again_with_another_time(
    sessions: sessionmaker[Session],
) -> None:
    # On PostgreSQL the key holds occurred_at (the partition key); ingest keeps an event id
    # once per terminal as SQLite's key does.
    with sessions() as session:
        gate = add_terminal(session)
        session.commit()
        assert upload(session, gate, "e-1", NOW - timedelta(days=20)) == 1
        assert upload(session, gate, "e-1", NOW - timedelta(days=20)) == 0
        assert upload(session, gate, "e-1", NOW - timedelta(days=2)) == 0
        assert event_times(session) == [
            (NOW - timedelta(days=20)).replace(microsecond=NOW.microsecond)
        ]


def test_events_of_a_month_without_its_partition_are_kept_and_move_into_it_when_made(
    fresh_postgres_url: Callable[..., str],
) -> None:
    engine = make_engine(Settings(database_url=fresh_postgres_url()).sqlalchemy_url)
    try:
        with make_session_factory(engine)() as session:
            connection = session.connection()
            beyond = next_month(max(month_partitions(connection))) + timedelta(days=3)
            gate = add_terminal(session)
            add_events(session, gate, beyond, ["ok", "ok"])
            session.commit()
            where = "SELECT DISTINCT tableoid::regclass::text FROM scan_events"
            assert session.scalars(text(where)).all() == ["scan_events_default"]

            made = ensure_partitions(session.connection(), beyond)
            session.commit()

            assert f"scan_events_{beyond:%Y_%m}" in made
            assert session.scalars(text(where)).all() == [f"scan_events_{beyond:%Y_%m}"]
            assert event_times(session) == [beyond, beyond]
    finally:
        engine.dispose()


# -- migration 0010 -----------------------------------------------------------------------


def _insert_at_0009(connection: Connection, terminal_id: str, event_id: str, at: str) -> None:
    connection.execute(
        text(
            "INSERT INTO scan_events (terminal_id, event_id, occurred_at, valid, reason,"
            " scene_result, received_at) VALUES (:t, :e, :at, true, 'ok', '{}', :at)"
        ),
        {"t": terminal_id, "e": event_id, "at": at},
    )


def _kind(connection: Connection) -> Any:
    return connection.scalar(text("SELECT relkind FROM pg_class WHERE relname = 'scan_events'"))


def test_migration_0010_moves_existing_events_into_month_partitions_and_back(
    fresh_postgres_url: Callable[..., str],
) -> None:
    url = Settings(database_url=fresh_postgres_url("0009")).sqlalchemy_url
    terminal_id = str(uuid.uuid4())
    recent = months_ago(1)
    times = {
        "old": "2025-03-31 23:30:00+00",
        "recent": recent.isoformat(),
        # Stored before the service bounded event times: kept, in the DEFAULT partition.
        "absurd": "2999-01-01 00:00:00+00",
    }
    engine = make_engine(url)
    try:
        with engine.begin() as connection:
            connection.execute(
                text(
                    "INSERT INTO terminals (id, scene, site, public_jwk, active, created_at)"
                    " VALUES (:t, 'community', 'gate-1', '{}', true, now())"
                ),
                {"t": terminal_id},
            )
            for event_id, at in times.items():
                _insert_at_0009(connection, terminal_id, event_id, at)

        upgrade(url)

        with engine.connect() as connection:
            assert _kind(connection) == "p"
            where: dict[str, str] = dict(
                connection.execute(
                    text("SELECT event_id, tableoid::regclass::text FROM scan_events")
                ).all()
            )
            assert where == {
                "old": "scan_events_2025_03",
                "recent": f"scan_events_{recent:%Y_%m}",
                "absurd": "scan_events_default",
            }
            key = connection.scalar(
                text(
                    "SELECT pg_get_constraintdef(oid) FROM pg_constraint"
                    " WHERE conrelid = 'scan_events'::regclass AND contype = 'p'"
                )
            )
            assert key == "PRIMARY KEY (terminal_id, event_id, occurred_at)"
            # The coming months have their partitions before their first event.
            ahead = month_start(NOW)
            for _ in range(3):
                ahead = next_month(ahead)
                assert ahead in month_partitions(connection)

        command.downgrade(alembic_config(url), "0009")

        with engine.connect() as connection:
            assert _kind(connection) == "r"
            assert sorted(connection.scalars(text("SELECT event_id FROM scan_events"))) == [
                "absurd",
                "old",
                "recent",
            ]
            assert connection.scalar(text("SELECT to_regclass('scan_hours')")) is None

        upgrade(url)
        with engine.connect() as connection:
            assert connection.scalar(text("SELECT count(*) FROM scan_events")) == 3
    finally:
        engine.dispose()


def test_console_overview_still_draws_the_hours_whose_events_were_purged(
    make_settings: Callable[..., Settings],
    fresh_postgres_url: Callable[..., str],
    redis_url: str,
) -> None:
    settings = make_settings(database_url=fresh_postgres_url(), redis_url=redis_url)
    old = months_ago(8)
    with TestClient(create_app(settings)) as client:
        services: Services = client.app.state.services  # type: ignore[attr-defined]
        with services.sessions() as session:
            ensure_partitions(session.connection(), old)
            add_events(session, add_terminal(session, "parking"), old, ["ok", "expired", "expired"])
            session.commit()
            assert purge(session, 184, NOW, "cli:test").events == 3
            session.commit()
            assert session.scalar(select(func.count()).select_from(ScanEvent)) == 0
        sign_in(client, "operator")

        page = client.get("/console/", params={"until": f"{old:%Y-%m-%dT%H:%M}"})

        assert page.status_code == 200, page.text
        assert f"<title>parking, {old:%H}:00 UTC: 3</title>" in page.text
        assert "<title>expired: 2</title>" in page.text
        refused = client.get("/console/", params={"until": "yesterday"})
        assert refused.status_code == 422 and "must be a date and time" in refused.text
