"""Rough edges a new user hit (issue 15, item 6): a JSON route sent another media type answers
415 naming JSON (c); every time the API returns carries its offset, problem titles start with
a capital letter, and docs/api.md lists 405 (h)."""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi.routing import APIRoute, iter_route_contexts
from fastapi.testclient import TestClient
from jwt.algorithms import OKPAlgorithm

import idcode.service
from idcode.service.api.app import create_app
from idcode.service.api.mediatypes import JsonBodyRoute
from idcode.service.api.problems import Problem
from idcode.service.database import upgrade
from idcode.service.settings import Settings
from idcode.terminaltoken import terminal_token
from idcode.testing import random_id_number
from tests.services import Tokens

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """The embedded defaults (SQLite, in-process state): SQLite gives times back without
    their offset, where the bug showed."""
    home = tmp_path_factory.mktemp("rough-edges")
    settings = Settings(
        environment="development", keys_dir=home / "keys", data_dir=home / "data", demo_data=False
    )
    upgrade(settings.sqlalchemy_url)
    return settings


@pytest.fixture(scope="module")
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def tokens(settings: Settings) -> Tokens:
    return Tokens(settings)


# -- (c) 415 for a JSON route sent another media type -----------------------------------------


def test_every_route_with_a_json_body_refuses_other_media_types(client: TestClient) -> None:
    routes = [
        context.original_route
        for context in iter_route_contexts(client.app.routes)  # type: ignore[attr-defined]
        if isinstance(context.original_route, APIRoute)
        and context.original_route.body_field is not None
    ]
    assert len(routes) >= 10  # codes, cards, terminals, events, identify, devices...
    for route in routes:
        assert isinstance(route, JsonBodyRoute), route.path


@pytest.mark.parametrize(
    "content_type",
    ["application/x-www-form-urlencoded", "text/plain", "multipart/form-data; boundary=x", None],
)
def test_a_json_body_sent_as_another_type_is_415_naming_json(
    client: TestClient, tokens: Tokens, content_type: str | None
) -> None:
    body = json.dumps({"id_number": random_id_number(), "name": "测试"})
    headers = tokens.operator()
    if content_type is not None:
        headers["Content-Type"] = content_type
    response = client.post("/v1/cards", content=body.encode(), headers=headers)
    assert response.status_code == 415, response.text
    problem = response.json()
    assert response.headers["content-type"] == "application/problem+json"
    assert problem["reason"] == "unsupported_media_type"
    assert "application/json" in problem["detail"]
    assert response.headers["Accept-Post"] == "application/json"


def test_json_and_plus_json_bodies_are_read_as_json(client: TestClient, tokens: Tokens) -> None:
    for content_type in ("application/json; charset=utf-8", "Application/Merge-Patch+JSON"):
        body = json.dumps({"id_number": random_id_number(), "name": "测试"})
        headers = {**tokens.operator(), "Content-Type": content_type}
        response = client.post("/v1/cards", content=body.encode(), headers=headers)
        assert response.status_code == 201, (content_type, response.text)


def test_the_caller_is_checked_before_the_media_type(client: TestClient) -> None:
    response = client.post("/v1/cards", content="a=1", headers={"Content-Type": "text/plain"})
    assert (response.status_code, response.json()["reason"]) == (401, "missing_token")


def test_the_import_route_keeps_its_own_media_types(client: TestClient, tokens: Tokens) -> None:
    refused = client.post(
        "/v1/cards/import",
        content='{"id_number": "x"}',
        headers={**tokens.operator(), "Content-Type": "application/json"},
    )
    assert (refused.status_code, refused.json()["reason"]) == (415, "unsupported_media_type")
    assert "text/csv" in refused.json()["title"]
    row = f"id_number,name\n{random_id_number()},测试\n"
    taken = client.post(
        "/v1/cards/import",
        content=row.encode(),
        headers={**tokens.operator(), "Content-Type": "text/csv"},
    )
    assert taken.status_code == 200, taken.text


def test_the_openapi_document_declares_415_wherever_a_json_body_is_taken(
    client: TestClient,
) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    with_bodies = [
        operation
        for operations in paths.values()
        for operation in operations.values()
        if "requestBody" in operation
    ]
    assert with_bodies and all("415" in operation["responses"] for operation in with_bodies)


