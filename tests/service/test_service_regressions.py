"""Regression tests for the service review findings fixed in "Service fixes after review".

One test (or a small parametrised group) per finding, named for what a user of the service
sees: concurrent status changes, request body limits, the cached card snapshot, key
rotation, an unreachable identity provider, a service with no signing key, a database whose
schema is behind, card ids that are not UUIDs, import robustness, ``idcode serve`` settings
errors and the privacy of the caller's identity in ``repr``.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx2
import jwt
import psycopg
import pytest
import redis
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi.testclient import TestClient

from idcode.cose import Algorithm
from idcode.keys import keys_from_jwks
from idcode.keystore import open_key_store, rotate
from idcode.service.api.app import create_app
from idcode.service.auth import DEV_IDP_KID, Principal, dev_idp_jwks, dev_idp_key
from idcode.service.cards import CHINA_TIME
from idcode.service.database import upgrade
from idcode.service.settings import Settings
from idcode.testing import random_id_number
from idcode.verifier import Trust, verify
from tests.services import POSTGRES_ADMIN_URL, RUN_ID, Tokens

Enrol = Callable[..., tuple[str, str]]
PROBLEM_JSON = "application/problem+json"
CSV_HEADER = "id_number,name,phone,residency,programmes\n"
BODY_LIMIT = 64 * 1024  # the default request body limit (problems.DEFAULT_BODY_LIMIT)
CSV_FIELD_LIMIT = 131_072  # Python's default csv.field_size_limit()
REQUEST_TIMEOUT = 120  # seconds a thread waits for its request, only so a hang cannot block


def assert_problem(response: httpx2.Response, status: int, reason: str) -> dict[str, Any]:
    """The response is an RFC 9457 problem with this status and machine-readable reason."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM_JSON
    problem: dict[str, Any] = response.json()
    assert problem["type"] == f"urn:idcode:problem:{reason}"
    assert (problem["reason"], problem["status"]) == (reason, status)
    assert problem["title"]
    return problem


@contextmanager
def running(settings: Settings) -> Iterator[TestClient]:
    """A service of its own (its own engine, state and key cache): another replica."""
    with TestClient(create_app(settings)) as replica:
        yield replica


def issued_kid(client: TestClient, settings: Settings, citizen: dict[str, str]) -> str:
    """Ask for a code and return the kid it was signed with, verified with the service's JWKS."""
    response = client.post("/v1/codes", headers=citizen)
    assert response.status_code == 200, response.text
    keys = keys_from_jwks(client.get("/.well-known/jwks.json").json())
    trust = Trust.of(
        keys, prefix=settings.code_prefix, algorithms=[Algorithm.EDDSA, Algorithm.ES256]
    )
    verdict = verify(response.json()["code"], trust, int(time.time()))
    assert verdict.valid and verdict.kid is not None, verdict
    return verdict.kid


def csv_file(rows: list[str]) -> bytes:
    return (CSV_HEADER + "".join(row + "\n" for row in rows)).encode()


def csv_row(id_number: str, name: str = "张秀英") -> str:
    return f"{id_number},{name},13800000001,registered,home_care"


def unique_id_numbers(count: int) -> list[str]:
    numbers: set[str] = set()
    while len(numbers) < count:
        numbers.add(random_id_number())
    return sorted(numbers)


def import_file(
    client: TestClient, tokens: Tokens, body: bytes, media_type: str = "text/csv", **params: str
) -> httpx2.Response:
    return client.post(
        "/v1/cards/import",
        content=body,
        params=params,
        headers={**tokens.operator(), "Content-Type": media_type},
    )


# -- 1. concurrent status changes -------------------------------------------------------------


def race(
    replicas: tuple[TestClient, TestClient],
    card_id: str,
    actions: tuple[str, str],
    headers: dict[str, str],
) -> list[httpx2.Response]:
    """Send the two status changes of ``actions`` at the same moment, one through each
    replica, and return their responses in the same order."""
    barrier = threading.Barrier(2)

    def change(replica: TestClient, action: str) -> httpx2.Response:
        barrier.wait(timeout=REQUEST_TIMEOUT)
        return replica.post(f"/v1/cards/{card_id}/status", json={"action": action}, headers=headers)

    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = [pool.submit(change, r, a) for r, a in zip(replicas, actions, strict=True)]
        return [future.result(timeout=REQUEST_TIMEOUT) for future in futures]


