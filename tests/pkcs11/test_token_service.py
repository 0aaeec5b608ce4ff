"""The issuance service with its keys on a SoftHSM2 token (real PostgreSQL and Redis): a
citizen's code is signed on the token and verifies offline, against a trust bundle the
token's root key signed, and the service publishes the token's keys."""

from __future__ import annotations

import time
from collections.abc import Callable

from fastapi.testclient import TestClient
from pydantic import SecretStr

from idcode.bundle import sign_bundle, verify_bundle
from idcode.cose import Algorithm
from idcode.keys import jwks
from idcode.keystore import rotate
from idcode.pkcs11store import TokenKeyStore
from idcode.service.api.app import create_app
from idcode.service.settings import Settings
from idcode.statuslist import StatusList
from idcode.testing import random_id_number
from idcode.verifier import verify
from tests.pkcs11.conftest import SoftHsm
from tests.pkcs11.softhsm import needs_softhsm
from tests.services import Tokens

pytestmark = needs_softhsm


def test_the_service_issues_codes_signed_on_the_token_that_verify_offline(
    store: TokenKeyStore,
    softhsm: SoftHsm,
    make_settings: Callable[..., Settings],
    postgres_url: str,
    redis_url: str,
) -> None:
    settings = make_settings(
        database_url=postgres_url,
        redis_url=redis_url,
        pkcs11_module=softhsm.module,
        pkcs11_token=softhsm.label,
        pkcs11_pin=SecretStr(softhsm.pin),
    )
    tokens = Tokens(settings)
    with TestClient(create_app(settings)) as client:  # development: it creates the keys
        id_number = random_id_number()
        enrolled = client.post(
            "/v1/cards", json={"id_number": id_number, "name": "测试"}, headers=tokens.operator()
        )
        assert enrolled.status_code == 201, enrolled.text
        eddsa = client.post("/v1/codes", headers=tokens.citizen(id_number))
        assert eddsa.status_code == 200, eddsa.text
        # A rotation by the operator (idcode keys rotate) reaches the running service. It
        # starts at the next second, after the code above was issued: a key's period ends
        # before its last second, [nbf, exp), and the service looks at most once a second.
        rotated = rotate(store, int(time.time()), 90, Algorithm.ES256, starts_in=1)
        time.sleep(2.1)
        es256 = client.post("/v1/codes", headers=tokens.citizen(id_number))
        assert es256.status_code == 200, es256.text
        published = client.get("/.well-known/jwks.json").json()

    # keys_dir holds the development IdP's and personal-data keys, no signing key.
    written = {path.name for path in settings.keys_dir.iterdir()}
    assert not {"root.pem", "manifest.jwt"} & written
    assert not [name for name in written if name.startswith("issuer-")]
    now = int(time.time())
    assert published["keys"] == jwks(store.published_keys(now))["keys"]
    token = sign_bundle(
        store.root_key(),
        version=now,
        issued_at=now,
        max_age=3600,
        keys=store.published_keys(now),
        status=StatusList(1024),
    )
    trust = verify_bundle(token, store.root_public_jwk()).trust(
        prefix=settings.code_prefix, algorithms=[Algorithm.EDDSA, Algorithm.ES256]
    )
    first, second = (verify(c.json()["code"], trust, now) for c in (eddsa, es256))
    assert (first.reason.value, second.reason.value) == ("ok", "ok")
    assert second.kid == rotated.kid != first.kid
