"""The development identity provider's sign-in for the web wallet: OpenID Connect's
authorization-code flow with PKCE (RFC 6749, RFC 7636), on the real service (PostgreSQL,
Redis), and the settings that point the wallet at the city's provider instead."""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import secrets
import time
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import jwt
import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from idcode.errors import ConfigurationError
from idcode.service.api.app import create_app
from idcode.service.auth import dev_idp_jwks
from idcode.service.demodata import DEMO_CARDS
from idcode.service.devidp import CODE_LIFETIME, AuthorizationRequest, DevIdentityProvider
from idcode.service.settings import DEV_IDP_ISSUER, Settings
from tests.services import Tokens

WALLET = "http://testserver/wallet/"
CLIENT = "idcode"
CITY_AUTHORIZE = "https://login.city.example/authorize"
CITY_TOKEN = "https://login.city.example/token"  # noqa: S105  (an address, not a secret)  # the wallet's client id in development: the ID tokens' audience


def pkce() -> tuple[str, str]:
    verifier = base64.urlsafe_b64encode(secrets.token_bytes(32)).decode().rstrip("=")
    digest = hashlib.sha256(verifier.encode()).digest()
    return verifier, base64.urlsafe_b64encode(digest).decode().rstrip("=")


def authorize_params(challenge: str, **overrides: str | None) -> dict[str, str]:
    params: dict[str, str | None] = {
        "response_type": "code",
        "client_id": CLIENT,
        "redirect_uri": WALLET,
        "scope": "openid",
        "state": "s-" + secrets.token_hex(8),
        "nonce": "n-" + secrets.token_hex(8),
        "code_challenge": challenge,
        "code_challenge_method": "S256",
    }
    params.update(overrides)
    return {name: value for name, value in params.items() if value is not None}


def redirected(response: Any) -> dict[str, str]:
    """The parameters of a 303 to the wallet (each once)."""
    assert response.status_code == 303, response.text
    location = response.headers["location"]
    assert location.startswith(WALLET + "?")
    query = parse_qs(urlsplit(location).query, keep_blank_values=True)
    assert all(len(values) == 1 for values in query.values())
    return {name: values[0] for name, values in query.items()}


def sign_in(client: TestClient, citizen: int, challenge: str, **overrides: str | None) -> str:
    """Choose ``citizen`` on the sign-in page; returns the authorization code."""
    params = authorize_params(challenge, **overrides)
    page = client.get("/dev-idp/authorize", params=params)
    assert page.status_code == 200, page.text
    answer = client.post(
        "/dev-idp/authorize",
        data={**params, "citizen": str(citizen)},
        follow_redirects=False,
    )
    back = redirected(answer)
    assert back["state"] == params["state"]
    return back["code"]


def redeem(
    client: TestClient, authorization_code: str, verifier: str, **overrides: str | None
) -> Any:
    form: dict[str, str | None] = {
        "grant_type": "authorization_code",
        "code": authorization_code,
        "redirect_uri": WALLET,
        "client_id": CLIENT,
        "code_verifier": verifier,
    }
    form.update(overrides)
    return client.post(
        "/dev-idp/token", data={name: value for name, value in form.items() if value is not None}
    )


def oauth_error(response: Any, status: int = 400) -> tuple[str, str]:
    assert response.status_code == status, response.text
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    return body["error"], body["error_description"]


@pytest.fixture
def demo_enrolled(client: TestClient, tokens: Tokens) -> None:
    """The demo citizens hold cards (enrolled once per test database)."""
    for card in DEMO_CARDS:
        body = card.model_dump(exclude_none=True)
        response = client.post("/v1/cards", json=body, headers=tokens.operator())
        assert response.status_code in (201, 409), response.text


# -- the whole flow -------------------------------------------------------------------------


def test_sign_in_page_lists_the_demo_citizens_masked_and_is_never_framed(
    client: TestClient,
) -> None:
    _, challenge = pkce()
    page = client.get("/dev-idp/authorize", params=authorize_params(challenge))
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert page.headers["x-frame-options"] == "DENY"
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    assert page.headers["cache-control"] == "no-store"
    assert page.text.count('name="citizen"') == len(DEMO_CARDS)
    for card in DEMO_CARDS:
        assert card.name not in page.text and card.id_number not in page.text
        assert card.name[0] + "*" in page.text


