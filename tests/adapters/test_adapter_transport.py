"""The transport scene: fares at the door (concessions, transfers, the daily cap), repeated
boardings, the operator's settlement of the day, and operators that cannot link passengers."""

from __future__ import annotations

import json
import random
from collections.abc import Mapping
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from idcode.claims import AgeBand, Card, Programme
from idcode.decider import Decider
from idcode.errors import SceneError
from idcode.scenes import Decision, Event, MemoryHistory
from idcode.terminal.journal import Journal, JournalReplay
from idcode.testing import TestIssuer, TestTerminal, random_card
from idcode_adapters.transport import Adapter, TransportData
from tests.conftest import NOW

MINUTE = 60
DAY = 86_400
CHINA = timezone(timedelta(hours=8))
OPERATOR = "city-bus"
# Line 1 two yuan, line 2 two yuan, the express 5 yuan; one yuan off a transfer; 8 yuan a day.
TARIFF: dict[str, Any] = {
    "lines": {"1": 200, "2": 200, "X5": 500},
    "transfer_discount": 100,
    "daily_cap": 800,
}
FARE_FIELDS = {
    "line",
    "concession",
    "full_fare",
    "concession_discount",
    "transfer_discount",
    "cap_discount",
    "fare",
    "day_total",
}


def local(hour: int, minute: int = 0, second: int = 0, *, day: int = 2) -> int:
    """A UTC+8 wall-clock time on December ``day``, 2026, as the Unix time a validator scans at."""
    return int(datetime(2026, 12, day, hour, minute, second, tzinfo=CHINA).timestamp())


class Network:
    """An operator's validators, each on its own bus with its own journal (history)."""

    def __init__(
        self,
        data: Mapping[str, Any] | None = None,
        site: str = OPERATOR,
        issuer: TestIssuer | None = None,
    ) -> None:
        self.issuer = issuer or TestIssuer(now=NOW)
        self.bundle = self.issuer.bundle(
            "transport", site, dict(TARIFF if data is None else data), max_age=10 * DAY
        )
        self.buses: dict[str, TestTerminal] = {}

    def bus(self, name: str, line: str, history: MemoryHistory | None = None) -> TestTerminal:
        """The validator of bus ``name``, on ``line`` (a new one, or the same bus)."""
        if name not in self.buses:
            self.buses[name] = TestTerminal(
                self.bundle, Adapter, options={"line": line}, history=history
            )
        return self.buses[name]

    def board(self, bus: TestTerminal, card: Card, at: int) -> Decision:
        return bus.scan(self.issuer.mint(card, at=at), at=at)

    def settle(self, subject_events: list[Event] | None = None) -> dict[str, int]:
        """The settlement of every validator's events of the day, as the service orders them."""
        events = subject_events
        if events is None:
            every = {e.event_id: e for bus in self.buses.values() for e in bus.history.events}
            events = sorted(every.values(), key=lambda e: (e.at, e.event_id))
        return dict(Adapter.settle(Adapter.parse_data(self.bundle.scene["data"]), events))


@pytest.fixture
def network() -> Network:
    return Network()


# -- fares at the door ------------------------------------------------------------------------


def test_a_passenger_pays_the_full_fare_of_the_buss_line(network: Network) -> None:
    card = random_card()
    express = network.board(network.bus("b1", "X5"), card, local(8))
    assert express.admitted and express.action == "board"
    assert dict(express.result) == {
        "line": "X5",
        "concession": "none",
        "full_fare": 500,
        "concession_discount": 0,
        "transfer_discount": 0,
        "cap_discount": 0,
        "fare": 500,
        "day_total": 500,
    }


