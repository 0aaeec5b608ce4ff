"""Request tokens under the crypto profiles at the live service (PostgreSQL, Redis): under gm
terminals and relying parties register SM2 keys and sign their tokens with JWS ``alg`` SM2,
used once; a key or token of EdDSA is refused naming the profile. Under standard an SM2 key is
refused and an SM2 token is one the service does not know."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx2
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi.testclient import TestClient
from jwt.algorithms import OKPAlgorithm

from idcode import b64url
from idcode.gm import SM2PrivateKey
from idcode.jws import SM2Algorithm
from idcode.service.api.app import create_app
from idcode.service.fleet import NOT_SIGNED
from idcode.service.settings import Settings
from idcode.terminaltoken import relying_party_token, terminal_token
from tests.services import Tokens


def sm2_jwk(key: SM2PrivateKey) -> dict[str, Any]:
    return SM2Algorithm.to_jwk(key, as_dict=True)


def ed25519_jwk(key: Ed25519PrivateKey) -> dict[str, Any]:
    return OKPAlgorithm.to_jwk(key.public_key(), as_dict=True)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def problem(response: httpx2.Response, status: int, reason: str) -> str:
    """The problem's title and detail, after its status and reason are checked."""
    assert response.status_code == status, response.text
    body = response.json()
    assert body["reason"] == reason, response.text
    return f"{body['title']} {body.get('detail', '')}"


def bundle_refusal(client: TestClient, token: str) -> str:
    """Why GET /v1/trust-bundle refused ``token`` (a 401 invalid_token)."""
    return problem(client.get("/v1/trust-bundle", headers=bearer(token)), 401, "invalid_token")


def new_terminal(client: TestClient, tokens: Tokens, jwk: dict[str, Any]) -> httpx2.Response:
    body = {"scene": "community", "site": "gate-1", "public_jwk": jwk}
    return client.post("/v1/terminals", json=body, headers=tokens.operator())


def new_party(client: TestClient, tokens: Tokens, jwk: dict[str, Any]) -> httpx2.Response:
    body = {
        "name": "service hall",
        "sector": "government",
        "purposes": ["registration"],
        "attributes": ["name"],
        "public_jwk": jwk,
    }
    return client.post("/v1/relying-parties", json=body, headers=tokens.operator())


@pytest.fixture
def gm(
    make_settings: Callable[..., Settings], fresh_postgres_url: Callable[..., str], redis_url: str
) -> Iterator[tuple[TestClient, Tokens]]:
    """A gm service: a database of its own (it records its profile)."""
    settings = make_settings(
        database_url=fresh_postgres_url(), redis_url=redis_url, crypto_profile="gm"
    )
    with TestClient(create_app(settings)) as client:
        yield client, Tokens(settings)


def test_a_gm_terminal_registers_an_sm2_key_and_its_sm2_tokens_are_accepted_once(
    gm: tuple[TestClient, Tokens],
) -> None:
    client, tokens = gm
    key = SM2PrivateKey.generate()
    registered = new_terminal(client, tokens, sm2_jwk(key))
    assert registered.status_code == 201, registered.text
    terminal = registered.json()["id"]

    token = terminal_token(terminal, key, "SM2")
    assert client.get("/v1/trust-bundle", headers=bearer(token)).status_code == 200
    replayed = client.get("/v1/trust-bundle", headers=bearer(token))
    problem(replayed, 401, "token_replayed")

    # A claim changed after signing (a later exp), and a signature of another SM2 key.
    header, payload, signature = terminal_token(terminal, key, "SM2").split(".")
    claims = json.loads(b64url.decode(payload))
    claims["exp"] += 60
    tampered = ".".join((header, b64url.encode(json.dumps(claims).encode()), signature))
    forged = terminal_token(terminal, SM2PrivateKey.generate(), "SM2")
    # A terminal nobody registered: checked against an SM2 decoy, refused the same way.
    unknown = terminal_token(str(uuid.uuid4()), key, "SM2")
    for token in (tampered, forged, unknown):
        detail = bundle_refusal(client, token)
        assert NOT_SIGNED in detail


