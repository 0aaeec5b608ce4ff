"""The merchant scene end to end against one live service: the shop-till example (offline
decisions, journals, upload, the settlement file and its README's till controller), and two
merchants' tills that cannot link the same citizen: their bundles' keys, journals, uploaded
events and settlement files hold unrelated subjects, and no decision line holds one."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from idcode.scenes import decode_scene_key, subject_of
from idcode.terminal import identity as identities
from idcode.terminal.identity import TerminalIdentity, new_terminal_key, public_jwk_of
from idcode.terminal.runtime import TerminalRuntime
from idcode.terminal.scanners import decision_line
from idcode.testing import random_id_number
from tests.integration.test_examples import (
    EXAMPLES,
    ID_NUMBER,
    RUN_SECONDS,
    _clear_of_local_midnight,
    _controller_output,
    _outcomes,
)
from tests.live import LiveService, live_service, live_settings

CHINA = timedelta(hours=8)  # the scene data's default utc_offset_minutes


@pytest.fixture(scope="module")
def service(
    tmp_path_factory: pytest.TempPathFactory, postgres_url: str, redis_url: str
) -> Iterator[LiveService]:
    settings = live_settings(tmp_path_factory.mktemp("merchant"), postgres_url, redis_url, "shop")
    with live_service(settings) as live:
        yield live


def _today() -> str:
    return (datetime.now(UTC) + CHINA).date().isoformat()


def test_shop_till_example_grants_discounts_and_the_settlement_reimburses_within_the_cap(
    service: LiveService, tmp_path: Path
) -> None:
    _clear_of_local_midnight()
    settings = service.settings
    assert settings.database_url is not None
    env = {k: v for k, v in os.environ.items() if not k.startswith("IDCODE_")}
    env.update(
        PYTHONUNBUFFERED="1",
        IDCODE_ENVIRONMENT="development",
        IDCODE_KEYS_DIR=str(settings.keys_dir),
        IDCODE_DATA_DIR=str(settings.data_dir),
        IDCODE_DATABASE_URL=settings.database_url,
        IDCODE_OPERATOR_TOKEN=service.tokens.operator()["Authorization"].removeprefix("Bearer "),
    )
    completed = subprocess.run(
        [sys.executable, EXAMPLES / "shop-till" / "shop_till.py", "--server", service.url,
         "--workdir", tmp_path / "work", "--json"],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=RUN_SECONDS, check=False,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stdout + completed.stderr
    summary: dict[str, Any] = json.loads(completed.stdout.splitlines()[-1])
    assert summary["example"] == "shop-till"
    decisions = summary["decisions"]

    assert _outcomes(decisions) == [
        ("72-year-old registered resident", True, "ok", "discount"),
        ("67-year-old from another city", True, "ok", "discount"),
        ("36-year-old resident on 低保", True, "ok", "discount"),
        ("29-year-old with a residence permit", False, "not_eligible", "discount"),
        ("the 72-year-old again, same till", False, "daily_cap_reached", "discount"),
        ("the 72-year-old at the other till", True, "ok", "discount"),
        ("29-year-old with a residence permit", False, "not_eligible", "discount"),
    ]
    assert [d["result"] for d in decisions] == [
        {"discount": "senior", "amount_fen": 500, "funded_by": "city", "use": 1, "uses_left": 0},
        {"discount": "senior", "amount_fen": 500, "funded_by": "city", "use": 1, "uses_left": 0},
        {"discount": "welfare", "amount_fen": 800, "funded_by": "city", "use": 1, "uses_left": 0},
        {},
        {"discount": "senior", "daily_uses": 1},
        {
            "discount": "resident",
            "percent": 5,
            "max_fen": 1000,
            "funded_by": "merchant",
            "use": 1,
            "uses_left": 0,
        },
        {"discount": "resident"},
    ]
    assert all("subject" not in d for d in decisions)  # the till's controller gets none

    # Every decision reached the service, under the shop's own subjects.
    terminals = [tmp_path / "work" / "terminals" / name for name in ("till-1", "till-2")]
    uploaded = [e for t in terminals for e in service.events(identities.load(t).id)]
    assert {e["event_id"] for e in uploaded} == {d["event_id"] for d in decisions}

    # The settlement: the 72-year-old's second discount, granted by the till that could not
    # see the first, is over the cap and not reimbursed; the resident discount is the shop's.
    by_event = {e["event_id"]: e["subject"] for e in uploaded}
    senior, visitor, low_income, permit = (by_event[d["event_id"]] for d in decisions[:4])
    records = summary["settlement"]
    rows = {r["subject"]: r for r in records[:-1]}
    assert rows == {
        senior: _row(senior, uses=2, over_cap=1, reimbursed_uses=1, reimbursed_fen=500),
        visitor: _row(visitor, uses=1, over_cap=0, reimbursed_uses=1, reimbursed_fen=500),
        low_income: _row(low_income, uses=1, over_cap=0, reimbursed_uses=1, reimbursed_fen=800),
        permit: _row(permit, uses=0, over_cap=0, reimbursed_uses=0, reimbursed_fen=0),  # denied
    }
    assert records[-1] == {
        "record": "total",
        "scene": "merchant",
        "site": "riverside-market",
        "day": _today(),
        "subjects": 4,
        "events": 7,
        "final": False,
        "uses": 4,
        "over_cap": 1,
        "reimbursed_uses": 3,
        "reimbursed_fen": 1800,
    }
    table = list(csv.reader(io.StringIO(summary["settlement_csv"])))
    assert table[0] == [
        "record",
        "subject",
        "uses",
        "over_cap",
        "reimbursed_uses",
        "reimbursed_fen",
    ]
    assert table[-1] == ["total", "", "4", "1", "3", "1800"]
    assert "the city reimburses 18.00 yuan for 3 discounts; 1 over the daily cap" in (
        completed.stdout
    )
    # Nothing personal in the file or on the screen: subjects and integers only.
    assert not ID_NUMBER.findall(completed.stdout)
    assert all(re.fullmatch(r"[0-9a-f]{24}|", row[1]) for row in table[1:])

    assert _controller_output("shop-till", decisions) == [
        "till: senior discount -5.00 yuan (city), pay 123.00 yuan",
        "till: senior discount -5.00 yuan (city), pay 123.00 yuan",
        "till: welfare discount -8.00 yuan (city), pay 120.00 yuan",
        "till: no discount (not_eligible), pay 128.00 yuan",
        "till: no discount (daily_cap_reached), pay 128.00 yuan",
        "till: resident discount -6.40 yuan (merchant), pay 121.60 yuan",
        "till: no discount (not_eligible), pay 128.00 yuan",
    ]


def _row(subject: str, **columns: int) -> dict[str, Any]:
    return {"record": "subject", "subject": subject, **columns}


def test_the_service_refuses_merchant_data_its_tills_would_refuse(service: LiveService) -> None:
    bad = {"discounts": [{"name": "all", "percent": 10, "funded_by": "merchant"}]}
    answer = service.client.put(
        "/v1/scenes/merchant/bad-shop", json=bad, headers=service.tokens.operator()
    )
    assert (answer.status_code, answer.json()["reason"]) == (422, "invalid_scene_data")
    assert "give at least one condition" in answer.json()["detail"]
    missing = service.client.get(
        f"/v1/settlements/merchant/bad-shop/{_today()}", headers=service.tokens.operator()
    )
    assert (missing.status_code, missing.json()["reason"]) == (404, "no_scene_data")


DISCOUNTS = {
    "discounts": [
        {"name": "senior", "age_from": "age_60_64", "amount_fen": 300, "funded_by": "city"}
    ],
    "daily_uses": 1,
}


def _till(service: LiveService, workdir: Path, site: str) -> TerminalRuntime:
    """A till of ``site`` registered with the service, synced, then offline."""
    key = new_terminal_key()
    body = {"scene": "merchant", "site": site, "public_jwk": public_jwk_of(key)}
    answer = service.client.post("/v1/terminals", json=body, headers=service.tokens.operator())
    assert answer.status_code == 201, answer.text
    identity = TerminalIdentity(
        answer.json()["id"], "merchant", site, service.url, key, service.root_jwk
    )
    (workdir / site).mkdir()
    runtime = TerminalRuntime(workdir / site, identity)
    runtime.sync_once()
    runtime.network.clear()
    return runtime


def test_two_merchants_tills_see_unrelated_subjects_for_the_same_card_and_lines_carry_none(
    service: LiveService, tmp_path: Path
) -> None:
    _clear_of_local_midnight()
    operator = service.tokens.operator()
    id_number = random_id_number(datetime.now(UTC).date().replace(year=1950, day=1))
    card = service.client.post(
        "/v1/cards",
        json={"id_number": id_number, "name": "测试", "residency": "registered"},
        headers=operator,
    )
    assert card.status_code == 201, card.text
    card_id = card.json()["id"]
    pseudonym = bytes.fromhex(
        service.client.get(f"/v1/cards/{card_id}", headers=operator).json()["pseudonym"]
    )
    sites = ("corner-bakery", "east-pharmacy")
    for site in sites:
        put = service.client.put(f"/v1/scenes/merchant/{site}", json=DISCOUNTS, headers=operator)
        assert put.status_code == 200, put.text
    tills = [_till(service, tmp_path, site) for site in sites]
    citizen = service.tokens.citizen(id_number)

    entries = []
    for till in tills:
        code = service.client.post("/v1/codes", headers=citizen).json()["code"]
        entries.append(till.scan(code))
    assert [(e.admitted, e.result["discount"]) for e in entries] == [(True, "senior")] * 2

    keys = []
    for till in tills:
        assert till.bundle is not None
        keys.append(decode_scene_key(till.bundle.scene["subject_key"]))
    subjects = [subject_of(key, pseudonym) for key in keys]
    assert keys[0] != keys[1] and subjects[0] != subjects[1]
    assert [e.subject for e in entries] == subjects
    assert keys == [service.subject_key("merchant", site) for site in sites]
    # The till's controller gets no subject at all.
    for till, entry in zip(tills, entries, strict=True):
        assert till.subject_in_lines is False
        assert "subject" not in decision_line(entry, subject=till.subject_in_lines)

    uploaded = []
    for till in tills:
        till.network.set()
        assert till.drain(30)
        uploaded.append([e["subject"] for e in service.events(till.identity.id)])
        till.stop()
    assert uploaded == [[subjects[0]], [subjects[1]]]
    # Neither journal holds the other merchant's subject, nor the card's pseudonym.
    for (site, other), till_dir in zip(
        [(sites[0], subjects[1]), (sites[1], subjects[0])], sites, strict=True
    ):
        raw = b"".join(p.read_bytes() for p in (tmp_path / till_dir).glob("journal*"))
        assert raw, site
        assert other.encode() not in raw and pseudonym.hex().encode() not in raw
    files = []
    for site in sites:
        answer = service.client.get(f"/v1/settlements/merchant/{site}/{_today()}", headers=operator)
        assert answer.status_code == 200, answer.text
        files.append([json.loads(line) for line in answer.text.splitlines()])
    assert [[r.get("subject") for r in f[:-1]] for f in files] == [[subjects[0]], [subjects[1]]]
    assert [f[-1]["reimbursed_fen"] for f in files] == [300, 300]
