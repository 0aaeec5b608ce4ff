"""The signed request tokens of terminals and relying parties (``private_key_jwt`` style,
RFC 7523), checked the same way for both: ``iss`` and ``sub`` are the caller's id, ``aud`` names
the kind of caller (idcode.terminaltoken), a token lives at most five minutes and is used once
(the single use is the caller's to check, in shared state, after everything here passed).
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import jwt
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy.orm import Session

from idcode.cose import Algorithm
from idcode.errors import KeyMaterialError, Refusal
from idcode.gm import SM2PrivateKey
from idcode.jws import SM2Algorithm, sm2_jwt
from idcode.keys import check_jwk_coordinates
from idcode.profiles import STANDARD, CryptoProfile
from idcode.protocol import MAX_CLOCK_DRIFT
from idcode.terminaltoken import MAX_TOKEN_LIFETIME

#: The id of a terminal or a relying party: a UUID as the service writes it.
PARTY_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_JTI = re.compile(r"[A-Za-z0-9._:-]{1,128}")
#: The kinds of signing key a caller may register, by JWK ``kty`` and ``crv``, with their JWS
#: ``alg``; which of them a deployment takes is its crypto profile's (``request_token_names``).
_KINDS = {("OKP", "Ed25519"): "EdDSA", ("EC", "P-256"): "ES256", ("EC", "SM2"): "SM2"}
#: The request-token algorithms idcode knows, whatever the profile: a token naming one of them
#: that the profile does not take is refused saying so; any other ``alg`` as not signed.
_KNOWN = frozenset(_KINDS.values())
#: A device's tokens: its key is Ed25519 or P-256 under every profile (idcode.devicecode).
DEVICE_TOKEN_ALGORITHMS = ("EdDSA", "ES256")
#: Verifies ``alg`` ``SM2`` (only ever asked to when the profile takes it); pyjwt's global
#: instance, which verifies the others, knows no SM2 (idcode.jws).
_SM2_JWT = sm2_jwt()
#: The largest NumericDate taken (2**53: every integer up to it is exact as a float).
_LARGEST_DATE = 2**53


def public_signing_jwk(jwk: dict[str, Any]) -> dict[str, Any]:
    """``jwk`` reduced to its public members plus ``alg``, or ValueError saying what is wrong.

    Any kind idcode knows (Ed25519, P-256, SM2); whether the deployment's crypto profile takes
    it is ``check_profile_key``'s, where the profile is known."""
    if "d" in jwk:
        raise ValueError("send the public key only (no 'd')")
    kty, crv = jwk.get("kty"), jwk.get("crv")
    alg = _KINDS.get((kty, crv)) if isinstance(kty, str) and isinstance(crv, str) else None
    if alg is None:
        raise ValueError("the key must be Ed25519 (OKP), P-256 (EC) or SM2 (EC, crv SM2)")
    if "alg" in jwk and jwk["alg"] != alg:
        # A key says what it signs with; one that says something else is not guessed at.
        raise ValueError(f"a {kty} {crv} key signs with alg {alg}, not the alg the JWK names")
    try:
        # Stored as sent: junk in x or y (a NUL, say) would reach the database.
        check_jwk_coordinates(jwk, Algorithm.from_name(alg, exact=True))
    except KeyMaterialError as exc:
        raise ValueError(str(exc)) from None
    try:
        if alg == "SM2":
            SM2Algorithm.from_jwk({k: jwk[k] for k in ("kty", "crv", "x", "y")})
        else:
            jwt.PyJWK(jwk, algorithm=alg)
    except jwt.PyJWTError as exc:
        raise ValueError(f"not a usable public key: {exc}") from None
    return {k: v for k, v in jwk.items() if k in ("kty", "crv", "x", "y")} | {"alg": alg}


def check_profile_key(jwk: dict[str, Any], profile: CryptoProfile, refused: type[Refusal]) -> None:
    """``refused`` (reason ``unsupported_key``) when ``jwk`` (from ``public_signing_jwk``) is
    not of a kind ``profile`` signs request tokens with: a terminal or relying party that
    registered it could never be authenticated."""
    alg = str(jwk["alg"])
    why = profile.foreign_request_key(alg)
    if why is not None:
        raise refused(
            "unsupported_key",
            f"the key (kty {jwk['kty']}, crv {jwk['crv']}, alg {alg}) cannot be registered: {why}",
        )


