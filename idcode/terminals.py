"""Terminals: registration, their signed requests, the trust they fetch and the events they upload.

A terminal authenticates with short JWTs signed by its own key (``private_key_jwt`` style,
RFC 7523): ``iss`` and ``sub`` are its id, ``aud`` is ``idcode``, and a token lives at most
five minutes. Decommissioning a terminal cuts it off at its next request.
"""

from __future__ import annotations

import functools
import logging
import math
import re
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import BaseModel, ConfigDict, Field, field_validator
from sqlalchemy import Insert, String, cast, delete, func, select, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from idcode.cards import CardError, record_audit
from idcode.cose import Algorithm
from idcode.decider import ADAPTER_ERROR
from idcode.errors import KeyMaterialError
from idcode.keys import check_jwk_coordinates
from idcode.models import (
    CardRecord,
    CardStatus,
    ScanEvent,
    SceneData,
    StatusChange,
    TerminalRecord,
)
from idcode.pii import PersonalDataVault
from idcode.reasons import Reason
from idcode.scenes import (
    SCENES,
    SUBJECT_PATTERN,
    SceneError,
    load_adapter,
    scene_names,
    subject_of,
)
from idcode.settings import MAX_BUNDLE_MAX_AGE
from idcode.statuslist import StatusDelta, StatusList
from idcode.terminal.token import MAX_TOKEN_LIFETIME, TERMINAL_AUDIENCE, terminal_token
from idcode.text import unstorable_reason

__all__ = ["MAX_TOKEN_LIFETIME", "TERMINAL_AUDIENCE", "terminal_token"]  # re-exported

log = logging.getLogger("idcode.terminals")

CLOCK_DRIFT_ALLOWANCE = 30  # seconds, the verifier's default clock-skew allowance
# A terminal whose clock is off by up to this much can still authenticate (and learn it);
# each token is single-use (jti), so the wider window does not make captured tokens useful.
MAX_CLOCK_DRIFT = 600
MAX_EVENTS_PER_BATCH = 1000
MAX_RESULT_INTEGER = 2**53 - 1
_RESULT_NAME = re.compile(r"[a-z0-9_]{1,32}")
EVENT_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")
TERMINAL_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


_JTI = re.compile(r"[A-Za-z0-9._:-]{1,128}")


def _numeric_date(value: object) -> bool:
    """An RFC 7519 NumericDate: a finite JSON number. Not a boolean, which Python counts as
    an int (``"iat": true`` would be 1 January 1970 plus one second)."""
    return type(value) is int or (type(value) is float and math.isfinite(value))


class TerminalAuthError(CardError):
    """A terminal's request token is refused."""


class NewTerminal(BaseModel):
    model_config = ConfigDict(extra="forbid")

    scene: str = Field(description=" | ".join(SCENES) + ", or a scene an installed plugin adds")
    site: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._-]+$")
    public_jwk: dict[str, Any] = Field(description="The terminal's public key (Ed25519 or P-256).")

    @field_validator("scene")
    @classmethod
    def _known_scene(cls, scene: str) -> str:
        if scene not in scene_names():
            raise ValueError(f"scene must be one of {', '.join(scene_names())}")
        return scene

    @field_validator("public_jwk")
    @classmethod
    def _public_signing_key(cls, jwk: dict[str, Any]) -> dict[str, Any]:
        if "d" in jwk:
            raise ValueError("send the public key only (no 'd')")
        kinds = {("OKP", "Ed25519"): "EdDSA", ("EC", "P-256"): "ES256"}
        kty, crv = jwk.get("kty"), jwk.get("crv")
        alg = kinds.get((kty, crv)) if isinstance(kty, str) and isinstance(crv, str) else None
        if alg is None:
            raise ValueError("the key must be Ed25519 (OKP) or P-256 (EC)")
        try:
            # Stored as sent: junk in x or y (a NUL, say) would reach the database.
            check_jwk_coordinates(jwk, Algorithm.from_name(alg, exact=True))
        except KeyMaterialError as exc:
            raise ValueError(str(exc)) from None
        try:
            jwt.PyJWK(jwk, algorithm=alg)
        except jwt.PyJWTError as exc:
            raise ValueError(f"not a usable public key: {exc}") from None
        return {k: v for k, v in jwk.items() if k in ("kty", "crv", "x", "y")} | {"alg": alg}


