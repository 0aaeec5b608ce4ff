"""The OpenAPI document tells the truth about errors: each is documented as the problem the
service sends (application/problem+json, ProblemBody), including the ones no route declares
itself: FastAPI's 422 for an invalid request, 400 for a body that is not UTF-8 and 413 for
one over its route's limit. tests/service/test_schemathesis.py checks every response against it."""

from __future__ import annotations

from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi.testclient import TestClient
from jwt.algorithms import OKPAlgorithm

from idcode.service.api.app import create_app
from idcode.service.fleet import terminal_token
from idcode.service.settings import Settings
from idcode.terminaltoken import relying_party_token
from idcode.testing import random_id_number
from tests.services import Tokens

PROBLEM_JSON = "application/problem+json"
PROBLEM = {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/ProblemBody"}}}
DOCUMENT = create_app(Settings(environment="development")).openapi()
OPERATIONS = [
    (method.upper(), path, operation)
    for path, operations in DOCUMENT["paths"].items()
    for method, operation in operations.items()
]
#: Errors that are not problems, on purpose: readiness answers 503 with its checks; the
#: development identity provider answers as RFC 6749 says (an error page for the person at
#: the authorization endpoint, ``{"error", "error_description"}`` at the token endpoint).
OWN_ERROR_FORMATS = {
    ("/readyz", "503"),
    ("/dev-idp/authorize", "400"),
    ("/dev-idp/token", "400"),
    ("/dev-idp/token", "401"),
}
WITH_A_JSON_BODY = [
    (method, path)
    for method, path, operation in OPERATIONS
    if "application/json" in operation.get("requestBody", {}).get("content", {})
]


def fill(path: str) -> str:
    """``path`` with its parameters filled in so that they pass validation."""
    return (
        path.replace("{card_id}", "00000000-0000-4000-8000-000000000000")
        .replace("{terminal_id}", "00000000-0000-4000-8000-000000000000")
        .replace("{scene}", "community")
        .replace("{site}", "test-site")
    )


def admitted_caller(client: TestClient, tokens: Tokens, path: str) -> dict[str, str]:
    """A caller the route's checks admit: they run before the body is read (deps.py,
    AuthenticatedFirst), so only an admitted caller's request reaches the body."""
    if path == "/v1/events":  # a terminal's request
        key = Ed25519PrivateKey.generate()
        jwk = OKPAlgorithm.to_jwk(key.public_key(), as_dict=True)
        body = {"scene": "community", "site": "hall-1", "public_jwk": jwk}
        registered = client.post("/v1/terminals", json=body, headers=tokens.operator())
        assert registered.status_code == 201, registered.text
        token = terminal_token(registered.json()["id"], key, "EdDSA")
        return {"Authorization": f"Bearer {token}"}
    if path == "/v1/identify":  # a relying party's request
        key = Ed25519PrivateKey.generate()
        jwk = OKPAlgorithm.to_jwk(key.public_key(), as_dict=True)
        body = {
            "name": "Hall",
            "sector": "government",
            "purposes": ["registration"],
            "attributes": ["name"],
            "public_jwk": jwk,
        }
        registered = client.post("/v1/relying-parties", json=body, headers=tokens.operator())
        assert registered.status_code == 201, registered.text
        token = relying_party_token(registered.json()["id"], key, "EdDSA")
        return {"Authorization": f"Bearer {token}"}
    if path.startswith(("/v1/codes", "/v1/visitor-passes", "/v1/devices")):
        return tokens.citizen(random_id_number())
    return tokens.operator()


def assert_documented_problem(response: Any, method: str, path: str) -> None:
    assert response.headers["content-type"] == PROBLEM_JSON, response.text
    status = str(response.status_code)
    documented = DOCUMENT["paths"][path][method.lower()]["responses"]
    assert documented.get(status, {}).get("content") == PROBLEM, (method, path, status)


@pytest.mark.parametrize(("method", "path", "operation"), OPERATIONS, ids=lambda v: str(v)[:40])
def test_every_error_response_is_documented_as_a_problem_body(
    method: str, path: str, operation: dict[str, Any]
) -> None:
    for status, response in operation["responses"].items():
        if status[0] in "45" and (path, status) not in OWN_ERROR_FORMATS:
            assert response["content"] == PROBLEM, (method, path, status)
    assert "HTTPValidationError" not in DOCUMENT["components"]["schemas"]


@pytest.mark.parametrize(("method", "path"), WITH_A_JSON_BODY)
def test_a_json_body_that_is_not_utf8_is_a_documented_400_problem(
    client: TestClient, tokens: Tokens, method: str, path: str
) -> None:
    response = client.request(
        method,
        fill(path),
        content=b'{"name": "\xff"}',  # (JSON that does not parse is a 422: invalid_request)
        headers={**admitted_caller(client, tokens, path), "Content-Type": "application/json"},
    )
    assert response.status_code == 400, response.text
    assert_documented_problem(response, method, path)


@pytest.mark.parametrize(("method", "path"), WITH_A_JSON_BODY)
def test_a_body_over_the_routes_limit_is_a_documented_413_problem(
    client: TestClient, method: str, path: str
) -> None:
    response = client.request(
        method,
        fill(path),
        content=b" " * (2 * 1024 * 1024 + 1),  # over the largest JSON limit (scene data)
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 413, response.text
    assert_documented_problem(response, method, path)


def test_an_invalid_path_parameter_is_a_documented_422_problem(
    client: TestClient, tokens: Tokens
) -> None:
    response = client.get("/v1/cards/not-a-uuid", headers=tokens.operator())
    assert response.status_code == 422, response.text
    assert_documented_problem(response, "GET", "/v1/cards/{card_id}")


def test_an_import_that_is_not_utf8_is_a_documented_400_problem(
    client: TestClient, tokens: Tokens
) -> None:
    response = client.post(
        "/v1/cards/import",
        content=b"id_number,name\n\xff\xfe,x\n",
        headers={**tokens.operator(), "Content-Type": "text/csv"},
    )
    assert response.status_code == 400, response.text
    assert response.json()["reason"] == "bad_encoding"
    assert_documented_problem(response, "POST", "/v1/cards/import")


def test_the_document_here_is_the_one_the_service_serves(client: TestClient) -> None:
    assert client.get("/openapi.json").json() == DOCUMENT


@pytest.mark.parametrize(
    ("method", "path"),
    [(method, path) for method, path, _ in OPERATIONS if path.startswith("/v1/")],
)
def test_every_v1_route_documents_503_for_a_dependency_that_is_away(method: str, path: str) -> None:
    assert DOCUMENT["paths"][path][method.lower()]["responses"]["503"]["content"] == PROBLEM
