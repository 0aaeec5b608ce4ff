"""The employment scene adapter: a job fair's stand check-in, its days and hours, working age,
a special fair's target groups, once per job-seeker per stand per day, counted per stand."""

from __future__ import annotations

import itertools
import json
import re
from pathlib import Path
from typing import Any

import pytest

from idcode.claims import AgeBand, Card, Programme, Residency
from idcode.errors import SceneError
from idcode.scenes import Decision, MemoryHistory
from idcode.testing import TestIssuer, TestTerminal, random_card
from idcode_adapters.employment import Adapter, EmploymentData

DOCS = Path(__file__).resolve().parents[2] / "docs" / "scenes" / "employment.md"
MINUTE = 60
HOUR = 3600
DAY1 = 1_796_054_400  # 2026-12-01T00:00+08:00, local midnight in the default UTC+8
DAY = 24 * HOUR
FAIR = "spring-fair"
#: A two-day fair with a rest day between: 1 and 2 December, and 4 December.
FAIR_DATA: dict[str, Any] = {
    "days": ["2026-12-01", "2026-12-02", "2026-12-04"],
    "opens_at": "09:00",
    "closes_at": "16:30",
    "stands": {
        "a-01": {"employer": "东湖高新科技有限公司"},
        "a-02": {"employer": "江城物流集团"},
        "b-07": {"employer": "长江医疗器械厂"},
    },
}

_status_indices = itertools.count(1)


def local(day: int, hh: int, mm: int) -> int:
    return day + hh * HOUR + mm * MINUTE


def seeker(age_band: AgeBand = AgeBand.AGE_18_59, programmes: Programme = Programme.NONE) -> Card:
    """A job-seeker's card with its own status-list slot."""
    return random_card(
        status_index=next(_status_indices),
        residency=Residency.PERMIT,
        age_band=age_band,
        programmes=programmes,
    )


@pytest.fixture
def issuer() -> TestIssuer:
    return TestIssuer(now=local(DAY1, 9, 0))


def stand(
    issuer: TestIssuer,
    stand_id: str | None = "a-01",
    *,
    data: dict[str, Any] | None = None,
    history: MemoryHistory | None = None,
    revoked: tuple[int, ...] = (),
    site: str = FAIR,
) -> TestTerminal:
    document = {**FAIR_DATA, **(data or {})}
    # A week's trust: the fair's days and the days around them, all with one bundle.
    bundle = issuer.bundle("employment", site, document, revoked=revoked, max_age=7 * DAY)
    options = {} if stand_id is None else {"stand": stand_id}
    return TestTerminal(bundle, options=options, history=history)


def scan(terminal: TestTerminal, issuer: TestIssuer, card: Card, at: int) -> Decision:
    return terminal.scan(issuer.mint(card, at=at), at=at)


# -- check-in and the count per stand --------------------------------------------------------


def test_working_age_job_seeker_checks_in_with_the_stand_and_its_count(
    issuer: TestIssuer,
) -> None:
    terminal = stand(issuer)
    first = scan(terminal, issuer, seeker(), local(DAY1, 9, 30))
    second = scan(terminal, issuer, seeker(), local(DAY1, 9, 31))
    assert (first.admitted, first.reason, first.action) == (True, "ok", "check_in")
    assert dict(first.result) == {"stand": "a-01", "check_ins": 1}
    assert dict(second.result) == {"stand": "a-01", "check_ins": 2}


def test_second_check_in_at_the_same_stand_the_same_day_is_denied_and_not_counted(
    issuer: TestIssuer,
) -> None:
    terminal = stand(issuer)
    card = seeker()
    assert scan(terminal, issuer, card, local(DAY1, 10, 0)).admitted
    again = scan(terminal, issuer, card, local(DAY1, 15, 0))  # a fresh code, the same person
    assert (again.admitted, again.reason, dict(again.result)) == (
        False,
        "already_checked_in",
        {"stand": "a-01"},
    )
    assert scan(terminal, issuer, seeker(), local(DAY1, 15, 1)).result["check_ins"] == 2


