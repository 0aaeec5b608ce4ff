"""Terminals through the real service (PostgreSQL and Redis): registration, signed terminal
requests, trust bundles with ETags, revocation, rotation and emergency key removal reaching
the offline verifier at the next sync, signed status deltas and idempotent event upload."""

from __future__ import annotations

import base64
import itertools
import json
import secrets
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx2
import jwt
import psycopg
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi.testclient import TestClient
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm
from sqlalchemy import select, update

from idcode.bundle import TrustBundle, verify_bundle
from idcode.cose import Algorithm
from idcode.errors import BundleError, UnsafeFileError
from idcode.issuer import mint_code
from idcode.keys import IssuerKey
from idcode.keystore import initialise, open_key_store, rotate
from idcode.reasons import Reason
from idcode.replay import ReplayCache
from idcode.scenes import decode_scene_key, subject_of
from idcode.service.api.app import create_app
from idcode.service.auth import dev_idp_jwks
from idcode.service.cards import change_status
from idcode.service.database import make_engine, make_session_factory, upgrade
from idcode.service.fleet import terminal_token
from idcode.service.models import TerminalRecord
from idcode.service.settings import Settings
from idcode.statuslist import StatusDelta
from idcode.testing import random_card
from idcode.verifier import Verdict, verify
from tests.services import POSTGRES_ADMIN_URL, RUN_ID, Tokens

Enrol = Callable[..., tuple[str, str]]
TerminalKey = Ed25519PrivateKey | ec.EllipticCurvePrivateKey
PROBLEM_JSON = "application/problem+json"
DELTA_TYPE = "idcode-status-delta+jwt"
REQUEST_TIMEOUT = 120  # seconds a thread waits for its request, only so a hang cannot block
KEY_RECHECK = 1.1  # the service looks at its key store at most once a second


@dataclass(frozen=True)
class Terminal:
    """A registered terminal as it runs in the field: its id and its own private key."""

    id: str
    private_key: TerminalKey
    alg: str

    def headers(self, **token_args: Any) -> dict[str, str]:
        token = terminal_token(self.id, self.private_key, self.alg, **token_args)
        return {"Authorization": f"Bearer {token}"}


def public_jwk(private_key: TerminalKey) -> dict[str, Any]:
    if isinstance(private_key, Ed25519PrivateKey):
        return OKPAlgorithm.to_jwk(private_key.public_key(), as_dict=True)
    return ECAlgorithm.to_jwk(private_key.public_key(), as_dict=True)


def assert_problem(response: httpx2.Response, status: int, reason: str) -> dict[str, Any]:
    """The response is an RFC 9457 problem with this status and machine-readable reason."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM_JSON
    problem: dict[str, Any] = response.json()
    assert (problem["reason"], problem["status"]) == (reason, status)
    return problem


RegisterTerminal = Callable[..., Terminal]


@pytest.fixture
def register_terminal(client: TestClient, tokens: Tokens) -> RegisterTerminal:
    """Register a terminal through the API (as an operator); returns it with its key."""

    def register(
        scene: str = "community", site: str = "hall-1", private_key: TerminalKey | None = None
    ) -> Terminal:
        key = private_key or Ed25519PrivateKey.generate()
        body = {"scene": scene, "site": site, "public_jwk": public_jwk(key)}
        response = client.post("/v1/terminals", json=body, headers=tokens.operator())
        assert response.status_code == 201, response.text
        alg = "EdDSA" if isinstance(key, Ed25519PrivateKey) else "ES256"
        return Terminal(response.json()["id"], key, alg)

    return register


@pytest.fixture
def terminal(register_terminal: RegisterTerminal) -> Terminal:
    return register_terminal()


@pytest.fixture
def root_jwk(client: TestClient, service_settings: Settings) -> dict[str, Any]:
    """The city root public key, as a terminal pins it when it is provisioned."""
    return open_key_store(service_settings.keys_dir).root_public_jwk()


def fetch_bundle(client: TestClient, terminal: Terminal) -> httpx2.Response:
    response = client.get("/v1/trust-bundle", headers=terminal.headers())
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/jwt"
    return response


def sync(client: TestClient, terminal: Terminal, root_jwk: dict[str, Any]) -> TrustBundle:
    """What the terminal holds after a sync: the served bundle, checked with the pinned key."""
    return verify_bundle(fetch_bundle(client, terminal).text, root_jwk)


def subject_key(bundle: TrustBundle) -> bytes:
    """The scene's subject key in a bundle, as a terminal decodes it."""
    return decode_scene_key(bundle.scene.get("subject_key"))


def without_subject_key(bundle: TrustBundle) -> dict[str, Any]:
    """The bundle's scene without its subject key (checked to be a key)."""
    subject_key(bundle)
    return {name: value for name, value in bundle.scene.items() if name != "subject_key"}


def fresh_code(client: TestClient, tokens: Tokens, id_number: str) -> str:
    response = client.post("/v1/codes", headers=tokens.citizen(id_number))
    assert response.status_code == 200, response.text
    code: str = response.json()["code"]
    return code


def scan(code: str, bundle: TrustBundle, settings: Settings, replay: ReplayCache) -> Verdict:
    """The offline decision of a terminal holding ``bundle``."""
    trust = bundle.trust(prefix=settings.code_prefix)
    return verify(code, trust, int(time.time()), replay)


def set_status(client: TestClient, tokens: Tokens, card_id: str, action: str) -> None:
    response = client.post(
        f"/v1/cards/{card_id}/status", json={"action": action}, headers=tokens.operator()
    )
    assert response.status_code == 200, response.text


def assert_ok(response: httpx2.Response) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def read_card(client: TestClient, tokens: Tokens, card_id: str) -> dict[str, Any]:
    response = client.get(f"/v1/cards/{card_id}", headers=tokens.operator())
    assert response.status_code == 200, response.text
    card: dict[str, Any] = response.json()
    return card


# Events of these tests happened in the last hour: the service takes recent events only.
EVENTS_START = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)


def event_time(number: int) -> str:
    """When event ``number`` happened: ``number`` seconds after EVENTS_START, in UTC."""
    return (EVENTS_START + timedelta(seconds=number)).isoformat()


def event(number: int, reason: str = "ok") -> dict[str, Any]:
    return {
        "event_id": f"evt-{number:04d}",
        "occurred_at": event_time(number),
        "valid": reason == "ok",
        "reason": reason,
        "scene_result": {"admitted": reason == "ok"},
        "subject": f"{number:024x}",
    }


def upload(client: TestClient, terminal: Terminal, events: list[dict[str, Any]]) -> dict[str, int]:
    response = client.post("/v1/events", json={"events": events}, headers=terminal.headers())
    assert response.status_code == 200, response.text
    result: dict[str, int] = response.json()
    return result


def stored_events(client: TestClient, tokens: Tokens, **filters: str) -> list[dict[str, Any]]:
    response = client.get("/v1/events", params=filters, headers=tokens.operator())
    assert response.status_code == 200, response.text
    events: list[dict[str, Any]] = response.json()
    return events


# -- registration -------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["ed25519", "p256"])
def test_operator_registers_a_terminal_with_its_scene_site_and_public_key(
    client: TestClient, tokens: Tokens, kind: str
) -> None:
    key: TerminalKey = (
        Ed25519PrivateKey.generate()
        if kind == "ed25519"
        else ec.generate_private_key(ec.SECP256R1())
    )
    body = {"scene": "parking", "site": "car-park_7.north", "public_jwk": public_jwk(key)}

    response = client.post("/v1/terminals", json=body, headers=tokens.operator())

    assert response.status_code == 201, response.text
    registered = response.json()
    assert (registered["scene"], registered["site"], registered["active"]) == (
        "parking",
        "car-park_7.north",
        True,
    )
    listed = client.get("/v1/terminals", headers=tokens.operator())
    assert listed.status_code == 200, listed.text
    assert registered["id"] in {t["id"] for t in listed.json()}
    # The terminal can sign its requests with the key it registered.
    alg = "EdDSA" if kind == "ed25519" else "ES256"
    fetch_bundle(client, Terminal(registered["id"], key, alg))


def _private_jwk() -> dict[str, Any]:
    return OKPAlgorithm.to_jwk(Ed25519PrivateKey.generate(), as_dict=True)


def _rsa_jwk() -> dict[str, Any]:
    private_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return RSAAlgorithm.to_jwk(private_key.public_key(), as_dict=True)


def _p384_jwk() -> dict[str, Any]:
    return ECAlgorithm.to_jwk(ec.generate_private_key(ec.SECP384R1()).public_key(), as_dict=True)


