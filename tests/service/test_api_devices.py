"""Citizens' devices through the real service (PostgreSQL and Redis): registering a device key,
renewing its credential with device tokens, listing and removing devices, the audit trail, and
a removed device's codes refused at a terminal once its bundle carries the revoked list."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx2
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from fastapi.testclient import TestClient
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm
from sqlalchemy import Engine, select, update
from sqlalchemy.orm import Session

from idcode import b64url
from idcode.bundle import TrustBundle, verify_bundle, verify_delta
from idcode.cose import Algorithm
from idcode.devicecode import DeviceKey, make_device_code
from idcode.keystore import open_key_store
from idcode.reasons import Reason
from idcode.replay import ReplayCache
from idcode.service.api.app import create_app
from idcode.service.database import make_engine
from idcode.service.devices import MAX_DEVICES, REVOKED_MARGIN
from idcode.service.models import AuditRecord, DeviceRecord, StatusChange
from idcode.service.settings import Settings
from idcode.terminaltoken import (
    DEVICE_AUDIENCE,
    RELYING_PARTY_AUDIENCE,
    TERMINAL_AUDIENCE,
    device_token,
    request_token,
    terminal_token,
)
from idcode.testing import random_id_number
from idcode.verifier import verify
from tests.services import Tokens

Enrol = Callable[..., tuple[str, str]]
DeviceKeyPair = Ed25519PrivateKey | ec.EllipticCurvePrivateKey
PROBLEM_JSON = "application/problem+json"
WEEK = 7 * 86_400
REQUEST_TIMEOUT = 120


def public_jwk(private_key: Any) -> dict[str, Any]:
    if isinstance(private_key, Ed25519PrivateKey):
        return OKPAlgorithm.to_jwk(private_key.public_key(), as_dict=True)
    if isinstance(private_key, rsa.RSAPrivateKey):
        return RSAAlgorithm.to_jwk(private_key.public_key(), as_dict=True)
    return ECAlgorithm.to_jwk(private_key.public_key(), as_dict=True)


def alg_of(private_key: DeviceKeyPair) -> str:
    return "EdDSA" if isinstance(private_key, Ed25519PrivateKey) else "ES256"


def assert_problem(response: httpx2.Response, status: int, reason: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM_JSON
    problem: dict[str, Any] = response.json()
    assert (problem["reason"], problem["status"]) == (reason, status)
    return problem


class Wallet:
    """A citizen's device as a wallet holds it: its key, and what registration answered."""

    def __init__(self, client: TestClient, citizen: dict[str, str], key: DeviceKeyPair) -> None:
        self.client, self.citizen, self.key = client, citizen, key
        self.answer: dict[str, Any] = {}

    @property
    def id(self) -> str:
        return str(self.answer["id"])

    @property
    def blob(self) -> bytes:
        return b64url.decode(self.answer["credential"])

    def register(self, **body: Any) -> httpx2.Response:
        response = self.client.post(
            "/v1/devices", json={"public_jwk": public_jwk(self.key), **body}, headers=self.citizen
        )
        if response.status_code == 201:
            self.answer = response.json()
        return response

    def token(self) -> str:
        return device_token(self.id, self.key, alg_of(self.key))

    def renew(self, token: str | None = None) -> httpx2.Response:
        response = self.client.post(
            f"/v1/devices/{self.id}/credential",
            headers={"Authorization": f"Bearer {token or self.token()}"},
        )
        if response.status_code == 200:
            self.answer = response.json()
        return response

    def code(self, now: int) -> str:
        return make_device_code(self.blob, self.key, prefix=self.answer["code_prefix"], now=now)


@pytest.fixture
def citizen(enrol: Enrol, tokens: Tokens) -> tuple[str, dict[str, str]]:
    """An enrolled citizen: (card id, ID token headers)."""
    card_id, id_number = enrol()
    return card_id, tokens.citizen(id_number)


@pytest.fixture
def wallet(client: TestClient, citizen: tuple[str, dict[str, str]]) -> Wallet:
    """A registered Ed25519 device of ``citizen``."""
    device = Wallet(client, citizen[1], Ed25519PrivateKey.generate())
    assert device.register(label="my phone").status_code == 201, device.answer
    return device


@pytest.fixture
def database(service_settings: Settings) -> Iterator[Engine]:
    engine = make_engine(service_settings.sqlalchemy_url)
    try:
        yield engine
    finally:
        engine.dispose()


