"""The closed set of verification reasons shared by the verifier, API, CLI, journal and metrics."""

from __future__ import annotations

from enum import StrEnum


class Reason(StrEnum):
    """Why a code was accepted or refused; exactly one per verdict.

    A code with several defects is reported with the first check it fails, in the order of
    docs/code-format.md section 2 (some reasons come from more than one check).
    """

    OK = "ok"
    MALFORMED = "malformed"
    UNKNOWN_PREFIX = "unknown_prefix"
    UNSUPPORTED_ALG = "unsupported_alg"
    UNKNOWN_KEY = "unknown_key"
    BAD_SIGNATURE = "bad_signature"
    EXPIRED = "expired"
    NOT_YET_VALID = "not_yet_valid"
    REVOKED = "revoked"
    STALE_TRUST = "stale_trust"
    REPLAYED = "replayed"


#: Human-readable sentence for each reason, for CLI output and problem+json ``title``.
DESCRIPTIONS: dict[Reason, str] = {
    Reason.OK: "The code is valid.",
    Reason.MALFORMED: "The code is not a well-formed idcode (encoding, structure or claims).",
    Reason.UNKNOWN_PREFIX: "The code does not start with this deployment's prefix and version.",
    Reason.UNSUPPORTED_ALG: "The code is signed with an algorithm this verifier does not accept.",
    Reason.UNKNOWN_KEY: "The code names a key id this verifier does not trust.",
    Reason.BAD_SIGNATURE: "The signature does not match the code's contents.",
    Reason.EXPIRED: "The code has expired.",
    Reason.NOT_YET_VALID: "The code was issued in the future of this verifier's clock.",
    Reason.REVOKED: "The card behind the code is revoked, lost or suspended.",
    Reason.STALE_TRUST: "The verifier's trust data is older than its allowed age.",
    Reason.REPLAYED: "This code has already been presented here.",
}