# -- (h) times with their offset ------------------------------------------------------------

_ISO_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}")
_OFFSET = re.compile(r"(Z|[+-]\d{2}:\d{2})$")


def _times(value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        for member in value.values():
            yield from _times(member)
    elif isinstance(value, list):
        for member in value:
            yield from _times(member)
    elif isinstance(value, str) and _ISO_TIME.match(value):
        yield value


def test_every_time_the_api_returns_carries_its_offset_on_sqlite(
    client: TestClient, tokens: Tokens
) -> None:
    key = Ed25519PrivateKey.generate()
    public_jwk = OKPAlgorithm.to_jwk(key.public_key(), as_dict=True)
    operator = tokens.operator()
    answers: list[Any] = []

    def keep(response: Any, status: int = 200) -> Any:
        assert response.status_code == status, response.text
        answers.append(response.json())
        return response.json()

    keep(
        client.post(
            "/v1/cards", json={"id_number": random_id_number(), "name": "测"}, headers=operator
        ),
        201,
    )
    terminal = keep(
        client.post(
            "/v1/terminals",
            json={"scene": "community", "site": "hall-1", "public_jwk": public_jwk},
            headers=operator,
        ),
        201,
    )
    token = terminal_token(terminal["id"], key, "EdDSA")
    at = datetime.now(UTC).replace(tzinfo=None, microsecond=0).isoformat()  # without an offset
    event = {"event_id": "evt-1", "occurred_at": at, "valid": True, "reason": "ok"}
    keep(
        client.post(
            "/v1/events", json={"events": [event]}, headers={"Authorization": f"Bearer {token}"}
        )
    )
    events = keep(client.get("/v1/events", headers=operator))
    assert events and events[0]["occurred_at"].endswith("Z")
    keep(client.get("/v1/terminals", headers=operator))
    party = {
        "name": "江汉区政务服务中心",
        "sector": "government",
        "purposes": ["residence_certificate"],
        "attributes": ["residency"],
        "public_jwk": public_jwk,
    }
    keep(client.post("/v1/relying-parties", json=party, headers=operator), 201)
    keep(client.get("/v1/relying-parties", headers=operator))

    times = [time for answer in answers for time in _times(answer)]
    assert len(times) >= 5
    assert [time for time in times if not _OFFSET.search(time)] == []


# -- (h) problem titles ---------------------------------------------------------------------


def _titles() -> Iterator[tuple[str, int, ast.expr]]:
    """Every title a Problem is made with in the service's code (its third argument)."""
    for path in Path(idcode.service.__file__).parent.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id == "Problem"
                and len(node.args) >= 3
            ):
                yield str(path.relative_to(ROOT)), node.lineno, node.args[2]


def test_every_written_problem_title_starts_with_a_capital_letter() -> None:
    lower = []
    written = 0
    for where, line, title in _titles():
        text = None
        if isinstance(title, ast.Constant) and isinstance(title.value, str):
            text = title.value
        elif isinstance(title, ast.JoinedStr) and isinstance(title.values[0], ast.Constant):
            text = str(title.values[0].value)
        if text is not None:
            written += 1
            if not text[:1].isupper():
                lower.append(f"{where}:{line}: {text}")
    assert written > 40
    assert lower == []


def test_a_title_made_from_an_errors_message_starts_with_a_capital_letter() -> None:
    # Titles made at run time (str(exc), a StarletteHTTPException's detail) are capitalised.
    problem = Problem(409, "invalid_transition", "the card is already active")
    assert problem.title == "The card is already active"
    assert bytes(problem.response().body).startswith(
        b'{"type":"urn:idcode:problem:invalid_transition","title":"The'
    )


def test_405_is_a_problem_with_allow_and_is_in_the_api_doc(client: TestClient) -> None:
    response = client.delete("/v1/codes")
    assert (response.status_code, response.json()["reason"]) == (405, "method_not_allowed")
    assert "POST" in response.headers["Allow"]
    api = (ROOT / "docs" / "api.md").read_text(encoding="utf-8")
    assert "| 405 | `method_not_allowed` |" in api
