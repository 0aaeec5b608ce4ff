#!/usr/bin/env python3
"""Generate the idcode test vectors (examples/test-vectors/cases/*.json).

Each case is one JSON file in the spirit of the EU DCC test data: the code text, every layer
(base45, COSE bytes, protected header, CBOR claims, signature, Sig_structure; for a device
code also the credential, the device key and both Sig_structures), the trusted keys as a JWK
Set, the validation clock, replay state (and for device codes the status list, the removed
devices and the trust's freshness), and the expected outcome of every verification step.
Cases 001-056 are version 1 codes (docs/code-format.md section 2), 057-112 are about device
codes, version 2 (section 8), and 113 on are version 1 codes of the GM crypto profile, signed
with SM2 (docs/crypto-profiles.md). Keys are generated afresh on each run and only their
public halves are written, so no private key is ever committed; regenerating changes every
key and signature.

    python examples/test-vectors/generate.py [--keep-existing] [OUTPUT_DIR]

``--keep-existing`` writes only the cases that have no file yet and leaves the others byte
for byte (how new cases are added without changing the published ones: each case carries its
own keys, so cases from different runs need nothing from each other).
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import base45
import cbor2
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.hazmat.primitives.hashes import SHA256

from idcode.cbor import encode_bytes
from idcode.claims import MAX_NUMERIC_DATE, AgeBand, Card, CodeClaims, Programme, Residency
from idcode.codetext import encode_text
from idcode.cose import Algorithm, encode_protected, encode_sign1, to_be_signed
from idcode.devicecode import (
    DEVICE_CODE_LIFETIME,
    MAX_CREDENTIAL_LIFETIME,
    DeviceKey,
    credential_to_be_signed,
)
from idcode.issuer import MAX_TTL
from idcode.keys import IssuerKey, jwks
from idcode.statuslist import StatusList, device_ids_to_json

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
    #: Section 2's steps (a version 1 code) or section 8's (a device code).
    steps: list[tuple[str, str]] = field(default_factory=lambda: STEPS)
    prefix: str = PREFIX  # the verifier's (version 1) prefix
    #: Trust a version 1 case has not: the status list's revoked indices, the removed devices
    #: and the time from which the trust is stale (None: the member is left out).
    status_revoked: tuple[int, ...] | None = None
    revoked_devices: tuple[bytes, ...] | None = None
    fresh_until: int | None = None


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
        "Three characters shorter: the last two bytes cut, so valid base45, truncated CBOR.",
        # Not text(good())[:-3]: the pair left at the end is above 255 for about 7 codes in 8,
        # which a verifier refuses at base45, not at COSE.
        lambda: text(good()[:-2]),
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
        lambda: text(
            encode_sign1(
                b"\xa2\x01\xc2\x49\x01" + bytes(8) + b"\x04\x41A", CLAIMS.to_cbor(), bytes(64)
            )
        ),
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


#: RFC 9285's alphabet. The base45 package skips a trailing newline rather than refusing it,
#: and a space is one of the 45 characters (a code may start with one), so check here.
BASE45_TEXT = re.compile(r"[0-9A-Z $%*+\-./:]*")


def describe(code: str) -> dict[str, Any]:
    """Every layer of ``code`` that can be decoded; absent layers are null."""
    prefix = PREFIX if code.startswith(PREFIX) else ""
    body = code[len(prefix) :]
    layers: dict[str, Any] = {"prefix": prefix, "base45": body}
    try:
        message = base45.b45decode(body) if BASE45_TEXT.fullmatch(body) else None
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


# --- Version 2: device codes (docs/code-format.md section 8) ---------------------------------

DEVICE_PREFIX = "WH2:"
#: Section 8's steps, in the order a verifier runs them, with the reason each one yields.
DEVICE_STEPS: list[tuple[str, str]] = [
    ("trust_fresh", "stale_trust"),
    ("length", "malformed"),
    ("unprefix", "unknown_prefix"),
    ("base45_decode", "malformed"),
    ("device_decode", "malformed"),
    ("key_found", "unknown_key"),
    ("alg_accepted", "unsupported_alg"),
    ("issuer_signature", "bad_signature"),
    ("key_signing_period", "unknown_key"),
    ("device_signature", "bad_signature"),
    ("credential_not_expired", "expired"),
    ("made_before_credential_expiry", "expired"),
    ("not_expired", "expired"),
    ("not_before_issued", "not_yet_valid"),
    ("device_not_removed", "revoked"),
    ("card_not_revoked", "revoked"),
    ("not_replayed", "replayed"),
]
#: The credential was renewed on 2026-11-28 08:00 UTC, for the longest a credential may last.
CREDENTIAL_EXPIRES_AT = ISSUED_AT + 4 * 86_400
#: The status list of the device cases. The card's index, 1234567, is bit 7 (the most
#: significant) of byte 154320; bit 0 of that byte and of the next are revoked in every device
#: case, so a verifier that reads the bits most significant first refuses the valid codes;
#: only the card-revoked cases set the card's own bit.
STATUS_SIZE = CARD.status_index + 9
NEIGHBOURS = (CARD.status_index - 7, CARD.status_index + 1)

DevicePrivateKey = Ed25519PrivateKey | ec.EllipticCurvePrivateKey
DEVICE_ED25519: DevicePrivateKey = Ed25519PrivateKey.generate()
DEVICE_P256: DevicePrivateKey = ec.generate_private_key(ec.SECP256R1())
THIEF_DEVICE: DevicePrivateKey = Ed25519PrivateKey.generate()  # has its own credential
UNKNOWN_KID_KEY = _key("Z")
SENIOR_CARD = Card(
    pseudonym=CARD.pseudonym,
    status_index=CARD.status_index,
    residency=CARD.residency,
    age_band=AgeBand.AGE_80_PLUS,
    programmes=CARD.programmes,
)


def device_raw(device: DevicePrivateKey) -> bytes:
    """The device key as a credential carries it (Ed25519 raw, P-256 compressed)."""
    return DeviceKey.from_public_key(device.public_key()).raw


def device_id(device: DevicePrivateKey) -> bytes:
    return hashlib.sha256(device_raw(device)).digest()[:8]


#: Another citizen's phone, removed: listed in every device case's revoked_devices.
REMOVED_ELSEWHERE = device_id(Ed25519PrivateKey.generate())


def credential(
    device: DevicePrivateKey = DEVICE_ED25519,
    issuer: IssuerKey = EDDSA_KEY,
    *,
    exp: int = CREDENTIAL_EXPIRES_AT,
    kind: int | None = None,
    kid: bytes | None = None,
    card: bytes | None = None,
    key: bytes | None = None,
) -> bytes:
    """The packed credential: kind, kid, exp, card, key (each part replaceable)."""
    raw = device_raw(device) if key is None else key
    return (
        bytes([({32: 1, 33: 2}[len(device_raw(device))]) if kind is None else kind])
        + (issuer.kid.encode() if kid is None else kid)
        + exp.to_bytes(4, "big")
        + (CARD.to_bytes() if card is None else card)
        + raw
    )


def issuer_signs(credential_bytes: bytes, issuer: IssuerKey = EDDSA_KEY) -> bytes:
    """The issuer's signature, over the header the verifier rebuilds from the credential's kid."""
    return issuer.sign(credential_to_be_signed(credential_bytes, issuer.alg, credential_bytes[1:2]))


def device_sign(device: DevicePrivateKey, message: bytes) -> bytes:
    if isinstance(device, Ed25519PrivateKey):
        return device.sign(message)
    r, s = decode_dss_signature(device.sign(message, ec.ECDSA(SHA256())))
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def uint32(value: int) -> bytes:
    return b"\x1a" + value.to_bytes(4, "big")


def device_message(
    device: DevicePrivateKey = DEVICE_ED25519,
    issuer: IssuerKey = EDDSA_KEY,
    *,
    iat: int = ISSUED_AT,
    exp: int = CREDENTIAL_EXPIRES_AT,
    iat_cbor: bytes | None = None,
    cti: bytes = CODE_ID,
    cred: bytes | None = None,
    issuer_signature: bytes | None = None,
    signer: DevicePrivateKey | None = None,
    protected: bytes = b"",
    device_signature: bytes | None = None,
) -> bytes:
    """The COSE bytes of a device code, each part replaceable; the device (or ``signer``)
    signs whatever payload results, as a phone would."""
    cred = credential(device, issuer, exp=exp) if cred is None else cred
    issuer_signature = issuer_signs(cred, issuer) if issuer_signature is None else issuer_signature
    payload = (
        b"\x84"
        + (uint32(iat) if iat_cbor is None else iat_cbor)
        + encode_bytes(cti)
        + encode_bytes(cred)
        + encode_bytes(issuer_signature)
    )
    # ["Signature1", protected, h'', payload]; a device code's protected header is empty.
    signature = (
        device_sign(device if signer is None else signer, to_be_signed(protected, payload))
        if device_signature is None
        else device_signature
    )
    return (
        b"\x84"
        + encode_bytes(protected)
        + b"\xa0"
        + encode_bytes(payload)
        + encode_bytes(signature)
    )


def device_text(message: bytes) -> str:
    return encode_text(DEVICE_PREFIX, message)


def _invalid_p256_x() -> bytes:
    """The first x (counting up from zero) with no point on P-256: 02 || x is no key."""
    for candidate in range(1 << 16):
        x = candidate.to_bytes(32, "big")
        try:
            ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), b"\x02" + x)
        except ValueError:
            return x
    raise AssertionError("every x has a point")  # half of them have none


# Edwards25519 (RFC 8032 section 5.1): the field prime, the curve constant d, the identity.
ED25519_P = 2**255 - 19
ED25519_D = -121665 * pow(121666, -1, ED25519_P) % ED25519_P
ED25519_IDENTITY = (1).to_bytes(32, "little")


def _ed25519_off_curve() -> bytes:
    """The first y (counting up from 2) for which x^2 = (y^2 - 1) / (d y^2 + 1) has no root."""
    p = ED25519_P
    for y in range(2, 1 << 16):
        u, v = (y * y - 1) % p, (ED25519_D * y * y + 1) % p
        if pow(u * pow(v, p - 2, p), (p - 1) // 2, p) != 1:
            return y.to_bytes(32, "little")
    raise AssertionError("every y has a point")  # half of them have none


def device_case(
    name: str,
    description: str,
    code: Callable[[], str],
    fails_at: str | None = None,
    *,
    at: int = ISSUED_AT + 10,
    trusted: list[IssuerKey] | None = None,
    algorithms: list[Algorithm] | None = None,
    replay_seen: list[bytes] | None = None,
    prefix: str = PREFIX,
    revoked: tuple[int, ...] = (),
    removed: tuple[bytes, ...] = (),
    fresh_until: int | None = None,
) -> Case:
    """A device-code case: its trust also holds a status list (NEIGHBOURS and ``revoked``
    revoked), the removed devices (another citizen's phone, plus ``removed``) and the
    time it goes stale (an hour after the validation clock unless given)."""
    return Case(
        name,
        description,
        code,
        fails_at,
        at=at,
        trusted=[EDDSA_KEY] if trusted is None else trusted,
        algorithms=[Algorithm.EDDSA] if algorithms is None else algorithms,
        replay_seen=[] if replay_seen is None else replay_seen,
        steps=DEVICE_STEPS,
        prefix=prefix,
        status_revoked=tuple(sorted({*NEIGHBOURS, *revoked})),
        revoked_devices=(REMOVED_ELSEWHERE, *removed),
        fresh_until=at + 3600 if fresh_until is None else fresh_until,
    )


def _ed25519() -> str:
    return device_text(device_message())


def _ed25519_message() -> bytes:
    return device_message()


BOTH = [Algorithm.EDDSA, Algorithm.ES256]

DEVICE_CASES = [
    device_case(
        "device-valid-ed25519",
        "A device code made by the phone's Ed25519 key, its credential signed by the EdDSA "
        "issuer key; 10 s after the phone made it.",
        _ed25519,
    ),
    device_case(
        "device-valid-p256",
        "A device code made by a P-256 key (a web wallet's WebCrypto key), compressed in the "
        "credential; EdDSA issuer key.",
        lambda: device_text(device_message(DEVICE_P256)),
    ),
    device_case(
        "device-valid-p256-es256-issuer",
        "P-256 device key, credential signed by the ES256 issuer key; the verifier accepts ES256.",
        lambda: device_text(device_message(DEVICE_P256, ES256_KEY)),
        trusted=[ES256_KEY],
        algorithms=[Algorithm.ES256],
    ),
    device_case(
        "device-valid-ed25519-es256-issuer",
        "Ed25519 device key, credential signed by the ES256 issuer key; the verifier trusts an "
        "EdDSA and an ES256 key.",
        lambda: device_text(device_message(DEVICE_ED25519, ES256_KEY)),
        trusted=[EDDSA_KEY, ES256_KEY],
        algorithms=BOTH,
    ),
    device_case(
        "device-valid-phone-clock-ahead-by-skew",
        "At iat - skew: the phone's clock is 30 s ahead, the most the skew allows.",
        _ed25519,
        at=ISSUED_AT - SKEW,
    ),
    device_case(
        "device-valid-last-second",
        "At iat + 60 + skew - 1: the last second a device code is accepted.",
        _ed25519,
        at=ISSUED_AT + DEVICE_CODE_LIFETIME + SKEW - 1,
    ),
    device_case(
        "device-valid-credential-last-second",
        "Made 1 s before the credential expires, checked at the credential's exp + skew - 1.",
        lambda: device_text(device_message(exp=ISSUED_AT + 1)),
        at=ISSUED_AT + SKEW,
    ),
    device_case(
        "device-valid-credential-at-key-period-limit",
        "The credential expires exactly 7 days after the issuer key's signing period ends "
        "(the latest a credential it signed can end).",
        lambda: device_text(device_message(exp=KEY_NOT_AFTER + MAX_CREDENTIAL_LIFETIME)),
    ),
    device_case(
        "device-stale-trust",
        "A valid device code at a terminal whose trust went stale this second.",
        _ed25519,
        "trust_fresh",
        fresh_until=ISSUED_AT + 10,
    ),
    device_case(
        "device-oversized-input",
        "600 characters after the device-code prefix: refused before any decoding.",
        lambda: DEVICE_PREFIX + "0" * 596,
        "length",
    ),
    device_case(
        "device-other-deployment",
        "A valid WH2: device code at a verifier of deployment SZ (codes SZ1:, device codes SZ2:).",
        _ed25519,
        "unprefix",
        prefix="SZ1:",
    ),
    device_case(
        "device-lowercase-base45",
        "Lower-case letters are not base45.",
        lambda: _ed25519().lower().replace("wh2:", DEVICE_PREFIX),
        "base45_decode",
    ),
    device_case(
        "device-empty-body", "The device-code prefix alone.", lambda: DEVICE_PREFIX, "device_decode"
    ),
    device_case(
        "device-version-1-code-under-device-prefix",
        "A valid version 1 code's bytes behind the device-code prefix.",
        lambda: device_text(good()),
        "device_decode",
    ),
    device_case(
        "device-protected-header-not-empty",
        "Header bytes 84 43 a1 01 27 (protected {1: -8}) instead of 84 40; the device signed it.",
        lambda: device_text(device_message(protected=b"\xa1\x01\x27")),
        "device_decode",
    ),
    device_case(
        "device-tagged",
        "COSE_Sign1 with tag 18 (d2): device codes are untagged.",
        lambda: device_text(b"\xd2" + _ed25519_message()),
        "device_decode",
    ),
    device_case(
        "device-trailing-bytes",
        "One byte after the device code's COSE_Sign1.",
        lambda: device_text(_ed25519_message() + b"\x00"),
        "device_decode",
    ),
    device_case(
        "device-truncated-signature",
        "A 63-byte device signature.",
        lambda: device_text(_ed25519_message()[:-65] + b"\x58\x3f" + _ed25519_message()[-64:-1]),
        "device_decode",
    ),
    device_case(
        "device-short-credential",
        "An Ed25519 credential of 48 bytes (the key cut short), signed by issuer and device.",
        lambda: device_text(device_message(cred=credential()[:-1])),
        "device_decode",
    ),
    device_case(
        "device-kind-and-key-length-disagree",
        "Kind 2 (P-256) with a 32-byte Ed25519 key, signed by issuer and device.",
        lambda: device_text(device_message(cred=credential(kind=2))),
        "device_decode",
    ),
    device_case(
        "device-unknown-kind",
        "Kind 3 (no such device key kind), signed by issuer and device.",
        lambda: device_text(device_message(cred=credential(kind=3))),
        "device_decode",
    ),
    device_case(
        "device-invalid-p256-point",
        "A P-256 credential whose compressed point has no point on the curve (02 || x).",
        lambda: device_text(
            device_message(
                DEVICE_P256, cred=credential(DEVICE_P256, key=b"\x02" + _invalid_p256_x())
            )
        ),
        "device_decode",
    ),
    device_case(
        "device-iat-in-8-bytes",
        "iat encoded in 8 bytes (1b ...): not the layout; the device signed it.",
        lambda: device_text(device_message(iat_cbor=b"\x1b" + ISSUED_AT.to_bytes(8, "big"))),
        "device_decode",
    ),
    device_case(
        "device-iat-overlong-4-bytes",
        "iat 1000 in 4 bytes (1a 000003e8): shortest form is 19 03e8; the device signed it.",
        lambda: device_text(device_message(iat_cbor=uint32(1000))),
        "device_decode",
    ),
    device_case(
        "device-kid-not-alphanumeric",
        "The credential's kid is '-', not an ASCII letter or digit.",
        lambda: device_text(device_message(cred=credential(kid=b"-"))),
        "device_decode",
    ),
    device_case(
        "device-credential-reserved-age-band",
        "The credential's card has age band 15, a reserved value; signed by the issuer key.",
        lambda: device_text(
            device_message(cred=credential(card=CARD.to_bytes()[:9] + bytes([0x7C, 0x03])))
        ),
        "device_decode",
    ),
    device_case(
        "device-unknown-kid",
        "The credential names issuer key 'Z', which this verifier does not trust.",
        lambda: device_text(device_message(issuer=UNKNOWN_KID_KEY)),
        "key_found",
    ),
    device_case(
        "device-issuer-alg-not-accepted",
        "Credential signed by the ES256 key E, trusted, but this verifier accepts only EdDSA.",
        lambda: device_text(device_message(DEVICE_P256, ES256_KEY)),
        "alg_accepted",
        trusted=[EDDSA_KEY, ES256_KEY],
    ),
    device_case(
        "device-credential-card-altered",
        "The phone changed its credential's age band to 80+ (a senior ticket) and signed the "
        "code; the issuer signed the original card.",
        lambda: device_text(
            device_message(
                cred=credential(card=SENIOR_CARD.to_bytes()),
                issuer_signature=issuer_signs(credential()),
            )
        ),
        "issuer_signature",
    ),
    device_case(
        "device-credential-exp-extended",
        "The phone moved its credential's expiry 30 days later; the issuer signed the original.",
        lambda: device_text(
            device_message(
                cred=credential(exp=CREDENTIAL_EXPIRES_AT + 30 * 86_400),
                issuer_signature=issuer_signs(credential()),
            )
        ),
        "issuer_signature",
    ),
    device_case(
        "device-credential-signed-by-untrusted-key",
        "The credential is signed by another key that claims the trusted kid A.",
        lambda: device_text(device_message(issuer=UNTRUSTED_KEY)),
        "issuer_signature",
    ),
    device_case(
        "device-credential-kid-switched",
        "Signed by key A, the credential's kid changed to B (both trusted).",
        lambda: device_text(
            device_message(cred=credential(kid=b"B"), issuer_signature=issuer_signs(credential()))
        ),
        "issuer_signature",
        trusted=[EDDSA_KEY, SECOND_EDDSA_KEY],
    ),
    device_case(
        "device-es256-issuer-signature-bit-flip",
        "One bit of the ES256 issuer signature (in s) flipped; the device signed the result.",
        lambda: device_text(
            device_message(
                DEVICE_P256,
                ES256_KEY,
                issuer_signature=flip_bit(
                    issuer_signs(credential(DEVICE_P256, ES256_KEY), ES256_KEY), 63
                ),
            )
        ),
        "issuer_signature",
        trusted=[ES256_KEY],
        algorithms=[Algorithm.ES256],
    ),
    device_case(
        "device-credential-ends-before-key-period",
        "The credential ends at the issuer key's nbf: the key cannot have signed it in its period.",
        lambda: device_text(device_message(iat=KEY_NOT_BEFORE - 3600, exp=KEY_NOT_BEFORE)),
        "key_signing_period",
        at=KEY_NOT_BEFORE - 3590,
    ),
    device_case(
        "device-credential-beyond-key-period",
        "The credential ends 7 days and 1 s after the issuer key's signing period.",
        lambda: device_text(device_message(exp=KEY_NOT_AFTER + MAX_CREDENTIAL_LIFETIME + 1)),
        "key_signing_period",
    ),
    device_case(
        "device-signature-bit-flip",
        "One bit of the Ed25519 device signature flipped.",
        lambda: device_text(flip_bit(_ed25519_message(), len(_ed25519_message()) - 1)),
        "device_signature",
    ),
    device_case(
        "device-p256-signature-bit-flip",
        "One bit of a P-256 device signature (in s) flipped.",
        lambda: device_text(
            flip_bit(device_message(DEVICE_P256), len(device_message(DEVICE_P256)) - 1)
        ),
        "device_signature",
    ),
    device_case(
        "device-cti-altered",
        "The code id changed after the phone signed the code.",
        lambda: device_text(_ed25519_message().replace(CODE_ID, bytes(8), 1)),
        "device_signature",
    ),
    device_case(
        "device-iat-altered",
        "An old screenshot whose iat was moved 10 minutes later after the phone signed it.",
        lambda: device_text(
            device_message(iat=ISSUED_AT - 600).replace(
                b"\x84" + uint32(ISSUED_AT - 600), b"\x84" + uint32(ISSUED_AT), 1
            )
        ),
        "device_signature",
    ),
    device_case(
        "device-credential-of-another-phone",
        "A copied credential: another phone's key signs a code with this phone's credential.",
        lambda: device_text(device_message(signer=THIEF_DEVICE)),
        "device_signature",
    ),
    device_case(
        "device-credential-expired",
        "The credential expired 20 s after the code was made; checked at its exp + skew.",
        lambda: device_text(device_message(exp=ISSUED_AT + 20)),
        "credential_not_expired",
        at=ISSUED_AT + 20 + SKEW,
    ),
    device_case(
        "device-phone-offline-for-a-week",
        "The credential expired 6 h ago (the phone has not been online for over 7 days): "
        "a fresh code is refused.",
        lambda: device_text(device_message(exp=ISSUED_AT - 6 * 3600)),
        "credential_not_expired",
    ),
    device_case(
        "device-made-after-credential-expired",
        "Made at the credential's exp, checked 10 s later (within the skew of the credential).",
        lambda: device_text(device_message(exp=ISSUED_AT)),
        "made_before_credential_expiry",
    ),
    device_case(
        "device-code-too-old",
        "At iat + 60 + skew: the code has expired (an old screenshot).",
        _ed25519,
        "not_expired",
        at=ISSUED_AT + DEVICE_CODE_LIFETIME + SKEW,
    ),
    device_case(
        "device-phone-clock-behind",
        "Made just now by a phone whose clock is an hour behind.",
        lambda: device_text(device_message(iat=ISSUED_AT - 3600)),
        "not_expired",
        at=ISSUED_AT,
    ),
    device_case(
        "device-phone-clock-ahead",
        "At iat - skew - 1: the phone's clock is 31 s ahead of the terminal's.",
        _ed25519,
        "not_before_issued",
        at=ISSUED_AT - SKEW - 1,
    ),
    device_case(
        "device-phone-clock-a-day-ahead",
        "Made just now by a phone whose clock is a day ahead.",
        lambda: device_text(device_message(iat=ISSUED_AT + 86_400)),
        "not_before_issued",
        at=ISSUED_AT,
    ),
    device_case(
        "device-removed",
        "The citizen removed this phone: its id is in the trust's revoked_devices.",
        _ed25519,
        "device_not_removed",
        removed=(device_id(DEVICE_ED25519),),
    ),
    device_case(
        "device-removed-and-card-revoked",
        "A removed phone of a revoked card: the removal is the reason.",
        lambda: device_text(device_message(DEVICE_P256)),
        "device_not_removed",
        removed=(device_id(DEVICE_P256),),
        revoked=(CARD.status_index,),
    ),
    device_case(
        "device-card-revoked",
        "The card's bit (index 1234567) is set in the status list.",
        _ed25519,
        "card_not_revoked",
        revoked=(CARD.status_index,),
    ),
    device_case(
        "device-replayed",
        "The code id was already accepted by this verifier.",
        _ed25519,
        "not_replayed",
        replay_seen=[CODE_ID],
    ),
    Case(
        "device-code-under-version-1-prefix",
        "A valid device code's bytes behind the version 1 prefix: a version 1 verifier's "
        "steps, refused as not a COSE_Sign1 of section 1.",
        lambda: text(_ed25519_message()),
        "cose_decode",
    ),
    # Added after case 108: the decoding rules section 8 gained for iat and Ed25519 keys.
    device_case(
        "device-iat-past-32-bits",
        "iat 2^32 - 60: the code's end, iat + 60, is not a 32-bit time; the device signed it.",
        lambda: device_text(device_message(iat=MAX_NUMERIC_DATE - DEVICE_CODE_LIFETIME + 1)),
        "device_decode",
    ),
    device_case(
        "device-ed25519-small-order-key",
        "A credential for the Ed25519 identity point (small order), signed by the issuer, and "
        "the signature (R = identity, S = 0) that OpenSSL accepts under it for any message.",
        lambda: device_text(
            device_message(
                cred=credential(key=ED25519_IDENTITY),
                device_signature=ED25519_IDENTITY + bytes(32),
            )
        ),
        "device_decode",
    ),
    device_case(
        "device-ed25519-key-not-canonical",
        "An Ed25519 key encoding y = p (not reduced), signed by the issuer.",
        lambda: device_text(
            device_message(cred=credential(key=(ED25519_P).to_bytes(32, "little")))
        ),
        "device_decode",
    ),
    device_case(
        "device-ed25519-key-off-the-curve",
        "An Ed25519 key whose y has no x on the curve, signed by the issuer.",
        lambda: device_text(device_message(cred=credential(key=_ed25519_off_curve()))),
        "device_decode",
    ),
]
SM2_KEY = _key("S", Algorithm.SM2)
GM = [Algorithm.SM2]  # a verifier of the GM crypto profile
STANDARD = [Algorithm.EDDSA, Algorithm.ES256]  # one of the standard profile


def _sm2_zero_signature() -> bytes:
    parts = cbor2.loads(good(SM2_KEY))
    return encode_sign1(parts[0], parts[2], bytes(64))


SM2_CASES = [
    Case(
        "valid-sm2",
        "A valid SM2-signed code (alg -65537, SM3 with the default user id "
        "1234567812345678); a verifier of the GM profile accepts SM2 only.",
        lambda: text(good(SM2_KEY)),
        trusted=[SM2_KEY],
        algorithms=GM,
    ),
    Case(
        "sm2-at-standard-verifier",
        "A valid SM2 code at a verifier of the standard profile (EdDSA, ES256), which even "
        "holds the SM2 key: refused at the allow-list, never verified.",
        lambda: text(good(SM2_KEY)),
        "alg_accepted",
        trusted=[EDDSA_KEY, SM2_KEY],
        algorithms=STANDARD,
    ),
    Case(
        "eddsa-at-gm-verifier",
        "A valid EdDSA code at a verifier of the GM profile, which holds the EdDSA key too.",
        lambda: text(good()),
        "alg_accepted",
        trusted=[EDDSA_KEY, SM2_KEY],
        algorithms=GM,
    ),
    Case(
        "sm2-alg-as-text",
        "The SM2 key signed a header whose alg is the text 'SM2' instead of -65537.",
        lambda: text(sign_raw(CLAIMS.to_cbor(), SM2_KEY, alg="SM2")),
        "alg_accepted",
        trusted=[SM2_KEY],
        algorithms=GM,
    ),
    Case(
        "sm2-key-under-eddsa-header",
        "The SM2 key signed a header that says EdDSA (-8), at a verifier accepting EdDSA: "
        "kid S is an SM2 key, so the algorithms are confused.",
        lambda: text(sign_raw(CLAIMS.to_cbor(), SM2_KEY, alg=-8)),
        "key_alg_matches",
        trusted=[SM2_KEY],
        algorithms=[Algorithm.EDDSA],
    ),
    Case(
        "sm2-signature-bit-flip",
        "One bit of the SM2 signature (in s) flipped.",
        lambda: text(flip_bit(good(SM2_KEY), len(good(SM2_KEY)) - 1)),
        "signature",
        trusted=[SM2_KEY],
        algorithms=GM,
    ),
    Case(
        "sm2-payload-bit-flip",
        "One bit of exp flipped inside the SM2-signed payload.",
        lambda: text(flip_bit(good(SM2_KEY), _payload_offset(good(SM2_KEY)) + 3)),
        "signature",
        trusted=[SM2_KEY],
        algorithms=GM,
    ),
    Case(
        "sm2-signature-zero",
        "An all-zero SM2 signature (r = s = 0, outside [1, n - 1]).",
        lambda: text(_sm2_zero_signature()),
        "signature",
        trusted=[SM2_KEY],
        algorithms=GM,
    ),
]
ALL_CASES = [*CASES, *DEVICE_CASES, *SM2_CASES]


def describe_device(code: str, trusted: list[IssuerKey]) -> dict[str, Any]:
    """Every layer of device code ``code`` that can be decoded (absent where decoding stops):
    the COSE_Sign1, the payload's four items, the credential's fields, the device key, the
    issuer's header as the verifier rebuilds it from a trusted key, both Sig_structures."""
    prefix = DEVICE_PREFIX if code.startswith(DEVICE_PREFIX) else ""
    body = code[len(prefix) :]
    layers: dict[str, Any] = {"prefix": prefix, "base45": body}
    try:
        message = base45.b45decode(body) if BASE45_TEXT.fullmatch(body) else None
    except ValueError:
        message = None
    layers["cose_hex"] = message.hex() if message is not None else None
    try:
        parts = cbor2.loads(message) if message is not None else None
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
    layers["unprotected"] = (
        {str(k): repr(v) for k, v in unprotected.items()}
        if isinstance(unprotected, dict)
        else repr(unprotected)
    )
    layers["payload_hex"] = payload.hex()
    try:
        items = cbor2.loads(payload)
    except Exception:
        items = None
    if (
        isinstance(items, list)
        and len(items) == 4
        and isinstance(items[0], int)
        and all(isinstance(item, bytes) for item in items[1:])
    ):
        iat, cti, cred, issuer_signature = items
        layers.update(iat=iat, cti=cti.hex(), credential_hex=cred.hex())
        layers.update(_describe_credential(cred, trusted))
        layers["issuer_signature_hex"] = issuer_signature.hex()
    layers["signature_hex"] = signature.hex()
    layers["sig_structure_hex"] = to_be_signed(protected, payload).hex()
    return layers


def _describe_credential(cred: bytes, trusted: list[IssuerKey]) -> dict[str, Any]:
    if len(cred) < 17:
        return {"credential": None}
    kid = cred[1:2]
    layers: dict[str, Any] = {
        "credential": {
            "kind": cred[0],
            "kid": kid.decode("latin-1"),
            "exp": int.from_bytes(cred[2:6], "big"),
            "card_hex": cred[6:17].hex(),
            "device_key_hex": cred[17:].hex(),
        }
    }
    try:
        layers["card"] = Card.from_bytes(cred[6:17]).to_json()
    except Exception:
        layers["card"] = None
    alg = {1: Algorithm.EDDSA, 2: Algorithm.ES256}.get(cred[0])
    try:
        device = DeviceKey(alg, cred[17:]) if alg is not None else None
    except ValueError:
        device = None
    if device is not None:
        try:
            layers["device_key_jwk"] = device.to_jwk()
        except ValueError:
            layers["device_key_jwk"] = None
        layers["device_id"] = device.device_id.hex()
    issuer = next((key for key in trusted if key.kid.encode() == kid), None)
    if issuer is not None:
        header = encode_protected(int(issuer.alg), kid)
        layers["issuer_protected_hex"] = header.hex()
        layers["issuer_sig_structure_hex"] = to_be_signed(header, cred).hex()
    return layers


def expected(fails_at: str | None, order: list[tuple[str, str]] = STEPS) -> dict[str, Any]:
    steps: dict[str, bool | None] = {}
    reason = "ok"
    for step, step_reason in order:
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
    device = case.steps is DEVICE_STEPS
    trust: dict[str, Any] = {
        "prefix": case.prefix,
        "algorithms": [alg.jose_name for alg in case.algorithms],
        "clock_skew": SKEW,
        "max_lifetime": MAX_TTL,
        "jwks": jwks([key.public for key in case.trusted]),
    }
    if case.fresh_until is not None:
        trust["fresh_until"] = case.fresh_until
    if case.status_revoked is not None:
        status = StatusList(STATUS_SIZE)
        for index in case.status_revoked:
            status.set(index, True)
        trust["status"] = status.to_json()
    if case.revoked_devices is not None:
        trust["revoked_devices"] = device_ids_to_json(case.revoked_devices)
    return {
        "id": f"{number:03d}",
        "name": case.name,
        "description": case.description,
        "code": code,
        "layers": describe_device(code, case.trusted) if device else describe(code),
        "trust": trust,
        "validation_clock": datetime.fromtimestamp(case.at, UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "validation_clock_epoch": case.at,
        "replay_seen": [code_id.hex() for code_id in case.replay_seen],
        "expected": expected(case.fails_at, case.steps),
    }


def main(argv: list[str]) -> int:
    args = argv[1:]
    keep = "--keep-existing" in args
    args = [arg for arg in args if arg != "--keep-existing"]
    if len(args) > 1 or any(arg.startswith("-") for arg in args):
        print(__doc__, file=sys.stderr)
        return 2
    out = Path(args[0]) if args else Path(__file__).parent / "cases"
    out.mkdir(parents=True, exist_ok=True)
    names = [f"{number:03d}-{case.name}.json" for number, case in enumerate(ALL_CASES, 1)]
    if not keep:
        for old in out.glob("*.json"):
            old.unlink()
    written = 0
    for number, (case, name) in enumerate(zip(ALL_CASES, names, strict=True), start=1):
        path = out / name
        if keep and path.exists():
            continue
        path.write_text(json.dumps(render(case, number), indent=2, ensure_ascii=False) + "\n")
        written += 1
    print(f"wrote {written} of {len(ALL_CASES)} test vectors to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
