"""Bus validators against the live service: offline decisions, the journal, the upload and the
operator's clearing file; two operators whose validators and files cannot be linked; and the
bus-validator example as a user runs it, with its README's controller."""

from __future__ import annotations

import csv
import io
import json
import secrets
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from idcode.service.settings import Settings
from idcode.terminal.client import register
from idcode.terminal.identity import TerminalIdentity, new_terminal_key, public_jwk_of
from idcode.terminal.runtime import TerminalRuntime
from idcode.testing import random_id_number
from tests.integration.test_examples import (
    _clear_of_local_midnight,
    _controller_output,
    _outcomes,
    _run_example_summary,
)
from tests.live import LiveService, live_service, live_settings

TARIFF = {"lines": {"1": 200, "2": 300}, "transfer_discount": 100, "daily_cap": 1000}
COLUMNS = [
    "boardings",
    "full_fares",
    "concession_discounts",
    "transfer_discounts",
    "cap_discounts",
    "fares",
    "door_fares",
]


@pytest.fixture(scope="module")
def service(
    tmp_path_factory: pytest.TempPathFactory, postgres_url: str, redis_url: str
) -> Iterator[LiveService]:
    settings = live_settings(tmp_path_factory.mktemp("transport"), postgres_url, redis_url, "bus")
    with live_service(settings) as live:
        yield live


def _enrol(service: LiveService, birth: date, **card: Any) -> str:
    """Enrol a card; its ID number (which holds the birth date)."""
    id_number = random_id_number(birth)
    body = {"id_number": id_number, "name": "乘客", **card}
    answer = service.client.post("/v1/cards", json=body, headers=service.tokens.operator())
    assert answer.status_code == 201, answer.text
    return id_number


def _code(service: LiveService, id_number: str) -> str:
    answer = service.client.post("/v1/codes", headers=service.tokens.citizen(id_number))
    assert answer.status_code == 200, answer.text
    code: str = answer.json()["code"]
    return code


def _validator(service: LiveService, operator: str, line: str, directory: Path) -> TerminalRuntime:
    """A registered bus validator of ``operator`` on ``line``, synced."""
    key = new_terminal_key()
    operator_token = service.tokens.operator()["Authorization"].removeprefix("Bearer ")
    terminal_id = register(
        service.url, operator_token, scene="transport", site=operator, public_jwk=public_jwk_of(key)
    )
    identity = TerminalIdentity(
        terminal_id, "transport", operator, service.url, key, service.root_jwk
    )
    directory.mkdir()
    runtime = TerminalRuntime(directory, identity, options={"line": line})
    runtime.sync_once()
    return runtime


def _clearing(service: LiveService, operator: str, day: date, fmt: str) -> str:
    answer = service.client.get(
        f"/v1/settlements/transport/{operator}/{day.isoformat()}",
        params={"format": fmt},
        headers=service.tokens.operator(),
    )
    assert answer.status_code == 200, answer.text
    return answer.text


