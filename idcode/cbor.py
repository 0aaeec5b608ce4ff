"""Deterministic CBOR (RFC 8949 section 4.2.1) for the few item kinds a code is made of.

Encoding a code's fixed structure by hand is both what the format prescribes (one byte form
per code) and what keeps the verifier within its budget: comparing received bytes against
this encoding costs a fraction of a generic re-encode. cbor2 still does all decoding, and the
tests check these functions against cbor2's canonical encoder.
"""

from __future__ import annotations


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
