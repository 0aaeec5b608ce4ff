"""The tourism scene adapter: a scenic spot's turnstile, its ticket classes, one entry per
person per local day, re-entry, daily capacity and opening hours."""

from __future__ import annotations

import itertools
import json
import re
from pathlib import Path
from typing import Any

import pytest

from idcode.claims import AgeBand, Card, Programme, Residency
from idcode.errors import SceneError
from idcode.reasons import Reason
from idcode.scenes import Decision, MemoryHistory
from idcode.testing import TestIssuer, TestTerminal, random_card
from idcode_adapters import adapter_for
from idcode_adapters.tourism import TICKET_CLASSES, Adapter

MINUTE = 60
HOUR = 3600
DAY1 = 1_796_054_400  # 2026-12-01T00:00+08:00, local midnight in the default UTC+8
DAY2 = DAY1 + 24 * HOUR

#: A tariff in the shape of the national guidance for scenic spots: under 6 free, minors half
#: price, 60-64 half price and 65+ free, students half price, disabled people, servicemen and
#: low-income households free, and a resident's discount.
TARIFF = {
    "standard": 8000,
    "resident": 6000,
    "child": 4000,
    "under_6": 0,
    "senior": 4000,
    "elder": 0,
    "student": 4000,
    "disability": 0,
    "veteran": 0,
    "low_income": 0,
}

_status_indices = itertools.count(1)


def local(day: int, hh: int, mm: int) -> int:
    return day + hh * HOUR + mm * MINUTE


def visitor(
    *,
    residency: Residency = Residency.NON_RESIDENT,
    age_band: AgeBand = AgeBand.AGE_18_59,
    programmes: Programme = Programme.NONE,
) -> Card:
    """A card with its own status-list slot, so revoking one revokes no other."""
    return random_card(
        status_index=next(_status_indices),
        residency=residency,
        age_band=age_band,
        programmes=programmes,
    )


@pytest.fixture
def issuer() -> TestIssuer:
    return TestIssuer(now=local(DAY1, 8, 0))


def turnstile(
    issuer: TestIssuer,
    data: dict[str, Any] | None = None,
    *,
    revoked: tuple[int, ...] = (),
    history: MemoryHistory | None = None,
) -> TestTerminal:
    bundle = issuer.bundle("tourism", "yellow-crane-tower", data or {}, revoked=revoked)
    return TestTerminal(bundle, history=history)


def enter(gate: TestTerminal, issuer: TestIssuer, card: Card, at: int) -> Decision:
    """The visitor shows a fresh code at ``at``, as the app would show it."""
    return gate.scan(issuer.mint(card, at=at), at=at)


def admitted_with(decision: Decision) -> tuple[str, object, object]:
    return decision.action, decision.result.get("ticket"), decision.result.get("price")


# -- ticket classes -------------------------------------------------------------------------


def test_the_scene_adapter_is_the_tourism_adapter() -> None:
    assert adapter_for("tourism") is Adapter
    assert Adapter.scene == "tourism"


def test_a_site_without_tariff_admits_everyone_free_with_a_standard_ticket(
    issuer: TestIssuer,
) -> None:
    gate = turnstile(issuer)
    decision = enter(gate, issuer, visitor(age_band=AgeBand.AGE_65_69), local(DAY1, 9, 0))
    assert decision.admitted and decision.reason == "ok"
    assert admitted_with(decision) == ("entry", "standard", 0)


