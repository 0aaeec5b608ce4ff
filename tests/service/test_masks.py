"""Masks of personal data in operators' views (outside review, finding 6): a one-character
name was shown whole (``李`` as ``李``), and a short ID number too. The rule, docs/data.md:
the first character of a name and one ``*`` per further character, only ``*`` for a
one-character name; the first and last four characters of an 18-character ID number.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from fastapi.testclient import TestClient
from hypothesis import given
from hypothesis import strategies as st

from idcode.service.masks import MASK, characters, mask_id_number, mask_name
from tests.services import Tokens

Enrol = Callable[..., tuple[str, str]]

COMBINING_ACUTE = "\u0301"
# Letters of many scripts, CJK Extension B (astral), combining marks, the middle dot of
# minority names, spaces, zero-width joiners, controls, unpaired surrogates: any text at all.
NAMES = st.text(min_size=1, max_size=40)
# Letters that start a character (not the Hangul vowel and final jamo, which join).
BASE_LETTERS = st.characters(categories=["Lu", "Ll", "Lo"]).filter(
    lambda c: not "\u1160" <= c <= "\u11ff"
)


@pytest.mark.parametrize(
    ("name", "masked"),
    [
        ("李", "*"),
        ("李四", "李*"),
        ("张秀英", "张**"),
        ("欧阳娜娜", "欧***"),  # a compound surname cannot be told apart: less is shown
        ("买买提·艾力", "买*****"),  # the middle dot is masked too: it shows the name's form
        ("John Smith", "J*********"),
        ("𠀀", "*"),  # CJK Extension B: one character, astral
        ("𠀀𠀁", "𠀀*"),
        ("e" + COMBINING_ACUTE, "*"),  # é written as e plus an accent: one character
        ("e" + COMBINING_ACUTE + "mile", "e" + COMBINING_ACUTE + "****"),
        ("\u1112\u1161\u11ab", "*"),  # 한 as three jamo: one character
        ("👩\u200d👩\u200d👧", "*"),  # joined by zero-width joiners: one character
        ("", "*"),
    ],
)
def test_a_name_shows_its_first_character_only_and_a_one_character_name_nothing(
    name: str, masked: str
) -> None:
    assert mask_name(name) == masked


@given(NAMES)
def test_a_masked_name_shows_at_most_its_first_character_and_never_a_whole_name(
    name: str,
) -> None:
    masked = mask_name(name)
    first, *rest = characters(name)
    shown = masked.rstrip(MASK) if rest else ""
    assert masked == (first + MASK * len(rest) if rest else MASK)
    assert name.startswith(shown) and len(characters(shown)) <= 1
    if not rest:
        assert masked == MASK  # a one-character name shows none of itself


@given(NAMES, st.lists(BASE_LETTERS, min_size=0, max_size=30))
def test_names_alike_in_their_first_character_and_length_mask_alike(
    name: str, other_letters: list[str]
) -> None:
    """Whatever follows the first character, the mask depends only on how many follow."""
    first, *rest = characters(name)
    if len(other_letters) != len(rest):
        other_letters = (other_letters + ["字"] * len(rest))[: len(rest)]
    other = first + "".join(other_letters)
    assert len(characters(other)) == len(characters(name))
    assert mask_name(other) == mask_name(name)


def test_an_id_number_shows_its_first_and_last_four_characters() -> None:
    assert mask_id_number("42010519880615003X") == "4201**********003X"


@pytest.mark.parametrize(
    "value",
    [
        "",
        "1",
        "1234567",
        "12345678",
        "123456789012345",
        "4201051988061500",
        # 18 full-width digits: 18 characters, but not an ID number as enrolment stores it.
        "42010519880615003X".translate({c: c + 0xFEE0 for c in range(0x30, 0x5B)}),
    ],
    ids=["empty", "one", "seven", "eight", "15-digit", "16", "full-width"],
)
def test_an_id_number_of_another_form_is_masked_whole(value: str) -> None:
    assert mask_id_number(value) == MASK * 18


@given(st.text(max_size=40))
def test_a_masked_id_number_never_shows_more_than_eight_characters_of_it(value: str) -> None:
    masked = mask_id_number(value)
    assert len(masked) == 18 and masked[4:14] == MASK * 10
    if masked != MASK * 18:
        assert len(value) == 18 and masked[:4] + masked[14:] == value[:4] + value[14:]


def test_the_operators_view_of_a_one_character_name_shows_only_a_mask(
    client: TestClient, tokens: Tokens, enrol: Enrol
) -> None:
    card_id, id_number = enrol(name="李")
    response = client.get(f"/v1/cards/{card_id}", headers=tokens.operator())
    assert response.status_code == 200, response.text
    card = response.json()
    assert card["name_masked"] == "*"
    assert "李" not in response.text
    assert card["id_number_masked"] == id_number[:4] + MASK * 10 + id_number[-4:]