def test_the_same_job_seeker_checks_in_at_every_stand_once(issuer: TestIssuer) -> None:
    card = seeker()
    stands = [stand(issuer, stand_id) for stand_id in ("a-01", "a-02", "b-07")]
    decisions = [scan(s, issuer, card, local(DAY1, 10, n)) for n, s in enumerate(stands)]
    assert [(d.admitted, d.result["stand"], d.result["check_ins"]) for d in decisions] == [
        (True, "a-01", 1),
        (True, "a-02", 1),
        (True, "b-07", 1),
    ]


def test_the_once_a_day_rule_and_the_count_restart_on_the_next_fair_day(
    issuer: TestIssuer,
) -> None:
    terminal = stand(issuer)
    card = seeker()
    assert scan(terminal, issuer, card, local(DAY1, 16, 0)).result["check_ins"] == 1
    next_day = scan(terminal, issuer, card, local(DAY1 + DAY, 9, 0))
    assert (next_day.admitted, next_day.result["check_ins"]) == (True, 1)


def test_denied_scans_are_not_counted(issuer: TestIssuer) -> None:
    terminal = stand(issuer)
    assert scan(terminal, issuer, seeker(AgeBand.AGE_6_17), local(DAY1, 10, 0)).reason == (
        "not_working_age"
    )
    expired_at = local(DAY1, 10, 1)
    assert terminal.scan(issuer.mint(seeker(), at=expired_at - 600), at=expired_at).reason == (
        "expired"
    )
    assert scan(terminal, issuer, seeker(), local(DAY1, 10, 2)).result["check_ins"] == 1


def test_two_tablets_of_one_stand_sharing_a_journal_count_once_together(
    issuer: TestIssuer,
) -> None:
    shared = MemoryHistory()
    left, right = stand(issuer, history=shared), stand(issuer, history=shared)
    card = seeker()
    assert scan(left, issuer, card, local(DAY1, 10, 0)).result["check_ins"] == 1
    assert scan(right, issuer, card, local(DAY1, 10, 1)).reason == "already_checked_in"
    assert scan(right, issuer, seeker(), local(DAY1, 10, 2)).result["check_ins"] == 2


def test_a_journal_shared_with_another_stand_is_refused_that_day_so_no_count_mixes_stands(
    issuer: TestIssuer,
) -> None:
    shared = MemoryHistory()
    ours, theirs = stand(issuer, "a-01", history=shared), stand(issuer, "a-02", history=shared)
    card = seeker()
    assert scan(ours, issuer, card, local(DAY1, 10, 0)).admitted
    mixed = scan(theirs, issuer, card, local(DAY1, 10, 1))
    assert (mixed.admitted, mixed.reason, dict(mixed.result)) == (
        False,
        "journal_of_another_stand",
        {"stand": "a-02"},
    )
    # The tablet moved to a-02 overnight counts for a-02 from the next fair day.
    moved = scan(theirs, issuer, card, local(DAY1 + DAY, 9, 0))
    assert (moved.admitted, dict(moved.result)) == (True, {"stand": "a-02", "check_ins": 1})


# -- days and hours -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "at",
    [
        local(DAY1 - DAY, 10, 0),  # the day before the fair
        local(DAY1 + 2 * DAY, 10, 0),  # the rest day between
        local(DAY1 + 4 * DAY, 10, 0),  # the day after
    ],
)
def test_a_day_the_fair_is_not_held_is_denied_not_fair_day(issuer: TestIssuer, at: int) -> None:
    decision = scan(stand(issuer), issuer, seeker(), at)
    assert (decision.admitted, decision.reason, dict(decision.result)) == (
        False,
        "not_fair_day",
        {"stand": "a-01"},
    )


@pytest.mark.parametrize(
    ("hh", "mm", "open_"),
    [(8, 59, False), (9, 0, True), (16, 29, True), (16, 30, False), (23, 59, False)],
)
def test_check_in_opens_inclusive_and_closes_exclusive(
    issuer: TestIssuer, hh: int, mm: int, open_: bool
) -> None:
    decision = scan(stand(issuer), issuer, seeker(), local(DAY1 + 3 * DAY, hh, mm))
    assert decision.admitted is open_
    assert decision.reason == ("ok" if open_ else "outside_fair_hours")