def test_authorization_code_with_its_verifier_gives_an_id_token_the_service_accepts(
    client: TestClient, demo_enrolled: None, service_settings: Settings
) -> None:
    verifier, challenge = pkce()
    nonce = "n-" + secrets.token_hex(8)
    code = sign_in(client, 1, challenge, nonce=nonce)
    answer = redeem(client, code, verifier)
    assert answer.status_code == 200, answer.text
    assert answer.headers["cache-control"] == "no-store"
    body = answer.json()
    assert body["token_type"] == "Bearer" and body["expires_in"] == 3600  # noqa: S105
    claims = jwt.decode(
        body["id_token"],
        jwt.PyJWKSet.from_dict(dev_idp_jwks(service_settings.keys_dir)).keys[0].key,
        algorithms=["EdDSA"],
        audience=CLIENT,
        issuer=DEV_IDP_ISSUER,
    )
    assert claims["nonce"] == nonce and claims["sub"] == "dev-citizen-2"
    me = client.get("/v1/me", headers={"Authorization": f"Bearer {body['id_token']}"})
    assert me.status_code == 200, me.text
    assert me.json()["residency"] == DEMO_CARDS[1].residency
    issued = client.post("/v1/codes", headers={"Authorization": f"Bearer {body['id_token']}"})
    assert issued.status_code == 200, issued.text


def test_authorization_code_is_single_use(client: TestClient) -> None:
    verifier, challenge = pkce()
    code = sign_in(client, 0, challenge)
    assert redeem(client, code, verifier).status_code == 200
    assert oauth_error(redeem(client, code, verifier)) == (
        "invalid_grant",
        "the authorization code was used already",
    )


def test_wrong_verifier_is_refused_and_does_not_burn_the_code(client: TestClient) -> None:
    verifier, challenge = pkce()
    code = sign_in(client, 0, challenge)
    other, _ = pkce()
    assert oauth_error(redeem(client, code, other)) == (
        "invalid_grant",
        "code_verifier does not match the code_challenge",
    )
    assert redeem(client, code, verifier).status_code == 200


def test_code_is_bound_to_its_redirect_uri_and_client(client: TestClient) -> None:
    verifier, challenge = pkce()
    code = sign_in(client, 0, challenge)
    assert oauth_error(redeem(client, code, verifier, redirect_uri=WALLET + "x")) == (
        "invalid_grant",
        "redirect_uri is not the one of the authorization request",
    )
    error, _ = oauth_error(redeem(client, code, verifier, client_id="another"), 401)
    assert error == "invalid_client"
    assert redeem(client, code, verifier).status_code == 200


def test_expired_code_is_refused(client: TestClient, service_settings: Settings) -> None:
    verifier, challenge = pkce()
    provider = DevIdentityProvider(service_settings)
    request = AuthorizationRequest(CLIENT, WALLET, None, challenge, None)
    old = provider.issue_code(request, 0, int(time.time()) - CODE_LIFETIME - 1)
    assert oauth_error(redeem(client, old, verifier)) == (
        "invalid_grant",
        "the authorization code has expired",
    )
    fresh = provider.issue_code(request, 0, int(time.time()))
    assert redeem(client, fresh, verifier).status_code == 200


def test_code_another_key_signed_is_refused(client: TestClient) -> None:
    verifier, challenge = pkce()
    code = sign_in(client, 0, challenge)
    header, payload, signature = code.split(".")
    forged = jwt.encode(
        jwt.decode(code, options={"verify_signature": False}) | {"citizen": 3},
        secrets.token_bytes(32),
        algorithm="HS256",
    )
    assert oauth_error(redeem(client, forged, verifier))[0] == "invalid_grant"
    tampered = f"{header}.{payload}.{signature[:-2]}AA"
    assert oauth_error(redeem(client, tampered, verifier))[0] == "invalid_grant"


def test_cancel_sends_access_denied_back_with_the_state(client: TestClient) -> None:
    _, challenge = pkce()
    params = authorize_params(challenge)
    answer = client.post(
        "/dev-idp/authorize", data={**params, "cancel": "1"}, follow_redirects=False
    )
    back = redirected(answer)
    assert back["error"] == "access_denied" and back["state"] == params["state"]
    assert "code" not in back


# -- authorization requests refused ---------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "description"),
    [
        ({"client_id": None}, "client_id is missing"),
        ({"client_id": "someone-else"}, "client_id is not a client of this provider"),
        ({"redirect_uri": None}, "redirect_uri is missing"),
        ({"redirect_uri": "https://attacker.example/wallet/"}, "redirect_uri is not registered"),
        ({"redirect_uri": WALLET + "?x=1"}, "redirect_uri is not registered"),
        ({"redirect_uri": "http://testserver/wallet"}, "redirect_uri is not registered"),
    ],
)
def test_untrusted_client_or_redirect_uri_gets_an_error_page_and_no_redirect(
    client: TestClient, overrides: dict[str, str | None], description: str
) -> None:
    _, challenge = pkce()
    params = authorize_params(challenge, **overrides)
    for answer in (
        client.get("/dev-idp/authorize", params=params, follow_redirects=False),
        client.post("/dev-idp/authorize", data={**params, "citizen": "0"}, follow_redirects=False),
    ):
        assert answer.status_code == 400
        assert "location" not in answer.headers
        assert description in answer.text
        assert 'name="citizen"' not in answer.text