@pytest.mark.parametrize(
    ("attributes", "concession", "fare"),
    [
        ({"age_band": AgeBand.AGE_65_69}, "elder", 0),
        ({"age_band": AgeBand.AGE_70_79}, "elder", 0),
        ({"age_band": AgeBand.AGE_80_PLUS}, "elder", 0),
        ({"programmes": Programme.DISABILITY}, "disability", 0),
        ({"age_band": AgeBand.AGE_60_64}, "senior", 250),
        ({"programmes": Programme.STUDENT, "age_band": AgeBand.AGE_6_17}, "student", 250),
        ({"age_band": AgeBand.AGE_18_59}, "none", 500),
        ({"age_band": AgeBand.UNKNOWN}, "none", 500),
        # The cheapest concession that applies; a tie goes to age before programme.
        ({"age_band": AgeBand.AGE_60_64, "programmes": Programme.DISABILITY}, "disability", 0),
        ({"age_band": AgeBand.AGE_65_69, "programmes": Programme.DISABILITY}, "elder", 0),
        ({"age_band": AgeBand.AGE_60_64, "programmes": Programme.STUDENT}, "senior", 250),
        ({"programmes": Programme.VETERAN | Programme.LOW_INCOME}, "none", 500),
    ],
)
def test_the_concession_is_the_cheapest_the_codes_attributes_give(
    network: Network, attributes: dict[str, Any], concession: str, fare: int
) -> None:
    decision = network.board(network.bus("b1", "X5"), random_card(**attributes), local(8))
    assert decision.admitted
    assert (decision.result["concession"], decision.result["fare"]) == (concession, fare)
    assert decision.result["concession_discount"] == 500 - fare


def test_concession_percentages_come_from_the_scene_data_and_round_down() -> None:
    network = Network({"lines": {"7": 125}, "student_percent": 30, "elder_percent": 10})
    bus = network.bus("b1", "7")
    student = network.board(bus, random_card(programmes=Programme.STUDENT), local(8))
    elder = network.board(bus, random_card(age_band=AgeBand.AGE_70_79), local(8))
    senior = network.board(bus, random_card(age_band=AgeBand.AGE_60_64), local(8))
    # 125 * 30 % = 37.5, 125 * 10 % = 12.5, 125 * 50 % = 62.5: fen rounded down.
    assert [d.result["fare"] for d in (student, elder, senior)] == [37, 12, 62]


def test_a_concession_of_100_percent_is_none() -> None:
    network = Network({"lines": {"1": 200}, "student_percent": 100})
    decision = network.board(
        network.bus("b1", "1"), random_card(programmes=Programme.STUDENT), local(8)
    )
    assert (decision.result["concession"], decision.result["fare"]) == ("none", 200)


# -- transfers --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("after", "discount"),
    [(1, 100), (59 * MINUTE, 100), (60 * MINUTE, 100), (60 * MINUTE + 1, 0), (3 * 3600, 0)],
)
def test_a_boarding_on_another_line_within_60_minutes_is_a_transfer(
    network: Network, after: int, discount: int
) -> None:
    """A bus that changes line keeps its journal: its validator sees the earlier boarding."""
    card = random_card()
    history = MemoryHistory()
    first = network.board(network.bus("morning", "1", history), card, local(8))
    second = network.board(network.bus("afternoon", "2", history), card, local(8) + after)
    assert first.result["transfer_discount"] == 0
    assert second.admitted
    assert (second.result["transfer_discount"], second.result["fare"]) == (discount, 200 - discount)


def test_no_transfer_discount_on_the_same_line(network: Network) -> None:
    card = random_card()
    bus = network.bus("b1", "1")
    network.board(bus, card, local(8))
    again = network.board(bus, card, local(8, 30))
    assert again.admitted and again.result["transfer_discount"] == 0


def test_a_transfer_discount_never_makes_a_fare_negative() -> None:
    network = Network({"lines": {"1": 200, "2": 200}, "transfer_discount": 150})
    history = MemoryHistory()
    student = random_card(programmes=Programme.STUDENT)
    network.board(network.bus("a", "1", history), student, local(8))
    transfer = network.board(network.bus("b", "2", history), student, local(8, 20))
    assert (transfer.result["transfer_discount"], transfer.result["fare"]) == (100, 0)