# -- registration -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "key", [Ed25519PrivateKey.generate(), ec.generate_private_key(ec.SECP256R1())], ids=alg_of
)
def test_citizen_registers_a_device_key_and_gets_a_credential_for_it(
    client: TestClient, citizen: tuple[str, dict[str, str]], key: DeviceKeyPair
) -> None:
    device = Wallet(client, citizen[1], key)
    before = int(time.time())
    response = device.register(label="my phone")

    assert response.status_code == 201, response.text
    assert response.headers["cache-control"] == "no-store"
    answer = response.json()
    assert set(answer) == {
        "id",
        "device_id",
        "alg",
        "label",
        "credential",
        "credential_expires_at",
        "server_time",
        "code_prefix",
        "code_lifetime",
        "created_at",
    }
    assert uuid.UUID(answer["id"]).version == 4
    assert answer["device_id"] == DeviceKey.from_jwk(public_jwk(key)).device_id.hex()
    assert answer["alg"] == alg_of(key)
    assert answer["label"] == "my phone"
    assert before <= answer["server_time"] <= time.time()
    assert answer["credential_expires_at"] == answer["server_time"] + WEEK
    assert (answer["code_prefix"], answer["code_lifetime"]) == ("WH2:", 60)
    assert answer["created_at"].endswith("Z")
    # The credential certifies this key: a code the device signs with it verifies.
    assert device.blob and device.code(answer["server_time"]).startswith("WH2:")


def test_a_label_is_optional(client: TestClient, citizen: tuple[str, dict[str, str]]) -> None:
    response = Wallet(client, citizen[1], Ed25519PrivateKey.generate()).register()
    assert response.status_code == 201, response.text
    assert response.json()["label"] is None


def _jwk_with(key: Any, **members: Any) -> dict[str, Any]:
    return {k: v for k, v in {**public_jwk(key), **members}.items() if v is not None}


_ED = Ed25519PrivateKey.generate()
_P256 = ec.generate_private_key(ec.SECP256R1())
BAD_KEYS = {
    "private Ed25519 JWK": OKPAlgorithm.to_jwk(_ED, as_dict=True),
    "private P-256 JWK": ECAlgorithm.to_jwk(_P256, as_dict=True),
    "P-384": public_jwk(ec.generate_private_key(ec.SECP384R1())),
    "secp256k1": public_jwk(ec.generate_private_key(ec.SECP256K1())),
    "X25519": _jwk_with(
        _ED,
        crv="X25519",
        x=b64url.encode(X25519PrivateKey.generate().public_key().public_bytes_raw()),
    ),
    "RSA": public_jwk(rsa.generate_private_key(public_exponent=65537, key_size=2048)),
    "symmetric": {"kty": "oct", "k": b64url.encode(b"0" * 32)},
    "no kty": _jwk_with(_ED, kty=None),
    "no x": _jwk_with(_ED, x=None),
    "P-256 without y": _jwk_with(_P256, y=None),
    "x with junk": _jwk_with(_ED, x=public_jwk(_ED)["x"] + "!"),
    "x padded": _jwk_with(_ED, x=public_jwk(_ED)["x"] + "="),
    "x too short": _jwk_with(_ED, x=b64url.encode(b"\x01" * 31)),
    "x too long": _jwk_with(_ED, x=b64url.encode(b"\x01" * 33)),
    "x not text": _jwk_with(_ED, x=12345),
    "x with a NUL": _jwk_with(_ED, x="\x00" * 43),
    "P-256 point not on the curve": _jwk_with(_P256, y=b64url.encode(b"\x01" * 32)),
    "kty not text": _jwk_with(_ED, kty=["OKP"]),
    "empty": {},
}


@pytest.mark.parametrize("jwk", BAD_KEYS.values(), ids=BAD_KEYS.keys())
def test_registration_refuses_anything_but_a_public_ed25519_or_p256_key_with_422(
    client: TestClient, citizen: tuple[str, dict[str, str]], jwk: dict[str, Any]
) -> None:
    response = client.post("/v1/devices", json={"public_jwk": jwk}, headers=citizen[1])
    problem = assert_problem(response, 422, "invalid_request")
    assert problem["errors"][0]["loc"][-1] == "public_jwk"
    assert "d" not in response.text or jwk.get("d", "\x00") not in response.text


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"label": "x" * 65}, "label"),
        ({"label": ""}, "label"),
        ({"label": " phone"}, "label"),
        ({"label": "pho\x00ne"}, "label"),
        ({"label": "pho\nne"}, "label"),
        ({"label": 7}, "label"),
        ({"name": "phone"}, "name"),
        ({"public_jwk": "not an object"}, "public_jwk"),
    ],
)
def test_registration_refuses_a_bad_body_with_422_naming_the_field(
    client: TestClient, citizen: tuple[str, dict[str, str]], body: dict[str, Any], field: str
) -> None:
    full = {"public_jwk": public_jwk(Ed25519PrivateKey.generate()), **body}
    problem = assert_problem(
        client.post("/v1/devices", json=full, headers=citizen[1]), 422, "invalid_request"
    )
    assert [error["loc"][-1] for error in problem["errors"]] == [field]


