"""What the console's pages read from the database: counts for the overview's charts, and
pages of events. Read only; the console's actions go through the API's service functions.

Counts come from the database (scan events as terminals upload them, the audit log), so every
replica draws the same charts and nothing is counted twice.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Float, cast, func, select
from sqlalchemy.orm import InstrumentedAttribute, Session

from idcode.service.events import as_utc
from idcode.service.models import ScanEvent, TerminalRecord

HOUR = 3600
WINDOW_HOURS = 24
EVENTS_PER_PAGE = 50


@dataclass(frozen=True, slots=True)
class HourlyCounts:
    """Counts per series per hour, the ``hours`` oldest first (each an hour's start, UTC)."""

    hours: tuple[datetime, ...]
    series: dict[str, tuple[int, ...]]


def _hour_number(session: Session, column: InstrumentedAttribute[datetime]) -> ColumnElement[Any]:
    """The whole hours since the epoch of a timestamp, in the database's own SQL."""
    seconds: ColumnElement[Any]
    if session.get_bind().dialect.name == "sqlite":
        seconds = cast(func.strftime("%s", column), Float)
    else:
        seconds = func.extract("epoch", column)
    return func.floor(seconds / HOUR)


def window_hours(now: datetime) -> tuple[datetime, ...]:
    """The last WINDOW_HOURS whole hours, the current one last."""
    current = now.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    return tuple(current - timedelta(hours=n) for n in reversed(range(WINDOW_HOURS)))


def scans_per_scene_per_hour(session: Session, now: datetime) -> HourlyCounts:
    """Scans the terminals uploaded, by their scene, per hour of their occurrence."""
    hours = window_hours(now)
    first = int(hours[0].timestamp()) // HOUR
    hour = _hour_number(session, ScanEvent.occurred_at).label("hour")
    rows = session.execute(
        select(TerminalRecord.scene, hour, func.count())
        .join(TerminalRecord, TerminalRecord.id == ScanEvent.terminal_id)
        .where(ScanEvent.occurred_at >= hours[0])
        .group_by(TerminalRecord.scene, hour)
    )
    counts: dict[str, list[int]] = {}
    for scene, number, count in rows:
        index = int(number) - first
        if 0 <= index < WINDOW_HOURS:  # an event stamped in the future is left out
            counts.setdefault(scene, [0] * WINDOW_HOURS)[index] += count
    return HourlyCounts(hours, {scene: tuple(c) for scene, c in sorted(counts.items())})


def denials_by_reason(session: Session, now: datetime) -> list[tuple[str, int]]:
    """Denied scans of the last WINDOW_HOURS by reason, the most frequent first."""
    since = now - timedelta(hours=WINDOW_HOURS)
    rows = session.execute(
        select(ScanEvent.reason, func.count())
        .where(ScanEvent.valid.is_(False), ScanEvent.occurred_at >= since)
        .group_by(ScanEvent.reason)
    )
    return sorted(((reason, count) for reason, count in rows), key=lambda r: (-r[1], r[0]))


@dataclass(frozen=True, slots=True)
class EventFilter:
    """The events page's filter; None is no condition."""

    terminal_id: str | None = None
    reason: str | None = None
    since: datetime | None = None
    until: datetime | None = None


@dataclass(frozen=True, slots=True)
class EventPage:
    events: list[ScanEvent]
    page: int
    has_next: bool


def events_page(session: Session, where: EventFilter, page: int) -> EventPage:
    """One page of events, newest first (page 1 is the newest)."""
    query = select(ScanEvent).order_by(ScanEvent.occurred_at.desc(), ScanEvent.event_id)
    if where.terminal_id is not None:
        query = query.where(ScanEvent.terminal_id == where.terminal_id)
    if where.reason is not None:
        query = query.where(ScanEvent.reason == where.reason)
    if where.since is not None:
        query = query.where(ScanEvent.occurred_at >= as_utc(where.since))
    if where.until is not None:
        query = query.where(ScanEvent.occurred_at < as_utc(where.until))
    found = list(
        session.scalars(query.offset((page - 1) * EVENTS_PER_PAGE).limit(EVENTS_PER_PAGE + 1))
    )
    return EventPage(found[:EVENTS_PER_PAGE], page, len(found) > EVENTS_PER_PAGE)
