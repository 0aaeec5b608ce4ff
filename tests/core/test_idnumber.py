"""National ID numbers (GB 11643): which are accepted, and why the others are refused."""

from __future__ import annotations

from datetime import date

import pytest
from hypothesis import given
from hypothesis import strategies as st

from idcode.errors import InvalidIdNumber
from idcode.idnumber import birth_date, check_digit, normalise_id_number
from idcode.testing import random_id_number

TODAY = date(2026, 12, 1)

# Worked by hand with the weights 7 9 10 5 8 4 2 1 6 3 7 9 10 5 8 4 2 and "10X98765432":
#   1101051949123100-2: 7+9+0+5+0+20+2+9+24+27+7+18+30+5+0+0+4 = 167; 167 % 11 = 2 -> X
#   4201021950031200-2: 28+18+0+5+0+8+2+9+30+0+0+27+10+10+0+0+4 = 151; 151 % 11 = 8 -> 4
#   3101151988061500-3: 21+9+0+5+8+20+2+9+48+24+0+54+10+25+0+0+6 = 241; 241 % 11 = 10 -> 2
#   4405241880010100-1: 28+36+0+25+16+16+2+8+48+0+0+9+0+5+0+0+2 = 195; 195 % 11 = 8 -> 4
#   6501022000022900-7: 42+45+0+5+0+8+4+0+0+0+0+18+20+45+0+0+14 = 201; 201 % 11 = 3 -> 9
HAND_COMPUTED = {
    "11010519491231002X": date(1949, 12, 31),  # the example printed in GB 11643-1999
    "420102195003120024": date(1950, 3, 12),
    "310115198806150032": date(1988, 6, 15),
    "650102200002290079": date(2000, 2, 29),  # a leap day
}

# Characters str.isdigit() accepts although they are not ASCII digits.
FULL_WIDTH_17 = "".join(chr(0xFF10 + int(d)) for d in "11010519491231002")
ARABIC_INDIC_17 = "".join(chr(0x0660 + int(d)) for d in "11010519491231002")


def reference_check_character(first_17: str) -> str:
    """ISO 7064 MOD 11-2 written out independently: weight 2**(17-i) mod 11."""
    total = sum(int(digit) * pow(2, 17 - i, 11) for i, digit in enumerate(first_17))
    value = (12 - total % 11) % 11
    return "X" if value == 10 else str(value)


def refusal(text: str, today: date = TODAY) -> str:
    with pytest.raises(InvalidIdNumber) as caught:
        normalise_id_number(text, today)
    message = str(caught.value)
    if text.strip():
        assert text.strip() not in message
        assert text.strip().upper() not in message
    return message


@pytest.mark.parametrize(("number", "born"), HAND_COMPUTED.items())
def test_hand_computed_numbers_are_accepted_with_their_birth_date(number: str, born: date) -> None:
    assert normalise_id_number(number, TODAY) == number
    assert check_digit(number[:17]) == number[17]
    assert birth_date(number) == born


def test_lower_case_x_check_character_is_normalised_to_upper_case() -> None:
    assert normalise_id_number("11010519491231002x", TODAY) == "11010519491231002X"


def test_surrounding_whitespace_is_ignored() -> None:
    assert normalise_id_number("  310115198806150032\n", TODAY) == "310115198806150032"


def test_a_citizen_born_today_is_accepted() -> None:
    number = random_id_number(birth=TODAY)
    assert normalise_id_number(number, TODAY) == number


@pytest.mark.parametrize("number", ["1101051949123100", "11010519491231002", "11010519491231002X0"])
def test_wrong_length_is_refused_with_the_length_it_has(number: str) -> None:
    assert refusal(number) == f"an ID number has 18 characters, this has {len(number)}"


def test_empty_text_is_refused_as_wrong_length() -> None:
    assert refusal("") == "an ID number has 18 characters, this has 0"


@pytest.mark.parametrize(
    "number",
    [
        "1101051949123100AX",  # a letter among the first 17
        "11010519491231-02X",
        FULL_WIDTH_17 + "X",  # full-width digits are digits, but not ASCII
        ARABIC_INDIC_17 + "X",
    ],
)
def test_non_digits_in_the_first_17_characters_are_refused(number: str) -> None:
    assert refusal(number) == "the first 17 characters of an ID number must be digits"


