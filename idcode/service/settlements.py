"""A site's settlement for one day, from the events its terminals uploaded: a bus operator's
clearing file, a merchant's discounts. One row per subject (the site's own pseudonym: nothing
personal), then the day's totals; as CSV or JSON Lines. The scene's adapter computes each
subject's row (``SceneAdapter.settle``); this module reads the events and writes the file.
See docs/adapters.md (Settlement) and docs/api.md.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from idcode.errors import RequestRefused, SceneError
from idcode.scenes import (
    DAY,
    MAX_RESULT_INTEGER,
    Event,
    SceneAdapter,
    SceneData,
    load_adapter,
    scene_names,
)
from idcode.service.events import MAX_EVENT_AGE, as_utc
from idcode.service.models import ScanEvent, TerminalRecord
from idcode.service.retention import purged_before
from idcode.service.scenedata import scene_data

FORMATS = {"csv": "text/csv; charset=utf-8", "jsonl": "application/jsonl"}
#: A day's file is read from this many events at a time.
_BATCH = 2_000


@dataclass(frozen=True)
class Settlement:
    """One site's settlement of one day: a row per subject, the totals, and what it was made
    from. ``final``: no terminal can upload an event of that day any more (the service takes
    events up to ``MAX_EVENT_AGE`` old), so the file will not change."""

    scene: str
    site: str
    day: date
    columns: tuple[str, ...]
    rows: list[dict[str, Any]]
    totals: dict[str, int]
    events: int
    final: bool

    def header(self) -> dict[str, Any]:
        """The day's meta data and totals: the JSON Lines file's last record."""
        return {
            "record": "total",
            "scene": self.scene,
            "site": self.site,
            "day": self.day.isoformat(),
            "subjects": len(self.rows),
            "events": self.events,
            "final": self.final,
            **self.totals,
        }

    def jsonl(self) -> str:
        lines = [json.dumps({"record": "subject", **row}) for row in self.rows]
        lines.append(json.dumps(self.header()))
        return "".join(line + "\n" for line in lines)

    def csv(self) -> str:
        """A header line, a row per subject, then the totals (``record`` = ``total``, no
        subject). Only hex subjects and integers: nothing a spreadsheet could take for a
        formula."""
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\r\n")  # RFC 4180
        writer.writerow(["record", "subject", *self.columns])
        for row in self.rows:
            writer.writerow(["subject", row["subject"], *(row[c] for c in self.columns)])
        writer.writerow(["total", "", *(self.totals[c] for c in self.columns)])
        return out.getvalue()

    def filename(self, fmt: str) -> str:
        return f"{self.scene}-{self.site}-{self.day.isoformat()}.{fmt}"


def settleable(scene: str) -> type[SceneAdapter]:
    """The adapter of ``scene`` if it has a settlement; RequestRefused ``unknown_scene`` or
    ``no_settlement`` otherwise."""
    if scene not in scene_names():
        raise RequestRefused("unknown_scene", f"scene must be one of {', '.join(scene_names())}")
    adapter = load_adapter(scene)
    if not adapter.settlement_columns:
        having = [name for name in scene_names() if load_adapter(name).settlement_columns]
        raise RequestRefused(
            "no_settlement",
            f"the {scene} scene has no settlement; these have: {', '.join(having) or 'none'}",
        )
    return adapter


def day_bounds(day: date, data: SceneData) -> tuple[datetime, datetime]:
    """The local day ``day`` at the scene data's UTC offset, as two UTC times [start, end).
    Cut to the years 1-9999 of UTC, which hold every stored event: 0001-01-01 at +08:00
    starts in year 0, and 9999-12-31 at -12:00 ends in year 10000, which no ``datetime``
    holds."""
    midnight = datetime(day.year, day.month, day.day, tzinfo=UTC)
    offset = timedelta(minutes=data.utc_offset_minutes)
    return _shifted(midnight, -offset), _shifted(midnight, timedelta(seconds=DAY) - offset)


def _shifted(at: datetime, by: timedelta) -> datetime:
    try:
        return at + by
    except OverflowError:
        return (datetime.min if by < timedelta(0) else datetime.max).replace(tzinfo=UTC)


def settle(session: Session, scene: str, site: str, day: date, now: float) -> Settlement:
    """The settlement of ``scene`` at ``site`` for the local ``day``, from the events the
    site's terminals (decommissioned ones too) uploaded; RequestRefused as ``settleable``
    says, or ``invalid_scene_data`` when the site's data no longer passes its adapter (the
    adapter changed since it was stored), ``events_purged`` for a day whose events a purge
    removed, or ``settlement_failed`` naming the adapter's defect."""
    adapter = settleable(scene)
    record = scene_data(session, scene, site)
    try:
        data = adapter.parse_data(record.document if record is not None else {})
    except SceneError as exc:
        if record is None:  # a scene whose data has required fields and none is stored yet
            raise RequestRefused(
                "no_scene_data", f"no scene data for {scene}/{site}: nothing to settle by"
            ) from None
        raise RequestRefused("invalid_scene_data", str(exc)) from None
    start, end = day_bounds(day, data)
    purged = purged_before(session)
    if purged is not None and start < purged:
        # A file made from what is left would look like a day without events.
        raise RequestRefused(
            "events_purged",
            f"the events before {purged:%Y-%m-%d} (UTC) were purged (idcode events purge): "
            f"{day} can no longer be settled",
        )
    terminals = select(TerminalRecord.id).where(
        TerminalRecord.scene == scene, TerminalRecord.site == site
    )
    in_day = (
        ScanEvent.terminal_id.in_(terminals),
        ScanEvent.occurred_at >= start,
        ScanEvent.occurred_at < end,
    )
    events = session.scalar(select(func.count()).select_from(ScanEvent).where(*in_day)) or 0
    query = (
        select(ScanEvent)
        .where(*in_day, ScanEvent.subject.is_not(None))
        .order_by(ScanEvent.subject, ScanEvent.occurred_at, ScanEvent.event_id)
        .execution_options(yield_per=_BATCH)
    )
    columns = adapter.settlement_columns
    rows: list[dict[str, Any]] = []
    totals = dict.fromkeys(columns, 0)
    for subject, group in _by_subject(session.scalars(query)):
        row = _row(adapter, data, subject, group)
        for column in columns:
            totals[column] += row[column]
        rows.append(row)
    for column, total in totals.items():
        if abs(total) > MAX_RESULT_INTEGER:
            raise RequestRefused("settlement_failed", f"the total of {column} is out of range")
    final = now >= end.timestamp() + MAX_EVENT_AGE
    return Settlement(scene, site, day, columns, rows, totals, events, final)