@pytest.mark.parametrize(
    ("overrides", "error", "description"),
    [
        ({"response_type": None}, "invalid_request", "response_type is missing"),
        ({"response_type": "token"}, "unsupported_response_type", "only response_type=code"),
        ({"scope": None}, "invalid_scope", "scope must include openid"),
        ({"scope": "profile"}, "invalid_scope", "scope must include openid"),
        ({"code_challenge": None}, "invalid_request", "code_challenge is missing"),
        ({"code_challenge_method": None}, "invalid_request", "code_challenge_method is missing"),
        ({"code_challenge_method": "plain"}, "invalid_request", "must be S256"),
        ({"code_challenge": "A" * 42}, "invalid_request", "43 base64url characters"),
        ({"code_challenge": "A" * 42 + "="}, "invalid_request", "43 base64url characters"),
        ({"nonce": "x" * 513}, "invalid_request", "nonce must be 1-512"),
    ],
)
def test_bad_authorization_request_is_sent_back_with_a_precise_error_and_the_state(
    client: TestClient, overrides: dict[str, str | None], error: str, description: str
) -> None:
    _, challenge = pkce()
    params = authorize_params(challenge, **overrides)
    back = redirected(client.get("/dev-idp/authorize", params=params, follow_redirects=False))
    assert back["error"] == error and description in back["error_description"]
    assert back["state"] == params["state"]
    assert "code" not in back


def test_a_parameter_given_twice_is_refused(client: TestClient) -> None:
    _, challenge = pkce()
    query = urlencode(authorize_params(challenge)) + "&scope=openid"
    back = redirected(client.get("/dev-idp/authorize?" + query, follow_redirects=False))
    assert back["error"] == "invalid_request"
    assert back["error_description"] == "scope is given more than once"
    twice = urlencode(authorize_params(challenge)) + "&redirect_uri=" + WALLET
    assert client.get("/dev-idp/authorize?" + twice, follow_redirects=False).status_code == 400


def test_choice_without_a_known_citizen_is_sent_back_as_invalid_request(
    client: TestClient,
) -> None:
    _, challenge = pkce()
    params = authorize_params(challenge)
    for choice in ("4", "-1", "x", ""):
        answer = client.post(
            "/dev-idp/authorize", data={**params, "citizen": choice}, follow_redirects=False
        )
        back = redirected(answer)
        assert back["error"] == "invalid_request" and "code" not in back


# -- token requests refused -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "error", "description"),
    [
        ({"grant_type": None}, "invalid_request", "grant_type is missing"),
        ({"grant_type": "password"}, "unsupported_grant_type", "only grant_type"),
        ({"code": None}, "invalid_request", "code is missing"),
        ({"redirect_uri": None}, "invalid_request", "redirect_uri is missing"),
        ({"client_id": None}, "invalid_request", "client_id is missing"),
        ({"code_verifier": None}, "invalid_request", "code_verifier is missing"),
        ({"code_verifier": "a" * 42}, "invalid_request", "43-128 unreserved"),
        ({"code_verifier": "a" * 129}, "invalid_request", "43-128 unreserved"),
        ({"code_verifier": "a" * 42 + "+"}, "invalid_request", "43-128 unreserved"),
        ({"code": "not-a-code"}, "invalid_grant", "not one this provider issued"),
    ],
)
def test_bad_token_request_gets_a_precise_rfc_6749_error(
    client: TestClient, overrides: dict[str, str | None], error: str, description: str
) -> None:
    verifier, challenge = pkce()
    code = sign_in(client, 0, challenge)
    got_error, got_description = oauth_error(redeem(client, code, verifier, **overrides))
    assert got_error == error and description in got_description
    assert redeem(client, code, verifier).status_code == 200  # the code was not burnt


