"""Status lists and deltas: the Token Status List bit layout, compression and size bounds."""

from __future__ import annotations

import base64
import json
import random
import zlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from idcode.statuslist import StatusDelta, StatusList, StatusListError


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
        {"bits": 1, "size": 8, "lst": base64.urlsafe_b64encode(b"not zlib").decode()},
        {"bits": 1, "size": 8, "lst": base64.urlsafe_b64encode(zlib.compress(bytes(2))).decode()},
    ],
    ids=["not-an-object", "bits-2", "negative-size", "bad-base64", "not-zlib", "too-long"],
)
def test_malformed_lists_are_refused(document: object) -> None:
    with pytest.raises(StatusListError):
        StatusList.from_json(document)


def test_a_compression_bomb_is_refused_without_inflating_it() -> None:
    bomb = base64.urlsafe_b64encode(zlib.compress(bytes(50_000_000), 9)).decode()
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
    lst = base64.urlsafe_b64encode(zlib.compress(b"\xf0")).decode()
    with pytest.raises(StatusListError, match="past the end"):
        StatusList.from_json({"bits": 1, "size": 4, "lst": lst})


def test_an_empty_list_is_bounded_too() -> None:
    bomb = base64.urlsafe_b64encode(zlib.compress(bytes(20_000_000), 9)).decode()
    with pytest.raises(StatusListError, match="more than"):
        StatusList.from_json({"bits": 1, "size": 0, "lst": bomb})


def test_a_delta_that_both_revokes_and_reinstates_an_index_is_refused() -> None:
    document = StatusDelta(1, 2, 16, (3,), ()).to_json()
    document["validated"] = document["invalidated"]
    with pytest.raises(StatusListError, match="both"):
        StatusDelta.from_json(document)
