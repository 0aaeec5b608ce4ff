"""National ID numbers (GB 11643-1999): validation and the birth date they encode.

Errors say what is wrong without repeating the number, so they are safe to log and return.
"""

from __future__ import annotations

from datetime import date

from idcode.errors import InvalidIdNumber as InvalidIdNumber

_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_CHECK_CHARACTERS = "10X98765432"  # indexed by the weighted sum mod 11
# First two digits: the province-level division (GB/T 2260); 8x are Hong Kong, Macao, Taiwan.
_PROVINCES = frozenset(
    [
        "11",
        "12",
        "13",
        "14",
        "15",
        "21",
        "22",
        "23",
        "31",
        "32",
        "33",
        "34",
        "35",
        "36",
        "37",
        "41",
        "42",
        "43",
        "44",
        "45",
        "46",
        "50",
        "51",
        "52",
        "53",
        "54",
        "61",
        "62",
        "63",
        "64",
        "65",
        "71",
        "81",
        "82",
        "83",
    ]
)


def check_digit(first_17: str) -> str:
    """The GB 11643 check character (0-9 or X) for the first 17 digits."""
    return _CHECK_CHARACTERS[sum(int(d) * w for d, w in zip(first_17, _WEIGHTS, strict=True)) % 11]


def normalise_id_number(text: str, today: date | None = None) -> str:
    """The ID number in canonical form (upper-case X), or InvalidIdNumber saying why."""
    number = text.strip().upper()
    if len(number) != 18:
        raise InvalidIdNumber(f"an ID number has 18 characters, this has {len(number)}")
    if not number[:17].isascii() or not number[:17].isdigit():
        raise InvalidIdNumber("the first 17 characters of an ID number must be digits")
    if number[17] not in "0123456789X":
        raise InvalidIdNumber("the last character of an ID number must be a digit or X")
    if number[:2] not in _PROVINCES:
        raise InvalidIdNumber("the ID number's region code is not a known province")
    birth = _birth_date(number)
    if birth is None or birth > (today or date.today()) or birth.year < 1900:
        raise InvalidIdNumber("the ID number's birth date is not a valid past date")
    if check_digit(number[:17]) != number[17]:
        raise InvalidIdNumber("the ID number's check digit does not match (GB 11643)")
    return number


def birth_date(id_number: str) -> date:
    """The birth date encoded in a valid ID number (digits 7-14)."""
    birth = _birth_date(id_number)
    if birth is None:
        raise InvalidIdNumber("the ID number's birth date is not a valid date")
    return birth


def sex(id_number: str) -> str:
    """``female`` or ``male``, as digit 17 of a valid ID number states it (odd: male)."""
    return "male" if int(id_number[16]) % 2 else "female"


def _birth_date(number: str) -> date | None:
    try:
        return date(int(number[6:10]), int(number[10:12]), int(number[12:14]))
    except ValueError:
        return None