def _ed25519_jwk_with_a_short_x() -> dict[str, Any]:
    jwk = OKPAlgorithm.to_jwk(Ed25519PrivateKey.generate().public_key(), as_dict=True)
    return {**jwk, "x": jwk["x"][:10]}


@pytest.mark.parametrize(
    "make_jwk",
    [_private_jwk, _rsa_jwk, _p384_jwk, _ed25519_jwk_with_a_short_x],
    ids=["private-jwk", "rsa", "p384", "truncated-ed25519"],
)
def test_registration_refuses_anything_but_a_public_ed25519_or_p256_key(
    client: TestClient, tokens: Tokens, make_jwk: Callable[[], dict[str, Any]]
) -> None:
    jwk = make_jwk()
    body = {"scene": "community", "site": "hall-1", "public_jwk": jwk}

    response = client.post("/v1/terminals", json=body, headers=tokens.operator())

    problem = assert_problem(response, 422, "invalid_request")
    assert problem["errors"][0]["loc"] == ["body", "public_jwk"]
    if "d" in jwk:  # the problem never echoes a private key
        assert jwk["d"] not in response.text


@pytest.mark.parametrize(
    ("scene", "site"),
    [("casino", "hall-1"), ("community", ""), ("community", "hall 1"), ("community", "h" * 65)],
    ids=["unknown-scene", "empty-site", "site-with-space", "site-too-long"],
)
def test_registration_refuses_an_unknown_scene_or_a_bad_site(
    client: TestClient, tokens: Tokens, scene: str, site: str
) -> None:
    key = Ed25519PrivateKey.generate()
    body = {"scene": scene, "site": site, "public_jwk": public_jwk(key)}

    response = client.post("/v1/terminals", json=body, headers=tokens.operator())

    assert_problem(response, 422, "invalid_request")


def test_only_operators_register_list_and_decommission_terminals(
    client: TestClient, tokens: Tokens, enrol: Enrol, terminal: Terminal
) -> None:
    _, id_number = enrol()
    body = {
        "scene": "community",
        "site": "hall-1",
        "public_jwk": public_jwk(Ed25519PrivateKey.generate()),
    }
    for headers in (tokens.citizen(id_number), tokens.verifier()):
        assert_problem(client.post("/v1/terminals", json=body, headers=headers), 403, "forbidden")
        assert_problem(client.get("/v1/terminals", headers=headers), 403, "forbidden")
        decommission = client.post(f"/v1/terminals/{terminal.id}/decommission", headers=headers)
        assert_problem(decommission, 403, "forbidden")
    # A terminal cannot register another terminal either: its token is no ID token.
    response = client.post("/v1/terminals", json=body, headers=terminal.headers())
    assert response.status_code == 401, response.text
    fetch_bundle(client, terminal)  # still active


# -- terminal authentication ---------------------------------------------------------------------


def test_trust_bundle_without_a_token_is_401_missing_token(client: TestClient) -> None:
    response = client.get("/v1/trust-bundle")

    assert_problem(response, 401, "missing_token")
    assert response.headers["www-authenticate"] == "Bearer"


def _signed_by_another_key(terminal: Terminal) -> str:
    return terminal_token(terminal.id, Ed25519PrivateKey.generate())


def _over_300_seconds(terminal: Terminal) -> str:
    return terminal_token(terminal.id, terminal.private_key, lifetime=301)


def _for_another_audience(terminal: Terminal) -> str:
    now = int(time.time())
    claims = {"iss": terminal.id, "sub": terminal.id, "aud": "elsewhere", "iat": now}
    return jwt.encode({**claims, "exp": now + 60}, terminal.private_key, algorithm="EdDSA")


def _about_another_subject(terminal: Terminal) -> str:
    now = int(time.time())
    claims = {"iss": terminal.id, "sub": "someone-else", "aud": "idcode", "iat": now}
    return jwt.encode({**claims, "exp": now + 60}, terminal.private_key, algorithm="EdDSA")


def _unsigned(terminal: Terminal) -> str:
    now = int(time.time())
    claims = {"iss": terminal.id, "sub": terminal.id, "aud": "idcode", "iat": now}
    return jwt.encode({**claims, "exp": now + 60}, "", algorithm="none")


def _for_an_unknown_terminal(terminal: Terminal) -> str:
    return terminal_token("00000000-0000-4000-8000-000000000000", terminal.private_key)


@pytest.mark.parametrize(
    "forge",
    [
        _signed_by_another_key,
        _over_300_seconds,
        _for_another_audience,
        _about_another_subject,
        _unsigned,
        _for_an_unknown_terminal,
    ],
    ids=[
        "signed-by-another-key",
        "lifetime-over-300s",
        "another-audience",
        "another-subject",
        "alg-none",
        "unknown-terminal",
    ],
)
def test_terminal_token_that_the_terminals_key_did_not_sign_as_required_is_401(
    client: TestClient, terminal: Terminal, forge: Callable[[Terminal], str]
) -> None:
    headers = {"Authorization": f"Bearer {forge(terminal)}"}

    response = client.get("/v1/trust-bundle", headers=headers)

    assert_problem(response, 401, "invalid_token")


def test_expired_terminal_token_is_401_token_expired(
    client: TestClient, terminal: Terminal
) -> None:
    # Issued twenty minutes ago for a minute: beyond any clock drift a terminal may have.
    headers = terminal.headers(now=int(time.time()) - 1200, lifetime=60)

    response = client.get("/v1/trust-bundle", headers=headers)

    assert_problem(response, 401, "token_expired")


@pytest.mark.parametrize("drift", [-300, 300], ids=["five-minutes-slow", "five-minutes-fast"])
def test_a_terminal_whose_clock_drifts_still_syncs_and_operators_see_the_drift(
    client: TestClient, tokens: Tokens, terminal: Terminal, drift: int
) -> None:
    response = client.get(
        "/v1/trust-bundle", headers=terminal.headers(now=int(time.time()) + drift)
    )

    assert response.status_code == 200
    listed = {t["id"]: t for t in client.get("/v1/terminals", headers=tokens.operator()).json()}
    assert abs(listed[terminal.id]["clock_drift"] - drift) <= 5


def test_a_terminal_clock_more_than_ten_minutes_fast_is_refused(
    client: TestClient, terminal: Terminal
) -> None:
    headers = terminal.headers(now=int(time.time()) + 1200)

    assert_problem(client.get("/v1/trust-bundle", headers=headers), 401, "invalid_token")


def test_a_terminal_token_cannot_be_used_twice(client: TestClient, terminal: Terminal) -> None:
    headers = terminal.headers()

    assert client.get("/v1/trust-bundle", headers=headers).status_code == 200
    assert_problem(client.get("/v1/trust-bundle", headers=headers), 401, "token_replayed")


@pytest.mark.parametrize(
    "scene_result",
    [{"note": "x" * 65}, {"resident": {"name": "张三"}}, {"Name": "x"}, {"fee": 2**63}],
    ids=["long-text", "nested", "bad-name", "integer-beyond-2**53"],
)
def test_scene_results_are_coarse_values_only(
    client: TestClient, terminal: Terminal, scene_result: dict[str, object]
) -> None:
    batch = [{**event(1), "scene_result": scene_result}]

    response = client.post("/v1/events", json={"events": batch}, headers=terminal.headers())

    assert_problem(response, 422, "invalid_request")


def test_an_operators_id_token_is_not_a_terminal_token(client: TestClient, tokens: Tokens) -> None:
    response = client.get("/v1/trust-bundle", headers=tokens.operator())

    assert_problem(response, 401, "invalid_token")


def test_decommissioned_terminal_is_cut_off_at_its_very_next_request(
    client: TestClient, tokens: Tokens, terminal: Terminal
) -> None:
    token_before = terminal.headers()  # still within its lifetime afterwards
    fetch_bundle(client, terminal)
    assert upload(client, terminal, [event(1)])["stored"] == 1

    response = client.post(f"/v1/terminals/{terminal.id}/decommission", headers=tokens.operator())
    assert response.status_code == 200, response.text
    assert response.json()["active"] is False

    for headers in (token_before, terminal.headers()):
        assert_problem(
            client.get("/v1/trust-bundle", headers=headers), 403, "terminal_decommissioned"
        )
        delta = client.get("/v1/trust-bundle/status-delta?since=0", headers=headers)
        assert_problem(delta, 403, "terminal_decommissioned")
        uploaded = client.post("/v1/events", json={"events": [event(2)]}, headers=headers)
        assert_problem(uploaded, 403, "terminal_decommissioned")
    # Nothing it sent after decommissioning was stored.
    assert [e["event_id"] for e in stored_events(client, tokens, terminal_id=terminal.id)] == [
        "evt-0001"
    ]


