"""Deterministic CBOR (RFC 8949 section 4.2.1) for the few item kinds a code is made of.

Encoding a code's fixed structure by hand is both what the format prescribes (one byte form
per code) and what keeps the verifier within its budget: comparing received bytes against
this encoding costs a fraction of a generic re-encode. ``decode_strict`` reads only the
subset codes are made of. The tests check both against cbor2.
"""

from __future__ import annotations

from typing import Any

from idcode.errors import CborError as CborError


def head(major: int, value: int) -> bytes:
    """The shortest head for major type ``major`` with argument ``value`` (0 <= value < 2**64)."""
    if value < 24:
        return bytes((major << 5 | value,))
    if value < 0x100:
        return bytes((major << 5 | 24, value))
    if value < 0x10000:
        return bytes((major << 5 | 25,)) + value.to_bytes(2, "big")
    if value < 0x1_0000_0000:
        return bytes((major << 5 | 26,)) + value.to_bytes(4, "big")
    return bytes((major << 5 | 27,)) + value.to_bytes(8, "big")


def encode_int(value: int) -> bytes:
    return head(0, value) if value >= 0 else head(1, -1 - value)


def encode_bytes(value: bytes) -> bytes:
    return head(2, len(value)) + value


def encode_text(value: str) -> bytes:
    encoded = value.encode("utf-8")
    return head(3, len(encoded)) + encoded


MAX_DEPTH = 4  # a code nests at most two levels (array, then a header or claims map)


def decode_strict(data: bytes) -> Any:
    """Decode one item of the CBOR subset codes use, with nothing after it.

    Only unsigned and negative integers up to 64 bits, byte strings, text strings, arrays
    and maps (major types 0-5), all of definite length in shortest form, nested at most
    MAX_DEPTH deep. No tags, floats or simple values: codes never contain them, and refusing
    them before the signature is checked keeps a generic decoder's tag handlers (regular
    expressions, MIME, big decimals, shared references) away from unauthenticated input.
    """
    item, end = _item(data, 0, 0)
    if end != len(data):
        raise CborError("bytes after the CBOR item")
    return item


def _item(data: bytes, offset: int, depth: int) -> tuple[Any, int]:
    if depth > MAX_DEPTH:
        raise CborError("nested too deeply")
    if offset >= len(data):
        raise CborError("truncated")
    initial = data[offset]
    major, info = initial >> 5, initial & 0x1F
    offset += 1
    if major > 5:
        raise CborError("tags, floats and simple values are not used in codes")
    if info < 24:
        argument = info
    elif info <= 27:
        size = 1 << (info - 24)
        if offset + size > len(data):
            raise CborError("truncated")
        argument = int.from_bytes(data[offset : offset + size], "big")
        offset += size
        if argument < (24 if size == 1 else 1 << (4 * size)):
            raise CborError("integer or length not in shortest form")
    else:
        raise CborError("indefinite lengths and reserved values are not used in codes")
    if major == 0:
        return argument, offset
    if major == 1:
        return -1 - argument, offset
    if major in (2, 3):
        end = offset + argument
        if end > len(data):
            raise CborError("truncated")
        chunk = data[offset:end]
        if major == 2:
            return chunk, end
        try:
            return chunk.decode("utf-8"), end
        except UnicodeDecodeError:
            raise CborError("text is not UTF-8") from None
    if argument > len(data) - offset:
        raise CborError("truncated")  # every item takes at least one byte
    if major == 4:
        items = []
        for _ in range(argument):
            item, offset = _item(data, offset, depth + 1)
            items.append(item)
        return items, offset
    mapping: dict[Any, Any] = {}
    for _ in range(argument):
        key, offset = _item(data, offset, depth + 1)
        if not isinstance(key, int | str | bytes):
            raise CborError("map keys must be integers or strings")
        if key in mapping:
            raise CborError("duplicate map key")
        mapping[key], offset = _item(data, offset, depth + 1)
    return mapping, offset
