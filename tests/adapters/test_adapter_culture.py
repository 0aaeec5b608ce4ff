"""The culture scene: timed-entry slots with reservations, walk-ins within capacity, age limits
mapped conservatively onto the code's age bands, and the library's loan desk."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

import idcode_adapters.culture as culture
from idcode.claims import AgeBand, Card
from idcode.errors import SceneError
from idcode.scenes import Decision, MemoryHistory, load_adapter
from idcode.testing import TestIssuer, TestTerminal, random_card
from idcode_adapters.culture import Adapter

CHINA = timezone(timedelta(hours=8))
MUSEUM = "city-museum"
DAY = "2026-12-01"  # the day of tests.conftest.NOW, local time


def local(clock: str, day: str = DAY) -> int:
    """A UTC+8 wall-clock time ("HH:MM" or "HH:MM:SS") of the test day as Unix time."""
    return int(datetime.fromisoformat(f"{day}T{clock}").replace(tzinfo=CHINA).timestamp())


def slot(
    slot_id: str, event: str, start: str, end: str, capacity: object, **more: Any
) -> dict[str, Any]:
    return {
        "id": slot_id,
        "event": event,
        "start": f"{DAY}T{start}",
        "end": f"{DAY}T{end}",
        "capacity": capacity,
        **more,
    }


def venue_data(**more: Any) -> dict[str, Any]:
    """A museum's day: an exhibition at 09:00 and 10:00 (the second by reservation only), a
    gap, children's story time at 14:00, an adults-only night at 19:00."""
    return {
        "events": [
            {"id": "bronzes"},
            {"id": "story-time", "max_age": 12},
            {"id": "night", "min_age": 18},
        ],
        "slots": [
            slot("morning", "bronzes", "09:00", "10:00", 3),
            slot("late-morning", "bronzes", "10:00", "11:00", 2, walk_ins=False),
            slot("story", "story-time", "14:00", "15:00", 5),
            slot("night", "night", "19:00", "21:00", 2),
        ],
        **more,
    }


@dataclass
class Venue:
    """A venue's gates sharing one journal (as its gates do), and its loan desk."""

    issuer: TestIssuer
    gate: TestTerminal
    other_gate: TestTerminal
    desk: TestTerminal

    def enter(self, card: Card, at: int, *, gate: TestTerminal | None = None) -> Decision:
        return (gate or self.gate).scan(self.issuer.mint(card, at=at), at=at)

    def borrow(self, card: Card, at: int) -> Decision:
        return self.desk.scan(self.issuer.mint(card, at=at), at=at)


def venue(
    issuer: TestIssuer,
    reservations: Mapping[str, list[Card]] | None = None,
    members: Sequence[Card] = (),
    site: str = MUSEUM,
    **data: Any,
) -> Venue:
    document = venue_data(**data)
    document["reservations"] = {
        slot_id: [issuer.subject(card, "culture", site) for card in cards]
        for slot_id, cards in (reservations or {}).items()
    }
    document["members"] = [issuer.subject(card, "culture", site) for card in members]
    bundle = issuer.bundle("culture", site, document, at=local("00:00"))
    history = MemoryHistory()
    return Venue(
        issuer,
        TestTerminal(bundle, options={"mode": "entry"}, history=history),
        TestTerminal(bundle, options={"mode": "entry"}, history=history),
        TestTerminal(bundle, options={"mode": "loan"}),
    )


def adult() -> Card:
    return random_card(age_band=AgeBand.AGE_18_59)


def denied(decision: Decision, reason: str, action: str) -> bool:
    return not decision.admitted and decision.reason == reason and decision.action == action


# -- reservation holders --------------------------------------------------------------------


def test_holder_is_admitted_from_early_minutes_before_the_slot_with_the_slot_and_event(
    issuer: TestIssuer,
) -> None:
    holder = adult()
    place = venue(issuer, {"morning": [holder]})
    decision = place.enter(holder, local("08:45"))
    assert decision.admitted and decision.reason == "ok" and decision.action == "entry"
    assert dict(decision.result) == {"slot": "morning", "event": "bronzes", "reserved": True}