def test_decommissioning_an_unknown_terminal_is_404(client: TestClient, tokens: Tokens) -> None:
    response = client.post(
        "/v1/terminals/00000000-0000-4000-8000-000000000000/decommission",
        headers=tokens.operator(),
    )

    assert_problem(response, 404, "terminal_not_found")


# -- trust bundles -------------------------------------------------------------------------------


def test_trust_bundle_verifies_with_the_pinned_root_key_and_holds_the_service_keys(
    client: TestClient,
    service_settings: Settings,
    tokens: Tokens,
    enrol: Enrol,
    terminal: Terminal,
    root_jwk: dict[str, Any],
) -> None:
    _, id_number = enrol()
    code = fresh_code(client, tokens, id_number)

    bundle = sync(client, terminal, root_jwk)

    assert without_subject_key(bundle) == {
        "scene": "community",
        "site": "hall-1",
        "version": 0,
        "data": {},
    }
    published = client.get("/.well-known/jwks.json").json()["keys"]
    assert {key.kid for key in bundle.keys} == {key["kid"] for key in published}
    assert bundle.max_age == service_settings.bundle_max_age_seconds
    verdict = scan(code, bundle, service_settings, ReplayCache())
    assert verdict.valid, verdict


def test_each_terminal_gets_the_scene_data_of_its_own_scene_and_site(
    client: TestClient, register_terminal: RegisterTerminal, root_jwk: dict[str, Any]
) -> None:
    hall = register_terminal(scene="community", site="hall-1")
    car_park = register_terminal(scene="parking", site="car-park-9")

    no_data = {"version": 0, "data": {}}
    hall_bundle, car_park_bundle = sync(client, hall, root_jwk), sync(client, car_park, root_jwk)
    assert without_subject_key(hall_bundle) == {"scene": "community", "site": "hall-1", **no_data}
    assert without_subject_key(car_park_bundle) == {
        "scene": "parking",
        "site": "car-park-9",
        **no_data,
    }
    # Each scene keys subjects with its own key: the two journals cannot be joined.
    assert subject_key(hall_bundle) != subject_key(car_park_bundle)
    hall_tag = fetch_bundle(client, hall).headers["etag"]
    car_park_tag = fetch_bundle(client, car_park).headers["etag"]
    assert hall_tag != car_park_tag
    # One terminal's tag never stands for another's bundle.
    response = client.get(
        "/v1/trust-bundle", headers={**car_park.headers(), "If-None-Match": hall_tag}
    )
    assert response.status_code == 200, response.text
    assert verify_bundle(response.text, root_jwk).scene["site"] == "car-park-9"


def test_trust_bundle_signed_by_another_root_key_is_refused(
    client: TestClient, terminal: Terminal, root_jwk: dict[str, Any], tmp_path: Path
) -> None:
    token = fetch_bundle(client, terminal).text
    other = open_key_store(tmp_path / "another-city")
    initialise(other, int(time.time()), 90)

    with pytest.raises(BundleError, match="another key"):
        verify_bundle(token, other.root_public_jwk())
    # The other city's key under our root kid: the signature gives it away.
    with pytest.raises(BundleError, match="does not verify"):
        verify_bundle(token, {**other.root_public_jwk(), "kid": root_jwk["kid"]})