@pytest.mark.parametrize(
    "actions", [("revoke", "reinstate"), ("reinstate", "reinstate")], ids="-vs-".join
)
def test_concurrent_status_changes_of_a_suspended_card_never_undo_each_other(
    service_settings: Settings, tokens: Tokens, enrol: Enrol, actions: tuple[str, str]
) -> None:
    """Each time, the outcome is that of the two changes made one after the other: revoke
    then reinstate leaves the reinstate refused; reinstate then revoke lets both through and
    the card ends revoked; two reinstates let one through. What must never happen is that
    both act on the suspended card they read, so that the later one silently undoes the
    earlier one (a revoked card ending active, two reinstatements)."""
    operator = tokens.operator()
    with running(service_settings) as a, running(service_settings) as b:
        for _ in range(10):
            card_id, id_number = enrol()
            suspended = a.post(
                f"/v1/cards/{card_id}/status", json={"action": "suspend"}, headers=operator
            )
            assert suspended.status_code == 200, suspended.text

            responses = race((a, b), card_id, actions, operator)
            outcome = [
                (r.status_code, r.json().get("status") or r.json()["reason"]) for r in responses
            ]
            winners = [r.json()["status"] for r in responses if r.status_code == 200]
            assert winners, outcome
            for loser in (r for r in responses if r.status_code != 200):
                reason = loser.json().get("reason")
                assert reason in {"concurrent_change", "invalid_transition"}, outcome
                assert_problem(loser, 409, reason)
            if actions == ("revoke", "reinstate"):
                # Both may succeed only as "reinstate, then revoke", which ends revoked.
                final = "revoked" if responses[0].status_code == 200 else "active"
            else:
                assert len(winners) == 1, outcome
                final = "active"
            assert final in winners, outcome

            # The database and the citizen's own view (through the shared card cache) agree
            # with the change that came last.
            stored = a.get(f"/v1/cards/{card_id}", headers=operator)
            assert stored.status_code == 200, stored.text
            assert stored.json()["status"] == final, outcome
            mine = b.get("/v1/me", headers=tokens.citizen(id_number))
            assert mine.status_code == 200, mine.text
            assert mine.json()["status"] == final, outcome


# -- 2. request body limits -------------------------------------------------------------------


@pytest.mark.parametrize("sent", ["with-content-length", "chunked"])
def test_verify_body_over_64_kib_is_refused_with_413_by_its_length_or_as_it_streams(
    client: TestClient, tokens: Tokens, sent: str
) -> None:
    """By Content-Length before anything else, even without a token; a chunked body (no
    length to go by) while it streams in. The chunked one comes with a verifier's token: a
    caller without a valid one is refused before any body is read (test_api_auth)."""
    body = b'{"code": "' + b"A" * BODY_LIMIT + b'"}'
    content: bytes | Iterator[bytes] = body
    headers = {"Content-Type": "application/json"}
    if sent == "chunked":
        content = iter([body[:1000], body[1000:40_000], body[40_000:]])
        headers.update(tokens.verifier())
    response = client.post("/v1/verify", content=content, headers=headers)
    assert_problem(response, 413, "payload_too_large")
    assert ("content-length" in response.request.headers) == (sent == "with-content-length")


def test_import_of_a_1_mib_csv_is_not_refused_as_too_large(
    client: TestClient, tokens: Tokens
) -> None:
    rows = [csv_row(n) for n in unique_id_numbers(20_000)]  # about 1.2 MiB
    body = csv_file(rows)
    assert len(body) >= 1024 * 1024

    response = import_file(client, tokens, body, dry_run="true")
    assert response.status_code == 200, response.text
    report = response.json()
    assert (report["received"], report["rejected"]) == (len(rows), 0)


# -- 3. the cached card snapshot ----------------------------------------------------------------


def test_cached_card_snapshot_does_not_reveal_the_citizens_birthday(
    client: TestClient, service_settings: Settings, tokens: Tokens, enrol: Enrol
) -> None:
    in_five_months = datetime.now(CHINA_TIME).date() + timedelta(days=150)
    birth = date(1980, in_five_months.month, in_five_months.day)  # 1980 has a 29 February
    _, id_number = enrol(id_number=random_id_number(birth))

    response = client.post("/v1/codes", headers=tokens.citizen(id_number))
    assert response.status_code == 200, response.text

    cache = redis.Redis.from_url(service_settings.redis_url or "")
    try:
        keys = list(cache.scan_iter(match=service_settings.redis_prefix + "card:*"))
        assert len(keys) == 1, keys
        raw = cache.get(keys[0])
        ttl = cache.ttl(keys[0])
    finally:
        cache.close()
    assert isinstance(raw, bytes)
    cached = json.loads(raw)
    assert cached["valid_until"] <= int(time.time()) + 300
    birthday = datetime.combine(in_five_months, datetime.min.time(), CHINA_TIME)
    assert cached["valid_until"] < birthday.timestamp() - 100 * 86_400
    assert 0 < ttl <= 300
    assert birth.isoformat() not in raw.decode()
    assert id_number not in raw.decode()


