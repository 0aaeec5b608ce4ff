"""The CWT claims an issuer-signed code carries, and their compact CBOR encoding.

The claims map is deliberately tiny so that a signed code fits QR version 7-M; see
docs/code-format.md for the byte budget. It never holds a name, ID number, birth date or
phone number: only a random card pseudonym and coarse attributes.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum, IntFlag
from typing import Any

import cbor2

from idcode.errors import ClaimsError

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
        if not 0 <= int(self.programmes) < (1 << _PROGRAMME_BITS):
            raise ClaimsError(f"programme flags must fit in {_PROGRAMME_BITS} bits")

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
        try:
            residency = Residency(attributes >> _RESIDENCY_SHIFT)
            age_band = AgeBand((attributes >> _AGE_BAND_SHIFT) & 0xF)
        except ValueError as exc:
            raise ClaimsError(f"card attributes out of range: {exc}") from None
        return cls(
            pseudonym=raw[:PSEUDONYM_LENGTH],
            status_index=int.from_bytes(raw[6:9], "big"),
            residency=residency,
            age_band=age_band,
            programmes=Programme(attributes & ((1 << _PROGRAMME_BITS) - 1)),
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
        for name in ("issued_at", "expires_at"):
            value = getattr(self, name)
            if type(value) is not int or not 0 <= value <= MAX_NUMERIC_DATE:
                raise ClaimsError(f"{name} must be an integer in 0..{MAX_NUMERIC_DATE}")
        if self.issued_at > self.expires_at:
            raise ClaimsError("issued_at is after expires_at")
        if type(self.code_id) is not bytes or len(self.code_id) != CODE_ID_LENGTH:
            raise ClaimsError(f"code id must be {CODE_ID_LENGTH} bytes")

    def to_cbor(self) -> bytes:
        """The CWT claims set, deterministically encoded (RFC 8949 section 4.2.1 key order)."""
        claims = {
            CLAIM_EXP: self.expires_at,
            CLAIM_IAT: self.issued_at,
            CLAIM_CTI: self.code_id,
            CLAIM_CARD: self.card.to_bytes(),
        }
        return bytes(cbor2.dumps(claims, canonical=True))

    @classmethod
    def from_cbor(cls, payload: bytes) -> CodeClaims:
        """Decode a claims set; anything but exactly the four idcode claims is refused."""
        try:
            claims = cbor2.loads(payload)
        except Exception as exc:  # cbor2 raises several unrelated types on bad input
            raise ClaimsError(f"claims are not valid CBOR: {type(exc).__name__}") from None
        if type(claims) is not dict:
            raise ClaimsError("claims are not a CBOR map")
        if claims.keys() != {CLAIM_EXP, CLAIM_IAT, CLAIM_CTI, CLAIM_CARD}:
            raise ClaimsError(
                f"claims must be exactly exp, iat, cti and card, got {sorted(map(repr, claims))}"
            )
        if cbor2.dumps(claims, canonical=True) != payload:
            # One code, one encoding: no indefinite lengths, no overlong integers, no
            # trailing bytes, so the bytes a terminal logs are the bytes the issuer signed.
            raise ClaimsError("claims are not deterministically encoded")
        card = claims[CLAIM_CARD]
        if type(card) is not bytes:
            raise ClaimsError("card claim must be a byte string")
        return cls(
            issued_at=claims[CLAIM_IAT],
            expires_at=claims[CLAIM_EXP],
            code_id=claims[CLAIM_CTI],
            card=Card.from_bytes(card),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "iat": self.issued_at,
            "exp": self.expires_at,
            "cti": self.code_id.hex(),
            "card": self.card.to_json(),
        }
