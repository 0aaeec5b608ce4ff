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
        )


@dataclass(frozen=True, slots=True)
class Verdict:
    """The outcome of one verification: ``valid`` with reason ``ok``, or the one reason why not."""

    reason: Reason
    claims: CodeClaims | None = None
    kid: str | None = None
    detail: str = field(default="", compare=False)

    @property
    def valid(self) -> bool:
        return self.reason is Reason.OK

    def to_json(self) -> dict[str, Any]:
        verdict: dict[str, Any] = {"valid": self.valid, "reason": self.reason.value}
        if self.kid is not None:
            verdict["kid"] = self.kid
        if self.claims is not None:
            verdict["claims"] = self.claims.to_json()
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
        return Verdict(Reason.REPLAYED, claims, verdict.kid)
    return verdict


def trusted_signer(message: Sign1, trust: Trust) -> tuple[PublicKey | None, Reason | None, str]:
    """(the trusted key that signed ``message``, None, "") or (the key named or None, the
    reason it is refused, a detail): algorithm not accepted here, kid not trusted, algorithm
    and key confused, signature wrong. Codes and visitor passes share this check."""
    alg = message.alg
    if alg not in trust.algorithms:
        return None, Reason.UNSUPPORTED_ALG, f"alg {alg!r} is not accepted here"
    key = trust.keys.get(message.kid)
    if key is None:
        return None, Reason.UNKNOWN_KEY, f"kid {message.kid!r} is not trusted"
    if key.alg != alg:
        # Algorithm confusion: a trusted key is only ever used with its own algorithm.
        return key, Reason.UNSUPPORTED_ALG, f"key {key.kid!r} is {key.alg.jose_name}"
    if not key.verify(message.signature, message.to_be_signed()):
        return key, Reason.BAD_SIGNATURE, ""
    return key, None, ""


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
        return Verdict(Reason.UNKNOWN_PREFIX, detail=f"expected prefix {trust.prefix!r}")
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
