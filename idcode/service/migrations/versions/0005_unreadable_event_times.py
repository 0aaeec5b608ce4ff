"""remove scan events whose time no reader can load

Before event times were bounded, a terminal could upload ``0001-01-01T00:00:00+14:00`` or
``9999-12-31T23:59:59-14:00``: in UTC year 0 or 10000, which PostgreSQL stores but no Python
reader can load, so every read of events that included one failed. Such events are removed,
each with an audit record of what it was (times within two days of the ends of years 1-9999
in UTC count too: a database session in another time zone cannot load them either).

Revision ID: 0005
Revises: 0004
"""

from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

EARLIEST = datetime(1, 1, 3, tzinfo=UTC)
LATEST = datetime(9999, 12, 29, tzinfo=UTC)

events = sa.table(
    "scan_events",
    sa.column("terminal_id", sa.String),
    sa.column("event_id", sa.String),
    sa.column("occurred_at", sa.DateTime(timezone=True)),
    sa.column("reason", sa.String),
)
audit_records = sa.table(
    "audit_records",
    sa.column("at", sa.DateTime(timezone=True)),
    sa.column("actor", sa.String),
    sa.column("action", sa.String),
    sa.column("detail", sa.JSON),
)


def upgrade() -> None:
    connection = op.get_bind()
    unreadable = sa.or_(events.c.occurred_at < EARLIEST, events.c.occurred_at >= LATEST)
    # The time as text: loading it as a datetime is what fails.
    rows = connection.execute(
        sa.select(
            events.c.terminal_id,
            events.c.event_id,
            sa.cast(events.c.occurred_at, sa.String),
            events.c.reason,
        ).where(unreadable)
    ).all()
    if not rows:
        return
    now = datetime.now(UTC)
    connection.execute(
        audit_records.insert(),
        [
            {
                "at": now,
                "actor": "migration 0005",
                "action": "event.delete",
                "detail": {
                    "terminal": terminal_id,
                    "event": event_id,
                    "occurred_at": str(occurred_at),
                    "reason": str(reason),
                    "why": "occurred_at outside what a reader can load",
                },
            }
            for terminal_id, event_id, occurred_at, reason in rows
        ],
    )
    connection.execute(events.delete().where(unreadable))


def downgrade() -> None:
    pass  # the removed events are in the audit trail; they are not put back