def test_trust_bundle_changed_by_one_byte_is_refused(
    client: TestClient, terminal: Terminal, root_jwk: dict[str, Any]
) -> None:
    token = fetch_bundle(client, terminal).text
    verify_bundle(token, root_jwk)

    for position in (5, token.index(".") + 7, len(token) // 2, len(token) - 3):
        replacement = "A" if token[position] != "A" else "B"
        changed = token[:position] + replacement + token[position + 1 :]
        with pytest.raises(BundleError):
            verify_bundle(changed, root_jwk)


def test_unchanged_trust_bundle_is_304_not_modified_with_if_none_match(
    client: TestClient, terminal: Terminal
) -> None:
    first = fetch_bundle(client, terminal)
    etag = first.headers["etag"]
    assert etag.startswith('"') and etag.endswith('"')

    again = client.get("/v1/trust-bundle", headers={**terminal.headers(), "If-None-Match": etag})

    assert again.status_code == 304, again.text
    assert again.content == b""
    assert again.headers["etag"] == etag
    # Among other tags, the terminal's still matches.
    listed = client.get(
        "/v1/trust-bundle",
        headers={**terminal.headers(), "If-None-Match": f'"stale", {etag}'},
    )
    assert listed.status_code == 304, listed.text


def test_trust_bundle_etag_changes_after_a_card_status_change(
    client: TestClient, tokens: Tokens, enrol: Enrol, terminal: Terminal
) -> None:
    card_id, _ = enrol()
    etag = fetch_bundle(client, terminal).headers["etag"]

    set_status(client, tokens, card_id, "suspend")
    response = client.get("/v1/trust-bundle", headers={**terminal.headers(), "If-None-Match": etag})

    assert response.status_code == 200, response.text
    assert response.headers["etag"] != etag


def test_the_version_a_terminal_holds_is_recorded_by_a_bundle_a_304_and_a_delta(
    client: TestClient,
    service_settings: Settings,
    tokens: Tokens,
    enrol: Enrol,
    terminal: Terminal,
    root_jwk: dict[str, Any],
) -> None:
    """The service writes a terminal's trust version only when it changed: every answer that
    moves it still records it (operators' trust version lag), a 304 included."""
    engine = make_engine(service_settings.sqlalchemy_url)

    def held() -> int | None:
        with make_session_factory(engine)() as session:
            return session.scalar(
                select(TerminalRecord.trust_version).where(TerminalRecord.id == terminal.id)
            )

    def restore(version: int | None) -> None:  # as a restored database would have it
        with make_session_factory(engine)() as session:
            session.execute(
                update(TerminalRecord)
                .where(TerminalRecord.id == terminal.id)
                .values(trust_version=version)
            )
            session.commit()

    def delta(since: int) -> StatusDelta:
        response = client.get(
            "/v1/trust-bundle/status-delta", params={"since": since}, headers=terminal.headers()
        )
        assert response.status_code == 200, response.text
        claims = jwt.decode(response.text, jwt.PyJWK(root_jwk).key, algorithms=["EdDSA"])
        return StatusDelta.from_json(claims["delta"])

    try:
        card_id, _ = enrol()
        first = sync(client, terminal, root_jwk)
        assert held() == first.version

        set_status(client, tokens, card_id, "suspend")
        moved = delta(first.version)
        assert moved.target > first.version and moved.invalidated
        assert held() == moved.target
        # Nothing since: an empty delta to the same version, which stays recorded.
        unchanged = delta(moved.target)
        assert (unchanged.base, unchanged.target) == (moved.target, moved.target)
        assert not (unchanged.invalidated or unchanged.validated or unchanged.revoked_devices)
        assert held() == moved.target
        restore(first.version)
        delta(moved.target)
        assert held() == moved.target

        full = fetch_bundle(client, terminal)
        assert verify_bundle(full.text, root_jwk).version == moved.target
        restore(None)
        again = client.get(
            "/v1/trust-bundle",
            headers={**terminal.headers(), "If-None-Match": full.headers["etag"]},
        )
        assert again.status_code == 304, again.text
        assert held() == moved.target
    finally:
        engine.dispose()


def test_a_304_is_given_only_for_the_bundle_the_terminal_holds(
    client: TestClient,
    tokens: Tokens,
    enrol: Enrol,
    register_terminal: RegisterTerminal,
    root_jwk: dict[str, Any],
) -> None:
    """The ETag is computed before the bundle is built: the tag of a 200 is the tag the next
    check of the same bundle gets, and a change of the list (a reinstatement, the list
    growing) or of the scene data is a new bundle, never a 304."""
    gate = register_terminal(site="gate-7")
    card_id, _ = enrol()
    set_status(client, tokens, card_id, "suspend")

    def check(etag: str) -> httpx2.Response:
        return client.get("/v1/trust-bundle", headers={**gate.headers(), "If-None-Match": etag})

    tag = fetch_bundle(client, gate).headers["etag"]
    assert check(tag).status_code == 304
    for change in (
        lambda: set_status(client, tokens, card_id, "reinstate"),
        lambda: enrol(),
        lambda: client.put(
            "/v1/scenes/community/gate-7",
            json={"residents": []},
            headers=tokens.operator(),
        ).raise_for_status(),
    ):
        change()
        changed = check(tag)
        assert changed.status_code == 200, changed.text
        assert changed.headers["etag"] != tag
        verify_bundle(changed.text, root_jwk)
        tag = changed.headers["etag"]
        assert check(tag).status_code == 304


# -- revocation reaching the terminal ----------------------------------------------------------


def test_revoked_cards_fresh_code_is_denied_offline_after_the_next_bundle_sync(
    client: TestClient,
    service_settings: Settings,
    tokens: Tokens,
    enrol: Enrol,
    terminal: Terminal,
    root_jwk: dict[str, Any],
) -> None:
    card_id, id_number = enrol()
    shown_before = fresh_code(client, tokens, id_number)
    # Minted before the revocation and never shown yet: still within its lifetime.
    shown_after = fresh_code(client, tokens, id_number)
    replay = ReplayCache()
    before = sync(client, terminal, root_jwk)
    assert scan(shown_before, before, service_settings, replay).valid

    set_status(client, tokens, card_id, "revoke")
    # Until it syncs, the terminal knows nothing of the revocation.
    assert scan(shown_after, before, service_settings, ReplayCache()).valid
    after = sync(client, terminal, root_jwk)

    assert after.version > before.version
    verdict = scan(shown_after, after, service_settings, replay)
    assert verdict.reason is Reason.REVOKED, verdict
    # And the service issues no fresh code for the card any more.
    refused = client.post("/v1/codes", headers=tokens.citizen(id_number))
    assert_problem(refused, 403, "card_revoked")


def test_suspended_card_is_denied_after_sync_and_admitted_again_after_reinstatement(
    client: TestClient,
    service_settings: Settings,
    tokens: Tokens,
    enrol: Enrol,
    terminal: Terminal,
    root_jwk: dict[str, Any],
) -> None:
    card_id, id_number = enrol()
    code = fresh_code(client, tokens, id_number)
    replay = ReplayCache()

    set_status(client, tokens, card_id, "suspend")
    suspended = sync(client, terminal, root_jwk)
    assert scan(code, suspended, service_settings, replay).reason is Reason.REVOKED

    set_status(client, tokens, card_id, "reinstate")
    reinstated = sync(client, terminal, root_jwk)
    assert reinstated.version > suspended.version
    verdict = scan(fresh_code(client, tokens, id_number), reinstated, service_settings, replay)
    assert verdict.valid, verdict


def test_signed_status_delta_turns_the_old_bundles_list_into_the_new_one(
    client: TestClient,
    tokens: Tokens,
    enrol: Enrol,
    terminal: Terminal,
    root_jwk: dict[str, Any],
) -> None:
    revoked_id, _ = enrol()
    suspended_id, _ = enrol()
    set_status(client, tokens, suspended_id, "suspend")
    old = sync(client, terminal, root_jwk)

    set_status(client, tokens, revoked_id, "revoke")
    set_status(client, tokens, suspended_id, "reinstate")
    enrol()  # a card enrolled since: the list grows
    new = sync(client, terminal, root_jwk)
    response = client.get(
        "/v1/trust-bundle/status-delta", params={"since": old.version}, headers=terminal.headers()
    )

    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/jwt"
    assert jwt.get_unverified_header(response.text)["typ"] == DELTA_TYPE
    claims = jwt.decode(
        response.text, jwt.PyJWK(root_jwk).key, algorithms=["EdDSA"], issuer="idcode"
    )
    delta = StatusDelta.from_json(claims["delta"])
    assert (delta.base, delta.target) == (old.version, new.version)
    assert delta.apply(old.status) == new.status
    assert len(delta.invalidated) == 1 and len(delta.validated) == 1


def test_status_delta_changed_by_one_byte_does_not_verify_with_the_root_key(
    client: TestClient, terminal: Terminal, root_jwk: dict[str, Any]
) -> None:
    token = client.get("/v1/trust-bundle/status-delta?since=0", headers=terminal.headers()).text
    position = len(token) // 2
    changed = token[:position] + ("A" if token[position] != "A" else "B") + token[position + 1 :]

    with pytest.raises(jwt.PyJWTError):
        jwt.decode(changed, jwt.PyJWK(root_jwk).key, algorithms=["EdDSA"], issuer="idcode")


def test_status_delta_from_a_version_the_service_has_not_reached_is_a_documented_409(
    client: TestClient, terminal: Terminal
) -> None:
    response = client.get(
        "/v1/trust-bundle/status-delta", params={"since": 2**31 - 1}, headers=terminal.headers()
    )
    assert_problem(response, 409, "unknown_version")
    operation = client.get("/openapi.json").json()["paths"]["/v1/trust-bundle/status-delta"]
    assert PROBLEM_JSON in operation["get"]["responses"]["409"]["content"]


# -- key rotation and emergency removal ----------------------------------------------------------


def test_codes_minted_before_during_and_after_a_key_rotation_verify_offline(
    client: TestClient,
    service_settings: Settings,
    tokens: Tokens,
    enrol: Enrol,
    terminal: Terminal,
    root_jwk: dict[str, Any],
) -> None:
    _, id_number = enrol()
    old_kid = sync(client, terminal, root_jwk).keys[0].kid
    before = fresh_code(client, tokens, id_number)

    # The next key is published now and signs from a few seconds on; the terminal syncs
    # in between, while the old key still signs.
    switch = int(time.time()) + 4
    new_kid = rotate(open_key_store(service_settings.keys_dir), switch - 4, 90, starts_in=4).kid
    time.sleep(KEY_RECHECK)
    during_rotation = sync(client, terminal, root_jwk)
    during = fresh_code(client, tokens, id_number)
    assert {key.kid for key in during_rotation.keys} == {old_kid, new_kid}

    while time.time() < switch:
        time.sleep(0.1)
    after = fresh_code(client, tokens, id_number)

    replay = ReplayCache()
    verdicts = [scan(code, during_rotation, service_settings, replay) for code in (before, during)]
    verdicts.append(scan(after, during_rotation, service_settings, replay))
    assert all(verdict.valid for verdict in verdicts), verdicts
    assert [verdict.kid for verdict in verdicts] == [old_kid, old_kid, new_kid]


def test_key_removed_in_an_emergency_stops_verifying_after_the_next_sync(
    client: TestClient,
    service_settings: Settings,
    tokens: Tokens,
    enrol: Enrol,
    terminal: Terminal,
    root_jwk: dict[str, Any],
) -> None:
    _, id_number = enrol()
    compromised_code = fresh_code(client, tokens, id_number)
    before = sync(client, terminal, root_jwk)
    compromised = scan(compromised_code, before, service_settings, ReplayCache())
    assert compromised.valid and compromised.kid is not None

    store = open_key_store(service_settings.keys_dir)
    now = int(time.time())
    replacement = rotate(store, now, 90)
    store.remove_issuer_key(compromised.kid, now)
    time.sleep(KEY_RECHECK)
    after = sync(client, terminal, root_jwk)

    assert [key.kid for key in after.keys] == [replacement.kid]
    verdict = scan(compromised_code, after, service_settings, ReplayCache())
    assert verdict.reason is Reason.UNKNOWN_KEY, verdict
    new_code = scan(fresh_code(client, tokens, id_number), after, service_settings, ReplayCache())
    assert new_code.valid and new_code.kid == replacement.kid, new_code


# -- a key planted in the key store (outside review, issue 10 finding 2) ---------------------


def _plant_issuer_key(keys_dir: Path, kid: str) -> IssuerKey:
    """The reviewer's reproducer: an attacker drops issuer-<hex>.json with their public JWK."""
    now = int(time.time())
    attacker = IssuerKey.generate(kid, Algorithm.EDDSA, now - 60, now + 86_400)
    planted = keys_dir / f"issuer-{ord(kid):02x}.json"
    planted.write_text(json.dumps({"public_jwk": attacker.public.to_jwk()}))
    return attacker


def test_a_key_planted_in_the_key_store_is_in_neither_jwks_nor_bundle_and_its_codes_fail(
    client: TestClient,
    service_settings: Settings,
    tokens: Tokens,
    enrol: Enrol,
    terminal: Terminal,
    root_jwk: dict[str, Any],
) -> None:
    _, id_number = enrol()
    ours = sync(client, terminal, root_jwk).keys[0].kid
    kid = "Z" if ours != "Z" else "Y"
    attacker = _plant_issuer_key(service_settings.keys_dir, kid)  # while the service runs
    prefix = service_settings.code_prefix
    attacker_code, _ = mint_code(random_card(), attacker, prefix=prefix, now=int(time.time()))
    time.sleep(KEY_RECHECK)

    jwks_kids = [key["kid"] for key in client.get("/.well-known/jwks.json").json()["keys"]]
    bundle = sync(client, terminal, root_jwk)
    with TestClient(create_app(service_settings)) as restarted:  # and after a restart
        restarted_kids = [k["kid"] for k in restarted.get("/.well-known/jwks.json").json()["keys"]]

    assert jwks_kids == restarted_kids == [ours]
    assert [key.kid for key in bundle.keys] == [ours]
    verdict = scan(attacker_code, bundle, service_settings, ReplayCache())
    assert verdict.reason is Reason.UNKNOWN_KEY, verdict
    our_code = fresh_code(client, tokens, id_number)
    assert scan(our_code, bundle, service_settings, ReplayCache()).valid


def test_production_service_refuses_to_start_on_a_key_directory_others_can_write_to(
    make_settings: Callable[..., Settings], postgres_url: str, redis_url: str, tmp_path: Path
) -> None:
    keys_dir = tmp_path / "production-keys"
    initialise(open_key_store(keys_dir), int(time.time()), 90)
    keys_dir.chmod(0o777)
    _plant_issuer_key(keys_dir, "Z")
    jwks_file = tmp_path / "city-idp-jwks.json"
    jwks_file.write_text(json.dumps(dev_idp_jwks(tmp_path / "city-idp")))
    settings = make_settings(
        environment="production",
        keys_dir=keys_dir,
        database_url=postgres_url,
        redis_url=redis_url,
        pii_encryption_key=base64.b64encode(secrets.token_bytes(32)).decode(),
        pii_hash_key=base64.b64encode(secrets.token_bytes(32)).decode(),
        oidc_issuer="urn:test-idp",
        oidc_jwks_file=jwks_file,
        demo_data=False,
    )

    with (
        pytest.raises(UnsafeFileError, match="writable by group or others") as excinfo,
        TestClient(create_app(settings)),
    ):
        pass
    assert str(keys_dir) in str(excinfo.value)


# -- events ----------------------------------------------------------------------------------


def test_batch_uploaded_twice_or_in_overlapping_parts_stores_each_event_once(
    client: TestClient, tokens: Tokens, terminal: Terminal
) -> None:
    batch = [event(n) for n in range(1, 6)]

    assert upload(client, terminal, batch) == {"received": 5, "stored": 5, "duplicates": 0}
    assert upload(client, terminal, batch) == {"received": 5, "stored": 0, "duplicates": 5}
    overlapping = [event(n) for n in range(3, 9)]
    assert upload(client, terminal, overlapping) == {"received": 6, "stored": 3, "duplicates": 3}
    # An event repeated within one batch is one event.
    assert upload(client, terminal, [event(9), event(9)]) == {
        "received": 2,
        "stored": 1,
        "duplicates": 0,
    }

    stored = stored_events(client, tokens, terminal_id=terminal.id)
    assert [e["event_id"] for e in stored] == [f"evt-{n:04d}" for n in range(1, 10)]
    first = stored[0]
    assert first["terminal_id"] == terminal.id
    assert (first["valid"], first["reason"], first["scene_result"], first["subject"]) == (
        True,
        "ok",
        {"admitted": True},
        event(1)["subject"],
    )


def test_operators_read_events_filtered_by_terminal_and_reason(
    client: TestClient, tokens: Tokens, register_terminal: RegisterTerminal
) -> None:
    gate, kiosk = register_terminal(site="gate-1"), register_terminal(site="kiosk-2")
    upload(client, gate, [event(1), event(2, "revoked"), event(3, "expired"), event(4, "revoked")])
    upload(client, kiosk, [event(1, "revoked")])

    revoked_at_gate = stored_events(client, tokens, terminal_id=gate.id, reason="revoked")
    assert [(e["terminal_id"], e["event_id"]) for e in revoked_at_gate] == [
        (gate.id, "evt-0002"),
        (gate.id, "evt-0004"),
    ]
    assert all(e["valid"] is False for e in revoked_at_gate)
    at_kiosk = stored_events(client, tokens, terminal_id=kiosk.id)
    assert [(e["event_id"], e["reason"]) for e in at_kiosk] == [("evt-0001", "revoked")]
    window = stored_events(
        client,
        tokens,
        terminal_id=gate.id,
        since=event_time(2),
        until=event_time(4),
    )
    assert [e["event_id"] for e in window] == ["evt-0002", "evt-0003"]


def test_terminals_write_events_only_under_their_own_id_and_cannot_read_any(
    client: TestClient, tokens: Tokens, register_terminal: RegisterTerminal
) -> None:
    first, second = register_terminal(site="gate-1"), register_terminal(site="gate-2")
    batch = [event(n) for n in range(1, 6)]
    assert upload(client, first, batch)["stored"] == 5

    # The same event ids from another terminal are that terminal's own events.
    assert upload(client, second, batch) == {"received": 5, "stored": 5, "duplicates": 0}

    for terminal in (first, second):
        mine = stored_events(client, tokens, terminal_id=terminal.id)
        assert {e["terminal_id"] for e in mine} == {terminal.id}
        assert len(mine) == 5
        # Its own token opens no operator route: it reads nobody's events, not even its own.
        response = client.get(
            "/v1/events", params={"terminal_id": terminal.id}, headers=terminal.headers()
        )
        assert response.status_code == 401, response.text
        assert response.headers["content-type"] == PROBLEM_JSON


@pytest.mark.parametrize(
    "extra",
    [{"name": "张三"}, {"id_number": "420101199003071234"}, {"terminal_id": "another"}],
    ids=["name", "id-number", "another-terminal"],
)
def test_event_with_a_field_for_personal_data_or_another_terminal_is_refused_whole(
    client: TestClient, tokens: Tokens, terminal: Terminal, extra: dict[str, str]
) -> None:
    batch = [event(1), {**event(2), **extra}]

    response = client.post("/v1/events", json={"events": batch}, headers=terminal.headers())

    assert_problem(response, 422, "invalid_request")
    for value in extra.values():
        assert value not in response.text
    assert stored_events(client, tokens, terminal_id=terminal.id) == []


def test_event_whose_subject_is_not_a_hex_pseudonym_is_refused(
    client: TestClient, terminal: Terminal
) -> None:
    batch = [{**event(1), "subject": "42010119900307123X"}]

    response = client.post("/v1/events", json={"events": batch}, headers=terminal.headers())

    assert_problem(response, 422, "invalid_request")
    assert "42010119900307123X" not in response.text


def test_batch_of_more_than_1000_events_is_refused(
    client: TestClient, tokens: Tokens, terminal: Terminal
) -> None:
    # As short as an event can be, so that the batch stays under the request body limit.
    batch = [
        {"event_id": f"{n:x}", "occurred_at": 0, "valid": False, "reason": "x"} for n in range(1001)
    ]

    response = client.post("/v1/events", json={"events": batch}, headers=terminal.headers())

    assert_problem(response, 422, "invalid_request")
    assert stored_events(client, tokens, terminal_id=terminal.id) == []


def test_concurrent_overlapping_uploads_store_each_event_exactly_once(
    service_settings: Settings, tokens: Tokens, client: TestClient, terminal: Terminal
) -> None:
    """Rounds of 24 uploads racing through two replicas, each batch overlapping its
    neighbours', every other one in reverse order (as a terminal retrying may send it)."""
    expected: list[str] = []
    with TestClient(create_app(service_settings)) as replica:
        replicas = itertools.cycle((client, replica))
        for base in (0, 1000, 2000):
            uploads = [
                [event(n) for n in range(base + start, base + start + 30)][:: 1 - 2 * (i % 2)]
                for i, start in enumerate(range(0, 120, 5))
            ]
            barrier = threading.Barrier(len(uploads))

            def send(
                replica: TestClient,
                batch: list[dict[str, Any]],
                barrier: threading.Barrier = barrier,
            ) -> httpx2.Response:
                barrier.wait(timeout=REQUEST_TIMEOUT)
                return replica.post(
                    "/v1/events", json={"events": batch}, headers=terminal.headers()
                )

            with ThreadPoolExecutor(max_workers=len(uploads)) as pool:
                futures = [pool.submit(send, next(replicas), batch) for batch in uploads]
                responses = [future.result(timeout=REQUEST_TIMEOUT) for future in futures]

            failed = [
                (r.status_code, r.json()["reason"]) for r in responses if r.status_code != 200
            ]
            assert not failed, failed
            assert sum(r.json()["stored"] for r in responses) == 145
            expected += [f"evt-{n:04d}" for n in range(base, base + 145)]

    stored = stored_events(client, tokens, terminal_id=terminal.id, limit="1000")
    assert sorted(e["event_id"] for e in stored) == expected


def test_batch_of_1000_events_the_documented_maximum_is_accepted(
    client: TestClient, terminal: Terminal
) -> None:
    batch = [event(n) for n in range(1000)]

    response = client.post("/v1/events", json={"events": batch}, headers=terminal.headers())

    assert response.status_code == 200, response.text
    assert response.json()["stored"] == 1000


def lock_waits_on_status_changes(postgres_url: str) -> int:
    """How many transactions in the test database wait for a lock on status_changes."""
    with psycopg.connect(postgres_url, autocommit=True) as connection:
        row = connection.execute(
            "SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation "
            "WHERE c.relname = 'status_changes' AND NOT l.granted "
            "AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())"
        ).fetchone()
    return int(row[0]) if row else 0


def test_revocation_committed_after_a_later_status_change_still_reaches_the_terminal(
    client: TestClient,
    service_settings: Settings,
    postgres_url: str,
    tokens: Tokens,
    enrol: Enrol,
    terminal: Terminal,
    root_jwk: dict[str, Any],
) -> None:
    """Status-list versions come from a sequence: another replica's revocation can take
    version N and commit after a change that took N + 1. A terminal that synced in between
    must still learn of it, through the next bundle and through the delta."""
    slow_card, slow_number = enrol()
    quick_card, _ = enrol()
    code = fresh_code(client, tokens, slow_number)
    old = sync(client, terminal, root_jwk)

    engine = make_engine(service_settings.sqlalchemy_url)
    try:
        with make_session_factory(engine)() as slow_replica, ThreadPoolExecutor(1) as pool:
            change_status(slow_replica, slow_card, "revoke", "slow-replica")
            slow_replica.flush()  # its status change has its version, not yet committed
            set_status(client, tokens, quick_card, "revoke")  # the next version, committed

            synced = pool.submit(fetch_bundle, client, terminal)
            deadline = time.monotonic() + REQUEST_TIMEOUT
            while not synced.done() and time.monotonic() < deadline:
                if lock_waits_on_status_changes(postgres_url):
                    break  # the sync waits for the slow replica's change
                time.sleep(0.05)
            slow_replica.commit()
            first = synced.result(timeout=REQUEST_TIMEOUT)
    finally:
        engine.dispose()

    bundle = verify_bundle(first.text, root_jwk)
    verdict = scan(code, bundle, service_settings, ReplayCache())
    assert verdict.reason is Reason.REVOKED, verdict
    # A terminal on the delta path learns of it too, from its old bundle or the new one.
    revoked_index = read_card(client, tokens, slow_card)["status_index"]
    for held in (old, bundle):
        response = client.get(
            "/v1/trust-bundle/status-delta",
            params={"since": held.version},
            headers=terminal.headers(),
        )
        claims = jwt.decode(response.text, jwt.PyJWK(root_jwk).key, algorithms=["EdDSA"])
        assert StatusDelta.from_json(claims["delta"]).apply(held.status).is_invalid(revoked_index)


def test_on_sqlite_a_batch_uploaded_twice_is_stored_once_and_the_bundle_is_served(
    make_settings: Callable[..., Settings],
) -> None:
    """The smaller deployment (SQLite, no Redis) keeps the same guarantees."""
    settings = make_settings()
    upgrade(settings.sqlalchemy_url)
    tokens = Tokens(settings)
    key = Ed25519PrivateKey.generate()
    body = {"scene": "eldercare", "site": "home-3", "public_jwk": public_jwk(key)}
    with TestClient(create_app(settings)) as client:
        registered = client.post("/v1/terminals", json=body, headers=tokens.operator())
        assert registered.status_code == 201, registered.text
        terminal = Terminal(registered.json()["id"], key, "EdDSA")
        batch = [event(n) for n in range(1, 6)]

        assert upload(client, terminal, batch)["stored"] == 5
        assert upload(client, terminal, [*batch[2:], event(6)]) == {
            "received": 4,
            "stored": 1,
            "duplicates": 3,
        }
        assert len(stored_events(client, tokens, terminal_id=terminal.id)) == 6
        root = open_key_store(settings.keys_dir).root_public_jwk()
        assert without_subject_key(sync(client, terminal, root)) == {
            "scene": "eldercare",
            "site": "home-3",
            "version": 0,
            "data": {},
        }


# -- scene data ---------------------------------------------------------------------------------


def test_each_terminal_receives_the_scene_data_of_its_own_scene_and_site(
    client: TestClient,
    tokens: Tokens,
    register_terminal: RegisterTerminal,
    root_jwk: dict[str, Any],
) -> None:
    # Sites of this test alone: the run's database is shared, and other tests (the examples
    # among them) set scene data for sites such as garden-court.
    site, other = f"garden-court-{uuid.uuid4().hex[:8]}", f"river-view-{uuid.uuid4().hex[:8]}"
    gate = register_terminal(scene="community", site=site)
    elsewhere = register_terminal(scene="community", site=other)
    residents = {"residents": ["a3f09c41d27e5e1f0c2a9b3d", "5e1f0c2a9b3d4e67a3f09c41"]}

    before = fetch_bundle(client, gate).headers["etag"]
    response = client.put(f"/v1/scenes/community/{site}", json=residents, headers=tokens.operator())

    assert response.status_code == 200, response.text
    assert response.json() == {"scene": "community", "site": site, "version": 1}
    assert fetch_bundle(client, gate).headers["etag"] != before
    assert without_subject_key(sync(client, gate, root_jwk)) == {
        "scene": "community",
        "site": site,
        "version": 1,
        "data": residents,
    }
    assert sync(client, elsewhere, root_jwk).scene["data"] == {}


def test_card_references_in_scene_data_become_the_cards_subjects_for_that_scene(
    client: TestClient,
    tokens: Tokens,
    enrol: Enrol,
    register_terminal: RegisterTerminal,
    root_jwk: dict[str, Any],
) -> None:
    gate = register_terminal(scene="community", site="court-with-cards")
    car_park = register_terminal(scene="parking", site="court-with-cards")
    first, second = enrol()[0], enrol()[0]
    already_a_subject = "a3f09c41d27e5e1f0c2a9b3d"
    document = {"residents": [f"card:{first}", already_a_subject, f"card:{second.upper()}"]}

    assert_ok(
        client.put(
            "/v1/scenes/community/court-with-cards", json=document, headers=tokens.operator()
        )
    )
    assert_ok(
        client.put(
            "/v1/scenes/parking/court-with-cards",
            json={"unit_fee": 300, "permits": [f"card:{first}"]},
            headers=tokens.operator(),
        )
    )

    bundle = sync(client, gate, root_jwk)
    key = subject_key(bundle)
    pseudonyms = [
        bytes.fromhex(read_card(client, tokens, card)["pseudonym"]) for card in (first, second)
    ]
    assert bundle.scene["data"] == {
        "residents": [
            subject_of(key, pseudonyms[0]),
            already_a_subject,
            subject_of(key, pseudonyms[1]),
        ]
    }
    # The same card is another subject in another scene.
    permits = sync(client, car_park, root_jwk).scene["data"]["permits"]
    assert permits == [subject_of(subject_key(sync(client, car_park, root_jwk)), pseudonyms[0])]
    assert permits[0] not in bundle.scene["data"]["residents"]


@pytest.mark.parametrize(
    "reference",
    ["card:0b0e8a5e-5c8a-4f7e-9d1a-2f4c6b8e0a1c", "card:not-a-card-id", "card:"],
    ids=["no-such-card", "not-a-uuid", "empty"],
)
def test_scene_data_naming_a_card_that_does_not_exist_is_422_unknown_card_and_not_stored(
    client: TestClient,
    tokens: Tokens,
    enrol: Enrol,
    register_terminal: RegisterTerminal,
    root_jwk: dict[str, Any],
    reference: str,
) -> None:
    terminal = register_terminal(scene="community", site="court-refused")
    card_id, _ = enrol()
    document = {"residents": [f"card:{card_id}", reference]}

    response = client.put(
        "/v1/scenes/community/court-refused", json=document, headers=tokens.operator()
    )

    problem = assert_problem(response, 422, "unknown_card")
    assert reference in problem["detail"]
    assert sync(client, terminal, root_jwk).scene["version"] == 0


@pytest.mark.parametrize(
    ("scene", "document", "field"),
    [
        ("community", {"residents": ["a3f09c41d27e"]}, "residents"),
        ("community", {"resident": []}, "resident"),
        ("community", {"visitor_entries_per_pass": 0}, "visitor_entries_per_pass"),
        ("parking", {"tariff": {"first_hour": 5}}, "unit_fee"),
    ],
    ids=["pseudonym-not-subject", "typo", "out-of-range", "parking-without-its-fee"],
)
def test_scene_data_its_adapter_refuses_is_422_invalid_scene_data_and_not_stored(
    client: TestClient,
    tokens: Tokens,
    register_terminal: RegisterTerminal,
    root_jwk: dict[str, Any],
    scene: str,
    document: dict[str, Any],
    field: str,
) -> None:
    terminal = register_terminal(scene=scene, site="site-1")

    response = client.put(f"/v1/scenes/{scene}/site-1", json=document, headers=tokens.operator())

    problem = assert_problem(response, 422, "invalid_scene_data")
    assert field in problem["detail"]
    assert sync(client, terminal, root_jwk).scene["version"] == 0


def test_scene_data_is_written_by_operators_only_and_for_known_scenes(
    client: TestClient, tokens: Tokens, terminal: Terminal
) -> None:
    body = {"unit_fee": 500, "free_minutes": 15}
    assert_problem(
        client.put("/v1/scenes/parking/lot-1", json=body, headers=tokens.citizen("x")),
        403,
        "forbidden",
    )
    assert_problem(
        client.put("/v1/scenes/parking/lot-1", json=body, headers=terminal.headers()),
        401,
        "invalid_token",
    )
    assert_problem(
        client.put("/v1/scenes/casino/lot-1", json=body, headers=tokens.operator()),
        404,
        "unknown_scene",
    )
    too_big = {"residents": ["0" * 24] * 200_000}
    assert_problem(
        client.put("/v1/scenes/community/big", json=too_big, headers=tokens.operator()),
        413,
        "payload_too_large",
    )
    assert_ok(client.put("/v1/scenes/parking/lot-1", json=body, headers=tokens.operator()))


@pytest.mark.parametrize(
    ("path", "params"),
    [
        ("/v1/trust-bundle/status-delta", {"since": str(2**31)}),
        ("/v1/events", {"terminal_id": "a\x00b"}),
    ],
    ids=["version-overflow", "nul-terminal-id"],
)
def test_out_of_range_query_values_are_422_not_500(
    client: TestClient, tokens: Tokens, terminal: Terminal, path: str, params: dict[str, str]
) -> None:
    headers = terminal.headers() if "delta" in path else tokens.operator()
    assert_problem(client.get(path, params=params, headers=headers), 422, "invalid_request")


def test_a_token_naming_a_malformed_terminal_id_is_401_not_500(client: TestClient) -> None:
    token = jwt.encode({"iss": "ab\u0000c"}, "k" * 32, algorithm="HS256")
    response = client.get("/v1/trust-bundle", headers={"Authorization": f"Bearer {token}"})
    assert_problem(response, 401, "invalid_token")


def test_a_scene_result_that_is_not_a_finite_number_is_refused(
    client: TestClient, terminal: Terminal
) -> None:
    body = (
        '{"events": [{"event_id": "e1", "occurred_at": "2026-12-01T08:00:00Z", '
        '"valid": true, "reason": "ok", "scene_result": {"fee": NaN}}]}'
    )
    response = client.post(
        "/v1/events",
        content=body,
        headers={**terminal.headers(), "Content-Type": "application/json"},
    )
    assert response.status_code in (400, 422), response.text


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"reason": "made_up", "valid": False}, "unknown_reason"),
        ({"reason": "capacity_reached", "valid": False}, "unknown_reason"),  # tourism's, not here
        ({"reason": "revoked", "valid": True}, "inconsistent_event"),
        ({"reason": "ok", "valid": False}, "inconsistent_event"),
    ],
    ids=["made-up", "another-scenes-reason", "admitted-but-revoked", "denied-but-ok"],
)
def test_events_no_terminal_of_the_scene_can_have_decided_are_refused(
    client: TestClient, tokens: Tokens, terminal: Terminal, change: dict[str, Any], reason: str
) -> None:
    batch = [event(1), {**event(2), **change}]

    response = client.post("/v1/events", json={"events": batch}, headers=terminal.headers())

    assert_problem(response, 422, reason)
    assert "evt-0002" in response.json()["detail"]
    assert stored_events(client, tokens, terminal_id=terminal.id) == []


