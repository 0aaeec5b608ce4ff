"""Site-scoped subjects and the daily settlement file, through a scene of their own (a toll
gate from a plugin): what any site-scoped scene with a settlement (transport, merchants)
gets from the SDK and the service."""

from __future__ import annotations

import csv
import importlib
import io
import json
import textwrap
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi.testclient import TestClient

from idcode.bundle import verify_bundle
from idcode.errors import SceneError
from idcode.keystore import open_key_store
from idcode.scenes import (
    SceneAdapter,
    decode_scene_key,
    scene_subject_key,
    site_subject_key,
    subject_of,
    terminal_subject_key,
)
from idcode.service.settings import Settings
from idcode.terminal.identity import public_jwk_of
from idcode.terminaltoken import terminal_token
from idcode.testing import TestIssuer, TestTerminal
from tests.services import Tokens

TOLL = '''
"""A toll gate: each passage costs the site's fee; the settlement counts them per subject."""
from typing import ClassVar
from pydantic import Field
from idcode.scenes import Decision, SceneAdapter, SceneData

class TollData(SceneData):
    fee: int = Field(default=100, ge=0)
    members: tuple[str, ...] = ()
    broken: str = "no"

class Adapter(SceneAdapter):
    scene: ClassVar[str] = "toll"
    Data: ClassVar[type[SceneData]] = TollData
    actions: ClassVar[tuple[str, ...]] = ("pass",)
    subject_scope: ClassVar[str] = "site"
    subject_in_decision_line: ClassVar[bool] = True
    settlement_columns: ClassVar[tuple[str, ...]] = ("passages", "fees")

    def decide_valid(self, scan, card, subject, history):
        return Decision.admit("pass", fee=self.data.fee, member=subject in self.data.members)

    @classmethod
    def settle(cls, data, events):
        if data.broken == "raise":
            raise RuntimeError("a defect")
        if data.broken == "columns":
            return {"passages": 1}
        admitted = [e for e in events if e.admitted]
        return {"passages": len(admitted), "fees": sum(e.result.get("fee", 0) for e in admitted)}
'''