@pytest.mark.parametrize(
    ("residency", "age_band", "programmes", "ticket", "price"),
    [
        (Residency.NON_RESIDENT, AgeBand.AGE_18_59, Programme.NONE, "standard", 8000),
        (Residency.UNKNOWN, AgeBand.UNKNOWN, Programme.NONE, "standard", 8000),
        (Residency.REGISTERED, AgeBand.AGE_18_59, Programme.NONE, "resident", 6000),
        (Residency.PERMIT, AgeBand.AGE_18_59, Programme.NONE, "standard", 8000),
        (Residency.NON_RESIDENT, AgeBand.UNDER_6, Programme.NONE, "under_6", 0),
        (Residency.NON_RESIDENT, AgeBand.AGE_6_17, Programme.NONE, "child", 4000),
        (Residency.NON_RESIDENT, AgeBand.AGE_60_64, Programme.NONE, "senior", 4000),
        (Residency.NON_RESIDENT, AgeBand.AGE_65_69, Programme.NONE, "elder", 0),
        (Residency.NON_RESIDENT, AgeBand.AGE_70_79, Programme.NONE, "elder", 0),
        (Residency.NON_RESIDENT, AgeBand.AGE_80_PLUS, Programme.NONE, "elder", 0),
        (Residency.NON_RESIDENT, AgeBand.AGE_18_59, Programme.STUDENT, "student", 4000),
        (Residency.NON_RESIDENT, AgeBand.AGE_18_59, Programme.DISABILITY, "disability", 0),
        (Residency.NON_RESIDENT, AgeBand.AGE_18_59, Programme.VETERAN, "veteran", 0),
        (Residency.NON_RESIDENT, AgeBand.AGE_18_59, Programme.LOW_INCOME, "low_income", 0),
        (Residency.NON_RESIDENT, AgeBand.AGE_18_59, Programme.HOME_CARE, "standard", 8000),
        # Unknown attributes never give a discount.
        (Residency.REGISTERED, AgeBand.UNKNOWN, Programme.NONE, "resident", 6000),
    ],
)
def test_each_ticket_class_is_given_by_the_codes_attributes_at_the_sites_price(
    issuer: TestIssuer,
    residency: Residency,
    age_band: AgeBand,
    programmes: Programme,
    ticket: str,
    price: int,
) -> None:
    gate = turnstile(issuer, {"prices": TARIFF})
    card = visitor(residency=residency, age_band=age_band, programmes=programmes)
    decision = enter(gate, issuer, card, local(DAY1, 9, 0))
    assert decision.admitted and decision.reason == "ok"
    assert admitted_with(decision) == ("entry", ticket, price)


@pytest.mark.parametrize(
    ("prices", "card", "ticket"),
    [
        # A registered senior: whichever of resident and senior is cheaper.
        (
            {"standard": 8000, "senior": 4000, "resident": 2000},
            visitor(residency=Residency.REGISTERED, age_band=AgeBand.AGE_60_64),
            "resident",
        ),
        (
            {"standard": 8000, "senior": 2000, "resident": 4000},
            visitor(residency=Residency.REGISTERED, age_band=AgeBand.AGE_60_64),
            "senior",
        ),
        # A disabled child: the free class beats the half-price one.
        (
            {"standard": 8000, "child": 4000, "disability": 0},
            visitor(age_band=AgeBand.AGE_6_17, programmes=Programme.DISABILITY),
            "disability",
        ),
        # A student veteran resident: the cheapest of three.
        (
            {"standard": 8000, "student": 4000, "veteran": 3000, "resident": 5000},
            visitor(
                residency=Residency.REGISTERED,
                programmes=Programme.STUDENT | Programme.VETERAN,
            ),
            "veteran",
        ),
        # Same price: the narrower class names the ticket, age before programme before
        # residency.
        (
            {"standard": 8000, "senior": 0, "elder": 0},
            visitor(age_band=AgeBand.AGE_70_79),
            "elder",
        ),
        (
            {"standard": 8000, "child": 0, "under_6": 0},
            visitor(age_band=AgeBand.UNDER_6),
            "under_6",
        ),
        (
            {"standard": 8000, "elder": 0, "disability": 0},
            visitor(age_band=AgeBand.AGE_80_PLUS, programmes=Programme.DISABILITY),
            "elder",
        ),
        (
            {"standard": 8000, "student": 4000, "resident": 4000},
            visitor(residency=Residency.REGISTERED, programmes=Programme.STUDENT),
            "student",
        ),
        (
            {"standard": 8000, "resident": 8000},
            visitor(residency=Residency.REGISTERED),
            "resident",
        ),
        # A class the site does not offer is never given: the next cheapest applies.
        (
            {"standard": 8000, "senior": 4000},
            visitor(age_band=AgeBand.AGE_80_PLUS),
            "senior",
        ),
        (
            {"standard": 8000, "child": 4000},
            visitor(age_band=AgeBand.UNDER_6),
            "child",
        ),
        (
            {"standard": 8000, "student": 4000},
            visitor(age_band=AgeBand.AGE_6_17),
            "standard",
        ),
    ],
)
def test_the_cheapest_applicable_ticket_class_wins(
    issuer: TestIssuer, prices: dict[str, int], card: Card, ticket: str
) -> None:
    gate = turnstile(issuer, {"prices": prices})
    decision = enter(gate, issuer, card, local(DAY1, 9, 0))
    assert admitted_with(decision) == ("entry", ticket, prices[ticket])


