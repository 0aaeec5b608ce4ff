"""What the console's pages read from the database: counts for the overview's charts, and
pages of events. Read only; the console's actions go through the API's service functions.

Counts come from the database (scan events as terminals upload them, the audit log), so every
replica draws the same charts and nothing is counted twice. The hours whose events a purge
removed are drawn from the counts it kept (``scan_hours``, idcode.service.retention): an hour
has either its events or its counts, never both, so the two are added.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Float, cast, func, select
from sqlalchemy.orm import InstrumentedAttribute, Session

from idcode.service.events import as_utc
from idcode.service.models import ScanEvent, ScanHour, TerminalRecord

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
    """The WINDOW_HOURS whole hours up to ``now``'s, that one last."""
    current = now.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    return tuple(current - timedelta(hours=n) for n in reversed(range(WINDOW_HOURS)))


def scans_per_scene_per_hour(session: Session, now: datetime) -> HourlyCounts:
    """Scans the terminals uploaded, by their scene, per hour of their occurrence, in the
    window that ends with ``now``'s hour."""
    hours = window_hours(now)
    first, end = int(hours[0].timestamp()) // HOUR, hours[-1] + timedelta(hours=1)
    hour = _hour_number(session, ScanEvent.occurred_at).label("hour")
    events = session.execute(
        select(TerminalRecord.scene, hour, func.count())
        .join(TerminalRecord, TerminalRecord.id == ScanEvent.terminal_id)
        .where(ScanEvent.occurred_at >= hours[0], ScanEvent.occurred_at < end)
        .group_by(TerminalRecord.scene, hour)
    )
    kept_hour = _hour_number(session, ScanHour.hour).label("hour")
    kept = session.execute(
        select(ScanHour.scene, kept_hour, func.sum(ScanHour.count))
        .where(ScanHour.hour >= hours[0], ScanHour.hour < end)
        .group_by(ScanHour.scene, kept_hour)
    )
    counts: dict[str, list[int]] = {}
    for scene, number, count in [*events, *kept]:
        index = int(number) - first
        if 0 <= index < WINDOW_HOURS:
            counts.setdefault(scene, [0] * WINDOW_HOURS)[index] += int(count)
    return HourlyCounts(hours, {scene: tuple(c) for scene, c in sorted(counts.items())})


def denials_by_reason(session: Session, now: datetime) -> list[tuple[str, int]]:
    """Denied scans by reason in the window that ends with ``now``'s hour, the most frequent
    first."""
    hours = window_hours(now)
    since, end = hours[0], hours[-1] + timedelta(hours=1)
    events = session.execute(
        select(ScanEvent.reason, func.count())
        .where(
            ScanEvent.valid.is_(False), ScanEvent.occurred_at >= since, ScanEvent.occurred_at < end
        )
        .group_by(ScanEvent.reason)
    )
    kept = session.execute(
        select(ScanHour.reason, func.sum(ScanHour.count))
        .where(ScanHour.valid.is_(False), ScanHour.hour >= since, ScanHour.hour < end)
        .group_by(ScanHour.reason)
    )
    counts: dict[str, int] = {}
    for reason, count in [*events, *kept]:
        counts[reason] = counts.get(reason, 0) + int(count)
    return sorted(counts.items(), key=lambda r: (-r[1], r[0]))


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