def test_a_64_character_label_is_taken(
    client: TestClient, citizen: tuple[str, dict[str, str]]
) -> None:
    response = Wallet(client, citizen[1], Ed25519PrivateKey.generate()).register(label="手" * 64)
    assert response.status_code == 201, response.text


def test_the_sixth_active_device_is_409_too_many_devices_until_one_is_removed(
    client: TestClient, citizen: tuple[str, dict[str, str]]
) -> None:
    devices = [Wallet(client, citizen[1], Ed25519PrivateKey.generate()) for _ in range(6)]
    for device in devices[:MAX_DEVICES]:
        assert device.register().status_code == 201
    assert_problem(devices[5].register(), 409, "too_many_devices")

    removed = client.delete(f"/v1/devices/{devices[0].id}", headers=citizen[1])
    assert removed.status_code == 204
    assert devices[5].register().status_code == 201


def test_concurrent_registrations_for_one_card_never_pass_the_limit(
    client: TestClient, citizen: tuple[str, dict[str, str]]
) -> None:
    devices = [Wallet(client, citizen[1], Ed25519PrivateKey.generate()) for _ in range(12)]
    barrier = threading.Barrier(len(devices))

    def register(device: Wallet) -> int:
        barrier.wait(timeout=REQUEST_TIMEOUT)
        return device.register().status_code

    with ThreadPoolExecutor(max_workers=len(devices)) as pool:
        statuses = sorted(pool.map(register, devices, timeout=REQUEST_TIMEOUT))
    assert statuses == [201] * MAX_DEVICES + [409] * (len(devices) - MAX_DEVICES)
    listed = client.get("/v1/devices", headers=citizen[1]).json()["devices"]
    assert len(listed) == MAX_DEVICES


def test_the_limit_the_lifetime_and_the_rate_are_the_deployments_settings(
    make_settings: Callable[..., Settings], postgres_url: str, redis_url: str
) -> None:
    settings = make_settings(
        database_url=postgres_url,
        redis_url=redis_url,
        max_devices_per_card=1,
        device_credential_seconds=3600,
        rate_limit_per_minute=3,
    )
    tokens = Tokens(settings)
    with TestClient(create_app(settings)) as client:
        body = {"id_number": random_id_number(), "name": "测试"}
        assert client.post("/v1/cards", json=body, headers=tokens.operator()).status_code == 201
        citizen = tokens.citizen(body["id_number"])
        first, second = (Wallet(client, citizen, Ed25519PrivateKey.generate()) for _ in range(2))
        assert first.register().status_code == 201
        assert first.answer["credential_expires_at"] == first.answer["server_time"] + 3600
        problem = assert_problem(second.register(), 409, "too_many_devices")
        assert "at most 1 " in problem["detail"]
        assert first.renew().status_code == 200
        assert first.answer["credential_expires_at"] == first.answer["server_time"] + 3600
        # Registrations and renewals count with the citizen's code requests.
        limited = first.renew()
        if limited.status_code == 200:  # the four requests straddled a minute's end
            limited = first.renew()
        problem = assert_problem(limited, 429, "rate_limited")
        assert int(limited.headers["retry-after"]) >= 1


def test_one_key_registered_twice_at_once_is_one_device(
    client: TestClient, enrol: Enrol, tokens: Tokens
) -> None:
    key = Ed25519PrivateKey.generate()
    wallets = [Wallet(client, tokens.citizen(enrol()[1]), key) for _ in range(6)]
    barrier = threading.Barrier(len(wallets))

    def register(device: Wallet) -> tuple[int, str]:
        barrier.wait(timeout=REQUEST_TIMEOUT)
        response = device.register()
        return response.status_code, response.json().get("reason", "")

    with ThreadPoolExecutor(max_workers=len(wallets)) as pool:
        answers = sorted(pool.map(register, wallets, timeout=REQUEST_TIMEOUT))
    assert answers == [(201, "")] + [(409, "device_exists")] * 5


