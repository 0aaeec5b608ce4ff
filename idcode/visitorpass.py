"""Visitor passes: a resident's signed, offline-verifiable pass for a guest at one community
gate for a time window. Pure functions over bytes, keys and a ``now``; docs/code-format.md,
section 7, fixes the format.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass, field

from idcode.cbor import decode_strict, encode_bytes, encode_int, encode_text, head
from idcode.claims import MAX_NUMERIC_DATE
from idcode.codetext import decode_body
from idcode.codetext import encode_text as encode_code_text
from idcode.cose import decode_sign1, encode_protected, encode_sign1, to_be_signed
from idcode.errors import CborError, ClaimsError, CodeFormatError, CoseError
from idcode.errors import PassWindowError as PassWindowError
from idcode.keys import Signer
from idcode.reasons import Reason
from idcode.scenes import DAY, SUBJECT_BYTES
from idcode.verifier import Trust, trusted_signer

# CWT claim keys (RFC 8392 section 4) and the two pass claims. Like the code's card claim,
# the pass claims use small negative keys: the prefix fixes the context, and every byte
# counts in a QR code a guest shows on a phone.
CLAIM_EXP = 4
CLAIM_NBF = 5
CLAIM_IAT = 6
CLAIM_CTI = 7
CLAIM_COMMUNITY = -2
CLAIM_HOST = -3
_CLAIM_KEYS = frozenset({CLAIM_EXP, CLAIM_NBF, CLAIM_IAT, CLAIM_CTI, CLAIM_COMMUNITY, CLAIM_HOST})

PASS_ID_LENGTH = 8  # bytes: 64 random bits, the pass's identity in journals (keyed)
HOST_LENGTH = SUBJECT_BYTES  # the host resident's community subject
MAX_PASS_WINDOW = 7 * DAY  # the longest a pass is valid: it cannot be revoked offline
MAX_PASS_LEAD = 30 * DAY  # the furthest ahead of its issue a pass may start
# A pass is about 200 characters (300 with the longest community name): the code bound is
# ample and keeps a hostile scanner input from making a gate do unbounded work.
MAX_PASS_LENGTH = 512
COMMUNITY_PATTERN = re.compile(r"[A-Za-z0-9._-]{1,64}")


def pass_prefix(code_prefix: str) -> str:
    """``WH1:`` gives ``WH1P:``. A code prefix is letters and digits then ``:``, so a pass
    prefix is never a code prefix and a code text never starts with a pass prefix."""
    if not code_prefix.endswith(":") or not code_prefix[:-1].isalnum():
        raise CodeFormatError(f"not a code prefix: {code_prefix!r}")
    return code_prefix[:-1] + "P:"


@dataclass(frozen=True, slots=True)
class PassClaims:
    """The claims set of one visitor pass. Structure only; ``window_problem`` holds the
    rules on its window, which the issuer and the verifier both apply."""

    valid_from: int
    valid_until: int
    issued_at: int
    pass_id: bytes
    community: str
    host: bytes

    def __post_init__(self) -> None:
        for name in ("valid_from", "valid_until", "issued_at"):
            value = getattr(self, name)
            if type(value) is not int or not 0 <= value <= MAX_NUMERIC_DATE:
                raise ClaimsError(f"{name} must be an integer in 0..{MAX_NUMERIC_DATE}")
        if type(self.pass_id) is not bytes or len(self.pass_id) != PASS_ID_LENGTH:
            raise ClaimsError(f"pass id must be {PASS_ID_LENGTH} bytes")
        if type(self.community) is not str or not COMMUNITY_PATTERN.fullmatch(self.community):
            raise ClaimsError("community must be 1-64 characters of A-Z a-z 0-9 . _ -")
        if type(self.host) is not bytes or len(self.host) != HOST_LENGTH:
            raise ClaimsError(f"host must be a {HOST_LENGTH}-byte community subject")

    @property
    def host_subject(self) -> str:
        """The host as scene data and journals write subjects (hex)."""
        return self.host.hex()

    def to_cbor(self) -> bytes:
        """The claims set, deterministically encoded: keys 4, 5, 6, 7, -2, -3 are already in
        the bytewise order of their encodings."""
        return (
            head(5, len(_CLAIM_KEYS))
            + encode_int(CLAIM_EXP)
            + encode_int(self.valid_until)
            + encode_int(CLAIM_NBF)
            + encode_int(self.valid_from)
            + encode_int(CLAIM_IAT)
            + encode_int(self.issued_at)
            + encode_int(CLAIM_CTI)
            + encode_bytes(self.pass_id)
            + encode_int(CLAIM_COMMUNITY)
            + encode_text(self.community)
            + encode_int(CLAIM_HOST)
            + encode_bytes(self.host)
        )

    @classmethod
    def from_cbor(cls, payload: bytes) -> PassClaims:
        """Decode a pass's claims; anything but exactly the six pass claims is refused, so a
        code's claims (signed by the same key) never read as a pass, nor a pass as a code."""
        try:
            claims = decode_strict(payload)
        except CborError as exc:
            raise ClaimsError(f"claims are not valid CBOR for a pass: {exc}") from None
        if type(claims) is not dict or claims.keys() != _CLAIM_KEYS:
            raise ClaimsError("claims must be exactly exp, nbf, iat, cti, community and host")
        decoded = cls(
            valid_from=claims[CLAIM_NBF],
            valid_until=claims[CLAIM_EXP],
            issued_at=claims[CLAIM_IAT],
            pass_id=claims[CLAIM_CTI],
            community=claims[CLAIM_COMMUNITY],
            host=claims[CLAIM_HOST],
        )
        if decoded.to_cbor() != payload:
            raise ClaimsError("claims are not deterministically encoded")
        return decoded


