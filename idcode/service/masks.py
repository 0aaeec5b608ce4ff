"""Masks of personal data for operators' eyes: what of a name or an ID number a view shows.

The rule follows common practice in Chinese government systems (GB/T 35273-2020 leaves the
form to the controller): keep the first character of a name (usually the surname) and hide
the rest; keep the region and the last four of an ID number. docs/data.md states it. A mask
never shows all of a value, and never more than the rule allows, whatever the value is.
"""

from __future__ import annotations

import unicodedata

MASK = "*"
_ZWJ = "\u200d"


def _joins_previous(character: str) -> bool:
    """Whether ``character`` belongs to the character before it as a reader sees it: a
    combining mark (accents, variation selectors), a Hangul vowel or final jamo, or what a
    zero-width joiner binds."""
    return unicodedata.category(character).startswith("M") or "\u1160" <= character <= "\u11ff"


def characters(text: str) -> list[str]:
    """``text`` split into the characters a reader sees (approximately Unicode grapheme
    clusters: a base code point with its combining marks and zero-width-joined parts). A CJK
    Extension B character is one code point in Python, so one character here too."""
    clusters: list[str] = []
    joining = False
    for code_point in text:
        if clusters and (joining or code_point == _ZWJ or _joins_previous(code_point)):
            clusters[-1] += code_point
        else:
            clusters.append(code_point)
        joining = code_point == _ZWJ
    return clusters


def mask_name(name: str) -> str:
    """A name as an operator may see it: the first character, then one ``*`` for each further
    character (``张三`` -> ``张*``, ``欧阳娜娜`` -> ``欧***``, ``买买提·艾力`` -> ``买*****``).

    A name of one character shows only ``*``: showing its first character would show all of
    it. Separators are masked like letters, so a middle dot or a space does not show the
    name's structure. Characters are as a reader sees them (a letter with its accents), so
    ``é`` written as ``e`` plus a combining accent is one character and shows nothing.
    """
    clusters = characters(name)
    if len(clusters) < 2:
        return MASK
    return clusters[0] + MASK * (len(clusters) - 1)


ID_NUMBER_LENGTH = 18
ID_NUMBER_SHOWN = 4  # at each end: the region's first four digits; sequence and check digit


def mask_id_number(id_number: str) -> str:
    """An ID number as an operator may see it: its first and last four characters with ten
    ``*`` between (``4201**********1234``). Anything but an 18-character ASCII ID number (a
    damaged or foreign value) is shown as 18 ``*``, so the mask never shows more than eight
    characters of an ID number, nor any of a short value."""
    if len(id_number) != ID_NUMBER_LENGTH or not id_number.isascii():
        return MASK * ID_NUMBER_LENGTH
    hidden = ID_NUMBER_LENGTH - 2 * ID_NUMBER_SHOWN
    return id_number[:ID_NUMBER_SHOWN] + MASK * hidden + id_number[-ID_NUMBER_SHOWN:]
