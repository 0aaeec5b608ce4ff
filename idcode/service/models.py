"""Database tables (SQLAlchemy 2): cards with their personal data encrypted, and the audit trail.

A card's integer primary key is its slot in the revocation status list, so the list is as
dense as the cards ever enrolled. Personal data is only ever stored as ciphertext of the
crypto profile's AEAD (AES-GCM or SM4-GCM, ``*_enc``) plus the keyed hash of the ID number
for lookups.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class CardStatus(StrEnum):
    ACTIVE = "active"
    SUSPENDED = "suspended"
    LOST = "lost"
    REVOKED = "revoked"


def utcnow() -> datetime:
    return datetime.now(UTC)


def as_utc(at: datetime) -> datetime:
    """``at`` in UTC; a time without an offset is taken as UTC (SQLite gives the times it
    stores back without theirs). Raises OverflowError where UTC leaves years 1-9999 (year 1
    at +14:00): call it on checked times only."""
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)


class Base(DeclarativeBase):
    pass


class CardRecord(Base):
    __tablename__ = "cards"

    status_index: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(36), unique=True)  # public id (UUID)
    pseudonym: Mapped[bytes] = mapped_column(LargeBinary(6), unique=True)
    id_hash: Mapped[bytes] = mapped_column(LargeBinary(32), unique=True)
    id_number_enc: Mapped[bytes] = mapped_column(LargeBinary)
    name_enc: Mapped[bytes] = mapped_column(LargeBinary)
    phone_enc: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    birth_date_enc: Mapped[bytes] = mapped_column(LargeBinary)  # the age band's source
    status: Mapped[str] = mapped_column(String(16), default=CardStatus.ACTIVE.value)
    residency: Mapped[int] = mapped_column(Integer)
    programmes: Mapped[int] = mapped_column(Integer, default=0)
    # Bumped by SQLAlchemy on every update, which also checks it (optimistic locking): of two
    # concurrent status changes one wins and the other fails instead of silently undoing it.
    # The card cache orders snapshots by it, too.
    version: Mapped[int] = mapped_column(Integer, default=0, server_default="0")

    __mapper_args__ = {"version_id_col": version}  # noqa: RUF012 (SQLAlchemy's own API)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, onupdate=utcnow
    )


class AuditRecord(Base):
    """One operator action. ``detail`` never holds personal data, only ids, counts, states."""

    __tablename__ = "audit_records"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)
    actor: Mapped[str] = mapped_column(String(255))
    action: Mapped[str] = mapped_column(String(64))
    card_id: Mapped[str | None] = mapped_column(
        String(36), ForeignKey("cards.id"), nullable=True, index=True
    )
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class StatusChange(Base):
    """A card's status-list bit flipped (active to not active, or back), or a device removed
    (``device_id`` set, no card bit). Its id is the status list's version: a terminal at
    version N needs the changes after N."""

    __tablename__ = "status_changes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    status_index: Mapped[int | None] = mapped_column(Integer, nullable=True)
    invalid: Mapped[bool | None] = mapped_column(Boolean, nullable=True)
    device_id: Mapped[bytes | None] = mapped_column(LargeBinary(8), nullable=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class TerminalRecord(Base):
    """A registered terminal: its scene and site, and the public key it signs requests with."""

    __tablename__ = "terminals"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    scene: Mapped[str] = mapped_column(String(32))
    site: Mapped[str] = mapped_column(String(64))
    public_jwk: Mapped[dict[str, Any]] = mapped_column(JSON)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    decommissioned_at: Mapped[datetime | None] = mapped_column(
        DateTime(timezone=True), nullable=True
    )
    # The terminal's clock minus the server's, from its last request's signed iat.
    clock_drift: Mapped[int | None] = mapped_column(Integer, nullable=True)
    last_seen_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    # The status-list version the terminal holds after its last sync answer (a delta's target,
    # a whole bundle's version), and the events its journal had not uploaded at its last
    # request (its Idcode-Journal-Backlog header): the fleet's metrics (docs/operations.md).
    trust_version: Mapped[int | None] = mapped_column(Integer, nullable=True)
    journal_backlog: Mapped[int | None] = mapped_column(Integer, nullable=True)
    # A relying party's own terminal (a hospital's kiosk) sees that party's pairwise subjects.
    relying_party_id: Mapped[str | None] = mapped_column(
        String(36), ForeignKey("relying_parties.id"), nullable=True, index=True
    )


class ScanEvent(Base):
    """One decision a terminal journaled. Never personal data: the subject is the card
    pseudonym keyed for the terminal's scene.

    On PostgreSQL the table is partitioned by month of ``occurred_at`` (migration 0010,
    idcode.service.retention), so its primary key there is (terminal_id, event_id,
    occurred_at) and its indexes are those of the migration; an event is still one per
    (terminal, event id), which ``ingest`` keeps (docs/data.md, "Scan events")."""

    __tablename__ = "scan_events"

    terminal_id: Mapped[str] = mapped_column(
        String(36), ForeignKey("terminals.id"), primary_key=True
    )
    event_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    occurred_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    valid: Mapped[bool] = mapped_column(Boolean)
    reason: Mapped[str] = mapped_column(String(48), index=True)
    scene_result: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    subject: Mapped[str | None] = mapped_column(String(64), nullable=True)
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ScanHour(Base):
    """How many scans the terminals of one scene at one site decided in one hour (UTC), by
    reason: what the console's overview draws, kept when the hour's events are purged
    (idcode.service.retention). Written by the purge only, for the hours it removes."""

    __tablename__ = "scan_hours"

    hour: Mapped[datetime] = mapped_column(DateTime(timezone=True), primary_key=True)
    scene: Mapped[str] = mapped_column(String(32), primary_key=True)
    site: Mapped[str] = mapped_column(String(64), primary_key=True)
    reason: Mapped[str] = mapped_column(String(48), primary_key=True)
    valid: Mapped[bool] = mapped_column(Boolean, primary_key=True)
    count: Mapped[int] = mapped_column(BigInteger)


class SceneDataRecord(Base):
    """What the terminals of one scene at one site need besides keys and statuses: residents
    of a community, permits of a car park, a site's tariff and rules. Its structure is the
    scene adapter's; the service stores and distributes it in trust bundles."""

    __tablename__ = "scene_data"

    scene: Mapped[str] = mapped_column(String(32), primary_key=True)
    site: Mapped[str] = mapped_column(String(64), primary_key=True)
    document: Mapped[dict[str, Any]] = mapped_column(JSON)
    version: Mapped[int] = mapped_column(Integer, default=1)
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, onupdate=utcnow
    )


