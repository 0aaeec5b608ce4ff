"""Relying parties as this process last read them (key, purposes, attributes, state), so that
authenticating a counter's request takes no database session on the common path.

An entry is used for at most ``MAX_AGE`` seconds, then read again. A deactivation therefore
reaches another replica's cache within a second, but it does not wait for that: the
transaction that records an identification, and those of the links routes, read the party's
state themselves and refuse a party no longer active (docs/identity.md). On the replica that
deactivates, the route drops the entry at once (``forget``).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from idcode.service.models import RelyingPartyRecord

#: How long an entry is trusted before it is read again, in seconds.
MAX_AGE = 1.0


@dataclass(frozen=True, slots=True)
class KnownParty:
    """What authenticating a relying party's request and answering it need of its record."""

    id: str
    name: str
    purposes: frozenset[str]
    attributes: tuple[str, ...]
    public_jwk: dict[str, Any]
    active: bool


class PartyCache:
    """Registered relying parties by id, each read at most once per ``max_age`` seconds.

    Unknown ids are not kept: anyone can send a token naming any id, and a miss costs the
    same database read as before the cache existed, so nobody can fill the process's memory.
    """

    def __init__(self, sessions: sessionmaker[Session], max_age: float = MAX_AGE) -> None:
        self._sessions = sessions
        self._max_age = max_age
        self._entries: dict[str, tuple[float, KnownParty]] = {}
        self._forgotten: dict[str, float] = {}
        self._seen_written: dict[str, float] = {}
        self._lock = threading.Lock()  # load() runs in the thread pool

    def fresh(self, party_id: str) -> KnownParty | None:
        """The party if read within ``max_age``; None means: ``load`` it (thread pool)."""
        entry = self._entries.get(party_id)
        if entry is None or time.monotonic() - entry[0] > self._max_age:
            return None
        return entry[1]

    def load(self, party_id: str) -> KnownParty | None:
        """Read the party from the database and keep it; None if there is none."""
        read_at = time.monotonic()
        with self._sessions() as session:
            row = session.execute(
                select(
                    RelyingPartyRecord.id,
                    RelyingPartyRecord.name,
                    RelyingPartyRecord.purposes,
                    RelyingPartyRecord.attributes,
                    RelyingPartyRecord.public_jwk,
                    RelyingPartyRecord.active,
                ).where(RelyingPartyRecord.id == party_id)
            ).first()
        if row is None:
            return None
        party = KnownParty(
            row.id,
            row.name,
            frozenset(row.purposes),
            tuple(row.attributes),
            dict(row.public_jwk),
            bool(row.active),
        )
        with self._lock:
            current = self._entries.get(party_id)
            # A slower concurrent load must not replace a newer read, nor bring back what a
            # read begun before ``forget`` saw.
            if (current is None or current[0] <= read_at) and read_at > self._forgotten.get(
                party_id, -1.0
            ):
                self._entries[party_id] = (read_at, party)
        return party

    def forget(self, party_id: str) -> None:
        """Drop the entry (this replica deactivated the party): the next request reads it."""
        with self._lock:
            self._entries.pop(party_id, None)
            self._forgotten[party_id] = time.monotonic()

    def seen_to_write(self, party_id: str, now: float, resolution: float) -> bool:
        """Whether this process should record the party as seen at ``now``: not if it did
        within ``resolution`` (then claims the write, so concurrent requests do not all go)."""
        written = self._seen_written.get(party_id)
        if written is not None and now - written < resolution:
            return False
        self._seen_written[party_id] = now
        return True