def register(session: Session, new: NewTerminal, actor: str) -> TerminalRecord:
    record = TerminalRecord(
        id=str(uuid.uuid4()), scene=new.scene, site=new.site, public_jwk=new.public_jwk
    )
    session.add(record)
    session.flush()
    record_audit(
        session,
        actor,
        "terminal.register",
        detail={"terminal": record.id, "scene": new.scene, "site": new.site},
    )
    return record


def decommission(session: Session, terminal_id: str, actor: str) -> TerminalRecord:
    record = session.get(TerminalRecord, terminal_id)
    if record is None:
        raise CardError("terminal_not_found", "no terminal with this id")
    if record.active:
        record.active = False
        record.decommissioned_at = datetime.now(UTC)
        record_audit(session, actor, "terminal.decommission", detail={"terminal": terminal_id})
    return record


@dataclass(frozen=True, slots=True)
class AuthenticatedTerminal:
    """A terminal whose request token passed every check but its single use (the caller's,
    in shared state), and its clock drift: its signed ``iat`` minus the service's time."""

    record: TerminalRecord
    clock_drift: int


#: Every answer to a token that the named terminal's key did not sign, whether that terminal
#: exists or not: the detail must not tell which ids are registered, nor with which algorithm.
NOT_SIGNED = "the token is not signed by a registered terminal's key"
_TERMINAL_ALGS = ("EdDSA", "ES256")


@functools.cache
def _decoy_jwk(alg: str) -> dict[str, Any]:
    """A public key no terminal holds (its private half is dropped at once), for ``alg``.

    A token naming an unknown terminal is checked against it: the same key parsing and
    signature check as a forged token for a registered terminal, failing the same way."""
    if alg == "EdDSA":
        return jwt.algorithms.OKPAlgorithm.to_jwk(
            Ed25519PrivateKey.generate().public_key(), as_dict=True
        )
    return jwt.algorithms.ECAlgorithm.to_jwk(
        ec.generate_private_key(ec.SECP256R1()).public_key(), as_dict=True
    )