@pytest.fixture
def toll(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Any:
    """The toll scene installed as a plugin distribution would be."""
    (tmp_path / "idcode_toll.py").write_text(textwrap.dedent(TOLL))
    dist_info = tmp_path / "idcode_toll-1.0.0.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: idcode-toll\nVersion: 1.0.0\n"
    )
    (dist_info / "entry_points.txt").write_text("[idcode.scenes]\ntoll = idcode_toll:Adapter\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    return importlib.import_module("idcode_toll")


# -- the SDK ----------------------------------------------------------------------------------


def test_a_site_key_is_the_sites_own_and_never_the_scenes_or_another_sites() -> None:
    city = bytes(32)
    keys = {
        site_subject_key(city, "merchant", "shop-1"),
        site_subject_key(city, "merchant", "shop-2"),
        site_subject_key(city, "transport", "shop-1"),
        scene_subject_key(city, "merchant"),
    }
    assert len(keys) == 4
    assert site_subject_key(city, "merchant", "shop-1") != site_subject_key(
        bytes([1]) + city[1:], "merchant", "shop-1"
    )


@pytest.mark.parametrize("site", ["", "a/b", "x" * 65, "shop 1", "商店"])
def test_a_site_key_refuses_a_site_the_service_never_registers(site: str) -> None:
    with pytest.raises(SceneError, match="a site is 1-64"):
        site_subject_key(bytes(32), "merchant", site)


def test_the_existing_scenes_keep_one_key_for_every_site() -> None:
    city = bytes(32)
    for scene in ("community", "parking", "tourism", "eldercare"):
        assert terminal_subject_key(city, scene, "a") == scene_subject_key(city, scene)
        assert terminal_subject_key(city, scene, "b") == scene_subject_key(city, scene)


@pytest.mark.parametrize(
    ("attributes", "message"),
    [
        ({"subject_scope": "city"}, "subject_scope must be"),
        ({"subject_in_decision_line": True}, "needs subject_scope = 'site'"),
        ({"settlement_columns": ("Fees",)}, "settlement column 'Fees'"),
        ({"settlement_columns": ("subject",)}, "settlement column 'subject'"),
    ],
)
def test_an_adapter_class_that_would_leak_or_break_the_file_is_refused_when_defined(
    attributes: dict[str, Any], message: str
) -> None:
    with pytest.raises(SceneError, match=message):
        type("Bad", (SceneAdapter,), {"scene": "bad", **attributes})


def test_test_terminals_of_two_sites_see_different_subjects(toll: Any) -> None:
    issuer = TestIssuer()
    card_code = issuer.mint()
    one = TestTerminal(issuer.bundle("toll", "plaza-1"), toll.Adapter)
    two = TestTerminal(issuer.bundle("toll", "plaza-2"), toll.Adapter)
    one.scan(card_code)
    two.scan(card_code)
    first, second = one.history.events[0].subject, two.history.events[0].subject
    assert first is not None and second is not None and first != second


# -- the service ------------------------------------------------------------------------------


def _register(client: TestClient, tokens: Tokens, scene: str, site: str) -> tuple[str, Any]:
    key = Ed25519PrivateKey.generate()
    body = {"scene": scene, "site": site, "public_jwk": public_jwk_of(key)}
    response = client.post("/v1/terminals", json=body, headers=tokens.operator())
    assert response.status_code == 201, response.text
    return response.json()["id"], key


def _bundle_subject_key(
    client: TestClient, terminal: tuple[str, Any], settings: Settings
) -> tuple[bytes, dict[str, Any]]:
    token = terminal_token(terminal[0], terminal[1], "EdDSA")
    response = client.get("/v1/trust-bundle", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200, response.text
    root = open_key_store(settings.keys_dir).root_public_jwk()
    bundle = verify_bundle(response.text, root)
    return decode_scene_key(bundle.scene["subject_key"]), dict(bundle.scene["data"])


def test_each_site_gets_its_own_key_and_card_references_become_its_own_subjects(
    toll: Any,
    client: TestClient,
    tokens: Tokens,
    enrol: Callable[..., tuple[str, str]],
    service_settings: Settings,
) -> None:
    card_id, _ = enrol()
    pseudonym = bytes.fromhex(
        client.get(f"/v1/cards/{card_id}", headers=tokens.operator()).json()["pseudonym"]
    )
    keys, members = [], []
    for site in ("plaza-1", "plaza-2"):
        put = client.put(
            f"/v1/scenes/toll/{site}",
            json={"members": [f"card:{card_id}"]},
            headers=tokens.operator(),
        )
        assert put.status_code == 200, put.text
        key, data = _bundle_subject_key(
            client, _register(client, tokens, "toll", site), service_settings
        )
        keys.append(key)
        members.append(data["members"])
    assert keys[0] != keys[1]
    assert members == [[subject_of(keys[0], pseudonym)], [subject_of(keys[1], pseudonym)]]
    assert members[0] != members[1]


def _events_start() -> datetime:
    """When the tests' events happen: 50 minutes ago, moved back where their minute would
    cross local midnight (UTC+8, the scene data's default)."""
    at = datetime.now(UTC) - timedelta(minutes=50)
    if (at + timedelta(hours=8)).time() >= (datetime.min + timedelta(minutes=1439)).time():
        at -= timedelta(minutes=5)
    return at


EVENTS_START = _events_start()


def _today() -> date:
    """The local day the tests' events fall in."""
    return (EVENTS_START + timedelta(hours=8)).date()


def _events(subjects: list[str | None], fee: int, start: int) -> list[dict[str, Any]]:
    at = EVENTS_START
    return [
        {
            "event_id": f"e{start + n}",
            "occurred_at": (at + timedelta(seconds=start + n)).isoformat(),
            "valid": subject is not None,
            "reason": "ok" if subject is not None else "bad_signature",
            "scene_result": {"action": "pass", "fee": fee} if subject is not None else {},
            "subject": subject,
        }
        for n, subject in enumerate(subjects)
    ]


def _upload(client: TestClient, terminal: tuple[str, Any], events: list[dict[str, Any]]) -> None:
    token = terminal_token(terminal[0], terminal[1], "EdDSA")
    response = client.post(
        "/v1/events", json={"events": events}, headers={"Authorization": f"Bearer {token}"}
    )
    assert response.status_code == 200, response.text


def test_a_sites_day_is_settled_per_subject_from_all_its_terminals_and_nothing_else(
    toll: Any, client: TestClient, tokens: Tokens
) -> None:
    a, b = "a" * 24, "b" * 24
    lane_1 = _register(client, tokens, "toll", "plaza-1")
    lane_2 = _register(client, tokens, "toll", "plaza-1")
    elsewhere = _register(client, tokens, "toll", "plaza-9")
    _upload(client, lane_1, _events([a, b, None], 100, 0))
    _upload(client, lane_2, _events([a], 250, 10))
    _upload(client, elsewhere, _events([a, a], 999, 20))
    day = _today().isoformat()

    jsonl = client.get(f"/v1/settlements/toll/plaza-1/{day}", headers=tokens.operator())
    as_csv = client.get(
        f"/v1/settlements/toll/plaza-1/{day}", params={"format": "csv"}, headers=tokens.operator()
    )

    assert jsonl.status_code == 200, jsonl.text
    assert jsonl.headers["content-type"] == "application/jsonl"
    assert jsonl.headers["idcode-final"] == "false"
    assert f'filename="toll-plaza-1-{day}.jsonl"' in jsonl.headers["content-disposition"]
    records = [json.loads(line) for line in jsonl.text.splitlines()]
    assert records == [
        {"record": "subject", "subject": a, "passages": 2, "fees": 350},
        {"record": "subject", "subject": b, "passages": 1, "fees": 100},
        {
            "record": "total",
            "scene": "toll",
            "site": "plaza-1",
            "day": day,
            "subjects": 2,
            "events": 4,
            "final": False,
            "passages": 3,
            "fees": 450,
        },
    ]
    assert as_csv.headers["content-type"] == "text/csv; charset=utf-8"
    assert list(csv.reader(io.StringIO(as_csv.text))) == [
        ["record", "subject", "passages", "fees"],
        ["subject", a, "2", "350"],
        ["subject", b, "1", "100"],
        ["total", "", "3", "450"],
    ]
    assert as_csv.text.endswith("\r\n")


def test_a_day_long_past_is_final_and_an_empty_day_has_totals_of_zero(
    toll: Any, client: TestClient, tokens: Tokens
) -> None:
    answer = client.get("/v1/settlements/toll/plaza-1/2020-01-01", headers=tokens.operator())
    assert answer.status_code == 200, answer.text
    assert answer.headers["idcode-final"] == "true"
    assert [json.loads(line) for line in answer.text.splitlines()] == [
        {
            "record": "total",
            "scene": "toll",
            "site": "plaza-1",
            "day": "2020-01-01",
            "subjects": 0,
            "events": 0,
            "final": True,
            "passages": 0,
            "fees": 0,
        }
    ]


@pytest.mark.parametrize(
    ("path", "status", "reason"),
    [
        ("/v1/settlements/community/hall-1/2026-01-01", 404, "no_settlement"),
        ("/v1/settlements/cinema/hall-1/2026-01-01", 404, "unknown_scene"),
        ("/v1/settlements/toll/plaza-1/2026-02-30", 422, "invalid_request"),
        ("/v1/settlements/toll/plaza 1/2026-01-01", 422, "invalid_request"),
        ("/v1/settlements/toll/plaza-1/2026-01-01?format=xlsx", 422, "invalid_request"),
    ],
)
def test_a_settlement_that_cannot_be_made_says_why(
    toll: Any, client: TestClient, tokens: Tokens, path: str, status: int, reason: str
) -> None:
    answer = client.get(path, headers=tokens.operator())
    assert (answer.status_code, answer.json()["reason"]) == (status, reason), answer.text


def test_only_operators_read_settlements(
    toll: Any, client: TestClient, tokens: Tokens, enrol: Callable[..., tuple[str, str]]
) -> None:
    _, id_number = enrol()
    path = "/v1/settlements/toll/plaza-1/2026-01-01"
    assert client.get(path).status_code == 401
    assert client.get(path, headers=tokens.citizen(id_number)).status_code == 403
    assert client.get(path, headers=tokens.verifier()).status_code == 403


@pytest.mark.parametrize("broken", ["raise", "columns"])
def test_an_adapter_whose_settle_is_broken_gets_a_named_refusal_not_a_500(
    toll: Any, client: TestClient, tokens: Tokens, broken: str
) -> None:
    put = client.put("/v1/scenes/toll/plaza-3", json={"broken": broken}, headers=tokens.operator())
    assert put.status_code == 200, put.text
    _upload(client, _register(client, tokens, "toll", "plaza-3"), _events(["c" * 24], 1, 40))
    answer = client.get(
        f"/v1/settlements/toll/plaza-3/{_today().isoformat()}", headers=tokens.operator()
    )
    assert (answer.status_code, answer.json()["reason"]) == (422, "settlement_failed")


def test_the_first_and_last_days_a_date_can_name_settle_empty_at_every_offset(
    toll: Any, client: TestClient, tokens: Tokens
) -> None:
    # 0001-01-01 at +08:00 starts in year 0, 9999-12-31 at -12:00 ends in year 10000: days
    # no datetime holds, which made an OverflowError, a 500.
    for offset in (-720, 0, 480, 840):
        put = client.put(
            f"/v1/scenes/toll/edge{offset}",
            json={"utc_offset_minutes": offset},
            headers=tokens.operator(),
        )
        assert put.status_code == 200, put.text
        for day, final in (("0001-01-01", "true"), ("9999-12-31", "false")):
            for fmt in ("jsonl", "csv"):
                answer = client.get(
                    f"/v1/settlements/toll/edge{offset}/{day}",
                    params={"format": fmt},
                    headers=tokens.operator(),
                )
                assert answer.status_code == 200, (offset, day, answer.text)
                assert answer.headers["idcode-final"] == final
                assert answer.text.splitlines()[-1].startswith(
                    "total,,0,0" if fmt == "csv" else '{"record": "total"'
                )


def _crafted(prefix: str, subject: str, results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {
            "event_id": f"{prefix}{n}",
            "occurred_at": (EVENTS_START + timedelta(seconds=n)).isoformat(),
            "valid": True,
            "reason": "ok",
            "scene_result": result,
            "subject": subject,
        }
        for n, result in enumerate(results)
    ]


def test_crafted_uploads_to_the_shipped_scenes_settle_within_their_rules(
    client: TestClient, tokens: Tokens
) -> None:
    """A compromised validator or till uploads amounts of its own making: huge, negative,
    booleans, texts, missing, another scene's action. The files are made (no 500), and pay or
    charge no more than the operator's and the shop's data allow."""
    operator = tokens.operator()
    tariff = {"lines": {"1": 200, "X5": 500}, "transfer_discount": 0}
    assert client.put("/v1/scenes/transport/bus-x", json=tariff, headers=operator).is_success
    senior = {"name": "senior", "age_from": "age_65_69", "amount_fen": 500, "funded_by": "city"}
    shop = {"discounts": [senior], "daily_uses": 2}
    assert client.put("/v1/scenes/merchant/shop-x", json=shop, headers=operator).is_success
    big = 2**53 - 1
    boardings: list[dict[str, Any]] = [
        {"action": "board", "line": "1", "full_fare": big, "concession_discount": 0, "fare": big},
        {"action": "board", "line": "nowhere", "full_fare": 90_000, "fare": 90_000},
        {"action": "board", "line": True, "full_fare": True, "fare": -5},
        {"action": "board", "line": "1", "full_fare": "200", "fare": "200"},
        {"action": "discount", "line": "1", "full_fare": 200, "fare": 200},
        {"line": "1", "full_fare": 200, "fare": 200},
    ]
    uses: list[dict[str, Any]] = [
        {"action": "discount", "discount": "senior", "amount_fen": big},
        {"action": "discount", "discount": "senior", "amount_fen": -500},
        {"action": "discount", "discount": "senior", "amount_fen": True},
        {"action": "discount", "discount": "gold", "amount_fen": 9_000},
        {"action": "discount", "discount": "senior", "amount_fen": 500},
        {"action": "board", "discount": "senior", "amount_fen": 500},
    ]
    _upload(
        client, _register(client, tokens, "transport", "bus-x"), _crafted("t", "a" * 24, boardings)
    )
    _upload(client, _register(client, tokens, "merchant", "shop-x"), _crafted("m", "a" * 24, uses))

    day = _today().isoformat()
    files = {}
    for path in ("transport/bus-x", "merchant/shop-x"):
        answer = client.get(f"/v1/settlements/{path}/{day}", headers=operator)
        assert answer.status_code == 200, answer.text
        files[path] = json.loads(answer.text.splitlines()[-1])
    bus, till = files["transport/bus-x"], files["merchant/shop-x"]
    # Line 1's 2 yuan, and the dearest line's 5 yuan for a line the tariff does not list.
    assert (bus["boardings"], bus["full_fares"], bus["fares"]) == (4, 700, 700)
    assert bus["door_fares"] >= bus["fares"] >= 0
    # The first two uses of the day are the daily_uses: one is reimbursed, at the shop's 5 yuan.
    counts = [till[c] for c in ("uses", "over_cap", "reimbursed_uses", "reimbursed_fen")]
    assert counts == [5, 3, 1, 500]