def test_only_the_previous_boarding_makes_a_transfer(network: Network) -> None:
    """Line 1, then line 2 after 70 minutes (no transfer), then line 1 again 10 minutes later:
    a transfer from line 2, the previous boarding."""
    card = random_card()
    history = MemoryHistory()
    one, two = network.bus("a", "1", history), network.bus("b", "2", history)
    fares = [
        network.board(one, card, local(8)).result["fare"],
        network.board(two, card, local(9, 10)).result["fare"],
        network.board(one, card, local(9, 20)).result["fare"],
    ]
    assert fares == [200, 200, 100]


# -- the daily cap ----------------------------------------------------------------------------


def test_the_daily_cap_limits_what_a_passenger_pays_in_a_local_day(network: Network) -> None:
    card = random_card()
    bus = network.bus("b1", "X5")
    fares = [network.board(bus, card, local(hour)).result for hour in (7, 9, 12, 18)]
    assert [r["fare"] for r in fares] == [500, 300, 0, 0]
    assert [r["cap_discount"] for r in fares] == [0, 200, 500, 500]
    assert [r["day_total"] for r in fares] == [500, 800, 800, 800]
    # Local midnight (UTC+8) starts a new day.
    tomorrow = network.board(bus, card, local(0, 0, 1, day=3))
    assert (tomorrow.result["fare"], tomorrow.result["day_total"]) == (500, 500)


def test_without_a_cap_every_fare_is_paid() -> None:
    network = Network({"lines": {"1": 200}})
    card = random_card()
    bus = network.bus("b1", "1")
    assert [network.board(bus, card, local(h)).result["fare"] for h in range(6, 16)] == [200] * 10


# -- a second boarding ------------------------------------------------------------------------


def test_the_same_code_is_refused_as_replayed(network: Network) -> None:
    bus = network.bus("b1", "1")
    code = network.issuer.mint(random_card(), at=local(8))
    assert bus.scan(code, at=local(8)).admitted
    again = bus.scan(code, at=local(8) + 5)
    assert (again.admitted, again.reason, again.action) == (False, "replayed", "")


@pytest.mark.parametrize(
    ("after", "admitted"),
    [(1, False), (5 * MINUTE - 1, False), (5 * MINUTE, False), (5 * MINUTE + 1, True)],
)
def test_a_fresh_code_of_the_same_passenger_on_the_same_line_within_5_minutes_is_refused(
    network: Network, after: int, admitted: bool
) -> None:
    card = random_card()
    bus = network.bus("b1", "1")
    network.board(bus, card, local(8))
    again = network.board(bus, card, local(8) + after)
    assert again.admitted is admitted
    if not admitted:
        assert (again.reason, again.action, dict(again.result)) == (
            "already_boarded",
            "board",
            {"line": "1"},
        )


def test_a_refused_repeat_charges_nothing_and_a_companion_pays_with_their_own_code(
    network: Network,
) -> None:
    passenger, companion = random_card(), random_card(age_band=AgeBand.AGE_65_69)
    bus = network.bus("b1", "1")
    network.board(bus, passenger, local(8))
    assert network.board(bus, passenger, local(8) + 10).reason == "already_boarded"
    assert network.board(bus, companion, local(8) + 20).result["fare"] == 0
    assert network.settle()["fares"] == 200


def test_a_repeat_window_of_0_refuses_only_the_same_code() -> None:
    network = Network({**TARIFF, "repeat_minutes": 0})
    card = random_card()
    bus = network.bus("b1", "1")
    network.board(bus, card, local(8))
    assert network.board(bus, card, local(8) + 10).admitted


def test_another_line_within_the_repeat_window_is_a_transfer_not_a_repeat(network: Network) -> None:
    card = random_card()
    history = MemoryHistory()
    network.board(network.bus("a", "1", history), card, local(8))
    transfer = network.board(network.bus("b", "2", history), card, local(8) + 60)
    assert transfer.admitted and transfer.result["transfer_discount"] == 100


