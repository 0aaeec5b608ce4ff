"""COSE_Sign1 (RFC 9052) as idcode uses it: encoding, strict parsing and the signed bytes.

Only the structure lives here; keys and signature primitives are in ``idcode.keys``.
"""

from __future__ import annotations

from enum import IntEnum
from typing import NamedTuple

from idcode.cbor import decode_strict, encode_bytes, encode_int, encode_text
from idcode.errors import CborError, CoseError

# COSE header labels (RFC 9052 section 3.1).
HEADER_ALG = 1
HEADER_KID = 4


class Algorithm(IntEnum):
    """COSE algorithm identifiers idcode can verify: EdDSA and ES256 from the IANA COSE
    Algorithms registry, and SM2 (SM2 with SM3 and the GM/T 0009 default user id), which has
    no registered identifier and takes -65537, the first value of COSE's private-use range
    (below -65536; docs/code-format.md section 3). Which of them a deployment issues and
    accepts is its crypto profile's choice (idcode.profiles)."""

    EDDSA = -8
    ES256 = -7
    SM2 = -65537

    @property
    def jose_name(self) -> str:
        """The JOSE ``alg`` name, used in JWKs and on the command line (``SM2`` is idcode's
        own: JOSE registers no SM2 name either)."""
        return _JOSE_NAMES[self]

    @classmethod
    def from_name(cls, name: str, *, exact: bool = False) -> Algorithm:
        """The algorithm named ``name`` (JOSE name; any case unless ``exact``, as in JWKs)."""
        for alg in cls:
            if alg.jose_name == name or (not exact and alg.jose_name.lower() == name.lower()):
                return alg
        known = ", ".join(alg.jose_name for alg in cls)
        raise ValueError(f"unknown algorithm {name!r}; known: {known}")

    @classmethod
    def describe(cls, alg: object) -> str:
        """A header's ``alg`` value for a reason's detail: ``-65537 (SM2)``, ``5``, ``'EdDSA'``."""
        if type(alg) is int and alg in _BY_VALUE:
            return f"{alg} ({_BY_VALUE[alg].jose_name})"
        return repr(alg)


_JOSE_NAMES = {Algorithm.EDDSA: "EdDSA", Algorithm.ES256: "ES256", Algorithm.SM2: "SM2"}
_BY_VALUE = {int(alg): alg for alg in Algorithm}


SIGNATURE_LENGTH = 64  # Ed25519; ES256 (RFC 9053 section 2.1) and SM2 as r || s
# array(4), then the text "Signature1": the fixed start of every Sig_structure.
_SIG_STRUCTURE_START = b"\x84\x6aSignature1"


class Sign1(NamedTuple):
    """A parsed COSE_Sign1 message. ``alg`` is the raw header value, checked by the verifier.

    A named tuple rather than a dataclass: it is built on every verification, and a tuple
    costs half as much to make.
    """

    protected: bytes
    alg: int | str
    kid: bytes
    payload: bytes
    signature: bytes

    def to_be_signed(self) -> bytes:
        return to_be_signed(self.protected, self.payload)


def to_be_signed(protected: bytes, payload: bytes) -> bytes:
    """The Sig_structure for COSE_Sign1 with empty external AAD (RFC 9052 section 4.4)."""
    return _SIG_STRUCTURE_START + encode_bytes(protected) + b"\x40" + encode_bytes(payload)


def encode_protected(alg: int | str, kid: bytes) -> bytes:
    """``{1: alg, 4: kid}``, deterministically encoded."""
    encoded_alg = encode_int(alg) if type(alg) is int else encode_text(str(alg))
    return b"\xa2\x01" + encoded_alg + b"\x04" + encode_bytes(kid)


def encode_sign1(protected: bytes, payload: bytes, signature: bytes) -> bytes:
    """The untagged COSE_Sign1 array; the prefix tells a reader what it is (RFC 9052 section 2)."""
    return (
        b"\x84"
        + encode_bytes(protected)
        + b"\xa0"
        + encode_bytes(payload)
        + encode_bytes(signature)
    )


