"""Status lists and deltas: the Token Status List bit layout, compression and size bounds."""

from __future__ import annotations

import base64
import json
import random
import zlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from idcode.errors import StatusListError
from idcode.statuslist import StatusDelta, StatusList


def b64(raw: bytes) -> str:
    """Unpadded base64url, as the status list travels."""
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def test_bit_layout_is_the_token_status_lists() -> None:
    # draft-ietf-oauth-status-list: index i is bit i % 8 (LSB first) of byte i // 8; the
    # example there has indices 0, 3, 4, 5, 7, 8, 9, 13, 15 set: bytes 0xB9 0xA3.
    status = StatusList(16)
    for index in (0, 3, 4, 5, 7, 8, 9, 13, 15):
        status.set(index, True)
    lst = status.to_json()["lst"]
    assert zlib.decompress(base64.urlsafe_b64decode(lst + "=" * (-len(lst) % 4))) == b"\xb9\xa3"


@given(st.integers(1, 5000), st.data())
def test_a_list_round_trips_through_json(size: int, data: st.DataObject) -> None:
    status = StatusList(size)
    for index in data.draw(st.lists(st.integers(0, size - 1), max_size=50)):
        status.set(index, True)
    assert StatusList.from_json(status.to_json()) == status


def test_an_index_past_the_end_is_a_card_newer_than_the_list_and_not_revoked() -> None:
    assert not StatusList(8).is_invalid(100)


@given(st.integers(1, 3000), st.data())
def test_a_delta_turns_the_old_list_into_the_new_one(size: int, data: st.DataObject) -> None:
    old = StatusList(size)
    for index in data.draw(st.lists(st.integers(0, size - 1), max_size=40)):
        old.set(index, True)
    new = old.grown(size + data.draw(st.integers(0, 100)))
    for index in data.draw(st.lists(st.integers(0, new.size - 1), max_size=40)):
        new.set(index, not new.is_invalid(index))
    delta = StatusDelta.from_json(StatusDelta.between(old, new, 1, 2).to_json())
    assert delta.apply(old) == new


