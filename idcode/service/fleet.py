"""The terminal fleet: registration, decommissioning, and the signed requests terminals make.

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
from sqlalchemy import update
from sqlalchemy.orm import Session

from idcode.cose import Algorithm
from idcode.errors import KeyMaterialError, RequestRefused, TerminalAuthError
from idcode.keys import check_jwk_coordinates
from idcode.protocol import MAX_CLOCK_DRIFT
from idcode.scenes import (
    SCENES,
    scene_names,
)
from idcode.service.cards import record_audit
from idcode.service.models import (
    TerminalRecord,
)
from idcode.terminaltoken import MAX_TOKEN_LIFETIME, TERMINAL_AUDIENCE, terminal_token
from idcode.verifier import DEFAULT_CLOCK_SKEW

__all__ = ["MAX_TOKEN_LIFETIME", "TERMINAL_AUDIENCE", "terminal_token"]  # re-exported

log = logging.getLogger("idcode.service.fleet")

# A terminal whose clock drifts more than a code's clock-skew allowance is worth a warning.
CLOCK_DRIFT_ALLOWANCE = DEFAULT_CLOCK_SKEW
# A terminal whose clock is off by up to MAX_CLOCK_DRIFT can still authenticate (and learn
# it); each token is single-use (jti), so the wider window does not make captured tokens useful.
TERMINAL_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


_JTI = re.compile(r"[A-Za-z0-9._:-]{1,128}")


def _numeric_date(value: object) -> bool:
    """An RFC 7519 NumericDate: a finite JSON number. Not a boolean, which Python counts as
    an int (``"iat": true`` would be 1 January 1970 plus one second)."""
    return type(value) is int or (type(value) is float and math.isfinite(value))


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
        raise RequestRefused("terminal_not_found", "no terminal with this id")
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


