"""The terminal's journal: every decision, written to SQLite (WAL, synchronous=FULL) before the
terminal acts on it, and kept until the service has it.

The journal is also the terminal's memory. Adapters read their history from it (a car park's
open entries, today's meals), and replay detection asks it which code ids were journaled, so
both survive restarts and power cuts and are shared by the processes using one journal file
(a car park's entry and exit lanes). Code ids stay local: they are never uploaded.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from idcode.reasons import Reason
from idcode.replay import ReplayCache
from idcode.scenes import Decision, Event, ResultValue, Scan
from idcode.secretfiles import check_trusted_directory, check_trusted_file

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id TEXT NOT NULL UNIQUE,
    terminal_id TEXT NOT NULL,
    at INTEGER NOT NULL,
    admitted INTEGER NOT NULL,
    reason TEXT NOT NULL,
    action TEXT NOT NULL,
    subject TEXT,
    result TEXT NOT NULL,
    code_id BLOB,
    upload INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS events_by_subject ON events (subject, at);
CREATE INDEX IF NOT EXISTS events_by_time ON events (at);
CREATE UNIQUE INDEX IF NOT EXISTS events_code_once ON events (code_id) WHERE code_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS events_to_upload ON events (terminal_id, seq) WHERE upload = 0;
"""

# The upload column: 0 pending, 1 stored by the service (or known to it), 2 refused by the
# service as invalid (kept, never resent; see Journal.mark_refused).
PENDING, UPLOADED, REFUSED = 0, 1, 2


@dataclass(frozen=True, slots=True)
class JournalEntry:
    seq: int
    event_id: str
    terminal_id: str
    at: int
    admitted: bool
    reason: str
    action: str
    subject: str | None
    result: Mapping[str, ResultValue]

    def to_upload(self) -> dict[str, Any]:
        """The event as ``POST /v1/events`` takes it: coarse results and the scene subject."""
        return {
            "event_id": self.event_id,
            "occurred_at": datetime.fromtimestamp(self.at, UTC).isoformat(),
            "valid": self.admitted,
            "reason": self.reason,
            "scene_result": {"action": self.action, **self.result}
            if self.action
            else dict(self.result),
            "subject": self.subject,
        }

    def to_event(self) -> Event:
        return Event(
            self.event_id,
            self.at,
            self.subject,
            self.admitted,
            self.reason,
            self.action,
            self.result,
        )