def test_offline_boardings_are_journaled_uploaded_and_settled_per_operator_unlinkably(
    service: LiveService, tmp_path: Path
) -> None:
    _clear_of_local_midnight()
    year = date.today().year
    commuter = _enrol(service, date(year - 30, 6, 15))
    elder = _enrol(service, date(year - 70, 6, 15))
    # Sites of their own: the run's database is shared with the example's test below.
    city_bus, suburban_bus = operators = (
        f"city-{secrets.token_hex(3)}",
        f"sub-{secrets.token_hex(3)}",
    )
    for operator in operators:
        put = service.client.put(
            f"/v1/scenes/transport/{operator}", json=TARIFF, headers=service.tokens.operator()
        )
        assert put.status_code == 200, put.text
    line_1 = _validator(service, city_bus, "1", tmp_path / "city-1")
    line_2 = _validator(service, city_bus, "2", tmp_path / "city-2")
    suburban = _validator(service, suburban_bus, "1", tmp_path / "suburban-1")
    validators = (line_1, line_2, suburban)
    codes = {name: _code(service, person) for name, person in [
        ("commuter", commuter), ("commuter again", commuter), ("commuter on 2", commuter),
        ("elder", elder), ("commuter suburban", commuter),
    ]}  # fmt: skip
    try:
        for runtime in validators:
            runtime.network.clear()  # offline: decide and journal only
        decisions = [
            line_1.scan(codes["commuter"]),
            line_1.scan(codes["commuter"]),
            line_1.scan(codes["commuter again"]),
            line_1.scan(codes["elder"]),
            line_2.scan(codes["commuter on 2"]),
            suburban.scan(codes["commuter suburban"]),
        ]
        assert [(d.admitted, d.reason) for d in decisions] == [
            (True, "ok"),
            (False, "replayed"),
            (False, "already_boarded"),
            (True, "ok"),
            (True, "ok"),
            (True, "ok"),
        ]
        # Each door saw one boarding of the commuter: no transfer at line 2's door.
        assert [d.result.get("fare") for d in decisions] == [200, None, None, 0, 300, 200]
        assert all(r.journal.pending_count(r.identity.id) for r in validators)
        for runtime in validators:
            runtime.network.set()
            assert runtime.drain(60)
            stored = {e["event_id"] for e in service.events(runtime.identity.id)}
            journaled = {e.event_id for e in runtime.journal.entries(runtime.identity.id)}
            assert stored == journaled
    finally:
        for runtime in validators:
            runtime.stop()

    day = (datetime.fromtimestamp(decisions[0].at, UTC) + timedelta(hours=8)).date()
    city = [json.loads(line) for line in _clearing(service, city_bus, day, "jsonl").splitlines()]
    rows = {row["subject"]: row for row in city[:-1]}
    assert city[-1] == {
        "record": "total",
        "scene": "transport",
        "site": city_bus,
        "day": day.isoformat(),
        "subjects": 2,
        "events": 5,
        "final": False,
        "boardings": 3,
        "full_fares": 700,
        "concession_discounts": 200,
        "transfer_discounts": 100,  # line 1 then line 2: found at clearing
        "cap_discounts": 0,
        "fares": 400,
        "door_fares": 500,
    }
    commuter_rows = [row for row in rows.values() if row["boardings"] == 2]
    assert len(commuter_rows) == 1
    assert (commuter_rows[0]["fares"], commuter_rows[0]["door_fares"]) == (400, 500)
    as_csv = list(csv.reader(io.StringIO(_clearing(service, city_bus, day, "csv"))))
    assert as_csv[0] == ["record", "subject", *COLUMNS]
    assert as_csv[-1] == ["total", "", *(str(city[-1][c]) for c in COLUMNS)]

    # The same card is another subject at each operator: in the journals, the uploads and
    # the clearing files; only the service's keys connect them.
    suburban_file = _clearing(service, suburban_bus, day, "jsonl")
    suburban_rows = [json.loads(line) for line in suburban_file.splitlines()][:-1]
    assert len(suburban_rows) == 1 and suburban_rows[0]["fares"] == 200
    city_subjects = set(rows)
    suburban_subjects = {row["subject"] for row in suburban_rows}
    assert not city_subjects & suburban_subjects
    assert {e["subject"] for e in service.events(suburban.identity.id)} == suburban_subjects
    assert {e["subject"] for r in (line_1, line_2) for e in service.events(r.identity.id)} == (
        city_subjects
    )
    city_journal = (tmp_path / "city-1" / "journal.sqlite3").read_bytes()
    assert not any(subject.encode() in city_journal for subject in suburban_subjects)
    assert commuter not in json.dumps(city) + suburban_file


def test_bus_validator_example_boards_refuses_and_prints_a_clearing_file_that_agrees(
    service_settings: Settings, tmp_path: Path
) -> None:
    _clear_of_local_midnight()
    summary, stdout = _run_example_summary("bus-validator", service_settings, tmp_path)
    decisions = summary["decisions"]
    assert _outcomes(decisions) == [
        ("commuter boards line 1", True, "ok", "board"),
        ("the same code again", False, "replayed", ""),
        ("commuter again, a fresh code (for a companion)", False, "already_boarded", "board"),
        ("68-year-old", True, "ok", "board"),
        ("62-year-old", True, "ok", "board"),
        ("student", True, "ok", "board"),
        ("passenger with a disability", True, "ok", "board"),
        ("commuter changes to line 2", True, "ok", "board"),
        ("student changes to line 2", True, "ok", "board"),
        ("the commuter's first code once more", False, "replayed", ""),
    ]
    admitted = [d["result"] for d in decisions if d["admitted"]]
    assert [(r["line"], r["concession"], r["fare"]) for r in admitted] == [
        ("1", "none", 200),
        ("1", "elder", 0),
        ("1", "senior", 100),
        ("1", "student", 100),
        ("1", "disability", 0),
        ("2", "none", 200),
        ("2", "student", 100),
    ]
    assert summary["clearing"]["added"] == {
        "subjects": 5,
        "boardings": 7,
        "full_fares": 1400,
        "concession_discounts": 700,
        "transfer_discounts": 200,
        "cap_discounts": 0,
        "fares": 500,
        "door_fares": 700,
    }
    assert (
        "this run: 7 boardings by 5 passengers: the doors charged 7.00 yuan, "
        "the operator is owed 5.00 yuan" in stdout
    )
    assert "the file agrees with the journals" in stdout
    assert _controller_output("bus-validator", decisions) == [
        "green: 2.00 yuan",
        "red: replayed",
        "red: already_boarded",
        "green: free (elder)",
        "green: 1.00 yuan (senior)",
        "green: 1.00 yuan (student)",
        "green: free (disability)",
        "green: 2.00 yuan",
        "green: 1.00 yuan (student)",
        "red: replayed",
    ]
