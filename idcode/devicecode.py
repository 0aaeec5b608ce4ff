"""Device codes (format version 2): codes a citizen's phone makes itself, offline.

The service certifies a key the phone holds with a **credential** (the card, the device's
public key and an expiry at most 7 days ahead, signed by an issuer key); the phone signs each
code with that key, valid 60 s from its own clock, with a random code id. A terminal checks
both signatures with the issuer keys it already trusts, then the same time, revocation and
replay rules as for issuer-signed codes, plus the list of removed devices in its bundle.
docs/code-format.md section 8 fixes the bytes; this module and the verifier follow it.

Both signatures must fit, with the device's key and the card, in QR version 10-M (311
alphanumeric characters): 204 bytes of COSE at most. Hence a flat layout: the credential is a
packed byte string, not a nested COSE_Sign1 (whose framing alone would cost the 27 bytes over
budget), and the device code's own protected header is empty (the credential, signed by the
issuer, names the device's algorithm, so a code cannot choose it).
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)
from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from idcode.b64url import decode as b64url_decode
from idcode.b64url import encode as b64url_encode
from idcode.cbor import encode_bytes
from idcode.claims import CARD_CLAIM_LENGTH, CODE_ID_LENGTH, MAX_NUMERIC_DATE, Card
from idcode.codetext import encode_text
from idcode.cose import SIGNATURE_LENGTH, Algorithm, encode_protected, to_be_signed
from idcode.errors import ClaimsError, CoseError, IdcodeError
from idcode.keys import PublicKey, Signer

DEVICE_FORMAT_VERSION = 2
#: Seconds a device code is valid from its ``iat`` (the code carries no ``exp``).
DEVICE_CODE_LIFETIME = 60
#: The longest a credential may be valid: a lost phone's codes stop at most this long after
#: its last renewal, even at a terminal that never syncs again.
MAX_CREDENTIAL_LIFETIME = 7 * 86400
DEVICE_ID_LENGTH = 8
#: The latest ``iat``: a code's end, ``iat + DEVICE_CODE_LIFETIME``, is a 32-bit time as every
#: time in a code is (docs/code-format.md section 1).
MAX_ISSUED_AT = MAX_NUMERIC_DATE - DEVICE_CODE_LIFETIME

#: The credential's first byte: the device key's kind (and so the device code's algorithm).
KIND_ED25519 = 1
KIND_P256 = 2
_KINDS = {KIND_ED25519: (Algorithm.EDDSA, 32), KIND_P256: (Algorithm.ES256, 33)}
_KIND_OF = {Algorithm.EDDSA: KIND_ED25519, Algorithm.ES256: KIND_P256}
_ECDSA_SHA256 = ec.ECDSA(SHA256())
# kind, kid, exp (4), card (11), then the key.
_KEY_OFFSET = 2 + 4 + CARD_CLAIM_LENGTH
CREDENTIAL_LENGTHS = {kind: _KEY_OFFSET + size for kind, (_, size) in _KINDS.items()}
#: The credential blob a wallet keeps: the credential, then the issuer's 64-byte signature.
BLOB_LENGTHS = {kind: length + SIGNATURE_LENGTH for kind, length in CREDENTIAL_LENGTHS.items()}
# The device code's protected header: empty (a zero-length byte string).
_EMPTY_PROTECTED = b""
# What a terminal remembers across codes, each a bounded map cleared when full: a terminal
# sees the same phones day after day. Each maps bytes to what a pure function makes of them,
# so remembering skips work and changes no result.
_MAX_REMEMBERED = 4096
#: A device key's bytes -> its cryptography key: decompressing a P-256 point costs a quarter
#: of a signature check, and loading any key a little.
_device_keys: dict[bytes, Any] = {}
#: A credential's bytes -> the Credential parsed from them.
_credentials: dict[bytes, Credential] = {}
#: (issuer algorithm, kid) -> the start of the Sig_structure of that issuer's credentials.
_credential_headers: dict[tuple[Algorithm, bytes], bytes] = {}

# Edwards25519 (RFC 8032 section 5.1): the field prime and the curve constant d.
_P = 2**255 - 19
_D = -121665 * pow(121666, -1, _P) % _P
# The y-coordinates of the eight points of small order: the identity (1), the point of order
# 2 (-1), the two of order 4 (0) and the four of order 8. OpenSSL verifies signatures for such
# a key without checking its order, and R of small order with S = 0 then passes for any
# message, so a credential for one (printed in every code) would let anyone make its codes.
_Y_ORDER_8 = 0x7A03AC9277FDC74EC6CC392CFA53202A0F67100D760B3CBA4FD84D3D706A17C7
_SMALL_ORDER_Y = frozenset({0, 1, _P - 1, _Y_ORDER_8, _P - _Y_ORDER_8})


def _ed25519_key_problem(raw: bytes) -> str | None:
    """Why ``raw`` (32 bytes) is no usable Ed25519 public key, or None: it must be the
    canonical encoding (y < p) of a point on the curve that is not of small order.
    cryptography loads any 32 bytes and decodes them only when it verifies."""
    y = int.from_bytes(raw, "little") & ((1 << 255) - 1)
    if y >= _P:
        return "not canonically encoded (y >= p)"
    if y in _SMALL_ORDER_Y:
        return "a point of small order, for which anyone can make signatures"
    # x^2 = (y^2 - 1) / (d y^2 + 1) must have a root (Euler's criterion); x = 0 only for
    # y = 1 or -1, refused above, so the sign bit always names one of two points.
    u, v = (y * y - 1) % _P, (_D * y * y + 1) % _P
    if pow(u * pow(v, _P - 2, _P), (_P - 1) // 2, _P) != 1:
        return "not a point on the curve"
    return None


def device_prefix(prefix: str) -> str:
    """The device-code prefix of a deployment whose codes use ``prefix``: ``WH1:`` gives
    ``WH2:`` (the deployment's letters, then this format's version)."""
    deployment = prefix.rstrip(":").rstrip("0123456789")
    return f"{deployment}{DEVICE_FORMAT_VERSION}:"


@dataclass(frozen=True, slots=True)
class DeviceKey:
    """A device's public key as a credential carries it: Ed25519 (32 bytes) or P-256, as a
    compressed point (33 bytes, SEC 1 section 2.3.3)."""

    alg: Algorithm
    raw: bytes
    #: The device's id: the first 8 bytes of SHA-256 of its key. Removing a device lists
    #: this id in the trust bundles, which refuses the codes of every credential of the key.
    device_id: bytes = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.alg not in _KIND_OF:
            raise ValueError(f"a device key is Ed25519 or P-256, not {self.alg.jose_name}")
        size = _KINDS[_KIND_OF[self.alg]][1]
        if type(self.raw) is not bytes or len(self.raw) != size:
            raise ValueError(f"a {self.alg.jose_name} device key is {size} bytes")
        digest = hashlib.sha256(self.raw).digest()[:DEVICE_ID_LENGTH]
        object.__setattr__(self, "device_id", digest)

    @property
    def kind(self) -> int:
        return _KIND_OF[self.alg]

    def public_key(self) -> PublicKey:
        """The key as a verification key (the kid ``D`` is a placeholder: a device key is
        found through its credential, never by kid). ValueError if it is not a valid point."""
        return PublicKey(kid="D", alg=self.alg, key=self._key())

    def _key(self) -> Any:
        """The cryptography key (remembered); ValueError if it is not a valid point."""
        key = _device_keys.get(self.raw)
        if key is None:
            # Ed25519 and P-256 keys differ in length, so the bytes name the algorithm too.
            if self.alg is Algorithm.EDDSA:
                problem = _ed25519_key_problem(self.raw)
                if problem is not None:
                    raise ValueError(f"the Ed25519 key is {problem}")
                key = Ed25519PublicKey.from_public_bytes(self.raw)
            else:
                key = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), self.raw)
            if len(_device_keys) >= _MAX_REMEMBERED:
                _device_keys.clear()
            _device_keys[self.raw] = key
        return key

    def verify(self, signature: bytes, message: bytes) -> bool:
        """True when ``signature`` (64 raw bytes: Ed25519, or ES256 as r || s) by this key is
        valid for ``message``."""
        key = self._key()
        try:
            if self.alg is Algorithm.EDDSA:
                key.verify(signature, message)
            else:
                der = encode_dss_signature(
                    int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")
                )
                key.verify(der, message, _ECDSA_SHA256)
        except InvalidSignature:
            return False
        return True

    @classmethod
    def from_public_key(cls, key: object) -> DeviceKey:
        """The device key of a public key; ValueError if it is not one a device may have
        (for Ed25519: a canonical point on the curve, not of small order)."""
        if isinstance(key, Ed25519PublicKey):
            device = cls(Algorithm.EDDSA, key.public_bytes(Encoding.Raw, PublicFormat.Raw))
        elif isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1):
            device = cls(
                Algorithm.ES256, key.public_bytes(Encoding.X962, PublicFormat.CompressedPoint)
            )
        else:
            raise ValueError("a device key is Ed25519 or P-256")
        device.public_key()
        return device

    @classmethod
    def from_jwk(cls, jwk: object) -> DeviceKey:
        """The key of a public JWK (RFC 7517/8037): ``OKP``/``Ed25519`` with ``x``, or
        ``EC``/``P-256`` with ``x`` and ``y`` on the curve. ValueError saying what is wrong."""
        if not isinstance(jwk, dict):
            raise ValueError("the key must be a JWK object")
        if "d" in jwk:
            raise ValueError("send the public key only (no 'd')")
        kty, crv = jwk.get("kty"), jwk.get("crv")
        try:
            if (kty, crv) == ("OKP", "Ed25519"):
                x = _coordinate(jwk, "x", 32)
                return cls.from_public_key(Ed25519PublicKey.from_public_bytes(x))
            if (kty, crv) == ("EC", "P-256"):
                x, y = _coordinate(jwk, "x", 32), _coordinate(jwk, "y", 32)
                point = ec.EllipticCurvePublicKey.from_encoded_point(
                    ec.SECP256R1(), b"\x04" + x + y
                )
                return cls.from_public_key(point)
        except ValueError as exc:
            raise ValueError(f"not a usable public key: {exc}") from None
        raise ValueError("the key must be Ed25519 (kty OKP) or P-256 (kty EC)")

    def to_jwk(self) -> dict[str, Any]:
        key = self._key()
        if self.alg is Algorithm.EDDSA:
            raw = key.public_bytes(Encoding.Raw, PublicFormat.Raw)
            return {"kty": "OKP", "crv": "Ed25519", "x": b64url_encode(raw)}
        point = key.public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)
        return {
            "kty": "EC",
            "crv": "P-256",
            "x": b64url_encode(point[1:33]),
            "y": b64url_encode(point[33:65]),
        }


def _coordinate(jwk: dict[str, Any], name: str, size: int) -> bytes:
    value = jwk.get(name)
    if not isinstance(value, str):
        raise ValueError(f"'{name}' must be a base64url string")
    try:
        raw = b64url_decode(value)
    except (ValueError, IdcodeError):
        raise ValueError(f"'{name}' is not base64url") from None
    if len(raw) != size:
        raise ValueError(f"'{name}' must be {size} bytes, got {len(raw)}")
    return raw


@dataclass(frozen=True, slots=True)
class Credential:
    """What the issuer certifies: this card's codes may be signed by this device key until
    ``expires_at``. Packed as kind (1 byte), kid (1), exp (4, big-endian), card (11), key."""

    kid: str
    expires_at: int
    card: Card
    device: DeviceKey

    def to_bytes(self) -> bytes:
        kid = self.kid.encode("ascii")
        if len(kid) != 1:
            raise ClaimsError("a credential's issuer kid is one character")
        if not 0 <= self.expires_at <= MAX_NUMERIC_DATE:
            raise ClaimsError(f"expires_at must be in 0..{MAX_NUMERIC_DATE}")
        return (
            bytes([self.device.kind])
            + kid
            + self.expires_at.to_bytes(4, "big")
            + self.card.to_bytes()
            + self.device.raw
        )

    @classmethod
    def from_bytes(cls, raw: bytes) -> Credential:
        """Parse a packed credential; ClaimsError for anything but exactly that layout."""
        known = _credentials.get(raw)
        if known is not None:
            return known
        parsed = cls._parse(raw)
        if len(_credentials) >= _MAX_REMEMBERED:
            _credentials.clear()
        _credentials[raw] = parsed
        return parsed

    @classmethod
    def _parse(cls, raw: bytes) -> Credential:
        if not raw or raw[0] not in _KINDS:
            raise ClaimsError("the credential's first byte is not a known device key kind")
        alg, _size = _KINDS[raw[0]]
        if len(raw) != CREDENTIAL_LENGTHS[raw[0]]:
            raise ClaimsError(
                f"a {alg.jose_name} credential is {CREDENTIAL_LENGTHS[raw[0]]} bytes, "
                f"got {len(raw)}"
            )
        kid = raw[1:2]
        if not kid.isalnum() or not kid.isascii():
            raise ClaimsError("the credential's kid is not an ASCII letter or digit")
        device = DeviceKey(alg, raw[_KEY_OFFSET:])
        try:
            device._key()
        except ValueError as exc:
            raise ClaimsError(f"the credential's device key is not a valid point: {exc}") from None
        return cls(
            kid=kid.decode("ascii"),
            expires_at=int.from_bytes(raw[2:6], "big"),
            card=Card.from_bytes(raw[6:_KEY_OFFSET]),
            device=device,
        )


def credential_to_be_signed(credential: bytes, issuer_alg: Algorithm, kid: bytes) -> bytes:
    """What the issuer signs: the COSE Sig_structure of a COSE_Sign1 whose protected header
    ``{1: alg, 4: kid}`` is not sent (the verifier rebuilds it from the credential's kid and
    that key's algorithm) and whose payload is the credential."""
    start = _credential_headers.get((issuer_alg, kid))
    if start is None:
        # Everything before the payload: the same for every credential of one issuer key.
        start = to_be_signed(encode_protected(int(issuer_alg), kid), b"")[:-1]
        if len(_credential_headers) >= _MAX_REMEMBERED:
            _credential_headers.clear()
        _credential_headers[(issuer_alg, kid)] = start
    return start + encode_bytes(credential)


def issue_credential(issuer: Signer, card: Card, device: DeviceKey, expires_at: int) -> bytes:
    """The credential blob for ``device``: the packed credential, then the issuer's
    signature. What a wallet keeps and puts in every code it makes."""
    credential = Credential(issuer.kid, expires_at, card, device).to_bytes()
    signature = issuer.sign(
        credential_to_be_signed(credential, issuer.alg, issuer.kid.encode("ascii"))
    )
    return credential + signature


def split_blob(blob: bytes) -> tuple[bytes, bytes]:
    """(credential, issuer signature) of a credential blob; ClaimsError if it is not one."""
    if not blob or blob[0] not in BLOB_LENGTHS or len(blob) != BLOB_LENGTHS[blob[0]]:
        raise ClaimsError("not a credential blob (credential and issuer signature)")
    return blob[:-SIGNATURE_LENGTH], blob[-SIGNATURE_LENGTH:]


def encode_payload(issued_at: int, code_id: bytes, credential: bytes, signature: bytes) -> bytes:
    """The device code's payload: ``[iat, cti, credential, issuer signature]``, deterministic."""
    if not 0x10000 <= issued_at <= MAX_ISSUED_AT:
        raise ClaimsError(
            "a device code's iat is a 32-bit time after 1970-01-01 18:12 UTC whose end, "
            f"iat + {DEVICE_CODE_LIFETIME}, is one too"
        )
    if len(code_id) != CODE_ID_LENGTH:
        raise ClaimsError(f"code id must be {CODE_ID_LENGTH} bytes")
    return (
        b"\x84\x1a"
        + issued_at.to_bytes(4, "big")
        + encode_bytes(code_id)
        + encode_bytes(credential)
        + encode_bytes(signature)
    )


def _device_sign(private_key: object, message: bytes) -> bytes:
    if isinstance(private_key, Ed25519PrivateKey):
        return private_key.sign(message)
    if isinstance(private_key, ec.EllipticCurvePrivateKey) and isinstance(
        private_key.curve, ec.SECP256R1
    ):
        r, s = decode_dss_signature(private_key.sign(message, ec.ECDSA(SHA256())))
        return r.to_bytes(32, "big") + s.to_bytes(32, "big")
    raise ValueError("a device key is Ed25519 or P-256")


def make_device_code(
    blob: bytes,
    private_key: object,
    *,
    prefix: str,
    now: int,
    code_id: bytes | None = None,
) -> str:
    """A device code: ``blob`` (from issue_credential) and a fresh ``iat`` = ``now`` and code
    id, signed with the device's ``private_key``. ``prefix`` is the device-code prefix
    (``device_prefix``). Makes no network call: this is what a phone does offline."""
    credential, signature = split_blob(blob)
    device = DeviceKey(_KINDS[credential[0]][0], credential[_KEY_OFFSET:])
    public = getattr(private_key, "public_key", None)
    if public is None or DeviceKey.from_public_key(public()) != device:
        raise ValueError("the private key is not the key this credential certifies")
    payload = encode_payload(
        now,
        code_id if code_id is not None else secrets.token_bytes(CODE_ID_LENGTH),
        credential,
        signature,
    )
    device_signature = _device_sign(private_key, to_be_signed(_EMPTY_PROTECTED, payload))
    message = b"\x84\x40\xa0" + encode_bytes(payload) + encode_bytes(device_signature)
    return encode_text(prefix, message)


class DeviceMessage(NamedTuple):
    """A parsed device code, its signatures not yet checked. (A named tuple: one is made for
    every scan, and a tuple costs a fraction of a frozen dataclass to make.)"""

    payload: bytes  # what the device signed (inside its Sig_structure)
    issued_at: int
    code_id: bytes
    credential_bytes: bytes
    credential: Credential
    issuer_signature: bytes
    device_signature: bytes


# 84 40 a0 58 LL: array(4), empty protected, empty unprotected map, the payload's header.
# The payload: 84 1a <iat> 48 <cti> 58 LL <credential> 58 40 <signature>.
_HEAD = b"\x84\x40\xa0\x58"


def decode_device_message(message: bytes) -> DeviceMessage:
    """Parse the COSE bytes of a device code, exactly the section 8 layout: CoseError for the
    structure, ClaimsError for the credential; nothing else is accepted (one code, one byte
    form)."""
    if len(message) < 5 or message[:4] != _HEAD:
        raise CoseError("not a device code's COSE_Sign1 (empty protected header, no unprotected)")
    payload_length = message[4]
    payload_end = 5 + payload_length
    if payload_length < 24 or message[payload_end : payload_end + 2] != b"\x58\x40":
        raise CoseError("the device code's payload or signature is not where it must be")
    if len(message) != payload_end + 2 + SIGNATURE_LENGTH:
        raise CoseError("the device code has the wrong length (or trailing bytes)")
    payload = message[5:payload_end]
    if payload[:2] != b"\x84\x1a" or payload[6:7] != b"\x48" or payload[15:16] != b"\x58":
        raise CoseError("the payload is not [iat, cti, credential, signature]")
    issued_at = int.from_bytes(payload[2:6], "big")
    if issued_at <= 0xFFFF:
        raise CoseError("the payload is not deterministically encoded")
    if issued_at > MAX_ISSUED_AT:
        raise CoseError(f"the code's end, iat + {DEVICE_CODE_LIFETIME}, is past 32 bits")
    code_id = payload[7:15]
    credential_length = payload[16]
    credential_end = 17 + credential_length
    if credential_length < 24 or payload[credential_end : credential_end + 2] != b"\x58\x40":
        raise CoseError("the payload is not [iat, cti, credential, signature]")
    if len(payload) != credential_end + 2 + SIGNATURE_LENGTH:
        raise CoseError("the payload has the wrong length")
    credential_bytes = payload[17:credential_end]
    return DeviceMessage(
        payload=payload,
        issued_at=issued_at,
        code_id=code_id,
        credential_bytes=credential_bytes,
        credential=Credential.from_bytes(credential_bytes),
        issuer_signature=payload[credential_end + 2 :],
        device_signature=message[payload_end + 2 :],
    )


def device_to_be_signed(payload: bytes) -> bytes:
    """What the device signs: the Sig_structure with the empty protected header."""
    return to_be_signed(_EMPTY_PROTECTED, payload)
