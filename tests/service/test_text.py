"""Text the database cannot store (outside review, finding 7): a NUL character, which
PostgreSQL refuses in text and cannot read back from JSON as text, and an unpaired surrogate,
which Python's JSON decoder makes of ``"\\ud800"`` and no UTF-8 encoder takes.

Every way text from outside reaches a row, on the real PostgreSQL: each is refused with a
4xx problem naming the field, never a 500, and nothing of the request is stored.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import httpx2
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi.testclient import TestClient
from hypothesis import given
from hypothesis import strategies as st
from jwt.algorithms import OKPAlgorithm
from sqlalchemy import Select, func, select

from idcode.service.auth import dev_token
from idcode.service.database import make_engine, make_session_factory
from idcode.service.fleet import terminal_token
from idcode.service.models import (
    AuditRecord,
    CardRecord,
    ScanEvent,
    SceneDataRecord,
    TerminalRecord,
)
from idcode.service.settings import Settings
from idcode.testing import random_id_number
from idcode.text import check_storable, printable, unstorable_reason
from tests.services import Tokens

Enrol = Callable[..., tuple[str, str]]
PROBLEM_JSON = "application/problem+json"
NUL = "\x00"
SURROGATE = "\ud800"
# Raw JSON for bodies holding an unpaired surrogate: httpx would not encode one.
SURROGATE_JSON = '"\\ud800"'

# A well-formed id no record has, fixed: parameters are the same in every collection (xdist
# workers compare them).
FIXED_ID = uuid.UUID("6f1c3b52-7d2e-4a8b-9c0d-1e2f3a4b5c6d")


def raw_json(document_with_marker: str) -> bytes:
    """A JSON body in which ``@SURROGATE@`` in a string stands for an unpaired surrogate."""
    return document_with_marker.replace("@SURROGATE@", "\\ud800").encode()


def refused(response: httpx2.Response, status: int, reason: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM_JSON
    problem: dict[str, Any] = response.json()
    assert problem["reason"] == reason
    return problem


def count(settings: Settings, rows: Any) -> int:
    """How many rows a table (or a select) has in the service's database."""
    query = rows if isinstance(rows, Select) else select(rows)
    engine = make_engine(settings.sqlalchemy_url)
    try:
        with make_session_factory(engine)() as session:
            return int(session.scalar(select(func.count()).select_from(query.subquery())) or 0)
    finally:
        engine.dispose()


# -- the core check -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("a\x00b", "contains a NUL character (U+0000)"),
        ("a\udc80", "contains an unpaired surrogate (U+DC80)"),
        ({"ok": [1, {"deep": "x\x00"}]}, "contains a NUL character"),
        ({"ok": 1, "ke\x00y": 2}, "has a key that contains a NUL character"),
        (["\ud83d"], "unpaired surrogate (U+D83D)"),
    ],
)
def test_text_the_database_cannot_store_is_named_without_repeating_it(
    value: object, reason: str
) -> None:
    found = unstorable_reason(value)
    assert found is not None and reason in found
    with pytest.raises(ValueError, match="cannot be stored") as raised:
        check_storable(value, "the field")
    assert "a\x00b" not in str(raised.value)


@given(st.text(alphabet=st.characters(blacklist_characters="\x00", codec="utf-8")))
def test_any_utf8_text_without_nul_is_storable(text: str) -> None:
    assert unstorable_reason(text) is None
    assert unstorable_reason({text: [text]}) is None


@given(st.text())
def test_printable_text_always_encodes_as_utf8(text: str) -> None:
    printable(text).encode("utf-8")


# -- ID token claims: the audit record's actor ---------------------------------------------


@pytest.mark.parametrize(
    "subject", ["op\x00erator", "op\udc80", "op\nerator", "\x1b[31mop"], ids=repr
)
def test_an_id_token_whose_sub_cannot_name_an_audit_actor_is_refused_as_invalid_token(
    client: TestClient, service_settings: Settings, subject: str
) -> None:
    """An identity provider's signed token with such a sub used to pass, and writing the
    audit record of the operator's action failed with a 500."""
    token = dev_token(service_settings, subject, roles=(service_settings.operator_role,))
    body = {"id_number": random_id_number(), "name": "王五"}
    audits = count(service_settings, AuditRecord)
    response = client.post("/v1/cards", json=body, headers={"Authorization": f"Bearer {token}"})
    problem = refused(response, 401, "invalid_token")
    assert "sub" in problem["detail"]
    assert count(service_settings, AuditRecord) == audits


