"""scan_events partitioned by month on PostgreSQL; scan_hours, the per-hour counts a purge keeps

On PostgreSQL the existing table is renamed, a table partitioned by range of ``occurred_at``
takes its name, with one partition per calendar month (UTC) that the existing events need,
partitions from the oldest month a terminal may still upload into (35 days back) to three
months ahead, and a DEFAULT partition for any other time; the events are copied and the old
table is dropped. The primary key becomes (terminal_id, event_id, occurred_at), as a
partitioned table's must hold its partition key; the indexes are those the operators'
queries need (docs/data.md, "Scan events"). On SQLite, which has no partitions, scan_events
stays as it is. Both get ``scan_hours``.

Downgrade puts every event back into one plain table; the per-hour counts of events already
purged are lost with ``scan_hours``.

Revision ID: 0010
Revises: 0009
"""

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

#: As idcode.service.retention (MONTHS_AHEAD, and MAX_EVENT_AGE in days); a migration keeps
#: its own copy, so that it does the same whatever the code becomes.
MONTHS_AHEAD = 3
MAX_EVENT_AGE_DAYS = 35
COLUMNS = "terminal_id, event_id, occurred_at, valid, reason, scene_result, subject, received_at"


def _month(at: datetime) -> datetime:
    return at.astimezone(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def _next(month: datetime) -> datetime:
    return (month + timedelta(days=32)).replace(day=1)


def _bound(month: datetime) -> str:
    return f"'{month:%Y-%m-%d} 00:00:00+00'"


def upgrade() -> None:
    op.create_table(
        "scan_hours",
        sa.Column("hour", sa.DateTime(timezone=True), nullable=False),
        sa.Column("scene", sa.String(length=32), nullable=False),
        sa.Column("site", sa.String(length=64), nullable=False),
        sa.Column("reason", sa.String(length=48), nullable=False),
        sa.Column("valid", sa.Boolean(), nullable=False),
        sa.Column("count", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("hour", "scene", "site", "reason", "valid"),
    )
    if op.get_bind().dialect.name != "postgresql":
        return
    connection = op.get_bind()
    op.execute("ALTER TABLE scan_events RENAME TO scan_events_unpartitioned")
    op.execute(
        "ALTER TABLE scan_events_unpartitioned RENAME CONSTRAINT scan_events_pkey "
        "TO scan_events_unpartitioned_pkey"
    )
    op.execute("ALTER INDEX ix_scan_events_occurred_at RENAME TO ix_scan_events_old_occurred_at")
    op.execute("ALTER INDEX ix_scan_events_reason RENAME TO ix_scan_events_old_reason")
    op.execute(
        "CREATE TABLE scan_events ("
        " terminal_id VARCHAR(36) NOT NULL,"
        " event_id VARCHAR(64) NOT NULL,"
        " occurred_at TIMESTAMP WITH TIME ZONE NOT NULL,"
        " valid BOOLEAN NOT NULL,"
        " reason VARCHAR(48) NOT NULL,"
        " scene_result JSON NOT NULL,"
        " subject VARCHAR(64),"
        " received_at TIMESTAMP WITH TIME ZONE NOT NULL"
        ") PARTITION BY RANGE (occurred_at)"
    )
    op.execute("CREATE TABLE scan_events_default PARTITION OF scan_events DEFAULT")
    now = datetime.now(UTC)
    first, horizon = _month(now - timedelta(days=MAX_EVENT_AGE_DAYS)), _month(now)
    for _ in range(MONTHS_AHEAD + 1):
        horizon = _next(horizon)
    months = {
        _month(month)
        for (month,) in connection.execute(
            sa.text(
                "SELECT DISTINCT date_trunc('month', occurred_at, 'UTC') "
                "FROM scan_events_unpartitioned"
            )
        )
    }
    month = first
    while month < horizon:
        months.add(month)
        month = _next(month)
    # A month past the horizon can only hold times a terminal sent before the service bounded
    # them: those stay in the DEFAULT partition rather than making partitions for year 2999.
    for month in sorted(m for m in months if m < horizon):
        op.execute(
            f"CREATE TABLE scan_events_{month:%Y_%m} PARTITION OF scan_events "
            f"FOR VALUES FROM ({_bound(month)}) TO ({_bound(_next(month))})"
        )
    op.execute(
        f"INSERT INTO scan_events ({COLUMNS}) SELECT {COLUMNS} FROM scan_events_unpartitioned"  # noqa: S608
    )
    op.execute("DROP TABLE scan_events_unpartitioned")
    # Keys and indexes after the copy: built once per partition rather than row by row.
    op.execute(
        "ALTER TABLE scan_events ADD CONSTRAINT scan_events_pkey "
        "PRIMARY KEY (terminal_id, event_id, occurred_at)"
    )
    op.execute(
        "ALTER TABLE scan_events ADD CONSTRAINT scan_events_terminal_id_fkey "
        "FOREIGN KEY (terminal_id) REFERENCES terminals (id)"
    )
    op.execute("CREATE INDEX ix_scan_events_occurred_at ON scan_events (occurred_at)")
    op.execute(
        "CREATE INDEX ix_scan_events_terminal_id_occurred_at "
        "ON scan_events (terminal_id, occurred_at)"
    )
    op.execute(
        "CREATE INDEX ix_scan_events_reason_occurred_at ON scan_events (reason, occurred_at)"
    )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE scan_events RENAME TO scan_events_partitioned")
        op.execute(
            "ALTER TABLE scan_events_partitioned RENAME CONSTRAINT scan_events_pkey "
            "TO scan_events_partitioned_pkey"
        )
        op.execute("ALTER INDEX ix_scan_events_occurred_at RENAME TO ix_scan_events_p_occurred_at")
        op.execute(
            "CREATE TABLE scan_events ("
            " terminal_id VARCHAR(36) NOT NULL REFERENCES terminals (id),"
            " event_id VARCHAR(64) NOT NULL,"
            " occurred_at TIMESTAMP WITH TIME ZONE NOT NULL,"
            " valid BOOLEAN NOT NULL,"
            " reason VARCHAR(48) NOT NULL,"
            " scene_result JSON NOT NULL,"
            " subject VARCHAR(64),"
            " received_at TIMESTAMP WITH TIME ZONE NOT NULL,"
            " CONSTRAINT scan_events_pkey PRIMARY KEY (terminal_id, event_id)"
            ")"
        )
        # One row per (terminal, event id) is what the plain table holds: the first received.
        op.execute(
            f"INSERT INTO scan_events ({COLUMNS}) SELECT DISTINCT ON (terminal_id, event_id) "  # noqa: S608
            f"{COLUMNS} FROM scan_events_partitioned "
            "ORDER BY terminal_id, event_id, received_at"
        )
        op.execute("DROP TABLE scan_events_partitioned")
        op.execute("CREATE INDEX ix_scan_events_occurred_at ON scan_events (occurred_at)")
        op.execute("CREATE INDEX ix_scan_events_reason ON scan_events (reason)")
    op.drop_table("scan_hours")
