"""Text the database can store.

PostgreSQL refuses a NUL character in ``text``/``varchar`` (and ``\\u0000`` in ``jsonb``, or
as soon as a ``json`` value is read as text), and no UTF-8 encoder takes an unpaired
surrogate, which Python's JSON decoder yields for ``"\\ud800"``. Text from outside (request
bodies, ID token claims, import files) is checked here before it reaches a row: it is
refused with a reason, never silently changed. The reasons never repeat the text.
"""

from __future__ import annotations

import re

from idcode.errors import UnstorableText as UnstorableText

MAX_DEPTH = 64  # deeper than any JSON document idcode accepts (scene data: 32)

_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
# Control characters (C0, DEL, C1) and surrogates: never part of a name or an identifier.
_CONTROL_OR_SURROGATE = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")


def _describe(character: str) -> str:
    if character == "\x00":
        return "a NUL character (U+0000)"
    if "\ud800" <= character <= "\udfff":
        return f"an unpaired surrogate (U+{ord(character):04X})"
    return f"a control character (U+{ord(character):04X})"


def unstorable_reason(value: object) -> str | None:
    """Why ``value`` (text, or a JSON document: keys and values, nested) cannot be stored,
    or None when it can."""
    return _first_match(value, _UNSTORABLE, 0)


def control_reason(value: str) -> str | None:
    """Why ``value`` is no name or identifier: a control character, NUL or an unpaired
    surrogate (None when it has none)."""
    found = _CONTROL_OR_SURROGATE.search(value)
    return f"contains {_describe(found.group())}" if found else None


def check_storable(value: object, what: str) -> None:
    """Raise UnstorableText naming ``what`` when ``value`` cannot be stored."""
    reason = unstorable_reason(value)
    if reason is not None:
        raise UnstorableText(f"{what} {reason}, which cannot be stored")


def _first_match(value: object, pattern: re.Pattern[str], depth: int) -> str | None:
    if isinstance(value, str):
        found = pattern.search(value)
        return f"contains {_describe(found.group())}" if found else None
    if depth > MAX_DEPTH:
        return "nests too deeply"
    if isinstance(value, dict):
        for key, item in value.items():
            reason = _first_match(key, pattern, depth + 1)
            if reason is not None:
                return f"has a key that {reason}"
            reason = _first_match(item, pattern, depth + 1)
            if reason is not None:
                return reason
    elif isinstance(value, list | tuple):
        for item in value:
            reason = _first_match(item, pattern, depth + 1)
            if reason is not None:
                return reason
    return None


_SURROGATE = re.compile("[\ud800-\udfff]")


def surrogate_reason(value: object) -> str | None:
    """Why ``value`` (text or a JSON document) is not valid Unicode text: an unpaired
    surrogate, which ``json.loads`` makes of ``"\\ud800"`` and I-JSON (RFC 7493) forbids."""
    return _first_match(value, _SURROGATE, 0)


def printable(text: str) -> str:
    """``text`` as is, or with its control characters and unpaired surrogates written as
    escapes (``\\x00``, ``\\ud800``) when it has any: for echoing a name the caller chose (a
    JSON member, an account name) where the raw text would break the response or the row."""
    if _CONTROL_OR_SURROGATE.search(text) is None:
        return text
    return text.encode("unicode_escape").decode("ascii")
