"""Relying parties: the organisations' services that identify citizens with their consent.

Operators register one with what it may ask for (a subset of idcode.attributes.ATTRIBUTES), its
purposes and its public key; it then signs its requests as terminals do (``private_key_jwt``,
single-use tokens, audience ``idcode/relying-party``). Deactivation is final and cuts it off,
and every terminal that belongs to it, at the next request. See docs/identity.md.
"""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator
from sqlalchemy import delete, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from idcode.attributes import ATTRIBUTES, MAX_PURPOSES, PURPOSE, SECTORS
from idcode.errors import RequestRefused
from idcode.profiles import CryptoProfile
from idcode.scenes import MAX_LINKED_SUBJECTS, SUBJECT_PATTERN
from idcode.service.cards import record_audit
from idcode.service.models import (
    DisclosureRecord,
    LinkRecord,
    RelyingPartyRecord,
    TerminalRecord,
)
from idcode.service.requesttokens import check_profile_key, public_signing_jwk
from idcode.text import control_reason

#: Every answer to a token that the named party's key did not sign (see fleet.NOT_SIGNED).
#: The reason every refusal of a deactivated party gives.
DEACTIVATED = "relying_party_deactivated"
NOT_SIGNED = "the token is not signed by a registered relying party's key"
#: The most subjects one party may link: its terminals' trust bundles carry them all.
MAX_LINKS = MAX_LINKED_SUBJECTS
#: A party's last_seen_at is kept to within this many seconds. Written on every request, the
#: one row of a busy party serialised all its counters' requests on its lock (bench/README.md).
SEEN_RESOLUTION = 1.0
_SUBJECT = re.compile(SUBJECT_PATTERN)


