"""Fault injection: the service with a TCP proxy of ours (tests/faultproxy.py) between it and
PostgreSQL or Redis, cutting, resetting and delaying connections while requests are made.

Redis down: issuance goes on under per-process limits, /readyz says "degraded", online
verification answers 503, and nothing is a 500; when Redis returns the service goes back
to it with no stale card status. PostgreSQL down: 503 problem+json with Retry-After, and the
first request after it returns succeeds.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx2
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi.testclient import TestClient

from idcode.service.api.app import create_app
from idcode.service.settings import Settings
from idcode.testing import random_id_number
from tests.faultproxy import FaultProxy
from tests.service.test_identification import Party, consent_code, identify, public_jwk
from tests.services import REDIS_RUN_PREFIX, Tokens

RATE_LIMIT = 3
ROUNDS = 4
MINUTE_MARGIN_SECONDS = 10


def _through(url: str, proxy: FaultProxy) -> str:
    """``url`` with its host and port replaced by the proxy's."""
    parts = urlsplit(url)
    user = f"{parts.username}@" if parts.username else ""
    if parts.password:
        user = f"{parts.username}:{parts.password}@"
    return urlunsplit(parts._replace(netloc=f"{user}127.0.0.1:{proxy.port}"))


def _address(url: str, default_port: int) -> tuple[str, int]:
    parts = urlsplit(url)
    return parts.hostname or "127.0.0.1", parts.port or default_port


@dataclass
class Faulty:
    client: TestClient
    tokens: Tokens
    redis: FaultProxy
    postgres: FaultProxy

    def enrol(self) -> tuple[str, str]:
        id_number = random_id_number()
        response = self.client.post(
            "/v1/cards",
            json={"id_number": id_number, "name": "测试"},
            headers=self.tokens.operator(),
        )
        assert response.status_code == 201, response.text
        card_id: str = response.json()["id"]
        return card_id, id_number

    def code(self, id_number: str) -> httpx2.Response:
        return self.client.post("/v1/codes", headers=self.tokens.citizen(id_number))


@pytest.fixture
def faulty(
    make_settings: Callable[..., Settings], postgres_url: str, redis_url: str
) -> Iterator[Faulty]:
    with (
        FaultProxy(_address(redis_url, 6379)) as redis_proxy,
        FaultProxy(_address(postgres_url, 5432)) as postgres_proxy,
    ):
        settings = make_settings(
            database_url=_through(postgres_url, postgres_proxy),
            redis_url=_through(redis_url, redis_proxy),
            rate_limit_per_minute=RATE_LIMIT,
        )
        with TestClient(create_app(settings)) as client:
            yield Faulty(client, Tokens(settings), redis_proxy, postgres_proxy)


def _down(proxy: FaultProxy) -> None:
    proxy.refuse = True
    proxy.cut_all()


def _up(proxy: FaultProxy) -> None:
    proxy.refuse = False