class RelyingPartyRecord(Base):
    """An organisation's service that identifies citizens with their consent (docs/identity.md):
    what it may ask for, for which purposes, and the public key it signs requests with."""

    __tablename__ = "relying_parties"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    name: Mapped[str] = mapped_column(String(128))
    sector: Mapped[str] = mapped_column(String(32))
    purposes: Mapped[list[str]] = mapped_column(JSON)
    attributes: Mapped[list[str]] = mapped_column(JSON)
    public_jwk: Mapped[dict[str, Any]] = mapped_column(JSON)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    deactivated_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    last_seen_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    # Bumped by each link or unlink: its terminals' trust bundles change with it.
    links_version: Mapped[int] = mapped_column(Integer, default=0, server_default="0")


class ConsentRecord(Base):
    """A citizen's consent to disclose named attributes to one relying party, held for one
    code (its random code id) until the code expires; spent by the first identification."""

    __tablename__ = "consents"

    code_id: Mapped[bytes] = mapped_column(LargeBinary(8), primary_key=True)
    card_id: Mapped[str] = mapped_column(String(36), ForeignKey("cards.id"))
    relying_party_id: Mapped[str] = mapped_column(String(36), ForeignKey("relying_parties.id"))
    attributes: Mapped[list[str]] = mapped_column(JSON)
    purpose: Mapped[str | None] = mapped_column(String(32), nullable=True)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class DisclosureRecord(Base):
    """One identification: who learnt what about which card, for which purpose, at which
    counter. Holds attribute names, never their values."""

    __tablename__ = "disclosures"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    card_id: Mapped[str] = mapped_column(String(36), ForeignKey("cards.id"), index=True)
    relying_party_id: Mapped[str] = mapped_column(
        String(36), ForeignKey("relying_parties.id"), index=True
    )
    purpose: Mapped[str] = mapped_column(String(32))
    attributes: Mapped[list[str]] = mapped_column(JSON)
    counter: Mapped[str | None] = mapped_column(String(64), nullable=True)
    subject: Mapped[str] = mapped_column(String(24))


class LinkRecord(Base):
    """A subject a relying party linked to an account of its own (a patient number, kept on
    its side): its terminals recognise that subject offline."""

    __tablename__ = "relying_party_links"

    relying_party_id: Mapped[str] = mapped_column(
        String(36), ForeignKey("relying_parties.id"), primary_key=True
    )
    subject: Mapped[str] = mapped_column(String(24), primary_key=True)
    linked_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class DeviceRecord(Base):
    """A citizen's device key, certified for one card: the phone signs device codes with it
    offline (docs/devices.md). Its public key, and its label only as ciphertext."""

    __tablename__ = "devices"
    __table_args__ = (
        Index(
            "ix_devices_revoked",
            "credential_expires_at",
            postgresql_where=text("removed_at IS NOT NULL"),
            sqlite_where=text("removed_at IS NOT NULL"),
        ),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    card_id: Mapped[str] = mapped_column(String(36), ForeignKey("cards.id"), index=True)
    alg: Mapped[str] = mapped_column(String(8))  # "EdDSA" or "ES256"
    # 32 bytes (Ed25519) or 33 (compressed P-256): the key as the credential holds it.
    public_key: Mapped[bytes] = mapped_column(LargeBinary(33))
    # SHA-256 of public_key, first 8 bytes: how codes and revoked lists name the device.
    device_id: Mapped[bytes] = mapped_column(LargeBinary(8), unique=True, index=True)
    # The citizen's name for the device ("王芳的手机"), free text: sealed like personal data.
    label_enc: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    renewed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    credential_expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    removed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class DeploymentSetting(Base):
    """A fact about the deployment its data depends on: ``crypto_profile``, recorded once, the
    profile whose keyed hashes and ciphertexts the tables hold (idcode.service.profilerecord);
    ``events_purged_before``, the latest cut-off of ``idcode events purge``
    (idcode.service.retention)."""

    __tablename__ = "deployment_settings"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    value: Mapped[str] = mapped_column(String(64))