def test_senior_from_and_elder_from_set_the_age_steps(issuer: TestIssuer) -> None:
    prices = {"standard": 8000, "senior": 4000, "elder": 0}
    gate = turnstile(
        issuer, {"prices": prices, "senior_from": "age_65_69", "elder_from": "age_80_plus"}
    )
    tickets = {
        band: enter(gate, issuer, visitor(age_band=band), local(DAY1, 9, 0)).result["ticket"]
        for band in (
            AgeBand.AGE_60_64,
            AgeBand.AGE_65_69,
            AgeBand.AGE_70_79,
            AgeBand.AGE_80_PLUS,
        )
    }
    assert tickets == {
        AgeBand.AGE_60_64: "standard",
        AgeBand.AGE_65_69: "senior",
        AgeBand.AGE_70_79: "senior",
        AgeBand.AGE_80_PLUS: "elder",
    }


def test_a_site_free_for_65_plus_alone_needs_only_senior_from(issuer: TestIssuer) -> None:
    gate = turnstile(
        issuer, {"prices": {"standard": 5000, "senior": 0}, "senior_from": "age_65_69"}
    )
    at = local(DAY1, 9, 0)
    assert enter(gate, issuer, visitor(age_band=AgeBand.AGE_60_64), at).result["price"] == 5000
    assert enter(gate, issuer, visitor(age_band=AgeBand.AGE_65_69), at).result["price"] == 0


def test_permit_holders_get_the_resident_class_only_if_the_site_says_so(
    issuer: TestIssuer,
) -> None:
    prices = {"standard": 8000, "resident": 0}
    at = local(DAY1, 9, 0)
    strict = turnstile(issuer, {"prices": prices})
    generous = turnstile(issuer, {"prices": prices, "resident_includes_permit": True})
    holder = visitor(residency=Residency.PERMIT)
    assert admitted_with(enter(strict, issuer, holder, at)) == ("entry", "standard", 8000)
    assert admitted_with(enter(generous, issuer, holder, at)) == ("entry", "resident", 0)
    outsider = visitor(residency=Residency.NON_RESIDENT)
    assert admitted_with(enter(generous, issuer, outsider, at)) == ("entry", "standard", 8000)


# -- one entry per person per local day -----------------------------------------------------


def test_a_second_entry_the_same_day_is_denied_with_reason_already_entered_today(
    issuer: TestIssuer,
) -> None:
    gate = turnstile(issuer, {"prices": TARIFF})
    card = visitor()
    assert enter(gate, issuer, card, local(DAY1, 9, 0)).admitted
    again = enter(gate, issuer, card, local(DAY1, 15, 30))
    assert not again.admitted
    assert again.reason == "already_entered_today"
    assert dict(again.result) == {}


def test_with_reentry_a_second_entry_the_same_day_is_a_free_reentry(issuer: TestIssuer) -> None:
    gate = turnstile(issuer, {"prices": TARIFF, "reentry": True})
    card = visitor(residency=Residency.REGISTERED)
    assert admitted_with(enter(gate, issuer, card, local(DAY1, 9, 0))) == (
        "entry",
        "resident",
        6000,
    )
    for hh in (12, 16):
        decision = enter(gate, issuer, card, local(DAY1, hh, 0))
        assert decision.admitted and decision.reason == "ok"
        assert admitted_with(decision) == ("reentry", "resident", 0)