def test_holder_a_second_before_the_window_is_too_early_and_told_when_it_opens(
    issuer: TestIssuer,
) -> None:
    holder = adult()
    place = venue(issuer, {"morning": [holder]})
    decision = place.enter(holder, local("08:44:59"))
    assert denied(decision, "too_early", "entry")
    assert dict(decision.result) == {"slot": "morning", "opens_in_minutes": 1}
    assert denied(place.enter(holder, local("07:00")), "too_early", "entry")
    assert place.enter(holder, local("07:00")).result["opens_in_minutes"] == 105


def test_holder_is_admitted_until_late_minutes_after_the_start_then_only_as_a_walk_in(
    issuer: TestIssuer,
) -> None:
    holder, second = adult(), adult()
    place = venue(issuer, {"morning": [holder, second]})
    assert place.enter(holder, local("09:29:59")).action == "entry"
    late = place.enter(second, local("09:30"))
    assert late.admitted and late.action == "walk_in" and late.result["reserved"] is False
    # Capacity 3, two reserved, one walk-in (the late holder): the slot is full now.
    assert late.result["places_left"] == 0


def test_late_holder_of_a_full_slot_is_denied_too_late_not_slot_full(issuer: TestIssuer) -> None:
    holder = adult()
    place = venue(issuer, {"morning": [holder]})
    for _ in range(2):
        assert place.enter(adult(), local("09:05")).action == "walk_in"
    decision = place.enter(holder, local("09:40"))
    assert denied(decision, "too_late", "entry")
    assert dict(decision.result) == {"slot": "morning"}
    assert denied(place.enter(adult(), local("09:40")), "slot_full", "walk_in")


def test_holders_window_ends_with_its_slot_even_when_late_minutes_run_past_it(
    issuer: TestIssuer,
) -> None:
    holder = adult()
    place = venue(issuer, {"morning": [holder]}, late_minutes=120)
    assert place.enter(holder, local("09:59:59")).action == "entry"
    other = adult()
    place = venue(issuer, {"morning": [other]}, late_minutes=120)
    # 10:00 is the reservation-only slot: too late for the morning, no walk-in here.
    assert denied(place.enter(other, local("10:00")), "too_late", "entry")


def test_a_holder_with_one_late_minute_and_no_early_ones_enters_in_the_slots_first_minute(
    issuer: TestIssuer,
) -> None:
    holder = adult()
    place = venue(issuer, {"late-morning": [holder]}, early_minutes=0, late_minutes=1)
    # Just before the reservation-only slot, the holder is a walk-in to the morning slot,
    # which has room; in its first minute a holder; after it, too late (no walk-ins).
    early = place.enter(holder, local("09:59:59"))
    assert early.action == "walk_in" and early.result["slot"] == "morning"
    assert place.enter(holder, local("10:00:59")).action == "entry"
    other = adult()
    place = venue(issuer, {"late-morning": [other]}, early_minutes=0, late_minutes=1)
    assert denied(place.enter(other, local("10:01")), "too_late", "entry")
    assert denied(place.enter(adult(), local("10:00")), "reservation_required", "walk_in")


def test_holder_is_admitted_even_when_walk_ins_filled_every_other_place(issuer: TestIssuer) -> None:
    holder = adult()
    place = venue(issuer, {"morning": [holder]})
    walk_ins = [place.enter(adult(), local("09:00")) for _ in range(3)]
    assert [d.reason for d in walk_ins] == ["ok", "ok", "slot_full"]
    assert place.enter(holder, local("09:10")).admitted


def test_second_entry_of_a_holder_is_denied_already_entered_at_any_gate(
    issuer: TestIssuer,
) -> None:
    holder = adult()
    place = venue(issuer, {"morning": [holder]})
    assert place.enter(holder, local("08:50")).admitted
    again = place.enter(holder, local("09:05"), gate=place.other_gate)
    assert denied(again, "already_entered", "entry")
    assert dict(again.result) == {"slot": "morning"}


def test_holder_of_two_slots_with_overlapping_windows_enters_each_once(
    issuer: TestIssuer,
) -> None:
    holder = adult()
    place = venue(issuer, {"morning": [holder], "late-morning": [holder]}, late_minutes=30)
    assert place.enter(holder, local("09:00")).result["slot"] == "morning"
    # 09:45: the late-morning window is open; the later slot is the one entered.
    assert place.enter(holder, local("09:50")).result["slot"] == "late-morning"
    assert denied(place.enter(holder, local("09:55")), "already_entered", "entry")
    assert denied(place.enter(holder, local("10:05")), "already_entered", "entry")