def test_a_gm_service_refuses_eddsa_keys_and_tokens_saying_its_profile_takes_sm2(
    gm: tuple[TestClient, Tokens],
) -> None:
    client, tokens = gm
    ed25519 = Ed25519PrivateKey.generate()
    for response in (
        new_terminal(client, tokens, ed25519_jwk(ed25519)),
        new_party(client, tokens, ed25519_jwk(ed25519)),
    ):
        detail = problem(response, 422, "unsupported_key")
        assert "key (kty OKP, crv Ed25519, alg EdDSA) cannot be registered" in detail
        assert "the gm crypto profile (SM2 only)" in detail

    # An SM2 key that says it signs ES256 is not guessed at.
    mislabelled = sm2_jwk(SM2PrivateKey.generate()) | {"alg": "ES256"}
    problem(new_terminal(client, tokens, mislabelled), 422, "invalid_request")

    # An EdDSA token, for a registered terminal or not: the header's alg is refused by name.
    key = SM2PrivateKey.generate()
    terminal = new_terminal(client, tokens, sm2_jwk(key)).json()["id"]
    for party in (terminal, str(uuid.uuid4())):
        token = terminal_token(party, ed25519, "EdDSA")
        detail = bundle_refusal(client, token)
        assert "EdDSA is not a request-token algorithm of the gm crypto profile" in detail


def test_a_gm_relying_party_registers_an_sm2_key_and_its_sm2_tokens_are_accepted_once(
    gm: tuple[TestClient, Tokens],
) -> None:
    client, tokens = gm
    key = SM2PrivateKey.generate()
    registered = new_party(client, tokens, sm2_jwk(key))
    assert registered.status_code == 201, registered.text
    party = registered.json()["id"]

    token = relying_party_token(party, key, "SM2")
    assert client.get("/v1/links", headers=bearer(token)).status_code == 200
    problem(client.get("/v1/links", headers=bearer(token)), 401, "token_replayed")
    forged = relying_party_token(party, SM2PrivateKey.generate(), "SM2")
    problem(client.get("/v1/links", headers=bearer(forged)), 401, "invalid_token")
    # A terminal's SM2 token is not a relying party's, whoever signed it.
    as_terminal = terminal_token(party, key, "SM2")
    problem(client.get("/v1/links", headers=bearer(as_terminal)), 401, "invalid_token")
    eddsa = relying_party_token(party, Ed25519PrivateKey.generate(), "EdDSA")
    detail = problem(client.get("/v1/links", headers=bearer(eddsa)), 401, "invalid_token")
    assert "EdDSA is not a request-token algorithm of the gm crypto profile" in detail


def test_a_standard_service_refuses_an_sm2_key_and_takes_an_sm2_token_as_not_signed(
    client: TestClient, tokens: Tokens
) -> None:
    sm2 = SM2PrivateKey.generate()
    for response in (
        new_terminal(client, tokens, sm2_jwk(sm2)),
        new_party(client, tokens, sm2_jwk(sm2)),
    ):
        detail = problem(response, 422, "unsupported_key")
        assert "key (kty EC, crv SM2, alg SM2) cannot be registered" in detail
        assert "the standard crypto profile (EdDSA, ES256 only)" in detail

    ed25519 = Ed25519PrivateKey.generate()
    registered = new_terminal(client, tokens, ed25519_jwk(ed25519))
    assert registered.status_code == 201, registered.text
    terminal = registered.json()["id"]
    sm2_token = terminal_token(terminal, sm2, "SM2")
    detail = bundle_refusal(client, sm2_token)
    assert detail.endswith(f" {NOT_SIGNED}")
    eddsa = terminal_token(terminal, ed25519, "EdDSA")
    assert client.get("/v1/trust-bundle", headers=bearer(eddsa)).status_code == 200
