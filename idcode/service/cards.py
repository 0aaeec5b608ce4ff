"""Citizen cards: enrolment, status changes, age bands and the snapshot a code is minted from.

Operations take a SQLAlchemy session and leave committing to the caller, so an HTTP request
or an import chunk commits the card and its audit record together, or neither.
"""

from __future__ import annotations

import re
import secrets
import uuid
from dataclasses import asdict, dataclass, fields
from datetime import date, datetime, timedelta, timezone
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, field_validator
from sqlalchemy import select
from sqlalchemy.orm import Session

from idcode.claims import (
    ALL_PROGRAMMES,
    MAX_STATUS_INDEX,
    PSEUDONYM_LENGTH,
    AgeBand,
    Card,
    Programme,
    Residency,
    programme_names,
)
from idcode.errors import CardError
from idcode.idnumber import birth_date, normalise_id_number
from idcode.service.masks import mask_id_number, mask_name
from idcode.service.models import AuditRecord, CardRecord, CardStatus, StatusChange, as_utc
from idcode.service.pii import PersonalDataVault
from idcode.service.vocabulary import Programme as ProgrammeName
from idcode.service.vocabulary import Residency as ResidencyName
from idcode.text import control_reason

#: Ages are counted on the civil date in China (UTC+8 all year, no daylight saving time).
CHINA_TIME = timezone(timedelta(hours=8))
_PHONE = re.compile(r"\+?[0-9][0-9 -]{4,19}")
# One spelling everywhere (docs/api.md, "Names"): the enum member's name in lower case, as the
# verifier's JSON, scene data, reasons and age bands spell them (non_resident, home_care).
_RESIDENCY_NAMES = {member.name.lower(): member for member in Residency}
_PROGRAMME_NAMES = {name: Programme[name.upper()] for name in programme_names(ALL_PROGRAMMES)}


def canonical_name(value: str) -> str:
    """An attribute value as the service spells it. Input may still use the hyphens of
    earlier versions (``non-resident``, ``home-care``) and any case; answers never do."""
    return value.lower().replace("-", "_")


StatusAction = Literal["suspend", "lost", "revoke", "reinstate"]
# action -> (statuses it applies to, status it leads to)
TRANSITIONS: dict[str, tuple[frozenset[CardStatus], CardStatus]] = {
    "suspend": (frozenset({CardStatus.ACTIVE}), CardStatus.SUSPENDED),
    "lost": (frozenset({CardStatus.ACTIVE, CardStatus.SUSPENDED}), CardStatus.LOST),
    "revoke": (
        frozenset({CardStatus.ACTIVE, CardStatus.SUSPENDED, CardStatus.LOST}),
        CardStatus.REVOKED,
    ),
    "reinstate": (frozenset({CardStatus.SUSPENDED, CardStatus.LOST}), CardStatus.ACTIVE),
}