def test_a_fair_open_until_24_00_checks_in_to_the_last_second_of_the_day(
    issuer: TestIssuer,
) -> None:
    terminal = stand(issuer, data={"opens_at": "00:00", "closes_at": "24:00"})
    assert scan(terminal, issuer, seeker(), local(DAY1, 0, 0)).admitted
    assert scan(terminal, issuer, seeker(), DAY1 + DAY - 1).admitted


def test_fair_days_are_local_days_at_the_scene_data_utc_offset(issuer: TestIssuer) -> None:
    # 1 December 02:00 UTC is 10:00 in UTC+8 but 21:00 on 30 November in UTC-5.
    at = DAY1 + 10 * HOUR
    china = scan(stand(issuer), issuer, seeker(), at)
    assert china.admitted
    west = stand(issuer, data={"utc_offset_minutes": -300, "opens_at": "00:00"})
    assert scan(west, issuer, seeker(), at).reason == "not_fair_day"


# -- who may check in -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "band",
    [AgeBand.UNKNOWN, AgeBand.UNDER_6, AgeBand.AGE_6_17, AgeBand.AGE_60_64, AgeBand.AGE_80_PLUS],
)
def test_by_default_only_the_working_age_band_checks_in(issuer: TestIssuer, band: AgeBand) -> None:
    decision = scan(stand(issuer), issuer, seeker(band), local(DAY1, 10, 0))
    assert (decision.admitted, decision.reason) == (False, "not_working_age")


def test_a_fair_for_older_workers_admits_the_bands_its_data_names(issuer: TestIssuer) -> None:
    terminal = stand(issuer, data={"age_bands": ["age_60_64", "age_65_69"]})
    decisions = [
        scan(terminal, issuer, seeker(band), local(DAY1, 10, n))
        for n, band in enumerate((AgeBand.AGE_60_64, AgeBand.AGE_65_69, AgeBand.AGE_18_59))
    ]
    assert [d.reason for d in decisions] == ["ok", "ok", "not_working_age"]


def test_a_special_fair_admits_its_target_groups_only(issuer: TestIssuer) -> None:
    terminal = stand(issuer, data={"target_groups": ["veteran", "disability"]})
    cards = [
        seeker(programmes=Programme.VETERAN),
        seeker(programmes=Programme.DISABILITY | Programme.LOW_INCOME),
        seeker(programmes=Programme.LOW_INCOME | Programme.STUDENT),
        seeker(),
    ]
    decisions = [scan(terminal, issuer, c, local(DAY1, 10, n)) for n, c in enumerate(cards)]
    assert [d.reason for d in decisions] == [
        "ok",
        "ok",
        "not_in_target_group",
        "not_in_target_group",
    ]
    assert [d.result.get("check_ins") for d in decisions] == [1, 2, None, None]


def test_a_target_group_does_not_open_the_fair_to_another_age_band(issuer: TestIssuer) -> None:
    terminal = stand(issuer, data={"target_groups": ["student"]})
    pupil = seeker(AgeBand.AGE_6_17, Programme.STUDENT)
    assert scan(terminal, issuer, pupil, local(DAY1, 10, 0)).reason == "not_working_age"
    graduate = seeker(AgeBand.AGE_18_59, Programme.STUDENT)
    assert scan(terminal, issuer, graduate, local(DAY1, 10, 1)).admitted


# -- codes the verifier refuses ----------------------------------------------------------------


def test_expired_code_is_denied_with_reason_expired(issuer: TestIssuer) -> None:
    at = local(DAY1, 10, 0)
    decision = stand(issuer).scan(issuer.mint(seeker(), at=at - 300), at=at)
    assert (decision.admitted, decision.reason, dict(decision.result)) == (False, "expired", {})