class NewRelyingParty(BaseModel):
    """A relying party as an operator registers it."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=128, description="Shown to citizens as it is.")
    sector: str = Field(description=" | ".join(SECTORS))
    purposes: list[str] = Field(
        min_length=1,
        max_length=MAX_PURPOSES,
        description="What it identifies citizens for (registration, benefit_application ...): "
        "each 1-32 of a-z, 0-9 and _, starting with a letter.",
    )
    attributes: list[str] = Field(
        max_length=len(ATTRIBUTES),
        description="What it may ask for, among " + ", ".join(ATTRIBUTES) + ". May be empty: "
        "the pairwise subject alone.",
    )
    public_jwk: dict[str, Any] = Field(
        description="The key its counters sign requests with: Ed25519 or P-256, or SM2 (kty EC, "
        "crv SM2) under the gm crypto profile (docs/crypto-profiles.md)."
    )

    @field_validator("name")
    @classmethod
    def _printable_name(cls, value: str) -> str:
        problem = control_reason(value)
        if problem is not None or value != value.strip():
            raise ValueError(f"the name {problem or 'has leading or trailing spaces'}")
        return value

    @field_validator("sector")
    @classmethod
    def _known_sector(cls, value: str) -> str:
        if value not in SECTORS:
            raise ValueError(f"sector must be one of {', '.join(SECTORS)}")
        return value

    @field_validator("purposes")
    @classmethod
    def _purposes(cls, values: list[str]) -> list[str]:
        for value in values:
            if not PURPOSE.fullmatch(value):
                raise ValueError("a purpose is 1-32 of a-z, 0-9 and _, starting with a letter")
        return sorted(set(values))

    @field_validator("attributes")
    @classmethod
    def _known_attributes(cls, values: list[str]) -> list[str]:
        return known_attributes(values)

    @field_validator("public_jwk")
    @classmethod
    def _public_signing_key(cls, jwk: dict[str, Any]) -> dict[str, Any]:
        return public_signing_jwk(jwk)


def known_attributes(values: list[str]) -> list[str]:
    """``values`` without repeats, in the vocabulary's order, or ValueError saying which
    position is outside it (never the value: errors do not repeat what a request sent)."""
    for position, value in enumerate(values):
        if value not in ATTRIBUTES:
            raise ValueError(f"attribute {position} is not one of {', '.join(ATTRIBUTES)}")
    return [name for name in ATTRIBUTES if name in values]


def register(
    session: Session, new: NewRelyingParty, actor: str, profile: CryptoProfile
) -> RelyingPartyRecord:
    check_profile_key(new.public_jwk, profile, RequestRefused)
    record = RelyingPartyRecord(
        id=str(uuid.uuid4()),
        name=new.name,
        sector=new.sector,
        purposes=new.purposes,
        attributes=new.attributes,
        public_jwk=new.public_jwk,
        active=True,
    )
    session.add(record)
    session.flush()
    record_audit(
        session,
        actor,
        "relying_party.register",
        detail={"relying_party": record.id, "sector": new.sector, "attributes": new.attributes},
    )
    return record


def get(session: Session, party_id: str) -> RelyingPartyRecord:
    record = session.get(RelyingPartyRecord, party_id)
    if record is None:
        raise RequestRefused("relying_party_not_found", "no relying party with this id")
    return record


def deactivate(session: Session, party_id: str, actor: str) -> RelyingPartyRecord:
    """Cut the party off, and decommission its terminals with it (final, like a terminal's
    decommissioning: a party that comes back is registered anew, with new subjects)."""
    record = get(session, party_id)
    if record.active:
        now = datetime.now(UTC)
        record.active = False
        record.deactivated_at = now
        terminals = session.execute(
            update(TerminalRecord)
            .where(TerminalRecord.relying_party_id == party_id, TerminalRecord.active.is_(True))
            .values(active=False, decommissioned_at=now)
        )
        record_audit(
            session,
            actor,
            "relying_party.deactivate",
            detail={"relying_party": party_id, "terminals": terminals.rowcount},  # type: ignore[attr-defined]
        )
    return record


def record_seen(session: Session, party_id: str, now: float) -> None:
    """Record the party as seen at ``now``, unless another request did within SEEN_RESOLUTION
    (that request's write is enough; concurrent counters do not all write the row). Each
    replica calls it at most once per SEEN_RESOLUTION per party (partycache.seen_to_write)."""
    session.execute(
        update(RelyingPartyRecord)
        .where(
            RelyingPartyRecord.id == party_id,
            or_(
                RelyingPartyRecord.last_seen_at.is_(None),
                RelyingPartyRecord.last_seen_at
                <= datetime.fromtimestamp(now - SEEN_RESOLUTION, UTC),
            ),
        )
        .values(last_seen_at=datetime.fromtimestamp(now, UTC))
        # Not evaluated in Python against loaded rows: SQLite gives times back without a zone.
        .execution_options(synchronize_session=False)
    )


def still_active(session: Session, party_id: str) -> None:
    """RequestRefused ``relying_party_deactivated`` unless the party is active, read in the
    caller's transaction and locked to its end (FOR UPDATE; SQLite has one writer anyway): a
    deactivation is either seen here or waits for this transaction. Authentication read the
    party from a cache up to partycache.MAX_AGE old; this is what makes deactivation final
    on every replica at once."""
    active = session.scalar(
        select(RelyingPartyRecord.active).where(RelyingPartyRecord.id == party_id).with_for_update()
    )
    if not active:
        raise RequestRefused(DEACTIVATED, "this relying party is deactivated")


def link(session: Session, party_id: str, subject: str) -> bool:
    """Link ``subject`` for the party's terminals; True if it was new. Only a subject the party
    was disclosed can be linked: it cannot plant subjects it computed or guessed."""
    if not _is_subject(subject):
        raise RequestRefused("invalid_subject", "a subject is 24 lower-case hex characters")
    still_active(session, party_id)
    if session.get(LinkRecord, (party_id, subject)) is not None:
        return False
    disclosed = session.scalars(
        select(DisclosureRecord.id).where(
            DisclosureRecord.relying_party_id == party_id, DisclosureRecord.subject == subject
        )
    ).first()
    if disclosed is None:
        raise RequestRefused("subject_not_disclosed", "this party was never disclosed this subject")
    count = session.scalar(
        select(func.count()).select_from(LinkRecord).where(LinkRecord.relying_party_id == party_id)
    )
    if (count or 0) >= MAX_LINKS:
        raise RequestRefused("too_many_links", f"a relying party links at most {MAX_LINKS}")
    try:
        # Two requests linking one subject at once both find no link above; the second
        # insert then fails on the primary key: it is linked, which is what was asked.
        with session.begin_nested():
            session.add(LinkRecord(relying_party_id=party_id, subject=subject))
    except IntegrityError:
        return False
    _bump_links(session, party_id)
    return True


def unlink(session: Session, party_id: str, subject: str) -> bool:
    """Remove a link; True if there was one."""
    if not _is_subject(subject):
        raise RequestRefused("invalid_subject", "a subject is 24 lower-case hex characters")
    still_active(session, party_id)
    removed = session.execute(
        delete(LinkRecord).where(
            LinkRecord.relying_party_id == party_id, LinkRecord.subject == subject
        )
    )
    if not removed.rowcount:  # type: ignore[attr-defined]
        return False
    _bump_links(session, party_id)
    return True


def linked_subjects(session: Session, party_id: str) -> list[str]:
    return list(
        session.scalars(
            select(LinkRecord.subject)
            .where(LinkRecord.relying_party_id == party_id)
            .order_by(LinkRecord.subject)
        )
    )


def _bump_links(session: Session, party_id: str) -> None:
    session.execute(
        update(RelyingPartyRecord)
        .where(RelyingPartyRecord.id == party_id)
        .values(links_version=RelyingPartyRecord.links_version + 1)
    )


def _is_subject(text: str) -> bool:
    return _SUBJECT.fullmatch(text) is not None