def test_another_person_is_not_someone_who_entered_today(issuer: TestIssuer) -> None:
    gate = turnstile(issuer, {"prices": TARIFF})
    assert enter(gate, issuer, visitor(), local(DAY1, 9, 0)).admitted
    assert admitted_with(enter(gate, issuer, visitor(), local(DAY1, 9, 1))) == (
        "entry",
        "standard",
        8000,
    )


@pytest.mark.parametrize("reentry", [False, True])
def test_an_entry_at_2359_does_not_count_on_the_next_day_at_0001(
    issuer: TestIssuer, reentry: bool
) -> None:
    gate = turnstile(issuer, {"prices": TARIFF, "reentry": reentry})
    card = visitor()
    assert admitted_with(enter(gate, issuer, card, local(DAY1, 23, 59))) == (
        "entry",
        "standard",
        8000,
    )
    # A new local day: a new ticket at the full price, not a re-entry.
    assert admitted_with(enter(gate, issuer, card, local(DAY2, 0, 1))) == (
        "entry",
        "standard",
        8000,
    )
    again = enter(gate, issuer, card, local(DAY2, 0, 2))
    if reentry:
        assert admitted_with(again) == ("reentry", "standard", 0)
    else:
        assert again.reason == "already_entered_today"


def test_an_entry_at_0001_still_counts_at_2359_the_same_day(issuer: TestIssuer) -> None:
    gate = turnstile(issuer, {"prices": TARIFF})
    card = visitor()
    assert enter(gate, issuer, card, local(DAY2, 0, 1)).admitted
    assert enter(gate, issuer, card, local(DAY2, 23, 59)).reason == "already_entered_today"


def test_the_day_follows_the_scene_datas_utc_offset(issuer: TestIssuer) -> None:
    # At UTC+0 the local day changes at 08:00 Beijing time, not at Beijing midnight.
    gate = turnstile(issuer, {"prices": TARIFF, "utc_offset_minutes": 0})
    card = visitor()
    assert enter(gate, issuer, card, local(DAY1, 23, 59)).admitted
    assert enter(gate, issuer, card, local(DAY2, 0, 1)).reason == "already_entered_today"
    assert enter(gate, issuer, card, local(DAY2, 8, 0)).admitted


def test_a_restarted_turnstile_remembers_todays_entries_from_its_journal(
    issuer: TestIssuer,
) -> None:
    journal = MemoryHistory()
    card = visitor()
    assert enter(turnstile(issuer, history=journal), issuer, card, local(DAY1, 9, 0)).admitted
    restarted = turnstile(issuer, history=journal)
    assert enter(restarted, issuer, card, local(DAY1, 9, 5)).reason == "already_entered_today"


def test_turnstiles_sharing_a_journal_share_the_entry_rule_and_capacity(
    issuer: TestIssuer,
) -> None:
    journal = MemoryHistory()
    data = {"prices": TARIFF, "daily_capacity": 1}
    north = turnstile(issuer, data, history=journal)
    south = turnstile(issuer, data, history=journal)
    card = visitor()
    assert enter(north, issuer, card, local(DAY1, 9, 0)).admitted
    assert enter(south, issuer, card, local(DAY1, 9, 1)).reason == "already_entered_today"
    assert enter(south, issuer, visitor(), local(DAY1, 9, 2)).reason == "capacity_reached"


# -- daily capacity -------------------------------------------------------------------------


def test_capacity_admits_exactly_n_first_entries_then_denies_with_capacity_reached(
    issuer: TestIssuer,
) -> None:
    gate = turnstile(issuer, {"prices": TARIFF, "daily_capacity": 3})
    at = local(DAY1, 9, 0)
    for minute in range(3):
        assert enter(gate, issuer, visitor(), at + minute * MINUTE).admitted
    full = enter(gate, issuer, visitor(age_band=AgeBand.UNDER_6), at + 3 * MINUTE)
    assert not full.admitted
    assert full.reason == "capacity_reached"
    assert dict(full.result) == {}