def test_revoked_card_is_denied_with_reason_revoked(issuer: TestIssuer) -> None:
    card = seeker()
    terminal = stand(issuer, revoked=(card.status_index,))
    assert scan(terminal, issuer, card, local(DAY1, 10, 0)).reason == "revoked"


def test_replayed_code_is_denied_replayed_and_counted_once(issuer: TestIssuer) -> None:
    terminal = stand(issuer)
    at = local(DAY1, 10, 0)
    code = issuer.mint(seeker(), at=at)
    assert terminal.scan(code, at=at).result["check_ins"] == 1
    assert terminal.scan(code, at=at + 5).reason == "replayed"
    assert scan(terminal, issuer, seeker(), at + 6).result["check_ins"] == 2


# -- the stand option and hostile scene data ----------------------------------------------------


def test_terminal_without_a_stand_option_is_refused(issuer: TestIssuer) -> None:
    with pytest.raises(SceneError, match="needs the option stand"):
        stand(issuer, None)


@pytest.mark.parametrize("stand_id", ["a-03", "x" * 32])
def test_terminal_with_a_stand_the_fair_does_not_list_is_refused(
    issuer: TestIssuer, stand_id: str
) -> None:
    with pytest.raises(SceneError, match="is not a stand of the fair spring-fair") as refused:
        stand(issuer, stand_id)
    assert len(str(refused.value)) < 200  # a hostile option is cut short in the message
    assert "a-01, a-02, b-07" in str(refused.value)


@pytest.mark.parametrize(
    "stand_id", ["A-01", "", " a-01", "a-01\n", "-a", "x" * 200, "'; drop table events; --"]
)
def test_a_stand_option_that_is_no_stand_id_is_refused_before_any_bundle(
    issuer: TestIssuer, stand_id: str
) -> None:
    """No fair's data can list it, so the terminal does not start (idcode terminal run calls
    check_options before it syncs), rather than deny every scan stale_trust."""
    with pytest.raises(SceneError, match="option stand must be a stand id") as refused:
        Adapter.check_options({"stand": stand_id})
    assert len(str(refused.value)) < 200  # a hostile option is cut short in the message
    with pytest.raises(SceneError, match="option stand must be a stand id"):
        stand(issuer, stand_id)


def test_terminal_without_an_adapter_class_uses_the_employment_adapter(
    issuer: TestIssuer,
) -> None:
    assert type(stand(issuer).decider.adapter) is Adapter


@pytest.mark.parametrize(
    "change",
    [
        {"days": []},
        {"days": None},
        {"days": ["2026-12-01", "2026-12-01"]},
        {"days": ["2026-12-1"]},
        {"days": ["2026-02-30"]},
        {"days": [1796054400]},
        {"days": [f"2026-01-{d:02d}" for d in range(1, 32)] + ["2026-02-01"]},
        {"stands": {}},
        {"stands": {"A-01": {"employer": "x"}}},
        {"stands": {"a 01": {"employer": "x"}}},
        {"stands": {"-a": {"employer": "x"}}},
        {"stands": {"a" * 33: {"employer": "x"}}},
        {"stands": {"a-01": {}}},
        {"stands": {"a-01": {"employer": ""}}},
        {"stands": {"a-01": {"employer": "x" * 65}}},
        {"stands": {"a-01": {"employer": "东湖\n科技"}}},
        {"stands": {"a-01": {"employer": "东湖\x00科技"}}},
        {"stands": {"a-01": {"employer": "东湖\ud800"}}},
        {"stands": {"a-01": {"employer": " 东湖科技"}}},
        {"stands": {"a-01": {"employer": "x", "contact_phone": "13800000000"}}},
        {"stands": {"a-01": "东湖科技"}},
        {"stands": {f"s-{n}": {"employer": "x"} for n in range(2001)}},
        {"opens_at": "9:00"},
        {"opens_at": "24:00"},
        {"closes_at": "09:00"},
        {"closes_at": "24:01"},
        {"opens_at": "24:00", "closes_at": "24:00"},
        {"opens_at": "18:00", "closes_at": "02:00"},
        {"opens_at": 540},
        {"age_bands": []},
        {"age_bands": ["age_6_17"]},
        {"age_bands": ["unknown"]},
        {"age_bands": ["age_18_59", "age_18_59"]},
        {"age_bands": "age_18_59"},
        {"target_groups": ["meal_subsidy"]},
        {"target_groups": ["veteran", "veteran"]},
        {"target_groups": "veteran"},
        {"stand": "a-01"},
        {"utc_offset_minutes": 900},
        {"allow_stale": "yes"},
    ],
    ids=lambda change: repr(change)[:60],  # the 2,001 stands would make an id of 40 KB
)
def test_invalid_scene_data_is_refused(change: dict[str, Any]) -> None:
    with pytest.raises(SceneError, match="employment scene data is not valid"):
        Adapter.parse_data({**FAIR_DATA, **change})