def test_reservation_on_another_day_does_not_make_a_walk_in_too_early(issuer: TestIssuer) -> None:
    holder = adult()
    data = venue_data()
    data["slots"].append(
        {
            **slot("tomorrow", "bronzes", "09:00", "10:00", 3),
            "start": "2026-12-02T09:00",
            "end": "2026-12-02T10:00",
        }
    )
    document = {**data, "reservations": {"tomorrow": [issuer.subject(holder, "culture", MUSEUM)]}}
    gate = TestTerminal(
        issuer.bundle("culture", MUSEUM, document, at=local("00:00")), options={"mode": "entry"}
    )
    today = gate.scan(issuer.mint(holder, at=local("09:05")), at=local("09:05"))
    assert today.admitted and today.action == "walk_in"
    assert denied(
        gate.scan(issuer.mint(holder, at=local("12:00")), at=local("12:00")),
        "no_slot_now",
        "walk_in",
    )


# -- walk-ins -------------------------------------------------------------------------------


def test_walk_ins_fill_capacity_minus_reservations_across_the_gates_of_a_venue(
    issuer: TestIssuer,
) -> None:
    place = venue(issuer, {"morning": [adult()]})
    first = place.enter(adult(), local("09:00"))
    second = place.enter(adult(), local("09:59:59"), gate=place.other_gate)
    assert (first.action, first.result["places_left"]) == ("walk_in", 1)
    assert (second.action, second.result["places_left"]) == ("walk_in", 0)
    full = place.enter(adult(), local("09:59:59"))
    assert denied(full, "slot_full", "walk_in")
    assert dict(full.result) == {"slot": "morning", "event": "bronzes"}


def test_a_gate_with_a_journal_of_its_own_does_not_see_the_others_walk_ins(
    issuer: TestIssuer,
) -> None:
    place = venue(issuer)
    alone = TestTerminal(
        issuer.bundle("culture", MUSEUM, venue_data(), at=local("00:00")), options={"mode": "entry"}
    )
    for _ in range(3):
        assert place.enter(adult(), local("09:00")).admitted
    assert place.enter(adult(), local("09:00"), gate=alone).result["places_left"] == 2


def test_walk_ins_of_the_previous_slot_do_not_count_in_the_next(issuer: TestIssuer) -> None:
    place = venue(issuer)
    for _ in range(3):
        assert place.enter(adult(), local("09:30")).admitted
    assert denied(place.enter(adult(), local("09:59")), "slot_full", "walk_in")
    story = place.enter(random_card(age_band=AgeBand.UNDER_6), local("14:00"))
    assert story.result == {
        "slot": "story",
        "event": "story-time",
        "reserved": False,
        "places_left": 4,
    }


def test_second_walk_in_of_the_same_person_is_denied_already_entered(issuer: TestIssuer) -> None:
    place = venue(issuer)
    visitor = adult()
    assert place.enter(visitor, local("09:10")).admitted
    assert denied(
        place.enter(visitor, local("09:20"), gate=place.other_gate), "already_entered", "walk_in"
    )
    # The next slot is a new admission (its own walk-ins count): here reservation only.
    assert denied(place.enter(visitor, local("10:10")), "reservation_required", "walk_in")


def test_reservation_only_slot_refuses_walk_ins_and_admits_its_holders(issuer: TestIssuer) -> None:
    holder = adult()
    place = venue(issuer, {"late-morning": [holder]})
    walk_in = place.enter(adult(), local("10:10"))
    assert denied(walk_in, "reservation_required", "walk_in")
    assert dict(walk_in.result) == {"slot": "late-morning"}
    assert place.enter(holder, local("10:10")).action == "entry"


@pytest.mark.parametrize("clock", ["08:59:59", "11:00", "13:59:59", "21:00", "23:59"])
def test_nobody_is_admitted_without_a_reservation_outside_the_slots(
    issuer: TestIssuer, clock: str
) -> None:
    place = venue(issuer)
    decision = place.enter(adult(), local(clock))
    assert denied(decision, "no_slot_now", "walk_in")
    assert dict(decision.result) == {}


def test_slot_times_are_read_at_the_venues_utc_offset(issuer: TestIssuer) -> None:
    gate = TestTerminal(
        issuer.bundle("culture", MUSEUM, venue_data(utc_offset_minutes=0), at=local("00:00")),
        options={"mode": "entry"},
    )
    # 09:00 UTC is 17:00 in China: the morning slot at UTC+0 is running.
    at = local("17:00")
    assert gate.scan(issuer.mint(adult(), at=at), at=at).result["slot"] == "morning"


