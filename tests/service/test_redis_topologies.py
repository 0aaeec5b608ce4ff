"""The shared state on a real three-master Redis Cluster and on a real Sentinel pair (a
master, a replica, two sentinels), started from this machine's redis-server by
tests/redisnodes.py: every key a script uses together in one slot, the service end to end
through each, and a master that goes away (degraded, never a 500, back by itself).
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx2
import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from idcode.config import describe_settings_error
from idcode.service import reachable
from idcode.service.api.app import create_app
from idcode.service.cards import CardSnapshot
from idcode.service.settings import Settings
from idcode.service.state import REDIS_CONNECTIONS, RedisState
from idcode.testing import random_id_number
from tests.redisnodes import Cluster, SentinelPair, _free_port
from tests.services import Tokens

RECOVERY_SECONDS = 20.0  # the most a failover plus the service's return may take


def _snapshot(version: int = 1, status: str = "active") -> CardSnapshot:
    return CardSnapshot(
        card_id=secrets.token_hex(8),
        pseudonym=secrets.token_bytes(16),
        status_index=secrets.randbelow(1000),
        status=status,
        residency=1,
        programmes=0,
        age_band=2,
        valid_until=int(time.time()) + 300,
        version=version,
    )


def _keyslot(cluster: Cluster, key: str) -> int:
    """The slot the server (not the client library) puts ``key`` in."""
    with cluster.masters[0].client() as client:
        return int(client.cluster("KEYSLOT", key))


def _owner(slot: int) -> int:
    """Which of the three masters serves ``slot`` (start_cluster gives each a third)."""
    return min(slot // (16384 // 3), 2)


def _prefix() -> str:
    return f"idcode-test-{secrets.token_hex(4)}:"


# -- the state on the cluster ----------------------------------------------------------------


def test_a_citizens_card_and_rate_keys_share_a_slot_and_admit_runs_on_every_master(
    redis_cluster: Cluster,
) -> None:
    citizens = [secrets.token_bytes(32) for _ in range(24)]

    Answer = tuple[CardSnapshot | None, int | None, int | None]

    async def run() -> tuple[list[Answer], list[tuple[str, str]]]:
        state = RedisState(redis_cluster.url, _prefix())
        try:
            answers: list[Answer] = []
            now = time.time()
            window = int(now // 60)
            keys = [(state._card_key(c), state._rate_key(c, window)) for c in citizens]
            for citizen in citizens:
                card = _snapshot()
                await state.cache_card(citizen, card, int(now))
                cached, first = await state.admit(citizen, 2, now)
                assert cached == card
                await state.admit(citizen, 2, now)
                _, third = await state.admit(citizen, 2, now)
                answers.append((cached, first, third))
            return answers, keys
        finally:
            await state.close()

    answers, keys = asyncio.run(run())
    slots = [(_keyslot(redis_cluster, card), _keyslot(redis_cluster, rate)) for card, rate in keys]

    assert all(card_slot == rate_slot for card_slot, rate_slot in slots)
    assert {_owner(card_slot) for card_slot, _ in slots} == {0, 1, 2}
    assert all(first is None and third is not None and third >= 1 for _, first, third in answers)


def test_replay_ids_issued_tallies_and_dropping_the_cache_work_across_masters(
    redis_cluster: Cluster,
) -> None:
    hours = list(range(490_000, 490_012))
    # More than a pool's connections, in about as many slots (the UNLINK goes per slot).
    citizens = [secrets.token_bytes(32) for _ in range(3 * REDIS_CONNECTIONS)]
    code_id = secrets.token_bytes(16)
    prefix = _prefix()

    async def run() -> tuple[bool, bool, list[int], int, list[CardSnapshot | None]]:
        state = RedisState(redis_cluster.url, prefix)
        try:
            now = int(time.time())
            first = await state.seen_before(code_id, now + 60, now)
            again = await state.seen_before(code_id, now + 60, now)
            await state.add_issued({hour: hour % 7 + 1 for hour in hours})
            await state.add_issued({hours[0]: 10})
            tallies = await state.issued(hours)
            for citizen in citizens:
                await state.cache_card(citizen, _snapshot(), now)
            dropped = await state.forget_cards()
            after = [(await state.admit(citizen, 0, now))[0] for citizen in citizens]
            return first, again, tallies, dropped, after
        finally:
            await state.close()

    first, again, tallies, dropped, after = asyncio.run(run())

    issued_slots = {_keyslot(redis_cluster, f"{prefix}issued:{hour}") for hour in hours}
    assert len({_owner(slot) for slot in issued_slots}) > 1  # not one node
    assert (first, again) == (False, True)
    assert tallies == [hour % 7 + 1 + (10 if hour == hours[0] else 0) for hour in hours]
    assert dropped == len(citizens)  # SCAN visited every master
    assert after == [None] * len(citizens)


@pytest.mark.parametrize("which", ["cluster", "sentinel"])
def test_more_concurrent_commands_than_connections_wait_their_turn_instead_of_failing(
    which: str, request: pytest.FixtureRequest
) -> None:
    """Those pools refuse a command beyond their connections (one server's blocks): that
    must not look like Redis being away (test_faults.py has the same for one server)."""
    topology: Cluster | SentinelPair = request.getfixturevalue(
        "redis_cluster" if which == "cluster" else "redis_sentinels"
    )

    async def burst() -> list[BaseException]:
        state = RedisState(topology.url, _prefix())
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


# -- the service through each topology -------------------------------------------------------


@pytest.fixture(params=["cluster", "sentinel"])
def topology(
    request: pytest.FixtureRequest, redis_cluster: Cluster, redis_sentinels: SentinelPair
) -> Cluster | SentinelPair:
    return redis_cluster if request.param == "cluster" else redis_sentinels


@pytest.fixture
def service(
    topology: Cluster | SentinelPair,
    make_settings: Callable[..., Settings],
    postgres_url: str,
) -> Iterator[tuple[TestClient, Tokens]]:
    settings = make_settings(database_url=postgres_url, redis_url=topology.url)
    with TestClient(create_app(settings)) as client:
        yield client, Tokens(settings)


def _enrol(client: TestClient, tokens: Tokens) -> str:
    id_number = random_id_number()
    response = client.post(
        "/v1/cards", json={"id_number": id_number, "name": "测试"}, headers=tokens.operator()
    )
    assert response.status_code == 201, response.text
    return id_number


def _verify(client: TestClient, tokens: Tokens, code: str) -> httpx2.Response:
    return client.post("/v1/verify", json={"code": code}, headers=tokens.verifier())


def _verdict(response: httpx2.Response) -> tuple[bool, str]:
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body["valid"], body["reason"]


def test_the_service_issues_verifies_and_refuses_a_replay_through_each_topology(
    service: tuple[TestClient, Tokens], topology: Cluster | SentinelPair
) -> None:
    client, tokens = service
    id_number = _enrol(client, tokens)

    ready = client.get("/readyz")
    code = client.post("/v1/codes", headers=tokens.citizen(id_number))
    first = _verify(client, tokens, code.json()["code"])
    second = _verify(client, tokens, code.json()["code"])

    assert ready.json()["status"] == "ready", ready.text
    assert code.status_code == 200, code.text
    assert _verdict(first) == (True, "ok")
    assert _verdict(second) == (False, "replayed")
    assert reachable.reachable("redis", topology.url) is None


def _until_ready(client: TestClient, statuses: list[int]) -> dict[str, Any]:
    """Poll /readyz until it is "ready" again, keeping every status code it answered."""
    deadline = time.monotonic() + RECOVERY_SECONDS
    while True:
        response = client.get("/readyz")
        statuses.append(response.status_code)
        body: dict[str, Any] = response.json()
        if body["status"] == "ready" or time.monotonic() > deadline:
            return body
        time.sleep(0.1)


def _outage(client: TestClient, tokens: Tokens, id_number: str) -> tuple[list[int], str]:
    """Requests while the master is away: their status codes, and /readyz's status."""
    statuses = [client.post("/v1/codes", headers=tokens.citizen(id_number)).status_code]
    code = client.post("/v1/codes", headers=tokens.citizen(id_number))
    statuses += [code.status_code, _verify(client, tokens, code.json()["code"]).status_code]
    ready = client.get("/readyz")
    statuses.append(ready.status_code)
    return statuses, ready.json()["status"]


def test_a_cluster_master_going_away_degrades_without_500_and_the_service_returns(
    redis_cluster: Cluster, make_settings: Callable[..., Settings], postgres_url: str
) -> None:
    settings = make_settings(database_url=postgres_url, redis_url=redis_cluster.url)
    with TestClient(create_app(settings)) as client:
        tokens = Tokens(settings)
        id_number = _enrol(client, tokens)
        assert client.get("/readyz").json()["status"] == "ready"
        master = redis_cluster.masters[2]  # not one of the URL's seed nodes

        master.kill()
        try:
            during, readiness = _outage(client, tokens, id_number)
        finally:
            master.start()
        redis_cluster.wait_healthy(RECOVERY_SECONDS)
        after: list[int] = []
        back = _until_ready(client, after)
        code = client.post("/v1/codes", headers=tokens.citizen(id_number))
        verdict = _verify(client, tokens, code.json()["code"])

    assert set(during) <= {200, 503}, during  # 503 only for online verification
    assert during[:2] == [200, 200] and during[-1] == 200
    assert readiness == "degraded"
    assert 500 not in after
    assert back["status"] == "ready", back
    assert _verdict(verdict) == (True, "ok")  # on shared state again: not 503


def test_the_sentinel_master_going_away_degrades_without_500_until_the_replica_is_promoted(
    redis_sentinels: SentinelPair, make_settings: Callable[..., Settings], postgres_url: str
) -> None:
    settings = make_settings(database_url=postgres_url, redis_url=redis_sentinels.url)
    with TestClient(create_app(settings)) as client:
        tokens = Tokens(settings)
        id_number = _enrol(client, tokens)
        assert client.get("/readyz").json()["status"] == "ready"
        master = redis_sentinels.master()

        master.kill()
        during, readiness = _outage(client, tokens, id_number)
        after: list[int] = []
        back = _until_ready(client, after)
        promoted = redis_sentinels.master_port()
        code = client.post("/v1/codes", headers=tokens.citizen(id_number))
        first = _verify(client, tokens, code.json()["code"])
        second = _verify(client, tokens, code.json()["code"])

    assert set(during) <= {200, 503}, during
    assert during[:2] == [200, 200] and during[-1] == 200
    assert readiness == "degraded"
    assert 500 not in after
    assert back["status"] == "ready", back
    assert promoted != master.port
    assert (_verdict(first), _verdict(second)) == ((True, "ok"), (False, "replayed"))


def test_a_cluster_none_of_whose_nodes_answers_is_degraded_mode_not_a_500(
    make_settings: Callable[..., Settings], postgres_url: str
) -> None:
    """redis-py raises RedisClusterUnreachableError here, which is no RedisError."""
    url = f"redis+cluster://127.0.0.1:{_free_port()},127.0.0.1:{_free_port()}"
    settings = make_settings(database_url=postgres_url, redis_url=url)
    with TestClient(create_app(settings)) as client:
        tokens = Tokens(settings)
        code = client.post("/v1/codes", headers=tokens.citizen(_enrol(client, tokens)))
        verified = _verify(client, tokens, code.json()["code"])
        ready = client.get("/readyz")

    assert code.status_code == 200, code.text
    assert verified.status_code == 503, verified.text
    assert verified.json()["reason"] == "state_unavailable"
    assert ready.status_code == 200 and ready.json()["status"] == "degraded", ready.text
    assert "RedisClusterUnreachableError" in ready.json()["checks"]["redis"]


# -- configuration ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("redis+cluster://u:hunter2@a:x", "node a: port 'x' is not a number"),
        ("redis+cluster://:hunter2@a:7000/2", "database 0 only"),
        ("redis+sentinel://:hunter2@s1:26379", "name the service the sentinels watch"),
        ("redis+sentinel://:hunter2@s1/idcode/x", "only a database number may follow"),
        ("rediss+cluster://:hunter2@a?ssl_cert_reqs=none", "takes no query"),
        ("redis+cluster://:hunter2@", "at least one node"),
        ("redis+cluster://:hunter2@::1:7000", "IPv6 node address goes in brackets"),
        ("memcached://:hunter2@a", "redis+cluster:// or rediss+cluster://"),
    ],
)
def test_a_bad_redis_url_is_a_precise_settings_error_that_never_shows_the_password(
    url: str, says: str
) -> None:
    with pytest.raises(ValidationError) as refused:
        Settings(redis_url=url)

    message = describe_settings_error(refused.value)
    assert message.startswith("bad settings: IDCODE_REDIS_URL: "), message
    assert says in message
    assert "hunter2" not in message