def _problem(response: httpx2.Response, status: int, reason: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = response.json()
    assert body["reason"] == reason, body
    return body


def _fresh_minute() -> None:
    """Rate limits count per calendar minute: leave enough of this one for the checks."""
    left = 60 - time.time() % 60
    if left < MINUTE_MARGIN_SECONDS:
        time.sleep(left + 0.05)


# -- Redis ---------------------------------------------------------------------------------


def test_with_redis_down_codes_are_issued_under_per_process_limits_and_readyz_is_degraded(
    faulty: Faulty,
) -> None:
    _, id_number = faulty.enrol()
    _fresh_minute()
    _down(faulty.redis)

    issued = [faulty.code(id_number) for _ in range(RATE_LIMIT)]
    over = faulty.code(id_number)
    ready = faulty.client.get("/readyz")

    assert [r.status_code for r in issued] == [200] * RATE_LIMIT, issued[-1].text
    _problem(over, 429, "rate_limited")
    assert over.headers["retry-after"].isdigit()
    assert ready.status_code == 200
    assert ready.json()["status"] == "degraded"
    assert ready.json()["checks"]["redis"].startswith("unreachable")


def test_with_redis_down_online_verification_is_503_not_a_per_process_replay_check(
    faulty: Faulty,
) -> None:
    _, id_number = faulty.enrol()
    code = faulty.code(id_number).json()["code"]
    _down(faulty.redis)

    response = faulty.client.post(
        "/v1/verify", json={"code": code}, headers=faulty.tokens.verifier()
    )

    body = _problem(response, 503, "state_unavailable")
    assert response.headers["retry-after"] == "5", body


def test_status_change_during_a_redis_outage_holds_everywhere_once_redis_returns(
    faulty: Faulty,
) -> None:
    card_id, id_number = faulty.enrol()
    assert faulty.code(id_number).status_code == 200  # its active snapshot is now cached
    _down(faulty.redis)

    suspended = faulty.client.post(
        f"/v1/cards/{card_id}/status",
        json={"action": "suspend"},
        headers=faulty.tokens.operator(),
    )
    during = faulty.code(id_number)  # degraded: read from the database, not a stale cache
    _up(faulty.redis)
    ready = faulty.client.get("/readyz")  # Redis answers again: back on shared state
    after = faulty.code(id_number)

    assert suspended.status_code == 200, suspended.text
    _problem(during, 403, "card_suspended")
    assert ready.json()["status"] == "ready", ready.text
    _problem(after, 403, "card_suspended")


def test_redis_slower_than_its_timeout_degrades_instead_of_failing(faulty: Faulty) -> None:
    _, id_number = faulty.enrol()
    faulty.redis.delay = 3.0  # the client gives Redis 2 s
    faulty.redis.cut_all()  # new connections, each answer late

    response = faulty.code(id_number)

    assert response.status_code == 200, response.text
    faulty.redis.delay = 0.0


def test_terminal_traffic_and_issuance_never_answer_500_while_redis_flaps(
    faulty: Faulty,
) -> None:
    _, id_number = faulty.enrol()
    statuses = []
    for round_ in range(6):
        (_down if round_ % 2 == 0 else _up)(faulty.redis)
        statuses += [faulty.code(id_number).status_code for _ in range(2)]
        statuses.append(faulty.client.get("/readyz").status_code)
    _up(faulty.redis)

    assert 500 not in statuses
    assert set(statuses) <= {200, 429}


# -- PostgreSQL ------------------------------------------------------------------------------


def test_with_postgres_down_requests_get_503_with_retry_after(faulty: Faulty) -> None:
    card_id, cached = faulty.enrol()
    assert faulty.code(cached).status_code == 200  # its card is now in the shared cache
    _, uncached = faulty.enrol()
    _down(faulty.postgres)

    enrol = faulty.client.post(
        "/v1/cards",
        json={"id_number": random_id_number(), "name": "测试"},
        headers=faulty.tokens.operator(),
    )
    read = faulty.client.get(f"/v1/cards/{card_id}", headers=faulty.tokens.operator())
    fresh_citizen = faulty.code(uncached)
    ready = faulty.client.get("/readyz")
    # A card already in the shared cache can still get codes: its status cannot change
    # while the database (where every status change is made) is away.
    cached_citizen = faulty.code(cached)

    for response in (enrol, read, fresh_citizen):
        _problem(response, 503, "database_unavailable")
        assert response.headers["retry-after"] == "5"
    assert ready.status_code == 503
    assert ready.json()["checks"]["database"].startswith("unreachable")
    assert cached_citizen.status_code == 200


def test_first_request_after_postgres_returns_succeeds(faulty: Faulty) -> None:
    faulty.enrol()  # the pool now holds live connections
    _down(faulty.postgres)
    down = faulty.client.post(
        "/v1/cards",
        json={"id_number": random_id_number(), "name": "测试"},
        headers=faulty.tokens.operator(),
    )
    _up(faulty.postgres)

    back = faulty.client.post(
        "/v1/cards",
        json={"id_number": random_id_number(), "name": "测试"},
        headers=faulty.tokens.operator(),
    )

    _problem(down, 503, "database_unavailable")
    assert back.status_code == 201, back.text


def test_database_connection_reset_mid_request_is_503_or_done_never_500(
    faulty: Faulty,
) -> None:
    faulty.enrol()
    faulty.postgres.delay = 0.05  # every database answer late: requests are in flight
    faulty.postgres.cut_all()
    outcomes: list[int] = []

    def enrol_one() -> None:
        response = faulty.client.post(
            "/v1/cards",
            json={"id_number": random_id_number(), "name": "测试"},
            headers=faulty.tokens.operator(),
        )
        outcomes.append(response.status_code)

    for _ in range(ROUNDS):
        worker = threading.Thread(target=enrol_one)
        worker.start()
        time.sleep(0.1)
        faulty.postgres.cut_all()  # reset whatever is in flight
        worker.join(timeout=60)
    faulty.postgres.delay = 0.0
    after = faulty.client.post(
        "/v1/cards",
        json={"id_number": random_id_number(), "name": "测试"},
        headers=faulty.tokens.operator(),
    )

    assert len(outcomes) == ROUNDS
    assert set(outcomes) <= {201, 503}, outcomes
    assert 503 in outcomes  # a reset really hit a request
    assert after.status_code == 201, after.text


def test_more_concurrent_redis_commands_than_pool_connections_wait_instead_of_failing(
    redis_url: str,
) -> None:
    """Found by bench/soak.py: a command beyond the pool's connections failed at once, which
    FailoverState took for Redis being down (it dropped every cached card on "recovery", again
    and again); a blocking pool makes the command wait its turn."""
    import asyncio
    import secrets

    from idcode.service.state import REDIS_CONNECTIONS, RedisState

    async def burst() -> list[BaseException]:
        prefix = f"{REDIS_RUN_PREFIX}pool-{secrets.token_hex(3)}:"
        state = RedisState(redis_url, prefix)
        try:
            answers = await asyncio.gather(
                *(
                    state.admit(secrets.token_bytes(32), 1_000_000, time.time())
                    for _ in range(3 * REDIS_CONNECTIONS)
                ),
                return_exceptions=True,
            )
        finally:
            await state.close()
        return [answer for answer in answers if isinstance(answer, BaseException)]

    assert asyncio.run(burst()) == []


def test_a_ping_failing_as_a_programming_error_replaces_the_connection(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """psycopg can fail a ping on a connection the server dropped with a ProgrammingError
    (restoring autocommit on a half-broken connection) rather than an OperationalError; seen
    as a 500 in test_with_postgres_down_requests_get_503_with_retry_after under load. The pool
    must replace that connection, as it does for a disconnect, not raise."""
    import psycopg
    from sqlalchemy import text

    from idcode.service.database import make_engine
    from idcode.service.settings import Settings

    engine = make_engine(Settings(database_url=postgres_url).sqlalchemy_url)
    with engine.connect() as connection:
        connection.execute(text("SELECT 1"))  # one pooled connection now
    real_ping = engine.dialect.do_ping
    failures: list[Any] = []

    def ping_once_half_broken(dbapi_connection: Any) -> bool:
        if not failures:
            failures.append(dbapi_connection)
            raise psycopg.ProgrammingError(
                "can't change 'autocommit' now: connection in transaction status UNKNOWN"
            )
        return bool(real_ping(dbapi_connection))

    monkeypatch.setattr(engine.dialect, "do_ping", ping_once_half_broken)
    with engine.connect() as connection:
        assert connection.execute(text("SELECT 1")).scalar() == 1
    assert len(failures) == 1  # the pooled connection was pinged, failed, and replaced
    engine.dispose()


def test_an_identification_while_postgres_is_down_is_503_and_discloses_nothing(
    faulty: Faulty,
) -> None:
    """The recorder's group fails as a whole: its requests get 503, nothing is spent or
    recorded, and its thread goes on recording once PostgreSQL is back."""
    client, tokens = faulty.client, faulty.tokens
    _, id_number = faulty.enrol()
    key = Ed25519PrivateKey.generate()
    registered = client.post(
        "/v1/relying-parties",
        json={
            "name": "service hall",
            "sector": "government",
            "purposes": ["registration"],
            "attributes": ["name"],
            "public_jwk": public_jwk(key),
        },
        headers=tokens.operator(),
    )
    assert registered.status_code == 201, registered.text
    party = Party(registered.json()["id"], key)
    first = consent_code(client, tokens, id_number, party, ["name"])
    assert identify(client, party, first).status_code == 200  # the party is now cached
    code = consent_code(client, tokens, id_number, party, ["name"])
    _down(faulty.postgres)
    down = identify(client, party, code)
    _up(faulty.postgres)
    back = identify(client, party, code)

    body = _problem(down, 503, "database_unavailable")
    assert "attributes" not in body and "subject" not in body
    assert back.status_code == 200, back.text
    audit = client.get(
        f"/v1/relying-parties/{party.id}/disclosures", headers=tokens.operator()
    ).json()
    # The test database is shared: other tests list the active parties.
    client.post(f"/v1/relying-parties/{party.id}/deactivate", headers=tokens.operator())
    assert len(audit) == 2