# -- age limits -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("limits", "band", "reason"),
    [
        ({"max_age": 12}, AgeBand.UNDER_6, "ok"),
        ({"max_age": 12}, AgeBand.AGE_6_17, "age_unverified"),  # 6-17 straddles 12
        ({"max_age": 12}, AgeBand.AGE_18_59, "age_limit"),
        ({"max_age": 17}, AgeBand.AGE_6_17, "ok"),
        ({"max_age": 16}, AgeBand.AGE_6_17, "age_unverified"),
        ({"max_age": 5}, AgeBand.UNDER_6, "ok"),
        ({"max_age": 5}, AgeBand.AGE_6_17, "age_limit"),
        ({"min_age": 18}, AgeBand.AGE_18_59, "ok"),
        ({"min_age": 18}, AgeBand.AGE_6_17, "age_limit"),
        ({"min_age": 18}, AgeBand.AGE_80_PLUS, "ok"),
        ({"min_age": 6}, AgeBand.AGE_6_17, "ok"),
        ({"min_age": 7}, AgeBand.AGE_6_17, "age_unverified"),
        ({"min_age": 60}, AgeBand.AGE_60_64, "ok"),
        ({"min_age": 80}, AgeBand.AGE_70_79, "age_limit"),
        ({"min_age": 80}, AgeBand.AGE_80_PLUS, "ok"),
        ({"min_age": 6, "max_age": 17}, AgeBand.UNDER_6, "age_limit"),
        ({"min_age": 6, "max_age": 17}, AgeBand.AGE_6_17, "ok"),
        ({"min_age": 18}, AgeBand.UNKNOWN, "age_unverified"),
        ({"max_age": 12}, AgeBand.UNKNOWN, "age_unverified"),
        ({}, AgeBand.UNKNOWN, "ok"),
        ({"min_age": 0, "max_age": 150}, AgeBand.UNKNOWN, "ok"),
    ],
)
def test_age_limits_admit_only_a_band_wholly_within_them(
    issuer: TestIssuer, limits: dict[str, int], band: AgeBand, reason: str
) -> None:
    data = {
        "events": [{"id": "event", **limits}],
        "slots": [slot("only", "event", "09:00", "10:00", 10)],
    }
    gate = TestTerminal(
        issuer.bundle("culture", MUSEUM, data, at=local("00:00")), options={"mode": "entry"}
    )
    at = local("09:00")
    decision = gate.scan(issuer.mint(random_card(age_band=band), at=at), at=at)
    assert decision.reason == reason
    if reason != "ok":
        assert dict(decision.result) == {"slot": "only", "event": "event"}


def test_a_reservation_does_not_lift_the_events_age_limit(issuer: TestIssuer) -> None:
    child = random_card(age_band=AgeBand.AGE_6_17)
    place = venue(issuer, {"night": [child]})
    assert denied(place.enter(child, local("19:00")), "age_limit", "entry")


def test_age_is_checked_before_room_so_the_reason_is_the_one_staff_can_act_on(
    issuer: TestIssuer,
) -> None:
    place = venue(issuer)
    for _ in range(2):
        assert place.enter(adult(), local("19:10")).admitted
    assert denied(
        place.enter(random_card(age_band=AgeBand.UNKNOWN), local("19:10")),
        "age_unverified",
        "walk_in",
    )
    assert denied(place.enter(adult(), local("19:10")), "slot_full", "walk_in")


def test_a_denied_walk_in_takes_no_place(issuer: TestIssuer) -> None:
    place = venue(issuer)
    for _ in range(3):
        assert (
            place.enter(random_card(age_band=AgeBand.AGE_18_59), local("14:10")).reason
            == "age_limit"
        )
    assert (
        place.enter(random_card(age_band=AgeBand.UNDER_6), local("14:10")).result["places_left"]
        == 4
    )


# -- the library's loan desk ------------------------------------------------------------------


def test_loan_desk_lends_to_members_and_refuses_others_at_any_hour(issuer: TestIssuer) -> None:
    member = adult()
    place = venue(issuer, members=[member], site="riverside-library")
    for clock in ("08:00", "12:30", "22:00"):
        decision = place.borrow(member, local(clock))
        assert decision.admitted and decision.action == "loan" and dict(decision.result) == {}
    assert denied(place.borrow(adult(), local("12:30")), "not_a_member", "loan")