def authenticate(session: Session, token: str, now: float | None = None) -> AuthenticatedTerminal:
    """The active terminal that signed ``token``, or TerminalAuthError saying why not.

    Reads only: the caller checks the token's single use, then records the terminal as seen
    (``record_seen``), so that a refused or replayed token changes nothing about it."""
    now = time.time() if now is None else now
    try:
        header = jwt.get_unverified_header(token)
        unverified = jwt.decode(token, options={"verify_signature": False})
        terminal_id = unverified.get("iss")
    except jwt.PyJWTError:
        raise TerminalAuthError("invalid_token", "not a terminal token") from None
    if not isinstance(terminal_id, str) or not TERMINAL_ID.fullmatch(terminal_id):
        raise TerminalAuthError("invalid_token", "the token names no terminal")
    alg = header.get("alg")
    if alg not in _TERMINAL_ALGS:
        raise TerminalAuthError("invalid_token", NOT_SIGNED)
    record = session.get(TerminalRecord, terminal_id)
    # The signature is checked with the header's algorithm against the terminal's key when it
    # has one of that algorithm, else against a decoy: an unknown id, or a known one with a
    # key of the other kind, costs one signature check and fails as a forgery does.
    jwk = record.public_jwk if record is not None else None
    if jwk is None or jwk.get("alg") != alg:
        jwk = _decoy_jwk(alg)
    key = jwt.PyJWK(jwk, algorithm=alg).key
    try:
        # Times are judged below against the terminal's own clock, which may drift while it
        # is offline for days: it must still reach the service to learn that it drifts.
        claims = jwt.decode(
            token,
            key,
            algorithms=[alg],
            audience=TERMINAL_AUDIENCE,
            issuer=terminal_id,
            options={
                "require": ["iss", "sub", "aud", "iat", "exp", "jti"],
                "verify_exp": False,
                "verify_iat": False,
            },
        )
    except (jwt.InvalidSignatureError, jwt.InvalidAlgorithmError, jwt.DecodeError):
        raise TerminalAuthError("invalid_token", NOT_SIGNED) from None
    except jwt.PyJWTError as exc:
        # Claims are judged only after the signature verified: only the key's holder sees this.
        raise TerminalAuthError(
            "invalid_token", f"the terminal token is not valid: {exc}"
        ) from None
    if record is None:  # unreachable: nobody holds a decoy's private key
        raise TerminalAuthError("invalid_token", NOT_SIGNED)
    issued, expires, jti = claims["iat"], claims["exp"], claims["jti"]
    if not (_numeric_date(issued) and _numeric_date(expires)):
        raise TerminalAuthError("invalid_token", "iat and exp must be numbers (not booleans)")
    if claims["sub"] != terminal_id or not 0 < expires - issued <= MAX_TOKEN_LIFETIME:
        raise TerminalAuthError(
            "invalid_token", "sub must be the terminal and the lifetime 1-300 s"
        )
    if not isinstance(jti, str) or not _JTI.fullmatch(jti):
        # The jti keys the replay record: text that hashes the same on every replica.
        raise TerminalAuthError("invalid_token", "jti must be 1-128 of A-Z a-z 0-9 . _ : -")
    drift = math.ceil(issued - now)
    if drift > MAX_CLOCK_DRIFT:
        raise TerminalAuthError(
            "invalid_token", f"the terminal's clock is more than {MAX_CLOCK_DRIFT} s ahead"
        )
    if now - expires > MAX_CLOCK_DRIFT:
        raise TerminalAuthError("token_expired", "the terminal token has expired")
    # Checked only now, so that an unsigned token cannot probe which terminals exist.
    if not record.active:
        raise TerminalAuthError("terminal_decommissioned", "this terminal is decommissioned")
    # The terminal signed iat with its own clock: its drift against ours, for operators.
    return AuthenticatedTerminal(record, int(issued - now))


def record_seen(session: Session, terminal_id: str, clock_drift: int, now: float) -> None:
    """Note a terminal's accepted request: when, and how far its clock drifts from ours.
    Called only once its token passed every check, single use included."""
    if abs(clock_drift) > CLOCK_DRIFT_ALLOWANCE:
        log.warning("terminal %s clock drifts %+d s", terminal_id, clock_drift)
    session.execute(
        update(TerminalRecord)
        .where(TerminalRecord.id == terminal_id)
        .values(clock_drift=clock_drift, last_seen_at=datetime.fromtimestamp(now, UTC))
    )


# -- status list for bundles ---------------------------------------------------------------


