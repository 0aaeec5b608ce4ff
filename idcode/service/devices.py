"""Citizens' devices: a key a phone holds, certified for one card with a credential of at most
seven days, so that the phone signs device codes itself with no network (docs/devices.md).

A citizen registers a device's public key with an ID token; the device renews its credential
with a single-use token its own key signs (audience ``idcode/device``, checked like terminal
and relying-party tokens); the citizen lists and removes devices. A removed device's id goes
into every terminal's trust bundle until its last credential can no longer be presented.
Operations take a session and leave committing to the caller, as idcode.service.cards does.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator
from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from idcode.claims import Card
from idcode.cose import Algorithm
from idcode.devicecode import DEVICE_CODE_LIFETIME, MAX_CREDENTIAL_LIFETIME, DeviceKey
from idcode.devicecode import issue_credential as sign_credential
from idcode.errors import DeviceAuthError, RequestRefused
from idcode.keys import Signer
from idcode.protocol import MAX_CLOCK_DRIFT
from idcode.service.cards import record_audit, snapshot
from idcode.service.models import CardRecord, CardStatus, DeviceRecord, StatusChange
from idcode.service.pii import PersonalDataVault
from idcode.service.requesttokens import (
    DEVICE_TOKEN_ALGORITHMS,
    check_read_token,
    read_request_token,
)
from idcode.terminaltoken import DEVICE_AUDIENCE
from idcode.text import control_reason
from idcode.verifier import MAX_CLOCK_SKEW

#: Active devices one card may have by default (IDCODE_MAX_DEVICES_PER_CARD): a phone, a
#: spare, a watch, a tablet, the web wallet.
MAX_DEVICES = 5
#: How long a credential lives from its issue by default (IDCODE_DEVICE_CREDENTIAL_SECONDS):
#: the format's most, seven days. The wallet renews whenever it is online, so a phone
#: offline for a week still shows codes.
CREDENTIAL_LIFETIME = MAX_CREDENTIAL_LIFETIME
MAX_LABEL = 64
#: How long a removed device stays on the revoked list after its last credential expired. A
#: terminal accepts a credential until its expiry plus the terminal's skew allowance (at most
#: MAX_CLOCK_SKEW), by the terminal's clock, which may run up to MAX_CLOCK_DRIFT behind and
#: still sync; the code lifetime on top costs a few bytes for a few minutes.
REVOKED_MARGIN = DEVICE_CODE_LIFETIME + MAX_CLOCK_SKEW + MAX_CLOCK_DRIFT

# The refusals' reasons (docs/api.md, "Devices").
CARD_NOT_ACTIVE = "card_not_active"
DEVICE_EXISTS = "device_exists"
DEVICE_REMOVED = "device_removed"
TOO_MANY_DEVICES = "too_many_devices"
UNKNOWN_DEVICE = "unknown_device"
#: Every answer to a token that the named device's key did not sign, whether that device
#: exists or not (as fleet.NOT_SIGNED for terminals).
NOT_SIGNED = "the token is not signed by this device's key"


class NewDevice(BaseModel):
    """A device key as a citizen's wallet registers it."""

    model_config = ConfigDict(extra="forbid")

    public_jwk: dict[str, Any] = Field(
        description="The device's public key: an Ed25519 OKP or a P-256 EC JWK, public "
        "members only."
    )
    label: str | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_LABEL,
        description='What the citizen calls the device ("my phone"), shown in the list.',
    )

    @field_validator("public_jwk")
    @classmethod
    def _device_key(cls, jwk: dict[str, Any]) -> dict[str, Any]:
        DeviceKey.from_jwk(jwk)  # ValueError saying what is wrong: a 422
        return jwk

    @field_validator("label")
    @classmethod
    def _printable_label(cls, value: str | None) -> str | None:
        if value is None:
            return None
        problem = control_reason(value)
        if problem is not None or value != value.strip():
            raise ValueError(f"the label {problem or 'has leading or trailing spaces'}")
        return value

    def key(self) -> DeviceKey:
        return DeviceKey.from_jwk(self.public_jwk)


@dataclass(frozen=True, slots=True)
class IssuedCredential:
    """A device and the credential just issued for it: the blob the wallet stores (the
    credential and the issuer's signature) and when it expires (epoch seconds)."""

    device: DeviceRecord
    blob: bytes
    expires_at: int


def label_of(record: DeviceRecord, vault: PersonalDataVault) -> str | None:
    """The device's label in the clear (stored sealed: a citizen may put a name in it)."""
    if record.label_enc is None:
        return None
    return vault.decrypt(record.label_enc, card_id=record.card_id, field=_label_field(record.id))