def test_loan_desk_needs_no_age_band_or_slot_and_a_gate_ignores_membership(
    issuer: TestIssuer,
) -> None:
    child = random_card(age_band=AgeBand.UNKNOWN)
    place = venue(issuer, members=[child])
    assert place.borrow(child, local("12:00")).admitted
    assert denied(place.enter(child, local("12:00")), "no_slot_now", "walk_in")


def test_a_venue_recognises_its_member_only_by_its_own_subject(issuer: TestIssuer) -> None:
    member = adult()
    library = venue(issuer, members=[member], site="riverside-library")
    assert library.borrow(member, local("12:00")).admitted
    # The museum's subject of the same card is another one: listed there, it is no member here.
    elsewhere = issuer.subject(member, "culture", MUSEUM)
    assert elsewhere != issuer.subject(member, "culture", "riverside-library")
    document = {**venue_data(), "members": [elsewhere]}
    desk = TestTerminal(
        issuer.bundle("culture", "riverside-library", document, at=local("00:00")),
        options={"mode": "loan"},
    )
    assert denied(
        desk.scan(issuer.mint(member, at=local("12:00")), at=local("12:00")), "not_a_member", "loan"
    )


def test_venues_have_site_subjects_that_their_decision_lines_carry() -> None:
    adapter = load_adapter("culture")
    assert adapter.subject_scope == "site"
    assert adapter.subject_in_decision_line is True


def test_a_code_the_verifier_refuses_is_denied_with_its_reason(issuer: TestIssuer) -> None:
    member = random_card(status_index=7)
    bundle = issuer.bundle(
        "culture",
        MUSEUM,
        {"members": [issuer.subject(member, "culture", MUSEUM)]},
        revoked=[7],
        at=local("00:00"),
    )
    desk = TestTerminal(bundle, options={"mode": "loan"})
    decision = desk.scan(issuer.mint(member, at=local("12:00")), at=local("12:00"))
    assert (decision.admitted, decision.reason, decision.action) == (False, "revoked", "")


# -- terminal options and hostile scene data ------------------------------------------------------


@pytest.mark.parametrize("options", [{}, {"mode": "gate"}, {"mode": "LOAN"}, {"lane": "entry"}])
def test_terminal_refuses_to_start_without_mode_entry_or_loan(
    issuer: TestIssuer, options: dict[str, str]
) -> None:
    bundle = issuer.bundle("culture", MUSEUM, venue_data(), at=local("00:00"))
    with pytest.raises(SceneError, match="mode=entry or mode=loan"):
        TestTerminal(bundle, options=options)


def invalid(document: dict[str, Any]) -> str:
    with pytest.raises(SceneError) as refused:
        Adapter.parse_data(document)
    return str(refused.value)