def decode_sign1(message: bytes) -> Sign1:
    """Parse an untagged COSE_Sign1 with exactly ``alg`` and ``kid`` protected and nothing else.

    Raises CoseError on anything else: tags, extra or missing headers, unprotected headers,
    a detached payload, a signature of the wrong length, or trailing bytes.
    """
    fixed = decode_fixed_layout(message)
    return fixed if fixed is not None else decode_general(message)


def decode_general(message: bytes) -> Sign1:
    """decode_sign1 for any input, by a full CBOR decode; also decides the error."""
    try:
        parts = decode_strict(message)
    except CborError as exc:
        raise CoseError(f"not valid CBOR for a code: {exc}") from None
    if type(parts) is not list or len(parts) != 4:
        raise CoseError("not an untagged COSE_Sign1 array of four items")
    protected, unprotected, payload, signature = parts
    if type(protected) is not bytes or type(payload) is not bytes or type(signature) is not bytes:
        raise CoseError("protected header, payload and signature must be byte strings")
    if type(unprotected) is not dict or unprotected:
        raise CoseError("the unprotected header must be an empty map")
    if len(signature) != SIGNATURE_LENGTH:
        raise CoseError(f"signature must be {SIGNATURE_LENGTH} bytes, got {len(signature)}")
    try:
        header = decode_strict(protected)
    except CborError as exc:
        raise CoseError(f"protected header is not valid CBOR for a code: {exc}") from None
    if type(header) is not dict or header.keys() != {HEADER_ALG, HEADER_KID}:
        raise CoseError("protected header must hold exactly alg (1) and kid (4)")
    alg, kid = header[HEADER_ALG], header[HEADER_KID]
    if type(alg) not in (int, str) or type(kid) is not bytes:
        # A text alg is legal COSE; the verifier refuses it as unsupported, not malformed.
        raise CoseError("alg must be an integer or text and kid a byte string")
    if (
        encode_protected(alg, kid) != protected
        or encode_sign1(protected, payload, signature) != message
    ):
        raise CoseError("not deterministically encoded (or trailing bytes)")
    return Sign1(protected=protected, alg=alg, kid=kid, payload=payload, signature=signature)


# Every code an issuer signs with a one-byte kid has this exact layout (113 bytes): the
# protected header ``a2 01 <alg> 04 41 <kid>``, a 36-byte payload and a 64-byte signature.
# An SM2 code is 4 bytes longer (117): its alg, -65537, takes five bytes, ``3a 00 01 00 00``.
# Slicing it costs a fraction of a CBOR decode; any other input takes the general path in
# decode_general, which also decides the error. tests/core/test_cose.py checks that both paths
# agree on every input the fixed one accepts.
_FIXED_LENGTH = 113
_PAYLOAD_LENGTH = 36
_SM2_ALG = b"\x3a\x00\x01\x00\x00"  # -65537: major type 1, argument 65536 in four bytes


def decode_fixed_layout(message: bytes) -> Sign1 | None:
    """decode_sign1 for the fixed 113-byte layout (117 for SM2) by slicing; None for any
    other input."""
    length = len(message)
    if length == _FIXED_LENGTH:
        alg_byte = message[4]
        if alg_byte <= 0x17:
            alg = alg_byte
        elif 0x20 <= alg_byte <= 0x37:
            alg = 0x1F - alg_byte  # major type 1: -1 - n
        else:
            return None
        extra = 0
    elif length == _FIXED_LENGTH + 4 and message[4:9] == _SM2_ALG:
        alg, extra = Algorithm.SM2.value, 4
    else:
        return None
    if (
        message[0:4] != (b"\x84\x46\xa2\x01" if not extra else b"\x84\x4a\xa2\x01")
        or message[5 + extra : 7 + extra] != b"\x04\x41"
        or message[8 + extra : 11 + extra] != b"\xa0\x58\x24"
        or message[47 + extra : 49 + extra] != b"\x58\x40"
    ):
        return None
    return Sign1(
        protected=message[2 : 8 + extra],
        alg=alg,
        kid=message[7 + extra : 8 + extra],
        payload=message[11 + extra : 47 + extra],
        signature=message[49 + extra : 113 + extra],
    )