def window_problem(valid_from: int, valid_until: int, issued_at: int) -> PassWindowError | None:
    """Why a pass with this window, issued at ``issued_at``, may not exist; None if it may."""
    if valid_until <= valid_from:
        return PassWindowError("window_ends_before_start", "the window ends before it starts")
    if valid_until - valid_from > MAX_PASS_WINDOW:
        return PassWindowError(
            "window_too_long", f"a pass is valid for at most {MAX_PASS_WINDOW // DAY} days"
        )
    if valid_from - issued_at > MAX_PASS_LEAD:
        return PassWindowError(
            "window_too_far_ahead",
            f"a pass starts at most {MAX_PASS_LEAD // DAY} days after it is issued",
        )
    if valid_until <= issued_at:
        return PassWindowError("window_over", "the window is already over")
    return None


def sign_pass(claims: PassClaims, key: Signer, code_prefix: str) -> str:
    """Sign a pass's claims as a COSE_Sign1 and return the pass text. No window rules: use
    ``issue_pass``, which applies them (tests sign passes that break them)."""
    protected = encode_protected(int(key.alg), key.kid.encode("ascii"))
    payload = claims.to_cbor()
    signature = key.sign(to_be_signed(protected, payload))
    return encode_code_text(pass_prefix(code_prefix), encode_sign1(protected, payload, signature))


def issue_pass(
    key: Signer,
    *,
    code_prefix: str,
    community: str,
    host: bytes,
    valid_from: int,
    valid_until: int,
    now: int,
    pass_id: bytes | None = None,
) -> tuple[str, PassClaims]:
    """A pass for a guest of ``host`` (the resident's community subject, 12 bytes) at
    ``community`` from ``valid_from`` to ``valid_until``; PassWindowError says why a window
    may not be issued, ClaimsError what else is wrong."""
    problem = window_problem(valid_from, valid_until, now)
    if problem is not None:
        raise problem
    claims = PassClaims(
        valid_from=valid_from,
        valid_until=valid_until,
        issued_at=now,
        pass_id=secrets.token_bytes(PASS_ID_LENGTH) if pass_id is None else pass_id,
        community=community,
        host=host,
    )
    return sign_pass(claims, key, code_prefix), claims


@dataclass(frozen=True, slots=True)
class PassVerdict:
    """The outcome of verifying a pass: reason ``ok``, or the one reason why not."""

    reason: Reason
    claims: PassClaims | None = None
    kid: str | None = None
    detail: str = field(default="", compare=False)

    @property
    def valid(self) -> bool:
        return self.reason is Reason.OK


def verify_pass(text: object, trust: Trust, now: int) -> PassVerdict:
    """Verify one pass text at ``now`` against the code trust (its prefix, keys, algorithms,
    clock skew and freshness). Never raises on bad input. No replay check: a pass admits its
    guest again and again within its window (a scene may limit the entries)."""
    try:
        return _check(text, trust, now)
    except Exception as exc:  # fail closed: a decoder defect must deny, never crash a gate
        return PassVerdict(Reason.MALFORMED, detail=f"unexpected {type(exc).__name__}")


def _check(text: object, trust: Trust, now: int) -> PassVerdict:
    """The code verifier's order: freshness, length, prefix, structure, algorithm, key,
    signature, claims, the key's signing period, then the window."""
    stale = trust.fresh_until is not None and now >= trust.fresh_until
    if stale and not trust.allow_stale:
        return PassVerdict(Reason.STALE_TRUST, detail="the trust bundle is past its max-age")
    if not isinstance(text, str):
        return PassVerdict(Reason.MALFORMED, detail="a pass is text")
    if len(text) > MAX_PASS_LENGTH:
        return PassVerdict(Reason.MALFORMED, detail=f"longer than {MAX_PASS_LENGTH} characters")
    prefix = pass_prefix(trust.prefix)
    if not text.startswith(prefix):
        return PassVerdict(Reason.UNKNOWN_PREFIX, detail=f"expected prefix {prefix!r}")
    try:
        message = decode_sign1(decode_body(text[len(prefix) :]))
    except (CodeFormatError, CoseError) as exc:
        return PassVerdict(Reason.MALFORMED, detail=str(exc))

    key, refusal, detail = trusted_signer(message, trust)
    if key is None or refusal is not None:
        return PassVerdict(
            refusal or Reason.UNKNOWN_KEY, kid=key.kid if key else None, detail=detail
        )

    try:
        claims = PassClaims.from_cbor(message.payload)
    except ClaimsError as exc:
        return PassVerdict(Reason.MALFORMED, kid=key.kid, detail=str(exc))
    problem = window_problem(claims.valid_from, claims.valid_until, claims.issued_at)
    if problem is not None:
        # A key's signature cannot make a pass outlive the rules: a leaked or retired key
        # could otherwise sign passes open for years.
        return PassVerdict(Reason.MALFORMED, claims, key.kid, str(problem))
    if not key.signs_at(claims.issued_at):
        return PassVerdict(
            Reason.UNKNOWN_KEY, claims, key.kid, "issued outside the key's signing period"
        )
    skew = trust.clock_skew
    if now >= claims.valid_until + skew:
        return PassVerdict(Reason.EXPIRED, claims, key.kid)
    # A pass cannot be shown before it exists, whatever its window says.
    if now < max(claims.valid_from, claims.issued_at) - skew:
        return PassVerdict(Reason.NOT_YET_VALID, claims, key.kid)
    return PassVerdict(
        Reason.OK, claims, key.kid, "stale trust accepted by policy" if stale else ""
    )