def test_capacity_is_per_local_day(issuer: TestIssuer) -> None:
    gate = turnstile(issuer, {"prices": TARIFF, "daily_capacity": 1})
    assert enter(gate, issuer, visitor(), local(DAY1, 23, 58)).admitted
    assert enter(gate, issuer, visitor(), local(DAY1, 23, 59)).reason == "capacity_reached"
    assert enter(gate, issuer, visitor(), local(DAY2, 0, 1)).admitted


def test_reentries_pass_when_full_and_do_not_consume_capacity(issuer: TestIssuer) -> None:
    gate = turnstile(issuer, {"prices": TARIFF, "daily_capacity": 2, "reentry": True})
    first = visitor()
    assert enter(gate, issuer, first, local(DAY1, 9, 0)).action == "entry"
    for minute in range(1, 4):
        assert enter(gate, issuer, first, local(DAY1, 10, minute)).action == "reentry"
    assert enter(gate, issuer, visitor(), local(DAY1, 11, 0)).action == "entry"
    assert enter(gate, issuer, visitor(), local(DAY1, 11, 1)).reason == "capacity_reached"
    # Full now, yet both who are in today may come back.
    assert admitted_with(enter(gate, issuer, first, local(DAY1, 12, 0))) == (
        "reentry",
        "standard",
        0,
    )


def test_a_second_entry_when_full_and_without_reentry_is_already_entered_today(
    issuer: TestIssuer,
) -> None:
    gate = turnstile(issuer, {"prices": TARIFF, "daily_capacity": 1})
    card = visitor()
    assert enter(gate, issuer, card, local(DAY1, 9, 0)).admitted
    assert enter(gate, issuer, card, local(DAY1, 9, 1)).reason == "already_entered_today"


def test_denied_scans_do_not_consume_capacity(issuer: TestIssuer) -> None:
    lost = visitor()
    gate = turnstile(
        issuer,
        {"prices": TARIFF, "daily_capacity": 2, "opens_at": "08:30"},
        revoked=(lost.status_index,),
    )
    at = local(DAY1, 9, 0)
    closed = enter(gate, issuer, visitor(), local(DAY1, 8, 29))
    inside = visitor()
    inside_code = issuer.mint(inside, at=at)
    assert gate.scan(inside_code, at=at).admitted
    denials = [
        closed,
        enter(gate, issuer, lost, at + 1),
        gate.scan(issuer.mint(visitor(), at=at - 2 * HOUR), at=at + 2),
        gate.scan(inside_code, at=at + 3),
        enter(gate, issuer, inside, at + 4),
    ]
    assert [(d.admitted, d.reason) for d in denials] == [
        (False, "closed"),
        (False, "revoked"),
        (False, "expired"),
        (False, "replayed"),
        (False, "already_entered_today"),
    ]
    assert enter(gate, issuer, visitor(), at + MINUTE).admitted  # the second of two
    assert enter(gate, issuer, visitor(), at + 2 * MINUTE).reason == "capacity_reached"


# -- opening hours ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "hours",
    [{"opens_at": "08:00", "closes_at": "17:30"}, {"opens_at": 480, "closes_at": 1050}],
)
def test_outside_opening_hours_entry_is_denied_with_reason_closed(
    issuer: TestIssuer, hours: dict[str, Any]
) -> None:
    gate = turnstile(issuer, {"prices": TARIFF, **hours})
    card = visitor()
    early = enter(gate, issuer, card, local(DAY1, 7, 59))
    assert (early.admitted, early.reason, dict(early.result)) == (False, "closed", {})
    assert admitted_with(enter(gate, issuer, card, local(DAY1, 8, 0))) == (
        "entry",
        "standard",
        8000,
    )
    assert enter(gate, issuer, visitor(), local(DAY1, 17, 29)).admitted
    assert enter(gate, issuer, visitor(), local(DAY1, 17, 30)).reason == "closed"
    assert enter(gate, issuer, visitor(), local(DAY1, 23, 59)).reason == "closed"