def test_a_scenes_own_reasons_are_accepted_from_its_terminals(
    client: TestClient, register_terminal: RegisterTerminal
) -> None:
    gate = register_terminal(scene="community")
    batch = [event(1, "not_resident"), event(2, "wrong_community"), event(3, "adapter_error")]

    assert upload(client, gate, batch)["stored"] == 3


@pytest.mark.parametrize(
    "query",
    [
        {"terminal_id": "\x00x00000000-0000-4000-8000-000000000000\x8b"},
        {"terminal_id": "00000000-0000-4000-8000-000000000000 "},
        {"reason": "ok\x00"},
        {"reason": "Revoked"},
    ],
    ids=["uuid-inside-garbage", "uuid-and-space", "nul-in-reason", "upper-case-reason"],
)
def test_event_filters_that_are_not_exactly_an_id_or_a_reason_are_422_not_500(
    client: TestClient, tokens: Tokens, query: dict[str, str]
) -> None:
    """Found by schemathesis: an unanchored pattern let a UUID with NUL bytes around it
    through to PostgreSQL, which cannot take NUL in text (a 500)."""
    response = client.get("/v1/events", params=query, headers=tokens.operator())

    assert_problem(response, 422, "invalid_request")


def test_decommissioning_a_terminal_id_with_garbage_around_it_is_422(
    client: TestClient, tokens: Tokens
) -> None:
    response = client.post(
        "/v1/terminals/x00000000-0000-4000-8000-000000000000x/decommission",
        headers=tokens.operator(),
    )

    assert_problem(response, 422, "invalid_request")