def test_a_code_that_does_not_verify_is_refused_with_the_verifiers_reason(network: Network) -> None:
    bus = network.bus("b1", "1")
    old = network.issuer.mint(random_card(), at=local(8))
    assert bus.scan(old, at=local(8, 10)).reason == "expired"
    stranger = TestIssuer(now=NOW).mint(random_card(), at=local(8))
    assert bus.scan(stranger, at=local(8)).reason in {"unknown_key", "bad_signature"}


def test_results_carry_fares_only_and_nothing_personal(network: Network) -> None:
    card = random_card(age_band=AgeBand.AGE_60_64, programmes=Programme.STUDENT)
    decision = network.board(network.bus("b1", "1"), card, local(8))
    assert set(decision.result) == FARE_FIELDS
    subject = network.issuer.subject(card, "transport", OPERATOR)
    texts = {str(v) for v in decision.result.values()}
    assert subject not in texts and card.pseudonym.hex() not in texts


# -- the validator's line and hostile scene data ----------------------------------------------


@pytest.mark.parametrize(
    ("options", "got"), [({}, "none"), ({"line": "9"}, "'9'"), ({"lane": "1"}, "none")]
)
def test_a_validator_without_one_of_the_operators_lines_does_not_start(
    network: Network, options: dict[str, str], got: str
) -> None:
    with pytest.raises(
        SceneError, match=rf"option line=<one of the operator's lines: 1, 2, X5> \(got {got}\)"
    ):
        TestTerminal(network.bundle, Adapter, options=options)


@pytest.mark.parametrize("line", ["", "line 1", "1/2", "x" * 33, "一路"])
def test_a_line_option_that_is_no_line_id_is_refused_before_any_bundle(
    network: Network, line: str
) -> None:
    """No operator's data can list it, so the validator does not start (idcode terminal run
    calls check_options before it syncs), rather than deny every scan stale_trust."""
    with pytest.raises(SceneError, match="option line must be a line id"):
        Adapter.check_options({"line": line})
    with pytest.raises(SceneError, match="option line must be a line id"):
        TestTerminal(network.bundle, Adapter, options={"line": line})


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({}, "lines: Field required"),
        ({"lines": {}}, "lines: Dictionary should have at least 1 item"),
        ({"lines": {"1": -1}}, "lines.1: Input should be greater than or equal to 0"),
        ({"lines": {"1": 100_001}}, "lines.1: Input should be less than or equal to 100000"),
        ({"lines": {"1": 2.5}}, "lines.1: Input should be a valid integer"),
        ({"lines": {"1": "200"}}, "lines.1: Input should be a valid integer"),
        ({"lines": {"1": True}}, "lines.1: Input should be a valid integer"),
        ({"lines": {"line 1": 200}}, "lines.line 1.\\[key\\]: String should match pattern"),
        ({"lines": {"x" * 33: 200}}, "String should match pattern"),
        ({"lines": {"1": 200}, "senior_percent": 101}, "senior_percent: Input should be less"),
        ({"lines": {"1": 200}, "student_percent": -1}, "student_percent: Input should be greater"),
        ({"lines": {"1": 200}, "transfer_minutes": 0}, "transfer_minutes: Input should be greater"),
        (
            {"lines": {"1": 200}, "transfer_discount": -100},
            "transfer_discount: Input should be greater",
        ),
        ({"lines": {"1": 200}, "repeat_minutes": 61}, "repeat_minutes: Input should be less"),
        (
            {"lines": {"1": 200, "2": 500}, "daily_cap": 400},
            "daily_cap must be at least the highest",
        ),
        ({"lines": {"1": 200}, "fare": 200}, "fare: Extra inputs are not permitted"),
        ({"lines": {"1": 200}, "daily_cap": float("nan")}, "not JSON"),
        ({"lines": [["1", 200]]}, "lines: Input should be an object"),
    ],
)
def test_hostile_scene_data_is_refused_with_the_field_and_the_problem(
    data: dict[str, Any], message: str
) -> None:
    with pytest.raises(SceneError, match=message):
        Adapter.parse_data(data)


