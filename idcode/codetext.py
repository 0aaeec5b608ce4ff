"""The code as text: a deployment prefix with the format version, then base45 (RFC 9285).

Base45 uses exactly the QR alphanumeric alphabet, so the whole code text, prefix included,
is encoded in the QR code's compact alphanumeric mode.
"""

from __future__ import annotations

import re

import base45

from idcode.errors import CodeFormatError

FORMAT_VERSION = 1
DEFAULT_DEPLOYMENT = "WH"
BASE45_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ $%*+-./:"
# A v1 code is about 175 characters; anything much longer is refused before decoding so
# a hostile scanner input cannot make a terminal do unbounded work.
MAX_CODE_LENGTH = 512
_DEPLOYMENT_RE = re.compile(r"[A-Z][A-Z0-9]{0,7}")
_BASE45_RE = re.compile(r"[0-9A-Z $%*+\-./:]*")


def prefix_for(deployment: str = DEFAULT_DEPLOYMENT, version: int = FORMAT_VERSION) -> str:
    """``WH`` and version 1 give ``WH1:``. A deployment is 1-8 upper-case letters or digits."""
    if not _DEPLOYMENT_RE.fullmatch(deployment):
        raise CodeFormatError(
            f"deployment must be 1-8 upper-case letters or digits starting with a letter, "
            f"got {deployment!r}"
        )
    return f"{deployment}{version}:"


def encode_text(prefix: str, message: bytes) -> str:
    encoded: bytes = base45.b45encode(message)
    return prefix + encoded.decode("ascii")


def decode_body(body: str) -> bytes:
    """Base45-decode the text after the prefix, strictly: only the 45 characters, no padding."""
    if not _BASE45_RE.fullmatch(body):
        raise CodeFormatError("characters outside the base45 alphabet")
    try:
        return bytes(base45.b45decode(body))
    except ValueError:
        raise CodeFormatError("invalid base45 (length or a group out of range)") from None
