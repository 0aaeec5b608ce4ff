"""The parking scene: entry/exit pairing across lanes that share a journal, and the tariff."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from idcode.claims import Card, Residency
from idcode.errors import SceneError
from idcode.scenes import Decision, MemoryHistory
from idcode.testing import TestIssuer, TestTerminal, random_card
from idcode_adapters.parking import Adapter, ParkingData
from tests.conftest import NOW

HOUR = 3600
DAY = 24 * HOUR
MAX_STAY = 72 * HOUR
# 5 yuan an hour, at most 30 yuan per 24 hours, residents 3 yuan an hour.
TARIFF: dict[str, Any] = {
    "unit_fee": 500,
    "daily_cap": 3000,
    "resident_unit_fee": 300,
    "lost_ticket_fee": 5000,
}
TARIFF_NAMES = {"permit", "resident", "standard"}
CHINA = timezone(timedelta(hours=8))


def local(year: int, month: int, day: int, hour: int, minute: int) -> int:
    """A UTC+8 wall-clock time as the Unix time the terminals scan at."""
    return int(datetime(year, month, day, hour, minute, tzinfo=CHINA).timestamp())


@dataclass
class CarPark:
    """An entry lane and an exit lane sharing one journal, as a car park runs them."""

    issuer: TestIssuer
    entry: TestTerminal
    exit: TestTerminal

    def enter(self, card: Card, at: int) -> Decision:
        return self.entry.scan(self.issuer.mint(card, at=at), at=at)

    def leave(self, card: Card, at: int) -> Decision:
        return self.exit.scan(self.issuer.mint(card, at=at), at=at)


def car_park(
    issuer: TestIssuer, data: Mapping[str, Any] | None = None, *, revoked: list[int] | None = None
) -> CarPark:
    # A bundle that stays fresh for the multi-day stays below.
    bundle = issuer.bundle(
        "parking", "jianghan-lot-3", dict(TARIFF if data is None else data), max_age=30 * DAY
    )
    history = MemoryHistory()
    return CarPark(
        issuer,
        TestTerminal(bundle, options={"lane": "entry"}, history=history),
        TestTerminal(bundle, options={"lane": "exit"}, history=history),
    )


def standard_card() -> Card:
    return random_card(residency=Residency.NON_RESIDENT)


@pytest.fixture
def park(issuer: TestIssuer) -> CarPark:
    return car_park(issuer)


# -- entry and exit -----------------------------------------------------------------------


def test_entry_is_admitted_and_says_which_tariff_applies(park: CarPark) -> None:
    decision = park.enter(standard_card(), NOW)
    assert decision.admitted and decision.reason == "ok" and decision.action == "entry"
    assert dict(decision.result) == {"tariff": "standard", "replaced_stale_entry": False}


@pytest.mark.parametrize(
    ("stay_seconds", "minutes", "fee"),
    [
        (10 * 60, 10, 0),  # within the free minutes
        (15 * 60, 15, 0),  # exactly the free minutes
        (15 * 60 + 59, 15, 0),  # seconds are dropped, not rounded up
        (16 * 60, 16, 500),  # past the grace period the whole stay is charged
        (60 * 60, 60, 500),  # exactly one unit
        (60 * 60 + 59, 60, 500),
        (61 * 60, 61, 1000),  # a started unit is charged
        (2 * HOUR, 120, 1000),
        (6 * HOUR, 360, 3000),  # six units reach the daily cap
        (8 * HOUR, 480, 3000),  # capped
        (DAY, 1440, 3000),
        (DAY + 60, 1441, 3500),  # a new 24-hour period starts uncapped
        (DAY + 7 * HOUR, 31 * 60, 6000),
        (2 * DAY + 30 * 60, 2910, 6500),
        (MAX_STAY, 72 * 60, 9000),  # the longest stay the lane still prices itself
    ],
)
def test_exit_charges_the_standard_tariff_for_the_stay(
    park: CarPark, stay_seconds: int, minutes: int, fee: int
) -> None:
    card = standard_card()
    assert park.enter(card, NOW).admitted
    decision = park.leave(card, NOW + stay_seconds)
    assert decision.admitted and decision.reason == "ok" and decision.action == "exit"
    assert dict(decision.result) == {"tariff": "standard", "duration_minutes": minutes, "fee": fee}


def test_without_a_daily_cap_every_started_unit_is_charged(issuer: TestIssuer) -> None:
    park = car_park(issuer, {"unit_fee": 500})
    card = standard_card()
    park.enter(card, NOW)
    assert park.leave(card, NOW + 30 * HOUR + 60).result["fee"] == 31 * 500


def test_free_minutes_and_unit_length_come_from_the_scene_data(issuer: TestIssuer) -> None:
    park = car_park(issuer, {"unit_fee": 200, "unit_minutes": 30, "free_minutes": 30})
    card, other = standard_card(), standard_card()
    park.enter(card, NOW)
    park.enter(other, NOW)
    assert park.leave(card, NOW + 30 * 60).result["fee"] == 0
    assert park.leave(other, NOW + 31 * 60).result["fee"] == 2 * 200


def test_permit_holder_parks_free(issuer: TestIssuer) -> None:
    card = random_card(residency=Residency.REGISTERED)
    park = car_park(issuer, {**TARIFF, "permits": [issuer.subject(card, "parking")]})
    entry = park.enter(card, NOW)
    assert entry.admitted and entry.result["tariff"] == "permit"
    decision = park.leave(card, NOW + 5 * HOUR)
    assert decision.admitted
    assert dict(decision.result) == {"tariff": "permit", "duration_minutes": 300, "fee": 0}


def test_a_permit_of_another_scene_subject_does_not_apply(issuer: TestIssuer) -> None:
    card = standard_card()
    # The community scene's subject of the same card is another string: scenes cannot join.
    park = car_park(issuer, {**TARIFF, "permits": [issuer.subject(card, "community")]})
    assert park.enter(card, NOW).result["tariff"] == "standard"


def test_registered_resident_pays_the_resident_rate_under_the_same_cap(park: CarPark) -> None:
    resident, capped = (random_card(residency=Residency.REGISTERED) for _ in range(2))
    assert park.enter(resident, NOW).result["tariff"] == "resident"
    park.enter(capped, NOW)
    assert dict(park.leave(resident, NOW + 2 * HOUR).result) == {
        "tariff": "resident",
        "duration_minutes": 120,
        "fee": 600,
    }
    assert park.leave(capped, NOW + 20 * HOUR).result["fee"] == 3000


def test_residence_permit_holder_pays_the_standard_rate(park: CarPark) -> None:
    card = random_card(residency=Residency.PERMIT)
    assert park.enter(card, NOW).result["tariff"] == "standard"
    assert park.leave(card, NOW + 2 * HOUR).result["fee"] == 1000


def test_resident_pays_standard_where_the_car_park_has_no_resident_rate(
    issuer: TestIssuer,
) -> None:
    park = car_park(issuer, {"unit_fee": 500})
    card = random_card(residency=Residency.REGISTERED)
    assert park.enter(card, NOW).result["tariff"] == "standard"
    assert park.leave(card, NOW + 2 * HOUR).result["fee"] == 1000


# -- pairing ------------------------------------------------------------------------------


def test_exit_without_entry_is_denied_with_reason_no_entry_and_the_lost_ticket_fee(
    park: CarPark,
) -> None:
    decision = park.leave(standard_card(), NOW)
    assert not decision.admitted
    assert decision.reason == "no_entry" and decision.action == "exit"
    assert dict(decision.result) == {"tariff": "standard", "lost_ticket_fee": 5000}


def test_no_entry_denial_without_a_lost_ticket_fee_leaves_it_to_the_attendant(
    issuer: TestIssuer,
) -> None:
    park = car_park(issuer, {"unit_fee": 500})
    decision = park.leave(standard_card(), NOW)
    assert decision.reason == "no_entry" and decision.result["lost_ticket_fee"] is None


def test_a_denied_double_entry_does_not_restart_the_stay(park: CarPark) -> None:
    card = standard_card()
    park.enter(card, NOW)
    assert park.entry.scan(park.issuer.mint(card, at=NOW + 60), at=NOW + 60).reason == (
        "already_inside"
    )
    assert park.leave(card, NOW + 2 * HOUR).result["fee"] == 1000


def test_double_entry_is_denied_with_reason_already_inside(park: CarPark) -> None:
    card = standard_card()
    park.enter(card, NOW)
    decision = park.enter(card, NOW + 10 * 60)
    assert not decision.admitted
    assert decision.reason == "already_inside" and decision.action == "entry"
    assert dict(decision.result) == {"tariff": "standard", "duration_minutes": 10}


def test_double_entry_exactly_at_max_stay_is_still_already_inside(park: CarPark) -> None:
    card = standard_card()
    park.enter(card, NOW)
    assert park.enter(card, NOW + MAX_STAY).reason == "already_inside"


def test_entry_older_than_max_stay_is_replaced_by_a_new_entry(park: CarPark) -> None:
    card = standard_card()
    park.enter(card, NOW)
    decision = park.enter(card, NOW + MAX_STAY + 1)
    assert decision.admitted and decision.action == "entry"
    assert dict(decision.result) == {"tariff": "standard", "replaced_stale_entry": True}
    # The exit pairs with the new entry: one hour, not three days.
    exit_ = park.leave(card, NOW + MAX_STAY + 1 + HOUR)
    assert exit_.admitted and exit_.result["duration_minutes"] == 60
    assert exit_.result["fee"] == 500


def test_max_stay_comes_from_the_scene_data(issuer: TestIssuer) -> None:
    park = car_park(issuer, {**TARIFF, "max_stay_hours": 2})
    card = standard_card()
    park.enter(card, NOW)
    assert park.enter(card, NOW + 2 * HOUR + 1).result["replaced_stale_entry"] is True


def test_exit_against_an_entry_older_than_max_stay_goes_to_the_attendant(park: CarPark) -> None:
    card = standard_card()
    park.enter(card, NOW)
    decision = park.leave(card, NOW + MAX_STAY + 60)
    assert not decision.admitted
    assert decision.reason == "stale_entry" and decision.action == "exit"
    assert dict(decision.result) == {
        "tariff": "standard",
        "duration_minutes": 72 * 60 + 1,
        "fee": 9500,  # the recorded stay's price, for the attendant to weigh
        "lost_ticket_fee": 5000,
    }


def test_re_entry_after_exit_is_admitted_and_priced_from_the_new_entry(park: CarPark) -> None:
    card = standard_card()
    park.enter(card, NOW)
    park.leave(card, NOW + 3 * HOUR)
    entry = park.enter(card, NOW + 4 * HOUR)
    assert entry.admitted and entry.result["replaced_stale_entry"] is False
    exit_ = park.leave(card, NOW + 5 * HOUR)
    assert exit_.admitted and exit_.result["duration_minutes"] == 60
    # And a second exit without a new entry is no_entry again.
    assert park.leave(card, NOW + 5 * HOUR + 60).reason == "no_entry"


def test_two_citizens_interleaved_are_paired_each_with_their_own_entry(park: CarPark) -> None:
    first, second = standard_card(), standard_card()
    assert park.enter(first, NOW).admitted
    assert park.enter(second, NOW + 20 * 60).admitted
    assert park.leave(second, NOW + 50 * 60).result["duration_minutes"] == 30
    assert park.leave(first, NOW + 2 * HOUR).result["duration_minutes"] == 120
    assert park.leave(second, NOW + 3 * HOUR).reason == "no_entry"


def test_lanes_with_separate_journals_do_not_see_each_others_entries(
    issuer: TestIssuer,
) -> None:
    bundle = issuer.bundle("parking", data=TARIFF)
    entry = TestTerminal(bundle, options={"lane": "entry"})
    exit_ = TestTerminal(bundle, options={"lane": "exit"})
    card = standard_card()
    entry.scan(issuer.mint(card, at=NOW), at=NOW)
    assert exit_.scan(issuer.mint(card, at=NOW + HOUR), at=NOW + HOUR).reason == "no_entry"


def test_a_clock_stepped_back_between_entry_and_exit_counts_a_zero_stay(park: CarPark) -> None:
    card = standard_card()
    park.enter(card, NOW)
    decision = park.leave(card, NOW - 10)
    assert decision.admitted and decision.result["duration_minutes"] == 0
    assert decision.result["fee"] == 0


# -- codes the verifier refuses -----------------------------------------------------------


def test_exit_with_a_revoked_card_is_denied_revoked_and_the_stay_stays_open(
    issuer: TestIssuer,
) -> None:
    card = random_card(status_index=7, residency=Residency.NON_RESIDENT)
    history = MemoryHistory()
    # The exit lane's newer bundle revokes the card while the car is parked.
    fresh = issuer.bundle("parking", data=TARIFF, max_age=30 * DAY)
    revoking = issuer.bundle("parking", data=TARIFF, revoked=[7], max_age=30 * DAY, version=2)
    entry = TestTerminal(fresh, options={"lane": "entry"}, history=history)
    revoked_exit = TestTerminal(revoking, options={"lane": "exit"}, history=history)
    assert entry.scan(issuer.mint(card, at=NOW), at=NOW).admitted
    decision = revoked_exit.scan(issuer.mint(card, at=NOW + HOUR), at=NOW + HOUR)
    assert not decision.admitted and decision.reason == "revoked"
    assert dict(decision.result) == {}
    # Reinstated (a bundle without the revocation): the exit still pairs with the entry.
    exit_ = TestTerminal(fresh, options={"lane": "exit"}, history=history)
    decision = exit_.scan(issuer.mint(card, at=NOW + 2 * HOUR), at=NOW + 2 * HOUR)
    assert decision.admitted and decision.result["fee"] == 1000


def test_entry_with_a_revoked_card_is_denied_and_opens_no_stay(issuer: TestIssuer) -> None:
    card = random_card(status_index=9)
    bundle = issuer.bundle("parking", data=TARIFF, revoked=[9])
    entry = TestTerminal(bundle, options={"lane": "entry"})
    assert entry.scan(issuer.mint(card, at=NOW), at=NOW).reason == "revoked"
    assert entry.history.last() is None


def test_replayed_entry_code_is_denied_replayed_not_already_inside(park: CarPark) -> None:
    code = park.issuer.mint(standard_card(), at=NOW)
    assert park.entry.scan(code, at=NOW).admitted
    decision = park.entry.scan(code, at=NOW + 5)
    assert not decision.admitted and decision.reason == "replayed"


def test_replayed_exit_code_does_not_charge_or_exit_twice(park: CarPark) -> None:
    card = standard_card()
    park.enter(card, NOW)
    code = park.issuer.mint(card, at=NOW + HOUR)
    assert park.exit.scan(code, at=NOW + HOUR).admitted
    assert park.exit.scan(code, at=NOW + HOUR + 5).reason == "replayed"


def test_expired_code_is_denied_with_reason_expired_and_opens_no_stay(park: CarPark) -> None:
    card = standard_card()
    code = park.issuer.mint(card, at=NOW)
    decision = park.entry.scan(code, at=NOW + 120)
    assert not decision.admitted and decision.reason == "expired"
    assert park.leave(card, NOW + HOUR).reason == "no_entry"


# -- local days ---------------------------------------------------------------------------


def test_a_stay_across_local_midnight_is_timed_by_the_clock_not_the_calendar(
    park: CarPark,
) -> None:
    card = standard_card()
    assert park.enter(card, local(2026, 12, 1, 23, 59)).admitted
    decision = park.leave(card, local(2026, 12, 2, 0, 1))
    assert decision.result["duration_minutes"] == 2 and decision.result["fee"] == 0


def test_daily_cap_counts_24_hours_from_entry_not_local_days(park: CarPark) -> None:
    card = standard_card()
    park.enter(card, local(2026, 12, 1, 20, 0))
    # 8 hours across midnight: one capped period (30 yuan), not two calendar days (40 yuan).
    assert park.leave(card, local(2026, 12, 2, 4, 0)).result["fee"] == 3000


def test_double_entry_is_not_reset_by_local_midnight(park: CarPark) -> None:
    card = standard_card()
    park.enter(card, local(2026, 12, 1, 23, 59))
    assert park.enter(card, local(2026, 12, 2, 0, 1)).reason == "already_inside"


# -- privacy ------------------------------------------------------------------------------


def test_results_carry_no_personal_data(issuer: TestIssuer) -> None:
    cards = [random_card(residency=residency) for residency in Residency]
    subjects = {issuer.subject(card, "parking") for card in cards}
    park = car_park(issuer, {**TARIFF, "permits": sorted(subjects)[:1]})
    decisions = []
    for number, card in enumerate(cards):
        at = NOW + number * HOUR
        decisions += [
            park.leave(card, at),  # no_entry
            park.enter(card, at + 60),
            park.enter(card, at + 120),  # already_inside
            park.leave(card, at + 1800),
        ]
    identifying = subjects | {card.pseudonym.hex() for card in cards}
    allowed = {"tariff", "replaced_stale_entry", "duration_minutes", "fee", "lost_ticket_fee"}
    for decision in decisions:
        assert decision.subject is None
        assert set(decision.result) <= allowed
        for value in decision.result.values():
            assert value is None or isinstance(value, bool | int) or value in TARIFF_NAMES
            assert str(value) not in identifying


# -- configuration ------------------------------------------------------------------------


@pytest.mark.parametrize("options", [{}, {"lane": "in"}, {"lane": "Entry"}, {"mode": "exit"}])
def test_missing_or_unknown_lane_option_is_a_scene_error(
    issuer: TestIssuer, options: dict[str, str]
) -> None:
    bundle = issuer.bundle("parking", data=TARIFF)
    with pytest.raises(SceneError, match="lane=entry or lane=exit"):
        TestTerminal(bundle, options=options)


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        ({}, "unit_fee"),  # a car park has no default price
        ({"unit_fee": -1}, "unit_fee"),
        ({"unit_fee": 500, "daily_cap": 400}, "daily_cap must be at least unit_fee"),
        ({"unit_fee": 500, "resident_unit_fee": 600}, "resident_unit_fee must not exceed"),
        ({"unit_fee": 500, "max_stay_hours": 1, "free_minutes": 60}, "free_minutes must be"),
        ({"unit_fee": 500, "daily_cap": 3000, "unit_minutes": 50}, "must divide 1440"),
        ({"unit_fee": 500, "unit_minutes": 0}, "unit_minutes"),
        ({"unit_fee": 500, "max_stay_hours": 0}, "max_stay_hours"),
        ({"unit_fee": 500, "lost_ticket_fee": -100}, "lost_ticket_fee"),
        ({"unit_fee": 500, "unit_fees": 400}, "unit_fees"),  # a typo is refused, not ignored
        ({"unit_fee": "5 yuan"}, "unit_fee"),
        ({"unit_fee": 500, "permits": ["card:0b7c6f1e-2d1a-4c7e-9d47-5a9f1c1d2e3f"]}, "permits"),
        ({"unit_fee": 500, "permits": ["ABCDEF0123456789ABCDEF01"]}, "permits"),
    ],
)
def test_invalid_tariff_data_is_a_scene_error(data: dict[str, Any], problem: str) -> None:
    with pytest.raises(SceneError, match=problem):
        Adapter.parse_data(data)


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        ({"unit_fee": "500"}, "unit_fee"),
        ({"unit_fee": 500.0}, "unit_fee"),
        ({"unit_fee": True}, "unit_fee"),
        ({"unit_fee": 500, "daily_cap": float("nan")}, "not JSON"),
        ({"unit_fee": 500, "utc_offset_minutes": "480"}, "utc_offset_minutes"),
        ({"unit_fee": 500, "allow_stale": 1}, "allow_stale"),
        ({"unit_fee": 500, "allow_stale": "yes"}, "allow_stale"),
    ],
    ids=["text", "float", "true", "nan", "offset-text", "flag-1", "flag-yes"],
)
def test_scene_data_that_only_coerces_to_its_type_is_refused(
    data: dict[str, Any], problem: str
) -> None:
    """Scene data is JSON and read strictly (outside review, finding 8c): pydantic's lax
    mode read "500" as 500, true as 1 and "yes" as true."""
    with pytest.raises(SceneError, match=problem):
        Adapter.parse_data(data)


def test_invalid_tariff_data_in_a_bundle_stops_the_terminal(issuer: TestIssuer) -> None:
    bundle = issuer.bundle("parking", data={"unit_fee": 500, "daily_cap": 100})
    with pytest.raises(SceneError, match="daily_cap"):
        TestTerminal(bundle, options={"lane": "exit"})


def test_valid_tariff_data_keeps_its_defaults() -> None:
    data = Adapter.parse_data({"unit_fee": 500})
    assert isinstance(data, ParkingData)
    assert (data.free_minutes, data.unit_minutes, data.max_stay_hours) == (15, 60, 72)
    assert data.daily_cap is None and data.resident_unit_fee is None and data.permits == ()
    assert data.utc_offset_minutes == 480


def test_the_scene_lists_its_reasons_and_actions() -> None:
    assert Adapter.scene == "parking"
    assert set(Adapter.reasons) == {"already_inside", "no_entry", "stale_entry"}
    assert set(Adapter.actions) == {"entry", "exit"}