# -- 4. key rotation ----------------------------------------------------------------------------


def test_key_rotation_takes_effect_on_the_running_service_within_a_second(
    client: TestClient, service_settings: Settings, tokens: Tokens, enrol: Enrol
) -> None:
    _, id_number = enrol()
    citizen = tokens.citizen(id_number)
    old_kid = issued_kid(client, service_settings, citizen)

    new_key = rotate(open_key_store(service_settings.keys_dir), int(time.time()), 90)
    assert new_key.kid != old_kid
    time.sleep(1.1)  # the service looks at the key store at most once a second

    assert issued_kid(client, service_settings, citizen) == new_key.kid
    published = {key["kid"] for key in client.get("/.well-known/jwks.json").json()["keys"]}
    assert {old_kid, new_key.kid} <= published


# -- 5. the identity provider is unreachable ----------------------------------------------------


def test_unreachable_identity_provider_is_503_idp_unavailable_not_401(
    make_settings: Callable[..., Settings], postgres_url: str, redis_url: str
) -> None:
    settings = make_settings(
        database_url=postgres_url,
        redis_url=redis_url,
        oidc_jwks_url="http://127.0.0.1:9/jwks.json",  # the discard port: nothing listens
        oidc_issuer="urn:test-idp",
    )
    now = int(time.time())
    claims = {
        "iss": "urn:test-idp",
        "aud": settings.oidc_audience,
        "sub": "citizen",
        "iat": now,
        "exp": now + 600,
        settings.oidc_id_number_claim: random_id_number(),
    }
    token = jwt.encode(
        claims, Ed25519PrivateKey.generate(), algorithm="EdDSA", headers={"kid": "idp-1"}
    )
    with running(settings) as service:
        response = service.post("/v1/codes", headers={"Authorization": f"Bearer {token}"})
    assert_problem(response, 503, "idp_unavailable")
    assert response.headers["retry-after"].isdigit()
    assert "www-authenticate" not in response.headers


# -- 6. no issuer key may sign --------------------------------------------------------------


def test_service_with_only_an_expired_issuer_key_answers_503_no_signing_key_and_is_not_ready(
    make_settings: Callable[..., Settings], postgres_url: str, redis_url: str, tmp_path: Path
) -> None:
    keys_dir = tmp_path / "production-keys"
    store = open_key_store(keys_dir)
    store.create_root_key()
    past = int(time.time()) - 86_400
    store.create_issuer_key(Algorithm.EDDSA, past, past + 60)

    idp_dir = tmp_path / "city-idp"
    jwks_file = tmp_path / "city-idp-jwks.json"
    jwks_file.write_text(json.dumps(dev_idp_jwks(idp_dir)))
    settings = make_settings(
        environment="production",  # production creates no key on start-up
        keys_dir=keys_dir,
        database_url=postgres_url,
        redis_url=redis_url,
        pii_encryption_key=base64.b64encode(secrets.token_bytes(32)).decode(),
        pii_hash_key=base64.b64encode(secrets.token_bytes(32)).decode(),
        oidc_issuer="urn:test-idp",
        oidc_jwks_file=jwks_file,
        demo_data=False,
    )

    def bearer(**claims: Any) -> dict[str, str]:
        now = int(time.time())
        claims |= {
            "iss": "urn:test-idp",
            "aud": settings.oidc_audience,
            "iat": now,
            "exp": now + 600,
        }
        token = jwt.encode(
            claims, dev_idp_key(idp_dir), algorithm="EdDSA", headers={"kid": DEV_IDP_KID}
        )
        return {"Authorization": f"Bearer {token}"}

    id_number = random_id_number()
    with running(settings) as service:
        enrolled = service.post(
            "/v1/cards",
            json={"id_number": id_number, "name": "测试"},
            headers=bearer(sub="op", roles=[settings.operator_role]),
        )
        assert enrolled.status_code == 201, enrolled.text

        response = service.post("/v1/codes", headers=bearer(sub="citizen", id_number=id_number))
        assert_problem(response, 503, "no_signing_key")
        assert response.headers["retry-after"].isdigit()

        ready = service.get("/readyz")
    assert ready.status_code == 503, ready.text
    checks = ready.json()["checks"]
    assert (checks["database"], checks["redis"]) == ("ok", "ok")
    assert "idcode keys rotate" in checks["signing_key"]


