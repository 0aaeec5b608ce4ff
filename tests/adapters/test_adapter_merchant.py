"""The merchant scene adapter: a shop's till grants a resident, senior or programme discount
on the code's coarse attributes, within a per-citizen daily cap, and tells the till only yes
or no and the discount's size; the settlement recomputes the cap across the merchant's tills
and reimburses what the city funds."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from idcode.claims import AgeBand, Card, Programme, Residency
from idcode.errors import SceneError
from idcode.scenes import Event, MemoryHistory
from idcode.testing import TestIssuer, TestTerminal, random_card
from idcode_adapters import adapter_for
from idcode_adapters.merchant import Adapter, MerchantData

HOUR = 3600
DAY1 = 1_796_054_400  # 2026-12-01T00:00+08:00, local midnight in the default UTC+8
DAY2 = DAY1 + 24 * HOUR
NOON = DAY1 + 12 * HOUR

SENIOR = {"name": "senior", "age_from": "age_65_69", "amount_fen": 500, "funded_by": "city"}
RESIDENT = {"name": "resident", "residency": "registered", "percent": 5, "funded_by": "merchant"}
WELFARE = {
    "name": "welfare",
    "programmes": ["low_income", "disability"],
    "percent": 10,
    "max_fen": 2000,
    "funded_by": "merchant",
}
SHOP = {"discounts": [SENIOR, WELFARE, RESIDENT], "daily_uses": 2}

#: What a decision may carry: the discount granted or asked for, its size and funding, and the
#: day's count. Never the age band, residency or programmes behind it.
RESULT_FIELDS = {
    "discount",
    "percent",
    "max_fen",
    "amount_fen",
    "funded_by",
    "use",
    "uses_left",
    "daily_uses",
}

_status_indices = itertools.count(1)


def customer(
    *,
    residency: Residency = Residency.NON_RESIDENT,
    age_band: AgeBand = AgeBand.AGE_18_59,
    programmes: Programme = Programme.NONE,
) -> Card:
    return random_card(
        status_index=next(_status_indices),
        residency=residency,
        age_band=age_band,
        programmes=programmes,
    )


@pytest.fixture
def issuer() -> TestIssuer:
    return TestIssuer(now=NOON)


def till(
    issuer: TestIssuer,
    data: dict[str, Any] | None = None,
    *,
    site: str = "shop-1",
    history: MemoryHistory | None = None,
    **options: str,
) -> TestTerminal:
    bundle = issuer.bundle("merchant", site, SHOP if data is None else data)
    return TestTerminal(bundle, history=history, options=options)


def scan(terminal: TestTerminal, issuer: TestIssuer, card: Card, at: int = NOON) -> Any:
    return terminal.scan(issuer.mint(card, at=at), at=at)


def test_the_merchant_scene_is_built_in_and_site_scoped_without_subjects_on_the_line() -> None:
    assert adapter_for("merchant") is Adapter
    assert Adapter.subject_scope == "site"
    assert Adapter.subject_in_decision_line is False


# -- who gets which discount ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("band", "eligible"),
    [
        (AgeBand.AGE_60_64, False),
        (AgeBand.AGE_65_69, True),
        (AgeBand.AGE_70_79, True),
        (AgeBand.AGE_80_PLUS, True),
        (AgeBand.AGE_18_59, False),
        (AgeBand.UNDER_6, False),
        (AgeBand.UNKNOWN, False),
    ],
)
def test_a_senior_discount_starts_at_its_age_band_and_never_for_an_unknown_age(
    issuer: TestIssuer, band: AgeBand, eligible: bool
) -> None:
    terminal = till(issuer, discount="senior")
    decision = scan(terminal, issuer, customer(age_band=band))
    assert decision.admitted is eligible
    if eligible:
        assert dict(decision.result) == {
            "discount": "senior",
            "amount_fen": 500,
            "funded_by": "city",
            "use": 1,
            "uses_left": 1,
        }
    else:
        assert (decision.reason, decision.action) == ("not_eligible", "discount")
        assert dict(decision.result) == {"discount": "senior"}


@pytest.mark.parametrize(
    ("rule", "residency", "eligible"),
    [
        ("registered", Residency.REGISTERED, True),
        ("registered", Residency.PERMIT, False),
        ("registered", Residency.NON_RESIDENT, False),
        ("registered", Residency.UNKNOWN, False),
        ("registered_or_permit", Residency.PERMIT, True),
        ("registered_or_permit", Residency.REGISTERED, True),
        ("registered_or_permit", Residency.NON_RESIDENT, False),
        ("registered_or_permit", Residency.UNKNOWN, False),
    ],
)
def test_a_resident_discount_follows_its_residency_rule(
    issuer: TestIssuer, rule: str, residency: Residency, eligible: bool
) -> None:
    data = {"discounts": [{**RESIDENT, "residency": rule}]}
    decision = scan(till(issuer, data), issuer, customer(residency=residency))
    assert decision.admitted is eligible
    assert decision.reason == ("ok" if eligible else "not_eligible")


@pytest.mark.parametrize(
    ("programmes", "eligible"),
    [
        (Programme.LOW_INCOME, True),
        (Programme.DISABILITY, True),
        (Programme.LOW_INCOME | Programme.VETERAN, True),
        (Programme.VETERAN | Programme.STUDENT, False),
        (Programme.NONE, False),
    ],
)
def test_a_programme_discount_needs_one_of_its_programmes(
    issuer: TestIssuer, programmes: Programme, eligible: bool
) -> None:
    decision = scan(till(issuer, discount="welfare"), issuer, customer(programmes=programmes))
    assert decision.admitted is eligible
    if eligible:
        assert dict(decision.result) == {
            "discount": "welfare",
            "percent": 10,
            "max_fen": 2000,
            "funded_by": "merchant",
            "use": 1,
            "uses_left": 1,
        }


def test_every_condition_of_a_discount_must_hold(issuer: TestIssuer) -> None:
    both = {"name": "resident_senior", "age_from": "age_60_64", "residency": "registered"}
    data = {"discounts": [{**both, "amount_fen": 300, "funded_by": "city"}]}
    terminal = till(issuer, data)
    old_resident = customer(age_band=AgeBand.AGE_60_64, residency=Residency.REGISTERED)
    old_visitor = customer(age_band=AgeBand.AGE_70_79, residency=Residency.NON_RESIDENT)
    young_resident = customer(age_band=AgeBand.AGE_18_59, residency=Residency.REGISTERED)
    assert [scan(terminal, issuer, c).admitted for c in (old_resident, old_visitor)] == [
        True,
        False,
    ]
    assert scan(terminal, issuer, young_resident).reason == "not_eligible"


def test_without_an_asked_discount_the_first_that_applies_in_the_merchants_order_is_granted(
    issuer: TestIssuer,
) -> None:
    terminal = till(issuer)  # senior, welfare, resident: best first
    everything = customer(
        age_band=AgeBand.AGE_80_PLUS,
        residency=Residency.REGISTERED,
        programmes=Programme.DISABILITY,
    )
    poor_resident = customer(residency=Residency.REGISTERED, programmes=Programme.LOW_INCOME)
    resident = customer(residency=Residency.REGISTERED)
    nobody = customer(age_band=AgeBand.AGE_60_64, residency=Residency.PERMIT)
    granted = [scan(terminal, issuer, c) for c in (everything, poor_resident, resident, nobody)]
    assert [d.result.get("discount") for d in granted] == ["senior", "welfare", "resident", None]
    assert (granted[3].reason, dict(granted[3].result)) == ("not_eligible", {})


def test_a_till_asking_for_one_discount_never_grants_another(issuer: TestIssuer) -> None:
    terminal = till(issuer, discount="resident")
    senior_visitor = customer(age_band=AgeBand.AGE_80_PLUS, residency=Residency.NON_RESIDENT)
    decision = scan(terminal, issuer, senior_visitor)
    assert (decision.reason, dict(decision.result)) == ("not_eligible", {"discount": "resident"})


def test_a_till_asking_for_a_discount_the_merchant_no_longer_offers_says_so_to_everyone(
    issuer: TestIssuer,
) -> None:
    terminal = till(issuer, discount="student")
    for card in (customer(age_band=AgeBand.AGE_80_PLUS), customer()):
        decision = scan(terminal, issuer, card)
        assert (decision.reason, dict(decision.result)) == (
            "discount_not_offered",
            {"discount": "student"},
        )


@pytest.mark.parametrize("option", ["Senior", "senior discount", "", "x" * 33, "1st"])
def test_a_till_with_a_malformed_discount_option_refuses_to_start(
    issuer: TestIssuer, option: str
) -> None:
    with pytest.raises(SceneError, match="option discount must name a discount"):
        till(issuer, discount=option)


def test_a_code_the_verifier_refuses_gets_its_reason_and_no_discount(issuer: TestIssuer) -> None:
    terminal = till(issuer)
    code = issuer.mint(customer(age_band=AgeBand.AGE_70_79), at=NOON)
    assert terminal.scan(code, at=NOON).admitted
    again = terminal.scan(code, at=NOON + 1)
    late = terminal.scan(issuer.mint(customer(age_band=AgeBand.AGE_70_79), at=NOON), at=NOON + 600)
    assert [(d.reason, d.action, dict(d.result)) for d in (again, late)] == [
        ("replayed", "", {}),
        ("expired", "", {}),
    ]


# -- the daily cap ----------------------------------------------------------------------------


def test_the_daily_cap_counts_every_discount_of_the_merchant_and_resets_at_local_midnight(
    issuer: TestIssuer,
) -> None:
    senior = till(issuer, discount="senior")
    resident = till(issuer, discount="resident", history=senior.history)  # one shop, one journal
    card = customer(age_band=AgeBand.AGE_65_69, residency=Residency.REGISTERED)
    first = scan(senior, issuer, card, NOON)
    second = scan(resident, issuer, card, NOON + 60)
    third = scan(senior, issuer, card, NOON + 120)
    just_before_midnight = scan(resident, issuer, card, DAY2 - 1)
    next_day = scan(senior, issuer, card, DAY2)
    assert [(d.reason, d.result.get("use")) for d in (first, second)] == [("ok", 1), ("ok", 2)]
    assert second.result["uses_left"] == 0
    for capped in (third, just_before_midnight):
        assert (capped.reason, capped.action) == ("daily_cap_reached", "discount")
    assert dict(third.result) == {"discount": "senior", "daily_uses": 2}
    assert dict(just_before_midnight.result) == {"discount": "resident", "daily_uses": 2}
    assert (next_day.reason, next_day.result["use"]) == ("ok", 1)


def test_the_cap_is_per_citizen_and_refused_scans_do_not_use_it(issuer: TestIssuer) -> None:
    terminal = till(issuer, {**SHOP, "daily_uses": 1}, discount="senior")
    one, other = customer(age_band=AgeBand.AGE_70_79), customer(age_band=AgeBand.AGE_70_79)
    young = customer()
    assert [scan(terminal, issuer, young).reason for _ in range(3)] == ["not_eligible"] * 3
    assert scan(terminal, issuer, one).admitted
    assert scan(terminal, issuer, other).admitted
    assert scan(terminal, issuer, one).reason == "daily_cap_reached"


def test_tills_with_their_own_journals_each_grant_up_to_the_cap_offline(
    issuer: TestIssuer,
) -> None:
    """Offline, a till knows only its journal; the settlement recomputes the cap (below)."""
    data = {**SHOP, "daily_uses": 1}
    card = customer(age_band=AgeBand.AGE_70_79)
    assert scan(till(issuer, data), issuer, card).admitted
    assert scan(till(issuer, data), issuer, card).admitted


# -- nothing about the person -----------------------------------------------------------------


def test_no_decision_carries_an_attribute_or_a_subject(issuer: TestIssuer) -> None:
    terminals = [till(issuer), till(issuer, discount="senior"), till(issuer, discount="welfare")]
    cards = [
        customer(residency=residency, age_band=band, programmes=programmes)
        for residency in Residency
        for band in AgeBand
        for programmes in (Programme.NONE, Programme.LOW_INCOME | Programme.MEAL_SUBSIDY)
    ]
    attribute_words = {m.name.lower() for m in (*Residency, *AgeBand, *Programme) if m.name}
    for terminal in terminals:
        for card in cards:
            decision = scan(terminal, issuer, card)
            assert set(decision.result) <= RESULT_FIELDS
            assert decision.subject is None
            texts = {v for v in decision.result.values() if isinstance(v, str)}
            assert not texts & attribute_words, decision


def test_two_merchants_see_different_subjects_for_the_same_card(issuer: TestIssuer) -> None:
    card = customer(age_band=AgeBand.AGE_70_79)
    one, two = till(issuer, site="shop-1"), till(issuer, site="shop-2")
    scan(one, issuer, card)
    scan(two, issuer, card)
    first, second = one.history.events[0].subject, two.history.events[0].subject
    assert first == issuer.subject(card, "merchant", "shop-1")
    assert second == issuer.subject(card, "merchant", "shop-2")
    assert first != second
    assert first != issuer.subject(card, "merchant", "shop-3")


# -- scene data -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({}, "discounts: Field required"),
        ({"discounts": []}, "discounts: Tuple should have at least 1 item"),
        ({"discounts": [SENIOR] * 5}, "at most 4 items"),
        ({"discounts": [SENIOR, {**RESIDENT, "name": "senior"}]}, "same name"),
        ({"discounts": [SENIOR], "daily_uses": 0}, "greater than or equal to 1"),
        ({"discounts": [SENIOR], "daily_uses": 21}, "less than or equal to 20"),
        ({"discounts": [SENIOR], "daily_uses": "2"}, "daily_uses: Input should be a valid integer"),
        (
            {"discounts": [SENIOR], "daily_uses": True},
            "daily_uses: Input should be a valid integer",
        ),
        ({"discounts": [SENIOR], "daily_uses": 1.5}, "daily_uses: Input should be a valid integer"),
        ({"discounts": [SENIOR], "cashback": 1}, "Extra inputs are not permitted"),
        ({"discounts": [{**SENIOR, "name": "Senior"}]}, "should match pattern"),
        ({"discounts": [{**SENIOR, "name": "x" * 33}]}, "should match pattern"),
        ({"discounts": [{**SENIOR, "age_from": "age_18_59"}]}, "age_from"),
        ({"discounts": [{**SENIOR, "age_from": "unknown"}]}, "age_from"),
        ({"discounts": [{**RESIDENT, "residency": "permit"}]}, "residency"),
        ({"discounts": [{**WELFARE, "programmes": ["rich"]}]}, "programmes"),
        ({"discounts": [{**WELFARE, "programmes": ["low_income"] * 2}]}, "listed twice"),
        (
            {"discounts": [{"name": "all", "percent": 10, "funded_by": "merchant"}]},
            "at least one condition",
        ),
        ({"discounts": [{**SENIOR, "percent": 10}]}, "exactly one of percent and amount_fen"),
        (
            {"discounts": [{k: v for k, v in SENIOR.items() if k != "amount_fen"}]},
            "exactly one of percent and amount_fen",
        ),
        ({"discounts": [{**SENIOR, "max_fen": 100}]}, "max_fen caps a percent discount only"),
        ({"discounts": [{**RESIDENT, "funded_by": "city"}]}, "must be a fixed amount_fen"),
        ({"discounts": [{**RESIDENT, "funded_by": "bank"}]}, "funded_by"),
        ({"discounts": [{k: v for k, v in SENIOR.items() if k != "funded_by"}]}, "funded_by"),
        ({"discounts": [{**SENIOR, "amount_fen": 0}]}, "greater than or equal to 1"),
        ({"discounts": [{**SENIOR, "amount_fen": 100_001}]}, "less than or equal to 100000"),
        ({"discounts": [{**SENIOR, "amount_fen": 5e2}]}, "amount_fen: Input should be a valid"),
        ({"discounts": [{**RESIDENT, "percent": 0}]}, "greater than or equal to 1"),
        ({"discounts": [{**RESIDENT, "percent": 101}]}, "less than or equal to 100"),
        ({"discounts": [{**WELFARE, "max_fen": -1}]}, "greater than or equal to 1"),
        ({"discounts": [{**SENIOR, "amount_fen": float("nan")}]}, "not JSON"),
        ({"discounts": "senior"}, "discounts"),
    ],
)
def test_hostile_or_mistaken_scene_data_is_refused_with_the_field_named(
    data: dict[str, Any], message: str
) -> None:
    with pytest.raises(SceneError, match="merchant scene data is not") as refused:
        Adapter.parse_data(data)
    assert message in str(refused.value)


def test_a_till_given_a_bundle_with_a_city_funded_percentage_refuses_it(issuer: TestIssuer) -> None:
    """The service refuses such data at the PUT; a bundle holding it anyway (an older service,
    a hand-made bundle) is refused by the till, not applied."""
    bundle = issuer.bundle("merchant", "shop-1", {"discounts": [{**RESIDENT, "funded_by": "city"}]})
    with pytest.raises(SceneError, match="a city-funded discount must be a fixed amount_fen"):
        TestTerminal(bundle)


def test_the_example_scene_data_is_valid() -> None:
    import json
    from pathlib import Path

    text = (Path(__file__).resolve().parents[2] / "examples/shop-till/scene.json").read_text()
    data = Adapter.parse_data(json.loads(text))
    assert isinstance(data, MerchantData) and data.discounts[0].funded_by == "city"


# -- the settlement ---------------------------------------------------------------------------


def _event(at: int, result: dict[str, Any], *, admitted: bool = True, reason: str = "ok") -> Event:
    return Event(f"e{at}", at, "a" * 24, admitted, reason, "discount", result)


def _settle(data: dict[str, Any], events: list[Event]) -> dict[str, int]:
    return dict(Adapter.settle(Adapter.parse_data(data), events))


def test_the_settlement_recomputes_the_cap_across_tills_and_reimburses_only_within_it(
    issuer: TestIssuer,
) -> None:
    data = {**SHOP, "daily_uses": 1}
    card = customer(age_band=AgeBand.AGE_70_79)
    lanes = [till(issuer, data, discount="senior"), till(issuer, data, discount="senior")]
    for lane in lanes:
        assert scan(lane, issuer, card).admitted  # each till alone: within the cap
    events = [event for lane in lanes for event in lane.history.events]
    assert _settle(data, events) == {
        "uses": 2,
        "over_cap": 1,
        "reimbursed_uses": 1,
        "reimbursed_fen": 500,
    }


def test_the_settlement_reimburses_city_funded_amounts_never_more_than_recorded_or_offered() -> (
    None
):
    senior = {"discount": "senior", "amount_fen": 500, "funded_by": "city"}
    resident = {"discount": "resident", "percent": 5, "funded_by": "merchant"}
    events = [
        _event(1, {**senior, "amount_fen": 99_999}),  # a tampered upload: the offer's 500
        _event(2, {}, admitted=False, reason="not_eligible"),  # denials count for nothing
        _event(3, resident),  # merchant-funded: a use, nothing reimbursed
        _event(4, {**senior, "amount_fen": 300}),  # recorded under an older, smaller offer
        _event(5, senior),  # beyond the cap of 3
    ]
    assert _settle(SHOP | {"daily_uses": 3}, events) == {
        "uses": 4,
        "over_cap": 1,
        "reimbursed_uses": 2,
        "reimbursed_fen": 800,
    }


def test_a_discount_the_merchant_dropped_or_now_funds_itself_is_not_reimbursed() -> None:
    senior = {"discount": "senior", "amount_fen": 500, "funded_by": "city"}
    events = [_event(1, senior), _event(2, {**senior, "discount": "gone"}), _event(3, {})]
    own = {**SENIOR, "funded_by": "merchant"}
    assert _settle({"discounts": [own], "daily_uses": 5}, events) == {
        "uses": 3,
        "over_cap": 0,
        "reimbursed_uses": 0,
        "reimbursed_fen": 0,
    }
    assert _settle(SHOP | {"daily_uses": 5}, events)["reimbursed_fen"] == 500
