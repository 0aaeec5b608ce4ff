"""The status list terminals hold: its version, the whole list, and the deltas between versions,
from the log of status changes (``status_changes``).
"""

from __future__ import annotations

from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from idcode.service.devices import removed_since
from idcode.service.models import (
    CardRecord,
    CardStatus,
    StatusChange,
)
from idcode.statuslist import StatusDelta, StatusList
from idcode.terminaltoken import MAX_TOKEN_LIFETIME, TERMINAL_AUDIENCE, terminal_token

__all__ = ["MAX_TOKEN_LIFETIME", "TERMINAL_AUDIENCE", "terminal_token"]  # re-exported


def status_version(session: Session) -> int:
    """The status list's version, once no status change is still being committed.

    Versions come from a sequence, so a change can commit after one with a higher id; a
    terminal already at that higher version would never be sent it. On PostgreSQL this read
    therefore waits for changes in flight and holds new ones back until its transaction ends
    (SQLite commits one writer at a time, in id order)."""
    return status_version_and_size(session)[0]


def status_version_and_size(session: Session) -> tuple[int, int]:
    """(version, size) of the status list, in one read after ``status_version``'s wait: what a
    terminal's sync needs before, and often instead of, the list itself."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("LOCK TABLE status_changes IN SHARE MODE"))
    row = session.execute(
        select(
            select(func.max(StatusChange.id)).scalar_subquery(),
            select(func.max(CardRecord.status_index)).scalar_subquery(),
        )
    ).one()
    return int(row[0] or 0), int(row[1] or 0) + 1


def status_list(session: Session, size: int) -> StatusList:
    """The list of ``size`` entries from the cards as they are now: a card not active is set.
    Read in the transaction ``status_version_and_size`` gave ``size`` in."""
    status = StatusList(size)
    for index in session.scalars(
        select(CardRecord.status_index).where(CardRecord.status != CardStatus.ACTIVE.value)
    ):
        status.set(index, True)
    return status


def current_status(session: Session) -> tuple[int, StatusList]:
    """(version, list) from the cards as they are now."""
    version, size = status_version_and_size(session)
    return version, status_list(session, size)


def status_delta(session: Session, since: int, now: int) -> StatusDelta:
    """What changed after version ``since``: the last change of each index wins, and the
    devices removed meanwhile whose credentials may still be presented (devices.py)."""
    target, size = status_version_and_size(session)
    if since >= target:
        # Nothing after the version held: no change has an id above ``target`` (they are held
        # back until this transaction ends), so the two reads below would find nothing.
        return StatusDelta(since, target, size, (), (), revoked_devices=())
    final: dict[int, bool] = {}
    for change in session.scalars(
        select(StatusChange)
        .where(StatusChange.id > since, StatusChange.device_id.is_(None))
        .order_by(StatusChange.id)
    ):
        assert change.status_index is not None and change.invalid is not None
        final[change.status_index] = change.invalid
    return StatusDelta(
        since,
        target,
        size,
        tuple(sorted(i for i, invalid in final.items() if invalid)),
        tuple(sorted(i for i, invalid in final.items() if not invalid)),
        revoked_devices=tuple(removed_since(session, since, now)),
    )
