"""Visitor passes through the real service (PostgreSQL and Redis): a resident asks for a pass,
the community's gate verifies it offline with its synced trust bundle, and the rules on who
may ask and for which window."""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx2
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi.testclient import TestClient
from jwt.algorithms import OKPAlgorithm
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from idcode.bundle import TrustBundle, verify_bundle
from idcode.decider import Decider
from idcode.keystore import open_key_store
from idcode.replay import ReplayCache
from idcode.scenes import MemoryHistory, decode_scene_key, load_adapter, subject_of
from idcode.service.database import make_engine
from idcode.service.fleet import terminal_token
from idcode.service.models import AuditRecord
from idcode.service.settings import Settings
from idcode.testing import random_id_number
from idcode.visitorpass import verify_pass
from tests.services import Tokens

Enrol = Callable[..., tuple[str, str]]
PROBLEM_JSON = "application/problem+json"
# Sites of this module's own: the database is shared by the whole test run.
COMMUNITY = f"garden-court-{secrets.token_hex(4)}"
NEIGHBOUR = f"river-view-{secrets.token_hex(4)}"


def assert_problem(response: httpx2.Response, status: int, reason: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM_JSON
    problem: dict[str, Any] = response.json()
    assert (problem["reason"], problem["status"]) == (reason, status)
    assert problem["type"] == f"urn:idcode:problem:{reason}"
    return problem


def iso(at: datetime) -> str:
    return at.isoformat()


def now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


@pytest.fixture
def database(service_settings: Settings) -> Iterator[Engine]:
    engine = make_engine(service_settings.sqlalchemy_url)
    try:
        yield engine
    finally:
        engine.dispose()


@pytest.fixture
def community(client: TestClient, tokens: Tokens) -> Callable[..., None]:
    """Set a community's scene data as an operator: its residents as card references."""

    def put(card_ids: list[str], site: str = COMMUNITY, **data: Any) -> None:
        document = {"residents": [f"card:{card_id}" for card_id in card_ids], **data}
        response = client.put(
            f"/v1/scenes/community/{site}", json=document, headers=tokens.operator()
        )
        assert response.status_code == 200, response.text

    return put


@pytest.fixture
def resident(enrol: Enrol, community: Callable[..., None]) -> tuple[str, str]:
    """(card id, ID number) of a resident of COMMUNITY."""
    card_id, id_number = enrol()
    community([card_id])
    return card_id, id_number


def ask(client: TestClient, tokens: Tokens, id_number: str, **body: Any) -> httpx2.Response:
    body.setdefault("community", COMMUNITY)
    body.setdefault("valid_until", iso(now() + timedelta(hours=4)))
    return client.post("/v1/visitor-passes", json=body, headers=tokens.citizen(id_number))


def issued_pass(client: TestClient, tokens: Tokens, id_number: str, **body: Any) -> str:
    response = ask(client, tokens, id_number, **body)
    assert response.status_code == 200, response.text
    text: str = response.json()["pass"]
    return text


def gate_bundle(
    client: TestClient, tokens: Tokens, settings: Settings, site: str = COMMUNITY
) -> TrustBundle:
    """Register a community gate at ``site`` and sync its trust bundle, as in the field."""
    key = Ed25519PrivateKey.generate()
    body = {
        "scene": "community",
        "site": site,
        "public_jwk": OKPAlgorithm.to_jwk(key.public_key(), as_dict=True),
    }
    registered = client.post("/v1/terminals", json=body, headers=tokens.operator())
    assert registered.status_code == 201, registered.text
    token = terminal_token(registered.json()["id"], key)
    response = client.get("/v1/trust-bundle", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200, response.text
    root = open_key_store(settings.keys_dir).root_public_jwk()
    return verify_bundle(response.text, root)


def gate(bundle: TrustBundle, settings: Settings) -> Decider:
    return Decider(
        bundle, load_adapter("community"), prefix=settings.code_prefix, replay=ReplayCache()
    )


def host_subject(client: TestClient, tokens: Tokens, card_id: str, bundle: TrustBundle) -> str:
    card = client.get(f"/v1/cards/{card_id}", headers=tokens.operator()).json()
    key = decode_scene_key(bundle.scene["subject_key"])
    return subject_of(key, bytes.fromhex(card["pseudonym"]))


# -- issuing and admitting -------------------------------------------------------------------


def test_resident_gets_a_pass_that_the_communitys_gate_admits_offline_as_a_visitor(
    client: TestClient,
    tokens: Tokens,
    service_settings: Settings,
    resident: tuple[str, str],
) -> None:
    card_id, id_number = resident
    until = now() + timedelta(hours=4)

    response = ask(client, tokens, id_number, valid_until=iso(until))

    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    issued = response.json()
    assert set(issued) == {"pass", "community", "valid_from", "valid_until"}
    assert issued["community"] == COMMUNITY
    assert datetime.fromisoformat(issued["valid_until"]) == until
    assert abs(datetime.fromisoformat(issued["valid_from"]) - now()) < timedelta(seconds=30)
    assert issued["pass"].startswith(service_settings.code_prefix.removesuffix(":") + "P:")

    bundle = gate_bundle(client, tokens, service_settings)
    verdict = verify_pass(
        issued["pass"], bundle.trust(prefix=service_settings.code_prefix), int(time.time())
    )
    assert verdict.valid and verdict.claims is not None, verdict
    assert verdict.claims.community == COMMUNITY
    assert verdict.claims.host_subject == host_subject(client, tokens, card_id, bundle)

    history = MemoryHistory()
    _, decision = gate(bundle, service_settings).decide(issued["pass"], int(time.time()), history)
    assert (decision.admitted, decision.action) == (True, "visitor")
    assert decision.subject != host_subject(client, tokens, card_id, bundle)


def test_gate_admits_residents_by_code_and_denies_other_citizens_after_a_sync(
    client: TestClient,
    tokens: Tokens,
    service_settings: Settings,
    enrol: Enrol,
    resident: tuple[str, str],
) -> None:
    _, stranger = enrol()
    bundle = gate_bundle(client, tokens, service_settings)
    decider = gate(bundle, service_settings)

    def scan(id_number: str) -> str:
        code = client.post("/v1/codes", headers=tokens.citizen(id_number)).json()["code"]
        _, decision = decider.decide(code, int(time.time()), MemoryHistory())
        return decision.action if decision.admitted else decision.reason

    assert scan(resident[1]) == "resident"
    assert scan(stranger) == "not_resident"


def test_pass_for_a_later_window_is_not_yet_valid_at_the_gate_until_it_starts(
    client: TestClient, tokens: Tokens, service_settings: Settings, resident: tuple[str, str]
) -> None:
    start = now() + timedelta(hours=3)  # within the bundle's max-age
    text = issued_pass(
        client,
        tokens,
        resident[1],
        valid_from=iso(start),
        valid_until=iso(start + timedelta(days=7)),
    )
    decider = gate(gate_bundle(client, tokens, service_settings), service_settings)
    assert decider.decide(text, int(time.time()), MemoryHistory())[1].reason == "not_yet_valid"
    at_start = int(start.timestamp())
    assert decider.decide(text, at_start, MemoryHistory())[1].action == "visitor"


def test_pass_is_refused_at_another_communitys_gate(
    client: TestClient,
    tokens: Tokens,
    service_settings: Settings,
    community: Callable[..., None],
    resident: tuple[str, str],
) -> None:
    community([resident[0]], site=NEIGHBOUR)
    text = issued_pass(client, tokens, resident[1])
    decider = gate(gate_bundle(client, tokens, service_settings, NEIGHBOUR), service_settings)
    assert decider.decide(text, int(time.time()), MemoryHistory())[1].reason == "wrong_community"


def test_each_pass_is_audited_with_the_card_and_community_only(
    client: TestClient, tokens: Tokens, database: Engine, resident: tuple[str, str]
) -> None:
    card_id, id_number = resident
    text = issued_pass(client, tokens, id_number)
    issued_pass(client, tokens, id_number)

    with Session(database) as session:
        records = list(
            session.scalars(
                select(AuditRecord).where(
                    AuditRecord.card_id == card_id, AuditRecord.action == "pass.issue"
                )
            )
        )
    assert len(records) == 2
    for record in records:
        assert record.detail == {"community": COMMUNITY}
        assert id_number[-6:] not in record.actor
        assert text not in repr(record.detail)


# -- who may ask -----------------------------------------------------------------------------


def test_citizen_who_is_not_a_resident_of_the_community_gets_403_not_resident(
    client: TestClient, tokens: Tokens, enrol: Enrol, resident: tuple[str, str]
) -> None:
    _, outsider = enrol()
    assert_problem(ask(client, tokens, outsider), 403, "not_resident")


@pytest.mark.parametrize("action", ["suspend", "lost", "revoke"])
def test_resident_whose_card_is_not_active_gets_403_at_once(
    client: TestClient, tokens: Tokens, resident: tuple[str, str], action: str
) -> None:
    card_id, id_number = resident
    # A code request puts the card's snapshot in the shared cache; a pass, which lives for
    # days and cannot be revoked offline, must go by the card's status in the database.
    assert client.post("/v1/codes", headers=tokens.citizen(id_number)).status_code == 200
    response = client.post(
        f"/v1/cards/{card_id}/status", json={"action": action}, headers=tokens.operator()
    )
    assert response.status_code == 200, response.text
    status = {"suspend": "suspended", "lost": "lost", "revoke": "revoked"}[action]
    assert_problem(ask(client, tokens, id_number), 403, f"card_{status}")


def test_unknown_community_is_404_unknown_community(
    client: TestClient, tokens: Tokens, resident: tuple[str, str]
) -> None:
    assert_problem(
        ask(client, tokens, resident[1], community=f"nowhere-{secrets.token_hex(4)}"),
        404,
        "unknown_community",
    )


def test_community_that_admits_no_visitors_issues_no_passes(
    client: TestClient, tokens: Tokens, community: Callable[..., None], enrol: Enrol
) -> None:
    card_id, id_number = enrol()
    community([card_id], visitors=False)
    assert_problem(ask(client, tokens, id_number), 403, "visitors_not_accepted")


def test_citizen_without_a_card_gets_404(client: TestClient, tokens: Tokens) -> None:
    assert_problem(ask(client, tokens, random_id_number()), 404, "card_not_found")


def test_only_citizens_ask_for_passes(client: TestClient, tokens: Tokens) -> None:
    body = {"community": COMMUNITY, "valid_until": iso(now() + timedelta(hours=1))}
    assert_problem(client.post("/v1/visitor-passes", json=body), 401, "missing_token")
    assert_problem(
        client.post("/v1/visitor-passes", json=body, headers=tokens.operator()),
        403,
        "not_a_citizen",
    )


# -- window rules ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("window", "reason"),
    [
        # valid_from given: left out, it is the server's now, which may be a second later
        # than the test's and make the window exactly 7 days (allowed).
        (
            {
                "valid_from": timedelta(hours=1),
                "valid_until": timedelta(days=7, hours=1, seconds=1),
            },
            "window_too_long",
        ),
        (
            {"valid_from": timedelta(days=31), "valid_until": timedelta(days=32)},
            "window_too_far_ahead",
        ),
        (
            {"valid_from": timedelta(days=2), "valid_until": timedelta(days=1)},
            "window_ends_before_start",
        ),
        ({"valid_from": timedelta(hours=-5), "valid_until": timedelta(hours=-1)}, "window_over"),
    ],
    ids=["over-7-days", "starts-after-30-days", "ends-before-start", "already-over"],
)
def test_window_outside_the_rules_is_422_with_its_reason(
    client: TestClient,
    tokens: Tokens,
    resident: tuple[str, str],
    window: dict[str, timedelta],
    reason: str,
) -> None:
    start = now()
    body = {name: iso(start + offset) for name, offset in window.items()}
    assert_problem(ask(client, tokens, resident[1], **body), 422, reason)


def test_seven_days_exactly_is_allowed(
    client: TestClient, tokens: Tokens, resident: tuple[str, str]
) -> None:
    start = now() + timedelta(hours=1)
    issued = ask(
        client,
        tokens,
        resident[1],
        valid_from=iso(start),
        valid_until=iso(start + timedelta(days=7)),
    )
    assert issued.status_code == 200, issued.text


@pytest.mark.parametrize(
    "body",
    [
        {"valid_until": "2026-12-01T08:00:00"},
        {"community": "garden court"},
        {"community": "c" * 65},
        {"guest_name": "张三"},
    ],
    ids=["time-without-zone", "bad-site", "long-site", "personal-data-field"],
)
def test_request_that_does_not_validate_is_422_invalid_request(
    client: TestClient, tokens: Tokens, resident: tuple[str, str], body: dict[str, str]
) -> None:
    assert_problem(ask(client, tokens, resident[1], **body), 422, "invalid_request")