# -- cards: one by one, and imported ------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["张\x00三", "张\x07三", "@SURROGATE@", "张三@SURROGATE@"], ids=repr
)
def test_a_card_whose_name_has_a_nul_control_or_surrogate_is_refused_with_422(
    client: TestClient, tokens: Tokens, service_settings: Settings, name: str
) -> None:
    body = json.dumps({"id_number": random_id_number(), "name": name})
    cards = count(service_settings, CardRecord)
    response = client.post(
        "/v1/cards",
        content=raw_json(body),
        headers={**tokens.operator(), "content-type": "application/json"},
    )
    problem = refused(response, 422, "invalid_request")
    assert problem["errors"][0]["loc"] == ["body", "name"]
    assert count(service_settings, CardRecord) == cards


def test_a_member_name_with_a_surrogate_is_a_422_not_a_500(
    client: TestClient, tokens: Tokens
) -> None:
    body = f'{{"id_number": "{random_id_number()}", "name": "王五", {SURROGATE_JSON}: 1}}'
    response = client.post(
        "/v1/cards",
        content=body.encode(),
        headers={**tokens.operator(), "content-type": "application/json"},
    )
    refused(response, 422, "invalid_request")


def test_imported_rows_with_unstorable_names_are_rejected_and_the_others_import(
    client: TestClient, tokens: Tokens, service_settings: Settings
) -> None:
    good = random_id_number()
    rows = [
        json.dumps({"id_number": random_id_number(), "name": "a\x00b"}),
        json.dumps({"id_number": random_id_number(), "name": "@SURROGATE@"}),
        json.dumps({"id_number": random_id_number(), "name": "王五", "@SURROGATE@": 1}),
        json.dumps({"id_number": good, "name": "王五"}),
    ]
    response = client.post(
        "/v1/cards/import",
        content=b"\n".join(raw_json(row) for row in rows),
        headers={**tokens.operator(), "content-type": "application/x-ndjson"},
    )
    assert response.status_code == 200, response.text
    report = response.json()
    assert (report["imported"], report["rejected"]) == (1, 3)
    assert [(r["row"], r["field"]) for r in report["rejections"]][:2] == [(1, "name"), (2, "name")]
    assert report["rejections"][2]["row"] == 3


def test_an_imported_csv_row_with_a_nul_in_the_name_is_rejected(
    client: TestClient, tokens: Tokens
) -> None:
    csv = f"id_number,name\n{random_id_number()},a\x00b\n{random_id_number()},王五\n"
    response = client.post(
        "/v1/cards/import",
        content=csv.encode(),
        headers={**tokens.operator(), "content-type": "text/csv"},
    )
    assert response.status_code == 200, response.text
    report = response.json()
    assert (report["imported"], report["rejections"][0]["field"]) == (1, "name")


# -- scene data -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "document",
    [
        '{"unit_fee": 200, "permits": ["a\\u0000b"]}',
        '{"unit_fee": 200, "\\u0000": 1}',
        '{"unit_fee": 200, "permits": [' + SURROGATE_JSON + "]}",
        '{"unit_fee": 200, ' + SURROGATE_JSON + ": 1}",
    ],
    ids=["nul-in-a-nested-value", "nul-key", "surrogate-value", "surrogate-key"],
)
def test_scene_data_with_unstorable_text_in_a_value_or_key_is_refused_with_422(
    client: TestClient, tokens: Tokens, service_settings: Settings, document: str
) -> None:
    response = client.put(
        "/v1/scenes/parking/lot-nul",
        content=document.encode(),
        headers={**tokens.operator(), "content-type": "application/json"},
    )
    problem = refused(response, 422, "invalid_scene_data")
    # The reason names the character (the adapter would only say a permit is no subject).
    assert "NUL" in problem["detail"] or "surrogate" in problem["detail"]
    stored = select(SceneDataRecord).where(SceneDataRecord.site == "lot-nul")
    assert count(service_settings, stored) == 0


# -- terminals: registration, their tokens, their events ---------------------------------


def ed25519_jwk() -> dict[str, Any]:
    return OKPAlgorithm.to_jwk(Ed25519PrivateKey.generate().public_key(), as_dict=True)


@pytest.mark.parametrize(
    "x",
    [
        # pyjwt's decoder read each of these as the key without the junk.
        lambda x: x[:10] + NUL + "=" + x[10:],
        lambda x: x + "\x00\x00",
        lambda x: x + "==",
        lambda x: x[:5] + "!!!!" + x[5:],
    ],
    ids=["nul-inside", "nul-after", "padding", "junk"],
)
def test_a_terminal_key_whose_x_is_not_canonical_base64url_is_refused_with_422(
    client: TestClient, tokens: Tokens, service_settings: Settings, x: Callable[[str], str]
) -> None:
    jwk = ed25519_jwk()
    jwk["x"] = x(jwk["x"])
    terminals = count(service_settings, TerminalRecord)
    response = client.post(
        "/v1/terminals",
        json={"scene": "parking", "site": "lot-1", "public_jwk": jwk},
        headers=tokens.operator(),
    )
    problem = refused(response, 422, "invalid_request")
    assert problem["errors"][0]["loc"][:2] == ["body", "public_jwk"]
    assert count(service_settings, TerminalRecord) == terminals