def test_token_request_must_be_a_url_encoded_form(client: TestClient) -> None:
    verifier, challenge = pkce()
    code = sign_in(client, 0, challenge)
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": WALLET,
        "client_id": CLIENT,
        "code_verifier": verifier,
    }
    as_json = client.post("/dev-idp/token", json=form)
    assert oauth_error(as_json)[1] == "the body must be application/x-www-form-urlencoded"
    twice = client.post(
        "/dev-idp/token",
        content=urlencode(form) + "&code=" + code,
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert oauth_error(twice)[1] == "code is given more than once"
    not_utf8 = client.post(
        "/dev-idp/token",
        content=urlencode(form) + "&x=%ff",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert "not url-encoded UTF-8" in oauth_error(not_utf8)[1]
    assert redeem(client, code, verifier).status_code == 200


def test_access_log_does_not_hold_the_wallets_authorization_code(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    logger = logging.getLogger("uvicorn.access")
    record = logger.makeRecord(
        logger.name,
        logging.INFO,
        __file__,
        0,
        '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:1", "GET", "/wallet/?code=eyJsecret.x.y&state=abc", "1.1", 200),
        None,
    )
    for log_filter in logger.filters:
        assert isinstance(log_filter, logging.Filter)
        log_filter.filter(record)
    assert record.getMessage().count("eyJsecret") == 0
    assert "/wallet/?code={code}&state=abc" in record.getMessage()


# -- production: the city's provider --------------------------------------------------------


@pytest.fixture
def city_idp_client(make_settings: Callable[..., Settings]) -> Iterator[TestClient]:
    settings = make_settings(
        wallet_authorization_endpoint=CITY_AUTHORIZE,
        wallet_token_endpoint=CITY_TOKEN,
        wallet_client_id="city-wallet",
    )
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def test_with_the_citys_provider_the_wallet_is_sent_there_and_dev_idp_is_gone(
    city_idp_client: TestClient,
) -> None:
    config = city_idp_client.get("/wallet/config.json")
    assert config.status_code == 200
    body = config.json()
    assert body["authorization_endpoint"] == CITY_AUTHORIZE
    assert body["token_endpoint"] == CITY_TOKEN
    assert body["client_id"] == "city-wallet" and body["scope"] == "openid"
    assert abs(body["server_time"] - time.time()) < 60
    _, challenge = pkce()
    assert (
        city_idp_client.get("/dev-idp/authorize", params=authorize_params(challenge)).status_code
        == 404
    )
    assert city_idp_client.post("/dev-idp/token", data={}).status_code == 404
    page = city_idp_client.get("/wallet/")
    assert (
        "connect-src 'self' https://login.city.example;" in page.headers["content-security-policy"]
    )


def test_development_config_points_at_the_services_own_provider(client: TestClient) -> None:
    body = client.get("/wallet/config.json").json()
    assert body["issuer"] == DEV_IDP_ISSUER
    assert body["authorization_endpoint"] == "http://testserver/dev-idp/authorize"
    assert body["token_endpoint"] == "http://testserver/dev-idp/token"  # noqa: S105
    assert body["client_id"] == CLIENT and body["development"] is True


def test_wallet_without_a_provider_in_production_says_it_is_not_configured(
    make_settings: Callable[..., Settings], tmp_path: Any
) -> None:
    # Development settings whose issuer is not the development provider: as in production,
    # nobody signs the wallet's citizens in unless the endpoints are set.
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps(dev_idp_jwks(tmp_path / "city-idp")))
    jwks.chmod(0o600)
    settings = make_settings(oidc_issuer="https://login.city.example", oidc_jwks_file=jwks)
    with TestClient(create_app(settings)) as test_client:
        answer = test_client.get("/wallet/config.json")
        assert answer.status_code == 404
        assert answer.json()["reason"] == "wallet_not_configured"


@pytest.mark.parametrize(
    ("variables", "message"),
    [
        (
            {"IDCODE_WALLET_AUTHORIZATION_ENDPOINT": "https://login.city.example/authorize"},
            "set together",
        ),
        (
            {
                "IDCODE_WALLET_AUTHORIZATION_ENDPOINT": "login.city.example/authorize",
                "IDCODE_WALLET_TOKEN_ENDPOINT": "https://login.city.example/token",
            },
            "absolute http(s) URL",
        ),
        (
            {
                "IDCODE_WALLET_AUTHORIZATION_ENDPOINT": "https://login.city.example/a#b",
                "IDCODE_WALLET_TOKEN_ENDPOINT": "https://login.city.example/token",
            },
            "without a fragment",
        ),
    ],
)
def test_wallet_endpoint_settings_are_checked(
    monkeypatch: pytest.MonkeyPatch, variables: dict[str, str], message: str
) -> None:
    from idcode.service.settings import get_settings

    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    try:
        with pytest.raises(
            ConfigurationError, match=message.replace("(", r"\(").replace(")", r"\)")
        ):
            get_settings()
    finally:
        get_settings.cache_clear()


def test_production_refuses_a_wallet_endpoint_that_is_not_https(tmp_path: Any) -> None:
    with pytest.raises(ValueError, match="IDCODE_WALLET_TOKEN_ENDPOINT must be https"):
        Settings(
            environment="production",
            keys_dir=tmp_path,
            pii_encryption_key=SecretStr("a" * 44),
            pii_hash_key=SecretStr("b" * 44),
            oidc_issuer="https://login.city.example",
            oidc_jwks_url="https://login.city.example/jwks",
            demo_data=False,
            wallet_authorization_endpoint="https://login.city.example/authorize",
            wallet_token_endpoint=CITY_TOKEN.replace("https", "http"),
        )
