"""Strict base64url (RFC 4648 section 5, unpadded, as JOSE and the status list use it).

Python's decoders are lenient: ``base64.urlsafe_b64decode`` silently drops characters
outside the alphabet, accepts ``+`` and ``/`` beside ``-`` and ``_``, padding anywhere, and
ignores set bits past the last byte, so many texts decode to the same bytes. Signed trust
data is read with this module instead: one text for each byte string, anything else refused.
"""

from __future__ import annotations

import base64
import binascii
import re

from idcode.errors import Base64UrlError as Base64UrlError

_ALPHABET = re.compile(r"[A-Za-z0-9_-]*")


def encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def decode(text: object) -> bytes:
    """The bytes of canonical unpadded base64url ``text``: only ``A-Z a-z 0-9 - _``, no
    padding, no whitespace, and unused bits of the last character zero."""
    if not isinstance(text, str):
        raise Base64UrlError("expected base64url text")
    if not _ALPHABET.fullmatch(text):
        raise Base64UrlError("base64url allows only A-Z, a-z, 0-9, - and _ (no padding)")
    if len(text) % 4 == 1:
        raise Base64UrlError("base64url text cannot have a length of 4n + 1")
    try:
        data = base64.b64decode(
            text.translate(_TO_STANDARD) + "=" * (-len(text) % 4), validate=True
        )
    except binascii.Error:  # unreachable after the checks above; kept to fail closed
        raise Base64UrlError("not base64url") from None
    if encode(data) != text:
        raise Base64UrlError("base64url text is not canonical (unused bits are set)")
    return data


_TO_STANDARD = str.maketrans("-_", "+/")