def test_the_defaults_are_the_issues_rules() -> None:
    data = Adapter.parse_data({"lines": {"1": 200}})
    assert isinstance(data, TransportData)
    assert (data.elder_percent, data.disability_percent, data.senior_percent) == (0, 0, 50)
    assert (data.transfer_minutes, data.repeat_minutes, data.daily_cap) == (60, 5, None)


# -- the settlement ---------------------------------------------------------------------------


def test_the_settlement_finds_a_transfer_between_two_buses_the_doors_could_not_see(
    network: Network,
) -> None:
    card = random_card()
    first = network.board(network.bus("a", "1"), card, local(8))
    second = network.board(network.bus("b", "2"), card, local(8, 30))
    assert [first.result["fare"], second.result["fare"]] == [200, 200]  # one boarding each
    assert network.settle() == {
        "boardings": 2,
        "full_fares": 400,
        "concession_discounts": 0,
        "transfer_discounts": 100,
        "cap_discounts": 0,
        "fares": 300,
        "door_fares": 400,
    }


def test_the_settlement_applies_the_daily_cap_across_the_operators_buses(network: Network) -> None:
    card = random_card()
    for hour, (bus, line) in zip(
        (7, 10, 13, 16), [("a", "X5"), ("b", "X5"), ("c", "X5"), ("d", "X5")], strict=True
    ):
        assert network.board(network.bus(bus, line), card, local(hour)).result["fare"] == 500
    settled = network.settle()
    assert (settled["fares"], settled["cap_discounts"], settled["door_fares"]) == (800, 1200, 2000)


def test_the_settlement_never_charges_more_than_the_door_did(network: Network) -> None:
    """Bus a changed from line 1 to line 2 and saw a transfer at 8:40; but the passenger's
    previous boarding, on bus c of line 2 at 8:20, was on the same line. The day finds the
    transfer at 8:20 instead, and keeps the door's discount at 8:40."""
    card = random_card()
    history = MemoryHistory()
    network.board(network.bus("a-morning", "1", history), card, local(8))
    network.board(network.bus("c", "2"), card, local(8, 20))
    door = network.board(network.bus("a-later", "2", history), card, local(8, 40))
    assert door.result["transfer_discount"] == 100
    settled = network.settle()
    assert (settled["fares"], settled["door_fares"]) == (400, 500)
    assert settled["transfer_discounts"] == 200


def test_the_settlement_counts_admitted_boardings_only(network: Network) -> None:
    card = random_card()
    bus = network.bus("b1", "1")
    code = network.issuer.mint(card, at=local(8))
    bus.scan(code, at=local(8))
    bus.scan(code, at=local(8) + 1)  # replayed
    network.board(bus, card, local(8) + 2)  # already_boarded
    assert network.settle()["boardings"] == 1


def test_garbled_journaled_results_are_settled_without_raising(network: Network) -> None:
    events = [
        Event("e1", local(8), "a" * 24, True, "ok", "board", {}),
        Event(
            "e2",
            local(9),
            "a" * 24,
            True,
            "ok",
            "board",
            {"line": 7, "full_fare": "200", "fare": -5},
        ),
        Event(
            "e3",
            local(10),
            "a" * 24,
            True,
            "ok",
            "board",
            {"line": "1", "full_fare": 10**9, "fare": 10**9},
        ),
        Event("e4", local(11), "a" * 24, True, "ok", "exit", {"fare": 100}),
    ]
    settled = network.settle(events)
    assert settled["boardings"] == 3
    # Amounts are clamped to 0..the line's fare (2 yuan on line 1), and the boarding at 10:00
    # is a transfer from the one at 9:00 (whose line is no line 1).
    assert (settled["full_fares"], settled["door_fares"], settled["fares"]) == (200, 200, 100)
    assert (
        settled["full_fares"]
        - settled["concession_discounts"]
        - settled["transfer_discounts"]
        - settled["cap_discounts"]
        == settled["fares"]
    )