def test_a_key_registered_already_is_409_device_exists_for_anyone(
    client: TestClient, enrol: Enrol, tokens: Tokens, wallet: Wallet
) -> None:
    assert_problem(wallet.register(), 409, "device_exists")
    _, other = enrol()
    again = Wallet(client, tokens.citizen(other), wallet.key)
    assert_problem(again.register(), 409, "device_exists")


def test_a_removed_devices_key_is_never_registered_again(
    client: TestClient, citizen: tuple[str, dict[str, str]], wallet: Wallet
) -> None:
    assert client.delete(f"/v1/devices/{wallet.id}", headers=citizen[1]).status_code == 204
    again = Wallet(client, citizen[1], wallet.key)
    assert_problem(again.register(), 409, "device_removed")


@pytest.mark.parametrize("action", ["suspend", "lost", "revoke"])
def test_a_card_that_is_not_active_registers_no_device(
    client: TestClient, citizen: tuple[str, dict[str, str]], tokens: Tokens, action: str
) -> None:
    card_id, headers = citizen
    changed = client.post(
        f"/v1/cards/{card_id}/status", json={"action": action}, headers=tokens.operator()
    )
    assert changed.status_code == 200, changed.text
    device = Wallet(client, headers, Ed25519PrivateKey.generate())
    problem = assert_problem(device.register(), 403, "card_not_active")
    assert changed.json()["status"] in problem["detail"]


def test_registration_needs_a_citizen_with_a_card(client: TestClient, tokens: Tokens) -> None:
    body = {"public_jwk": public_jwk(Ed25519PrivateKey.generate())}
    assert_problem(client.post("/v1/devices", json=body), 401, "missing_token")
    assert_problem(
        client.post("/v1/devices", json=body, headers=tokens.operator()), 403, "not_a_citizen"
    )
    stranger = tokens.citizen(random_id_number())
    assert_problem(client.post("/v1/devices", json=body, headers=stranger), 404, "card_not_found")