def _by_subject(events: Iterator[ScanEvent] | Any) -> Iterator[tuple[str, list[Event]]]:
    """Runs of one subject's events (the query orders by subject, then time)."""
    subject: str | None = None
    group: list[Event] = []
    for stored in events:
        if stored.subject != subject:
            if subject is not None:
                yield subject, group
            subject, group = stored.subject, []
        group.append(_event(stored))
    if subject is not None:
        yield subject, group


def _event(stored: ScanEvent) -> Event:
    result = dict(stored.scene_result or {})
    action = result.pop("action", "")
    return Event(
        event_id=stored.event_id,
        at=int(as_utc(stored.occurred_at).timestamp()),
        subject=stored.subject,
        admitted=stored.valid,  # the service takes an admission only with reason ok
        reason=stored.reason,
        action=action if isinstance(action, str) else "",
        result=result,
    )


def _row(
    adapter: type[SceneAdapter], data: SceneData, subject: str, events: Sequence[Event]
) -> dict[str, Any]:
    """One subject's row, checked: every column an integer in range, and nothing else."""
    try:
        row: Mapping[str, Any] = adapter.settle(data, events)
    except Exception as exc:  # an adapter's defect: name it rather than answer 500
        raise RequestRefused(
            "settlement_failed", f"the {adapter.scene} adapter's settle raised {type(exc).__name__}"
        ) from None
    columns = adapter.settlement_columns
    if set(row) != set(columns) or not all(
        type(row[c]) is int and abs(row[c]) <= MAX_RESULT_INTEGER for c in columns
    ):
        raise RequestRefused(
            "settlement_failed",
            f"the {adapter.scene} adapter's settle must give an integer for exactly "
            f"{', '.join(columns)}",
        )
    return {"subject": subject, **{c: row[c] for c in columns}}
