"""Identification with the citizen's consent: a consent held for one code, spent by the one
relying party it names, and the disclosure record the citizen and operators read.

The code itself is an ordinary code: the consent lives here, keyed by the code's random id,
until the code expires. ``identify`` discloses the attributes both consented to and allowed
for the party, with the citizen's pairwise subject at that party, and records it in the same
transaction that spends the consent: a disclosure happened if and only if it is recorded.
See docs/identity.md for the rules and why.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator
from sqlalchemy import Connection, Executable, delete, insert, select, update
from sqlalchemy.orm import Session

from idcode.attributes import ATTRIBUTES, PURPOSE
from idcode.claims import CodeClaims
from idcode.errors import ConsentRefused, RequestRefused
from idcode.idnumber import sex
from idcode.scenes import subject_of
from idcode.service import relyingparties
from idcode.service.cards import attribute_names, snapshot
from idcode.service.models import (
    CardRecord,
    CardStatus,
    ConsentRecord,
    DisclosureRecord,
    RelyingPartyRecord,
)
from idcode.service.pii import PersonalDataVault
from idcode.service.requesttokens import PARTY_ID

#: Refusals of an identification: each tells the counter why, and nothing about the citizen.
NO_CONSENT = "no_consent"
OTHER_PARTY = "consented_to_another_party"
PURPOSE_MISMATCH = "purpose_mismatch"
CODE_USED = "code_used"
REVOKED = "revoked"
DEACTIVATED = "relying_party_deactivated"  # relyingparties.DEACTIVATED; a literal for test_docs
EXPIRED = "expired"  # the verifier's reason: the consent ends with the code


class Disclose(BaseModel):
    """What the citizen consents to: these attributes, to this relying party, once."""

    model_config = ConfigDict(extra="forbid")

    to: str = Field(pattern=f"^{PARTY_ID.pattern}$", description="The relying party's id.")
    attributes: list[str] = Field(
        max_length=len(ATTRIBUTES),
        description="Among " + ", ".join(ATTRIBUTES) + ". Only those the party may ask for "
        "are ever disclosed; empty: the pairwise subject alone.",
    )
    purpose: str | None = Field(
        default=None,
        max_length=32,
        description="When set, the identification must name this purpose.",
    )

    @field_validator("attributes")
    @classmethod
    def _known_attributes(cls, values: list[str]) -> list[str]:
        return relyingparties.known_attributes(values)

    @field_validator("purpose")
    @classmethod
    def _purpose(cls, value: str | None) -> str | None:
        if value is not None and not PURPOSE.fullmatch(value):
            raise ValueError("a purpose is 1-32 of a-z, 0-9 and _, starting with a letter")
        return value


@dataclass(frozen=True, slots=True)
class ConsentTarget:
    """The relying party a consent names, and what the consent will in fact disclose."""

    party_id: str
    party_name: str
    attributes: list[str]  # consented and allowed
    purpose: str | None


def consent_target(session: Session, disclose: Disclose) -> ConsentTarget:
    """Check ``disclose`` against the party it names (active, and the purpose its own)."""
    party = session.get(RelyingPartyRecord, disclose.to)
    if party is None or not party.active:
        raise RequestRefused("relying_party_not_found", "no active relying party with this id")
    if disclose.purpose is not None and disclose.purpose not in party.purposes:
        raise RequestRefused("unknown_purpose", "the relying party has no such purpose")
    allowed = [name for name in disclose.attributes if name in party.attributes]
    return ConsentTarget(party.id, party.name, allowed, disclose.purpose)


def give_consent(
    session: Session, card_id: str, disclose: Disclose, claims: CodeClaims, keep_until: int
) -> None:
    """Hold the consent for the code ``claims`` describe until ``keep_until`` (its expiry plus
    the clock-skew allowance). Consents of codes expired since are dropped on the way."""
    now = datetime.now(UTC)
    # Not evaluated in Python against loaded rows: SQLite gives times back without a zone.
    session.execute(
        delete(ConsentRecord)
        .where(ConsentRecord.expires_at < now)
        .execution_options(synchronize_session=False)
    )
    session.add(
        ConsentRecord(
            code_id=claims.code_id,
            card_id=card_id,
            relying_party_id=disclose.to,
            attributes=disclose.attributes,
            purpose=disclose.purpose,
            expires_at=datetime.fromtimestamp(keep_until, UTC),
        )
    )


@dataclass(frozen=True, slots=True)
class Presentation:
    """An identification to record: a verified code presented by an authenticated party."""

    party_id: str
    party_attributes: tuple[str, ...]  # what the party may ask for
    code_id: bytes
    pseudonym: bytes
    status_index: int
    purpose: str  # one of the party's, checked before
    counter: str | None


def _consents(code_ids: list[bytes]) -> Executable:
    """The consents of these codes with their cards, read in the recording transaction."""
    return (
        select(
            ConsentRecord.code_id,
            ConsentRecord.relying_party_id,
            ConsentRecord.attributes,
            ConsentRecord.purpose,
            ConsentRecord.used_at,
            ConsentRecord.expires_at,
            CardRecord.id,
            CardRecord.pseudonym,
            CardRecord.status_index,
            CardRecord.status,
            CardRecord.residency,
            CardRecord.programmes,
            CardRecord.version,
            CardRecord.name_enc,
            CardRecord.id_number_enc,
            CardRecord.birth_date_enc,
        )
        .outerjoin(CardRecord, CardRecord.id == ConsentRecord.card_id)
        .where(ConsentRecord.code_id.in_(code_ids))
    )


@dataclass(slots=True)
class _Accepted:
    """A presentation that passed every check on what was read, before its consent is spent."""

    index: int
    presented: Presentation
    card_id: str
    names: list[str]
    values: dict[str, Any]
    subject: str
    expires_at: datetime


def identify(
    connection: Connection,
    vault: PersonalDataVault,
    presentations: list[Presentation],
    now: datetime,
) -> list[dict[str, Any] | ConsentRefused]:
    """Spend the consents of the presented codes and disclose what each allows to its party,
    recorded: for each presentation, in order, its answer or the ConsentRefused saying why
    not (a refusal writes nothing). Not committed: the caller commits the spent consents and
    their records together (recorder.py).

    The whole group in four statements whatever its size (read the parties' states, read the
    consents with their cards, spend, record), so that a group costs a few round trips rather
    than three per identification; Core statements, not the ORM. The result is what running
    them one after the other in this transaction would give: a code presented twice is
    answered once, the second presentation refused as used."""
    party_ids = {presented.party_id for presented in presentations}
    # The parties' states in the transaction that records their disclosures: they were
    # authenticated from a cache (partycache.py), and a deactivation committed before this read
    # cuts a party off here, on every replica.
    active = dict(
        connection.execute(
            select(RelyingPartyRecord.id, RelyingPartyRecord.active).where(
                RelyingPartyRecord.id.in_(party_ids)
            )
        ).all()
    )
    consents = {
        row.code_id: row
        for row in connection.execute(_consents([p.code_id for p in presentations]))
    }
    # Derived once per party in the group, not once per identification (two HMACs each).
    subject_keys = {party_id: vault.relying_party_subject_key(party_id) for party_id in party_ids}
    outcomes: list[dict[str, Any] | ConsentRefused] = []
    accepted: list[_Accepted] = []
    first_of: dict[bytes, int] = {}  # code id -> the index of its first accepted presentation
    for index, presented in enumerate(presentations):
        try:
            row = consents.get(presented.code_id)
            _check(presented, active.get(presented.party_id), row)
            assert row is not None
            if presented.code_id in first_of:
                # Presented twice in this group: decided once its first presentation's spending
                # is known (below), as the second of two statements in a row would see it.
                outcomes.append(ConsentRefused(CODE_USED, _USED, 409))
                continue
            names = [name for name in row.attributes if name in presented.party_attributes]
            # Before anything is written: should a value not decrypt, nothing is written.
            values = _values(row, vault, names, now)
            subject = subject_of(
                subject_keys[presented.party_id], row.pseudonym, vault.profile.hash_name
            )
        except ConsentRefused as refusal:
            outcomes.append(refusal)
            continue
        first_of[presented.code_id] = index
        accepted.append(
            _Accepted(index, presented, row.id, names, values, subject, _as_utc(row.expires_at))
        )
        outcomes.append(ConsentRefused(CODE_USED, _USED, 409))  # until spent below
    if not accepted:
        return outcomes
    spent = set(
        connection.execute(
            update(ConsentRecord)
            .where(
                ConsentRecord.code_id.in_([a.presented.code_id for a in accepted]),
                ConsentRecord.used_at.is_(None),
                ConsentRecord.expires_at >= now,
            )
            .values(used_at=now)
            .returning(ConsentRecord.code_id)
        ).scalars()
    )
    recorded = [a for a in accepted if a.presented.code_id in spent]
    for refused in (a for a in accepted if a.presented.code_id not in spent):
        if refused.expires_at < now:
            # It ended between the code's verification and now (the code verified in its last
            # second): said as the verifier would say it a moment later, not as "used", which
            # would tell the counter the citizen identified with it elsewhere.
            outcome = ConsentRefused(EXPIRED, "the code and its consent have expired", 422)
            # A second presentation in this group is told the same.
            for index, presented in enumerate(presentations):
                if presented.code_id == refused.presented.code_id:
                    outcomes[index] = outcome
        # Otherwise another identification spent it first (on another replica): code_used.
    if not recorded:
        return outcomes
    ids = connection.execute(
        insert(DisclosureRecord).returning(DisclosureRecord.id, sort_by_parameter_order=True),
        [
            {
                "at": now,
                "card_id": a.card_id,
                "relying_party_id": a.presented.party_id,
                "purpose": a.presented.purpose,
                "attributes": a.names,
                "counter": a.presented.counter,
                "subject": a.subject,
            }
            for a in recorded
        ],
    ).scalars()
    for a, disclosure in zip(recorded, ids, strict=True):
        outcomes[a.index] = {
            "subject": a.subject,
            "attributes": a.values,
            "purpose": a.presented.purpose,
            "disclosure": disclosure,
            "identified_at": now,
        }
    return outcomes


_USED = "this code was used for an identification before"


def _check(presented: Presentation, active: bool | None, consent: Any) -> None:
    """ConsentRefused unless ``consent`` (a row with its card's columns, None if there is
    none) lets ``presented`` through, its spending aside; in the order the counter is told."""
    if not active:
        raise ConsentRefused(DEACTIVATED, "this relying party is deactivated", 403)
    if consent is None:
        raise ConsentRefused(NO_CONSENT, "the citizen gave no consent with this code")
    if consent.relying_party_id != presented.party_id:
        raise ConsentRefused(OTHER_PARTY, "the consent of this code is for another party")
    if consent.purpose is not None and consent.purpose != presented.purpose:
        raise ConsentRefused(PURPOSE_MISMATCH, "the citizen consented to another purpose")
    if (
        consent.id is None
        or consent.pseudonym != presented.pseudonym
        or consent.status_index != presented.status_index
    ):
        raise ConsentRefused(NO_CONSENT, "the citizen gave no consent with this code")
    if consent.status != CardStatus.ACTIVE.value:
        raise ConsentRefused(REVOKED, f"the card is {consent.status}")
    if consent.used_at is not None:
        raise ConsentRefused(CODE_USED, _USED, 409)


def _values(card: Any, vault: PersonalDataVault, names: list[str], now: datetime) -> dict[str, Any]:
    """The values of the attributes ``names`` of ``card`` (a row with the card's columns),
    decrypted only when disclosed."""
    values: dict[str, Any] = {}
    coarse = attribute_names(snapshot(card, vault, now)) if set(names) - _PERSONAL else {}
    for name in names:
        if name == "name":
            values[name] = vault.decrypt(card.name_enc, card_id=card.id, field="name")
        elif name in ("id_number", "sex"):
            number = vault.decrypt(card.id_number_enc, card_id=card.id, field="id_number")
            values[name] = number if name == "id_number" else sex(number)
        elif name == "birth_date":
            values[name] = vault.decrypt(card.birth_date_enc, card_id=card.id, field="birth_date")
        else:
            values[name] = coarse[name]
    return values


def _as_utc(moment: datetime) -> datetime:
    """``moment`` with its zone: SQLite hands stored times back without one (they are UTC)."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


_PERSONAL = frozenset({"name", "id_number", "sex", "birth_date"})
#: The largest disclosure record id (the column is a 32-bit integer).
MAX_RECORD_ID = 2**31 - 1


def disclosures(
    session: Session,
    *,
    card_id: str | None = None,
    party_id: str | None = None,
    before: int | None = None,
    limit: int = 100,
) -> list[dict[str, Any]]:
    """The disclosure record, newest first: a citizen's (``card_id``) or a party's."""
    query = select(DisclosureRecord, RelyingPartyRecord).join(
        RelyingPartyRecord, RelyingPartyRecord.id == DisclosureRecord.relying_party_id
    )
    if card_id is not None:
        query = query.where(DisclosureRecord.card_id == card_id)
    if party_id is not None:
        query = query.where(DisclosureRecord.relying_party_id == party_id)
    # The record's id is a 32-bit integer: a larger ``before`` (the API takes up to 2**62)
    # is older than nothing, and compared as it is PostgreSQL refuses it (a 500).
    if before is not None and before <= MAX_RECORD_ID:
        query = query.where(DisclosureRecord.id < before)
    rows = session.execute(query.order_by(DisclosureRecord.id.desc()).limit(limit))
    return [
        {
            "id": record.id,
            "at": record.at,
            "relying_party": {"id": party.id, "name": party.name, "sector": party.sector},
            "purpose": record.purpose,
            "attributes": record.attributes,
            "counter": record.counter,
            **({"card_id": record.card_id} if party_id is not None else {}),
        }
        for record, party in rows
    ]