# -- 7. the schema is behind --------------------------------------------------------------------


@pytest.fixture
def empty_database() -> Iterator[str]:
    """A PostgreSQL database with no tables at all (no migrations run)."""
    name = f"idcode_test_empty_{RUN_ID}_{secrets.token_hex(3)}"
    with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True, connect_timeout=5) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield POSTGRES_ADMIN_URL.rsplit("/", 1)[0] + "/" + name
        finally:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_readiness_is_503_until_the_database_schema_is_upgraded(
    make_settings: Callable[..., Settings], empty_database: str, redis_url: str
) -> None:
    settings = make_settings(database_url=empty_database, redis_url=redis_url)
    with running(settings) as service:
        behind = service.get("/readyz")
        assert behind.status_code == 503, behind.text
        assert "idcode db upgrade" in behind.json()["checks"]["database"]

        upgrade(settings.sqlalchemy_url)
        ready = service.get("/readyz")
        assert ready.status_code == 200, ready.text
        assert ready.json()["checks"]["database"] == "ok"


# -- 8. card ids that are not UUIDs -------------------------------------------------------------

# As they appear in the request path (percent-encoded where a client would encode them).
NOT_UUIDS = {
    "nul": "%00",
    "letter": "x",
    "dot-dot": "%2E%2E",
    "not-utf-8": "%FF",
    "sql": "1%27%20OR%20%271%27%3D%271",
    "almost-a-uuid": "00000000-0000-0000-0000-00000000000g",
    "long": "a" * 5000,
}


def card_request(client: TestClient, tokens: Tokens, kind: str, card_id: str) -> httpx2.Response:
    if kind == "read":
        return client.get(f"/v1/cards/{card_id}", headers=tokens.operator())
    return client.post(
        f"/v1/cards/{card_id}/status", json={"action": "suspend"}, headers=tokens.operator()
    )


@pytest.mark.parametrize("card_id", NOT_UUIDS.values(), ids=list(NOT_UUIDS))
@pytest.mark.parametrize("kind", ["read", "change-status"])
def test_card_id_that_is_not_a_uuid_is_a_422_problem(
    client: TestClient, tokens: Tokens, card_id: str, kind: str
) -> None:
    problem = assert_problem(card_request(client, tokens, kind, card_id), 422, "invalid_request")
    assert problem["errors"][0]["loc"] == ["path", "card_id"]


@pytest.mark.parametrize("kind", ["read", "change-status"])
def test_card_id_with_a_path_separator_is_a_404_problem_not_a_500(
    client: TestClient, tokens: Tokens, kind: str
) -> None:
    # "../etc" decodes to more than one path segment, so it names no card route at all.
    assert_problem(card_request(client, tokens, kind, "..%2Fetc"), 404, "not_found")


# -- 9. import robustness -----------------------------------------------------------------------


def test_csv_row_with_a_field_over_the_csv_limit_is_a_rejected_row_and_the_others_import(
    client: TestClient, tokens: Tokens
) -> None:
    first, long, last = unique_id_numbers(3)
    body = csv_file([csv_row(first), csv_row(long, "x" * (CSV_FIELD_LIMIT + 1)), csv_row(last)])

    response = import_file(client, tokens, body)
    assert response.status_code == 200, response.text
    report = response.json()
    assert (report["received"], report["imported"], report["rejected"]) == (3, 2, 1)
    assert [(r["row"], r["field"]) for r in report["rejections"]] == [(2, "row")]