def test_a_boarding_is_never_settled_above_the_tariff_whatever_its_door_journaled(
    network: Network,
) -> None:
    """A damaged or compromised validator's amounts: a full fare above its line's, a line
    the tariff does not list, a concession charged at more than its percent. Each is cut to
    the tariff (2 yuan on line 1, the dearest line's 5 yuan, the elder's 0 %), before the
    transfers and the cap (8 yuan) are reckoned."""
    subject = "a" * 24

    def boarding(n: int, **result: Any) -> Event:
        return Event(f"e{n}", local(6 + 2 * n), subject, True, "ok", "board", result)

    one = {"line": "1", "concession": "none", "concession_discount": 0}
    events = [
        boarding(0, **one, full_fare=100_000, fare=100_000),
        boarding(1, line="gone", full_fare=90_000, fare=90_000),
        boarding(2, **{**one, "concession": "elder"}, full_fare=200, fare=200),
        boarding(3, **{**one, "concession": "student"}, full_fare=200, fare=200),
        boarding(4, **one, full_fare=200, fare=200),
    ]
    settled = network.settle(events)
    assert settled == {
        "boardings": 5,
        "full_fares": 200 + 500 + 200 + 200 + 200,
        "concession_discounts": 200 + 100,
        "transfer_discounts": 0,
        "cap_discounts": 200,  # the fifth boarding is over the day's 8 yuan
        "fares": 200 + 500 + 0 + 100 + 0,
        "door_fares": 200 + 500 + 0 + 100 + 200,
    }


def test_settled_fares_never_exceed_the_doors_and_the_columns_add_up() -> None:
    """Random days of passengers across buses that share journals or not and change lines:
    every boarding is settled at most at its door's fare, and the discounts explain the
    difference from the full fares."""
    chance = random.Random(20261202)
    lowered = kept = 0  # days the clearing settled below the doors; door discounts it kept
    for _ in range(100):
        network = Network(
            {
                "lines": {"1": 200, "2": 300, "3": 150},
                "transfer_discount": chance.choice([0, 100, 250]),
                "transfer_minutes": chance.choice([30, 60]),
                "daily_cap": chance.choice([None, 300, 600]),
                "repeat_minutes": chance.choice([0, 5]),
            }
        )
        journals = [MemoryHistory() for _ in range(3)]
        card = random_card(age_band=chance.choice([AgeBand.AGE_18_59, AgeBand.AGE_60_64]))
        at = local(6)
        for trip in range(chance.randrange(2, 9)):
            at += chance.randrange(6, 30) * MINUTE
            line = chance.choice(["1", "2", "3"])
            bus = network.bus(f"trip-{trip}", line, chance.choice(journals))
            network.board(bus, card, at)
        events = sorted(
            (
                e
                for bus in network.buses.values()
                for e in bus.history.events
                if e.action == "board" or not e.admitted
            ),
            key=lambda e: (e.at, e.event_id),
        )
        events = list({e.event_id: e for e in events}.values())  # shared journals: once each
        data = Adapter.parse_data(network.bundle.scene["data"])
        total = dict(Adapter.settle(data, events))
        assert total["fares"] <= total["door_fares"]
        lowered += total["fares"] < total["door_fares"]
        # The clearing's own reckoning, as if no door had discounted: where it charges more,
        # or finds fewer transfers, a door's lower fare was kept.
        unbounded = [
            replace(e, result={**e.result, "fare": e.result["full_fare"]}) if e.admitted else e
            for e in events
        ]
        own = Adapter.settle(data, unbounded)
        kept += (
            own["fares"] > total["fares"] or own["transfer_discounts"] < total["transfer_discounts"]
        )
        assert (
            total["full_fares"]
            - total["concession_discounts"]
            - total["transfer_discounts"]
            - total["cap_discounts"]
            == total["fares"]
        )
        for count in range(1, len(events) + 1):  # and boarding by boarding
            before = dict(Adapter.settle(data, events[: count - 1]))
            upto = dict(Adapter.settle(data, events[:count]))
            assert upto["fares"] - before["fares"] <= upto["door_fares"] - before["door_fares"]
            assert min(upto[c] - before[c] for c in upto) >= 0
    assert lowered >= 10 and kept >= 3, (lowered, kept)  # both happened, or this proves little


