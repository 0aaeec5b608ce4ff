"""The CWT claims an issuer-signed code carries, and their compact CBOR encoding.

The claims map is deliberately tiny so that a signed code fits QR version 7-M; see
docs/code-format.md for the byte budget. It never holds a name, ID number, birth date or
phone number: only a random card pseudonym and coarse attributes.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum, IntFlag
from typing import Any

from idcode.cbor import decode_strict, encode_bytes, encode_int
from idcode.errors import CborError, ClaimsError

# Registered CWT claim keys (RFC 8392 section 4).
CLAIM_EXP = 4
CLAIM_IAT = 6
CLAIM_CTI = 7
# The idcode card claim. Not IANA-registered: the code's application context is fixed by
# its prefix, and a private-use key (< -65536) would cost 4 bytes the QR budget lacks.
CLAIM_CARD = -1

CODE_ID_LENGTH = 8  # bytes: a 64-bit random code id (cti) for replay detection
PSEUDONYM_LENGTH = 6  # bytes: a random card pseudonym, unique per deployment
STATUS_INDEX_BITS = 24
MAX_STATUS_INDEX = (1 << STATUS_INDEX_BITS) - 1
CARD_CLAIM_LENGTH = PSEUDONYM_LENGTH + 3 + 2
MAX_NUMERIC_DATE = (1 << 32) - 1  # codes are uint32 seconds; 2106 is far enough
_FIXED_PAYLOAD_LENGTH = 36


class Residency(IntEnum):
    """The card holder's residency status, as far as scenes need it."""

    UNKNOWN = 0
    REGISTERED = 1  # registered permanent resident (hukou in the city)
    PERMIT = 2  # holder of the city's residence permit
    NON_RESIDENT = 3


class AgeBand(IntEnum):
    """Coarse age band; the birth date itself is never in a code."""

    UNKNOWN = 0
    UNDER_6 = 1
    AGE_6_17 = 2
    AGE_18_59 = 3
    AGE_60_64 = 4
    AGE_65_69 = 5
    AGE_70_79 = 6
    AGE_80_PLUS = 7


class Programme(IntFlag):
    """Programmes the card holder is enrolled in. Bits 6-9 are reserved and kept as they come."""

    NONE = 0
    HOME_CARE = 1 << 0  # home elderly-care services
    MEAL_SUBSIDY = 1 << 1  # elderly-care canteen meal subsidy
    DISABILITY = 1 << 2
    LOW_INCOME = 1 << 3  # minimum living allowance
    VETERAN = 1 << 4
    STUDENT = 1 << 5


_PROGRAMME_BITS = 10
_AGE_BAND_SHIFT = _PROGRAMME_BITS
_RESIDENCY_SHIFT = _PROGRAMME_BITS + 4
_NAMED_PROGRAMMES = [p for p in Programme if p.value]
# Lookup tables: indexing a tuple is several times cheaper than calling an enum class, and
# decoding attributes is on every verification's path.
_RESIDENCIES = tuple(Residency)
_AGE_BANDS = tuple(AgeBand)
_PROGRAMME_SETS = tuple(Programme(bits) for bits in range(1 << _PROGRAMME_BITS))
ALL_PROGRAMMES = Programme(sum(_NAMED_PROGRAMMES))


def programme_names(programmes: Programme) -> list[str]:
    """Lower-case names of the named programme flags that are set, in bit order."""
    return [p.name.lower() for p in _NAMED_PROGRAMMES if p in programmes and p.name]


@dataclass(frozen=True, slots=True)
class Card:
    """What a code says about the card: its pseudonym, status-list slot and coarse attributes."""

    pseudonym: bytes
    status_index: int
    residency: Residency = Residency.UNKNOWN
    age_band: AgeBand = AgeBand.UNKNOWN
    programmes: Programme = Programme.NONE

    def __post_init__(self) -> None:
        if type(self.pseudonym) is not bytes or len(self.pseudonym) != PSEUDONYM_LENGTH:
            raise ClaimsError(f"pseudonym must be {PSEUDONYM_LENGTH} bytes")
        if type(self.status_index) is not int or not 0 <= self.status_index <= MAX_STATUS_INDEX:
            raise ClaimsError(f"status index must be an integer in 0..{MAX_STATUS_INDEX}")
        if type(self.residency) is not Residency or type(self.age_band) is not AgeBand:
            raise ClaimsError("residency and age band must be Residency and AgeBand members")
        if type(self.programmes) is not Programme or self.programmes >= (1 << _PROGRAMME_BITS):
            raise ClaimsError(f"programme flags must be a Programme within {_PROGRAMME_BITS} bits")

    def to_bytes(self) -> bytes:
        attributes = (
            (int(self.residency) << _RESIDENCY_SHIFT)
            | (int(self.age_band) << _AGE_BAND_SHIFT)
            | int(self.programmes)
        )
        return self.pseudonym + self.status_index.to_bytes(3, "big") + attributes.to_bytes(2, "big")

    @classmethod
    def from_bytes(cls, raw: bytes) -> Card:
        if len(raw) != CARD_CLAIM_LENGTH:
            raise ClaimsError(f"card claim must be {CARD_CLAIM_LENGTH} bytes, got {len(raw)}")
        attributes = int.from_bytes(raw[9:11], "big")
        age_band = (attributes >> _AGE_BAND_SHIFT) & 0xF
        if age_band >= len(_AGE_BANDS):
            raise ClaimsError(f"card attributes out of range: age band {age_band} is reserved")
        return cls(
            pseudonym=raw[:PSEUDONYM_LENGTH],
            status_index=int.from_bytes(raw[6:9], "big"),
            residency=_RESIDENCIES[attributes >> _RESIDENCY_SHIFT],
            age_band=_AGE_BANDS[age_band],
            programmes=_PROGRAMME_SETS[attributes & ((1 << _PROGRAMME_BITS) - 1)],
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "pseudonym": self.pseudonym.hex(),
            "status_index": self.status_index,
            "residency": self.residency.name.lower(),
            "age_band": self.age_band.name.lower(),
            "programmes": programme_names(self.programmes),
            "programme_bits": int(self.programmes),
        }