def test_registration_checks_the_caller_before_it_reads_the_body(client: TestClient) -> None:
    response = client.post(
        "/v1/devices", content=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert_problem(response, 401, "missing_token")


# -- renewal with device tokens -----------------------------------------------------------


@pytest.mark.parametrize(
    "key", [Ed25519PrivateKey.generate(), ec.generate_private_key(ec.SECP256R1())], ids=alg_of
)
def test_a_device_renews_its_credential_with_a_token_its_key_signs(
    client: TestClient, citizen: tuple[str, dict[str, str]], key: DeviceKeyPair
) -> None:
    device = Wallet(client, citizen[1], key)
    assert device.register(label="tablet").status_code == 201
    first = dict(device.answer)
    time.sleep(1.05)  # a later second: the new credential must expire later

    response = device.renew()
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    renewed = response.json()
    assert set(renewed) == set(first)
    same = ("id", "device_id", "alg", "label", "code_prefix", "code_lifetime", "created_at")
    assert {k: renewed[k] for k in same} == {k: first[k] for k in same}
    assert renewed["credential_expires_at"] == renewed["server_time"] + WEEK
    assert renewed["credential_expires_at"] > first["credential_expires_at"]
    assert renewed["credential"] != first["credential"]
    listed = client.get("/v1/devices", headers=citizen[1]).json()["devices"][0]
    assert listed["renewed_at"] is not None
    assert listed["credential_expires_at"] == renewed["credential_expires_at"]


def test_a_replayed_device_token_is_401_token_replayed(wallet: Wallet) -> None:
    token = wallet.token()
    assert wallet.renew(token).status_code == 200
    assert_problem(wallet.renew(token), 401, "token_replayed")


def test_a_removed_devices_token_is_403_device_removed(
    client: TestClient, citizen: tuple[str, dict[str, str]], wallet: Wallet
) -> None:
    assert client.delete(f"/v1/devices/{wallet.id}", headers=citizen[1]).status_code == 204
    assert_problem(wallet.renew(), 403, "device_removed")


@pytest.mark.parametrize("audience", [TERMINAL_AUDIENCE, RELYING_PARTY_AUDIENCE, "idcode/devices"])
def test_a_token_for_another_audience_is_401_invalid_token(wallet: Wallet, audience: str) -> None:
    token = request_token(wallet.id, wallet.key, audience, "EdDSA")
    assert_problem(wallet.renew(token), 401, "invalid_token")


def test_an_expired_device_token_is_401_token_expired(wallet: Wallet) -> None:
    token = request_token(
        wallet.id, wallet.key, DEVICE_AUDIENCE, "EdDSA", now=int(time.time()) - 1000, lifetime=60
    )
    assert_problem(wallet.renew(token), 401, "token_expired")


def test_a_device_token_living_longer_than_five_minutes_is_401(wallet: Wallet) -> None:
    token = request_token(wallet.id, wallet.key, DEVICE_AUDIENCE, "EdDSA", lifetime=301)
    assert_problem(wallet.renew(token), 401, "invalid_token")


def test_a_forged_device_token_gets_one_answer_whether_the_device_exists_or_not(
    client: TestClient, wallet: Wallet
) -> None:
    stranger = Ed25519PrivateKey.generate()
    forged = request_token(wallet.id, stranger, DEVICE_AUDIENCE, "EdDSA")
    nobody = str(uuid.uuid4())
    unknown = request_token(nobody, stranger, DEVICE_AUDIENCE, "EdDSA")
    first = assert_problem(wallet.renew(forged), 401, "invalid_token")
    second = assert_problem(
        client.post(
            f"/v1/devices/{nobody}/credential", headers={"Authorization": f"Bearer {unknown}"}
        ),
        401,
        "invalid_token",
    )
    assert first == second


def test_a_devices_token_renews_only_that_device(
    client: TestClient, citizen: tuple[str, dict[str, str]], wallet: Wallet
) -> None:
    other = Wallet(client, citizen[1], Ed25519PrivateKey.generate())
    assert other.register().status_code == 201
    response = client.post(
        f"/v1/devices/{other.id}/credential",
        headers={"Authorization": f"Bearer {wallet.token()}"},
    )
    assert_problem(response, 401, "invalid_token")
    assert other.renew().status_code == 200


def test_an_id_token_or_a_terminal_token_is_no_device_token(
    client: TestClient, citizen: tuple[str, dict[str, str]], wallet: Wallet
) -> None:
    path = f"/v1/devices/{wallet.id}/credential"
    assert_problem(client.post(path), 401, "missing_token")
    assert_problem(client.post(path, headers=citizen[1]), 401, "invalid_token")
    token = terminal_token(wallet.id, wallet.key, "EdDSA")
    assert_problem(wallet.renew(token), 401, "invalid_token")
    assert_problem(wallet.renew("not.a.token"), 401, "invalid_token")


def test_renewal_for_a_card_no_longer_active_is_403_card_not_active(
    client: TestClient, citizen: tuple[str, dict[str, str]], tokens: Tokens, wallet: Wallet
) -> None:
    changed = client.post(
        f"/v1/cards/{citizen[0]}/status", json={"action": "suspend"}, headers=tokens.operator()
    )
    assert changed.status_code == 200
    assert_problem(wallet.renew(), 403, "card_not_active")
    client.post(
        f"/v1/cards/{citizen[0]}/status", json={"action": "reinstate"}, headers=tokens.operator()
    )
    assert wallet.renew().status_code == 200


def test_a_malformed_device_id_in_the_path_is_422_not_500(
    client: TestClient, citizen: tuple[str, dict[str, str]], wallet: Wallet
) -> None:
    for bad in ("not-a-uuid", f"{wallet.id}%00", wallet.id.upper(), f"x{wallet.id}"):
        token = wallet.token()
        response = client.post(
            f"/v1/devices/{bad}/credential", headers={"Authorization": f"Bearer {token}"}
        )
        assert_problem(response, 422, "invalid_request")
        assert_problem(
            client.delete(f"/v1/devices/{bad}", headers=citizen[1]), 422, "invalid_request"
        )


# -- listing and removal ------------------------------------------------------------------


def test_citizens_list_their_own_devices_newest_first_removed_ones_too(
    client: TestClient, enrol: Enrol, tokens: Tokens, citizen: tuple[str, dict[str, str]]
) -> None:
    phone, tablet = (Wallet(client, citizen[1], Ed25519PrivateKey.generate()) for _ in range(2))
    assert phone.register(label="phone").status_code == 201
    assert tablet.register(label="tablet").status_code == 201
    _, other = enrol()
    Wallet(client, tokens.citizen(other), Ed25519PrivateKey.generate()).register()
    assert client.delete(f"/v1/devices/{phone.id}", headers=citizen[1]).status_code == 204

    response = client.get("/v1/devices", headers=citizen[1])
    assert response.status_code == 200, response.text
    listed = response.json()["devices"]
    assert [d["id"] for d in listed] == [tablet.id, phone.id]
    assert set(listed[0]) == {
        "id",
        "device_id",
        "alg",
        "label",
        "created_at",
        "renewed_at",
        "credential_expires_at",
        "removed_at",
    }
    assert listed[0]["removed_at"] is None and listed[1]["removed_at"].endswith("Z")
    assert listed[0]["device_id"] == tablet.answer["device_id"]
    assert listed[0]["credential_expires_at"] == tablet.answer["credential_expires_at"]
    assert listed[0]["created_at"].endswith("Z") and listed[0]["renewed_at"] is None


def test_a_citizen_without_devices_lists_none(
    client: TestClient, citizen: tuple[str, dict[str, str]]
) -> None:
    assert client.get("/v1/devices", headers=citizen[1]).json() == {"devices": []}


def test_removal_is_idempotent_for_the_owner_and_404_for_anyone_else(
    client: TestClient,
    enrol: Enrol,
    tokens: Tokens,
    citizen: tuple[str, dict[str, str]],
    wallet: Wallet,
) -> None:
    _, other = enrol()
    stranger = tokens.citizen(other)
    assert_problem(
        client.delete(f"/v1/devices/{wallet.id}", headers=stranger), 404, "unknown_device"
    )
    assert wallet.renew().status_code == 200  # the stranger changed nothing

    assert client.delete(f"/v1/devices/{wallet.id}", headers=citizen[1]).status_code == 204
    first = client.get("/v1/devices", headers=citizen[1]).json()["devices"][0]["removed_at"]
    assert client.delete(f"/v1/devices/{wallet.id}", headers=citizen[1]).status_code == 204
    again = client.get("/v1/devices", headers=citizen[1]).json()["devices"][0]["removed_at"]
    assert first == again
    nobody = str(uuid.uuid4())
    assert_problem(
        client.delete(f"/v1/devices/{nobody}", headers=citizen[1]), 404, "unknown_device"
    )


def test_operators_and_strangers_cannot_list_or_remove_devices(
    client: TestClient, tokens: Tokens, wallet: Wallet
) -> None:
    assert_problem(client.get("/v1/devices", headers=tokens.operator()), 403, "not_a_citizen")
    assert_problem(client.get("/v1/devices"), 401, "missing_token")
    assert_problem(
        client.delete(f"/v1/devices/{wallet.id}", headers=tokens.operator()), 403, "not_a_citizen"
    )
    device = {"Authorization": f"Bearer {wallet.token()}"}
    assert_problem(client.get("/v1/devices", headers=device), 401, "invalid_token")


def test_a_citizen_whose_card_was_revoked_still_removes_a_lost_phone(
    client: TestClient, citizen: tuple[str, dict[str, str]], tokens: Tokens, wallet: Wallet
) -> None:
    client.post(
        f"/v1/cards/{citizen[0]}/status", json={"action": "revoke"}, headers=tokens.operator()
    )
    assert client.delete(f"/v1/devices/{wallet.id}", headers=citizen[1]).status_code == 204


# -- audit trail --------------------------------------------------------------------------


def test_each_step_is_audited_with_ids_only(
    client: TestClient, citizen: tuple[str, dict[str, str]], database: Engine
) -> None:
    device = Wallet(client, citizen[1], ec.generate_private_key(ec.SECP256R1()))
    assert device.register(label="王芳的手机").status_code == 201
    registered = dict(device.answer)
    assert device.renew().status_code == 200
    assert client.delete(f"/v1/devices/{device.id}", headers=citizen[1]).status_code == 204
    assert client.delete(f"/v1/devices/{device.id}", headers=citizen[1]).status_code == 204

    with Session(database) as session:
        records = list(
            session.scalars(
                select(AuditRecord)
                .where(AuditRecord.card_id == citizen[0], AuditRecord.action.like("device.%"))
                .order_by(AuditRecord.id)
            )
        )
    assert [(r.actor, r.action) for r in records] == [
        ("citizen", "device.register"),
        ("device", "device.renew"),
        ("citizen", "device.remove"),  # once: the second removal changed nothing
    ]
    assert records[0].detail == {
        "device": device.id,
        "alg": "ES256",
        "expires_at": registered["credential_expires_at"],
    }
    assert records[1].detail == {
        "device": device.id,
        "expires_at": device.answer["credential_expires_at"],
    }
    assert records[2].detail == {"device": device.id}
    # No label, key, device id or credential: nothing the citizen chose or a code carries.
    text = repr([r.detail for r in records])
    assert "王芳" not in text and device.answer["device_id"] not in text
    assert device.answer["credential"] not in text


# -- trust bundles ------------------------------------------------------------------------


@pytest.fixture
def terminal(client: TestClient, tokens: Tokens) -> tuple[str, Ed25519PrivateKey]:
    key = Ed25519PrivateKey.generate()
    body = {"scene": "community", "site": "devices-1", "public_jwk": public_jwk(key)}
    response = client.post("/v1/terminals", json=body, headers=tokens.operator())
    assert response.status_code == 201, response.text
    return response.json()["id"], key


def fetch_bundle(
    client: TestClient, terminal: tuple[str, Ed25519PrivateKey], root: dict[str, Any]
) -> tuple[TrustBundle, str]:
    token = terminal_token(terminal[0], terminal[1])
    response = client.get("/v1/trust-bundle", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200, response.text
    return verify_bundle(response.text, root), response.headers["etag"]


@pytest.fixture
def root_jwk(client: TestClient, service_settings: Settings) -> dict[str, Any]:
    return open_key_store(service_settings.keys_dir).root_public_jwk()


def test_bundles_carry_the_removed_devices_whose_credentials_still_run(
    client: TestClient,
    citizen: tuple[str, dict[str, str]],
    terminal: tuple[str, Ed25519PrivateKey],
    root_jwk: dict[str, Any],
    database: Engine,
) -> None:
    kept, removed, long_gone = (
        Wallet(client, citizen[1], Ed25519PrivateKey.generate()) for _ in range(3)
    )
    for device in (kept, removed, long_gone):
        assert device.register().status_code == 201
    before, etag = fetch_bundle(client, terminal, root_jwk)
    for device in (removed, long_gone):
        assert client.delete(f"/v1/devices/{device.id}", headers=citizen[1]).status_code == 204
    # long_gone's last credential expired more than the margin ago: no terminal can accept it.
    expired = datetime.now(UTC) - timedelta(seconds=REVOKED_MARGIN + 1)
    with Session(database) as session:
        session.execute(
            update(DeviceRecord)
            .where(DeviceRecord.id == long_gone.id)
            .values(credential_expires_at=expired)
        )
        session.commit()

    after, new_etag = fetch_bundle(client, terminal, root_jwk)
    assert bytes.fromhex(removed.answer["device_id"]) in after.revoked_devices
    assert bytes.fromhex(kept.answer["device_id"]) not in after.revoked_devices
    assert bytes.fromhex(long_gone.answer["device_id"]) not in after.revoked_devices
    assert bytes.fromhex(removed.answer["device_id"]) not in before.revoked_devices
    assert new_etag != etag


def test_a_removed_devices_codes_are_refused_as_revoked_after_the_terminals_next_sync(
    client: TestClient,
    citizen: tuple[str, dict[str, str]],
    terminal: tuple[str, Ed25519PrivateKey],
    root_jwk: dict[str, Any],
) -> None:
    device = Wallet(client, citizen[1], ec.generate_private_key(ec.SECP256R1()))
    assert device.register().status_code == 201
    bundle, _ = fetch_bundle(client, terminal, root_jwk)
    trust = bundle.trust(prefix="WH1:", algorithms=[Algorithm.EDDSA, Algorithm.ES256])
    replay = ReplayCache()
    now = int(time.time())

    verdict = verify(device.code(now), trust, now, replay)
    assert (verdict.valid, verdict.reason) == (True, Reason.OK), verdict
    assert verdict.device == bytes.fromhex(device.answer["device_id"])

    assert client.delete(f"/v1/devices/{device.id}", headers=citizen[1]).status_code == 204
    # Until the terminal syncs, it does not know: the code is still admitted offline.
    assert verify(device.code(now), trust, now, replay).valid
    synced, _ = fetch_bundle(client, terminal, root_jwk)
    trust = synced.trust(prefix="WH1:", algorithms=[Algorithm.EDDSA, Algorithm.ES256])
    verdict = verify(device.code(now), trust, now, replay)
    assert (verdict.valid, verdict.reason) == (False, Reason.REVOKED), verdict
    # The card itself is not revoked: its ordinary codes are admitted.
    code = client.post("/v1/codes", headers=citizen[1]).json()["code"]
    assert verify(code, trust, now, replay).valid


def test_a_removal_reaches_a_terminal_by_its_next_status_delta(
    client: TestClient,
    citizen: tuple[str, dict[str, str]],
    terminal: tuple[str, Ed25519PrivateKey],
    root_jwk: dict[str, Any],
    database: Engine,
) -> None:
    """Terminals fetch a status delta every minute and the whole bundle every 15: a removal
    is a new status version, and the delta from the held version carries the device."""
    device, other = (Wallet(client, citizen[1], Ed25519PrivateKey.generate()) for _ in range(2))
    assert device.register().status_code == 201 and other.register().status_code == 201
    held, _ = fetch_bundle(client, terminal, root_jwk)
    assert client.delete(f"/v1/devices/{device.id}", headers=citizen[1]).status_code == 204

    token = terminal_token(terminal[0], terminal[1])
    response = client.get(
        "/v1/trust-bundle/status-delta",
        params={"since": held.version},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert response.status_code == 200, response.text
    delta, signed_at = verify_delta(response.text, root_jwk)
    assert delta.target == held.version + 1
    assert (delta.invalidated, delta.validated) == ((), ())  # the card's bit is untouched
    assert delta.revoked_devices == (bytes.fromhex(device.answer["device_id"]),)
    synced = held.apply_delta(delta, signed_at)
    trust = synced.trust(prefix="WH1:", algorithms=[Algorithm.EDDSA, Algorithm.ES256])
    now = int(time.time())
    assert verify(device.code(now), trust, now).reason is Reason.REVOKED
    assert verify(other.code(now), trust, now).valid
    with Session(database) as session:
        change = session.scalars(select(StatusChange).where(StatusChange.id == delta.target)).one()
    assert (change.status_index, change.invalid) == (None, None)


def test_a_delta_leaves_out_removed_devices_whose_credentials_expired(
    client: TestClient,
    citizen: tuple[str, dict[str, str]],
    terminal: tuple[str, Ed25519PrivateKey],
    root_jwk: dict[str, Any],
    database: Engine,
) -> None:
    held, _ = fetch_bundle(client, terminal, root_jwk)
    device = Wallet(client, citizen[1], Ed25519PrivateKey.generate())
    assert device.register().status_code == 201
    assert client.delete(f"/v1/devices/{device.id}", headers=citizen[1]).status_code == 204
    expired = datetime.now(UTC) - timedelta(seconds=REVOKED_MARGIN + 1)
    with Session(database) as session:
        session.execute(
            update(DeviceRecord)
            .where(DeviceRecord.id == device.id)
            .values(credential_expires_at=expired)
        )
        session.commit()
    token = terminal_token(terminal[0], terminal[1])
    response = client.get(
        "/v1/trust-bundle/status-delta",
        params={"since": held.version},
        headers={"Authorization": f"Bearer {token}"},
    )
    delta, _ = verify_delta(response.text, root_jwk)
    assert delta.target > held.version and delta.revoked_devices == ()


def test_a_removed_devices_codes_are_refused_online_at_once(
    client: TestClient, citizen: tuple[str, dict[str, str]], tokens: Tokens, wallet: Wallet
) -> None:
    now = int(time.time())
    verdict = client.post("/v1/verify", json={"code": wallet.code(now)}, headers=tokens.verifier())
    assert verdict.json()["reason"] == "ok", verdict.text
    assert client.delete(f"/v1/devices/{wallet.id}", headers=citizen[1]).status_code == 204
    verdict = client.post("/v1/verify", json={"code": wallet.code(now)}, headers=tokens.verifier())
    assert (verdict.json()["valid"], verdict.json()["reason"]) == (False, "revoked")


def test_device_routes_answer_a_device_token_signed_with_jwt_tricks_with_401(
    wallet: Wallet,
) -> None:
    unsigned = jwt.encode(
        {"iss": wallet.id, "sub": wallet.id, "aud": DEVICE_AUDIENCE, "jti": "x"},
        key="",
        algorithm="none",
    )
    hmac = jwt.encode(
        {
            "iss": wallet.id,
            "sub": wallet.id,
            "aud": DEVICE_AUDIENCE,
            "iat": int(time.time()),
            "exp": int(time.time()) + 60,
            "jti": "y",
        },
        key=b64url.decode(public_jwk(wallet.key)["x"]),
        algorithm="HS256",
    )
    for token in (unsigned, hmac):
        assert_problem(wallet.renew(token), 401, "invalid_token")