# -- outside review (issue 10): event times, replayed tokens, unknown terminals -----------------


def terminal_row(client: TestClient, tokens: Tokens, terminal: Terminal) -> dict[str, Any]:
    """The terminal as operators list it (last seen, clock drift)."""
    listed = client.get("/v1/terminals", headers=tokens.operator())
    assert listed.status_code == 200, listed.text
    row: dict[str, Any] = {t["id"]: t for t in listed.json()}[terminal.id]
    return row


def _seconds_from_now(seconds: int) -> str:
    return (datetime.now(UTC) + timedelta(seconds=seconds)).isoformat()


@pytest.mark.parametrize(
    "occurred_at",
    [
        "0001-01-01T00:00:00+14:00",
        "9999-12-31T23:59:59-14:00",
        "0001-01-01T00:00:00Z",
        "1970-01-01T00:00:00Z",
        _seconds_from_now(-36 * 86_400),
        _seconds_from_now(3600),
    ],
    ids=["year-0-in-utc", "year-10000-in-utc", "year-1", "epoch", "36-days-ago", "an-hour-ahead"],
)
def test_an_event_time_outside_the_window_is_refused_by_name_and_reads_keep_working(
    client: TestClient, tokens: Tokens, terminal: Terminal, occurred_at: str
) -> None:
    """Issue 10 finding 4: year 1 at +14:00 is year 0 in UTC, which PostgreSQL stored and no
    reader could load: every read of events that included it answered 500."""
    batch = [event(1), {**event(2), "occurred_at": occurred_at}]

    response = client.post("/v1/events", json={"events": batch}, headers=terminal.headers())

    problem = assert_problem(response, 422, "event_time_out_of_range")
    assert "evt-0002" in problem["detail"]
    # The good event alone goes through (the terminal splits a refused batch so).
    assert upload(client, terminal, [event(1)])["stored"] == 1
    # Every operator's read keeps working (this one reads all terminals' events).
    everything = stored_events(client, tokens, limit="1000")
    assert [e["event_id"] for e in everything if e["terminal_id"] == terminal.id] == ["evt-0001"]