def _label_field(device_uuid: str) -> str:
    # Bound to the device as well as the card: a label moved to another row does not open.
    return f"device_label/{device_uuid}"


def device_key(record: DeviceRecord) -> DeviceKey:
    return DeviceKey(Algorithm.from_name(record.alg, exact=True), record.public_key)


def register(
    session: Session,
    vault: PersonalDataVault,
    signer: Signer,
    card: CardRecord,
    new: NewDevice,
    now: int,
    *,
    max_devices: int = MAX_DEVICES,
    lifetime: int = CREDENTIAL_LIFETIME,
) -> IssuedCredential:
    """Register ``new`` for ``card`` and issue its first credential, valid ``lifetime``
    seconds (not committed), or RequestRefused saying why not. The caller read ``card``
    locked (``card_for_update``), so registrations for one card run one after the other and
    at most ``max_devices`` are active."""
    _check_active(card)
    key = new.key()
    taken = session.scalars(
        select(DeviceRecord).where(DeviceRecord.device_id == key.device_id)
    ).first()
    if taken is not None and taken.removed_at is not None:
        # A removed key stays on terminals' revoked lists until its credential expires, and
        # its codes would be refused there; a key is cheap, so the wallet makes a new one.
        raise RequestRefused(DEVICE_REMOVED, "this key's device was removed; make a new key")
    if taken is not None:
        raise RequestRefused(DEVICE_EXISTS, "this key is registered already")
    expires_at = now + lifetime
    device_uuid = str(uuid.uuid4())
    record = DeviceRecord(
        id=device_uuid,
        card_id=card.id,
        alg=key.alg.jose_name,
        public_key=key.raw,
        device_id=key.device_id,
        label_enc=None
        if new.label is None
        else vault.encrypt(new.label, card_id=card.id, field=_label_field(device_uuid)),
        created_at=datetime.now(UTC),  # to the microsecond: the list's order
        credential_expires_at=_at(expires_at),
    )
    session.add(record)
    try:
        session.flush()
    except IntegrityError:
        # The same key registered by a concurrent request a moment ago.
        session.rollback()
        raise RequestRefused(DEVICE_EXISTS, "this key is registered already") from None
    # Counted after the insert, in the same transaction: on SQLite the insert waits for any
    # other writer, so the count sees a concurrent registration (PostgreSQL: the card lock).
    if active_count(session, card.id) > max_devices:
        raise RequestRefused(
            TOO_MANY_DEVICES, f"a card has at most {max_devices} devices; remove one first"
        )
    blob = sign_credential(signer, _card(card, vault, now), key, expires_at)
    record_audit(
        session,
        "citizen",
        "device.register",
        card.id,
        {"device": record.id, "alg": record.alg, "expires_at": expires_at},
    )
    return IssuedCredential(record, blob, expires_at)


def renew(
    session: Session,
    vault: PersonalDataVault,
    signer: Signer,
    device_uuid: str,
    now: int,
    *,
    lifetime: int = CREDENTIAL_LIFETIME,
) -> IssuedCredential:
    """A new credential for the device, expiring ``lifetime`` seconds from ``now`` (not
    committed), or RequestRefused ``device_removed`` / ``card_not_active``.

    The new expiry is written with ``removed_at IS NULL`` in the statement itself: a removal
    that commits first is seen here, and one that commits after keeps the device on the
    revoked list until this credential has expired too."""
    record = session.get(DeviceRecord, device_uuid)
    if record is None or record.removed_at is not None:
        raise RequestRefused(DEVICE_REMOVED, "this device was removed")
    card = session.scalars(select(CardRecord).where(CardRecord.id == record.card_id)).one()
    _check_active(card)
    expires_at = now + lifetime
    written = session.execute(
        update(DeviceRecord)
        .where(DeviceRecord.id == device_uuid, DeviceRecord.removed_at.is_(None))
        .values(renewed_at=_at(now), credential_expires_at=_at(expires_at))
        .execution_options(synchronize_session=False)
    )
    if not written.rowcount:  # type: ignore[attr-defined]
        raise RequestRefused(DEVICE_REMOVED, "this device was removed")
    session.refresh(record)
    blob = sign_credential(signer, _card(card, vault, now), device_key(record), expires_at)
    record_audit(
        session,
        "device",
        "device.renew",
        card.id,
        {"device": record.id, "expires_at": expires_at},
    )
    return IssuedCredential(record, blob, expires_at)


def devices_of(session: Session, card_id: str) -> list[DeviceRecord]:
    """The card's devices, removed ones too, newest first."""
    return list(
        session.scalars(
            select(DeviceRecord)
            .where(DeviceRecord.card_id == card_id)
            .order_by(DeviceRecord.created_at.desc(), DeviceRecord.id)
        )
    )


