"""The service answers on PostgreSQL and Redis: enrol, issue, verify offline."""

from __future__ import annotations

from collections.abc import Callable

from fastapi.testclient import TestClient

from idcode.cose import Algorithm
from idcode.keys import keys_from_jwks
from idcode.service.api.app import create_app
from idcode.service.settings import Settings
from idcode.verifier import Trust, verify
from tests.services import Tokens


def test_enrolled_citizen_gets_a_code_that_verifies_offline(
    client: TestClient, tokens: Tokens, enrol: Callable[..., tuple[str, str]]
) -> None:
    _, id_number = enrol(programmes=["meal_subsidy"])
    response = client.post("/v1/codes", headers=tokens.citizen(id_number))
    assert response.status_code == 200, response.text
    issued = response.json()
    keys = keys_from_jwks(client.get("/.well-known/jwks.json").json())
    trust = Trust.of(keys, prefix="WH1:", algorithms=[Algorithm.EDDSA])
    import time

    verdict = verify(issued["code"], trust, int(time.time()))
    assert verdict.valid, verdict
    assert client.get("/readyz").json()["checks"] == {
        "database": "ok",
        "signing_key": "ok",
        "redis": "ok",
    }


def test_objects_loaded_at_startup_are_frozen_out_of_the_collectors_sight(
    service_settings: Settings,
) -> None:
    """Full collections otherwise walk ~150,000 long-lived objects, 85-100 ms with requests
    stalled: the issuance p99 of 50-90 ms that bench/soak.py traced to them."""
    import gc

    gc.unfreeze()  # what tests/conftest.py froze before this test: the service must freeze
    assert gc.get_freeze_count() == 0
    with TestClient(create_app(service_settings)):
        assert gc.get_freeze_count() > 10_000
