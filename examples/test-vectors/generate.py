#!/usr/bin/env python3
"""Generate the idcode v1 test vectors (examples/test-vectors/cases/*.json).

Each case is one JSON file in the spirit of the EU DCC test data: the code text, every layer
(base45, COSE bytes, protected header, CBOR claims, signature, Sig_structure), the trusted
keys as a JWK Set, the validation clock, replay state, and the expected outcome of every
verification step. Keys are generated afresh on each run and only their public halves are
written, so no private key is ever committed; regenerating changes every signature.

    python examples/test-vectors/generate.py [OUTPUT_DIR]
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import base45
import cbor2

from idcode.claims import AgeBand, Card, CodeClaims, Programme, Residency
from idcode.codetext import encode_text
from idcode.cose import Algorithm, encode_protected, encode_sign1, to_be_signed
from idcode.issuer import MAX_TTL
from idcode.keys import IssuerKey, jwks

PREFIX = "WH1:"
SKEW = 30
ISSUED_AT = int(datetime(2026, 12, 1, 8, 0, 0, tzinfo=UTC).timestamp())
TTL = 60
EXPIRES_AT = ISSUED_AT + TTL
CODE_ID = bytes.fromhex("5e1f0c2a9b3d4e67")
KEY_NOT_BEFORE = ISSUED_AT - 86_400
KEY_NOT_AFTER = ISSUED_AT + 89 * 86_400

#: The verification steps in the order a verifier runs them, with the reason each one
#: yields when it fails. A case fails at most one step; later steps are not reached (null).
STEPS: list[tuple[str, str]] = [
    ("length", "malformed"),
    ("unprefix", "unknown_prefix"),
    ("base45_decode", "malformed"),
    ("cose_decode", "malformed"),
    ("alg_accepted", "unsupported_alg"),
    ("key_found", "unknown_key"),
    ("key_alg_matches", "unsupported_alg"),
    ("signature", "bad_signature"),
    ("claims_decode", "malformed"),
    ("key_signing_period", "unknown_key"),
    ("not_expired", "expired"),
    ("not_before_issued", "not_yet_valid"),
    ("not_replayed", "replayed"),
]

CARD = Card(
    pseudonym=bytes.fromhex("a3f09c41d27e"),
    status_index=1_234_567,
    residency=Residency.REGISTERED,
    age_band=AgeBand.AGE_65_69,
    programmes=Programme.HOME_CARE | Programme.MEAL_SUBSIDY,
)
CLAIMS = CodeClaims(issued_at=ISSUED_AT, expires_at=EXPIRES_AT, code_id=CODE_ID, card=CARD)


def _key(kid: str, alg: Algorithm = Algorithm.EDDSA) -> IssuerKey:
    return IssuerKey.generate(kid, alg, KEY_NOT_BEFORE, KEY_NOT_AFTER)


EDDSA_KEY = _key("A")
ES256_KEY = _key("E", Algorithm.ES256)
SECOND_EDDSA_KEY = _key("B")
UNTRUSTED_KEY = _key("A")  # same kid as EDDSA_KEY, different key


def sign_raw(
    payload: bytes,
    key: IssuerKey = EDDSA_KEY,
    *,
    alg: int | str | None = None,
    kid: bytes | None = None,
) -> bytes:
    """A COSE_Sign1 over ``payload``, optionally lying about alg or kid in the header."""
    protected = encode_protected(
        int(key.alg) if alg is None else alg, key.kid.encode() if kid is None else kid
    )
    return encode_sign1(protected, payload, key.sign(to_be_signed(protected, payload)))


def claims_map(**overrides: Any) -> dict[int, Any]:
    claims: dict[int, Any] = {4: EXPIRES_AT, 6: ISSUED_AT, 7: CODE_ID, -1: CARD.to_bytes()}
    for key, value in overrides.items():
        label = {"exp": 4, "iat": 6, "cti": 7, "card": -1, "extra": 8}[key]
        if value is None:
            del claims[label]
        else:
            claims[label] = value
    return claims


def signed_claims(key: IssuerKey = EDDSA_KEY, **overrides: Any) -> bytes:
    return sign_raw(cbor2.dumps(claims_map(**overrides), canonical=True), key)


def good(key: IssuerKey = EDDSA_KEY) -> bytes:
    return sign_raw(CLAIMS.to_cbor(), key)


def text(message: bytes, prefix: str = PREFIX) -> str:
    return encode_text(prefix, message)


def flip_bit(data: bytes, index: int, bit: int = 0) -> bytes:
    mutated = bytearray(data)
    mutated[index] ^= 1 << bit
    return bytes(mutated)


@dataclass
class Case:
    name: str
    description: str
    code: Callable[[], str]
    fails_at: str | None = None  # the step that fails; None for a valid code
    at: int = ISSUED_AT + 10
    trusted: list[IssuerKey] = field(default_factory=lambda: [EDDSA_KEY])
    algorithms: list[Algorithm] = field(default_factory=lambda: [Algorithm.EDDSA])
    replay_seen: list[bytes] = field(default_factory=list)


def _payload_offset(message: bytes) -> int:
    """Where the claims payload starts inside a COSE_Sign1 produced by ``good``."""
    return message.index(CLAIMS.to_cbor())


CASES = [
    Case("valid-eddsa", "A valid Ed25519-signed code, 10 s after issue.", lambda: text(good())),
    Case(
        "valid-es256",
        "A valid ES256-signed code; the verifier accepts ES256.",
        lambda: text(good(ES256_KEY)),
        trusted=[ES256_KEY],
        algorithms=[Algorithm.ES256],
    ),
    Case(
        "valid-two-algorithms",
        "ES256 code, verifier trusts an EdDSA and an ES256 key.",
        lambda: text(good(ES256_KEY)),
        trusted=[EDDSA_KEY, ES256_KEY],
        algorithms=[Algorithm.EDDSA, Algorithm.ES256],
    ),
    Case(
        "valid-at-exp",
        "Exactly at exp: still valid thanks to the skew allowance.",
        lambda: text(good()),
        at=EXPIRES_AT,
    ),
    Case(
        "valid-last-second",
        "At exp + skew - 1: the last valid second.",
        lambda: text(good()),
        at=EXPIRES_AT + SKEW - 1,
    ),
    Case(
        "valid-at-iat-minus-skew",
        "At iat - skew: the earliest valid second.",
        lambda: text(good()),
        at=ISSUED_AT - SKEW,
    ),
    Case(
        "expired-at-exp-plus-skew",
        "At exp + skew the code has expired.",
        lambda: text(good()),
        "not_expired",
        at=EXPIRES_AT + SKEW,
    ),
    Case(
        "expired-next-day",
        "A screenshot replayed the next day.",
        lambda: text(good()),
        "not_expired",
        at=ISSUED_AT + 86_400,
    ),
    Case(
        "not-yet-valid",
        "At iat - skew - 1: issued in the verifier's future.",
        lambda: text(good()),
        "not_before_issued",
        at=ISSUED_AT - SKEW - 1,
    ),
    Case(
        "replayed",
        "The code id was already accepted by this verifier.",
        lambda: text(good()),
        "not_replayed",
        replay_seen=[CODE_ID],
    ),
    Case(
        "missing-prefix",
        "Base45 without the deployment prefix.",
        lambda: text(good(), prefix=""),
        "unprefix",
    ),
    Case(
        "wrong-version-prefix",
        "Prefix of a format version this verifier does not know.",
        lambda: text(good(), prefix="WH3:"),
        "unprefix",
    ),
    Case(
        "other-deployment-prefix",
        "Another deployment's prefix.",
        lambda: text(good(), prefix="SZ1:"),
        "unprefix",
    ),
    Case(
        "lowercase-prefix",
        "The prefix is case-sensitive.",
        lambda: text(good(), prefix="wh1:"),
        "unprefix",
    ),
    Case(
        "oversized-input",
        "600 characters: refused before any decoding.",
        lambda: PREFIX + "0" * 596,
        "length",
    ),
    Case(
        "lowercase-base45",
        "Lower-case letters are not base45.",
        lambda: text(good()).lower().replace("wh1:", PREFIX),
        "base45_decode",
    ),
    Case(
        "trailing-newline",
        "A verifier does not trim: the newline is not base45.",
        lambda: text(good()) + "\n",
        "base45_decode",
    ),
    Case(
        "truncated-one-character",
        "One character cut: an impossible base45 length.",
        lambda: text(good())[:-1],
        "base45_decode",
    ),
    Case(
        "base45-group-overflow",
        "A three-character group above 65535 (':::' = 91124).",
        lambda: PREFIX + ":::" + text(good())[len(PREFIX) + 3 :],
        "base45_decode",
    ),
    Case("empty-body", "The prefix alone.", lambda: PREFIX, "cose_decode"),
    Case(
        "truncated-three-characters",
        "Three characters cut: valid base45, truncated CBOR.",
        lambda: text(good())[:-3],
        "cose_decode",
    ),
    Case(
        "truncated-signature",
        "A 63-byte signature.",
        lambda: text(cbor2.dumps([*cbor2.loads(good())[:3], cbor2.loads(good())[3][:63]])),
        "cose_decode",
    ),
    Case(
        "trailing-bytes",
        "One byte after the COSE_Sign1 array.",
        lambda: text(good() + b"\x00"),
        "cose_decode",
    ),
    Case(
        "tagged-cose-sign1",
        "COSE_Sign1 with tag 18: v1 codes are untagged.",
        lambda: text(b"\xd2" + good()),
        "cose_decode",
    ),
    Case(
        "cose-array-of-three",
        "A COSE array missing its signature.",
        lambda: text(cbor2.dumps(cbor2.loads(good())[:3])),
        "cose_decode",
    ),
    Case(
        "protected-header-not-bytes",
        "The protected header as a map, not a byte string.",
        lambda: text(cbor2.dumps([{1: -8, 4: b"A"}, {}, CLAIMS.to_cbor(), bytes(64)])),
        "cose_decode",
    ),
    Case(
        "kid-in-unprotected-header",
        "kid moved to the unprotected header.",
        lambda: text(cbor2.dumps([cbor2.dumps({1: -8}), {4: b"A"}, CLAIMS.to_cbor(), bytes(64)])),
        "cose_decode",
    ),
    Case(
        "deeply-nested-cbor",
        "300 nested arrays where the COSE_Sign1 should be.",
        lambda: text(b"\x81" * 300 + b"\x00"),
        "cose_decode",
    ),
    Case(
        "wrong-cbor-type",
        "A CBOR text string instead of an array.",
        lambda: text(cbor2.dumps("WH1")),
        "cose_decode",
    ),
    Case(
        "alg-not-configured",
        "An ES256 code; this verifier accepts only EdDSA.",
        lambda: text(good(ES256_KEY)),
        "alg_accepted",
        trusted=[EDDSA_KEY, ES256_KEY],
    ),
    Case(
        "alg-swapped-in-header",
        "The EdDSA key signed a header that says ES256 (-7); only EdDSA is accepted.",
        lambda: text(sign_raw(CLAIMS.to_cbor(), alg=-7)),
        "alg_accepted",
    ),
    Case(
        "alg-hmac",
        "alg HMAC 256/256 (5): a public key is never an HMAC secret.",
        lambda: text(sign_raw(CLAIMS.to_cbor(), alg=5)),
        "alg_accepted",
    ),
    Case(
        "alg-as-text",
        "alg given as the text 'EdDSA' instead of -8.",
        lambda: text(sign_raw(CLAIMS.to_cbor(), alg="EdDSA")),
        "alg_accepted",
    ),
    Case(
        "alg-confusion",
        "Header says ES256 (accepted) but kid A is an EdDSA key.",
        lambda: text(sign_raw(CLAIMS.to_cbor(), alg=-7)),
        "key_alg_matches",
        trusted=[EDDSA_KEY, ES256_KEY],
        algorithms=[Algorithm.EDDSA, Algorithm.ES256],
    ),
    Case(
        "unknown-kid",
        "kid 'Z' is not trusted.",
        lambda: text(sign_raw(CLAIMS.to_cbor(), kid=b"Z")),
        "key_found",
    ),
    Case(
        "empty-kid", "An empty kid.", lambda: text(sign_raw(CLAIMS.to_cbor(), kid=b"")), "key_found"
    ),
    Case(
        "signature-bit-flip",
        "One bit of the signature flipped.",
        lambda: text(flip_bit(good(), len(good()) - 1)),
        "signature",
    ),
    Case(
        "payload-bit-flip",
        "One bit of exp flipped inside the signed payload.",
        lambda: text(flip_bit(good(), _payload_offset(good()) + 3)),
        "signature",
    ),
    Case(
        "kid-switched-to-other-trusted-key",
        "Header kid changed from A to B (both trusted).",
        lambda: text(good().replace(b"\x04\x41A", b"\x04\x41B", 1)),
        "signature",
        trusted=[EDDSA_KEY, SECOND_EDDSA_KEY],
    ),
    Case(
        "signed-by-untrusted-key",
        "Signed by another key that claims the trusted kid A.",
        lambda: text(good(UNTRUSTED_KEY)),
        "signature",
    ),
    Case(
        "claims-not-a-map",
        "Signed payload is a CBOR array.",
        lambda: text(sign_raw(cbor2.dumps([EXPIRES_AT, ISSUED_AT]))),
        "claims_decode",
    ),
    Case(
        "claims-exp-as-text",
        "Signed claims with exp as a text string.",
        lambda: text(signed_claims(exp="2026-12-01T08:01:00Z")),
        "claims_decode",
    ),
    Case(
        "claims-exp-as-float",
        "Signed claims with exp as a CBOR float.",
        lambda: text(signed_claims(exp=float(EXPIRES_AT))),
        "claims_decode",
    ),
    Case(
        "claims-missing-cti",
        "Signed claims without a code id.",
        lambda: text(signed_claims(cti=None)),
        "claims_decode",
    ),
    Case(
        "claims-short-cti",
        "Signed claims with a 4-byte code id.",
        lambda: text(signed_claims(cti=CODE_ID[:4])),
        "claims_decode",
    ),
    Case(
        "claims-extra-claim",
        "Signed claims with an extra claim (cnf, 8).",
        lambda: text(signed_claims(extra=1)),
        "claims_decode",
    ),
    Case(
        "claims-iat-after-exp",
        "Signed claims whose iat is after exp.",
        lambda: text(signed_claims(iat=EXPIRES_AT + 1)),
        "claims_decode",
    ),
    Case(
        "claims-card-wrong-length",
        "Signed claims with a 10-byte card claim.",
        lambda: text(signed_claims(card=CARD.to_bytes()[:10])),
        "claims_decode",
    ),
    Case(
        "claims-overlong-integer",
        "exp encoded in 9 bytes: not deterministic CBOR.",
        lambda: text(
            sign_raw(
                CLAIMS.to_cbor().replace(
                    b"\x04\x1a" + EXPIRES_AT.to_bytes(4, "big"),
                    b"\x04\x1b" + EXPIRES_AT.to_bytes(8, "big"),
                )
            )
        ),
        "claims_decode",
    ),
    Case(
        "issued-before-key-period",
        "Signed a day before the key's signing period began.",
        lambda: text(signed_claims(iat=KEY_NOT_BEFORE - 86_400, exp=KEY_NOT_BEFORE - 86_340)),
        "key_signing_period",
        at=KEY_NOT_BEFORE - 86_390,
    ),
    Case(
        "issued-at-key-period-end",
        "Issued exactly at the end of the key's signing period (its JWK exp).",
        lambda: text(signed_claims(iat=KEY_NOT_AFTER, exp=KEY_NOT_AFTER + TTL)),
        "key_signing_period",
        at=KEY_NOT_AFTER + 10,
    ),
    Case(
        "claims-reserved-age-band",
        "Signed card claim with age band 15, a reserved value.",
        lambda: text(signed_claims(card=CARD.to_bytes()[:9] + bytes([0x7C, 0x03]))),
        "claims_decode",
    ),
    Case(
        "claims-lifetime-too-long",
        "Signed by the trusted key, valid for a day: longer than any code may live (1 h).",
        lambda: text(signed_claims(exp=ISSUED_AT + 86_400)),
        "claims_decode",
    ),
    Case(
        "alg-eddsa-on-es256-key",
        "Header says EdDSA, kid E is an ES256 key; both algorithms accepted.",
        lambda: text(sign_raw(CLAIMS.to_cbor(), alg=-8, kid=b"E")),
        "key_alg_matches",
        trusted=[EDDSA_KEY, ES256_KEY],
        algorithms=[Algorithm.EDDSA, Algorithm.ES256],
    ),
    Case(
        "alg-bignum",
        "alg as a CBOR bignum (tag 2, 2**64): tags are not part of a code.",
        lambda: text(encode_sign1(b"\xa2\x01\xc2\x49\x01" + bytes(8) + b"\x04\x41A",
                                  CLAIMS.to_cbor(), bytes(64))),
        "cose_decode",
    ),
    Case(
        "es256-signature-bit-flip",
        "One bit of an ES256 signature (in s) flipped.",
        lambda: text(flip_bit(good(ES256_KEY), len(good(ES256_KEY)) - 1)),
        "signature",
        trusted=[ES256_KEY],
        algorithms=[Algorithm.ES256],
    ),
]


def describe(code: str) -> dict[str, Any]:
    """Every layer of ``code`` that can be decoded; absent layers are null."""
    prefix = PREFIX if code.startswith(PREFIX) else ""
    body = code[len(prefix) :]
    layers: dict[str, Any] = {"prefix": prefix, "base45": body}
    try:
        message = base45.b45decode(body) if body == body.strip() else None
    except ValueError:
        message = None
    layers["cose_hex"] = message.hex() if message is not None else None
    parts: Any = None
    if message is not None:
        try:
            parts = cbor2.loads(message)
        except Exception:
            parts = None
    if not (
        isinstance(parts, list)
        and len(parts) == 4
        and all(isinstance(p, bytes) for p in (parts[0], parts[2], parts[3]))
    ):
        return layers
    protected, unprotected, payload, signature = parts
    layers["protected_hex"] = protected.hex()
    try:
        header = cbor2.loads(protected)
        layers["protected"] = {
            str(k): (v.hex() if isinstance(v, bytes) else v) for k, v in header.items()
        }
    except Exception:
        layers["protected"] = None
    layers["unprotected"] = (
        {str(k): repr(v) for k, v in unprotected.items()}
        if isinstance(unprotected, dict)
        else repr(unprotected)
    )
    layers["payload_hex"] = payload.hex()
    try:
        claims = cbor2.loads(payload)
        layers["claims"] = json.loads(
            json.dumps(
                {str(k): (v.hex() if isinstance(v, bytes) else v) for k, v in claims.items()}
                if isinstance(claims, dict)
                else repr(claims)
            )
        )
    except Exception:
        layers["claims"] = None
    try:
        layers["card"] = Card.from_bytes(claims[-1]).to_json()
    except Exception:
        layers["card"] = None
    layers["signature_hex"] = signature.hex()
    layers["sig_structure_hex"] = to_be_signed(protected, payload).hex()
    return layers


def expected(fails_at: str | None) -> dict[str, Any]:
    steps: dict[str, bool | None] = {}
    reason = "ok"
    for step, step_reason in STEPS:
        if reason != "ok":
            steps[step] = None
        elif step == fails_at:
            steps[step] = False
            reason = step_reason
        else:
            steps[step] = True
    if fails_at is not None and reason == "ok":
        raise ValueError(f"unknown step {fails_at}")
    return {"valid": fails_at is None, "reason": reason, "steps": steps}


def render(case: Case, number: int) -> dict[str, Any]:
    code = case.code()
    return {
        "id": f"{number:03d}",
        "name": case.name,
        "description": case.description,
        "code": code,
        "layers": describe(code),
        "trust": {
            "prefix": PREFIX,
            "algorithms": [alg.jose_name for alg in case.algorithms],
            "clock_skew": SKEW,
            "max_lifetime": MAX_TTL,
            "jwks": jwks([key.public for key in case.trusted]),
        },
        "validation_clock": datetime.fromtimestamp(case.at, UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "validation_clock_epoch": case.at,
        "replay_seen": [code_id.hex() for code_id in case.replay_seen],
        "expected": expected(case.fails_at),
    }


def main(argv: list[str]) -> int:
    out = Path(argv[1]) if len(argv) > 1 else Path(__file__).parent / "cases"
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("*.json"):
        old.unlink()
    for number, case in enumerate(CASES, start=1):
        path = out / f"{number:03d}-{case.name}.json"
        path.write_text(json.dumps(render(case, number), indent=2, ensure_ascii=False) + "\n")
    print(f"wrote {len(CASES)} test vectors to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