def test_reentry_after_closing_time_is_denied_with_reason_closed(issuer: TestIssuer) -> None:
    gate = turnstile(issuer, {"prices": TARIFF, "reentry": True, "closes_at": "18:00"})
    card = visitor()
    assert enter(gate, issuer, card, local(DAY1, 9, 0)).admitted
    assert enter(gate, issuer, card, local(DAY1, 18, 0)).reason == "closed"


def test_closing_at_2400_admits_until_midnight(issuer: TestIssuer) -> None:
    gate = turnstile(issuer, {"prices": TARIFF, "opens_at": "18:00", "closes_at": "24:00"})
    assert enter(gate, issuer, visitor(), local(DAY1, 23, 59)).admitted
    assert enter(gate, issuer, visitor(), local(DAY2, 0, 1)).reason == "closed"


# -- codes the verifier refuses ---------------------------------------------------------------


def test_an_expired_code_is_denied_with_reason_expired(issuer: TestIssuer) -> None:
    gate = turnstile(issuer, {"prices": TARIFF})
    at = local(DAY1, 9, 0)
    decision = gate.scan(issuer.mint(visitor(), at=at - 5 * MINUTE, ttl=60), at=at)
    assert (decision.admitted, decision.reason) == (False, Reason.EXPIRED.value)
    assert dict(decision.result) == {}


def test_a_revoked_card_is_denied_with_reason_revoked(issuer: TestIssuer) -> None:
    card = visitor(age_band=AgeBand.AGE_80_PLUS)
    gate = turnstile(issuer, {"prices": TARIFF}, revoked=(card.status_index,))
    decision = enter(gate, issuer, card, local(DAY1, 9, 0))
    assert (decision.admitted, decision.reason) == (False, Reason.REVOKED.value)
    assert enter(gate, issuer, visitor(), local(DAY1, 9, 0)).admitted  # others are fine


@pytest.mark.parametrize("reentry", [False, True])
def test_a_replayed_code_is_denied_with_reason_replayed_even_where_reentry_is_allowed(
    issuer: TestIssuer, reentry: bool
) -> None:
    gate = turnstile(issuer, {"prices": TARIFF, "reentry": reentry})
    at = local(DAY1, 9, 0)
    code = issuer.mint(visitor(), at=at)
    assert gate.scan(code, at=at).admitted
    replay = gate.scan(code, at=at + 10)
    assert (replay.admitted, replay.reason) == (False, Reason.REPLAYED.value)


# -- results --------------------------------------------------------------------------------


def test_results_carry_only_the_ticket_class_and_price(issuer: TestIssuer) -> None:
    gate = turnstile(issuer, {"prices": TARIFF, "reentry": True, "daily_capacity": 2})
    cards = [
        visitor(
            residency=Residency.REGISTERED,
            age_band=AgeBand.AGE_65_69,
            programmes=Programme.DISABILITY | Programme.LOW_INCOME,
        ),
        visitor(residency=Residency.PERMIT, age_band=AgeBand.AGE_6_17),
        visitor(),
    ]
    at = local(DAY1, 9, 0)
    decisions = [enter(gate, issuer, card, at + i * MINUTE) for i, card in enumerate(cards * 2)]
    personal = {card.pseudonym.hex() for card in cards}
    personal |= {issuer.subject(card, "tourism") for card in cards}
    assert {d.action for d in decisions} == {"entry", "reentry", ""}
    for decision in decisions:
        assert decision.reason in {"ok", *Adapter.reasons}
        assert decision.action in {"", *Adapter.actions}
        if decision.admitted:
            assert set(decision.result) == {"ticket", "price"}
            assert decision.result["ticket"] in TICKET_CLASSES
            assert type(decision.result["price"]) is int
        else:
            assert dict(decision.result) == {}
        assert not {str(value) for value in decision.result.values()} & personal
    assert all(
        event.subject not in {card.pseudonym.hex() for card in cards}
        for event in gate.history.events
    )


