"""Bulk enrolment from the citizen-card system: CSV or JSON Lines, validated row by row.

A rejected row is reported by its number, the field and the reason, never by its values.
Valid rows are enrolled in chunks; each chunk commits with its audit record or not at all.
A row whose ID number is already enrolled is never enrolled twice: with the same data as the
card (name, phone, residency, programmes) it is ``unchanged``, which is no error, so an
interrupted import, or the same file, can simply be run again; with other data it is a
rejected row naming the fields that differ (never their values), since an import does not
overwrite a card.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from idcode.errors import CardError
from idcode.service.cards import NewCard, enrol, record_audit
from idcode.service.models import CardRecord
from idcode.service.pii import PersonalDataVault
from idcode.text import printable

ImportFormat = Literal["csv", "jsonl"]
CSV_COLUMNS = ("id_number", "name", "phone", "residency", "programmes")
MAX_REJECTIONS_REPORTED = 1000
MAX_LINE_LENGTH = 64 * 1024  # a card's row is a few hundred characters


@dataclass(frozen=True, slots=True)
class Rejection:
    row: int  # 1-based data row (CSV header excluded)
    field: str
    reason: str


@dataclass
class ImportReport:
    """What an import did. ``imported`` counts cards enrolled, so it is 0 after a dry run,
    whose ``would_import`` counts the rows it would have enrolled."""

    received: int = 0
    imported: int = 0
    unchanged: int = 0
    rejected: int = 0
    dry_run: bool = False
    would_import: int = 0
    rejections: list[Rejection] = field(default_factory=list)

    def reject(self, rejection: Rejection) -> None:
        self.rejected += 1
        if len(self.rejections) < MAX_REJECTIONS_REPORTED:
            self.rejections.append(rejection)

    def to_json(self) -> dict[str, Any]:
        counts: dict[str, Any] = {
            "received": self.received,
            "imported": self.imported,
            "unchanged": self.unchanged,
            "rejected": self.rejected,
            "dry_run": self.dry_run,
        }
        if self.dry_run:
            counts["would_import"] = self.would_import
        return {
            **counts,
            "rejections": [
                {"row": r.row, "field": r.field, "reason": r.reason} for r in self.rejections
            ],
            "rejections_truncated": self.rejected > len(self.rejections),
        }


Parsed = tuple[int, dict[str, Any] | Rejection]


def parse_rows(lines: Iterable[str], fmt: ImportFormat) -> Iterator[Parsed]:
    """Rows as dicts, or a Rejection for a row that cannot even be read."""
    if fmt == "csv":
        yield from _parse_csv(lines)
    else:
        yield from _parse_jsonl(lines)


def _parse_csv(lines: Iterable[str]) -> Iterator[Parsed]:
    reader = csv.DictReader(lines)
    header = reader.fieldnames or []
    missing = {"id_number", "name"} - set(header)
    unknown = set(header) - set(CSV_COLUMNS)
    if missing or unknown:
        problem = f"missing {sorted(missing)}" if missing else f"unknown {sorted(unknown)}"
        yield 0, Rejection(0, "header", f"CSV header must name {', '.join(CSV_COLUMNS)}: {problem}")
        return
    rows = iter(reader)
    number = 0
    while True:
        number += 1
        try:
            row = next(rows)
        except StopIteration:
            return
        except csv.Error as exc:  # e.g. a field over csv.field_size_limit(); go on after it
            yield number, Rejection(number, "row", f"not readable as CSV: {exc}")
            continue
        if None in row:
            yield number, Rejection(number, "row", "more fields than the header names")
            continue
        programmes = (row.get("programmes") or "").replace(";", " ").split()
        yield (
            number,
            {**{k: v for k, v in row.items() if v not in (None, "")}, "programmes": programmes},
        )


def _parse_jsonl(lines: Iterable[str]) -> Iterator[Parsed]:
    # A row's number is its line number, blank lines included, so an operator can find it.
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        if len(line) > MAX_LINE_LENGTH:
            yield number, Rejection(number, "row", f"longer than {MAX_LINE_LENGTH} characters")
            continue
        try:
            row = json.loads(line)
        except (ValueError, RecursionError):
            yield number, Rejection(number, "row", "not a JSON object")
            continue
        if not isinstance(row, dict):
            yield number, Rejection(number, "row", "not a JSON object")
            continue
        yield number, row


def validate(number: int, row: dict[str, Any]) -> NewCard | Rejection:
    try:
        return NewCard.model_validate(row)
    except ValidationError as exc:
        error = exc.errors(include_input=False, include_url=False)[0]
        location = printable(".".join(str(part) for part in error["loc"])) or "row"
        message = str(error["msg"]).removeprefix("Value error, ")
        return Rejection(number, location, message)


def import_cards(
    sessions: sessionmaker[Session],
    vault: PersonalDataVault,
    rows: Iterable[Parsed],
    actor: str,
    *,
    chunk_size: int = 1000,
    dry_run: bool = False,
    all_or_nothing: bool = False,
    commit_chunks: bool = True,
    progress: Callable[[ImportReport], None] | None = None,
) -> ImportReport:
    """Validate and enrol ``rows``; see the module docstring for what commits when.

    ``commit_chunks`` commits every ``chunk_size`` rows (for files of millions of rows, which
    can then be re-run after an interruption); without it all valid rows commit together.
    With ``all_or_nothing`` they commit only if no row was rejected; with ``dry_run`` never.
    """
    report = ImportReport(dry_run=dry_run)
    seen: set[bytes] = set()

    def check_only() -> bool:
        # Rows that will not commit are not inserted: a rolled-back insert would still use
        # up a status-list index (a PostgreSQL sequence does not roll back).
        return dry_run or (all_or_nothing and report.rejected > 0)

    session = sessions()
    try:
        chunk: list[tuple[int, NewCard]] = []
        for number, parsed in rows:
            report.received += number > 0
            candidate = parsed if isinstance(parsed, Rejection) else validate(number, parsed)
            if isinstance(candidate, Rejection):
                report.reject(candidate)
                continue
            id_hash = vault.lookup_hash(candidate.id_number)
            if id_hash in seen:
                report.reject(Rejection(number, "id_number", "duplicate of an earlier row"))
                continue
            seen.add(id_hash)
            chunk.append((number, candidate))
            if len(chunk) >= chunk_size:
                enrolled_before = report.imported
                _enrol_chunk(session, vault, chunk, actor, report, check_only())
                chunk = []
                if commit_chunks and not (dry_run or all_or_nothing):
                    # The chunk's cards and their audit record commit together, so an
                    # import killed half-way leaves no card without an audit trail.
                    record_audit(
                        session,
                        actor,
                        "cards.import.chunk",
                        detail={
                            "imported": report.imported - enrolled_before,
                            "rows_read": report.received,
                        },
                    )
                    session.commit()
                if progress:
                    progress(report)
        _enrol_chunk(session, vault, chunk, actor, report, check_only())
        if dry_run or (all_or_nothing and report.rejected):
            session.rollback()
            if dry_run:
                report.would_import = report.imported
            report.imported = 0
        # Every import is audited, also one that enrolled nothing.
        detail = report.to_json()
        del detail["rejections"], detail["rejections_truncated"]
        record_audit(session, actor, "cards.import", detail=detail)
        session.commit()
        if progress:
            progress(report)
        return report
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def _enrol_chunk(
    session: Session,
    vault: PersonalDataVault,
    chunk: list[tuple[int, NewCard]],
    actor: str,
    report: ImportReport,
    check_only: bool,
) -> None:
    if not chunk:
        return
    hashes = [vault.lookup_hash(card.id_number) for _, card in chunk]
    enrolled = {
        record.id_hash: record
        for record in session.scalars(select(CardRecord).where(CardRecord.id_hash.in_(hashes)))
    }
    for (number, card), id_hash in zip(chunk, hashes, strict=True):
        if id_hash in enrolled:
            _already_enrolled(vault, number, card, enrolled[id_hash], report)
            continue
        if not check_only:
            try:
                # A savepoint per row: when another import enrols the same citizen at the
                # same moment, this row is compared with that card and the chunk goes on.
                with session.begin_nested():
                    enrol(session, vault, card, actor, audit=False)
            except IntegrityError:
                _enrolled_meanwhile(session, vault, number, card, id_hash, report)
                continue
            except CardError as exc:
                if exc.reason != "already_enrolled":
                    raise
                _enrolled_meanwhile(session, vault, number, card, id_hash, report)
                continue
        report.imported += 1


def _enrolled_meanwhile(
    session: Session,
    vault: PersonalDataVault,
    number: int,
    card: NewCard,
    id_hash: bytes,
    report: ImportReport,
) -> None:
    record = session.scalars(select(CardRecord).where(CardRecord.id_hash == id_hash)).first()
    if record is None:  # the unique violation was another column's; nothing to compare with
        report.reject(Rejection(number, "id_number", "could not be enrolled; run it again"))
    else:
        _already_enrolled(vault, number, card, record, report)


def _already_enrolled(
    vault: PersonalDataVault,
    number: int,
    card: NewCard,
    record: CardRecord,
    report: ImportReport,
) -> None:
    """An enrolled ID number: ``unchanged`` with the card's data, else a rejection naming
    the fields that differ, by name only (the report never repeats personal data)."""
    differing = differing_fields(vault, card, record)
    if not differing:
        report.unchanged += 1
        return
    report.reject(
        Rejection(
            number,
            "id_number",
            f"already enrolled with a different {', '.join(differing)}; an import does not "
            "change an enrolled card",
        )
    )


def differing_fields(vault: PersonalDataVault, card: NewCard, record: CardRecord) -> list[str]:
    """The fields of ``card`` that are not what ``record`` holds, in the file's order."""
    seal = {"card_id": record.id}
    phone = vault.decrypt(record.phone_enc, field="phone", **seal) if record.phone_enc else None
    theirs = {
        "name": vault.decrypt(record.name_enc, field="name", **seal),
        "phone": phone,
        "residency": record.residency,
        "programmes": record.programmes,
    }
    ours = {
        "name": card.name,
        "phone": card.phone,
        "residency": int(card.residency_value),
        "programmes": int(card.programme_flags),
    }
    return [name for name in ours if ours[name] != theirs[name]]


def lines_of(body: bytes) -> Iterator[str]:
    """Text lines of an uploaded body (UTF-8, with or without a byte-order mark)."""
    return iter(io.StringIO(body.decode("utf-8-sig"), newline=""))
