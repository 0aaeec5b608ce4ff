"""One regression test per attack class on what the service checks (ID tokens, terminal
tokens, request bodies): algorithm confusion, a public key used as an HMAC secret, kid
tricks, truncated signatures, deeply nested JSON and oversized bodies. The same classes on
codes, passes, bundles and deltas are in tests/core/test_attacks.py; replay across two
replicas is in tests/integration/test_replicas.py."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

import httpx2
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi.testclient import TestClient
from jwt.algorithms import OKPAlgorithm

from idcode.bundle import BUNDLE_TYPE, DELTA_TYPE, verify_bundle, verify_delta
from idcode.errors import BundleError
from idcode.keystore import open_key_store
from idcode.service.auth import DEV_IDP_KID, dev_idp_jwks, dev_idp_key
from idcode.service.fleet import terminal_token
from idcode.service.settings import Settings
from idcode.testing import TestIssuer
from tests.forgery import (
    JWS_KIDS,
    SECRET_FORMS,
    compact_jws,
    hmac_signer,
    public_key_secrets,
    root_claims,
    truncated,
)
from tests.services import Tokens

# == The attack classes of issue 6, one regression test each ===================================
#
# Replay across two replicas: tests/integration/test_replicas.py,
# test_code_verified_on_one_replica_is_replayed_on_the_other (two real server processes on one
# PostgreSQL and Redis), and tests/service/test_api_verify.py,
# test_a_code_accepted_by_one_replica_is_replayed_at_another (two apps in one process).
# Algorithm confusion for codes is test_es256_key_used_with_an_eddsa_header_is_algorithm_confusion
# above; for passes, tests/core/test_visitorpass.py,
# test_pass_claiming_another_algorithm_for_a_trusted_key_is_unsupported_alg; alg "none" and
# HS256 ID tokens signed with the identity provider's PEM or raw public key are in
# tests/service/test_api_auth.py (BAD_TOKENS).


Enrol = Callable[..., tuple[str, str]]


def assert_problem(response: httpx2.Response, status: int, reason: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert (response.json()["reason"], response.json()["status"]) == (reason, status)


def operator_claims(settings: Settings) -> dict[str, Any]:
    """Claims of a valid operator ID token from the development identity provider."""
    now = int(time.time())
    return {
        "iss": settings.oidc_issuer,
        "aud": settings.oidc_audience,
        "sub": "mallory",
        "iat": now,
        "exp": now + 600,
        settings.oidc_roles_claim: [settings.operator_role],
    }


def terminal_claims(terminal_id: str) -> dict[str, Any]:
    now = int(time.time())
    return {
        "iss": terminal_id,
        "sub": terminal_id,
        "aud": "idcode",
        "iat": now,
        "exp": now + 60,
        "jti": uuid.uuid4().hex,
    }


def register_terminal(
    client: TestClient, tokens: Tokens, site: str = "hall-1"
) -> tuple[str, Ed25519PrivateKey, dict[str, Any]]:
    """A community terminal registered by an operator: (its id, its key, its public JWK)."""
    key = Ed25519PrivateKey.generate()
    jwk = OKPAlgorithm.to_jwk(key.public_key(), as_dict=True)
    body = {"scene": "community", "site": site, "public_jwk": jwk}
    response = client.post("/v1/terminals", json=body, headers=tokens.operator())
    assert response.status_code == 201, response.text
    return response.json()["id"], key, jwk


def test_the_forging_helpers_make_accepted_tokens_when_nothing_is_wrong(
    client: TestClient, tokens: Tokens, service_settings: Settings, issuer: TestIssuer
) -> None:
    """Guards the tests below: their tokens fail for their one defect, not for another."""
    id_token = compact_jws(
        {"alg": "EdDSA", "typ": "JWT", "kid": DEV_IDP_KID},
        operator_claims(service_settings),
        dev_idp_key(service_settings.keys_dir).sign,
    )
    assert client.get("/v1/terminals", headers={"Authorization": f"Bearer {id_token}"}).is_success
    terminal_id, key, _ = register_terminal(client, tokens)
    terminal = compact_jws({"alg": "EdDSA"}, terminal_claims(terminal_id), key.sign)
    assert client.get(
        "/v1/trust-bundle", headers={"Authorization": f"Bearer {terminal}"}
    ).is_success
    root = issuer.root
    for typ, load in ((BUNDLE_TYPE, verify_bundle), (DELTA_TYPE, verify_delta)):
        header = {"alg": "EdDSA", "typ": typ, "kid": root.kid}
        load(compact_jws(header, root_claims(typ), root.private_key.sign), root.public_jwk)


# -- a public key used as an HMAC secret ------------------------------------------------------


@pytest.mark.parametrize("secret_form", SECRET_FORMS)
def test_id_token_hs256_with_the_idp_public_jwk_as_secret_is_401(
    client: TestClient, service_settings: Settings, secret_form: str
) -> None:
    """(tests/service/test_api_auth.py tries the PEM and raw forms on three more endpoints.)"""
    public = dev_idp_key(service_settings.keys_dir).public_key()
    jwk = dev_idp_jwks(service_settings.keys_dir)["keys"][0]
    secret = public_key_secrets(jwk, public)[secret_form]
    token = compact_jws(
        {"alg": "HS256", "typ": "JWT", "kid": DEV_IDP_KID},
        operator_claims(service_settings),
        hmac_signer(secret),
    )
    response = client.get("/v1/terminals", headers={"Authorization": f"Bearer {token}"})
    assert_problem(response, 401, "invalid_token")


@pytest.mark.parametrize("secret_form", SECRET_FORMS)
def test_terminal_token_hs256_with_the_terminals_public_jwk_as_secret_is_401(
    client: TestClient, tokens: Tokens, secret_form: str
) -> None:
    terminal_id, key, jwk = register_terminal(client, tokens)
    secret = public_key_secrets(jwk, key.public_key())[secret_form]
    token = compact_jws(
        {"alg": "HS256", "typ": "JWT"}, terminal_claims(terminal_id), hmac_signer(secret)
    )
    response = client.get("/v1/trust-bundle", headers={"Authorization": f"Bearer {token}"})
    assert_problem(response, 401, "invalid_token")


# -- kid tricks -------------------------------------------------------------------------------


@pytest.mark.parametrize("kid", JWS_KIDS.values(), ids=JWS_KIDS.keys())
def test_id_token_with_a_tricky_kid_is_401_even_when_signed_by_the_idp(
    client: TestClient, service_settings: Settings, kid: object
) -> None:
    key = dev_idp_key(service_settings.keys_dir)
    token = compact_jws(
        {"alg": "EdDSA", "typ": "JWT", "kid": kid}, operator_claims(service_settings), key.sign
    )
    response = client.get("/v1/terminals", headers={"Authorization": f"Bearer {token}"})
    assert_problem(response, 401, "invalid_token")


@pytest.mark.parametrize("kid", JWS_KIDS.values(), ids=JWS_KIDS.keys())
def test_terminal_token_with_a_tricky_kid_is_verified_with_the_terminals_own_key_only(
    client: TestClient, tokens: Tokens, kid: object
) -> None:
    terminal_id, key, _ = register_terminal(client, tokens)
    forged = compact_jws(
        {"alg": "EdDSA", "kid": kid},
        terminal_claims(terminal_id),
        Ed25519PrivateKey.generate().sign,
    )
    response = client.get("/v1/trust-bundle", headers={"Authorization": f"Bearer {forged}"})
    assert_problem(response, 401, "invalid_token")
    # The kid decides nothing: the same header signed by the terminal's key is accepted (a
    # kid that is not even a string makes any token invalid, RFC 7515 section 4.1.4).
    genuine = compact_jws({"alg": "EdDSA", "kid": kid}, terminal_claims(terminal_id), key.sign)
    response = client.get("/v1/trust-bundle", headers={"Authorization": f"Bearer {genuine}"})
    assert response.status_code == (200 if isinstance(kid, str) else 401), response.text


# -- truncated signatures ---------------------------------------------------------------------


@pytest.mark.parametrize("keep", [0, 32, 63])
def test_id_token_terminal_token_bundle_and_delta_with_a_truncated_signature_are_refused(
    client: TestClient, tokens: Tokens, service_settings: Settings, keep: int
) -> None:
    operator = tokens.operator()["Authorization"].removeprefix("Bearer ")
    response = client.get(
        "/v1/terminals", headers={"Authorization": f"Bearer {truncated(operator, keep)}"}
    )
    assert_problem(response, 401, "invalid_token")

    terminal_id, key, _ = register_terminal(client, tokens)
    token = truncated(terminal_token(terminal_id, key), keep)
    response = client.get("/v1/trust-bundle", headers={"Authorization": f"Bearer {token}"})
    assert_problem(response, 401, "invalid_token")

    root = open_key_store(service_settings.keys_dir).root_public_jwk()
    bundle = client.get(
        "/v1/trust-bundle", headers={"Authorization": "Bearer " + terminal_token(terminal_id, key)}
    )
    delta = client.get(
        "/v1/trust-bundle/status-delta?since=0",
        headers={"Authorization": "Bearer " + terminal_token(terminal_id, key)},
    )
    assert (bundle.status_code, delta.status_code) == (200, 200)
    verify_bundle(bundle.text, root)  # whole, they load
    verify_delta(delta.text, root)
    with pytest.raises(BundleError):
        verify_bundle(truncated(bundle.text, keep), root)
    with pytest.raises(BundleError):
        verify_delta(truncated(delta.text, keep), root)


# -- CBOR bombs and deep nesting --------------------------------------------------------------


DEEP = 10_000  # levels of JSON nesting: at most 60 KB, under every body limit


class Callers:
    """Authorization headers for each kind of caller; a terminal's token is fresh each time
    (it is single-use, and checked before a body is read)."""

    def __init__(self, client: TestClient, tokens: Tokens, enrol: Enrol) -> None:
        self.tokens = tokens
        self.id_number = enrol()[1]
        self.terminal_id, self.key, _ = register_terminal(client, tokens)

    def headers(self, caller: str) -> dict[str, str]:
        if caller == "terminal":
            return {"Authorization": "Bearer " + terminal_token(self.terminal_id, self.key)}
        if caller == "citizen":
            return self.tokens.citizen(self.id_number)
        return self.tokens.verifier() if caller == "verifier" else self.tokens.operator()


@pytest.mark.parametrize(
    ("method", "path", "body", "caller"),
    [
        ("POST", "/v1/verify", b'{"code": %s}', "verifier"),
        ("POST", "/v1/cards", b'{"id_number": "1", "name": %s}', "operator"),
        (
            "POST",
            "/v1/terminals",
            b'{"scene": "community", "site": "x", "public_jwk": %s}',
            "operator",
        ),
        ("POST", "/v1/events", b'{"events": [{"scene_result": %s}]}', "terminal"),
        ("POST", "/v1/visitor-passes", b'{"community": %s}', "citizen"),
    ],
    ids=["verify", "enrol", "register-terminal", "events", "visitor-pass"],
)
def test_deeply_nested_json_body_is_a_4xx_problem_not_a_500(
    client: TestClient,
    tokens: Tokens,
    enrol: Enrol,
    method: str,
    path: str,
    body: bytes,
    caller: str,
) -> None:
    callers = Callers(client, tokens, enrol)
    for nested in (b"[" * DEEP + b"]" * DEEP, b'{"a":' * DEEP + b"1" + b"}" * DEEP):
        response = client.request(
            method,
            path,
            content=body % nested,
            headers={**callers.headers(caller), "Content-Type": "application/json"},
        )
        assert response.status_code in (400, 422), response.text
        assert response.headers["content-type"] == "application/problem+json"


@pytest.mark.parametrize("depth", [40, 500, 100_000])
def test_deeply_nested_scene_data_is_refused_and_not_stored(
    client: TestClient, tokens: Tokens, depth: int
) -> None:
    site = f"deep-{depth}"
    nested = b"[" * depth + b"]" * depth
    response = client.put(
        f"/v1/scenes/community/{site}",
        content=b'{"residents": [], "rules": ' + nested + b"}",
        headers={**tokens.operator(), "Content-Type": "application/json"},
    )
    assert response.status_code in (400, 422), response.text
    assert response.headers["content-type"] == "application/problem+json"
    if response.status_code == 422:
        assert response.json()["reason"] == "invalid_scene_data"
    # Nothing was stored: a terminal of the site gets the empty scene data.
    terminal_id, key, _ = register_terminal(client, tokens, site=site)
    bundle = client.get(
        "/v1/trust-bundle", headers={"Authorization": "Bearer " + terminal_token(terminal_id, key)}
    )
    assert jwt.decode(bundle.text, options={"verify_signature": False})["scene"]["version"] == 0


# -- oversized bodies -------------------------------------------------------------------------

KIB, MIB = 1024, 1024 * 1024
# (method, path, its body limit, the media type it reads)
BODY_LIMITS = [
    ("POST", "/v1/verify", 64 * KIB, "application/json"),
    ("POST", "/v1/cards", 64 * KIB, "application/json"),
    ("POST", f"/v1/cards/{uuid.UUID(int=1)}/status", 64 * KIB, "application/json"),
    ("POST", "/v1/terminals", 64 * KIB, "application/json"),
    ("POST", "/v1/visitor-passes", 64 * KIB, "application/json"),
    ("POST", "/v1/events", 1 * MIB, "application/json"),
    ("PUT", "/v1/scenes/community/big-site", 2 * MIB, "application/json"),
    ("POST", "/v1/cards/import", 64 * MIB, "text/csv"),
]
# Routes that take no body have the default limit too.
NO_BODY = [("POST", "/v1/codes", 64 * KIB, "application/json"), ("GET", "/v1/me", 64 * KIB, "")]


@pytest.mark.parametrize(
    ("method", "path", "limit", "media_type"),
    BODY_LIMITS + NO_BODY,
    ids=[f"{method} {path}" for method, path, _, _ in BODY_LIMITS + NO_BODY],
)
def test_body_declared_one_byte_over_its_routes_limit_is_413_before_any_token_is_read(
    client: TestClient, method: str, path: str, limit: int, media_type: str
) -> None:
    headers = {"Content-Type": media_type} if media_type else {}
    over = client.request(method, path, content=b" " * (limit + 1), headers=headers)
    assert_problem(over, 413, "payload_too_large")
    assert str(limit) in over.json()["title"]
    at_the_limit = client.request(method, path, content=b" " * limit, headers=headers)
    # Through the limit: refused for what it is (not JSON, or no token), not for its size.
    assert at_the_limit.status_code in (401, 422), at_the_limit.text
    assert at_the_limit.headers["content-type"] == "application/problem+json"


@pytest.mark.parametrize(
    ("method", "path", "limit", "media_type"),
    BODY_LIMITS,
    ids=[f"{method} {path}" for method, path, _, _ in BODY_LIMITS],
)
def test_body_streamed_without_a_length_is_cut_off_with_413_one_byte_over_the_limit(
    client: TestClient,
    tokens: Tokens,
    enrol: Enrol,
    method: str,
    path: str,
    limit: int,
    media_type: str,
) -> None:
    """Chunked, with a caller the route admits: callers are checked before the body is read
    (finding 8a of issue 10), so only an admitted caller's body is read at all."""
    caller = {"/v1/visitor-passes": "citizen", "/v1/events": "terminal", "/v1/verify": "verifier"}
    headers = Callers(client, tokens, enrol).headers(caller.get(path, "operator"))
    chunk = 256 * KIB
    body = (b" " * min(chunk, limit + 1 - start) for start in range(0, limit + 1, chunk))
    response = client.request(
        method, path, content=body, headers={**headers, "Content-Type": media_type}
    )
    assert "content-length" not in response.request.headers
    assert_problem(response, 413, "payload_too_large")
