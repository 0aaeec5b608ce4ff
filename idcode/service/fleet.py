"""The terminal fleet: registration, decommissioning, and the signed requests terminals make.

A terminal authenticates with short JWTs signed by its own key (``private_key_jwt`` style,
RFC 7523): ``iss`` and ``sub`` are its id, ``aud`` is ``idcode``, and a token lives at most
five minutes. Decommissioning a terminal cuts it off at its next request.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator
from sqlalchemy import update
from sqlalchemy.orm import Session

from idcode.errors import RequestRefused, TerminalAuthError
from idcode.profiles import CryptoProfile
from idcode.scenes import SCENES, scene_names
from idcode.service.cards import record_audit
from idcode.service.models import RelyingPartyRecord, TerminalRecord
from idcode.service.requesttokens import (
    PARTY_ID,
    authenticate_caller,
    check_profile_key,
    public_signing_jwk,
)
from idcode.terminaltoken import MAX_TOKEN_LIFETIME, TERMINAL_AUDIENCE, terminal_token
from idcode.verifier import DEFAULT_CLOCK_SKEW

__all__ = ["MAX_TOKEN_LIFETIME", "TERMINAL_AUDIENCE", "terminal_token"]  # re-exported

log = logging.getLogger("idcode.service.fleet")

# A terminal whose clock drifts more than a code's clock-skew allowance is worth a warning.
CLOCK_DRIFT_ALLOWANCE = DEFAULT_CLOCK_SKEW
# A terminal whose clock is off by up to MAX_CLOCK_DRIFT can still authenticate (and learn
# it); each token is single-use (jti), so the wider window does not make captured tokens useful.
TERMINAL_ID = PARTY_ID


class NewTerminal(BaseModel):
    model_config = ConfigDict(extra="forbid")

    scene: str = Field(description=" | ".join(SCENES) + ", or a scene an installed plugin adds")
    site: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._-]+$")
    public_jwk: dict[str, Any] = Field(
        description="The terminal's public key: Ed25519 or P-256, or SM2 (kty EC, crv SM2) under "
        "the gm crypto profile (docs/crypto-profiles.md)."
    )
    relying_party: str | None = Field(
        default=None,
        pattern=f"^{PARTY_ID.pattern}$",
        description="The relying party the terminal belongs to (a hospital's kiosk): its trust "
        "bundle then carries that party's pairwise subject key and linked subjects "
        "(docs/identity.md, multi-code fusion).",
    )

    @field_validator("scene")
    @classmethod
    def _known_scene(cls, scene: str) -> str:
        if scene not in scene_names():
            raise ValueError(f"scene must be one of {', '.join(scene_names())}")
        return scene

    @field_validator("public_jwk")
    @classmethod
    def _public_signing_key(cls, jwk: dict[str, Any]) -> dict[str, Any]:
        return public_signing_jwk(jwk)


def register(
    session: Session, new: NewTerminal, actor: str, profile: CryptoProfile
) -> TerminalRecord:
    check_profile_key(new.public_jwk, profile, RequestRefused)
    if new.relying_party is not None:
        party = session.get(RelyingPartyRecord, new.relying_party)
        if party is None or not party.active:
            raise RequestRefused("relying_party_not_found", "no active relying party with this id")
    record = TerminalRecord(
        id=str(uuid.uuid4()),
        scene=new.scene,
        site=new.site,
        public_jwk=new.public_jwk,
        relying_party_id=new.relying_party,
    )
    session.add(record)
    session.flush()
    detail = {"terminal": record.id, "scene": new.scene, "site": new.site}
    if new.relying_party is not None:
        detail["relying_party"] = new.relying_party
    record_audit(session, actor, "terminal.register", detail=detail)
    return record


def decommission(session: Session, terminal_id: str, actor: str) -> TerminalRecord:
    record = session.get(TerminalRecord, terminal_id)
    if record is None:
        raise RequestRefused("terminal_not_found", "no terminal with this id")
    if record.active:
        record.active = False
        record.decommissioned_at = datetime.now(UTC)
        record_audit(session, actor, "terminal.decommission", detail={"terminal": terminal_id})
    return record


@dataclass(frozen=True, slots=True)
class AuthenticatedTerminal:
    """A terminal whose request token passed every check but its single use (the caller's,
    in shared state), its ``jti``, and its clock drift: its signed ``iat`` minus our time."""

    record: TerminalRecord
    jti: str
    clock_drift: int


#: Every answer to a token that the named terminal's key did not sign, whether that terminal
#: exists or not: the detail must not tell which ids are registered, nor with which algorithm.
NOT_SIGNED = "the token is not signed by a registered terminal's key"


def authenticate(
    session: Session, token: str, now: float | None = None, *, profile: CryptoProfile
) -> AuthenticatedTerminal:
    """The active terminal that signed ``token``, or TerminalAuthError saying why not.

    Reads only: the caller checks the token's single use, then records the terminal as seen
    (``record_seen``), so that a refused or replayed token changes nothing about it."""
    record, signed = authenticate_caller(
        session,
        TerminalRecord,
        token,
        audience=TERMINAL_AUDIENCE,
        refused=TerminalAuthError,
        not_signed=NOT_SIGNED,
        inactive=("terminal_decommissioned", "this terminal is decommissioned"),
        now=time.time() if now is None else now,
        profile=profile,
    )
    return AuthenticatedTerminal(record, signed.jti, signed.clock_drift)


def record_seen(
    session: Session,
    terminal_id: str,
    clock_drift: int,
    now: float,
    journal_backlog: int | None = None,
) -> None:
    """Note a terminal's accepted request: when, how far its clock drifts from ours and, when
    it said, how many events its journal has not uploaded. Called only once its token passed
    every check, single use included."""
    if abs(clock_drift) > CLOCK_DRIFT_ALLOWANCE:
        log.warning("terminal %s clock drifts %+d s", terminal_id, clock_drift)
    values: dict[str, Any] = {
        "clock_drift": clock_drift,
        "last_seen_at": datetime.fromtimestamp(now, UTC),
    }
    if journal_backlog is not None:
        values["journal_backlog"] = journal_backlog
    session.execute(update(TerminalRecord).where(TerminalRecord.id == terminal_id).values(values))


def record_trust_version(session: Session, terminal_id: str, version: int) -> None:
    """Note the status-list version a terminal holds once it has the answer just sent (a whole
    bundle's version, or a delta's target): the fleet's trust version lag is the service's
    version minus this (docs/operations.md). A terminal that failed to apply the answer asks
    again from its old version, which then corrects this."""
    session.execute(
        update(TerminalRecord).where(TerminalRecord.id == terminal_id).values(trust_version=version)
    )
