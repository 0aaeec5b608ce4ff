"""GET /metrics after real requests: codes issued, online verifications and identifications
by reason, latency by route template, 429s, and the terminal fleet as a real terminal runtime
reports it at sync; no label value that could be personal data, a pseudonym or a subject.

One live service for the module (its counters are the process's: every check compares a
scrape after the requests with one before them).
"""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from jwt.algorithms import OKPAlgorithm
from prometheus_client import REGISTRY, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr, ValidationError

from idcode.protocol import JOURNAL_BACKLOG_HEADER
from idcode.service import metrics
from idcode.service.database import make_engine, make_session_factory
from idcode.service.settings import Settings
from idcode.service.state import FailoverState, RedisState
from idcode.terminal import identity as identities
from idcode.terminal.client import register
from idcode.terminal.identity import TerminalIdentity
from idcode.terminal.runtime import TerminalRuntime
from idcode.terminaltoken import relying_party_token, terminal_token
from idcode.testing import random_id_number
from tests.live import LiveService, live_service, live_settings

TOKEN = secrets.token_urlsafe(24)
METRICS_AUTH = {"Authorization": f"Bearer {TOKEN}"}
RATE_LIMIT = 3
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]

# What personal data, pseudonyms and subjects look like as text: an ID number, a subject or
# hex pseudonym, a base64url pseudonym or token.
ID_NUMBER = re.compile(r"\d{17}[\dX]")
LONG_HEX = re.compile(r"[0-9a-f]{16,}")
LONG_B64URL = re.compile(r"[A-Za-z0-9_-]{20,}")
WORDS = re.compile(r"[a-z]+(_[a-z]+)*")  # a reason such as consented_to_another_party
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


@pytest.fixture(scope="module")
def service(
    tmp_path_factory: pytest.TempPathFactory, postgres_url: str, redis_url: str
) -> Iterator[LiveService]:
    workdir = tmp_path_factory.mktemp("metrics-service")
    settings = live_settings(workdir, postgres_url, redis_url, "metrics").model_copy(
        update={"metrics_token": SecretStr(TOKEN), "rate_limit_per_minute": RATE_LIMIT}
    )
    with live_service(settings) as live:
        yield live


def scrape(service: LiveService) -> Samples:
    response = service.client.get("/metrics", headers=METRICS_AUTH)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    """A sample's value; 0 for a counter child not created yet."""
    return samples.get((name, frozenset(labels.items())), 0.0)


def latency_count(samples: Samples, route: str, status: str, method: str = "POST") -> float:
    return value(
        samples,
        "idcode_http_request_duration_seconds_count",
        method=method,
        route=route,
        status=status,
    )


def enrol(service: LiveService) -> str:
    id_number = random_id_number()
    response = service.client.post(
        "/v1/cards",
        json={"id_number": id_number, "name": "测试"},
        headers=service.tokens.operator(),
    )
    assert response.status_code == 201, response.text
    return id_number


def issue(service: LiveService, id_number: str) -> str:
    response = service.client.post("/v1/codes", headers=service.tokens.citizen(id_number))
    assert response.status_code == 200, response.text
    code: str = response.json()["code"]
    return code


def test_metrics_need_the_token_when_one_is_set(service: LiveService) -> None:
    missing = service.client.get("/metrics")
    assert missing.status_code == 401
    assert missing.json()["reason"] == "missing_token"
    wrong = service.client.get("/metrics", headers={"Authorization": "Bearer " + "x" * 32})
    assert wrong.status_code == 401
    assert wrong.json()["reason"] == "invalid_token"
    assert service.client.get("/metrics", headers=METRICS_AUTH).status_code == 200


def test_metrics_stay_out_of_the_api_document(service: LiveService) -> None:
    assert "/metrics" not in service.client.get("/openapi.json").json()["paths"]


