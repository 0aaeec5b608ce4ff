"""The code as text: a deployment prefix with the format version, then base45 (RFC 9285).

Base45 uses exactly the QR alphanumeric alphabet, so the whole code text, prefix included,
is encoded in the QR code's compact alphanumeric mode.
"""

from __future__ import annotations

import re

from idcode.errors import CodeFormatError

FORMAT_VERSION = 1
DEFAULT_DEPLOYMENT = "WH"
BASE45_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ $%*+-./:"
# A v1 code is about 175 characters; anything much longer is refused before decoding so
# a hostile scanner input cannot make a terminal do unbounded work.
MAX_CODE_LENGTH = 512
# Ends with a letter, so the version digits after it are unambiguous ("WH" + "11" is never
# "WH1" + "1").
_DEPLOYMENT_RE = re.compile(r"[A-Z](?:[A-Z0-9]{0,6}[A-Z])?")
_NOT_BASE45 = 0xFF
_DIGIT_OF_CHARACTER = bytes(
    BASE45_ALPHABET.index(chr(byte)) if chr(byte) in BASE45_ALPHABET else _NOT_BASE45
    for byte in range(256)
)


def prefix_for(deployment: str = DEFAULT_DEPLOYMENT, version: int = FORMAT_VERSION) -> str:
    """``WH`` and version 1 give ``WH1:``. A deployment is 1-8 upper-case letters or digits,
    starting and ending with a letter."""
    if not _DEPLOYMENT_RE.fullmatch(deployment):
        raise CodeFormatError(
            "deployment must be 1-8 upper-case letters or digits, starting and ending with a "
            f"letter, got {deployment!r}"
        )
    return f"{deployment}{version}:"


def encode_text(prefix: str, message: bytes) -> str:
    return prefix + encode_body(message)


def encode_body(data: bytes) -> str:
    """Base45-encode ``data`` (RFC 9285 section 4).

    Same result as the ``base45`` package (checked over every 16-bit value in
    tests/core/test_codetext.py) at a third of its cost, which matters on the issuance path: each
    pair of bytes goes into a 48-bit lane of one big integer, and the divisions by 2025 and
    45 are done for all lanes at once as multiplications by a 32-bit reciprocal and a shift,
    exact for every dividend below 2**16.
    """
    pairs, odd = divmod(len(data), 2)
    encoded = bytearray()
    if pairs:
        size = _LANE * pairs
        lanes = bytearray(size)
        lanes[_LANE - 2 :: _LANE] = data[0 : 2 * pairs : 2]
        lanes[_LANE - 1 :: _LANE] = data[1 : 2 * pairs : 2]
        values = int.from_bytes(lanes, "big")
        low = _lane_mask(pairs)
        high = ((values * _RECIPROCAL_2025) >> _SHIFT) & low
        rest = values - 2025 * high
        middle = ((rest * _RECIPROCAL_45) >> _SHIFT) & low
        encoded = bytearray(3 * pairs)
        encoded[0::3] = (rest - 45 * middle).to_bytes(size, "big")[_LANE - 1 :: _LANE]
        encoded[1::3] = middle.to_bytes(size, "big")[_LANE - 1 :: _LANE]
        encoded[2::3] = high.to_bytes(size, "big")[_LANE - 1 :: _LANE]
    if odd:
        middle_digit, low_digit = divmod(data[-1], 45)
        encoded += bytes((low_digit, middle_digit))
    return encoded.translate(_CHARACTER_OF_DIGIT).decode("ascii")


def decode_body(body: str) -> bytes:
    """Base45-decode the text after the prefix, strictly (RFC 9285 section 4.2).

    Only the 45 characters, no whitespace, no impossible lengths, no group above 65535 and
    no final pair above 255. The ``base45`` package decodes one group per Python loop turn
    (about 14 us for a code); this decoder does the same arithmetic on all groups at once
    with big-integer arithmetic (about 2 us), which keeps verification within its budget. It is
    checked against the package in tests/core/test_codetext.py.
    """
    try:
        digits = body.encode("ascii").translate(_DIGIT_OF_CHARACTER)
    except UnicodeEncodeError:
        raise CodeFormatError("characters outside the base45 alphabet") from None
    if _NOT_BASE45 in digits:
        raise CodeFormatError("characters outside the base45 alphabet")
    groups, rest = divmod(len(digits), 3)
    if rest == 1:
        raise CodeFormatError("invalid base45 length")
    full = 3 * groups
    decoded = bytearray()
    if groups:
        # Read all groups as one big integer, three bytes (digits c, d, e) per group, mask
        # each digit out of every group at once and sum c + 45 d + 2025 e: no carry crosses
        # a group because the largest group value, 91124, fits in its 24 bits.
        number = int.from_bytes(digits[:full], "big")
        low = _low_byte_mask(groups)
        values = (
            ((number >> 16) & low) + 45 * ((number >> 8) & low) + 2025 * (number & low)
        ).to_bytes(full, "big")
        if values[0::3].count(0) != groups:
            raise CodeFormatError("invalid base45: a group is above 65535")
        decoded = bytearray(2 * groups)
        decoded[0::2] = values[1::3]
        decoded[1::2] = values[2::3]
    if rest == 2:
        last = digits[full] + 45 * digits[full + 1]
        if last > 0xFF:
            raise CodeFormatError("invalid base45: the final pair is above 255")
        decoded.append(last)
    return bytes(decoded)


_MASK_GROUPS = MAX_CODE_LENGTH // 3 + 1
_LOW_BYTES = int.from_bytes(b"\x00\x00\xff" * _MASK_GROUPS, "big")


def _low_byte_mask(groups: int) -> int:
    """``00 00 ff`` repeated ``groups`` times, as an integer."""
    if groups <= _MASK_GROUPS:
        return _LOW_BYTES >> (24 * (_MASK_GROUPS - groups))
    return int.from_bytes(b"\x00\x00\xff" * groups, "big")


_LANE = 6  # bytes per 16-bit value while encoding: room for value x 32-bit reciprocal
_SHIFT = 32
_RECIPROCAL_2025 = -(-(1 << _SHIFT) // 2025)
_RECIPROCAL_45 = -(-(1 << _SHIFT) // 45)
_CHARACTER_OF_DIGIT = bytes(
    ord(BASE45_ALPHABET[digit]) if digit < 45 else 0 for digit in range(256)
)
_ENCODE_MASK_PAIRS = 128
_LOW_BYTE_OF_LANES = int.from_bytes((bytes(_LANE - 1) + b"\xff") * _ENCODE_MASK_PAIRS, "big")


def _lane_mask(pairs: int) -> int:
    """The low byte of each of ``pairs`` lanes set, as an integer."""
    if pairs <= _ENCODE_MASK_PAIRS:
        return _LOW_BYTE_OF_LANES >> (8 * _LANE * (_ENCODE_MASK_PAIRS - pairs))
    return int.from_bytes((bytes(_LANE - 1) + b"\xff") * pairs, "big")
