"""How long scan events are kept: PostgreSQL's monthly partitions of ``scan_events``, made
ahead of the events, and the purge that removes whole months after counting them per hour
into ``scan_hours``, which the console's overview keeps drawing. See docs/data.md ("Scan
events", "Retention").
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Connection, delete, func, literal_column, select, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from idcode.errors import RequestRefused
from idcode.service.cards import record_audit
from idcode.service.database import UPGRADE_LOCK_KEY
from idcode.service.events import MAX_EVENT_AGE
from idcode.service.models import DeploymentSetting, ScanEvent, ScanHour, TerminalRecord
from idcode.service.settings import MIN_EVENT_RETENTION_DAYS

#: Partitions are made for this many months after the current one, so that a month's
#: partition exists long before its first event even if the maintenance (``idcode db
#: upgrade``, ``idcode events purge``) is not run for a while.
MONTHS_AHEAD = 3
#: The shortest retention a purge takes: the oldest event a terminal may still upload
#: (idcode.service.events.MAX_EVENT_AGE), so that no month is purged that may still receive
#: events, nor a day whose settlement is not final.
MIN_RETENTION_DAYS = MIN_EVENT_RETENTION_DAYS
DEFAULT_PARTITION = "scan_events_default"
#: The deployment setting that records the latest cut-off a purge applied: events before it
#: are gone, so a settlement of a day before it is refused rather than made from nothing.
PURGED_BEFORE = "events_purged_before"
_MONTH_PARTITION = re.compile(r"scan_events_(\d{4})_(\d{2})")


def month_start(at: datetime) -> datetime:
    """The first instant of ``at``'s calendar month, UTC."""
    return at.astimezone(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def next_month(month: datetime) -> datetime:
    return (month + timedelta(days=32)).replace(day=1)


def partition_name(month: datetime) -> str:
    return f"scan_events_{month:%Y_%m}"


def is_partitioned(connection: Connection) -> bool:
    """Whether scan_events is partitioned: on PostgreSQL from migration 0010 on."""
    if connection.dialect.name != "postgresql":
        return False
    found = connection.execute(
        text("SELECT 1 FROM pg_partitioned_table WHERE partrelid = to_regclass('scan_events')")
    )
    return found.first() is not None


def month_partitions(connection: Connection) -> dict[datetime, str]:
    """The monthly partitions of scan_events (PostgreSQL), by the month each holds. Known by
    name (``scan_events_YYYY_MM``, as this module makes them): reading the bounds back would
    depend on the session's time zone. A partition named otherwise is never touched."""
    names = connection.scalars(
        text(
            "SELECT child.relname FROM pg_inherits"
            " JOIN pg_class child ON child.oid = pg_inherits.inhrelid"
            " JOIN pg_class parent ON parent.oid = pg_inherits.inhparent"
            " WHERE parent.relname = 'scan_events'"
            " AND parent.relnamespace = to_regnamespace(current_schema())"
        )
    )
    found = {}
    for name in names:
        match = _MONTH_PARTITION.fullmatch(name)
        if match:
            found[datetime(int(match[1]), int(match[2]), 1, tzinfo=UTC)] = name
    return found


def _bound(month: datetime) -> str:
    return f"'{month:%Y-%m-%d} 00:00:00+00'"


def ensure_partitions(connection: Connection, now: datetime) -> list[str]:
    """Make the monthly partitions from the oldest month a terminal may still upload into to
    MONTHS_AHEAD months after ``now``'s (PostgreSQL; nothing on SQLite); returns the names
    made. Events of a month without its partition are in the DEFAULT partition, never lost:
    they are moved into the month's new partition. Under the upgrade's advisory lock, so that
    replicas doing this together do not race; the caller commits."""
    if not is_partitioned(connection):
        return []
    connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": UPGRADE_LOCK_KEY})
    existing = month_partitions(connection)
    month, last = month_start(now - timedelta(seconds=MAX_EVENT_AGE)), month_start(now)
    for _ in range(MONTHS_AHEAD):
        last = next_month(last)
    made = []
    while month <= last:
        if month not in existing:
            _make_partition(connection, month)
            made.append(partition_name(month))
        month = next_month(month)
    return made


def _make_partition(connection: Connection, month: datetime) -> None:
    # Names and bounds are made here from a month, never from input.
    name, start, end = partition_name(month), _bound(month), _bound(next_month(month))
    bounds = f"FOR VALUES FROM ({start}) TO ({end})"
    in_month = f"occurred_at >= {start} AND occurred_at < {end}"
    # Rows of the month in the DEFAULT partition would make the new partition's bounds fail;
    # they move with it. The lock keeps uploads from adding more until the commit.
    connection.execute(text(f"LOCK TABLE {DEFAULT_PARTITION} IN ACCESS EXCLUSIVE MODE"))
    stray = f"SELECT 1 FROM {DEFAULT_PARTITION} WHERE {in_month} LIMIT 1"  # noqa: S608
    if connection.execute(text(stray)).first() is None:
        connection.execute(text(f"CREATE TABLE {name} PARTITION OF scan_events {bounds}"))
        return
    connection.execute(text(f"CREATE TABLE {name} (LIKE scan_events INCLUDING DEFAULTS)"))
    move = (
        f"WITH moved AS (DELETE FROM {DEFAULT_PARTITION} WHERE {in_month} RETURNING *) "  # noqa: S608
        f"INSERT INTO {name} SELECT * FROM moved"
    )
    connection.execute(text(move))
    connection.execute(text(f"ALTER TABLE scan_events ATTACH PARTITION {name} {bounds}"))


@dataclass(frozen=True, slots=True)
class Purge:
    """What a purge removed (or, dry, would remove)."""

    before: datetime
    events: int
    hour_counts: int
    partitions: tuple[str, ...]

    def audit_detail(self, older_than_days: int) -> dict[str, Any]:
        return {
            "older_than_days": older_than_days,
            "before": self.before.isoformat(),
            "events": self.events,
            "hour_counts": self.hour_counts,
            "partitions": list(self.partitions),
        }


def purge_cutoff(older_than_days: int, now: datetime) -> datetime:
    """Events before this are purged: the start of the month (UTC) that holds ``now`` minus
    ``older_than_days``. Whole months on both databases, as PostgreSQL drops whole partitions:
    an event is kept at least ``older_than_days`` and at most a month longer."""
    if older_than_days < MIN_RETENTION_DAYS:
        raise RequestRefused(
            "retention_too_short",
            f"events are kept at least {MIN_RETENTION_DAYS} days: terminals may still upload "
            "events that old, and days that recent may still be settled",
        )
    return month_start(now - timedelta(days=older_than_days))


def _hour(session: Session) -> ColumnElement[Any]:
    """The hour (UTC) an event occurred in, as the database stores a time of that hour."""
    if session.get_bind().dialect.name == "sqlite":
        # SQLAlchemy's own text for a time on SQLite, so that the hour compares and reads back
        # as those it writes.
        return func.strftime("%Y-%m-%d %H:00:00.000000", ScanEvent.occurred_at)
    return func.date_trunc(literal_column("'hour'"), ScanEvent.occurred_at, literal_column("'UTC'"))


def purge(
    session: Session, older_than_days: int, now: datetime, actor: str, dry_run: bool = False
) -> Purge:
    """Remove the events of the months before ``purge_cutoff``, after adding their counts per
    hour, scene, site and reason to ``scan_hours``; with an ``events.purge`` audit record.
    PostgreSQL drops the months' partitions (and deletes such events from the DEFAULT
    partition), SQLite deletes the rows. ``dry_run`` counts only. The caller commits."""
    before = purge_cutoff(older_than_days, now)
    connection = session.connection()
    old = ScanEvent.occurred_at < before
    hour = _hour(session).label("hour")
    per_hour = (
        select(
            hour,
            TerminalRecord.scene,
            TerminalRecord.site,
            ScanEvent.reason,
            ScanEvent.valid,
            func.count().label("count"),
        )
        .join(TerminalRecord, TerminalRecord.id == ScanEvent.terminal_id)
        .where(old)
        .group_by(
            hour, TerminalRecord.scene, TerminalRecord.site, ScanEvent.reason, ScanEvent.valid
        )
    )
    partitions = (
        tuple(
            name
            for month, name in sorted(month_partitions(connection).items())
            if next_month(month) <= before
        )
        if is_partitioned(connection)
        else ()
    )
    counted = per_hour.subquery()
    hour_counts, events = session.execute(
        select(func.count(), func.coalesce(func.sum(counted.c.count), 0))
    ).one()
    result = Purge(before, int(events), int(hour_counts), partitions)
    if dry_run:
        return result
    dialect = postgresql if is_partitioned(connection) else sqlite
    columns = ["hour", "scene", "site", "reason", "valid", "count"]
    insert = dialect.insert(ScanHour).from_select(columns, per_hour)
    # Counts of an hour already kept add up rather than fail (none are expected: a month is
    # purged only once no terminal may upload into it).
    session.execute(
        insert.on_conflict_do_update(
            index_elements=["hour", "scene", "site", "reason", "valid"],
            set_={"count": ScanHour.count + insert.excluded.count},
        )
    )
    for name in partitions:
        session.execute(text(f"DROP TABLE {name}"))
    # What is left before the cut-off: on PostgreSQL the DEFAULT partition's (the older
    # months' partitions are gone, the newer ones are pruned); on SQLite every such row.
    session.execute(delete(ScanEvent).where(old).execution_options(synchronize_session=False))
    earlier = purged_before(session)
    if earlier is None or earlier < before:
        session.merge(DeploymentSetting(name=PURGED_BEFORE, value=before.isoformat()))
    record_audit(session, actor, "events.purge", detail=result.audit_detail(older_than_days))
    return result


def purged_before(session: Session) -> datetime | None:
    """The latest cut-off a purge applied (no event before it is kept), or None."""
    value = session.scalar(
        select(DeploymentSetting.value).where(DeploymentSetting.name == PURGED_BEFORE)
    )
    return None if value is None else datetime.fromisoformat(value)
