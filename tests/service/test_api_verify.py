"""Online verification, ``POST /v1/verify``: live card status and replay across replicas.

A refused code is an answer, not an error: 200 with ``valid: false`` and the reason.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx2
import pytest
from fastapi.testclient import TestClient

from idcode.issuer import mint_code
from idcode.keystore import initialise, open_key_store
from idcode.service.api.app import create_app
from idcode.service.settings import Settings
from idcode.testing import TestIssuer, random_card
from tests.services import Tokens

Enrol = Callable[..., tuple[str, str]]


def assert_problem(response: httpx2.Response, status: int, reason: str) -> None:
    """The response is an RFC 9457 problem with this status and machine-readable reason."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["type"] == f"urn:idcode:problem:{reason}"
    assert (problem["reason"], problem["status"]) == (reason, status)
    assert problem["title"]


def issue(client: TestClient, tokens: Tokens, id_number: str) -> str:
    response = client.post("/v1/codes", headers=tokens.citizen(id_number))
    assert response.status_code == 200, response.text
    code: str = response.json()["code"]
    return code


def verdict_of(client: TestClient, tokens: Tokens, code: str) -> dict[str, Any]:
    """The service's verdict on a code, asked by a verifier terminal."""
    response = client.post("/v1/verify", json={"code": code}, headers=tokens.verifier())
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    verdict: dict[str, Any] = response.json()
    return verdict


def test_a_fresh_code_is_valid_and_shows_the_cards_pseudonym(
    client: TestClient, tokens: Tokens, enrol: Enrol
) -> None:
    card_id, id_number = enrol()
    card = client.get(f"/v1/cards/{card_id}", headers=tokens.operator()).json()

    verdict = verdict_of(client, tokens, issue(client, tokens, id_number))

    assert (verdict["valid"], verdict["reason"]) == (True, "ok")
    assert verdict["claims"]["card"]["pseudonym"] == card["pseudonym"]
    assert verdict["claims"]["card"]["status_index"] == card["status_index"]


def test_a_code_presented_twice_is_replayed_the_second_time(
    client: TestClient, tokens: Tokens, enrol: Enrol
) -> None:
    _, id_number = enrol()
    code = issue(client, tokens, id_number)

    first = verdict_of(client, tokens, code)
    second = verdict_of(client, tokens, code)

    assert first["reason"] == "ok"
    assert (second["valid"], second["reason"]) == (False, "replayed")


def test_a_code_accepted_by_one_replica_is_replayed_at_another(
    client: TestClient, tokens: Tokens, enrol: Enrol, service_settings: Settings
) -> None:
    _, id_number = enrol()
    code = issue(client, tokens, id_number)
    assert verdict_of(client, tokens, code)["reason"] == "ok"

    with TestClient(create_app(service_settings)) as other_replica:
        assert verdict_of(other_replica, tokens, code)["reason"] == "replayed"


@pytest.mark.parametrize("action", ["suspend", "lost", "revoke"])
def test_a_code_of_a_card_no_longer_active_is_revoked(
    client: TestClient, tokens: Tokens, enrol: Enrol, action: str
) -> None:
    card_id, id_number = enrol()
    code = issue(client, tokens, id_number)
    response = client.post(
        f"/v1/cards/{card_id}/status", json={"action": action}, headers=tokens.operator()
    )
    assert response.status_code == 200, response.text

    verdict = verdict_of(client, tokens, code)

    assert (verdict["valid"], verdict["reason"]) == (False, "revoked")


def test_a_code_refused_while_its_card_was_suspended_is_valid_once_reinstated(
    client: TestClient, tokens: Tokens, enrol: Enrol
) -> None:
    card_id, id_number = enrol()
    code = issue(client, tokens, id_number)
    status = f"/v1/cards/{card_id}/status"

    client.post(status, json={"action": "suspend"}, headers=tokens.operator())
    while_suspended = verdict_of(client, tokens, code)
    client.post(status, json={"action": "reinstate"}, headers=tokens.operator())
    once_reinstated = verdict_of(client, tokens, code)

    assert while_suspended["reason"] == "revoked"
    assert once_reinstated["reason"] == "ok"


@pytest.mark.parametrize(
    ("code", "reason"),
    [
        ("garbage", "unknown_prefix"),
        ("WH1:garbage", "malformed"),
        ("WH1:", "malformed"),
        ("", "unknown_prefix"),
        ("WH1:" + "0" * 400, "malformed"),
    ],
)
def test_garbage_is_a_refused_verdict_not_an_error(
    client: TestClient, tokens: Tokens, code: str, reason: str
) -> None:
    verdict = verdict_of(client, tokens, code)
    assert (verdict["valid"], verdict["reason"]) == (False, reason)


@pytest.mark.parametrize(("same_kid", "reason"), [(False, "unknown_key"), (True, "bad_signature")])
def test_a_code_signed_by_a_key_the_service_does_not_publish_is_refused(
    client: TestClient, tokens: Tokens, same_kid: bool, reason: str
) -> None:
    (published,) = client.get("/.well-known/jwks.json").json()["keys"]
    kid = published["kid"] if same_kid else next(k for k in "AB" if k != published["kid"])
    verdict = verdict_of(client, tokens, TestIssuer(kid=kid).mint())
    assert (verdict["valid"], verdict["reason"]) == (False, reason)


def test_an_expired_code_is_refused_as_expired(service_settings: Settings, tokens: Tokens) -> None:
    an_hour_ago = int(time.time()) - 3600
    # The service's issuer key, made before it starts, has signed since an hour ago.
    store = open_key_store(service_settings.keys_dir)
    initialise(store, an_hour_ago, days=1)
    code, _ = mint_code(
        random_card(),
        store.signing_key(an_hour_ago),
        prefix=service_settings.code_prefix,
        now=an_hour_ago,
        ttl=60,
    )

    with TestClient(create_app(service_settings)) as client:
        verdict = verdict_of(client, tokens, code)

    assert (verdict["valid"], verdict["reason"]) == (False, "expired")


def test_the_operator_may_verify_too(client: TestClient, tokens: Tokens, enrol: Enrol) -> None:
    _, id_number = enrol()
    code = issue(client, tokens, id_number)
    response = client.post("/v1/verify", json={"code": code}, headers=tokens.operator())
    assert response.json()["reason"] == "ok"


def test_a_citizen_token_cannot_verify_codes(
    client: TestClient, tokens: Tokens, enrol: Enrol
) -> None:
    _, id_number = enrol()
    code = issue(client, tokens, id_number)
    response = client.post("/v1/verify", json={"code": code}, headers=tokens.citizen(id_number))
    assert_problem(response, 403, "forbidden")
    assert verdict_of(client, tokens, code)["reason"] == "ok", "the refused call used it up"


def test_verifying_without_a_token_is_401(client: TestClient) -> None:
    assert_problem(client.post("/v1/verify", json={"code": "WH1:"}), 401, "missing_token")


@pytest.mark.parametrize("body", [{}, {"code": 42}, {"code": "WH1:" + "A" * 5000}])
def test_a_request_without_a_code_text_is_422_invalid_request(
    client: TestClient, tokens: Tokens, body: dict[str, Any]
) -> None:
    response = client.post("/v1/verify", json=body, headers=tokens.verifier())
    assert_problem(response, 422, "invalid_request")