class NewCard(BaseModel):
    """One card to enrol, as an operator or an import file gives it."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    id_number: str = Field(description="National ID number (18 characters, GB 11643).")
    name: str = Field(min_length=1, max_length=64)
    phone: str | None = Field(default=None, description="Optional contact number.")
    residency: ResidencyName = Field(
        default=ResidencyName.REGISTERED,
        description="The holder's residency; the hyphens of earlier versions (non-resident) "
        "are still taken.",
    )
    programmes: list[ProgrammeName] = Field(
        default_factory=list,
        description="The city programmes the card is enrolled in; the hyphens of earlier "
        "versions (home-care) are still taken.",
    )

    @field_validator("name")
    @classmethod
    def _printable_name(cls, value: str) -> str:
        # A NUL or an unpaired surrogate cannot be encrypted as UTF-8 nor stored, and no
        # control character is part of a name: refused, never stripped (the name would change).
        problem = control_reason(value)
        if problem is not None:
            raise ValueError(f"the name {problem}")
        return value

    @field_validator("id_number")
    @classmethod
    def _valid_id_number(cls, value: str) -> str:
        return normalise_id_number(value)

    @field_validator("phone")
    @classmethod
    def _plausible_phone(cls, value: str | None) -> str | None:
        if value in (None, ""):
            return None
        if not _PHONE.fullmatch(value):
            raise ValueError("a phone number is 5-20 digits, spaces or dashes, optionally +")
        return value

    @field_validator("residency", mode="before")
    @classmethod
    def _known_residency(cls, value: object) -> object:
        if not isinstance(value, str):
            return value  # pydantic's own error for a value that is not a string
        if canonical_name(value) not in _RESIDENCY_NAMES:
            raise ValueError(f"residency must be one of {', '.join(_RESIDENCY_NAMES)}")
        return canonical_name(value)

    @field_validator("programmes", mode="before")
    @classmethod
    def _known_programmes(cls, values: object) -> object:
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            return values  # pydantic's own error for what is not a list of strings
        if not all(canonical_name(v) in _PROGRAMME_NAMES for v in values):
            raise ValueError(f"programmes must be among {', '.join(_PROGRAMME_NAMES)}")
        return sorted({canonical_name(v) for v in values})

    @property
    def residency_value(self) -> Residency:
        return _RESIDENCY_NAMES[self.residency]

    @property
    def programme_flags(self) -> Programme:
        flags = Programme.NONE
        for name in self.programmes:
            flags |= _PROGRAMME_NAMES[name]
        return flags


def age_band_on(birth: date, today: date) -> AgeBand:
    age = today.year - birth.year - ((today.month, today.day) < (birth.month, birth.day))
    for upper, band in _AGE_BOUNDS:
        if age < upper:
            return band
    return AgeBand.AGE_80_PLUS


_AGE_BOUNDS = [
    (6, AgeBand.UNDER_6),
    (18, AgeBand.AGE_6_17),
    (60, AgeBand.AGE_18_59),
    (65, AgeBand.AGE_60_64),
    (70, AgeBand.AGE_65_69),
    (80, AgeBand.AGE_70_79),
]


def next_birthday(birth: date, today: date) -> date:
    """The next birthday after ``today`` (29 February counts on 1 March in common years)."""
    for year in (today.year, today.year + 1):
        try:
            candidate = date(year, birth.month, birth.day)
        except ValueError:
            candidate = date(year, 3, 1)
        if candidate > today:
            return candidate
    raise AssertionError("unreachable")


SNAPSHOT_LIFETIME = 300  # seconds a card snapshot may be used (and cached)


@dataclass(frozen=True, slots=True)
class CardSnapshot:
    """What minting a code needs about a card, safe to cache: no personal data, only the
    age band, valid until ``valid_until`` (epoch seconds: SNAPSHOT_LIFETIME from when it was
    made, or the next birthday if that comes sooner)."""

    card_id: str
    pseudonym: bytes
    status_index: int
    status: str
    residency: int
    programmes: int
    age_band: int
    valid_until: int
    version: int

    def card(self) -> Card:
        return Card(
            pseudonym=self.pseudonym,
            status_index=self.status_index,
            residency=Residency(self.residency),
            age_band=AgeBand(self.age_band),
            programmes=Programme(self.programmes),
        )

    def to_json(self) -> dict[str, Any]:
        document = asdict(self)
        document["pseudonym"] = self.pseudonym.hex()
        return document

    @classmethod
    def from_json(cls, document: dict[str, Any]) -> CardSnapshot:
        """Read a cached snapshot; fields unknown to this version are ignored and a missing
        version reads as 0, so replicas of two releases can share one cache."""
        return cls(
            **{name: document[name] for name in _SNAPSHOT_FIELDS if name in document},
            pseudonym=bytes.fromhex(document["pseudonym"]),
            version=int(document.get("version", 0)),
        )


_SNAPSHOT_FIELDS = frozenset(
    field.name for field in fields(CardSnapshot) if field.name not in ("pseudonym", "version")
)


def snapshot(record: CardRecord, vault: PersonalDataVault, now: datetime) -> CardSnapshot:
    birth = date.fromisoformat(
        vault.decrypt(record.birth_date_enc, card_id=record.id, field="birth_date")
    )
    today = now.astimezone(CHINA_TIME).date()
    birthday = datetime.combine(next_birthday(birth, today), datetime.min.time(), CHINA_TIME)
    return CardSnapshot(
        card_id=record.id,
        pseudonym=record.pseudonym,
        status_index=record.status_index,
        status=record.status,
        residency=record.residency,
        programmes=record.programmes,
        age_band=int(age_band_on(birth, today)),
        # Never later than a short while from now: a cached "valid until the next birthday"
        # would tell anyone reading the cache the citizen's birthday.
        valid_until=min(int(birthday.timestamp()), int(now.timestamp()) + SNAPSHOT_LIFETIME),
        version=record.version or 0,
    )


def find_by_id_hash(session: Session, id_hash: bytes) -> CardRecord | None:
    return session.scalars(select(CardRecord).where(CardRecord.id_hash == id_hash)).first()


def get_card(session: Session, card_id: str) -> CardRecord:
    record = session.scalars(select(CardRecord).where(CardRecord.id == card_id)).first()
    if record is None:
        raise CardError("card_not_found", "no card with this id")
    return record


def enrol(
    session: Session, vault: PersonalDataVault, new: NewCard, actor: str, *, audit: bool = True
) -> CardRecord:
    """Add a card (not committed). A second card for the same ID number is refused."""
    id_hash = vault.lookup_hash(new.id_number)
    if find_by_id_hash(session, id_hash) is not None:
        raise CardError("already_enrolled", "a card for this ID number is already enrolled")
    card_id = str(uuid.uuid4())
    record = CardRecord(
        id=card_id,
        pseudonym=_free_pseudonym(session),
        id_hash=id_hash,
        id_number_enc=vault.encrypt(new.id_number, card_id=card_id, field="id_number"),
        name_enc=vault.encrypt(new.name, card_id=card_id, field="name"),
        phone_enc=vault.encrypt(new.phone, card_id=card_id, field="phone") if new.phone else None,
        birth_date_enc=vault.encrypt(
            birth_date(new.id_number).isoformat(), card_id=card_id, field="birth_date"
        ),
        status=CardStatus.ACTIVE.value,
        residency=int(_RESIDENCY_NAMES[new.residency]),
        programmes=int(new.programme_flags),
    )
    session.add(record)
    session.flush()  # assigns the status index
    if record.status_index > MAX_STATUS_INDEX:
        raise CardError("status_list_full", "the status list has no free index left")
    if audit:
        record_audit(session, actor, "card.enrol", record.id)
    return record


def _free_pseudonym(session: Session) -> bytes:
    for _ in range(8):
        pseudonym = secrets.token_bytes(PSEUDONYM_LENGTH)
        taken = session.scalars(
            select(CardRecord.status_index).where(CardRecord.pseudonym == pseudonym)
        ).first()
        if taken is None:
            return pseudonym
    raise CardError("pseudonym_space_exhausted", "could not draw an unused pseudonym")


#: Why an operator changes a card's status, as the audit record keeps it: a closed set, not
#: free text, so that no name, ID number or story of a citizen ends up in the audit log.
StatusReason = Literal[
    "citizen_request",
    "reported_lost",
    "reported_stolen",
    "suspected_misuse",
    "card_replaced",
    "deceased",
    "entered_in_error",
]
STATUS_REASONS: tuple[str, ...] = get_args(StatusReason)


def change_status(
    session: Session, card_id: str, action: str, actor: str, reason: str | None = None
) -> CardRecord:
    """Apply ``action`` to the card (not committed), audited with the actor and, when given,
    the reason (one of STATUS_REASONS)."""
    if action not in TRANSITIONS:
        raise CardError("invalid_action", f"action must be one of {', '.join(TRANSITIONS)}")
    if reason is not None and reason not in STATUS_REASONS:
        raise CardError("invalid_reason", f"reason must be one of {', '.join(STATUS_REASONS)}")
    record = get_card(session, card_id)
    sources, target = TRANSITIONS[action]
    if CardStatus(record.status) not in sources:
        raise CardError("invalid_transition", f"cannot {action} a card that is {record.status}")
    previous = record.status
    record.status = target.value  # the version goes up on flush (models.CardRecord)
    if (previous == CardStatus.ACTIVE.value) != (target is CardStatus.ACTIVE):
        # The card's status-list bit flips: a new status-list version for the terminals.
        session.add(
            StatusChange(status_index=record.status_index, invalid=target is not CardStatus.ACTIVE)
        )
    detail = {"from": previous, "to": target.value}
    if reason is not None:
        detail["reason"] = reason
    record_audit(session, actor, f"card.{action}", card_id, detail)
    return record


def record_audit(
    session: Session,
    actor: str,
    action: str,
    card_id: str | None = None,
    detail: dict[str, Any] | None = None,
) -> None:
    # The actor is the token's subject, which the identity provider chooses: keep it within
    # the column rather than fail the operator's action.
    session.add(AuditRecord(actor=actor[:255], action=action, card_id=card_id, detail=detail or {}))


def attribute_names(card: CardSnapshot) -> dict[str, Any]:
    """A card's coarse attributes as the API shows them (``non_resident``, ``age_65_69``,
    ``meal_subsidy``): spelled as ``Card.to_json`` spells them in a verdict."""
    return {
        "residency": Residency(card.residency).name.lower(),
        "age_band": AgeBand(card.age_band).name.lower(),
        "programmes": programme_names(Programme(card.programmes)),
    }


def card_view(record: CardRecord, vault: PersonalDataVault, now: datetime) -> dict[str, Any]:
    """An operator's view of a card: state and attributes, personal data masked."""
    return {
        "id": record.id,
        "status": record.status,
        "status_index": record.status_index,
        "pseudonym": record.pseudonym.hex(),
        **attribute_names(snapshot(record, vault, now)),
        "name_masked": mask_name(vault.decrypt(record.name_enc, card_id=record.id, field="name")),
        "id_number_masked": mask_id_number(
            vault.decrypt(record.id_number_enc, card_id=record.id, field="id_number")
        ),
        "created_at": as_utc(record.created_at).isoformat(),
    }
