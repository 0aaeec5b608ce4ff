"""Crypto profiles at the live service (PostgreSQL, Redis): a GM service issues SM2 codes and a
standard one EdDSA codes; each verifies offline only under its own profile, and is refused
``unsupported_alg`` naming the algorithm under the other, at a verifier and at the service."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from idcode.codetext import decode_body
from idcode.cose import Algorithm, decode_sign1
from idcode.errors import ConfigurationError
from idcode.keys import keys_from_jwks
from idcode.keystore import configured_key_store, initialise, rotate
from idcode.profiles import GM, STANDARD, CryptoProfile
from idcode.service.api.app import create_app
from idcode.service.settings import Settings
from idcode.testing import random_id_number
from idcode.verifier import Trust, verify
from tests.services import Tokens

OTHER = {STANDARD.name: GM, GM.name: STANDARD}


def issue(client: TestClient, tokens: Tokens) -> str:
    id_number = random_id_number()
    enrolled = client.post(
        "/v1/cards", json={"id_number": id_number, "name": "测试"}, headers=tokens.operator()
    )
    assert enrolled.status_code == 201, enrolled.text
    response = client.post("/v1/codes", headers=tokens.citizen(id_number))
    assert response.status_code == 200, response.text
    code: str = response.json()["code"]
    return code


def offline_trust(client: TestClient, settings: Settings, profile: CryptoProfile) -> Trust:
    """A terminal of ``profile`` trusting the keys the service publishes."""
    keys = keys_from_jwks(client.get("/.well-known/jwks.json").json())
    return Trust.of(keys, prefix=settings.code_prefix, algorithms=profile.default_code_algorithms)


@pytest.mark.parametrize("profile", [STANDARD, GM], ids=lambda p: p.name)
def test_a_code_issued_under_a_profile_verifies_under_it_and_not_under_the_other(
    profile: CryptoProfile,
    make_settings: Callable[..., Settings],
    fresh_postgres_url: Callable[..., str],
    redis_url: str,
) -> None:
    # A database of its own: it records the profile it was written under.
    settings = make_settings(
        database_url=fresh_postgres_url(), redis_url=redis_url, crypto_profile=profile.name
    )
    tokens = Tokens(settings)
    with TestClient(create_app(settings)) as client:
        code = issue(client, tokens)
        message = decode_sign1(decode_body(code[len(settings.code_prefix) :]))
        assert message.alg == profile.issuer_algorithm
        published = client.get("/.well-known/jwks.json").json()["keys"]
        assert {jwk["alg"] for jwk in published} == {profile.issuer_algorithm.jose_name}

        now = int(time.time())
        assert verify(code, offline_trust(client, settings, profile), now).valid
        other = verify(code, offline_trust(client, settings, OTHER[profile.name]), now)
        assert other.reason.value == "unsupported_alg"
        alg = profile.issuer_algorithm
        assert f"alg {int(alg)} ({alg.jose_name}) is not accepted here" in other.detail

        online = client.post("/v1/verify", json={"code": code}, headers=tokens.verifier())
        assert online.status_code == 200, online.text
        assert online.json()["valid"] is True


def test_a_gm_service_refuses_a_standard_code_online_with_unsupported_alg(
    make_settings: Callable[..., Settings],
    postgres_url: str,
    fresh_postgres_url: Callable[..., str],
    redis_url: str,
    tmp_path: Path,
) -> None:
    standard = make_settings(
        database_url=postgres_url, redis_url=redis_url, keys_dir=tmp_path / "standard-keys"
    )
    with TestClient(create_app(standard)) as client:
        standard_code = issue(client, Tokens(standard))
    gm = make_settings(database_url=fresh_postgres_url(), redis_url=redis_url, crypto_profile="gm")
    tokens = Tokens(gm)
    with TestClient(create_app(gm)) as client:
        response = client.post(
            "/v1/verify", json={"code": standard_code}, headers=tokens.verifier()
        )
    assert response.status_code == 200, response.text
    verdict = response.json()
    assert (verdict["valid"], verdict["reason"]) == (False, "unsupported_alg")
    assert "alg -8 (EdDSA)" in verdict["detail"] and "accepted: SM2" in verdict["detail"]


def test_a_gm_service_does_not_start_over_a_key_store_that_signs_with_eddsa(
    make_settings: Callable[..., Settings], postgres_url: str, redis_url: str
) -> None:
    standard = make_settings(database_url=postgres_url, redis_url=redis_url)
    with TestClient(create_app(standard)):  # development: creates an EdDSA issuer key
        pass
    gm = make_settings(database_url=postgres_url, redis_url=redis_url, crypto_profile="gm")
    app = create_app(gm)
    with pytest.raises(ConfigurationError, match=r"issuer key '.' is EdDSA.* gm crypto profile"):
        TestClient(app).__enter__()


def test_a_gm_service_does_not_start_over_a_key_store_whose_root_key_is_ed25519(
    make_settings: Callable[..., Settings], postgres_url: str, redis_url: str
) -> None:
    gm = make_settings(database_url=postgres_url, redis_url=redis_url, crypto_profile="gm")
    store = configured_key_store(gm)
    now = int(time.time())
    initialise(store, now, 90)  # a standard store: Ed25519 root, EdDSA issuer key
    rotate(store, now, 90, Algorithm.SM2)  # its issuer key is now the profile's, its root not
    app = create_app(gm)
    with pytest.raises(
        ConfigurationError, match=r"root key in .* is EdDSA, but the gm crypto profile's root key"
    ):
        TestClient(app).__enter__()
