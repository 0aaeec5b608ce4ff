"""Who may call what: the ID-token matrix on a citizen endpoint and on operator endpoints.

Every forged or defective token below would otherwise carry everything (an ID number and
the operator role), so the only thing standing between it and the data is verification.
"""

from __future__ import annotations

import base64
import hmac
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx2
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from fastapi.testclient import TestClient

from idcode.claims import CodeClaims
from idcode.cose import Algorithm
from idcode.keys import keys_from_jwks
from idcode.service.auth import DEV_IDP_KID, dev_idp_key, dev_token
from idcode.service.settings import Settings
from idcode.testing import random_id_number
from idcode.verifier import Trust, verify
from tests.services import Tokens

Enrol = Callable[..., tuple[str, str]]
PROBLEM_JSON = "application/problem+json"
# A citizen endpoint and two operator endpoints; every token test runs against each.
ENDPOINTS = ["issue-code", "enrol-card", "read-card"]


def assert_problem(response: httpx2.Response, status: int, reason: str) -> dict[str, Any]:
    """The response is an RFC 9457 problem with this status and machine-readable reason."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM_JSON
    problem: dict[str, Any] = response.json()
    assert problem["type"] == f"urn:idcode:problem:{reason}"
    assert problem["reason"] == reason
    assert problem["status"] == status
    assert problem["title"]
    return problem


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# -- tokens with exactly one defect -------------------------------------------------------


def all_powerful_claims(settings: Settings, **changes: Any) -> dict[str, Any]:
    """Claims of a token that is both a citizen and an operator, from the dev IdP."""
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": settings.oidc_issuer,
        "aud": settings.oidc_audience,
        "sub": "mallory",
        "iat": now,
        "exp": now + 600,
        settings.oidc_id_number_claim: random_id_number(),
        settings.oidc_roles_claim: [settings.operator_role],
    }
    claims.update(changes)
    return {name: value for name, value in claims.items() if value is not None}


def signed_by_dev_idp(settings: Settings, claims: dict[str, Any]) -> str:
    return jwt.encode(
        claims, dev_idp_key(settings.keys_dir), algorithm="EdDSA", headers={"kid": DEV_IDP_KID}
    )


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def hand_made(header: dict[str, Any], claims: dict[str, Any], secret: bytes | None) -> str:
    """A JWT assembled by hand: pyjwt rightly refuses to make these (none, HMAC with a PEM)."""
    signing_input = _b64(json.dumps(header).encode()) + "." + _b64(json.dumps(claims).encode())
    signature = b"" if secret is None else hmac.digest(secret, signing_input.encode(), "sha256")
    return signing_input + "." + _b64(signature)


def dev_idp_public_pem(settings: Settings) -> bytes:
    return (
        dev_idp_key(settings.keys_dir)
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )


TokenMaker = Callable[[Settings, Path], str]

BAD_TOKENS: dict[str, tuple[TokenMaker, str]] = {
    "garbage": (lambda settings, tmp: "not.a.jwt", "invalid_token"),
    "other-key-same-kid": (
        lambda settings, tmp: dev_token(
            settings.model_copy(update={"keys_dir": tmp / "other-idp"}),
            "mallory",
            id_number=random_id_number(),
            roles=(settings.operator_role,),
        ),
        "invalid_token",
    ),
    "expired": (
        lambda settings, tmp: dev_token(
            settings,
            "late",
            id_number=random_id_number(),
            roles=(settings.operator_role,),
            now=int(time.time()) - 3600,
            ttl=60,
        ),
        "token_expired",
    ),
    "wrong-audience": (
        lambda settings, tmp: dev_token(
            settings.model_copy(update={"oidc_audience": "another-city-service"}),
            "elsewhere",
            id_number=random_id_number(),
            roles=(settings.operator_role,),
        ),
        "invalid_token",
    ),
    "wrong-issuer": (
        lambda settings, tmp: signed_by_dev_idp(
            settings, all_powerful_claims(settings, iss="https://idp.example.net")
        ),
        "invalid_token",
    ),
    "no-expiry": (
        lambda settings, tmp: signed_by_dev_idp(settings, all_powerful_claims(settings, exp=None)),
        "invalid_token",
    ),
    "unknown-kid": (
        lambda settings, tmp: jwt.encode(
            all_powerful_claims(settings),
            dev_idp_key(settings.keys_dir),
            algorithm="EdDSA",
            headers={"kid": "someone-else"},
        ),
        "invalid_token",
    ),
    "alg-none": (
        lambda settings, tmp: hand_made(
            {"alg": "none", "typ": "JWT", "kid": DEV_IDP_KID}, all_powerful_claims(settings), None
        ),
        "invalid_token",
    ),
    "hs256-with-the-public-key-as-secret": (
        lambda settings, tmp: hand_made(
            {"alg": "HS256", "typ": "JWT", "kid": DEV_IDP_KID},
            all_powerful_claims(settings),
            dev_idp_public_pem(settings),
        ),
        "invalid_token",
    ),
    "hs256-with-the-raw-public-key-as-secret": (
        lambda settings, tmp: hand_made(
            {"alg": "HS256", "typ": "JWT", "kid": DEV_IDP_KID},
            all_powerful_claims(settings),
            dev_idp_key(settings.keys_dir).public_key().public_bytes_raw(),
        ),
        "invalid_token",
    ),
}


# -- helpers ------------------------------------------------------------------------------


def call(
    client: TestClient, endpoint: str, headers: dict[str, str], card_id: str
) -> httpx2.Response:
    if endpoint == "issue-code":
        return client.post("/v1/codes", headers=headers)
    if endpoint == "enrol-card":
        new_card = {"id_number": random_id_number(), "name": "测试"}
        return client.post("/v1/cards", json=new_card, headers=headers)
    return client.get(f"/v1/cards/{card_id}", headers=headers)


def decode_code(client: TestClient, settings: Settings, code: str) -> CodeClaims:
    """The claims of a code, verified with the keys the service publishes."""
    keys = keys_from_jwks(client.get("/.well-known/jwks.json").json())
    trust = Trust.of(
        keys, prefix=settings.code_prefix, algorithms=[Algorithm.EDDSA, Algorithm.ES256]
    )
    verdict = verify(code, trust, int(time.time()))
    assert verdict.valid and verdict.claims is not None, verdict
    return verdict.claims


def pseudonym_of(client: TestClient, tokens: Tokens, card_id: str) -> bytes:
    response = client.get(f"/v1/cards/{card_id}", headers=tokens.operator())
    assert response.status_code == 200, response.text
    return bytes.fromhex(response.json()["pseudonym"])


# -- no token, or a token that is not valid -----------------------------------------------


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_a_request_without_a_token_is_401_missing_token_with_a_bearer_challenge(
    client: TestClient, enrol: Enrol, endpoint: str
) -> None:
    card_id, _ = enrol()
    response = call(client, endpoint, {}, card_id)
    assert_problem(response, 401, "missing_token")
    assert response.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize("endpoint", ENDPOINTS)
@pytest.mark.parametrize("authorization", ["Basic b3A6c2VjcmV0", "Token abc", "Bearer"])
def test_an_authorization_that_is_not_a_bearer_token_is_401_missing_token(
    client: TestClient, enrol: Enrol, endpoint: str, authorization: str
) -> None:
    card_id, _ = enrol()
    response = call(client, endpoint, {"Authorization": authorization}, card_id)
    assert_problem(response, 401, "missing_token")
    assert response.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize("endpoint", ENDPOINTS)
@pytest.mark.parametrize("defect", BAD_TOKENS)
def test_a_defective_or_forged_token_is_401_with_its_reason(
    client: TestClient,
    enrol: Enrol,
    service_settings: Settings,
    tmp_path: Path,
    endpoint: str,
    defect: str,
) -> None:
    card_id, _ = enrol()
    make_token, reason = BAD_TOKENS[defect]
    token = make_token(service_settings, tmp_path)
    response = call(client, endpoint, bearer(token), card_id)
    problem = assert_problem(response, 401, reason)
    assert response.headers["www-authenticate"] == 'Bearer error="invalid_token"'
    assert token not in response.text
    assert card_id not in json.dumps(problem)


def test_the_forging_helpers_make_accepted_tokens_when_nothing_is_wrong(
    client: TestClient, enrol: Enrol, service_settings: Settings
) -> None:
    """Guards the matrix above: its tokens fail for their one defect, not for another."""
    card_id, _ = enrol()
    token = signed_by_dev_idp(service_settings, all_powerful_claims(service_settings))
    assert client.get(f"/v1/cards/{card_id}", headers=bearer(token)).status_code == 200


def test_the_refusal_says_why_without_repeating_the_token(
    client: TestClient, service_settings: Settings
) -> None:
    an_hour_ago = int(time.time()) - 3600
    token = dev_token(
        service_settings, "late", id_number=random_id_number(), now=an_hour_ago, ttl=60
    )
    problem = assert_problem(client.post("/v1/codes", headers=bearer(token)), 401, "token_expired")
    assert problem["detail"] == "the ID token has expired"
    assert token not in json.dumps(problem)


# -- valid tokens in the wrong role -------------------------------------------------------


def operator_requests(own: str, other: str, new_id_number: str) -> dict[str, tuple[str, str, Any]]:
    return {
        "enrol": ("POST", "/v1/cards", {"id_number": new_id_number, "name": "测试"}),
        "read-own-card": ("GET", f"/v1/cards/{own}", None),
        "read-other-card": ("GET", f"/v1/cards/{other}", None),
        "reinstate-own-card": ("POST", f"/v1/cards/{own}/status", {"action": "reinstate"}),
        "revoke-other-card": ("POST", f"/v1/cards/{other}/status", {"action": "revoke"}),
    }


@pytest.mark.parametrize("attempt", operator_requests("own", "other", "new"))
def test_a_citizen_token_on_an_operator_endpoint_is_403_forbidden_and_changes_nothing(
    client: TestClient, tokens: Tokens, enrol: Enrol, attempt: str
) -> None:
    own_card, own_id_number = enrol()
    other_card, _ = enrol()
    new_id_number = random_id_number()
    method, path, body = operator_requests(own_card, other_card, new_id_number)[attempt]

    response = client.request(method, path, json=body, headers=tokens.citizen(own_id_number))

    problem = assert_problem(response, 403, "forbidden")
    assert other_card not in json.dumps(problem)
    other = client.get(f"/v1/cards/{other_card}", headers=tokens.operator())
    assert other.json()["status"] == "active"
    enrolled = client.post(
        "/v1/cards", json={"id_number": new_id_number, "name": "测试"}, headers=tokens.operator()
    )
    assert enrolled.status_code == 201, "the refused enrolment must not have enrolled the card"


def test_a_citizen_token_cannot_import_cards(client: TestClient, tokens: Tokens) -> None:
    id_number = random_id_number()
    response = client.post(
        "/v1/cards/import",
        content=f"id_number,name\n{id_number},测试\n".encode(),
        headers={**tokens.citizen(id_number), "Content-Type": "text/csv"},
    )
    assert_problem(response, 403, "forbidden")


def test_a_verifier_token_is_not_an_operator(
    client: TestClient, tokens: Tokens, enrol: Enrol
) -> None:
    card_id, _ = enrol()
    assert_problem(client.get(f"/v1/cards/{card_id}", headers=tokens.verifier()), 403, "forbidden")


@pytest.mark.parametrize(("method", "path"), [("POST", "/v1/codes"), ("GET", "/v1/me")])
def test_a_token_without_an_id_number_gets_no_code_and_no_card(
    client: TestClient, tokens: Tokens, method: str, path: str
) -> None:
    for who in (tokens.operator(), tokens.verifier()):
        assert_problem(client.request(method, path, headers=who), 403, "not_a_citizen")


# -- a citizen only ever reaches their own card -------------------------------------------


def test_a_citizen_gets_codes_for_their_own_card_whatever_the_request_names(
    client: TestClient, tokens: Tokens, enrol: Enrol, service_settings: Settings
) -> None:
    own_card, own_id_number = enrol()
    other_card, other_id_number = enrol()
    own_pseudonym = pseudonym_of(client, tokens, own_card)
    other_pseudonym = pseudonym_of(client, tokens, other_card)
    naming_the_other = {
        "card_id": other_card,
        "id_number": other_id_number,
        "pseudonym": other_pseudonym.hex(),
    }

    attempts = [
        client.post("/v1/codes", headers=tokens.citizen(own_id_number)),
        client.post("/v1/codes", params=naming_the_other, headers=tokens.citizen(own_id_number)),
    ]
    # A body may only ask for a disclosure (docs/identity.md): naming a card is refused.
    named = client.post("/v1/codes", json=naming_the_other, headers=tokens.citizen(own_id_number))
    assert_problem(named, 422, "invalid_request")

    for response in attempts:
        assert response.status_code == 200, response.text
        card = decode_code(client, service_settings, response.json()["code"]).card
        assert card.pseudonym == own_pseudonym != other_pseudonym
    me = client.get("/v1/me", headers=tokens.citizen(own_id_number))
    assert me.json()["id"] == own_card


def test_the_id_number_claim_is_matched_however_it_is_written(
    client: TestClient, tokens: Tokens, enrol: Enrol
) -> None:
    ending_in_x = next(n for n in iter(random_id_number, None) if n.endswith("X"))
    card_id, id_number = enrol(id_number=ending_in_x)
    response = client.get("/v1/me", headers=tokens.citizen(id_number.lower()))
    assert response.status_code == 200, response.text
    assert response.json()["id"] == card_id


def test_a_key_the_identity_provider_withdraws_is_not_trusted_after_its_key_set_expires() -> None:
    """The provider's key set is cached for five minutes and keys are not cached apart from
    it: once the set expires (simulated by dropping it), a withdrawn key stops verifying."""
    import json
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from jwt.algorithms import OKPAlgorithm

    from idcode.service.auth import KeySource

    key = Ed25519PrivateKey.generate()
    published = {"keys": [{**OKPAlgorithm.to_jwk(key.public_key(), as_dict=True), "kid": "k1"}]}

    class Provider(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = json.dumps(published).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Provider)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        source = KeySource(url=f"http://127.0.0.1:{server.server_address[1]}/jwks.json")
        token = jwt.encode({"sub": "x"}, key, algorithm="EdDSA", headers={"kid": "k1"})
        assert source.key_for(token, "k1").key_id == "k1"

        published["keys"] = []  # the provider withdraws the key
        client = source._client
        assert client is not None and client.jwk_set_cache is not None
        client.jwk_set_cache.put(None)  # as after its five minutes

        with pytest.raises((jwt.PyJWKClientError, jwt.PyJWKSetError)):
            source.key_for(token, "k1")
    finally:
        server.shutdown()
        server.server_close()


# -- the identity provider's keys on disk (outside review, issue 10 finding 2) --------------


@pytest.mark.parametrize("mode", [0o666, 0o620])
def test_an_identity_provider_jwks_file_others_can_write_to_is_refused(
    make_settings: Callable[..., Settings], tmp_path: Path, mode: int
) -> None:
    from idcode.errors import UnsafeFileError
    from idcode.service.auth import dev_idp_jwks, token_verifier

    jwks_file = tmp_path / "city-idp-jwks.json"
    jwks_file.write_text(json.dumps(dev_idp_jwks(tmp_path / "city-idp")))
    settings = make_settings(oidc_issuer="urn:test-idp", oidc_jwks_file=jwks_file)
    assert token_verifier(settings) is not None
    jwks_file.chmod(mode)

    with pytest.raises(UnsafeFileError, match="writable by group or others") as excinfo:
        token_verifier(settings)
    assert str(jwks_file) in str(excinfo.value)


def test_an_identity_provider_jwks_file_reached_through_a_link_is_checked_at_its_target(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    from idcode.errors import UnsafeFileError
    from idcode.service.auth import dev_idp_jwks, token_verifier

    mounted = tmp_path / "config-map"
    mounted.mkdir()
    target = mounted / "jwks.json"
    target.write_text(json.dumps(dev_idp_jwks(tmp_path / "city-idp")))
    link = tmp_path / "jwks.json"
    link.symlink_to(target)
    settings = make_settings(oidc_issuer="urn:test-idp", oidc_jwks_file=link)

    assert token_verifier(settings) is not None  # a config map's link to a safe file is fine
    mounted.chmod(0o777)
    with pytest.raises(UnsafeFileError, match="writable by group or others"):
        token_verifier(settings)


def _routes_with_a_body(app: Any) -> list[tuple[str, str]]:
    """(method, path) of every /v1 route that takes a request body, path parameters filled
    in. (The development identity provider's forms under /dev-idp/ have no caller to check:
    a browser posts them, tests/service/test_devidp.py holds what they refuse.)"""
    fill = {
        "{card_id}": "00000000-0000-4000-8000-000000000000",
        "{scene}": "community",
        "{site}": "site-1",
    }
    routes = []
    for path, operations in app.openapi()["paths"].items():
        for method, operation in operations.items():
            if "requestBody" in operation and path.startswith("/v1/"):
                for name, value in fill.items():
                    path = path.replace(name, value)
                assert "{" not in path, f"fill in a value for {path}"
                routes.append((method.upper(), path))
    return routes


@pytest.mark.parametrize("authorization", [None, "Bearer not-a-token", "Basic b3A6c2VjcmV0"])
def test_every_route_with_a_body_refuses_a_bad_caller_before_reading_the_body(
    client: TestClient, tokens: Tokens, authorization: str | None
) -> None:
    """A body that is not even JSON gets the 401, not a 422 about the body: the caller is
    checked before the body is read (a stranger's upload costs no parse, finding 8a), and a
    stranger learns nothing about what a route expects."""
    routes = _routes_with_a_body(client.app)
    assert ("POST", "/v1/events") in routes and ("POST", "/v1/cards") in routes
    headers = {"Content-Type": "application/json"}
    if authorization:
        headers["Authorization"] = authorization
    for method, path in routes:
        response = client.request(method, path, content=b"{not json", headers=headers)
        assert response.status_code == 401, (method, path, response.text)
    # A citizen on an operator route or a verifier route: 403, also before the body.
    citizen = {**headers, **tokens.citizen(random_id_number())}
    for method, path in routes:
        if path.startswith(
            ("/v1/codes", "/v1/visitor-passes", "/v1/devices", "/v1/events", "/v1/identify")
        ):
            # Citizen routes, and the terminal's and relying party's routes (a citizen token
            # is no terminal's nor party's: 401).
            continue
        response = client.request(method, path, content=b"{not json", headers=citizen)
        assert response.status_code == 403, (method, path, response.text)