@dataclass(frozen=True, slots=True)
class SignedRequest:
    """A token that passed every check but its single use: who signed it, its ``jti``, and the
    signer's clock drift (its signed ``iat`` minus the service's time)."""

    party_id: str
    jti: str
    clock_drift: int


def _numeric_date(value: object) -> bool:
    """An RFC 7519 NumericDate: a finite JSON number. Not a boolean, which Python counts as
    an int (``"iat": true`` would be 1 January 1970 plus one second). Bounded: JSON integers
    have no size, and one too large for a float (``10**400``) made the time checks below
    raise OverflowError, a 500 instead of a refusal."""
    if type(value) is int:
        return abs(value) <= _LARGEST_DATE
    return type(value) is float and math.isfinite(value) and abs(value) <= _LARGEST_DATE


@functools.cache
def _decoy_jwk(alg: str) -> dict[str, Any]:
    """A public key nobody holds (its private half is dropped at once), for ``alg``.

    A token naming an unknown caller is checked against it: the same key parsing and
    signature check as a forged token for a registered one, failing the same way."""
    if alg == "EdDSA":
        return jwt.algorithms.OKPAlgorithm.to_jwk(
            Ed25519PrivateKey.generate().public_key(), as_dict=True
        )
    if alg == "SM2":
        return SM2Algorithm.to_jwk(SM2PrivateKey.generate(), as_dict=True)
    return jwt.algorithms.ECAlgorithm.to_jwk(
        ec.generate_private_key(ec.SECP256R1()).public_key(), as_dict=True
    )


@dataclass(frozen=True, slots=True)
class ReadToken:
    """A request token parsed but not yet checked: the caller it names and its algorithm."""

    token: str
    party_id: str
    alg: str


def read_request_token(
    token: str,
    *,
    refused: type[Refusal],
    not_signed: str,
    profile: CryptoProfile = STANDARD,
    algorithms: tuple[str, ...] | None = None,
) -> ReadToken:
    """The caller ``token`` names and the algorithm its header claims (one parse, nothing
    verified), or ``refused``. Split from ``check_read_token`` so that the caller's key can be
    looked up, in a cache or the database, between the two.

    The algorithm must be one of ``algorithms``, by default the ``profile``'s request-token
    algorithms. One of another profile is refused under ``gm`` saying so (a token's header is
    its sender's to read, and names no caller); under ``standard`` an ``SM2`` token is refused
    as not signed, as any ``alg`` the service does not know."""
    try:
        # Header and claims in one parse (get_unverified_header plus decode parsed it twice).
        unverified = jwt.decode_complete(token, options={"verify_signature": False})
        header, party_id = unverified["header"], unverified["payload"].get("iss")
    except jwt.PyJWTError:
        raise refused("invalid_token", "not a request token") from None
    if not isinstance(party_id, str) or not PARTY_ID.fullmatch(party_id):
        raise refused("invalid_token", "the token names no registered caller")
    alg = header.get("alg")
    accepted = profile.request_token_names() if algorithms is None else algorithms
    if alg not in accepted:
        foreign = None
        if alg in _KNOWN and "SM2" in accepted:
            foreign = profile.foreign_request_key(str(alg))
        raise refused("invalid_token", foreign or not_signed)
    return ReadToken(token, party_id, alg)


def check_request_token(
    token: str,
    *,
    audience: str,
    public_jwk: Callable[[str], dict[str, Any] | None],
    refused: type[Refusal],
    not_signed: str,
    now: float,
    profile: CryptoProfile = STANDARD,
) -> SignedRequest:
    """Who signed ``token`` for ``audience``, or ``refused`` saying why not.

    ``public_jwk(party_id)`` is the registered key of that caller, None if there is none.
    Whether the caller is still active is the caller's to check afterwards: only a token its
    key signed may learn that (an unsigned one must not probe which ids exist)."""
    read = read_request_token(token, refused=refused, not_signed=not_signed, profile=profile)
    return check_read_token(
        read,
        audience=audience,
        public_jwk=public_jwk(read.party_id),
        refused=refused,
        not_signed=not_signed,
        now=now,
    )