@pytest.mark.parametrize("last", ["Y", "-", "?", FULL_WIDTH_17[0]])
def test_a_last_character_other_than_a_digit_or_x_is_refused(last: str) -> None:
    number = "11010519491231002" + last
    assert refusal(number) == "the last character of an ID number must be a digit or X"


@pytest.mark.parametrize("region", ["000000", "990101", "100101", "910101"])
def test_unknown_province_is_refused(region: str) -> None:
    first_17 = f"{region}19491231002"
    number = first_17 + check_digit(first_17)
    assert refusal(number) == "the ID number's region code is not a known province"


@pytest.mark.parametrize(
    "birth",
    [
        "19500230",  # 30 February
        "19491301",  # month 13
        "19490001",  # month 0
        "19490100",  # day 0
        "20230229",  # 29 February in a common year
        "18991231",  # before 1900
        "00000000",
    ],
)
def test_impossible_birth_dates_are_refused(birth: str) -> None:
    first_17 = f"110105{birth}002"
    number = first_17 + check_digit(first_17)
    assert refusal(number) == "the ID number's birth date is not a valid past date"


def test_a_birth_date_in_the_future_is_refused() -> None:
    number = random_id_number(birth=date(2026, 12, 2))
    assert refusal(number, today=TODAY) == "the ID number's birth date is not a valid past date"


def test_the_old_example_from_the_standard_born_in_1880_is_refused_as_too_old() -> None:
    assert check_digit("44052418800101001") == "4"
    assert refusal("440524188001010014") == "the ID number's birth date is not a valid past date"


@pytest.mark.parametrize("number", HAND_COMPUTED)
def test_every_wrong_check_character_is_refused(number: str) -> None:
    for wrong in "0123456789X":
        if wrong == number[17]:
            continue
        assert refusal(number[:17] + wrong) == (
            "the ID number's check digit does not match (GB 11643)"
        )


def test_swapping_two_adjacent_digits_is_caught_by_the_check_digit() -> None:
    number = "310115198806150032"
    swapped = number[:15] + number[16] + number[15] + number[17:]
    assert swapped != number
    assert refusal(swapped) == "the ID number's check digit does not match (GB 11643)"


def test_invalid_id_number_is_a_value_error_so_validators_report_it() -> None:
    with pytest.raises(ValueError, match="check digit"):
        normalise_id_number("110105194912310021", TODAY)


@given(
    birth=st.dates(min_value=date(1900, 1, 1), max_value=TODAY),
    region=st.sampled_from(["110105", "420102", "310115", "440305", "650102", "810000"]),
)
def test_random_valid_numbers_are_accepted_and_agree_with_mod_11_2(
    birth: date, region: str
) -> None:
    number = random_id_number(birth=birth, region=region)
    assert reference_check_character(number[:17]) == number[17]
    assert normalise_id_number(number.lower(), TODAY) == number
    assert birth_date(number) == birth


@given(birth=st.dates(min_value=date(1900, 1, 1), max_value=TODAY), data=st.data())
def test_random_numbers_with_any_other_check_character_are_refused(
    birth: date, data: st.DataObject
) -> None:
    number = random_id_number(birth=birth)
    wrong = data.draw(st.sampled_from([c for c in "0123456789X" if c != number[17]]))
    with pytest.raises(InvalidIdNumber, match="check digit") as caught:
        normalise_id_number(number[:17] + wrong, TODAY)
    assert number[:17] not in str(caught.value)


@given(text=st.text(alphabet="0123456789Xx", min_size=18, max_size=18))
def test_any_18_characters_are_either_valid_or_refused_without_being_echoed(text: str) -> None:
    try:
        number = normalise_id_number(text, TODAY)
    except InvalidIdNumber as exc:
        assert text not in str(exc)
        assert text.upper() not in str(exc)
    else:
        assert number == text.upper()
        assert reference_check_character(number[:17]) == number[17]