@pytest.mark.parametrize("missing", ["days", "stands"])
def test_scene_data_without_days_or_stands_is_refused(missing: str) -> None:
    document = {k: v for k, v in FAIR_DATA.items() if k != missing}
    with pytest.raises(SceneError, match=f"employment scene data is not valid: {missing}"):
        Adapter.parse_data(document)


def test_scene_data_reads_back_from_its_own_dump() -> None:
    parsed = Adapter.parse_data(FAIR_DATA)
    assert Adapter.parse_data(parsed.model_dump(mode="json")) == parsed


def test_the_documented_scene_data_example_is_valid_and_complete() -> None:
    example = re.search(r"```json\n(.*?)```", DOCS.read_text(encoding="utf-8"), re.DOTALL)
    assert example is not None
    document = json.loads(example.group(1))
    assert isinstance(Adapter.parse_data(document), EmploymentData)
    assert set(document) >= set(EmploymentData.model_fields) - {"linked_subjects", "allow_stale"}


def test_every_scene_data_field_reason_and_action_is_documented() -> None:
    text = DOCS.read_text(encoding="utf-8")
    for name, info in EmploymentData.model_fields.items():
        assert info.description, name
        assert f"`{name}`" in text, name
    for reason in Adapter.reasons + Adapter.actions:
        assert f"`{reason}`" in text, reason


# -- privacy -----------------------------------------------------------------------------------


def test_stand_results_name_the_stand_and_a_count_never_the_job_seeker(
    issuer: TestIssuer,
) -> None:
    card = seeker(AgeBand.AGE_18_59, Programme.DISABILITY | Programme.VETERAN)
    terminal = stand(issuer)
    decisions = [scan(terminal, issuer, card, local(DAY1, hh, 0)) for hh in (8, 10, 11)] + [
        scan(terminal, issuer, card, local(DAY1 + 2 * DAY, 10, 0))
    ]
    assert [d.reason for d in decisions] == [
        "outside_fair_hours",
        "ok",
        "already_checked_in",
        "not_fair_day",
    ]
    subject = issuer.subject(card, "employment", FAIR)
    secrets = {card.pseudonym.hex(), subject, str(card.status_index)}
    for decision in decisions:
        assert set(decision.result) <= {"stand", "check_ins"}
        assert decision.subject is None
        assert not secrets & {str(value) for value in decision.result.values()}
    # The subject stays in the journal (for the once-a-day rule), never on the stand's line.
    assert not Adapter.subject_in_decision_line
    assert terminal.history.events[1].subject == subject


def test_each_fair_has_its_own_subjects(issuer: TestIssuer) -> None:
    card = seeker()
    spring, autumn = stand(issuer), stand(issuer, site="autumn-fair")
    scan(spring, issuer, card, local(DAY1, 10, 0))
    scan(autumn, issuer, card, local(DAY1, 10, 1))
    subjects = [spring.history.events[0].subject, autumn.history.events[0].subject]
    assert subjects == [
        issuer.subject(card, "employment", FAIR),
        issuer.subject(card, "employment", "autumn-fair"),
    ]
    assert subjects[0] != subjects[1]
