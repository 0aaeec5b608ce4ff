"""The eldercare scene: canteen meal subsidy within daily limits, home-care visit billing."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from idcode.claims import AgeBand, Card, Programme
from idcode.errors import SceneError
from idcode.scenes import Decision
from idcode.testing import TestIssuer, TestTerminal, random_card
from idcode_adapters.eldercare import Adapter, EldercareData
from tests.conftest import NOW

MINUTE = 60
HOUR = 3600
DAY = 86_400
MIDNIGHT = NOW - 16 * HOUR  # 2026-12-01 00:00 in UTC+8 (NOW is 16:00 local)
DOCS = Path(__file__).parents[2] / "docs" / "scenes" / "eldercare.md"

SENIOR = Programme.MEAL_SUBSIDY | Programme.HOME_CARE


def local(time_of_day: str, day: int = 0, seconds: int = 0) -> int:
    """The epoch time of a local (UTC+8) time of day, ``day`` days after 2026-12-01."""
    hours, minutes = time_of_day.split(":")
    return MIDNIGHT + day * DAY + int(hours) * HOUR + int(minutes) * MINUTE + seconds


def terminal(
    issuer: TestIssuer,
    mode: str | None = "canteen",
    data: dict[str, Any] | None = None,
    revoked: tuple[int, ...] = (),
) -> TestTerminal:
    bundle = issuer.bundle(
        "eldercare", data=data, revoked=revoked, at=MIDNIGHT - HOUR, max_age=96 * HOUR
    )
    return TestTerminal(bundle, options={} if mode is None else {"mode": mode})


def senior(
    age_band: AgeBand = AgeBand.AGE_70_79, programmes: Programme = SENIOR, status_index: int = 0
) -> Card:
    return random_card(age_band=age_band, programmes=programmes, status_index=status_index)


def scan(gate: TestTerminal, issuer: TestIssuer, card: Card, at: int) -> Decision:
    return gate.scan(issuer.mint(card, at=at), at=at)


def denied(decision: Decision, reason: str, action: str) -> bool:
    return not decision.admitted and decision.reason == reason and decision.action == action


# -- canteen: enrolment and subsidy -------------------------------------------------------


@pytest.mark.parametrize(
    ("age_band", "subsidy"),
    [
        (AgeBand.AGE_60_64, 300),
        (AgeBand.AGE_65_69, 300),
        (AgeBand.AGE_70_79, 500),
        (AgeBand.AGE_80_PLUS, 800),
    ],
)
def test_enrolled_senior_gets_the_default_subsidy_of_their_age_band(
    issuer: TestIssuer, age_band: AgeBand, subsidy: int
) -> None:
    gate = terminal(issuer)
    decision = scan(gate, issuer, senior(age_band, Programme.MEAL_SUBSIDY), local("11:30"))
    assert decision.admitted and decision.reason == "ok" and decision.action == "meal"
    assert dict(decision.result) == {"subsidy": subsidy, "meals_today": 1, "meal_window": "lunch"}


def test_card_without_the_meal_subsidy_programme_is_denied_not_enrolled(
    issuer: TestIssuer,
) -> None:
    gate = terminal(issuer)
    card = senior(AgeBand.AGE_80_PLUS, Programme.HOME_CARE | Programme.LOW_INCOME)
    assert denied(scan(gate, issuer, card, local("11:30")), "not_enrolled", "meal")


@pytest.mark.parametrize("age_band", [AgeBand.AGE_18_59, AgeBand.UNKNOWN, AgeBand.AGE_6_17])
def test_enrolled_card_below_the_minimum_age_band_is_denied_not_enrolled(
    issuer: TestIssuer, age_band: AgeBand
) -> None:
    gate = terminal(issuer)
    card = senior(age_band, Programme.MEAL_SUBSIDY)
    assert denied(scan(gate, issuer, card, local("11:30")), "not_enrolled", "meal")


def test_minimum_age_band_comes_from_scene_data(issuer: TestIssuer) -> None:
    gate = terminal(issuer, data={"meal_min_age_band": "age_70_79"})
    younger = senior(AgeBand.AGE_65_69, Programme.MEAL_SUBSIDY)
    older = senior(AgeBand.AGE_70_79, Programme.MEAL_SUBSIDY)
    assert denied(scan(gate, issuer, younger, local("11:30")), "not_enrolled", "meal")
    assert scan(gate, issuer, older, local("11:30")).result["subsidy"] == 500


def test_each_subsidy_tier_applies_up_to_the_next_tier(issuer: TestIssuer) -> None:
    tiers = {"age_60_64": 200, "age_65_69": 250, "age_80_plus": 900}
    gate = terminal(issuer, data={"meal_subsidy_fen": tiers, "low_income_supplement_fen": 0})
    subsidies = {
        band: scan(gate, issuer, senior(band, Programme.MEAL_SUBSIDY), local("11:30")).result[
            "subsidy"
        ]
        for band in (AgeBand.AGE_60_64, AgeBand.AGE_65_69, AgeBand.AGE_70_79, AgeBand.AGE_80_PLUS)
    }
    assert subsidies == {
        AgeBand.AGE_60_64: 200,
        AgeBand.AGE_65_69: 250,
        AgeBand.AGE_70_79: 250,
        AgeBand.AGE_80_PLUS: 900,
    }


def test_low_income_senior_gets_the_supplement_on_top_of_the_band_subsidy(
    issuer: TestIssuer,
) -> None:
    card = senior(AgeBand.AGE_80_PLUS, Programme.MEAL_SUBSIDY | Programme.LOW_INCOME)
    assert scan(terminal(issuer), issuer, card, local("11:30")).result["subsidy"] == 1000
    configured = terminal(issuer, data={"low_income_supplement_fen": 350})
    assert scan(configured, issuer, card, local("11:30")).result["subsidy"] == 1150


# -- canteen: meal windows and daily limits -----------------------------------------------


@pytest.mark.parametrize("time_of_day", ["06:29", "09:00", "10:00", "13:30", "15:00", "19:00"])
def test_meal_outside_every_meal_window_is_denied_outside_meal_hours(
    issuer: TestIssuer, time_of_day: str
) -> None:
    gate = terminal(issuer)
    assert denied(scan(gate, issuer, senior(), local(time_of_day)), "outside_meal_hours", "meal")


@pytest.mark.parametrize(
    ("time_of_day", "window"),
    [("06:30", "breakfast"), ("08:59", "breakfast"), ("10:30", "lunch"), ("18:59", "dinner")],
)
def test_meal_window_opens_inclusive_and_closes_exclusive(
    issuer: TestIssuer, time_of_day: str, window: str
) -> None:
    decision = scan(terminal(issuer), issuer, senior(), local(time_of_day))
    assert decision.admitted and decision.result["meal_window"] == window


def test_second_meal_in_the_same_window_is_denied_meal_already_taken(issuer: TestIssuer) -> None:
    gate = terminal(issuer)
    card = senior()
    assert scan(gate, issuer, card, local("11:00")).admitted
    second = scan(gate, issuer, card, local("12:45"))
    assert denied(second, "meal_already_taken", "meal")
    assert dict(second.result) == {"meal_window": "lunch"}
    dinner = scan(gate, issuer, card, local("17:00"))
    assert dinner.admitted and dinner.result["meals_today"] == 2


def test_meal_after_the_daily_limit_is_denied_daily_limit_reached(issuer: TestIssuer) -> None:
    gate = terminal(issuer)
    card = senior()
    assert scan(gate, issuer, card, local("07:00")).result["meals_today"] == 1
    assert scan(gate, issuer, card, local("12:00")).result["meals_today"] == 2
    third = scan(gate, issuer, card, local("17:00"))
    assert denied(third, "daily_limit_reached", "meal")
    assert dict(third.result) == {"meals_today": 2}


def test_meals_per_day_comes_from_scene_data(issuer: TestIssuer) -> None:
    gate = terminal(issuer, data={"meals_per_day": 3})
    card = senior()
    for time_of_day in ("07:00", "12:00"):
        assert scan(gate, issuer, card, local(time_of_day)).admitted
    assert scan(gate, issuer, card, local("17:00")).result["meals_today"] == 3


def test_denied_meal_does_not_count_against_the_limits(issuer: TestIssuer) -> None:
    gate = terminal(issuer, data={"meals_per_day": 1})
    card = senior()
    assert denied(scan(gate, issuer, card, local("10:00")), "outside_meal_hours", "meal")
    assert scan(gate, issuer, card, local("10:30")).result["meals_today"] == 1


def test_limits_are_per_senior(issuer: TestIssuer) -> None:
    gate = terminal(issuer, data={"meals_per_day": 1})
    first, second = senior(), senior(AgeBand.AGE_60_64)
    assert scan(gate, issuer, first, local("12:00")).admitted
    assert scan(gate, issuer, second, local("12:00", seconds=5)).result == {
        "subsidy": 300,
        "meals_today": 1,
        "meal_window": "lunch",
    }


def test_without_meal_windows_meals_at_any_hour_count_only_against_the_daily_limit(
    issuer: TestIssuer,
) -> None:
    gate = terminal(issuer, data={"meal_windows": []})
    card = senior()
    first = scan(gate, issuer, card, local("03:00"))
    assert first.admitted and dict(first.result) == {
        "subsidy": 500,
        "meals_today": 1,
        "meal_window": None,
    }
    assert scan(gate, issuer, card, local("03:05")).result["meals_today"] == 2
    assert denied(scan(gate, issuer, card, local("21:00")), "daily_limit_reached", "meal")


def test_daily_limit_resets_at_local_midnight(issuer: TestIssuer) -> None:
    gate = terminal(issuer, data={"meal_windows": [], "meals_per_day": 1})
    card = senior()
    assert scan(gate, issuer, card, local("23:59")).admitted
    assert denied(
        scan(gate, issuer, card, local("23:59", seconds=30)), "daily_limit_reached", "meal"
    )
    next_day = scan(gate, issuer, card, local("00:01", day=1))
    assert next_day.admitted and next_day.result["meals_today"] == 1


def test_utc_midnight_is_not_a_day_boundary_in_utc_plus_8(issuer: TestIssuer) -> None:
    gate = terminal(issuer, data={"meal_windows": [], "meals_per_day": 1})
    card = senior()
    # 07:59 and 08:01 local are 23:59 and 00:01 UTC: one local day.
    assert scan(gate, issuer, card, local("07:59")).admitted
    assert denied(scan(gate, issuer, card, local("08:01")), "daily_limit_reached", "meal")


def test_day_boundary_follows_the_scene_data_utc_offset(issuer: TestIssuer) -> None:
    data = {"meal_windows": [], "meals_per_day": 1, "utc_offset_minutes": 0}
    gate = terminal(issuer, data=data)
    card = senior()
    assert scan(gate, issuer, card, local("07:59")).admitted
    assert scan(gate, issuer, card, local("08:01")).admitted


# -- home care -----------------------------------------------------------------------------


def test_first_scan_checks_in_and_the_next_checks_out_with_billable_minutes(
    issuer: TestIssuer,
) -> None:
    gate = terminal(issuer, "home_care")
    elder = senior()
    check_in = scan(gate, issuer, elder, local("09:00"))
    assert check_in.admitted and check_in.action == "check_in"
    assert dict(check_in.result) == {"abandoned_visit": False}
    check_out = scan(gate, issuer, elder, local("09:50", seconds=59))
    assert check_out.admitted and check_out.reason == "ok" and check_out.action == "check_out"
    assert dict(check_out.result) == {"visit_minutes": 50, "billable_minutes": 45, "capped": False}


@pytest.mark.parametrize(
    ("minutes", "billable"), [(15, 15), (29, 15), (30, 30), (44, 30), (45, 45), (239, 225)]
)
def test_billable_minutes_are_rounded_down_to_the_billing_unit(
    issuer: TestIssuer, minutes: int, billable: int
) -> None:
    gate = terminal(issuer, "home_care")
    elder = senior()
    scan(gate, issuer, elder, local("09:00"))
    check_out = scan(gate, issuer, elder, local("09:00") + minutes * MINUTE)
    assert check_out.result["visit_minutes"] == minutes
    assert check_out.result["billable_minutes"] == billable


def test_billing_rules_come_from_scene_data(issuer: TestIssuer) -> None:
    data = {"min_visit_minutes": 30, "billing_unit_minutes": 30, "max_visit_minutes": 120}
    gate = terminal(issuer, "home_care", data)
    elder = senior()
    scan(gate, issuer, elder, local("09:00"))
    assert denied(scan(gate, issuer, elder, local("09:29")), "visit_too_short", "check_out")
    assert scan(gate, issuer, elder, local("09:59")).result["billable_minutes"] == 30
    scan(gate, issuer, elder, local("10:00"))
    capped = scan(gate, issuer, elder, local("12:30"))
    assert dict(capped.result) == {"visit_minutes": 150, "billable_minutes": 120, "capped": True}


def test_check_out_before_the_minimum_visit_is_denied_and_the_visit_stays_open(
    issuer: TestIssuer,
) -> None:
    gate = terminal(issuer, "home_care")
    elder = senior()
    scan(gate, issuer, elder, local("09:00"))
    too_short = scan(gate, issuer, elder, local("09:14", seconds=59))
    assert denied(too_short, "visit_too_short", "check_out")
    assert dict(too_short.result) == {"visit_minutes": 14}
    check_out = scan(gate, issuer, elder, local("09:15"))
    assert check_out.action == "check_out"
    assert dict(check_out.result) == {"visit_minutes": 15, "billable_minutes": 15, "capped": False}


def test_visit_longer_than_the_maximum_bills_the_maximum(issuer: TestIssuer) -> None:
    gate = terminal(issuer, "home_care")
    elder = senior()
    scan(gate, issuer, elder, local("08:00"))
    check_out = scan(gate, issuer, elder, local("19:59"))
    assert check_out.action == "check_out"
    assert dict(check_out.result) == {
        "visit_minutes": 719,
        "billable_minutes": 240,
        "capped": True,
    }


def test_visit_open_past_the_abandon_limit_is_never_billed_and_the_scan_checks_in(
    issuer: TestIssuer,
) -> None:
    gate = terminal(issuer, "home_care")
    elder = senior()
    scan(gate, issuer, elder, local("08:00"))
    check_in = scan(gate, issuer, elder, local("20:00"))
    assert check_in.admitted and check_in.action == "check_in"
    assert dict(check_in.result) == {"abandoned_visit": True}
    check_out = scan(gate, issuer, elder, local("20:40"))
    assert dict(check_out.result) == {"visit_minutes": 40, "billable_minutes": 30, "capped": False}
    # The flag is on the one check-in that followed the abandoned visit only.
    assert scan(gate, issuer, elder, local("21:00")).result == {"abandoned_visit": False}


def test_abandon_limit_comes_from_scene_data(issuer: TestIssuer) -> None:
    gate = terminal(issuer, "home_care", {"abandon_after_minutes": 300})
    elder = senior()
    scan(gate, issuer, elder, local("08:00"))
    assert scan(gate, issuer, elder, local("13:00")).result == {"abandoned_visit": True}


def test_second_elder_while_a_visit_is_open_is_denied_visit_in_progress(
    issuer: TestIssuer,
) -> None:
    gate = terminal(issuer, "home_care")
    first, second = senior(), senior(AgeBand.AGE_80_PLUS, Programme.HOME_CARE)
    scan(gate, issuer, first, local("09:00"))
    assert denied(scan(gate, issuer, second, local("09:30")), "visit_in_progress", "check_in")
    assert scan(gate, issuer, first, local("10:00")).result["billable_minutes"] == 60
    check_in = scan(gate, issuer, second, local("10:20"))
    assert check_in.action == "check_in" and check_in.result == {"abandoned_visit": False}
    assert scan(gate, issuer, second, local("11:20")).result["billable_minutes"] == 60


def test_forgotten_check_out_past_the_maximum_is_abandoned_by_the_next_elders_check_in(
    issuer: TestIssuer,
) -> None:
    gate = terminal(issuer, "home_care")
    first, second = senior(), senior()
    scan(gate, issuer, first, local("08:00"))
    assert denied(scan(gate, issuer, second, local("11:59")), "visit_in_progress", "check_in")
    check_in = scan(gate, issuer, second, local("12:00"))
    assert check_in.action == "check_in" and check_in.result == {"abandoned_visit": True}
    # The first elder's visit is gone for good: their scan now meets the second's open visit.
    assert denied(scan(gate, issuer, first, local("12:30")), "visit_in_progress", "check_in")
    assert scan(gate, issuer, second, local("13:00")).result["visit_minutes"] == 60
    assert scan(gate, issuer, first, local("13:10")).action == "check_in"


def test_check_in_in_the_same_second_as_the_previous_check_out_opens_a_visit(
    issuer: TestIssuer,
) -> None:
    gate = terminal(issuer, "home_care")
    first, second = senior(), senior()
    scan(gate, issuer, first, local("09:00"))
    assert scan(gate, issuer, first, local("10:00")).action == "check_out"
    assert scan(gate, issuer, second, local("10:00")).action == "check_in"
    check_out = scan(gate, issuer, second, local("10:30"))
    assert check_out.action == "check_out" and check_out.result["visit_minutes"] == 30


def test_same_elder_can_be_visited_again_after_a_check_out(issuer: TestIssuer) -> None:
    gate = terminal(issuer, "home_care")
    elder = senior()
    actions = [
        scan(gate, issuer, elder, local(time_of_day)).action
        for time_of_day in ("08:00", "09:00", "15:00", "16:00")
    ]
    assert actions == ["check_in", "check_out", "check_in", "check_out"]


def test_card_without_the_home_care_programme_is_denied_not_enrolled(issuer: TestIssuer) -> None:
    gate = terminal(issuer, "home_care")
    card = senior(AgeBand.AGE_80_PLUS, Programme.MEAL_SUBSIDY | Programme.LOW_INCOME)
    assert denied(scan(gate, issuer, card, local("09:00")), "not_enrolled", "check_in")


def test_card_not_enrolled_is_denied_not_enrolled_even_while_another_visit_is_open(
    issuer: TestIssuer,
) -> None:
    gate = terminal(issuer, "home_care")
    scan(gate, issuer, senior(), local("09:00"))
    stranger = senior(AgeBand.AGE_18_59, Programme.NONE)
    assert denied(scan(gate, issuer, stranger, local("09:30")), "not_enrolled", "check_in")


def test_check_out_of_a_card_no_longer_enrolled_is_denied_and_the_visit_stays_open(
    issuer: TestIssuer,
) -> None:
    gate = terminal(issuer, "home_care")
    elder = senior()
    scan(gate, issuer, elder, local("09:00"))
    ended = random_card(
        pseudonym=elder.pseudonym, age_band=elder.age_band, programmes=Programme.MEAL_SUBSIDY
    )
    assert denied(scan(gate, issuer, ended, local("10:00")), "not_enrolled", "check_out")
    assert scan(gate, issuer, elder, local("10:30")).result["visit_minutes"] == 90


def test_open_visit_survives_a_new_adapter_over_the_same_journal(issuer: TestIssuer) -> None:
    gate = terminal(issuer, "home_care")
    elder = senior()
    scan(gate, issuer, elder, local("09:00"))
    bundle = issuer.bundle("eldercare", at=MIDNIGHT, max_age=96 * HOUR, version=2)
    restarted = TestTerminal(bundle, options={"mode": "home_care"}, history=gate.history)
    assert scan(restarted, issuer, elder, local("10:00")).result["billable_minutes"] == 60


def test_canteen_meals_do_not_open_home_care_visits_in_a_shared_journal(
    issuer: TestIssuer,
) -> None:
    canteen = terminal(issuer, "canteen")
    bundle = issuer.bundle("eldercare", at=MIDNIGHT, max_age=96 * HOUR)
    home = TestTerminal(bundle, options={"mode": "home_care"}, history=canteen.history)
    elder = senior()
    assert scan(canteen, issuer, elder, local("12:00")).admitted
    assert scan(home, issuer, elder, local("12:30")).action == "check_in"
    assert scan(canteen, issuer, elder, local("17:00")).result["meals_today"] == 2


# -- codes the verifier refuses -----------------------------------------------------------


@pytest.mark.parametrize("mode", ["canteen", "home_care"])
def test_expired_code_is_denied_with_reason_expired(issuer: TestIssuer, mode: str) -> None:
    gate = terminal(issuer, mode)
    code = issuer.mint(senior(), at=local("11:00"), ttl=60)
    decision = gate.scan(code, at=local("11:10"))
    assert not decision.admitted and decision.reason == "expired" and decision.action == ""


@pytest.mark.parametrize("mode", ["canteen", "home_care"])
def test_revoked_card_is_denied_with_reason_revoked(issuer: TestIssuer, mode: str) -> None:
    card = senior(status_index=17)
    gate = terminal(issuer, mode, revoked=(17,))
    decision = scan(gate, issuer, card, local("11:00"))
    assert not decision.admitted and decision.reason == "revoked"


def test_replayed_canteen_code_is_denied_replayed_and_grants_no_second_subsidy(
    issuer: TestIssuer,
) -> None:
    gate = terminal(issuer, data={"meals_per_day": 3})
    code = issuer.mint(senior(), at=local("11:00"))
    assert gate.scan(code, at=local("11:00")).admitted
    replay = gate.scan(code, at=local("11:00", seconds=20))
    assert not replay.admitted and replay.reason == "replayed"


def test_replayed_check_in_code_is_denied_replayed_not_taken_for_a_check_out(
    issuer: TestIssuer,
) -> None:
    gate = terminal(issuer, "home_care")
    elder = senior()
    code = issuer.mint(elder, at=local("09:00"))
    assert gate.scan(code, at=local("09:00")).action == "check_in"
    assert gate.scan(code, at=local("09:00", seconds=30)).reason == "replayed"
    assert scan(gate, issuer, elder, local("09:30")).result["visit_minutes"] == 30


# -- options and scene data ---------------------------------------------------------------


def test_terminal_without_a_mode_option_is_refused(issuer: TestIssuer) -> None:
    with pytest.raises(SceneError, match="mode"):
        terminal(issuer, mode=None)


@pytest.mark.parametrize("mode", ["kitchen", "Canteen", "home-care", ""])
def test_terminal_with_an_unknown_mode_is_refused(issuer: TestIssuer, mode: str) -> None:
    with pytest.raises(SceneError, match="mode"):
        terminal(issuer, mode=mode)


def test_terminal_without_an_adapter_class_uses_the_eldercare_adapter(
    issuer: TestIssuer,
) -> None:
    gate = terminal(issuer)
    assert type(gate.decider.adapter) is Adapter


@pytest.mark.parametrize(
    "data",
    [
        {"meal_subsidy": {"age_60_64": 300}},
        {"meals_per_day": 0},
        {"meals_per_day": 7},
        {"meal_min_age_band": "unknown"},
        {"meal_min_age_band": "age_90_plus"},
        {"meal_subsidy_fen": {}},
        {"meal_subsidy_fen": {"age_70_79": 500}},
        {"meal_subsidy_fen": {"age_60_64": -1}},
        {"meal_subsidy_fen": {"age_60_64": 10_001}},
        {"meal_subsidy_fen": {"seniors": 300}},
        {"low_income_supplement_fen": -50},
        {"meal_windows": [{"name": "lunch", "start": "13:30", "end": "10:30"}]},
        {"meal_windows": [{"name": "lunch", "start": "11:00", "end": "11:00"}]},
        {"meal_windows": [{"name": "lunch", "start": "10:30", "end": "25:00"}]},
        {"meal_windows": [{"name": "lunch", "start": "10:30", "end": "1330"}]},
        {"meal_windows": [{"name": "supper", "start": "20:00", "end": "21:00"}]},
        {"meal_windows": [{"name": "lunch", "start": "10:30", "end": "13:30", "price": 1}]},
        {
            "meal_windows": [
                {"name": "lunch", "start": "10:30", "end": "13:30"},
                {"name": "lunch", "start": "16:30", "end": "19:00"},
            ]
        },
        {
            "meal_windows": [
                {"name": "dinner", "start": "13:00", "end": "19:00"},
                {"name": "lunch", "start": "10:30", "end": "13:30"},
            ]
        },
        {"min_visit_minutes": 0},
        {"min_visit_minutes": 30, "max_visit_minutes": 20, "billing_unit_minutes": 10},
        {"billing_unit_minutes": 30},
        {"max_visit_minutes": 250},
        {"abandon_after_minutes": 240},
        {"utc_offset_minutes": 900},
    ],
)
def test_invalid_scene_data_is_refused(data: dict[str, Any]) -> None:
    with pytest.raises(SceneError, match="eldercare scene data is not valid"):
        Adapter.parse_data(data)


def test_terminal_with_invalid_scene_data_is_refused(issuer: TestIssuer) -> None:
    with pytest.raises(SceneError, match="meal_min_age_band"):
        terminal(issuer, data={"meal_subsidy_fen": {"age_80_plus": 800}})


def test_touching_meal_windows_are_valid() -> None:
    windows = [
        {"name": "lunch", "start": "10:30", "end": "13:30"},
        {"name": "dinner", "start": "13:30", "end": "19:00"},
    ]
    assert isinstance(Adapter.parse_data({"meal_windows": windows}), EldercareData)


def test_the_documented_scene_data_example_is_valid_and_complete() -> None:
    example = re.search(r"```json\n(.*?)```", DOCS.read_text(), re.DOTALL)
    assert example is not None
    document = json.loads(example.group(1))
    parsed = Adapter.parse_data(document)
    assert set(document) == set(EldercareData.model_fields)
    assert parsed == Adapter.parse_data({})  # the example shows the defaults


def test_every_scene_data_field_is_documented() -> None:
    text = DOCS.read_text()
    for name, info in EldercareData.model_fields.items():
        assert info.description, name
        assert f"`{name}`" in text, name
    for reason in Adapter.reasons + Adapter.actions:
        assert f"`{reason}`" in text, reason


# -- privacy -------------------------------------------------------------------------------


def test_results_carry_no_personal_data(issuer: TestIssuer) -> None:
    elder = senior(AgeBand.AGE_80_PLUS, SENIOR | Programme.LOW_INCOME, status_index=4242)
    subject = issuer.subject(elder, "eldercare")
    canteen, home = terminal(issuer), terminal(issuer, "home_care")
    decisions = [
        scan(canteen, issuer, elder, local(time_of_day))
        for time_of_day in ("07:00", "08:00", "12:00", "17:00", "21:00")
    ] + [
        scan(home, issuer, elder, local(time_of_day))
        for time_of_day in ("09:00", "09:05", "10:00", "11:00")
    ]
    assert {decision.reason for decision in decisions} == {
        "ok",
        "meal_already_taken",
        "daily_limit_reached",
        "outside_meal_hours",
        "visit_too_short",
    }
    allowed = {
        "subsidy",
        "meals_today",
        "meal_window",
        "abandoned_visit",
        "visit_minutes",
        "billable_minutes",
        "capped",
    }
    secrets = {elder.pseudonym.hex(), subject, str(elder.status_index)}
    for decision in decisions:
        assert decision.subject is None  # the journal records the scan's own subject
        assert set(decision.result) <= allowed
        for value in decision.result.values():
            assert value is None or isinstance(value, int | bool | str)
            assert str(value) not in secrets
            assert not isinstance(value, str) or value in {"breakfast", "lunch", "dinner"}
    assert all(event.subject == subject for event in canteen.history.events)