def test_a_redis_prefix_with_a_brace_is_refused() -> None:
    with pytest.raises(ValidationError) as refused:
        Settings(redis_prefix="idcode{a}:")

    assert "IDCODE_REDIS_PREFIX: must not contain '{' or '}'" in describe_settings_error(
        refused.value
    )


def test_cluster_and_sentinel_urls_with_credentials_and_tls_are_accepted() -> None:
    for url in (
        "redis+cluster://10.0.0.1:7000,10.0.0.2:7000,[fd00::3]:7000",
        "rediss+cluster://idcode:p%40ss@redis-0.example:6380",
        "redis+sentinel://s1:26379,s2:26379,s3/idcode",
        "rediss+sentinel://:secret@s1/idcode/2",
    ):
        assert Settings(redis_url=url).redis_url == url


def test_reachable_names_the_problem_without_the_password(
    redis_sentinels: SentinelPair, capsys: pytest.CaptureFixture[str]
) -> None:
    sentinel = redis_sentinels.sentinels[0].port
    url = f"redis+sentinel://:hunter2@127.0.0.1:{sentinel}/no-such-service"

    status = reachable.main(["reachable", "redis", url])

    err = capsys.readouterr().err
    assert status == 1
    assert "MasterNotFoundError" in err
    assert "hunter2" not in err and ":***@" in err


def test_a_status_change_removes_the_card_key_of_the_version_before_the_hash_tag(
    redis_url: str,
) -> None:
    """During a rolling upgrade the old replicas read a changed card from the database: the
    new replicas' write-through removes the key those replicas cache it under."""
    citizen = secrets.token_bytes(32)

    async def run() -> tuple[int, int, int]:
        state = RedisState(redis_url, _prefix())
        try:
            old_key = state._untagged_card_key(citizen)
            assert old_key != state._card_key(citizen)
            await state._redis.set(old_key, b"an old replica's cached card", ex=300)
            now = int(time.time())
            await state.cache_card(citizen, _snapshot(version=1), now)  # a read: left alone
            kept = int(await state._redis.exists(old_key))
            await state.cache_card(citizen, _snapshot(2, "suspended"), now, write_through=True)
            gone = int(await state._redis.exists(old_key))
            cached = int(await state._redis.exists(state._card_key(citizen)))
            return kept, gone, cached
        finally:
            await state.close()

    assert asyncio.run(run()) == (1, 0, 1)