def test_json_lines_row_nested_deep_or_over_64_kib_is_a_rejected_row_and_the_others_import(
    client: TestClient, tokens: Tokens
) -> None:
    good = unique_id_numbers(2)
    lines = [
        json.dumps({"id_number": good[0], "name": "测试"}),
        "[" * 30_000 + "]" * 30_000,  # deeper than the JSON parser recurses, under 64 KiB
        "[" * 100_000 + "]" * 100_000,  # the brief's 100000 deep: also a too-long line
        json.dumps({"id_number": random_id_number(), "name": "测", "phone": "1" * 70 * 1024}),
        json.dumps({"id_number": good[1], "name": "测试"}),
    ]
    body = ("\n".join(lines) + "\n").encode()

    response = import_file(client, tokens, body, "application/x-ndjson")
    assert response.status_code == 200, response.text
    report = response.json()
    assert (report["received"], report["imported"], report["rejected"]) == (5, 2, 3)
    assert [(r["row"], r["field"]) for r in report["rejections"]] == [
        (2, "row"),
        (3, "row"),
        (4, "row"),
    ]


def test_ten_concurrent_imports_of_one_file_enrol_each_card_exactly_once(
    client: TestClient, tokens: Tokens
) -> None:
    id_numbers = unique_id_numbers(20)
    body = csv_file([csv_row(n) for n in id_numbers])
    barrier = threading.Barrier(10)
    operator = tokens.operator()

    def run_import() -> httpx2.Response:
        barrier.wait(timeout=REQUEST_TIMEOUT)
        return client.post(
            "/v1/cards/import",
            content=body,
            headers={**operator, "Content-Type": "text/csv"},
        )

    with ThreadPoolExecutor(max_workers=10) as pool:
        futures = [pool.submit(run_import) for _ in range(10)]
        responses = [future.result(timeout=REQUEST_TIMEOUT) for future in futures]

    assert [r.status_code for r in responses] == [200] * 10, [r.text for r in responses]
    reports = [r.json() for r in responses]
    assert sum(report["imported"] for report in reports) == 20
    # The same rows, enrolled meanwhile by another import, are unchanged: no row is an error.
    assert sum(report["unchanged"] for report in reports) == 9 * 20
    assert sum(report["rejected"] for report in reports) == 0
    # And each ID number has exactly one card: a second enrolment of any of them is refused.
    again = client.post(
        "/v1/cards", json={"id_number": id_numbers[7], "name": "测试"}, headers=operator
    )
    assert_problem(again, 409, "already_enrolled")


# -- 10. settings errors at the command line ----------------------------------------------------


def run_idcode(tmp_path: Path, *args: str, **settings: str) -> subprocess.CompletedProcess[str]:
    """``idcode`` with no IDCODE_* settings but a private key store and data dir (and
    ``settings``), in its own directory."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("IDCODE_")}
    env |= {
        "PYTHONIOENCODING": "utf-8",
        "IDCODE_KEYS_DIR": str(tmp_path / "keys"),
        "IDCODE_DATA_DIR": str(tmp_path / "data"),
        **{f"IDCODE_{name.upper()}": value for name, value in settings.items()},
    }
    return subprocess.run(
        [sys.executable, "-m", "idcode.cli", *args],
        capture_output=True,
        text=True,
        encoding="utf-8",
        cwd=tmp_path,
        env=env,
        timeout=120,
        check=False,
    )


def test_serve_with_two_workers_and_no_redis_exits_2_naming_idcode_redis_url(
    tmp_path: Path,
) -> None:
    # A port already taken: should serve start after all, it stops at once instead of hanging.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        result = run_idcode(
            tmp_path, "serve", "--workers", "2", "--host", "127.0.0.1", "--port", port
        )
    assert result.returncode == 2, result.stderr
    assert "IDCODE_REDIS_URL" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    "setting",
    [
        {"oidc_algorithms": "EdDSA"},  # a list setting must be JSON: ["EdDSA"]
        {"database_url": "mysql://root@127.0.0.1/idcode"},
    ],
    ids=["algorithms-not-json", "mysql-database"],
)
def test_bad_setting_exits_2_with_bad_settings_and_no_traceback(
    tmp_path: Path, setting: dict[str, str]
) -> None:
    result = run_idcode(tmp_path, "db", "upgrade", **setting)
    assert result.returncode == 2, result.stderr
    assert "idcode: error: bad settings" in result.stderr
    assert "Traceback" not in result.stderr


# -- 11. privacy of the caller --------------------------------------------------------------


def test_repr_of_a_citizen_principal_does_not_show_the_id_number() -> None:
    id_number = random_id_number()
    principal = Principal(subject="citizen-1", id_number=id_number, roles=frozenset())
    assert id_number not in repr(principal)
    assert id_number not in str(principal)
    assert "citizen-1" in repr(principal)
