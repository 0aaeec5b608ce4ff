"""An independent reading of docs/code-format.md section 8 (device codes, version 2), written
from the page alone with cbor2, the base45 package and cryptography, importing nothing from
idcode: the oracle tests/core/test_devicecode_attacks.py checks idcode's verdicts against.

Where idcode parses the fixed layout byte by byte, this decodes generic CBOR and demands that
the deterministic re-encoding gives the same bytes; where idcode keeps a table of small-order
points, this decompresses the key (RFC 8032 section 5.1.3) and multiplies it by the cofactor;
it rebuilds both Sig_structures with cbor2 and verifies with cryptography directly.
"""

from __future__ import annotations

import hashlib
import string
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import base45
import cbor2
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

MAX_TEXT = 512
LIFETIME = 60
MAX_CREDENTIAL = 7 * 86400
COSE_ALG = {"EdDSA": -8, "ES256": -7}
KID_CHARACTERS = (string.ascii_letters + string.digits).encode()

# -- the curves, by the book --------------------------------------------------------------

P25519 = 2**255 - 19
D25519 = -121665 * pow(121666, P25519 - 2, P25519) % P25519
SQRT_MINUS_ONE = pow(2, (P25519 - 1) // 4, P25519)


def ed25519_decode(raw: bytes) -> tuple[int, int] | None:
    """RFC 8032 section 5.1.3: the point (x, y) a 32-byte string encodes, or None (y >= p,
    no square root, or x = 0 with the sign bit set)."""
    number = int.from_bytes(raw, "little")
    sign, y = number >> 255, number & ((1 << 255) - 1)
    if y >= P25519:
        return None
    u, v = (y * y - 1) % P25519, (D25519 * y * y + 1) % P25519
    x = u * pow(v, 3, P25519) * pow(u * pow(v, 7, P25519), (P25519 - 5) // 8, P25519) % P25519
    if v * x * x % P25519 == (-u) % P25519:
        x = x * SQRT_MINUS_ONE % P25519
    elif v * x * x % P25519 != u:
        return None
    if x == 0 and sign:
        return None
    if x & 1 != sign:
        x = P25519 - x
    return x, y


def ed25519_add(a: tuple[int, int], b: tuple[int, int]) -> tuple[int, int]:
    """Affine twisted Edwards addition (complete for edwards25519)."""
    (x1, y1), (x2, y2) = a, b
    t = D25519 * x1 * x2 * y1 * y2 % P25519
    x3 = (x1 * y2 + x2 * y1) * pow(1 + t, P25519 - 2, P25519) % P25519
    y3 = (y1 * y2 + x1 * x2) * pow(1 - t, P25519 - 2, P25519) % P25519
    return x3, y3


def ed25519_usable(raw: bytes) -> bool:
    """A canonical encoding of a point whose order is not a divisor of the cofactor 8."""
    point = ed25519_decode(raw)
    if point is None:
        return False
    for _ in range(3):
        point = ed25519_add(point, point)
    return point != (0, 1)


P256 = 2**256 - 2**224 + 2**192 + 2**96 - 1
P256_B = 0x5AC635D8AA3A93E7B3EBBD55769886BC651D06B0CC53B0F63BCE3C3E27D2604B
P256_N = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551


def p256_usable(raw: bytes) -> bool:
    """SEC 1 section 2.3.4 for a compressed point: 02 or 03, then x < p with a y on the curve
    (P-256 has cofactor 1: every such point is of prime order)."""
    if len(raw) != 33 or raw[0] not in (2, 3):
        return False
    x = int.from_bytes(raw[1:], "big")
    if x >= P256:
        return False
    right = (x * x * x - 3 * x + P256_B) % P256
    return right == 0 or pow(right, (P256 - 1) // 2, P256) == 1


# -- trust and verdicts -------------------------------------------------------------------


@dataclass(frozen=True)
class SpecKey:
    """A trusted issuer key: its JWK's kid, alg, public key and signing period."""

    kid: str
    alg: str
    public: Any
    nbf: int | None = None
    exp: int | None = None


@dataclass(frozen=True)
class SpecTrust:
    code_prefix: str  # "WH1:"
    keys: Mapping[str, SpecKey]
    algorithms: frozenset[str]
    skew: int = 30
    revoked_devices: frozenset[bytes] = frozenset()
    revoked_cards: frozenset[int] = frozenset()
    fresh_until: int | None = None
    accepted: set[bytes] = field(default_factory=set)  # the replay state: accepted ctis

    @property
    def device_prefix(self) -> str:
        return self.code_prefix[:-2] + "2:"  # deployment, then "2:"


@dataclass(frozen=True)
class SpecVerdict:
    reason: str
    kid: str | None = None
    iat: int | None = None
    cti: bytes | None = None
    card: bytes | None = None
    device: bytes | None = None


VERSION_1 = "version 1"  # not this page's to judge: section 2's


def _cbor(data: bytes) -> Any:
    """One deterministically encoded item and nothing after it, or ValueError."""
    try:
        item = cbor2.loads(data)
        again = cbor2.dumps(item, canonical=True)
    except Exception as exc:  # cbor2 raises several kinds on broken input
        raise ValueError(f"not CBOR: {exc}") from None
    if again != data:
        raise ValueError("not deterministic CBOR, or bytes after it")
    return item


def sig_structure(protected: bytes, payload: bytes) -> bytes:
    return cbor2.dumps(["Signature1", protected, b"", payload], canonical=True)


def issuer_protected(alg: str, kid: bytes) -> bytes:
    return cbor2.dumps({1: COSE_ALG[alg], 4: kid}, canonical=True)


def signature_verifies(alg: str, public: Any, signature: bytes, message: bytes) -> bool:
    try:
        if alg == "EdDSA":
            public.verify(signature, message)
        else:
            r, s = int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")
            public.verify(encode_dss_signature(r, s), message, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        return False
    return True


def _parse(body: str) -> tuple[int, bytes, bytes, bytes, bytes, bytes]:
    """(iat, cti, credential, issuer signature, device signature, payload) or ValueError."""
    try:
        raw = base45.b45decode(body)
    except Exception as exc:
        raise ValueError(f"not base45: {exc}") from None
    message = _cbor(raw)
    if not (type(message) is list and len(message) == 4):
        raise ValueError("not a COSE_Sign1 array")
    protected, unprotected, payload, signature = message
    if not (type(protected) is bytes and protected == b""):
        raise ValueError("the protected header is not empty")
    if not (type(unprotected) is dict and not unprotected):
        raise ValueError("the unprotected header is not the empty map")
    if type(payload) is not bytes or type(signature) is not bytes or len(signature) != 64:
        raise ValueError("payload and signature")
    fields = _cbor(payload)
    if not (type(fields) is list and len(fields) == 4):
        raise ValueError("not [iat, cti, credential, issuer_signature]")
    iat, cti, credential, issuer_signature = fields
    if type(iat) is not int or not 0x10000 <= iat <= 2**32 - 1 - LIFETIME:
        raise ValueError("iat")
    if type(cti) is not bytes or len(cti) != 8:
        raise ValueError("cti")
    if type(credential) is not bytes or type(issuer_signature) is not bytes:
        raise ValueError("credential")
    if len(issuer_signature) != 64:
        raise ValueError("issuer signature")
    return iat, cti, credential, issuer_signature, signature, payload


def _credential(credential: bytes) -> tuple[str, str, int, bytes, bytes]:
    """(device alg, kid, exp, card, key) or ValueError."""
    if not credential or credential[0] not in (1, 2):
        raise ValueError("kind")
    alg, size = {1: ("EdDSA", 32), 2: ("ES256", 33)}[credential[0]]
    if len(credential) != 17 + size:
        raise ValueError("length")
    if credential[1] not in KID_CHARACTERS:
        raise ValueError("kid")
    card, key = credential[6:17], credential[17:]
    if (int.from_bytes(card[9:11], "big") >> 10) & 0xF > 7:
        raise ValueError("reserved age band")
    if not (ed25519_usable(key) if alg == "EdDSA" else p256_usable(key)):
        raise ValueError("device key")
    return alg, chr(credential[1]), int.from_bytes(credential[2:6], "big"), card, key


def device_public_key(alg: str, key: bytes) -> Any:
    if alg == "EdDSA":
        return Ed25519PublicKey.from_public_bytes(key)
    return ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), key)


def spec_verify(text: object, trust: SpecTrust, now: int, replay: bool = False) -> SpecVerdict:
    """The verdict section 8 gives ``text`` at ``now`` (with replay state when ``replay``)."""
    if trust.fresh_until is not None and now >= trust.fresh_until:
        return SpecVerdict("stale_trust")
    if not isinstance(text, str) or len(text) > MAX_TEXT:
        return SpecVerdict("malformed")
    if text.startswith(trust.code_prefix):
        return SpecVerdict(VERSION_1)
    if not text.startswith(trust.device_prefix):
        return SpecVerdict("unknown_prefix")
    try:
        iat, cti, credential, issuer_signature, device_signature, payload = _parse(
            text[len(trust.device_prefix) :]
        )
        device_alg, kid, expires_at, card, key = _credential(credential)
    except ValueError:
        return SpecVerdict("malformed")
    issuer = trust.keys.get(kid)
    if issuer is None:
        return SpecVerdict("unknown_key")
    if issuer.alg not in trust.algorithms:
        return SpecVerdict("unsupported_alg", kid)
    signed = sig_structure(issuer_protected(issuer.alg, kid.encode()), credential)
    if not signature_verifies(issuer.alg, issuer.public, issuer_signature, signed):
        return SpecVerdict("bad_signature", kid)
    if (issuer.nbf is not None and expires_at <= issuer.nbf) or (
        issuer.exp is not None and expires_at > issuer.exp + MAX_CREDENTIAL
    ):
        return SpecVerdict("unknown_key", kid)
    device = hashlib.sha256(key).digest()[:8]
    device_key = device_public_key(device_alg, key)
    if not signature_verifies(
        device_alg, device_key, device_signature, sig_structure(b"", payload)
    ):
        return SpecVerdict("bad_signature", kid, device=device)
    known = SpecVerdict("", kid, iat, cti, card, device)
    skew = trust.skew
    if now >= expires_at + skew or iat >= expires_at or now >= iat + LIFETIME + skew:
        return _as(known, "expired")
    if now < iat - skew:
        return _as(known, "not_yet_valid")
    if device in trust.revoked_devices:
        return _as(known, "revoked")
    if int.from_bytes(card[6:9], "big") in trust.revoked_cards:
        return _as(known, "revoked")
    if replay:
        if cti in trust.accepted:
            return _as(known, "replayed")
        trust.accepted.add(cti)
    return _as(known, "ok")


def _as(verdict: SpecVerdict, reason: str) -> SpecVerdict:
    return SpecVerdict(reason, verdict.kid, verdict.iat, verdict.cti, verdict.card, verdict.device)