def test_a_scrape_counts_codes_verifications_identifications_and_429s(
    service: LiveService,
) -> None:
    id_numbers = [enrol(service), enrol(service)]
    before = scrape(service)

    code = issue(service, id_numbers[0])
    verifier = service.tokens.verifier()
    for expected in ("ok", "replayed"):
        answer = service.client.post("/v1/verify", json={"code": code}, headers=verifier)
        assert answer.status_code == 200 and answer.json()["reason"] == expected
    answer = service.client.post("/v1/verify", json={"code": "WH1:garbage"}, headers=verifier)
    assert answer.json()["reason"] == "malformed"

    party = register_party(service)
    plain = issue(service, id_numbers[1])
    refused = service.client.post(
        "/v1/identify", json={"code": plain, "purpose": "registration"}, headers=party()
    )
    assert refused.json()["reason"] == "no_consent", refused.text
    unknown = service.client.post(
        "/v1/identify", json={"code": plain, "purpose": "lending"}, headers=party()
    )
    assert unknown.json()["reason"] == "unknown_purpose"

    statuses = [
        service.client.post("/v1/codes", headers=service.tokens.citizen(id_numbers[0])).status_code
        for _ in range(RATE_LIMIT)
    ]
    assert statuses[-1] == 429, statuses
    issued = 2 + statuses.count(200)
    # A subject in a path: the route's template is the label, never the subject.
    subject = secrets.token_hex(16)
    assert service.client.put(f"/v1/links/{subject}").status_code == 401

    after = scrape(service)

    def grew(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert grew("idcode_codes_issued_total", kind="code", prefix="WH1:") == issued
    assert value(after, "idcode_codes_issued_total", kind="visitor_pass", prefix="WH1:") >= 0
    assert grew("idcode_verifications_total", reason="ok") == 1
    assert grew("idcode_verifications_total", reason="replayed") == 1
    assert grew("idcode_verifications_total", reason="malformed") == 1
    assert grew("idcode_identifications_total", reason="no_consent") == 1
    assert grew("idcode_identifications_total", reason="unknown_purpose") == 1
    assert grew("idcode_rate_limited_requests_total", route="/v1/codes") == 1
    assert latency_count(after, "/v1/codes", "429") - latency_count(before, "/v1/codes", "429") == 1
    assert (
        latency_count(after, "/v1/codes", "200") - latency_count(before, "/v1/codes", "200")
        == issued
    )
    assert (
        latency_count(after, "/v1/verify", "200") - latency_count(before, "/v1/verify", "200") == 3
    )
    assert latency_count(after, "/v1/links/{subject}", "401", method="PUT") >= 1
    # Every series of the closed sets is there from the start, at zero if nothing happened.
    assert ("idcode_database_errors_total", frozenset({("kind", "unreachable")})) in after
    assert ("idcode_state_degraded", frozenset()) in after
    assert_no_personal_labels(after, [*id_numbers, subject])


def register_party(service: LiveService) -> Any:
    """A registered relying party; calling the result gives the headers of a fresh token."""
    key = Ed25519PrivateKey.generate()
    body = {
        "name": "市民中心 service hall",
        "sector": "government",
        "purposes": ["registration"],
        "attributes": ["name", "residency"],
        "public_jwk": OKPAlgorithm.to_jwk(key.public_key(), as_dict=True),
    }
    response = service.client.post(
        "/v1/relying-parties", json=body, headers=service.tokens.operator()
    )
    assert response.status_code == 201, response.text
    party_id = response.json()["id"]
    return lambda: {"Authorization": "Bearer " + relying_party_token(party_id, key, "EdDSA")}


def provision(service: LiveService, directory: Path) -> TerminalIdentity:
    private_key = identities.new_terminal_key()
    site = f"site-{secrets.token_hex(4)}"
    terminal_id = register(
        service.url,
        service.tokens.operator()["Authorization"].removeprefix("Bearer "),
        scene="community",
        site=site,
        public_jwk=identities.public_jwk_of(private_key),
    )
    identity = TerminalIdentity(
        terminal_id, "community", site, service.url, private_key, service.root_jwk
    )
    identities.save(directory, identity)
    return identity


def test_the_fleet_series_follow_what_a_terminal_reports_at_sync(
    service: LiveService, tmp_path: Path
) -> None:
    identity = provision(service, tmp_path / "gate")
    runtime = TerminalRuntime(tmp_path / "gate", identity)
    try:
        this = {"terminal": identity.id, "scene": "community", "site": identity.site}
        never = scrape(service)
        assert ("idcode_terminal_last_seen_timestamp_seconds", frozenset(this.items())) not in never
        runtime.scan("WH1:not-a-code")  # journaled, not uploaded: a backlog of one
        assert runtime.sync_once() == "bundle"
        synced = scrape(service)
        assert value(synced, "idcode_terminal_journal_backlog_events", **this) == 1
        assert value(synced, "idcode_terminal_trust_version_lag", **this) == 0
        assert ("idcode_terminal_clock_drift_seconds", frozenset(this.items())) in synced
        assert ("idcode_terminal_last_seen_timestamp_seconds", frozenset(this.items())) in synced
        assert value(synced, "idcode_fleet_terminals", scene="community") >= 1
        assert value(synced, "idcode_fleet_journal_backlog_events", scene="community") >= 1

        # A card revoked: the terminal is one version behind until its next delta.
        card = service.client.post(
            "/v1/cards",
            json={"id_number": random_id_number(), "name": "测试"},
            headers=service.tokens.operator(),
        ).json()["id"]
        revoked = service.client.post(
            f"/v1/cards/{card}/status", json={"action": "revoke"}, headers=service.tokens.operator()
        )
        assert revoked.status_code == 200, revoked.text
        assert value(scrape(service), "idcode_terminal_trust_version_lag", **this) == 1
        assert runtime.upload_once() == 1
        assert runtime.sync_once() == "delta"
        caught_up = scrape(service)
        assert value(caught_up, "idcode_terminal_trust_version_lag", **this) == 0
        assert value(caught_up, "idcode_terminal_journal_backlog_events", **this) == 0
        assert_no_personal_labels(caught_up, [])
    finally:
        runtime.stop()


# "+5" is an int to int(); "5, 5" is two headers a proxy folded into one.
@pytest.mark.parametrize(
    "backlog", ["-1", "+5", "1e3", "0x10", "3000000000", "12345678901", "5, 5"]
)
def test_a_backlog_header_that_is_not_a_count_is_refused(
    service: LiveService, tmp_path: Path, backlog: str
) -> None:
    identity = provision(service, tmp_path / "gate")
    token = terminal_token(identity.id, identity.private_key, identity.alg)
    response = service.client.get(
        "/v1/trust-bundle",
        headers={"Authorization": f"Bearer {token}", JOURNAL_BACKLOG_HEADER: backlog},
    )
    assert response.status_code == 422, response.text
    assert response.json()["reason"] == "invalid_request"
    assert JOURNAL_BACKLOG_HEADER in response.json()["title"]


def test_above_the_limit_only_the_per_scene_fleet_series_remain(postgres_url: str) -> None:
    engine = make_engine(Settings(database_url=postgres_url).sqlalchemy_url)
    try:
        sessions = make_session_factory(engine)
        per_terminal = {m.name for m in metrics.FleetCollector(sessions, 100_000).collect()}
        aggregates = {m.name for m in metrics.FleetCollector(sessions, 0).collect()}
    finally:
        engine.dispose()
    assert "idcode_terminal_journal_backlog_events" in per_terminal
    assert aggregates == {
        "idcode_fleet_terminals",
        "idcode_fleet_journal_backlog_events",
        "idcode_fleet_max_clock_drift_seconds",
        "idcode_fleet_max_trust_version_lag",
        "idcode_fleet_oldest_last_seen_timestamp_seconds",
    }


def test_losing_redis_shows_as_degraded_then_recovered() -> None:
    before = metrics.STATE_DEGRADATIONS._value.get()
    state = FailoverState(RedisState("redis://127.0.0.1:9/0", "idcode-test-degraded:"))

    async def lose() -> None:
        await state.admit(b"citizen", 0, 0.0)
        await state.close()

    asyncio.run(lose())
    assert state.degraded
    assert metrics.STATE_DEGRADED._value.get() == 1
    assert metrics.STATE_DEGRADATIONS._value.get() == before + 1
    metrics.state_degraded(False)
    assert metrics.STATE_DEGRADED._value.get() == 0


def test_a_label_outside_its_closed_set_is_counted_as_other() -> None:
    pseudonym = secrets.token_hex(16)
    metrics.count_verification(pseudonym)
    metrics.count_identification(pseudonym)
    assert metrics.closed(pseudonym, metrics.VERIFY_REASONS) == "other"
    names = {
        sample.labels.get("reason")
        for family in text_string_to_metric_families(generate_latest(REGISTRY).decode())
        for sample in family.samples
    }
    assert pseudonym not in names and "other" in names


#: Two workers (a forked child, then its parent) count one code each; the parent then prints
#: what a scrape would get (without the fleet's series, which need a database).
WORKERS = """
import os
from idcode.service import metrics

class NoFleet(metrics.FleetCollector):
    def __init__(self):
        pass

    def collect(self):
        return iter(())

child = os.fork()
metrics.count_code("code", "WH1:")
if child == 0:
    os._exit(0)
os.waitpid(child, 0)
print(metrics.exposition(NoFleet()).decode(), end="")
"""


def test_worker_processes_share_their_counts_in_multiprocess_mode(tmp_path: Path) -> None:
    """What ``idcode serve --workers 2`` does: each worker writes its counts to the shared
    directory, and a scrape from any worker reads them all."""
    env = {**os.environ, metrics.MULTIPROCESS_DIR: str(tmp_path)}
    scraped = subprocess.run(
        [sys.executable, "-c", WORKERS], env=env, check=True, capture_output=True
    ).stdout.decode()
    samples = {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(scraped)
        for s in family.samples
    }
    assert value(samples, "idcode_codes_issued_total", kind="code", prefix="WH1:") == 2


def assert_no_personal_labels(samples: Samples, secrets_used: list[str]) -> None:
    """No label value is an ID number, a subject or pseudonym, a token, or anything a request
    carried; terminal labels are terminal ids (UUIDs)."""
    for name, labels in samples:
        for label, text in labels:
            if label == "terminal":
                assert UUID.fullmatch(text), (name, label, text)
                uuid.UUID(text)
                continue
            assert text not in secrets_used, (name, label)
            assert not ID_NUMBER.search(text), (name, label, text)
            if label == "site":
                # An operator's name for a place, whatever other tests sharing this database
                # named theirs ("garden-court-170f27a1", "gate-<1>"): not a token's shape.
                continue
            assert not LONG_HEX.search(text), (name, label, text)
            assert WORDS.fullmatch(text) or not LONG_B64URL.search(text), (name, label, text)


def test_a_metrics_token_shorter_than_16_characters_is_refused() -> None:
    with pytest.raises(ValidationError, match="metrics_token"):
        Settings(metrics_token=SecretStr("short"))