def remove(session: Session, card_id: str, device_uuid: str, now: int) -> DeviceRecord:
    """Remove the card's device (not committed); nothing changes when it was removed before.
    RequestRefused ``unknown_device`` for a device of another card or of none: a citizen
    cannot tell another citizen's device from one that does not exist."""
    record = session.get(DeviceRecord, device_uuid)
    if record is None or record.card_id != card_id:
        raise RequestRefused(UNKNOWN_DEVICE, "this citizen has no device with this id")
    if record.removed_at is None:
        session.execute(
            update(DeviceRecord)
            .where(DeviceRecord.id == device_uuid, DeviceRecord.removed_at.is_(None))
            .values(removed_at=_at(now))
            .execution_options(synchronize_session=False)
        )
        # A new status-list version: terminals learn of the removal at their next sync,
        # whether it fetches a status delta or the whole bundle.
        session.add(StatusChange(device_id=record.device_id))
        session.refresh(record)
        record_audit(session, "citizen", "device.remove", card_id, {"device": device_uuid})
    return record


def active_count(session: Session, card_id: str) -> int:
    count = session.scalar(
        select(func.count())
        .select_from(DeviceRecord)
        .where(DeviceRecord.card_id == card_id, DeviceRecord.removed_at.is_(None))
    )
    return int(count or 0)


def revoked_device_ids(session: Session, now: int) -> list[bytes]:
    """The ids of removed devices whose last credential may still be presented somewhere,
    sorted: what every terminal's trust bundle carries."""
    return sorted(
        session.scalars(
            select(DeviceRecord.device_id).where(
                DeviceRecord.removed_at.is_not(None),
                DeviceRecord.credential_expires_at > _at(now - REVOKED_MARGIN),
            )
        )
    )


def removed_since(session: Session, version: int, now: int) -> list[bytes]:
    """The ids of devices removed after status version ``version`` whose last credential may
    still be presented, sorted: what a status delta from that version carries."""
    return sorted(
        session.scalars(
            select(StatusChange.device_id)
            .join(DeviceRecord, DeviceRecord.device_id == StatusChange.device_id)
            .where(
                StatusChange.id > version,
                DeviceRecord.credential_expires_at > _at(now - REVOKED_MARGIN),
            )
        )
    )


def card_for_update(session: Session, id_hash: bytes) -> CardRecord | None:
    """The citizen's card, read and locked to the end of the transaction (FOR UPDATE; SQLite
    has one writer anyway), so that one card's registrations do not overtake each other."""
    return session.scalars(
        select(CardRecord).where(CardRecord.id_hash == id_hash).with_for_update()
    ).first()


# -- device tokens --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AuthenticatedDevice:
    """A device whose request token passed every check but its single use (the caller's,
    in shared state), and the token's ``jti``."""

    record: DeviceRecord
    jti: str


def device_jwk(record: DeviceRecord) -> dict[str, Any]:
    """The device's public key as a JWK with its ``alg``, as requesttokens checks tokens."""
    return device_key(record).to_jwk() | {"alg": record.alg}


def authenticate(session: Session, token: str, device_uuid: str, now: float) -> AuthenticatedDevice:
    """The device ``device_uuid`` if its key signed ``token`` for DEVICE_AUDIENCE, or
    DeviceAuthError saying why not (``device_removed`` only to a token its key signed).
    Reads only: the caller spends the token afterwards, so a refused one changes nothing."""
    read = read_request_token(
        token, refused=DeviceAuthError, not_signed=NOT_SIGNED, algorithms=DEVICE_TOKEN_ALGORITHMS
    )
    record = session.get(DeviceRecord, read.party_id) if read.party_id == device_uuid else None
    signed = check_read_token(
        read,
        audience=DEVICE_AUDIENCE,
        public_jwk=None if record is None else device_jwk(record),
        refused=DeviceAuthError,
        not_signed=NOT_SIGNED,
        now=now,
    )
    assert record is not None  # its key signed the token
    if record.removed_at is not None:
        raise DeviceAuthError(DEVICE_REMOVED, "this device was removed")
    return AuthenticatedDevice(record, signed.jti)


# -- helpers --------------------------------------------------------------------------------


def _check_active(card: CardRecord) -> None:
    if card.status != CardStatus.ACTIVE.value:
        raise RequestRefused(CARD_NOT_ACTIVE, f"the card is {card.status}")


def _card(card: CardRecord, vault: PersonalDataVault, now: int) -> Card:
    """The card claim a credential certifies (the age band as of today)."""
    return snapshot(card, vault, datetime.fromtimestamp(now, UTC)).card()


def _at(seconds: int) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)