@dataclass(frozen=True, slots=True)
class CodeClaims:
    """The claims set of one issuer-signed code."""

    issued_at: int
    expires_at: int
    code_id: bytes
    card: Card

    def __post_init__(self) -> None:
        issued_at, expires_at = self.issued_at, self.expires_at
        if type(issued_at) is not int or not 0 <= issued_at <= MAX_NUMERIC_DATE:
            raise ClaimsError(f"issued_at must be an integer in 0..{MAX_NUMERIC_DATE}")
        if type(expires_at) is not int or not 0 <= expires_at <= MAX_NUMERIC_DATE:
            raise ClaimsError(f"expires_at must be an integer in 0..{MAX_NUMERIC_DATE}")
        if issued_at > expires_at:
            raise ClaimsError("issued_at is after expires_at")
        if type(self.code_id) is not bytes or len(self.code_id) != CODE_ID_LENGTH:
            raise ClaimsError(f"code id must be {CODE_ID_LENGTH} bytes")

    def to_cbor(self) -> bytes:
        """The CWT claims set, deterministically encoded (RFC 8949 section 4.2.1 key order)."""
        # map(4) with keys 4, 6, 7, -1: already in bytewise order of their encodings.
        return (
            b"\xa4\x04"
            + encode_int(self.expires_at)
            + b"\x06"
            + encode_int(self.issued_at)
            + b"\x07"
            + encode_bytes(self.code_id)
            + b"\x20"
            + encode_bytes(self.card.to_bytes())
        )

    @classmethod
    def from_cbor(cls, payload: bytes) -> CodeClaims:
        """Decode a claims set; anything but exactly the four idcode claims is refused."""
        if (
            len(payload) == _FIXED_PAYLOAD_LENGTH
            and payload[0:3] == b"\xa4\x04\x1a"
            and payload[7:9] == b"\x06\x1a"
            and payload[13:15] == b"\x07\x48"
            and payload[23:25] == b"\x20\x4b"
        ):
            # The layout of every claims set with 32-bit times (all dates after 1970-01-01
            # 18:12 UTC): slice it instead of decoding. Shorter encodings of such times would
            # be overlong, so they must fail the determinism check like any other.
            expires_at = int.from_bytes(payload[3:7], "big")
            issued_at = int.from_bytes(payload[9:13], "big")
            if expires_at > 0xFFFF and issued_at > 0xFFFF:
                return cls(issued_at, expires_at, payload[15:23], Card.from_bytes(payload[25:36]))
            raise ClaimsError("claims are not deterministically encoded")
        try:
            claims = decode_strict(payload)
        except CborError as exc:
            raise ClaimsError(f"claims are not valid CBOR for a code: {exc}") from None
        if type(claims) is not dict:
            raise ClaimsError("claims are not a CBOR map")
        if claims.keys() != {CLAIM_EXP, CLAIM_IAT, CLAIM_CTI, CLAIM_CARD}:
            raise ClaimsError(
                f"claims must be exactly exp, iat, cti and card, got {sorted(map(repr, claims))}"
            )
        card = claims[CLAIM_CARD]
        if type(card) is not bytes:
            raise ClaimsError("card claim must be a byte string")
        decoded = cls(
            issued_at=claims[CLAIM_IAT],
            expires_at=claims[CLAIM_EXP],
            code_id=claims[CLAIM_CTI],
            card=Card.from_bytes(card),
        )
        if decoded.to_cbor() != payload:
            # One code, one encoding: no indefinite lengths, no overlong integers, no
            # trailing bytes, so the bytes a terminal logs are the bytes the issuer signed.
            raise ClaimsError("claims are not deterministically encoded")
        return decoded

    def to_json(self) -> dict[str, Any]:
        return {
            "iat": self.issued_at,
            "exp": self.expires_at,
            "cti": self.code_id.hex(),
            "card": self.card.to_json(),
        }