SUBJECT = "0123456789abcdef01234567"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {
                "slots": [
                    slot("a", "bronzes", "09:00", "10:00", 3),
                    slot("b", "bronzes", "09:59", "11:00", 3),
                ]
            },
            "slots 'a' and 'b' overlap",
        ),
        (
            {
                "slots": [
                    slot("a", "bronzes", "09:00", "10:00", 3),
                    slot("a", "bronzes", "10:00", "11:00", 3),
                ]
            },
            "two slots have the same id",
        ),
        (
            {"slots": [slot("a", "ghosts", "09:00", "10:00", 3)]},
            "slot 'a' names the unknown event 'ghosts'",
        ),
        (
            {"slots": [slot("a", "bronzes", "10:00", "10:00", 3)]},
            "slot 'a': end must be after start",
        ),
        (
            {"slots": [slot("a", "bronzes", "10:00", "09:00", 3)]},
            "slot 'a': end must be after start",
        ),
        (
            {"slots": [{**slot("a", "bronzes", "09:00", "10:00", 3), "end": "2026-12-02T09:01"}]},
            "slot 'a' is longer than 24 hours",
        ),
        (
            {"slots": [{**slot("a", "bronzes", "09:00", "10:00", 3), "start": "2026-02-30T09:00"}]},
            "'2026-02-30T09:00' is not a date and time that exists",
        ),
        (
            {"slots": [{**slot("a", "bronzes", "09:00", "10:00", 3), "start": "0226-12-01T09:00"}]},
            "'0226-12-01T09:00' is not in the years 2000-2099",
        ),
        (
            {"slots": [{**slot("a", "bronzes", "09:00", "10:00", 3), "start": "09:00"}]},
            "slots.0.start: String should match pattern",
        ),
        (
            {
                "slots": [
                    {
                        **slot("a", "bronzes", "09:00", "10:00", 3),
                        "start": "2026-12-01T09:00:00+08:00",
                    }
                ]
            },
            "slots.0.start: String should match pattern",
        ),
        (
            {"slots": [slot("a", "bronzes", "09:00", "10:00", 0)]},
            "capacity: Input should be greater",
        ),
        (
            {"slots": [slot("a", "bronzes", "09:00", "10:00", "3")]},
            "capacity: Input should be a valid integer",
        ),
        (
            {"slots": [slot("a", "bronzes", "09:00", "10:00", 3, walk_ins=1)]},
            "walk_ins: Input should be a valid boolean",
        ),
        (
            {"slots": [slot("a b", "bronzes", "09:00", "10:00", 3)]},
            "slots.0.id: String should match pattern",
        ),
        ({"events": [{"id": "bronzes"}, {"id": "bronzes"}]}, "two events have the same id"),
        (
            {"events": [{"id": "x", "min_age": 18, "max_age": 12}]},
            "event 'x': min_age is above max_age",
        ),
        ({"events": [{"id": "x", "min_age": -1}]}, "min_age: Input should be greater"),
        ({"events": [{"id": "x", "age_limit": 18}]}, "age_limit: Extra inputs are not permitted"),
        ({"reservations": {"evening": [SUBJECT]}}, "reservations name the unknown slot 'evening'"),
        (
            {"reservations": {"a": [SUBJECT, SUBJECT]}},
            "reservations of slot 'a' hold a person twice",
        ),
        (
            {"reservations": {"a": [SUBJECT, "1" * 24, "2" * 24, "3" * 24]}},
            "slot 'a' has 4 reservations for a capacity of 3",
        ),
        (
            {"reservations": {"a": ["card:0b7c6f1e-2d1a-4c7e-9d47-5a9f1c1d2e3f"]}},
            "String should match pattern",
        ),
        ({"members": ["P000123"]}, "members.0: String should match pattern"),
        ({"early_minutes": True}, "early_minutes: Input should be a valid integer"),
        ({"late_minutes": -1}, "late_minutes: Input should be greater"),
        (
            {"early_minutes": 0, "late_minutes": 0},
            "early_minutes and late_minutes are both 0: a reservation holder would have no",
        ),
        ({"capacity": 10}, "capacity: Extra inputs are not permitted"),
    ],
)
def test_scene_data_is_refused_with_a_precise_reason(change: dict[str, Any], message: str) -> None:
    document = {
        "events": [{"id": "bronzes"}],
        "slots": [slot("a", "bronzes", "09:00", "10:00", 3)],
        **change,
    }
    assert message in invalid(document)


def test_refusal_of_a_duplicate_reservation_does_not_repeat_the_subject() -> None:
    document = {
        "events": [{"id": "e"}],
        "slots": [slot("a", "e", "09:00", "10:00", 3)],
        "reservations": {"a": [SUBJECT, SUBJECT]},
    }
    assert SUBJECT not in invalid(document)


def test_reservations_and_members_together_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(culture, "MAX_PEOPLE", 3)
    document = {
        "events": [{"id": "e"}],
        "slots": [slot("a", "e", "09:00", "10:00", 3)],
        "reservations": {"a": [SUBJECT, "1" * 24]},
        "members": ["2" * 24, "2" * 24],  # the same member twice counts once
    }
    Adapter.parse_data(document)
    document["members"] = ["2" * 24, "3" * 24]
    assert "reservations and members together are over 3" in invalid(document)


def test_empty_scene_data_runs_a_gate_that_admits_nobody_and_a_desk_that_lends_to_nobody(
    issuer: TestIssuer,
) -> None:
    bundle = issuer.bundle("culture", MUSEUM, {}, at=local("00:00"))
    gate = TestTerminal(bundle, options={"mode": "entry"})
    desk = TestTerminal(bundle, options={"mode": "loan"})
    at = local("10:00")
    assert denied(gate.scan(issuer.mint(adult(), at=at), at=at), "no_slot_now", "walk_in")
    assert denied(desk.scan(issuer.mint(adult(), at=at), at=at), "not_a_member", "loan")