def check_read_token(
    read: ReadToken,
    *,
    audience: str,
    public_jwk: dict[str, Any] | None,
    refused: type[Refusal],
    not_signed: str,
    now: float,
) -> SignedRequest:
    """``check_request_token`` after ``read_request_token``: ``public_jwk`` is the registered
    key of the caller the token names, None if there is none."""
    token, party_id, alg = read.token, read.party_id, read.alg
    jwk = public_jwk
    # The signature is checked with the header's algorithm against the caller's key when it
    # has one of that algorithm, else against a decoy: an unknown id, or a known one with a
    # key of the other kind, costs one signature check and fails as a forgery does.
    known = jwk is not None and jwk.get("alg") == alg
    signing_jwk = jwk if known and jwk is not None else _decoy_jwk(alg)
    decoder: Any = jwt
    if alg == "SM2":  # only ever an alg the profile takes (read_request_token)
        key: Any = SM2Algorithm.from_jwk({k: signing_jwk[k] for k in ("kty", "crv", "x", "y")})
        decoder = _SM2_JWT
    else:
        key = jwt.PyJWK(signing_jwk, algorithm=alg).key
    try:
        # Times are judged below against the caller's own clock, which may drift (a terminal
        # offline for days must still reach the service to learn that it drifts).
        claims = decoder.decode(
            token,
            key,
            algorithms=[alg],
            audience=audience,
            issuer=party_id,
            options={
                "require": ["iss", "sub", "aud", "iat", "exp", "jti"],
                # ``aud`` must be the one audience as a string: PyJWT otherwise takes a list
                # that contains it, and a token naming both audiences would then be good for
                # a terminal's routes and a relying party's alike.
                "strict_aud": True,
                "verify_exp": False,
                "verify_iat": False,
            },
        )
    except (jwt.InvalidSignatureError, jwt.InvalidAlgorithmError, jwt.DecodeError):
        # An SM2 signature that is not 64 bytes fails in SM2Algorithm.verify as a forgery.
        raise refused("invalid_token", not_signed) from None
    except jwt.PyJWTError as exc:
        # Claims are judged only after the signature verified: only the key's holder sees this.
        raise refused("invalid_token", f"the request token is not valid: {exc}") from None
    if not known:  # unreachable: nobody holds a decoy's private key
        raise refused("invalid_token", not_signed)
    issued, expires, jti = claims["iat"], claims["exp"], claims["jti"]
    if not (_numeric_date(issued) and _numeric_date(expires)):
        raise refused("invalid_token", "iat and exp must be numbers (not booleans)")
    if claims["sub"] != party_id or not 0 < expires - issued <= MAX_TOKEN_LIFETIME:
        raise refused("invalid_token", "sub must be the issuer and the lifetime 1-300 s")
    if not isinstance(jti, str) or not _JTI.fullmatch(jti):
        # The jti keys the replay record: text that hashes the same on every replica.
        raise refused("invalid_token", "jti must be 1-128 of A-Z a-z 0-9 . _ : -")
    if math.ceil(issued - now) > MAX_CLOCK_DRIFT:
        raise refused("invalid_token", f"the caller's clock is more than {MAX_CLOCK_DRIFT} s ahead")
    if now - expires > MAX_CLOCK_DRIFT:
        raise refused("token_expired", "the request token has expired")
    return SignedRequest(party_id, jti, int(issued - now))


class SigningCaller(Protocol):
    """A registered caller's record: its public key, and whether it may still call."""

    public_jwk: dict[str, Any]
    active: bool


Caller = TypeVar("Caller", bound=SigningCaller)


def authenticate_caller(
    session: Session,
    model: type[Caller],
    token: str,
    *,
    audience: str,
    refused: type[Refusal],
    not_signed: str,
    inactive: tuple[str, str],
    now: float,
    profile: CryptoProfile = STANDARD,
) -> tuple[Caller, SignedRequest]:
    """The active ``model`` record (a terminal, a relying party) whose key signed ``token``,
    with the checked token; ``refused`` saying why not, ``inactive`` (reason, message) for a
    caller no longer active. Reads only: the caller's single use and last-seen time are the
    route's to record, after this, so a refused token changes nothing."""
    records: dict[str, Caller | None] = {}

    def public_jwk(party_id: str) -> dict[str, Any] | None:
        records[party_id] = record = session.get(model, party_id)
        return None if record is None else record.public_jwk

    signed = check_request_token(
        token,
        audience=audience,
        public_jwk=public_jwk,
        refused=refused,
        not_signed=not_signed,
        now=now,
        profile=profile,
    )
    record = records[signed.party_id]
    assert record is not None  # its key signed the token
    # Checked only now, so that an unsigned token cannot probe which callers exist.
    if not record.active:
        raise refused(*inactive)
    return record, signed