def test_event_times_in_the_window_with_any_offset_are_stored_and_returned_in_utc(
    client: TestClient, tokens: Tokens, terminal: Terminal
) -> None:
    at = EVENTS_START.astimezone(timezone(timedelta(hours=14)))
    upload(client, terminal, [{**event(1), "occurred_at": at.isoformat()}])

    [stored] = stored_events(client, tokens, terminal_id=terminal.id)

    assert datetime.fromisoformat(stored["occurred_at"]) == EVENTS_START
    assert datetime.fromisoformat(stored["occurred_at"]).utcoffset() == timedelta(0)


@pytest.mark.parametrize(
    "window",
    [
        {"since": "0001-01-01T00:00:00+14:00"},
        {"until": "9999-12-31T23:59:59-14:00"},
        {"since": "0001-01-01T00:00:00+14:00", "until": "9999-12-31T23:59:59-14:00"},
        {"since": "0001-01-01T00:00:00"},
    ],
    ids=["since-year-0-in-utc", "until-year-10000-in-utc", "both", "without-offset"],
)
def test_event_filters_at_the_ends_of_time_select_everything_not_500(
    client: TestClient, tokens: Tokens, terminal: Terminal, window: dict[str, str]
) -> None:
    upload(client, terminal, [event(1), event(2)])

    found = stored_events(client, tokens, terminal_id=terminal.id, **window)

    assert [e["event_id"] for e in found] == ["evt-0001", "evt-0002"]