# -- scene data -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        {"prices": {"standard": 8000, "vip": 20000}},  # unknown class
        {"prices": {"standard": -1}},  # negative price
        {"prices": {"standard": 8000, "child": -100}},
        {"prices": {"standard": 100_000_000}},  # a million yuan: digits to spare
        {"prices": {"standard": "8000"}},  # fen are integers, not text
        {"prices": {"standard": 80.5}},
        {"prices": {"standard": True}},
        {"prices": {"resident": 0}},  # no standard class
        {"prices": {}},
        {"price": {"standard": 8000}},  # unknown field
        {"reentry": True, "capacity": 100},
        {"senior_from": "age_18_59"},  # not a senior band
        {"senior_from": "AGE_60_64"},
        {"prices": {"standard": 8000, "senior": 4000, "elder": 0}, "elder_from": "age_60_64"},
        {
            "prices": {"standard": 8000, "senior": 4000, "elder": 0},
            "senior_from": "age_70_79",
            "elder_from": "age_70_79",
        },
        {"prices": {"standard": 8000, "senior": 4000, "elder": 5000}},  # elder never sold
        {"prices": {"standard": 8000, "child": 0, "under_6": 100}},
        {"prices": {"standard": 8000, "resident": 9000}},
        {"daily_capacity": 0},
        {"daily_capacity": -5},
        {"daily_capacity": "100"},
        {"opens_at": "8:00"},
        {"opens_at": "08:60"},
        {"opens_at": "08h00"},
        {"opens_at": -1},
        {"closes_at": "24:01"},
        {"closes_at": 1441},
        {"opens_at": "18:00", "closes_at": "08:00"},  # overnight
        {"opens_at": "08:00", "closes_at": "08:00"},
        {"opens_at": "24:00"},
        {"reentry": "yes"},
    ],
)
def test_invalid_scene_data_is_refused_with_a_scene_error(data: dict[str, Any]) -> None:
    with pytest.raises(SceneError, match="tourism scene data is not valid"):
        Adapter.parse_data(data)


def test_a_terminal_refuses_a_bundle_with_invalid_scene_data(issuer: TestIssuer) -> None:
    with pytest.raises(SceneError, match=r"prices\.standard"):
        turnstile(issuer, {"prices": {"standard": -800}})


def test_valid_scene_data_reads_clock_times_as_minutes_after_midnight() -> None:
    data = Adapter.parse_data(
        {
            "prices": TARIFF,
            "senior_from": "age_60_64",
            "elder_from": "age_65_69",
            "resident_includes_permit": True,
            "reentry": True,
            "daily_capacity": 30_000,
            "opens_at": "07:30",
            "closes_at": "24:00",
        }
    )
    dumped = data.model_dump()
    assert (dumped["opens_at"], dumped["closes_at"]) == (450, 1440)
    assert dumped["prices"] == TARIFF
    # The same data read back (as a service would store it) is the same data.
    assert Adapter.parse_data(dumped) == data


def test_an_elder_step_below_senior_from_is_fine_when_elder_is_not_offered() -> None:
    data = Adapter.parse_data(
        {"prices": {"standard": 8000, "senior": 0}, "senior_from": "age_70_79"}
    )
    assert data.model_dump()["senior_from"] == "age_70_79"


def test_the_scene_documentation_example_is_valid_and_lists_every_class_and_reason() -> None:
    page = (Path(__file__).parents[2] / "docs" / "scenes" / "tourism.md").read_text()
    example = re.search(r"```json\n(.*?)```", page, re.DOTALL)
    assert example is not None
    data = Adapter.parse_data(json.loads(example[1])).model_dump()
    assert data["prices"] == TARIFF
    assert (data["opens_at"], data["closes_at"], data["daily_capacity"]) == (480, 1050, 30_000)
    for name in (*TICKET_CLASSES, *Adapter.reasons, *Adapter.actions):
        assert f"| `{name}` |" in page