# -- operators cannot link their passengers ---------------------------------------------------


def test_two_operators_validators_see_different_subjects_for_the_same_card() -> None:
    issuer = TestIssuer(now=NOW)
    card = random_card()
    city_bus = Network(site="city-bus", issuer=issuer)
    suburban = Network(site="suburban-bus", issuer=issuer)
    city_bus.board(city_bus.bus("a", "1"), card, local(8))
    suburban.board(suburban.bus("a", "1"), card, local(8, 30))
    seen = [n.buses["a"].history.events[0].subject for n in (city_bus, suburban)]
    assert seen == [
        issuer.subject(card, "transport", "city-bus"),
        issuer.subject(card, "transport", "suburban-bus"),
    ]
    assert seen[0] != seen[1]
    # Neither operator's journal sees the other's boarding: no transfer, no cap across them.
    assert suburban.buses["a"].history.events[0].result["transfer_discount"] == 0


# -- on a real journal ------------------------------------------------------------------------

TERMINAL = "00000000-0000-4000-8000-000000000001"


def _validator(journal: Journal, bundle: Any, issuer: TestIssuer, line: str = "1") -> Decider:
    """A validator as the runtime builds it: the decider over its SQLite journal."""
    return Decider(
        bundle,
        Adapter,
        prefix=issuer.prefix,
        replay=JournalReplay(journal),
        options={"line": line},
    )


def test_a_code_stays_used_and_a_passenger_boarded_across_a_validator_restart(
    tmp_path: Path, network: Network
) -> None:
    card = random_card()
    code = network.issuer.mint(card, at=local(8))
    journal = Journal(tmp_path / "bus.sqlite3")
    try:
        scan, decision = _validator(journal, network.bundle, network.issuer).decide(
            code, local(8), journal
        )
        journal.record(TERMINAL, scan, decision)
        assert decision.admitted
    finally:
        journal.close()
    journal = Journal(tmp_path / "bus.sqlite3")  # the validator restarted (power cut)
    try:
        validator = _validator(journal, network.bundle, network.issuer)
        assert validator.decide(code, local(8) + 30, journal)[1].reason == "replayed"
        fresh = network.issuer.mint(card, at=local(8) + 40)
        assert validator.decide(fresh, local(8) + 40, journal)[1].reason == "already_boarded"
        later = network.issuer.mint(card, at=local(8, 30))
        assert validator.decide(later, local(8, 30), journal)[1].admitted
    finally:
        journal.close()


def test_two_operators_journals_and_uploads_cannot_be_linked(tmp_path: Path) -> None:
    issuer = TestIssuer(now=NOW)
    card = random_card(age_band=AgeBand.AGE_60_64)
    uploads: dict[str, dict[str, Any]] = {}
    raw: dict[str, bytes] = {}
    for operator in ("city-bus", "suburban-bus"):
        bundle = issuer.bundle("transport", operator, TARIFF, max_age=10 * DAY)
        journal = Journal(tmp_path / f"{operator}.sqlite3")
        try:
            scan, decision = _validator(journal, bundle, issuer).decide(
                issuer.mint(card, at=local(8)), local(8), journal
            )
            uploads[operator] = journal.record(TERMINAL, scan, decision).to_upload()
        finally:
            journal.close()
        raw[operator] = b"".join(p.read_bytes() for p in tmp_path.glob(f"{operator}.sqlite3*"))
    city, suburban = uploads["city-bus"]["subject"], uploads["suburban-bus"]["subject"]
    assert city == issuer.subject(card, "transport", "city-bus")
    assert suburban == issuer.subject(card, "transport", "suburban-bus")
    assert city != suburban
    assert city.encode() not in raw["suburban-bus"] and suburban.encode() not in raw["city-bus"]
    for operator, journaled in raw.items():
        assert card.pseudonym not in journaled and card.pseudonym.hex().encode() not in journaled
        assert card.pseudonym.hex() not in json.dumps(uploads[operator])
