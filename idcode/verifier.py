"""The offline verifier: a pure function of (code text, trust, now, replay state) to a verdict.

It never raises on bad input. Checks run in a fixed order and the first failure is the
reason: trust freshness, prefix, encoding and structure, algorithm, key, signature, claims,
key signing period, validity window, revocation, then replay. The replay state is touched
only by a code that passed every other check, so forged, expired or malformed codes cannot
fill it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from idcode.claims import CodeClaims
from idcode.codetext import MAX_CODE_LENGTH, decode_body
from idcode.cose import Algorithm, Sign1, decode_sign1
from idcode.devicecode import (
    DEVICE_CODE_LIFETIME,
    MAX_CREDENTIAL_LIFETIME,
    credential_to_be_signed,
    decode_device_message,
    device_prefix,
    device_to_be_signed,
)
from idcode.errors import ClaimsError, CodeFormatError, CoseError, IdcodeError, KeyMaterialError
from idcode.issuer import MAX_TTL
from idcode.keys import PublicKey
from idcode.reasons import Reason
from idcode.replay import ReplayState
from idcode.statuslist import StatusList

DEFAULT_CLOCK_SKEW = 30  # seconds; see docs/code-format.md, "Clock rules"
MAX_CLOCK_SKEW = 300  # the most a deployment may allow


@dataclass(frozen=True)
class Trust:
    """What a verifier trusts: its prefix, algorithms, keys and clock-skew allowance.

    ``algorithms`` has no default on purpose: a verifier states which algorithms it accepts
    and refuses every other one, whatever a code's header claims.
    """

    prefix: str
    algorithms: frozenset[Algorithm]
    keys: Mapping[bytes, PublicKey]
    clock_skew: int = DEFAULT_CLOCK_SKEW
    max_lifetime: int = MAX_TTL
    #: The revocation status list, when the trust comes from a bundle.
    status: StatusList | None = None
    #: From this time on the trust is stale: codes are denied with ``stale_trust``, unless
    #: ``allow_stale`` (a scene's choice) lets them through with a warning in the detail.
    fresh_until: int | None = None
    allow_stale: bool = False
    #: The ids of devices whose citizens removed them (a bundle's ``revoked_devices``): their
    #: device codes are refused as ``revoked`` (docs/code-format.md section 8).
    revoked_devices: frozenset[bytes] = frozenset()
    #: Device codes start with this (``device_prefix(prefix)``: ``WH2:`` beside ``WH1:``).
    device_prefix: str = field(init=False, default="")

    def __post_init__(self) -> None:
        object.__setattr__(self, "device_prefix", device_prefix(self.prefix))

    @classmethod
    def of(
        cls,
        keys: Iterable[PublicKey],
        *,
        prefix: str,
        algorithms: Iterable[Algorithm],
        clock_skew: int = DEFAULT_CLOCK_SKEW,
        max_lifetime: int = MAX_TTL,
        status: StatusList | None = None,
        fresh_until: int | None = None,
        allow_stale: bool = False,
        revoked_devices: Iterable[bytes] = (),
    ) -> Trust:
        by_kid: dict[bytes, PublicKey] = {}
        for key in keys:
            kid = key.kid.encode("ascii")
            if kid in by_kid:
                raise KeyMaterialError(f"two trusted keys share kid {key.kid!r}")
            by_kid[kid] = key
        if clock_skew < 0:
            raise IdcodeError("clock skew cannot be negative")
        return cls(
            prefix,
            frozenset(algorithms),
            by_kid,
            clock_skew,
            max_lifetime,
            status,
            fresh_until,
            allow_stale,
            frozenset(revoked_devices),
        )


@dataclass(frozen=True, slots=True)
class Verdict:
    """The outcome of one verification: ``valid`` with reason ``ok``, or the one reason why not."""

    reason: Reason
    claims: CodeClaims | None = None
    kid: str | None = None
    detail: str = field(default="", compare=False)
    #: The device that made a device code (its 8-byte id); None for issuer-signed codes.
    device: bytes | None = None

    @property
    def valid(self) -> bool:
        return self.reason is Reason.OK

    def to_json(self) -> dict[str, Any]:
        verdict: dict[str, Any] = {"valid": self.valid, "reason": self.reason.value}
        if self.kid is not None:
            verdict["kid"] = self.kid
        if self.claims is not None:
            verdict["claims"] = self.claims.to_json()
        if self.device is not None:
            verdict["device"] = self.device.hex()
        if self.detail:
            verdict["detail"] = self.detail
        return verdict


def verify(code: object, trust: Trust, now: int, replay: ReplayState | None = None) -> Verdict:
    """Verify one code text at time ``now`` (seconds since the epoch).

    ``replay`` is optional so that tooling can inspect a code without consuming it; a
    terminal or the service always passes one.
    """
    try:
        verdict = _check(code, trust, now)
    except Exception as exc:  # fail closed: a decoder defect must deny, never crash a gate
        return Verdict(Reason.MALFORMED, detail=f"unexpected {type(exc).__name__} while decoding")
    claims = verdict.claims
    if (
        verdict.reason is Reason.OK
        and replay is not None
        and claims is not None
        and replay.check_and_record(claims.code_id, claims.expires_at + trust.clock_skew, now)
    ):
        return Verdict(Reason.REPLAYED, claims, verdict.kid, device=verdict.device)
    return verdict


def trusted_signer(message: Sign1, trust: Trust) -> tuple[PublicKey | None, Reason | None, str]:
    """(the trusted key that signed ``message``, None, "") or (the key named or None, the
    reason it is refused, a detail): algorithm not accepted here, kid not trusted, algorithm
    and key confused, signature wrong. Codes and visitor passes share this check."""
    alg = message.alg
    if alg not in trust.algorithms:
        return None, Reason.UNSUPPORTED_ALG, _not_accepted(alg, trust)
    key = trust.keys.get(message.kid)
    if key is None:
        return None, Reason.UNKNOWN_KEY, f"kid {message.kid!r} is not trusted"
    if key.alg != alg:
        # Algorithm confusion: a trusted key is only ever used with its own algorithm.
        return key, Reason.UNSUPPORTED_ALG, f"key {key.kid!r} is {key.alg.jose_name}"
    if not key.verify(message.signature, message.to_be_signed()):
        return key, Reason.BAD_SIGNATURE, ""
    return key, None, ""


def _not_accepted(alg: object, trust: Trust) -> str:
    """The detail of an algorithm refused by the allow-list: names it and what is accepted,
    so that a GM code at a standard terminal (or the reverse) says so at once."""
    return f"alg {Algorithm.describe(alg)} is not accepted here (accepted: {_accepted(trust)})"


def _accepted(trust: Trust) -> str:
    return ", ".join(alg.jose_name for alg in Algorithm if alg in trust.algorithms) or "none"


def _check(code: object, trust: Trust, now: int) -> Verdict:
    """Every check but replay, which needs state; see the module docstring for the order."""
    stale = trust.fresh_until is not None and now >= trust.fresh_until
    if stale and not trust.allow_stale:
        return Verdict(Reason.STALE_TRUST, detail="the trust bundle is past its max-age")
    if not isinstance(code, str):
        return Verdict(Reason.MALFORMED, detail="a code is text")
    if len(code) > MAX_CODE_LENGTH:
        return Verdict(Reason.MALFORMED, detail=f"longer than {MAX_CODE_LENGTH} characters")
    if not code.startswith(trust.prefix):
        if code.startswith(trust.device_prefix):
            return _check_device(code[len(trust.device_prefix) :], trust, now, stale)
        return Verdict(
            Reason.UNKNOWN_PREFIX,
            detail=f"expected prefix {trust.prefix!r} or {trust.device_prefix!r}",
        )
    try:
        message = decode_sign1(decode_body(code[len(trust.prefix) :]))
    except (CodeFormatError, CoseError) as exc:
        return Verdict(Reason.MALFORMED, detail=str(exc))

    key, refusal, detail = trusted_signer(message, trust)
    if key is None or refusal is not None:
        return Verdict(refusal or Reason.UNKNOWN_KEY, kid=key.kid if key else None, detail=detail)

    try:
        claims = CodeClaims.from_cbor(message.payload)
    except ClaimsError as exc:
        return Verdict(Reason.MALFORMED, kid=key.kid, detail=str(exc))
    if claims.expires_at - claims.issued_at > trust.max_lifetime:
        # Even a key's own signature cannot make a code live longer than codes may: a leaked
        # or retired key could otherwise mint codes valid for decades.
        return Verdict(
            Reason.MALFORMED,
            claims,
            key.kid,
            f"lives longer than {trust.max_lifetime} s",
        )
    if not key.signs_at(claims.issued_at):
        return Verdict(
            Reason.UNKNOWN_KEY, claims, key.kid, "issued outside the key's signing period"
        )
    skew = trust.clock_skew
    if now >= claims.expires_at + skew:
        return Verdict(Reason.EXPIRED, claims, key.kid)
    if now < claims.issued_at - skew:
        return Verdict(Reason.NOT_YET_VALID, claims, key.kid)
    if trust.status is not None and trust.status.is_invalid(claims.card.status_index):
        return Verdict(Reason.REVOKED, claims, key.kid)
    return Verdict(Reason.OK, claims, key.kid, "stale trust accepted by policy" if stale else "")


def _check_device(body: str, trust: Trust, now: int, stale: bool) -> Verdict:
    """_check for a device code (docs/code-format.md section 8), after its prefix."""
    try:
        message = decode_device_message(decode_body(body))
    except (CodeFormatError, CoseError, ClaimsError) as exc:
        return Verdict(Reason.MALFORMED, detail=str(exc))
    credential = message.credential
    kid = credential.kid
    key = trust.keys.get(kid.encode("ascii"))
    if key is None:
        return Verdict(Reason.UNKNOWN_KEY, detail=f"the credential's kid {kid!r} is not trusted")
    if key.alg not in trust.algorithms:
        return Verdict(
            Reason.UNSUPPORTED_ALG,
            kid=kid,
            detail=f"key {kid!r} is {key.alg.jose_name}, not accepted here "
            f"(accepted: {_accepted(trust)})",
        )
    blob = message.credential_bytes + message.issuer_signature
    if _verified_credentials.get(blob) is not key:
        signed = credential_to_be_signed(message.credential_bytes, key.alg, kid.encode("ascii"))
        if not key.verify(message.issuer_signature, signed):
            return Verdict(
                Reason.BAD_SIGNATURE, kid=kid, detail="the credential's issuer signature"
            )
        if len(_verified_credentials) >= _MAX_VERIFIED_CREDENTIALS:
            _verified_credentials.clear()
        _verified_credentials[blob] = key
    # A key signs credentials in its signing period, each valid at most 7 days: a credential
    # ending outside (nbf, not_after + 7 days] was not signed by this key as intended.
    if (key.not_before is not None and credential.expires_at <= key.not_before) or (
        key.not_after is not None
        and credential.expires_at > key.not_after + MAX_CREDENTIAL_LIFETIME
    ):
        return Verdict(
            Reason.UNKNOWN_KEY, kid=kid, detail="the credential is outside the key's signing period"
        )
    device = credential.device
    if not device.verify(message.device_signature, device_to_be_signed(message.payload)):
        return Verdict(
            Reason.BAD_SIGNATURE, kid=kid, detail="the device signature", device=device.device_id
        )
    issued_at = message.issued_at
    claims = CodeClaims(
        issued_at, issued_at + DEVICE_CODE_LIFETIME, message.code_id, credential.card
    )
    skew = trust.clock_skew
    device_id = device.device_id
    if now >= credential.expires_at + skew:
        return Verdict(
            Reason.EXPIRED,
            claims,
            kid,
            f"the device's credential expired at {credential.expires_at}: the phone must go "
            "online to renew it",
            device_id,
        )
    if issued_at >= credential.expires_at:
        return Verdict(
            Reason.EXPIRED, claims, kid, "made after the device's credential expired", device_id
        )
    if now >= claims.expires_at + skew:
        return Verdict(
            Reason.EXPIRED,
            claims,
            kid,
            f"made {now - issued_at} s before this terminal's time and valid "
            f"{DEVICE_CODE_LIFETIME} s: an old code, or the phone's clock is behind",
            device_id,
        )
    if now < issued_at - skew:
        return Verdict(
            Reason.NOT_YET_VALID,
            claims,
            kid,
            f"made {issued_at - now} s ahead of this terminal's time: the phone's clock is ahead",
            device_id,
        )
    if device_id in trust.revoked_devices:
        return Verdict(Reason.REVOKED, claims, kid, "the citizen removed this device", device_id)
    if trust.status is not None and trust.status.is_invalid(credential.card.status_index):
        return Verdict(Reason.REVOKED, claims, kid, device=device_id)
    return Verdict(
        Reason.OK, claims, kid, "stale trust accepted by policy" if stale else "", device_id
    )


_MAX_VERIFIED_CREDENTIALS = 4096
#: Credentials whose issuer signature verified: blob -> the trusted key (the very object)
#: that verified it. A phone's credential is shown for days. A trust lasts less: the terminal
#: runtime makes a new one for every status delta (a minute), but a delta keeps the bundle's
#: key objects, so remembering by key rather than by trust checks a credential once per
#: terminal and key, not once a minute. Matched by identity: any other key object (another
#: key under the same kid, a bundle fetched anew) verifies the signature again. Bounded:
#: cleared when full, as a terminal's other memories are.
_verified_credentials: dict[bytes, PublicKey] = {}