def status_version(session: Session) -> int:
    """The status list's version, once no status change is still being committed.

    Versions come from a sequence, so a change can commit after one with a higher id; a
    terminal already at that higher version would never be sent it. On PostgreSQL this read
    therefore waits for changes in flight and holds new ones back until its transaction ends
    (SQLite commits one writer at a time, in id order)."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("LOCK TABLE status_changes IN SHARE MODE"))
    return int(session.scalar(select(func.max(StatusChange.id))) or 0)


def current_status(session: Session) -> tuple[int, StatusList]:
    """(version, list) from the cards as they are now."""
    version = status_version(session)
    size = int(session.scalar(select(func.max(CardRecord.status_index))) or 0) + 1
    status = StatusList(size)
    for index in session.scalars(
        select(CardRecord.status_index).where(CardRecord.status != CardStatus.ACTIVE.value)
    ):
        status.set(index, True)
    return version, status


def status_delta(session: Session, since: int) -> StatusDelta:
    """What changed after version ``since``: the last change of each index wins."""
    target = status_version(session)
    size = int(session.scalar(select(func.max(CardRecord.status_index))) or 0) + 1
    final: dict[int, bool] = {}
    for change in session.scalars(
        select(StatusChange).where(StatusChange.id > since).order_by(StatusChange.id)
    ):
        final[change.status_index] = change.invalid
    return StatusDelta(
        since,
        target,
        size,
        tuple(sorted(i for i, invalid in final.items() if invalid)),
        tuple(sorted(i for i, invalid in final.items() if not invalid)),
    )


# -- events ----------------------------------------------------------------------------------


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
        # A scene reports coarse outcomes (a fee, a ticket class, a count), never free text
        # about a person: short names, scalar values, a handful of them.
        if len(result) > 20:
            raise ValueError("at most 20 scene results")
        for name, value in result.items():
            if not _RESULT_NAME.fullmatch(name):
                raise ValueError("scene result names are 1-32 of a-z, 0-9 and _")
            if isinstance(value, str) and len(value) > 64:
                raise ValueError("scene result texts are at most 64 characters")
            if isinstance(value, str) and (problem := unstorable_reason(value)) is not None:
                raise ValueError(f"scene result {name} {problem}, which cannot be stored")
            if value is not None and not isinstance(value, str | int | float | bool):
                raise ValueError("scene results are numbers, booleans or short texts")
            if isinstance(value, float) and not math.isfinite(value):
                raise ValueError("scene results are finite numbers")
            if isinstance(value, int) and abs(value) > MAX_RESULT_INTEGER:
                # Beyond this a JSON reader in JavaScript rounds it, and it no longer fits a
                # PostgreSQL bigint should the column ever be typed.
                raise ValueError("scene result integers are within +-(2**53 - 1)")
        return result

    subject: str | None = Field(
        default=None,
        pattern=SUBJECT_PATTERN,
        description="The card pseudonym keyed for this scene (24 hex digits).",
    )


def check_events(scene: str, events: list[ScanEventIn], now: float | None = None) -> None:
    """Refuse events no terminal of ``scene`` can have decided: a reason outside the closed
    set (the verifier's, ``adapter_error`` and the scene adapter's own), an admission whose
    reason is not ``ok`` (and the other way round), or a time outside the window the service
    takes (``event_time_out_of_range``, see ``event_time_problem``). The CardError names the
    first such event, so that a terminal splitting its refused batch finds it."""
    now = time.time() if now is None else now
    known = {reason.value for reason in Reason} | {ADAPTER_ERROR}
    known.update(load_adapter(scene).reasons)
    for event in events:
        if event.reason not in known:
            raise CardError(
                "unknown_reason",
                f"event {event.event_id}: {event.reason!r} is not a reason of the {scene} scene",
            )
        if event.valid != (event.reason == Reason.OK.value):
            raise CardError(
                "inconsistent_event",
                f"event {event.event_id}: an admission has reason ok, a denial another one",
            )
        problem = event_time_problem(event.occurred_at, now)
        if problem is not None:
            raise CardError("event_time_out_of_range", f"event {event.event_id}: {problem}")


#: How long after an event its terminal may still upload it: the longest a terminal can be
#: meant to decide offline (the longest bundle max-age) and five days to reconnect after that.
MAX_EVENT_AGE = MAX_BUNDLE_MAX_AGE + 5 * 86_400
#: How far in the service's future an event may lie: the clock drift a terminal may have
#: and still authenticate (a terminal whose clock is further ahead cannot upload at all).
MAX_EVENT_AHEAD = MAX_CLOCK_DRIFT


def as_utc(at: datetime) -> datetime:
    """``at`` in UTC; a time without an offset is taken as UTC. Raises OverflowError where
    UTC leaves years 1-9999 (year 1 at +14:00): call it on checked times only."""
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)


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
    statement: Insert = (
        postgresql.insert(ScanEvent).on_conflict_do_nothing()
        if session.get_bind().dialect.name == "postgresql"
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
    was; returns that record's detail. CardError ``event_not_found`` when there is none.

    The time is read as text, so that an event no reader can load (a time written before the
    service bounded event times) can still be removed."""
    found = session.execute(
        select(cast(ScanEvent.occurred_at, String), ScanEvent.reason).where(
            ScanEvent.terminal_id == terminal_id, ScanEvent.event_id == event_id
        )
    ).first()
    if found is None:
        raise CardError("event_not_found", "this terminal has no event with this id")
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


