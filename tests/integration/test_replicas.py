"""Two server processes on one machine, sharing PostgreSQL and Redis, behave as one service.

Each replica is a real ``idcode serve`` process on its own loopback port, with the same
environment: one database, one Redis prefix and one key store (so both sign with the same
issuer key and trust the same development identity provider). Rate limits, replay
detection, card status and published keys must not depend on which replica answers.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2
import pytest

from idcode.cose import Algorithm
from idcode.keys import keys_from_jwks
from idcode.service.auth import dev_idp_key
from idcode.service.pii import development_vault
from idcode.service.settings import Settings
from idcode.testing import random_id_number
from idcode.verifier import Trust, verify
from tests.live import free_port, run_cli
from tests.services import REDIS_RUN_PREFIX, Tokens

RATE_LIMIT = 4  # codes per card per minute, small so the test reaches it quickly
STARTUP_SECONDS = 60  # a cold start imports FastAPI, SQLAlchemy and Alembic on a busy machine
STOP_SECONDS = 10
MINUTE_MARGIN_SECONDS = 10  # the rate-limit check starts with at least this much of the minute
START_ATTEMPTS = 3  # a free port can be taken by someone else before the server binds it


@dataclass
class Replica:
    name: str
    process: subprocess.Popen[bytes]
    log: Path
    client: httpx2.Client

    def log_tail(self, lines: int = 30) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return f"--- {self.name} log (last {lines} lines) ---\n" + "\n".join(
            text.splitlines()[-lines:]
        )


@dataclass
class TwoReplicas:
    a: Replica
    b: Replica
    tokens: Tokens

    def enrol(self, via: Replica) -> tuple[str, str]:
        """Enrol a fresh card through ``via``; returns (card id, ID number)."""
        id_number = random_id_number()
        response = via.client.post(
            "/v1/cards",
            json={"id_number": id_number, "name": "测试"},
            headers=self.tokens.operator(),
        )
        assert response.status_code == 201, response.text
        card_id: str = response.json()["id"]
        return card_id, id_number


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=STOP_SECONDS)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=STOP_SECONDS)


def _launch(name: str, env: dict[str, str], cwd: Path) -> tuple[subprocess.Popen[bytes], Path, str]:
    port = free_port()
    log = cwd / f"replica-{name}-{port}.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "idcode.cli", "serve", "--port", str(port), "--no-access-log"],
            env=env,
            cwd=cwd,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    return process, log, f"http://127.0.0.1:{port}"


def _healthy(process: subprocess.Popen[bytes], url: str) -> bool:
    """Poll ``/healthz`` until it answers 200 (True) or the process exits (False)."""
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        try:
            if httpx2.get(url + "/healthz", timeout=1.0).status_code == 200:
                return True
        except httpx2.TransportError:
            pass
        time.sleep(0.1)
    return False


def _start_replicas(
    names: list[str], env: dict[str, str], cwd: Path, started: list[Replica]
) -> None:
    """Start one process per name, all at once, and wait until each is healthy.

    Every process launched is appended to ``started`` at once, so the caller's teardown
    stops it whatever happens here.
    """
    pending = list(names)
    for _ in range(START_ATTEMPTS):
        launched = []
        for name in pending:
            process, log, url = _launch(name, env, cwd)
            replica = Replica(name, process, log, httpx2.Client(base_url=url, timeout=10.0))
            started.append(replica)
            launched.append((replica, url))
        pending = []
        for replica, url in launched:
            if _healthy(replica.process, url):
                continue
            alive = replica.process.poll() is None
            _stop(replica.process)
            output = replica.log.read_text(errors="replace").lower()
            if alive or "address already in use" not in output:
                pytest.fail(f"replica {replica.name} did not become healthy\n{replica.log_tail()}")
            started.remove(replica)  # it lost its port to another process: try another
            replica.client.close()
            pending.append(replica.name)
        if not pending:
            return
    pytest.fail(f"could not find free ports for replicas {pending}")


@pytest.fixture(scope="module")
def replicas(
    tmp_path_factory: pytest.TempPathFactory, postgres_url: str, redis_url: str
) -> Iterator[TwoReplicas]:
    workdir = tmp_path_factory.mktemp("replicas")
    keys_dir = workdir / "keys"
    prefix = f"{REDIS_RUN_PREFIX}replicas-{secrets.token_hex(3)}:"
    env = {k: v for k, v in os.environ.items() if not k.startswith("IDCODE_")}
    env.update(
        PYTHONUNBUFFERED="1",
        IDCODE_ENVIRONMENT="development",
        IDCODE_DATABASE_URL=postgres_url,
        IDCODE_REDIS_URL=redis_url,
        IDCODE_REDIS_PREFIX=prefix,
        IDCODE_KEYS_DIR=str(keys_dir),
        IDCODE_DATA_DIR=str(workdir / "data"),
        IDCODE_DEMO_DATA="false",
        IDCODE_RATE_LIMIT_PER_MINUTE=str(RATE_LIMIT),
    )
    # Every key the replicas use exists before either starts, so they never race to
    # create one: the root and issuer keys, the dev IdP key and the dev personal-data keys.
    # (dev-token no longer creates the IdP key: only the service does, or its function here.)
    run_cli(env, workdir, "keys", "init")
    dev_idp_key(keys_dir)
    development_vault(keys_dir)
    settings = Settings(
        environment="development",
        keys_dir=keys_dir,
        database_url=postgres_url,
        redis_url=redis_url,
        redis_prefix=prefix,
        demo_data=False,
        rate_limit_per_minute=RATE_LIMIT,
    )

    started: list[Replica] = []
    try:
        _start_replicas(["A", "B"], env, workdir, started)
        by_name = {replica.name: replica for replica in started}
        yield TwoReplicas(by_name["A"], by_name["B"], Tokens(settings))
    finally:
        for replica in started:
            replica.client.close()
            _stop(replica.process)


def _wait_for_fresh_minute_window() -> None:
    """The rate limit counts per calendar minute of the servers' (this machine's) clock:
    make sure the checks that follow have at least MINUTE_MARGIN_SECONDS of it left."""
    left = 60 - time.time() % 60
    if left < MINUTE_MARGIN_SECONDS:
        time.sleep(left + 0.05)


def _reason(response: httpx2.Response) -> Any:
    return response.json().get("reason")


def test_rate_limit_per_card_is_shared_by_both_replicas(replicas: TwoReplicas) -> None:
    a, b = replicas.a, replicas.b
    for _ in range(3):
        _wait_for_fresh_minute_window()
        _, id_number = replicas.enrol(via=a)
        headers = replicas.tokens.citizen(id_number)
        started = time.time()
        # RATE_LIMIT codes alternately from A and B, then one more from each replica.
        order = [a, b] * (RATE_LIMIT // 2) + [a, b]
        responses = [(r.name, r.client.post("/v1/codes", headers=headers)) for r in order]
        if int(started // 60) == int(time.time() // 60):
            break  # every request fell into one minute window
        # The machine stalled past the minute boundary: the counts restarted mid-way.
    else:
        pytest.fail("three attempts in a row straddled a minute boundary")

    statuses = [(name, response.status_code) for name, response in responses]
    assert statuses == [("A", 200), ("B", 200), ("A", 200), ("B", 200), ("A", 429), ("B", 429)]
    for _, refused in responses[RATE_LIMIT:]:
        assert _reason(refused) == "rate_limited"
        assert 1 <= int(refused.headers["Retry-After"]) <= 60


def test_code_verified_on_one_replica_is_replayed_on_the_other(replicas: TwoReplicas) -> None:
    a, b = replicas.a, replicas.b
    _, id_number = replicas.enrol(via=a)
    issued = a.client.post("/v1/codes", headers=replicas.tokens.citizen(id_number))
    assert issued.status_code == 200, issued.text
    code = issued.json()["code"]
    verifier = replicas.tokens.verifier()

    first = a.client.post("/v1/verify", json={"code": code}, headers=verifier)
    assert first.status_code == 200, first.text
    assert (first.json()["valid"], first.json()["reason"]) == (True, "ok")

    again = b.client.post("/v1/verify", json={"code": code}, headers=verifier)
    assert again.status_code == 200, again.text
    assert (again.json()["valid"], again.json()["reason"]) == (False, "replayed")


def test_suspension_on_one_replica_stops_codes_on_the_other_at_once(
    replicas: TwoReplicas,
) -> None:
    a, b = replicas.a, replicas.b
    card_id, id_number = replicas.enrol(via=a)
    citizen = replicas.tokens.citizen(id_number)
    # A issues a code, so it has looked the card up and cached it (as active).
    before = a.client.post("/v1/codes", headers=citizen)
    assert before.status_code == 200, before.text

    suspended = b.client.post(
        f"/v1/cards/{card_id}/status",
        json={"action": "suspend"},
        headers=replicas.tokens.operator(),
    )
    assert suspended.status_code == 200, suspended.text
    assert suspended.json()["status"] == "suspended"

    refused = a.client.post("/v1/codes", headers=citizen)
    assert refused.status_code == 403, refused.text
    assert _reason(refused) == "card_suspended"
    # The code A issued before the suspension is refused online by A as well.
    verdict = a.client.post(
        "/v1/verify", json={"code": before.json()["code"]}, headers=replicas.tokens.verifier()
    ).json()
    assert (verdict["valid"], verdict["reason"]) == (False, "revoked")


def test_both_replicas_publish_the_same_keys_and_sign_with_them(replicas: TwoReplicas) -> None:
    a, b = replicas.a, replicas.b
    published_a = a.client.get("/.well-known/jwks.json")
    published_b = b.client.get("/.well-known/jwks.json")
    assert published_a.status_code == published_b.status_code == 200
    assert published_a.json() == published_b.json()
    assert published_a.json()["keys"]

    # A code from B verifies offline with the keys A publishes.
    _, id_number = replicas.enrol(via=a)
    issued = b.client.post("/v1/codes", headers=replicas.tokens.citizen(id_number))
    assert issued.status_code == 200, issued.text
    trust = Trust.of(
        keys_from_jwks(published_a.json()), prefix="WH1:", algorithms=[Algorithm.EDDSA]
    )
    verdict = verify(issued.json()["code"], trust, int(time.time()))
    assert verdict.valid, verdict
