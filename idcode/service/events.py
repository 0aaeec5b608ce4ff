"""Scan events terminals upload: what an event may hold, the time window the service takes,
idempotent ingest, and removal of a wrong event by an operator.
"""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator
from sqlalchemy import Insert, String, cast, delete, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from idcode.errors import RequestRefused
from idcode.protocol import MAX_BUNDLE_MAX_AGE, MAX_CLOCK_DRIFT
from idcode.reasons import Reason
from idcode.scenes import (
    SUBJECT_PATTERN,
    check_scene_result,
    load_adapter,
)
from idcode.service.cards import record_audit
from idcode.service.models import (
    ScanEvent,
    TerminalRecord,
    as_utc,
)
from idcode.terminaltoken import MAX_TOKEN_LIFETIME, TERMINAL_AUDIENCE, terminal_token

__all__ = ["MAX_TOKEN_LIFETIME", "TERMINAL_AUDIENCE", "as_utc", "terminal_token"]  # re-exported


EVENT_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")


class ScanEventIn(BaseModel):
    """One journaled decision; no personal data has a place here."""

    model_config = ConfigDict(extra="forbid")

    event_id: str = Field(min_length=1, max_length=64, pattern=f"^{EVENT_ID.pattern}$")
    occurred_at: datetime
    valid: bool
    reason: str = Field(min_length=1, max_length=48, pattern=r"^[a-z0-9_]+$")
    scene_result: dict[str, Any] = Field(default_factory=dict)

    @field_validator("scene_result")
    @classmethod
    def _coarse_scene_result(cls, result: dict[str, Any]) -> dict[str, Any]:
        # The rules every decision already meets on the terminal (scenes.check_scene_result).
        check_scene_result(result)
        return result

    subject: str | None = Field(
        default=None,
        pattern=SUBJECT_PATTERN,
        description="The card pseudonym keyed for this scene (24 hex digits).",
    )


def check_events(scene: str, events: list[ScanEventIn], now: float | None = None) -> None:
    """Refuse events no terminal of ``scene`` can have decided: a reason outside the closed
    set (``SceneAdapter.known_reasons``: the verifier's, the decider's and the adapter's
    own), an admission whose reason is not ``ok`` (and the other way round), or a time outside
    the window the service takes (``event_time_out_of_range``, see ``event_time_problem``).
    The RequestRefused names the first such event, so that a terminal splitting its refused batch
    finds it."""
    now = time.time() if now is None else now
    known = load_adapter(scene).known_reasons()
    for event in events:
        if event.reason not in known:
            raise RequestRefused(
                "unknown_reason",
                f"event {event.event_id}: {event.reason!r} is not a reason of the {scene} scene",
            )
        if event.valid != (event.reason == Reason.OK.value):
            raise RequestRefused(
                "inconsistent_event",
                f"event {event.event_id}: an admission has reason ok, a denial another one",
            )
        problem = event_time_problem(event.occurred_at, now)
        if problem is not None:
            raise RequestRefused("event_time_out_of_range", f"event {event.event_id}: {problem}")


#: How long after an event its terminal may still upload it: the longest a terminal can be
#: meant to decide offline (the longest bundle max-age) and five days to reconnect after that.
MAX_EVENT_AGE = MAX_BUNDLE_MAX_AGE + 5 * 86_400
#: How far in the service's future an event may lie: the clock drift a terminal may have
#: and still authenticate (a terminal whose clock is further ahead cannot upload at all).
MAX_EVENT_AHEAD = MAX_CLOCK_DRIFT


def event_time_problem(at: datetime, now: float) -> str | None:
    """Why an event time is not taken, or None. The window is the service's time minus
    MAX_EVENT_AGE to plus MAX_EVENT_AHEAD: nothing else can come from a terminal that
    authenticates, and every time in it can be stored and read back on any database (a time
    such as year 1 at +14:00 is year 0 in UTC, which no reader of the table can load)."""
    # timestamp() never overflows, unlike a conversion to UTC near year 1 or 9999.
    seconds = (at if at.tzinfo is not None else at.replace(tzinfo=UTC)).timestamp()
    if seconds < now - MAX_EVENT_AGE:
        return (
            f"occurred_at is more than {MAX_EVENT_AGE // 86_400} days before the service's "
            "time; the terminal keeps it"
        )
    if seconds > now + MAX_EVENT_AHEAD:
        return (
            f"occurred_at is more than {MAX_EVENT_AHEAD} s after the service's time; set the "
            "terminal's clock right"
        )
    return None


def ingest(session: Session, terminal: TerminalRecord, events: list[ScanEventIn]) -> int:
    """Store events not stored before (``check_events`` passed them); returns how many were
    new. Idempotent by event id, also when overlapping uploads race: the database skips what
    another has stored. Times are stored in UTC (SQLite would otherwise drop the offset)."""
    fresh: dict[str, ScanEventIn] = {}
    for event in events:
        fresh.setdefault(event.event_id, event)
    if not fresh:
        return 0
    postgres = session.get_bind().dialect.name == "postgresql"
    if postgres:
        # There the table is partitioned by month of occurred_at, so its key holds the time
        # too: an event id stored before under another time is found here, and is a
        # duplicate as on SQLite. (Two uploads racing with one event id under two times, which
        # no journal sends, could both store it; a re-upload carries the same time and meets
        # the other in the key.)
        known = session.scalars(
            select(ScanEvent.event_id).where(
                ScanEvent.terminal_id == terminal.id, ScanEvent.event_id.in_(list(fresh))
            )
        )
        for event_id in known:
            fresh.pop(event_id, None)
        if not fresh:
            return 0
    statement: Insert = (
        postgresql.insert(ScanEvent).on_conflict_do_nothing()
        if postgres
        else sqlite.insert(ScanEvent).on_conflict_do_nothing()
    )
    received_at = datetime.now(UTC)
    rows = [
        {
            "terminal_id": terminal.id,
            "event_id": event.event_id,
            "occurred_at": as_utc(event.occurred_at),
            "valid": event.valid,
            "reason": event.reason,
            "scene_result": event.scene_result,
            "subject": event.subject,
            "received_at": received_at,
        }
        # In one order for every upload, so that racing uploads wait for each other's rows
        # instead of deadlocking.
        for event in sorted(fresh.values(), key=lambda event: event.event_id)
    ]
    stored = session.scalars(statement.values(rows).returning(ScanEvent.event_id)).all()
    return len(stored)


def delete_event(session: Session, terminal_id: str, event_id: str, actor: str) -> dict[str, str]:
    """Remove one stored event (an operator's correction), with an audit record of what it
    was; returns that record's detail. RequestRefused ``event_not_found`` when there is none.

    The time is read as text, so that an event no reader can load (a time written before the
    service bounded event times) can still be removed."""
    found = session.execute(
        select(cast(ScanEvent.occurred_at, String), ScanEvent.reason).where(
            ScanEvent.terminal_id == terminal_id, ScanEvent.event_id == event_id
        )
    ).first()
    if found is None:
        raise RequestRefused("event_not_found", "this terminal has no event with this id")
    session.execute(
        delete(ScanEvent).where(
            ScanEvent.terminal_id == terminal_id, ScanEvent.event_id == event_id
        )
    )
    detail = {
        "terminal": terminal_id,
        "event": event_id,
        "occurred_at": str(found[0]),
        "reason": str(found[1]),
    }
    record_audit(session, actor, "event.delete", detail=detail)
    return detail