# -- scene data --------------------------------------------------------------------------------


def scene_data(session: Session, scene: str, site: str) -> SceneData | None:
    return session.get(SceneData, (scene, site))


def put_scene_data(
    session: Session,
    scene: str,
    site: str,
    document: dict[str, Any],
    actor: str,
    vault: PersonalDataVault,
) -> SceneData:
    """Replace the scene data of (scene, site); its version goes up by one.

    Every ``"card:<card id>"`` in the document becomes that card's subject for the scene, so
    operators can name people by card while terminals only ever see subjects; then the
    scene's adapter validates the result. CardError says why not: ``unknown_scene``,
    ``unknown_card`` or ``invalid_scene_data``.
    """
    if scene not in scene_names():
        raise CardError("unknown_scene", f"scene must be one of {', '.join(scene_names())}")
    problem = unstorable_reason(document)
    if problem is not None:
        # Refused, not cleaned: PostgreSQL cannot read \u0000 in JSON as text, and an
        # unpaired surrogate is no text at all. The adapter would refuse neither.
        raise CardError("invalid_scene_data", f"the scene data {problem}")
    document = _resolve_card_references(session, document, vault.scene_subject_key(scene))
    try:
        load_adapter(scene).parse_data(document)
    except SceneError as exc:
        raise CardError("invalid_scene_data", str(exc)) from None
    record = session.get(SceneData, (scene, site))
    if record is None:
        record = SceneData(scene=scene, site=site, document=document, version=1)
        session.add(record)
    else:
        record.document = document
        record.version += 1
    record_audit(
        session,
        actor,
        "scene.update",
        detail={"scene": scene, "site": site, "version": record.version},
    )
    return record


CARD_REFERENCE = "card:"
MAX_SCENE_DATA_DEPTH = 32
_LOOKUP_CHUNK = 1000


def _resolve_card_references(
    session: Session, document: dict[str, Any], subject_key: bytes
) -> dict[str, Any]:
    """The document with each ``card:<id>`` text value replaced by the card's subject."""
    references: set[str] = set()

    def collect(value: Any, depth: int) -> None:
        if depth > MAX_SCENE_DATA_DEPTH:
            # Bounds the recursion here and below; no scene's data nests half as deep.
            raise CardError("invalid_scene_data", "scene data nests too deeply")
        if isinstance(value, str) and value.startswith(CARD_REFERENCE):
            references.add(value)
        elif isinstance(value, dict):
            for item in value.values():
                collect(item, depth + 1)
        elif isinstance(value, list):
            for item in value:
                collect(item, depth + 1)

    collect(document, 0)
    if not references:
        return document
    card_ids: dict[str, str] = {}  # reference -> card id as stored
    for reference in sorted(references):
        try:
            card_ids[reference] = str(uuid.UUID(reference.removeprefix(CARD_REFERENCE)))
        except ValueError:
            raise CardError("unknown_card", f"{reference[:64]!r} names no card") from None
    wanted = sorted(set(card_ids.values()))
    pseudonyms: dict[str, bytes] = {}
    for start in range(0, len(wanted), _LOOKUP_CHUNK):
        chunk = wanted[start : start + _LOOKUP_CHUNK]
        rows = session.execute(
            select(CardRecord.id, CardRecord.pseudonym).where(CardRecord.id.in_(chunk))
        )
        pseudonyms.update((card_id, pseudonym) for card_id, pseudonym in rows)
    missing = sorted(ref for ref, card_id in card_ids.items() if card_id not in pseudonyms)
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise CardError("unknown_card", f"{missing[0]!r} names no card{more}")
    subjects = {
        reference: subject_of(subject_key, pseudonyms[card_id])
        for reference, card_id in card_ids.items()
    }

    def replace(value: Any) -> Any:
        if isinstance(value, str):
            return subjects.get(value, value)
        if isinstance(value, dict):
            return {key: replace(item) for key, item in value.items()}
        if isinstance(value, list):
            return [replace(item) for item in value]
        return value

    resolved: dict[str, Any] = replace(document)
    return resolved