def test_on_sqlite_an_event_with_an_offset_is_found_by_its_utc_time(
    make_settings: Callable[..., Settings],
) -> None:
    """SQLite keeps no offset: a time is stored in UTC, or a filter misses it by the offset."""
    settings = make_settings()
    upgrade(settings.sqlalchemy_url)
    tokens = Tokens(settings)
    key = Ed25519PrivateKey.generate()
    body = {"scene": "eldercare", "site": "home-3", "public_jwk": public_jwk(key)}
    at = EVENTS_START.astimezone(timezone(timedelta(hours=8)))
    with TestClient(create_app(settings)) as client:
        registered = client.post("/v1/terminals", json=body, headers=tokens.operator())
        terminal = Terminal(registered.json()["id"], key, "EdDSA")
        upload(client, terminal, [{**event(1), "occurred_at": at.isoformat()}])

        found = stored_events(
            client,
            tokens,
            since=(EVENTS_START - timedelta(seconds=1)).isoformat(),
            until=(EVENTS_START + timedelta(seconds=1)).isoformat(),
        )

    assert [datetime.fromisoformat(e["occurred_at"]) for e in found] == [EVENTS_START]


def audit_actions(url: str, action: str) -> list[tuple[str, dict[str, Any]]]:
    with psycopg.connect(url) as connection:
        rows = connection.execute(
            "SELECT actor, detail FROM audit_records WHERE action = %s ORDER BY id", (action,)
        ).fetchall()
    return [
        (actor, json.loads(detail) if isinstance(detail, str) else detail) for actor, detail in rows
    ]


def test_operator_removes_one_event_with_an_audit_record_of_what_it_was(
    client: TestClient, tokens: Tokens, terminal: Terminal, postgres_url: str
) -> None:
    upload(client, terminal, [event(1), event(2, "revoked")])
    path = f"/v1/events/{terminal.id}/evt-0002"

    assert client.delete(path, headers=tokens.operator()).status_code == 204

    assert [e["event_id"] for e in stored_events(client, tokens, terminal_id=terminal.id)] == [
        "evt-0001"
    ]
    removals = [d for _, d in audit_actions(postgres_url, "event.delete")]
    assert {"terminal": terminal.id, "event": "evt-0002", "reason": "revoked"}.items() <= (
        removals[-1].items()
    )
    assert_problem(client.delete(path, headers=tokens.operator()), 404, "event_not_found")


def test_only_operators_remove_events(
    client: TestClient, tokens: Tokens, terminal: Terminal
) -> None:
    upload(client, terminal, [event(1)])
    path = f"/v1/events/{terminal.id}/evt-0001"

    assert_problem(client.delete(path, headers=tokens.verifier()), 403, "forbidden")
    assert_problem(client.delete(path, headers=terminal.headers()), 401, "invalid_token")
    assert_problem(client.delete(path), 401, "missing_token")
    assert_problem(
        client.delete(f"/v1/events/{terminal.id}/evt%000001", headers=tokens.operator()),
        422,
        "invalid_request",
    )
    assert len(stored_events(client, tokens, terminal_id=terminal.id)) == 1


def test_a_replayed_terminal_token_changes_neither_last_seen_nor_clock_drift(
    client: TestClient, tokens: Tokens, terminal: Terminal
) -> None:
    """Issue 10 finding 5: operators watch last_seen_at after an emergency key removal; a
    replayed (captured) token must not make the terminal look alive, nor move its drift."""
    captured = terminal.headers(now=int(time.time()) - 300)
    assert client.get("/v1/trust-bundle", headers=captured).status_code == 200
    assert client.get("/v1/trust-bundle", headers=terminal.headers()).status_code == 200
    before = terminal_row(client, tokens, terminal)
    assert abs(before["clock_drift"]) <= 5

    assert_problem(client.get("/v1/trust-bundle", headers=captured), 401, "token_replayed")

    assert terminal_row(client, tokens, terminal) == before


def _unsigned_for(terminal_id: str, _: Terminal) -> str:
    now = int(time.time())
    claims = {"iss": terminal_id, "sub": terminal_id, "aud": "idcode", "iat": now}
    return jwt.encode({**claims, "exp": now + 60, "jti": "x"}, "", algorithm="none")


def _ed25519_by_another_key(terminal_id: str, _: Terminal) -> str:
    return terminal_token(terminal_id, Ed25519PrivateKey.generate())


def _p256_by_another_key(terminal_id: str, _: Terminal) -> str:
    return terminal_token(terminal_id, ec.generate_private_key(ec.SECP256R1()), "ES256")


def _hs256_with_the_public_key(terminal_id: str, terminal: Terminal) -> str:
    return terminal_token(terminal_id, b"k" * 32, "HS256")


def _signature_cut_off(terminal_id: str, terminal: Terminal) -> str:
    return terminal_token(terminal_id, terminal.private_key).rsplit(".", 1)[0] + ".AAAA"


@pytest.mark.parametrize(
    "forge",
    [
        _unsigned_for,
        _ed25519_by_another_key,
        _p256_by_another_key,
        _hs256_with_the_public_key,
        _signature_cut_off,
    ],
    ids=["alg-none", "ed25519-another-key", "p256-another-key", "hs256", "bad-signature"],
)
@pytest.mark.parametrize("path", ["/v1/trust-bundle", "/v1/trust-bundle/status-delta?since=0"])
def test_a_forged_token_gets_the_same_answer_whether_its_terminal_exists_or_not(
    client: TestClient, terminal: Terminal, forge: Callable[[str, Terminal], str], path: str
) -> None:
    """Issue 10 finding 8b: the answer told "no such terminal" from a signature failure."""
    unknown = "00000000-0000-4000-8000-000000000000"

    answers = [
        client.get(path, headers={"Authorization": f"Bearer {forge(terminal_id, terminal)}"})
        for terminal_id in (terminal.id, unknown)
    ]

    assert_problem(answers[0], 401, "invalid_token")
    assert (answers[0].status_code, answers[0].headers.get("content-type"), answers[0].json()) == (
        answers[1].status_code,
        answers[1].headers.get("content-type"),
        answers[1].json(),
    )


@pytest.fixture
def database_at_0004() -> Iterator[str]:
    """A PostgreSQL database migrated to revision 0004: as it was before event times were
    bounded."""
    name = f"idcode_test_0004_{RUN_ID}_{secrets.token_hex(3)}"
    with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True, connect_timeout=5) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        try:
            url = POSTGRES_ADMIN_URL.rsplit("/", 1)[0] + "/" + name
            upgrade(Settings(database_url=url).sqlalchemy_url, "0004")
            yield url
        finally:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_events_no_reader_can_load_are_removed_by_the_upgrade_with_an_audit_record(
    make_settings: Callable[..., Settings], database_at_0004: str
) -> None:
    """Events the unbounded service stored (year 0 and 10000 in UTC) broke every read that
    included them; the upgrade removes them, and only them, noting each in the audit trail."""
    terminal_id = "11111111-1111-4111-8111-111111111111"
    with psycopg.connect(database_at_0004) as db:
        db.execute(
            "INSERT INTO terminals (id, scene, site, public_jwk, active, created_at)"
            " VALUES (%s, 'community', 'hall-1', '{}', true, now())",
            (terminal_id,),
        )
        for event_id, at in [
            ("year-0", "0001-01-01T00:00:00+14:00"),
            ("year-10000", "9999-12-31T23:59:59-14:00"),
            ("kept", EVENTS_START.isoformat()),
        ]:
            db.execute(
                "INSERT INTO scan_events (terminal_id, event_id, occurred_at, valid, reason,"
                " scene_result, received_at) VALUES (%s, %s, %s, false, 'revoked', '{}', now())",
                (terminal_id, event_id, at),
            )
    settings = make_settings(database_url=database_at_0004)

    upgrade(settings.sqlalchemy_url)

    with TestClient(create_app(settings)) as client:
        read = stored_events(client, Tokens(settings))
    assert [e["event_id"] for e in read] == ["kept"]
    removed = audit_actions(database_at_0004, "event.delete")
    assert [(actor, detail["event"]) for actor, detail in removed] == [
        ("migration 0005", "year-0"),
        ("migration 0005", "year-10000"),
    ]
    assert all(detail["terminal"] == terminal_id for _, detail in removed)