class Journal:
    """One SQLite journal file. Thread-safe: one connection, one lock."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        # Owner only, also when it lives outside the terminal's 0700 directory (a journal
        # the lanes of a car park share); SQLite gives its -wal and -shm files the same mode.
        # Never through a link, and never in a directory or file another user could swap:
        # the journal is the record of every decision and of every code already seen.
        check_trusted_directory(path.parent)
        if os.path.lexists(path):
            check_trusted_file(path)
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY | getattr(os, "O_NOFOLLOW", 0), 0o600))
        self._lock = threading.RLock()
        self._db = sqlite3.connect(path, timeout=30, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        # FULL: a committed decision survives a power cut, not only a process kill.
        self._db.execute("PRAGMA synchronous=FULL")
        with self._transaction() as db:
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    db.execute(statement)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    # -- writing ---------------------------------------------------------------------------

    def record(self, terminal_id: str, scan: Scan, decision: Decision) -> JournalEntry:
        """Journal one decision durably; the terminal acts on it only after this returns."""
        claims = scan.verdict.claims
        # Only a code the verifier accepted is used up (as in the service's replay state):
        # one refused, e.g. not yet valid, may come back.
        code_id = claims.code_id if claims is not None and scan.verdict.valid else None
        try:
            return self._insert(terminal_id, scan, decision, code_id)
        except sqlite3.IntegrityError:
            # Another process on this journal (the other lane) used the same code between our
            # replay check and this insert: the unique code id makes this one the replay.
            replayed = Decision.deny(Reason.REPLAYED.value)
            return self._insert(terminal_id, scan, replayed, None)

    def _insert(
        self, terminal_id: str, scan: Scan, decision: Decision, code_id: bytes | None
    ) -> JournalEntry:
        entry = JournalEntry(
            seq=0,
            event_id=uuid.uuid4().hex,
            terminal_id=terminal_id,
            at=scan.at,
            admitted=decision.admitted,
            reason=decision.reason,
            action=decision.action,
            subject=decision.subject or scan.subject,
            result=dict(decision.result),
        )
        with self._transaction() as db:
            cursor = db.execute(
                "INSERT INTO events (event_id, terminal_id, at, admitted, reason, action, subject,"
                " result, code_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    entry.event_id,
                    terminal_id,
                    entry.at,
                    int(entry.admitted),
                    entry.reason,
                    entry.action,
                    entry.subject,
                    json.dumps(entry.result, separators=(",", ":")),
                    code_id,
                ),
            )
        return JournalEntry(int(cursor.lastrowid or 0), *_fields_after_seq(entry))

    # -- uploads -----------------------------------------------------------------------------

    def pending(self, terminal_id: str, limit: int) -> list[JournalEntry]:
        """The oldest events of ``terminal_id`` the service does not have yet."""
        return self._select(
            "WHERE terminal_id = ? AND upload = 0 ORDER BY seq LIMIT ?", (terminal_id, limit)
        )

    def pending_count(self, terminal_id: str | None = None) -> int:
        query = "SELECT count(*) FROM events WHERE upload = 0"
        with self._lock:
            if terminal_id is None:
                return int(self._db.execute(query).fetchone()[0])
            return int(
                self._db.execute(query + " AND terminal_id = ?", (terminal_id,)).fetchone()[0]
            )

    def mark_uploaded(self, entries: list[JournalEntry]) -> None:
        self._mark(entries, UPLOADED)

    def mark_refused(self, entries: list[JournalEntry]) -> None:
        """The service refused these as invalid: keep them, but stop resending them."""
        self._mark(entries, REFUSED)

    def _mark(self, entries: list[JournalEntry], state: int) -> None:
        with self._transaction() as db:
            db.executemany(
                "UPDATE events SET upload = ? WHERE seq = ?", [(state, e.seq) for e in entries]
            )

    def prune(self, before: int) -> int:
        """Delete uploaded events older than ``before``; returns how many. Pending or refused
        events are never deleted."""
        with self._transaction() as db:
            return db.execute("DELETE FROM events WHERE upload = 1 AND at < ?", (before,)).rowcount

    # -- reading -----------------------------------------------------------------------------

    def entries(self, terminal_id: str | None = None) -> list[JournalEntry]:
        """Every event, oldest first (for tools and tests; the journal may be large)."""
        if terminal_id is None:
            return self._select("ORDER BY seq", ())
        return self._select("WHERE terminal_id = ? ORDER BY seq", (terminal_id,))

    def journaled(self, code_id: bytes) -> bool:
        with self._lock:
            row = self._db.execute(
                "SELECT 1 FROM events WHERE code_id = ? LIMIT 1", (code_id,)
            ).fetchone()
        return row is not None

    def _select(self, where: str, parameters: tuple[Any, ...]) -> list[JournalEntry]:
        with self._lock:
            rows = self._db.execute(
                # where is built in this module from constant clauses; values are parameters
                "SELECT seq, event_id, terminal_id, at, admitted, reason, action, subject, result"  # noqa: S608
                f" FROM events {where}",
                parameters,
            ).fetchall()
        return [_entry(row) for row in rows]

    # -- History, for adapters -----------------------------------------------------------

    def last(
        self,
        *,
        subject: str | None = None,
        action: str | None = None,
        since: int = 0,
        admitted: bool | None = True,
    ) -> Event | None:
        where, parameters = _filters(subject, action, since, admitted)
        # Journal order, not the time stamps: lanes sharing a journal may have clocks a few
        # seconds apart, and MemoryHistory is in insertion order too.
        rows = self._select(f"{where} ORDER BY seq DESC LIMIT 1", parameters)
        return rows[0].to_event() if rows else None

    def count(
        self,
        *,
        since: int,
        subject: str | None = None,
        action: str | None = None,
        admitted: bool | None = True,
    ) -> int:
        where, parameters = _filters(subject, action, since, admitted)
        with self._lock:
            return int(
                self._db.execute(
                    f"SELECT count(*) FROM events {where}",  # noqa: S608  (built from constants)
                    parameters,
                ).fetchone()[0]
            )


def _filters(
    subject: str | None, action: str | None, since: int, admitted: bool | None
) -> tuple[str, tuple[Any, ...]]:
    clauses: list[str] = ["at >= ?"]
    parameters: list[object] = [since]
    for column, value in (("subject", subject), ("action", action)):
        if value is not None:
            clauses.append(f"{column} = ?")
            parameters.append(value)
    if admitted is not None:
        clauses.append("admitted = ?")
        parameters.append(int(admitted))
    return "WHERE " + " AND ".join(clauses), tuple(parameters)


def _fields_after_seq(entry: JournalEntry) -> tuple[Any, ...]:
    return (
        entry.event_id,
        entry.terminal_id,
        entry.at,
        entry.admitted,
        entry.reason,
        entry.action,
        entry.subject,
        entry.result,
    )


def _entry(row: tuple[Any, ...]) -> JournalEntry:
    seq, event_id, terminal_id, at, admitted, reason, action, subject, result = row
    return JournalEntry(
        seq, event_id, terminal_id, at, bool(admitted), reason, action, subject, json.loads(result)
    )


class JournalReplay:
    """Replay state over the journal: a code id is replayed when this process saw it or any
    process journaled it, so replay detection survives restarts and spans a shared journal."""

    def __init__(self, journal: Journal, capacity: int = 100_000) -> None:
        self.journal = journal
        self.seen = ReplayCache(capacity)

    def check_and_record(self, code_id: bytes, forget_after: int, now: int) -> bool:
        seen_here = self.seen.check_and_record(code_id, forget_after, now)
        return seen_here or self.journal.journaled(code_id)