def test_three_million_cards_one_percent_revoked_compress_under_45_kb() -> None:
    size = 3_000_000
    status = StatusList(size)
    for index in random.Random(7).sample(range(size), size // 100):
        status.set(index, True)
    lst = status.to_json()["lst"]
    compressed = base64.urlsafe_b64decode(lst + "=" * (-len(lst) % 4))
    assert len(compressed) <= 45_000


def test_a_delta_of_100_changes_is_under_1_kb() -> None:
    size = 3_000_000
    old = StatusList(size)
    new = old.copy()
    for index in random.Random(8).sample(range(size), 100):
        new.set(index, True)
    assert len(json.dumps(StatusDelta.between(old, new, 1, 2).to_json())) <= 1024


@pytest.mark.parametrize(
    "document",
    [
        None,
        {"bits": 2, "size": 8, "lst": ""},
        {"bits": 1, "size": -1, "lst": ""},
        {"bits": 1, "size": 8, "lst": "!!!"},
        {"bits": 1, "size": 8, "lst": b64(b"not zlib")},
        {"bits": 1, "size": 8, "lst": b64(zlib.compress(bytes(2)))},
    ],
    ids=["not-an-object", "bits-2", "negative-size", "bad-base64", "not-zlib", "too-long"],
)
def test_malformed_lists_are_refused(document: object) -> None:
    with pytest.raises(StatusListError):
        StatusList.from_json(document)


def test_a_compression_bomb_is_refused_without_inflating_it() -> None:
    bomb = b64(zlib.compress(bytes(50_000_000), 9))
    with pytest.raises(StatusListError, match="more than"):
        StatusList.from_json({"bits": 1, "size": 8, "lst": bomb})


def test_a_delta_naming_an_index_outside_the_list_is_refused() -> None:
    old, new = StatusList(16), StatusList(16)
    new.set(15, True)
    document = StatusDelta.between(old, new, 1, 2).to_json()
    document["size"] = 8
    with pytest.raises(StatusListError, match="outside"):
        StatusDelta.from_json(document)


def test_padding_bits_past_the_end_are_refused() -> None:
    lst = b64(zlib.compress(b"\xf0"))
    with pytest.raises(StatusListError, match="past the end"):
        StatusList.from_json({"bits": 1, "size": 4, "lst": lst})


def test_an_empty_list_is_bounded_too() -> None:
    bomb = b64(zlib.compress(bytes(20_000_000), 9))
    with pytest.raises(StatusListError, match="more than"):
        StatusList.from_json({"bits": 1, "size": 0, "lst": bomb})


def test_a_delta_that_both_revokes_and_reinstates_an_index_is_refused() -> None:
    document = StatusDelta(1, 2, 16, (3,), ()).to_json()
    document["validated"] = document["invalidated"]
    with pytest.raises(StatusListError, match="both"):
        StatusDelta.from_json(document)


# -- strict parsing of what the root key signed (outside review, finding 8c) -------------------

# 16 cards, the third revoked: 10 compressed bytes, so the text's last character has
# unused bits (see the test on them).
SIXTEEN_CARDS_ONE_REVOKED = {"bits": 1, "size": 16, "lst": b64(zlib.compress(b"\x04\x00", 9))}


def with_lst(lst: str, **members: object) -> dict[str, object]:
    return {**SIXTEEN_CARDS_ONE_REVOKED, "lst": lst, **members}


def test_the_strict_reference_list_reads() -> None:
    """Guards the cases below: each differs from this one in one way only."""
    assert StatusList.from_json(SIXTEEN_CARDS_ONE_REVOKED).invalid_indices() == [2]


LST = str(SIXTEEN_CARDS_ONE_REVOKED["lst"])


@pytest.mark.parametrize(
    ("document", "reason"),
    [
        (with_lst(LST, bits=True), "bits"),
        (with_lst(LST, bits=1.0), "bits"),
        (with_lst(LST, bits="1"), "bits"),
        (with_lst(LST, bits=8), "bits"),
        (with_lst(LST, size=True), "size must be an integer"),
        (with_lst(LST, size=8.0), "size must be an integer"),
        (with_lst(LST, aggregation_uri="https://x"), "unknown members"),
        (with_lst(b64(zlib.compress(b"\x04\x00", 9) + b"junk")), "after the end of its ZLIB"),
        (with_lst(b64(zlib.compress(b"\x04\x00") + zlib.compress(b"\x00"))), "after the end"),
        (with_lst(LST[:3] + "!" + LST[3:]), "allows only"),
        (with_lst(LST[:3] + " " + LST[3:]), "allows only"),
        (with_lst(LST[:3] + "\n" + LST[3:]), "allows only"),
        (with_lst(LST + "=" * (-len(LST) % 4 or 4)), "allows only"),
        (with_lst(LST.replace("-", "+").replace("_", "/") + "+/"), "allows only"),
        (with_lst(LST + "A" * ((1 - len(LST)) % 4 or 4)), "4n \\+ 1"),
        (with_lst(b64(zlib.compress(b""))), "does not match the list's size"),
        (with_lst(b64(zlib.compress(b"\x04\x00\x00"))), "more than 2 bytes"),
    ],
    ids=[
        "bits-true",
        "bits-float",
        "bits-text",
        "bits-8",
        "size-true",
        "size-float",
        "unknown-member",
        "junk-after-zlib-stream",
        "second-zlib-stream",
        "junk-character",
        "space",
        "newline",
        "padding",
        "standard-alphabet-characters",
        "length-4n-plus-1",
        "inflates-short",
        "inflates-long",
    ],
)
def test_a_lenient_status_list_is_refused_with_a_precise_reason(
    document: dict[str, object], reason: str
) -> None:
    with pytest.raises(StatusListError, match=reason):
        StatusList.from_json(document)


def test_a_status_list_whose_last_base64url_character_has_unused_bits_set_is_refused() -> None:
    # The last character of a text whose length is not 4n carries unused bits, which
    # Python's decoder ignores: the next character in the alphabet decodes the same.
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    assert len(LST) % 4
    altered = LST[:-1] + alphabet[alphabet.index(LST[-1]) + 1]
    padding = "=" * (-len(LST) % 4)
    assert base64.urlsafe_b64decode(altered + padding) == base64.urlsafe_b64decode(LST + padding)
    with pytest.raises(StatusListError, match="not canonical"):
        StatusList.from_json(with_lst(altered))


DELTA = StatusDelta(3, 4, 16, (2, 9), (5,)).to_json()


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"base": True}, "integers"),
        ({"target": 4.0}, "integers"),
        ({"size": True}, "integers"),
        ({"signed_by": "x"}, "unknown members"),
        ({"invalidated": b64(zlib.compress(bytes([3, 7])) + b"\x00")}, "after the end"),
        ({"invalidated": str(DELTA["invalidated"]) + "="}, "allows only"),
        ({"invalidated": "!" + str(DELTA["invalidated"])}, "allows only"),
        ({"validated": 5}, "expected base64url text"),
        ({"invalidated": b64(zlib.compress(bytes([0x83, 0x00, 7])))}, "shortest form"),
    ],
    ids=[
        "base-true",
        "target-float",
        "size-true",
        "unknown-member",
        "junk-after-zlib-stream",
        "padding",
        "junk-character",
        "not-text",
        "overlong-varint",
    ],
)
def test_a_lenient_delta_is_refused_with_a_precise_reason(
    changes: dict[str, object], reason: str
) -> None:
    assert StatusDelta.from_json(DELTA) == StatusDelta(3, 4, 16, (2, 9), (5,))
    with pytest.raises(StatusListError, match=reason):
        StatusDelta.from_json({**DELTA, **changes})