def registered(client: TestClient, tokens: Tokens) -> tuple[str, Ed25519PrivateKey]:
    key = Ed25519PrivateKey.generate()
    response = client.post(
        "/v1/terminals",
        json={
            "scene": "parking",
            "site": "lot-1",
            "public_jwk": OKPAlgorithm.to_jwk(key.public_key(), as_dict=True),
        },
        headers=tokens.operator(),
    )
    assert response.status_code == 201, response.text
    return response.json()["id"], key


def signed_by_terminal(terminal_id: str, key: Ed25519PrivateKey, **claims: Any) -> str:
    now = int(datetime.now(UTC).timestamp())
    payload = {
        "iss": terminal_id,
        "sub": terminal_id,
        "aud": "idcode",
        "iat": now,
        "exp": now + 60,
        "jti": uuid.uuid4().hex,
        **claims,
    }
    return jwt.encode(payload, key, algorithm="EdDSA")


@pytest.mark.parametrize(
    ("claims", "detail"),
    [
        ({"jti": "a" + SURROGATE}, "jti"),
        ({"jti": "a\x00b"}, "jti"),
        ({"jti": 7}, "JWT ID"),
        ({"iat": True, "exp": True}, "booleans"),
        ({"exp": False}, "booleans"),
    ],
    ids=["jti-surrogate", "jti-nul", "jti-number", "iat-exp-true", "exp-false"],
)
def test_a_terminal_token_with_a_hostile_jti_or_boolean_times_is_refused_with_401(
    client: TestClient, tokens: Tokens, claims: dict[str, Any], detail: str
) -> None:
    terminal_id, key = registered(client, tokens)
    token = signed_by_terminal(terminal_id, key, **claims)
    response = client.get("/v1/trust-bundle", headers={"Authorization": f"Bearer {token}"})
    problem = refused(response, 401, "invalid_token")
    assert detail in problem["detail"]


@pytest.mark.parametrize("value", ["a\\u0000b", SURROGATE_JSON[1:-1]], ids=["nul", "surrogate"])
def test_an_event_whose_scene_result_text_cannot_be_stored_is_refused_with_422(
    client: TestClient, tokens: Tokens, service_settings: Settings, value: str
) -> None:
    terminal_id, key = registered(client, tokens)
    event_id = f"evt-{uuid.uuid4().hex[:8]}"
    event = {
        "event_id": event_id,
        "occurred_at": datetime.now(UTC).isoformat(),
        "valid": True,
        "reason": "ok",
        "scene_result": {"fee": "@VALUE@"},
    }
    body = json.dumps({"events": [event]}).replace("@VALUE@", value)
    response = client.post(
        "/v1/events",
        content=body.encode(),
        headers={
            "Authorization": "Bearer " + terminal_token(terminal_id, key),
            "content-type": "application/json",
        },
    )
    problem = refused(response, 422, "invalid_request")
    assert "cannot be stored" in problem["errors"][0]["msg"]
    assert count(service_settings, select(ScanEvent).where(ScanEvent.event_id == event_id)) == 0


# -- path and query parameters --------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "/v1/events?reason=ok%00",
        f"/v1/events?terminal_id={FIXED_ID}%00",
        "/v1/events?since=2026-01-01T00:00:00%00",
        f"/v1/cards/{FIXED_ID}%00",
        f"/v1/terminals/{FIXED_ID}%00/decommission",
    ],
)
def test_a_nul_in_a_path_or_query_parameter_is_a_4xx_problem(
    client: TestClient, tokens: Tokens, path: str
) -> None:
    method = "POST" if path.endswith("decommission") else "GET"
    response = client.request(method, path, headers=tokens.operator())
    assert 400 <= response.status_code < 500, response.text
    assert response.headers["content-type"] == PROBLEM_JSON


@pytest.mark.parametrize("path", ["/v1/scenes/parking/lot%001", "/v1/scenes/park%00ing/lot-1"])
def test_a_nul_in_the_scene_or_site_of_scene_data_is_a_4xx_problem(
    client: TestClient, tokens: Tokens, path: str
) -> None:
    response = client.put(path, json={"unit_fee": 1}, headers=tokens.operator())
    assert 400 <= response.status_code < 500, response.text
