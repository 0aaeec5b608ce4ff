"""Identification with consent under attack (issue 12, an outside review): hostile inputs to
every new route, token confusion, the consent rules under races and at their edges, what
refusals, logs and subjects could leak, and server errors. Each test states what an attacker
cannot get; docs/identity.md has the rules."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import secrets
import threading
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import httpx2
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi.testclient import TestClient

from idcode.attributes import ATTRIBUTES
from idcode.service.api.app import create_app
from idcode.service.identification import Presentation
from idcode.service.settings import Settings
from idcode.terminaltoken import RELYING_PARTY_AUDIENCE, TERMINAL_AUDIENCE, terminal_token
from idcode.testing import random_id_number
from tests.service.test_identification import (
    Enrol,
    Party,
    RegisterParty,
    assert_problem,
    bundle_scene,
    consent_code,
    identify,
    plain_code,
    public_jwk,
    register_party,
    register_terminal,
)
from tests.services import REDIS_RUN_PREFIX, Tokens

__all__ = ["register_party"]  # the fixture, shared with test_identification

#: A value no answer may repeat: it stands for whatever a caller sent.
MARKER = "zq7Marker"

# A well-formed id no record has, fixed: parameters are the same in every collection (xdist
# workers compare them).
FIXED_ID = uuid.UUID("6f1c3b52-7d2e-4a8b-9c0d-1e2f3a4b5c6d")


# One service for the whole module: its ~170 cases each built and started their own (a third
# of a second apiece). Every case enrols its own citizens and registers its own parties, so
# none depends on another's; the database is one per run anyway (tests/services.py).
@pytest.fixture(scope="module")
def service_settings(
    tmp_path_factory: pytest.TempPathFactory, postgres_url: str, redis_url: str
) -> Settings:
    home = tmp_path_factory.mktemp("identification-attacks")
    return Settings(
        environment="development",
        keys_dir=home / "keys",
        data_dir=home / "data",
        demo_data=False,
        database_url=postgres_url,
        redis_url=redis_url,
        redis_prefix=f"{REDIS_RUN_PREFIX}{secrets.token_hex(3)}:",
    )


@pytest.fixture(scope="module")
def client(service_settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(service_settings)) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def tokens(service_settings: Settings) -> Tokens:
    return Tokens(service_settings)


def parallel(count: int, call: Callable[[int], int]) -> list[int]:
    """``call(i)`` for i in range(count), all at once on threads; the statuses, sorted."""
    statuses: list[int] = []
    lock = threading.Lock()
    start = threading.Barrier(count)

    def run(index: int) -> None:
        start.wait(30)
        status = call(index)
        with lock:
            statuses.append(status)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    return sorted(statuses)


def raw_token(party_id: str, key: Any, alg: str = "EdDSA", **claims: Any) -> str:
    """A request token with chosen claims (a hostile or broken counter's)."""
    now = int(datetime.now(UTC).timestamp())
    body = {
        "iss": party_id,
        "sub": party_id,
        "aud": RELYING_PARTY_AUDIENCE,
        "iat": now,
        "exp": now + 60,
        "jti": uuid.uuid4().hex,
    } | claims
    return jwt.encode(body, key, algorithm=alg)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def send(
    client: TestClient, method: str, path: str, body: Any, headers: dict[str, str]
) -> httpx2.Response:
    """``body`` as JSON with every non-ASCII character escaped, so that unpaired surrogates
    (which no UTF-8 encoder takes) reach the service as ``\\ud800`` escapes."""
    content = json.dumps(body, ensure_ascii=True)
    headers = {"Content-Type": "application/json"} | headers
    return client.request(method, path, content=content, headers=headers)


def registration(key: Any, **change: Any) -> dict[str, Any]:
    return {
        "name": "Hall",
        "sector": "government",
        "purposes": ["registration"],
        "attributes": ["name"],
        "public_jwk": public_jwk(key),
        **change,
    }


def assert_refused_quietly(response: httpx2.Response, *sent: str) -> None:
    """A 4xx problem that repeats none of ``sent``."""
    assert 400 <= response.status_code < 500, response.text
    for value in sent:
        assert value not in response.text


# -- hostile inputs ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        None,
        [],
        "hall",
        {"name": None},
        {"name": MARKER + "\ud800"},
        {"name": MARKER + "\x00"},
        {"name": MARKER * 100},
        {"name": 7},
        {"sector": None},
        {"sector": [MARKER]},
        {"sector": MARKER + "\x00"},
        {"purposes": None},
        {"purposes": "registration"},
        {"purposes": [MARKER] * 17},
        {"purposes": ["registration"] * 10_000},
        {"purposes": ["registration", None]},
        {"purposes": ["regi\ud800"]},
        {"attributes": None},
        {"attributes": "name"},
        {"attributes": [MARKER]},
        {"attributes": ["name"] * 8},
        {"attributes": [{"name": 1}]},
        {"attributes": ["name\x00"]},
        {"public_jwk": None},
        {"public_jwk": []},
        {"public_jwk": {"kty": ["OKP"], "crv": "Ed25519", "x": MARKER}},
        {"public_jwk": {"kty": "OKP", "crv": "Ed25519", "x": MARKER + "\x00"}},
        {"public_jwk": {"kty": "OKP", "crv": "Ed25519", "x": 12}},
        {"public_jwk": {"kty": "OKP", "crv": "Ed25519", "x": MARKER + "\ud800"}},
        {"public_jwk": {"kty": "EC", "crv": "P-256", "x": MARKER, "y": None}},
        {"public_jwk": {"kty": "oct", "k": MARKER}},
    ],
)
def test_a_hostile_relying_party_registration_is_refused_without_echo(
    client: TestClient, tokens: Tokens, body: Any
) -> None:
    document = (
        registration(Ed25519PrivateKey.generate(), **body) if isinstance(body, dict) else body
    )
    response = send(client, "POST", "/v1/relying-parties", document, tokens.operator())
    assert_refused_quietly(response, MARKER)


def test_a_registration_with_a_private_key_does_not_echo_it(
    client: TestClient, tokens: Tokens
) -> None:
    key = Ed25519PrivateKey.generate()
    private = jwt.algorithms.OKPAlgorithm.to_jwk(key, as_dict=True)
    response = client.post(
        "/v1/relying-parties", json=registration(key, public_jwk=private), headers=tokens.operator()
    )
    assert_refused_quietly(response, private["d"])


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/x-www-form-urlencoded", "application/xml", ""]
)
def test_a_registration_in_another_media_type_is_refused(
    client: TestClient, tokens: Tokens, content_type: str
) -> None:
    body = json.dumps(registration(Ed25519PrivateKey.generate()))
    headers = tokens.operator() | {"Content-Type": content_type}
    response = client.post("/v1/relying-parties", content=body, headers=headers)
    # Not read as JSON, whatever it holds: 415, naming the type (issue 15, rough edge c).
    assert response.status_code == 415, response.text
    assert response.json()["reason"] == "unsupported_media_type"


@pytest.mark.parametrize(
    "disclose",
    [
        [],
        "all",
        7,
        {"to": None, "attributes": []},
        {"to": "{party}", "attributes": None},
        {"to": "{party}", "attributes": "name"},
        {"to": "{party}"},
        {"attributes": ["name"]},
        {"to": "{party}\x00", "attributes": []},
        {"to": "{party}\n", "attributes": []},
        {"to": " {party}", "attributes": []},
        {"to": "{PARTY}", "attributes": []},
        {"to": MARKER, "attributes": []},
        {"to": "{party}", "attributes": [MARKER]},
        {"to": "{party}", "attributes": [MARKER + "\ud800"]},
        {"to": "{party}", "attributes": ["name\x00"]},
        {"to": "{party}", "attributes": ["name"] * 8},
        {"to": "{party}", "attributes": ["name"] * 100_000},
        {"to": "{party}", "attributes": [None]},
        {"to": "{party}", "attributes": [["name"]]},
        {"to": "{party}", "attributes": ["\uff2e\uff21\uff2d\uff25"]},
        {"to": "{party}", "attributes": ["name"], "purpose": MARKER},
        {"to": "{party}", "attributes": ["name"], "purpose": "registration\x00"},
        {"to": "{party}", "attributes": ["name"], "purpose": "registration\n"},
        {"to": "{party}", "attributes": ["name"], "purpose": "\ud800"},
        {"to": "{party}", "attributes": ["name"], "purpose": 1},
        {"to": "{party}", "attributes": ["name"], "purpose": ["registration"]},
        {"to": "{party}", "attributes": ["name"], "scope": "all"},
    ],
)
def test_a_hostile_consent_is_refused_and_no_code_issued(
    client: TestClient, tokens: Tokens, enrol: Enrol, register_party: RegisterParty, disclose: Any
) -> None:
    _, id_number = enrol()
    party = register_party()

    def fill(value: Any) -> Any:
        if isinstance(value, str):
            return value.replace("{party}", party.id).replace("{PARTY}", party.id.upper())
        if isinstance(value, dict):
            return {k: fill(v) for k, v in value.items()}
        return value

    response = send(
        client, "POST", "/v1/codes", {"disclose": fill(disclose)}, tokens.citizen(id_number)
    )
    assert_refused_quietly(response, MARKER)
    assert "code" not in response.json()


@pytest.mark.parametrize("body", [[], "x", 1, [{"disclose": None}], {"disclose": {}, "x": 1}])
def test_a_code_request_body_that_is_no_object_is_refused(
    client: TestClient, tokens: Tokens, enrol: Enrol, body: Any
) -> None:
    _, id_number = enrol()
    response = send(client, "POST", "/v1/codes", body, tokens.citizen(id_number))
    assert_refused_quietly(response)


def test_a_consent_sent_as_another_media_type_issues_no_code(
    client: TestClient, tokens: Tokens, enrol: Enrol, register_party: RegisterParty
) -> None:
    """A consent the service did not read must not come back as an ordinary code the app
    would take for a consent code."""
    _, id_number = enrol()
    party = register_party()
    body = json.dumps({"disclose": {"to": party.id, "attributes": ["name"]}})
    for content_type in ("text/plain", "application/x-www-form-urlencoded"):
        headers = tokens.citizen(id_number) | {"Content-Type": content_type}
        response = client.post("/v1/codes", content=body, headers=headers)
        assert_refused_quietly(response)


@pytest.mark.parametrize(
    "body",
    [
        None,
        [],
        {"code": None, "purpose": "registration"},
        {"code": 12, "purpose": "registration"},
        {"code": ["WH1:"], "purpose": "registration"},
        {"code": "WH1:" + MARKER + "\ud800", "purpose": "registration"},
        {"code": "WH1:" + MARKER + "\x00", "purpose": "registration"},
        {"code": "WH1:" + "A" * 100_000, "purpose": "registration"},
        {"code": "", "purpose": "registration"},
        {"code": "{code}", "purpose": None},
        {"code": "{code}", "purpose": MARKER},
        {"code": "{code}", "purpose": "registration\n"},
        {"code": "{code}", "purpose": "registration\x00"},
        {"code": "{code}", "purpose": "\uff52egistration"},
        {"code": "{code}", "purpose": "registration", "counter": MARKER + "\x00"},
        {"code": "{code}", "purpose": "registration", "counter": MARKER + "\n"},
        {"code": "{code}", "purpose": "registration", "counter": MARKER + "窗口"},
        {"code": "{code}", "purpose": "registration", "counter": MARKER * 10},
        {"code": "{code}", "purpose": "registration", "counter": ""},
        {"code": "{code}", "purpose": "registration", "counter": 3},
        {"code": "{code}", "purpose": "registration", "subject": "0" * 24},
    ],
)
def test_a_hostile_identification_is_refused_without_echo_and_spends_nothing(
    client: TestClient, tokens: Tokens, enrol: Enrol, register_party: RegisterParty, body: Any
) -> None:
    _, id_number = enrol()
    party = register_party()
    code = consent_code(client, tokens, id_number, party, ["name"])
    if isinstance(body, dict) and body.get("code") == "{code}":
        body = body | {"code": code}
    response = send(client, "POST", "/v1/identify", body, party.headers())
    assert_refused_quietly(response, MARKER)
    assert "subject" not in response.json()
    assert identify(client, party, code).status_code == 200


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded"])
def test_an_identification_in_another_media_type_is_refused(
    client: TestClient,
    tokens: Tokens,
    enrol: Enrol,
    register_party: RegisterParty,
    content_type: str,
) -> None:
    _, id_number = enrol()
    party = register_party()
    code = consent_code(client, tokens, id_number, party, ["name"])
    body = json.dumps({"code": code, "purpose": "registration"})
    headers = party.headers() | {"Content-Type": content_type}
    assert_refused_quietly(client.post("/v1/identify", content=body, headers=headers))
    assert identify(client, party, code).status_code == 200


@pytest.mark.parametrize(
    "subject",
    [
        "0" * 23,
        "0" * 25,
        "A" * 24,
        "0" * 24 + "%00",
        "%00" + "0" * 24,
        "0" * 24 + "%0A",
        "\uff10" * 24,
        "0" * 22 + "%C3%A9",
        "0" * 22 + "%ED%A0%80",
        "0" * 10_000,
        "..%2F" + "0" * 19,
    ],
)
def test_a_malformed_subject_is_refused_on_every_link_route(
    client: TestClient, register_party: RegisterParty, subject: str
) -> None:
    party = register_party()
    for method in ("PUT", "DELETE"):
        response = client.request(method, f"/v1/links/{subject}", headers=party.headers())
        assert response.status_code in (404, 422), (method, response.text)
    assert client.get("/v1/links", headers=party.headers()).json() == {"subjects": []}


@pytest.mark.parametrize(
    "party_id",
    [
        "0" * 36,
        str(FIXED_ID).upper(),
        str(FIXED_ID) + "%00",
        "%00" + str(FIXED_ID),
        str(FIXED_ID) + "%0A",
        "x" * 5000,
        "%ED%A0%80",
    ],
)
def test_a_malformed_relying_party_id_is_refused_on_every_operator_route(
    client: TestClient, tokens: Tokens, party_id: str
) -> None:
    for method, path in (
        ("GET", f"/v1/relying-parties/{party_id}"),
        ("POST", f"/v1/relying-parties/{party_id}/deactivate"),
        ("GET", f"/v1/relying-parties/{party_id}/disclosures"),
    ):
        response = client.request(method, path, headers=tokens.operator())
        assert response.status_code in (404, 422), (path, response.text)


@pytest.mark.parametrize(
    "params",
    [
        {"before": "0"},
        {"before": "-1"},
        {"before": "1"},
        {"before": str(2**31)},
        {"before": str(2**62)},
        {"before": str(2**63)},
        {"before": str(2**64)},
        {"before": "1e3"},
        {"before": "NaN"},
        {"before": MARKER},
        {"limit": "0"},
        {"limit": "-5"},
        {"limit": "1000"},
        {"limit": "1001"},
        {"limit": str(10**30)},
        {"limit": "1.5"},
    ],
)
def test_disclosure_listings_with_extreme_paging_answer_without_a_server_error(
    client: TestClient,
    tokens: Tokens,
    enrol: Enrol,
    register_party: RegisterParty,
    params: dict[str, str],
) -> None:
    _, id_number = enrol()
    party = register_party()
    assert identify(client, party, consent_code(client, tokens, id_number, party, [])).is_success
    for path, headers in (
        ("/v1/me/disclosures", tokens.citizen(id_number)),
        (f"/v1/relying-parties/{party.id}/disclosures", tokens.operator()),
    ):
        response = client.get(path, params=params, headers=headers)
        assert response.status_code in (200, 422), (path, response.text)
        assert MARKER not in response.text
        if response.status_code == 200 and int(params.get("before", "0")) > 2**20:
            assert len(response.json()) == 1  # every record is older than that


# -- token confusion --------------------------------------------------------------------------


@pytest.fixture
def twin(client: TestClient, tokens: Tokens, register_party: RegisterParty) -> tuple[Party, str]:
    """A relying party and a terminal registered with one and the same key: (party, terminal
    id). Their ids differ; a token for either must not open the other's routes."""
    key = Ed25519PrivateKey.generate()
    party = register_party(private_key=key)
    body = {"scene": "community", "site": "twin-1", "public_jwk": public_jwk(key)}
    registered = client.post("/v1/terminals", json=body, headers=tokens.operator())
    assert registered.status_code == 201, registered.text
    return party, registered.json()["id"]


def test_a_terminals_token_does_not_open_relying_party_routes_with_a_shared_key(
    client: TestClient, tokens: Tokens, enrol: Enrol, twin: tuple[Party, str]
) -> None:
    party, terminal = twin
    _, id_number = enrol()
    code = consent_code(client, tokens, id_number, party, ["name"])
    key = party.private_key
    confused = [
        terminal_token(terminal, key),  # the terminal's own token
        raw_token(terminal, key),  # the terminal's id, the parties' audience
        raw_token(party.id, key, aud=TERMINAL_AUDIENCE),  # the party's id, terminals' audience
        raw_token(party.id, key, aud=[TERMINAL_AUDIENCE]),
        raw_token(terminal, key, aud=[TERMINAL_AUDIENCE, RELYING_PARTY_AUDIENCE]),
        raw_token(party.id, key, sub=terminal),
        raw_token(terminal, key, sub=party.id),
    ]
    for token in confused:
        body = {"code": code, "purpose": "registration"}
        response = client.post("/v1/identify", json=body, headers=bearer(token))
        assert_problem(response, 401, "invalid_token")
        assert_problem(client.get("/v1/links", headers=bearer(token)), 401, "invalid_token")
    assert identify(client, party, code).status_code == 200


def test_a_relying_partys_token_does_not_open_terminal_routes_with_a_shared_key(
    client: TestClient, twin: tuple[Party, str]
) -> None:
    party, terminal = twin
    key = party.private_key
    for token in (
        raw_token(party.id, key),
        raw_token(terminal, key),  # the terminal's id, the parties' audience
        raw_token(party.id, key, aud=TERMINAL_AUDIENCE),  # the party's id as a terminal
    ):
        assert_problem(client.get("/v1/trust-bundle", headers=bearer(token)), 401, "invalid_token")
    assert client.get("/v1/trust-bundle", headers=bearer(terminal_token(terminal, key))).is_success


def test_an_audience_list_naming_both_kinds_of_caller_is_refused(
    client: TestClient, tokens: Tokens, enrol: Enrol, twin: tuple[Party, str]
) -> None:
    """One token must never be good for both kinds of caller: ``aud`` names one of them."""
    party, terminal = twin
    both = [TERMINAL_AUDIENCE, RELYING_PARTY_AUDIENCE]
    key = party.private_key
    assert_problem(
        client.get("/v1/links", headers=bearer(raw_token(party.id, key, aud=both))),
        401,
        "invalid_token",
    )
    assert_problem(
        client.get("/v1/trust-bundle", headers=bearer(raw_token(terminal, key, aud=both))),
        401,
        "invalid_token",
    )


def test_algorithm_confusion_is_refused(
    client: TestClient, tokens: Tokens, enrol: Enrol, register_party: RegisterParty
) -> None:
    _, id_number = enrol()
    ec_party = register_party(private_key=ec.generate_private_key(ec.SECP256R1()))
    ed_party = register_party()
    code = consent_code(client, tokens, id_number, ec_party, ["name"])
    body = {"code": code, "purpose": "registration"}

    def unsigned(party_id: str, alg: str) -> str:
        def part(value: dict[str, Any]) -> str:
            return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

        now = int(datetime.now(UTC).timestamp())
        claims = {
            "iss": party_id,
            "sub": party_id,
            "aud": RELYING_PARTY_AUDIENCE,
            "iat": now,
            "exp": now + 60,
            "jti": uuid.uuid4().hex,
        }
        return f"{part({'alg': alg, 'typ': 'JWT'})}.{part(claims)}."

    def hmac_signed(party_id: str, secret: bytes) -> str:
        """HS256 keyed with what the service stores publicly (the classic confusion); PyJWT
        itself refuses to make one with a PEM key, so it is made by hand."""
        head, claims, _ = unsigned(party_id, "HS256").split(".")
        mac = hmac.new(secret, f"{head}.{claims}".encode(), hashlib.sha256).digest()
        return f"{head}.{claims}." + base64.urlsafe_b64encode(mac).rstrip(b"=").decode()

    public_pem = ec_party.private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    x = public_jwk(ec_party.private_key)["x"]
    forged = [
        unsigned(ec_party.id, "none"),
        unsigned(ec_party.id, "None"),
        # HMAC keyed with what the service stores publicly (the classic confusion).
        hmac_signed(ec_party.id, public_pem),
        hmac_signed(ec_party.id, x.encode()),
        hmac_signed(ec_party.id, json.dumps(public_jwk(ec_party.private_key)).encode()),
        # The P-256 party's id with an Ed25519 signature (another party's key, say).
        raw_token(ec_party.id, ed_party.private_key, "EdDSA"),
        raw_token(ec_party.id, ec.generate_private_key(ec.SECP256R1()), "ES256"),
        raw_token(ed_party.id, ec_party.private_key, "ES256"),
    ]
    for token in forged:
        response = client.post("/v1/identify", json=body, headers=bearer(token))
        problem = assert_problem(response, 401, "invalid_token")
        # A forgery learns nothing about the claims it sent.
        assert "exp" not in problem.get("detail", "") and "aud" not in problem.get("detail", "")
    assert identify(client, ec_party, code).status_code == 200


@pytest.mark.parametrize(
    "claims",
    [
        {"exp": "{now}-700", "iat": "{now}-760"},  # expired past the drift allowance
        {"iat": "{now}+1000", "exp": "{now}+1060"},  # from the future
        {"iat": "{now}", "exp": "{now}+301"},  # too long
        {"iat": "{now}", "exp": "{now}"},  # no lifetime
        {"iat": "{now}", "exp": "{now}-10"},
        {"iat": True, "exp": "{now}+60"},
        {"iat": "{now}", "exp": 1e309},
        {"iat": 10**400, "exp": 10**400 + 60},
        {"iat": -(10**400), "exp": -(10**400) + 60},
        {"iat": 2**60, "exp": 2**60 + 60},
        {"iat": 1e300, "exp": 1e300 + 1e286},
        {"iat": -1e300, "exp": -1e300 + 1e286},
        {"iat": "{now}", "exp": "{now}+60", "jti": ""},
        {"iat": "{now}", "exp": "{now}+60", "jti": 5},
        {"iat": "{now}", "exp": "{now}+60", "jti": "a\x00b"},
        {"iat": "{now}", "exp": "{now}+60", "jti": "x" * 129},
        {"iat": "{now}", "exp": "{now}+60", "nbf": "{now}+100"},
    ],
)
def test_a_signed_token_with_broken_times_or_ids_is_refused_not_a_server_error(
    client: TestClient, register_party: RegisterParty, claims: dict[str, Any]
) -> None:
    """Only the key's holder can send these; the service still answers 401, never 500."""
    party = register_party()
    now = int(datetime.now(UTC).timestamp())

    def resolve(value: Any) -> Any:
        if isinstance(value, str) and value.startswith("{now}"):
            return now + int(value[5:] or 0)
        return value

    token = raw_token(party.id, party.private_key, **{k: resolve(v) for k, v in claims.items()})
    response = client.get("/v1/links", headers=bearer(token))
    assert response.status_code == 401, response.text


def test_a_token_spent_on_one_replica_is_refused_by_another(
    service_settings: Settings,
    client: TestClient,
    tokens: Tokens,
    enrol: Enrol,
    register_party: RegisterParty,
) -> None:
    _, id_number = enrol()
    party = register_party()
    code = consent_code(client, tokens, id_number, party, ["name"])
    other = consent_code(client, tokens, id_number, party, ["name"])
    headers = party.headers()
    with TestClient(create_app(service_settings)) as replica:
        first = client.post(
            "/v1/identify", json={"code": code, "purpose": "registration"}, headers=headers
        )
        assert first.status_code == 200, first.text
        again = replica.post(
            "/v1/identify", json={"code": other, "purpose": "registration"}, headers=headers
        )
        assert_problem(again, 401, "token_replayed")
        # And a code identified on one replica is used on the other.
        assert_problem(identify(replica, party, code), 409, "code_used")


def test_a_party_deactivated_on_one_replica_is_refused_at_once_by_another(
    service_settings: Settings,
    client: TestClient,
    tokens: Tokens,
    enrol: Enrol,
    register_party: RegisterParty,
) -> None:
    """The other replica still holds the party as active in its cache (partycache.MAX_AGE):
    the transactions that record an identification or change a link refuse it themselves."""
    _, id_number = enrol()
    party = register_party()
    with TestClient(create_app(service_settings)) as replica:
        subject = identify(replica, party, consent_code(client, tokens, id_number, party, []))
        assert subject.status_code == 200, subject.text  # the replica now caches the party
        code = consent_code(client, tokens, id_number, party, ["name"])
        deactivated = client.post(
            f"/v1/relying-parties/{party.id}/deactivate", headers=tokens.operator()
        )
        assert deactivated.status_code == 200
        assert_problem(identify(replica, party, code), 403, "relying_party_deactivated")
        link = f"/v1/links/{subject.json()['subject']}"
        assert_problem(replica.put(link, headers=party.headers()), 403, "relying_party_deactivated")
        assert_problem(
            replica.delete(link, headers=party.headers()), 403, "relying_party_deactivated"
        )
    audit = client.get(
        f"/v1/relying-parties/{party.id}/disclosures", headers=tokens.operator()
    ).json()
    assert len(audit) == 1


def test_one_token_raced_to_two_replicas_is_accepted_once(
    service_settings: Settings,
    client: TestClient,
    tokens: Tokens,
    enrol: Enrol,
    register_party: RegisterParty,
) -> None:
    _, id_number = enrol()
    party = register_party()
    codes = [consent_code(client, tokens, id_number, party, []) for _ in range(8)]
    headers = party.headers()
    with TestClient(create_app(service_settings)) as replica:
        apps = (client, replica)

        def present(index: int) -> int:
            body = {"code": codes[index], "purpose": "registration"}
            return apps[index % 2].post("/v1/identify", json=body, headers=headers).status_code

        assert parallel(8, present) == [200] + [401] * 7


# -- consent rules ----------------------------------------------------------------------------


def test_refusals_that_are_not_the_partys_business_do_not_spend_the_consent(
    client: TestClient, tokens: Tokens, enrol: Enrol, register_party: RegisterParty
) -> None:
    _, id_number = enrol()
    hall = register_party(purposes=["registration", "benefit_application"])
    rogue = register_party(purposes=["registration", "benefit_application"], name="Rogue")
    code = consent_code(client, tokens, id_number, hall, ["name"], purpose="registration")
    assert_problem(identify(client, rogue, code), 403, "consented_to_another_party")
    assert_problem(
        identify(client, hall, code, purpose="benefit_application"), 403, "purpose_mismatch"
    )
    assert_problem(identify(client, hall, code, purpose="marketing"), 422, "unknown_purpose")
    assert identify(client, hall, code).status_code == 200


def test_a_rogue_racing_the_named_party_never_gets_the_consent(
    client: TestClient, tokens: Tokens, enrol: Enrol, register_party: RegisterParty
) -> None:
    _, id_number = enrol()
    hall, rogue = register_party(), register_party(name="Rogue")
    code = consent_code(client, tokens, id_number, hall, ["name"])

    def present(index: int) -> int:
        return identify(client, hall if index % 4 == 0 else rogue, code).status_code

    assert parallel(12, present) == [200] + [403] * 9 + [409] * 2
    record = client.get("/v1/me/disclosures", headers=tokens.citizen(id_number)).json()
    assert [d["relying_party"]["id"] for d in record] == [hall.id]


def test_a_suspended_cards_consent_reveals_nothing_to_another_party(
    client: TestClient, tokens: Tokens, enrol: Enrol, register_party: RegisterParty
) -> None:
    """The card's state is the named party's business: another party learns only that the
    consent is not its own, as before the suspension."""
    card_id, id_number = enrol()
    hall, rogue = register_party(), register_party(name="Rogue")
    code = consent_code(client, tokens, id_number, hall, ["name"])
    plain = plain_code(client, tokens, id_number)
    suspended = client.post(
        f"/v1/cards/{card_id}/status", json={"action": "suspend"}, headers=tokens.operator()
    )
    assert suspended.status_code == 200, suspended.text
    assert_problem(identify(client, rogue, code), 403, "consented_to_another_party")
    assert_problem(identify(client, rogue, plain), 403, "no_consent")
    assert_problem(identify(client, hall, code), 403, "revoked")
    # Reinstated within the code's life: the consent still stands (it was never spent).
    reinstated = client.post(
        f"/v1/cards/{card_id}/status", json={"action": "reinstate"}, headers=tokens.operator()
    )
    assert reinstated.status_code == 200, reinstated.text
    assert identify(client, hall, code).status_code == 200


def test_a_party_registered_after_the_consents_party_was_deactivated_gets_nothing(
    client: TestClient, tokens: Tokens, enrol: Enrol, register_party: RegisterParty
) -> None:
    """Re-registration with the same key is a new party: the old party's consents, subjects
    and links do not carry over."""
    _, id_number = enrol()
    key = Ed25519PrivateKey.generate()
    old = register_party([], private_key=key)
    subject = identify(client, old, consent_code(client, tokens, id_number, old, [])).json()[
        "subject"
    ]
    assert client.put(f"/v1/links/{subject}", headers=old.headers()).status_code == 204
    code = consent_code(client, tokens, id_number, old, [])
    client.post(f"/v1/relying-parties/{old.id}/deactivate", headers=tokens.operator())
    new = register_party([], private_key=key)
    assert_problem(identify(client, new, code), 403, "consented_to_another_party")
    assert_problem(identify(client, old, code), 403, "relying_party_deactivated")
    assert_problem(
        client.put(f"/v1/links/{subject}", headers=new.headers()), 422, "subject_not_disclosed"
    )
    assert client.get("/v1/links", headers=new.headers()).json() == {"subjects": []}
    # No new consent can name the old party.
    response = client.post(
        "/v1/codes",
        json={"disclose": {"to": old.id, "attributes": []}},
        headers=tokens.citizen(id_number),
    )
    assert_problem(response, 422, "relying_party_not_found")
    fresh = identify(client, new, consent_code(client, tokens, id_number, new, [])).json()
    assert fresh["subject"] != subject


def test_a_deactivation_racing_identifications_leaves_no_disclosure_after_it(
    client: TestClient, tokens: Tokens, enrol: Enrol, register_party: RegisterParty
) -> None:
    _, id_number = enrol()
    party = register_party()
    codes = [consent_code(client, tokens, id_number, party, ["name"]) for _ in range(6)]

    def act(index: int) -> int:
        if index == 6:
            path = f"/v1/relying-parties/{party.id}/deactivate"
            return client.post(path, headers=tokens.operator()).status_code
        return identify(client, party, codes[index]).status_code

    statuses = parallel(7, act)
    assert set(statuses) <= {200, 403}
    audit = client.get(
        f"/v1/relying-parties/{party.id}/disclosures", headers=tokens.operator()
    ).json()
    assert len(audit) == statuses.count(200) - 1  # the deactivation's own 200


def test_an_expired_consent_is_refused_as_expired_not_as_used(
    client: TestClient,
    tokens: Tokens,
    enrol: Enrol,
    register_party: RegisterParty,
) -> None:
    """At the very end of a code's life the code still verifies but its consent has just
    ended: the counter must not be told the citizen already used it."""
    _, id_number = enrol()
    party = register_party()
    used = consent_code(client, tokens, id_number, party, ["name"])
    assert identify(client, party, used).status_code == 200
    code = consent_code(client, tokens, id_number, party, ["name"])
    _end_open_consents(client, party)
    assert_problem(identify(client, party, code), 422, "expired")
    assert_problem(identify(client, party, used), 409, "code_used")


def _end_open_consents(client: TestClient, party: Party) -> None:
    """End the party's unspent consents a second ago, as the clock does at a code's expiry."""
    from sqlalchemy import update

    from idcode.service.models import ConsentRecord

    sessions = client.app.state.services.sessions  # type: ignore[attr-defined]
    with sessions() as session:
        session.execute(
            update(ConsentRecord)
            .where(ConsentRecord.used_at.is_(None), ConsentRecord.relying_party_id == party.id)
            .values(expires_at=datetime.now(UTC) - timedelta(seconds=1))
        )
        session.commit()


# -- information leaks ------------------------------------------------------------------------


def test_no_refusal_carries_an_attribute_or_a_subject(
    client: TestClient, tokens: Tokens, enrol: Enrol, register_party: RegisterParty
) -> None:
    card_id, id_number = enrol(name="钱多多")
    hall, rogue = register_party(list(ATTRIBUTES)), register_party(list(ATTRIBUTES))
    code = consent_code(client, tokens, id_number, hall, list(ATTRIBUTES))
    suspended_consent = consent_code(client, tokens, id_number, hall, list(ATTRIBUTES))
    subject_at_rogue = identify(
        client, rogue, consent_code(client, tokens, id_number, rogue, [])
    ).json()["subject"]
    answers = [
        identify(client, rogue, code),
        identify(client, rogue, plain_code(client, tokens, id_number)),
        identify(client, hall, code, purpose="marketing"),
    ]
    assert identify(client, hall, code).status_code == 200
    answers.append(identify(client, hall, code))
    client.post(
        f"/v1/cards/{card_id}/status", json={"action": "suspend"}, headers=tokens.operator()
    )
    answers.append(identify(client, rogue, code))
    answers.append(identify(client, hall, suspended_consent))
    for response in answers:
        assert 400 <= response.status_code < 500, response.text
        for secret in (id_number, "钱多多", subject_at_rogue, card_id, hall.id):
            assert secret not in response.text, response.text
        assert set(response.json()) <= {"type", "title", "status", "reason", "detail"}


def test_debug_logs_hold_no_subject_and_no_personal_value(
    client: TestClient,
    tokens: Tokens,
    enrol: Enrol,
    register_party: RegisterParty,
    caplog: pytest.LogCaptureFixture,
) -> None:
    id_number = random_id_number(date(1958, 2, 3))
    enrol(id_number=id_number, name="孙悟空")
    party = register_party(list(ATTRIBUTES))
    caplog.set_level("DEBUG")
    code = consent_code(client, tokens, id_number, party, list(ATTRIBUTES))
    identified = identify(client, party, code)
    assert identified.status_code == 200, identified.text
    subject = identified.json()["subject"]
    assert client.put(f"/v1/links/{subject}", headers=party.headers()).status_code == 204
    client.get("/v1/links", headers=party.headers())
    assert client.delete(f"/v1/links/{subject}", headers=party.headers()).status_code == 204
    client.get("/v1/me/disclosures", headers=tokens.citizen(id_number))
    # The service's own lines: the test client logs the URLs it calls.
    logged = "\n".join(
        record.getMessage() for record in caplog.records if not record.name.startswith("httpx")
    )
    for secret in (subject, id_number, "孙悟空", "1958-02-03", id_number[-6:]):
        assert secret not in logged, secret


def test_the_party_list_shows_citizens_no_key_and_no_state(
    client: TestClient, tokens: Tokens, enrol: Enrol, register_party: RegisterParty
) -> None:
    _, id_number = enrol()
    party = register_party()
    for path in ("/v1/relying-parties", f"/v1/relying-parties/{party.id}"):
        text = client.get(path, headers=tokens.citizen(id_number)).text
        assert public_jwk(party.private_key)["x"] not in text
        assert "last_seen_at" not in text and "active" not in text


# -- pairwise subjects and links --------------------------------------------------------------


def test_a_party_learns_nothing_from_links_about_subjects_not_disclosed_to_it(
    client: TestClient, tokens: Tokens, enrol: Enrol, register_party: RegisterParty
) -> None:
    """Whether a subject exists at another party, was linked there, or belongs to a real card
    at all: every such subject gets one and the same answer."""
    _, id_number = enrol()
    hall, hospital = register_party(), register_party(sector="health")
    at_hall = identify(client, hall, consent_code(client, tokens, id_number, hall, [])).json()
    assert client.put(f"/v1/links/{at_hall['subject']}", headers=hall.headers()).status_code == 204
    answers = {
        subject: client.put(f"/v1/links/{subject}", headers=hospital.headers())
        for subject in (at_hall["subject"], "0" * 24, "f" * 24)
    }
    bodies = {response.text for response in answers.values()}
    assert {r.status_code for r in answers.values()} == {422} and len(bodies) == 1
    deleted = {
        subject: client.delete(f"/v1/links/{subject}", headers=hospital.headers())
        for subject in (at_hall["subject"], "0" * 24)
    }
    assert {r.status_code for r in deleted.values()} == {404}
    assert len({r.text for r in deleted.values()}) == 1
    # The hall's link is untouched by the hospital's attempts.
    assert client.get("/v1/links", headers=hall.headers()).json() == {
        "subjects": [at_hall["subject"]]
    }


def test_a_partys_terminal_gets_only_its_partys_key_and_links(
    client: TestClient, tokens: Tokens, enrol: Enrol, register_party: RegisterParty
) -> None:

    _, id_number = enrol()
    hall, hospital = register_party(), register_party(sector="health")
    at_hall = identify(client, hall, consent_code(client, tokens, id_number, hall, [])).json()
    client.put(f"/v1/links/{at_hall['subject']}", headers=hall.headers())
    settings: Settings = client.app.state.services.settings  # type: ignore[attr-defined]
    scene = bundle_scene(client, register_terminal(client, tokens, hospital), settings)
    assert scene["data"]["linked_subjects"] == []


def test_no_answer_to_one_party_carries_another_partys_subject(
    client: TestClient, tokens: Tokens, enrol: Enrol, register_party: RegisterParty
) -> None:
    _, id_number = enrol()
    parties = [register_party([], name=f"P{i}") for i in range(3)]
    subjects = {
        party.id: identify(
            client, party, consent_code(client, tokens, id_number, party, [])
        ).json()["subject"]
        for party in parties
    }
    assert len(set(subjects.values())) == 3
    for party in parties:
        client.put(f"/v1/links/{subjects[party.id]}", headers=party.headers())
    for party in parties:
        text = client.get("/v1/links", headers=party.headers()).text
        for other, subject in subjects.items():
            assert (subject in text) == (other == party.id)
    # Neither the citizen's record nor the operators' audit carries a subject.
    texts = [client.get("/v1/me/disclosures", headers=tokens.citizen(id_number)).text] + [
        client.get(f"/v1/relying-parties/{p.id}/disclosures", headers=tokens.operator()).text
        for p in parties
    ]
    for text in texts:
        for subject in subjects.values():
            assert subject not in text


# -- server errors ----------------------------------------------------------------------------


@pytest.fixture
def disclosed(
    client: TestClient, tokens: Tokens, enrol: Enrol, register_party: RegisterParty
) -> Iterator[tuple[Party, str]]:
    _, id_number = enrol()
    party = register_party([])
    identified = identify(client, party, consent_code(client, tokens, id_number, party, []))
    yield party, identified.json()["subject"]


def test_concurrent_links_of_one_subject_are_all_answered(
    client: TestClient, disclosed: tuple[Party, str]
) -> None:
    party, subject = disclosed

    def link(_: int) -> int:
        return client.put(f"/v1/links/{subject}", headers=party.headers()).status_code

    for _ in range(4):
        assert parallel(10, link) == [204] * 10
        assert client.get("/v1/links", headers=party.headers()).json() == {"subjects": [subject]}
        assert client.delete(f"/v1/links/{subject}", headers=party.headers()).status_code == 204


def test_concurrent_links_and_unlinks_of_one_subject_are_all_answered(
    client: TestClient, disclosed: tuple[Party, str]
) -> None:
    party, subject = disclosed

    def flip(index: int) -> int:
        method = "PUT" if index % 2 else "DELETE"
        return client.request(method, f"/v1/links/{subject}", headers=party.headers()).status_code

    for _ in range(4):
        assert set(parallel(10, flip)) <= {204, 404}


def test_the_access_log_of_a_served_service_holds_no_subject(
    service_settings: Settings,
    client: TestClient,
    tokens: Tokens,
    enrol: Enrol,
    register_party: RegisterParty,
) -> None:
    """``idcode serve`` logs every request line (uvicorn's access log, on by default): the
    links routes carry a subject in their path, which must not reach that log."""
    import time

    import uvicorn

    _, id_number = enrol()
    party = register_party([])
    subject = identify(client, party, consent_code(client, tokens, id_number, party, [])).json()[
        "subject"
    ]
    # A handler of its own on the access logger: an earlier test's logging configuration may
    # have stopped it propagating to pytest's capture, or disabled it.
    access: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: access.append(record.getMessage())  # type: ignore[method-assign]
    logger = logging.getLogger("uvicorn.access")
    saved = (logger.disabled, logger.level)
    logger.disabled = False
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    config = uvicorn.Config(
        create_app(service_settings), host="127.0.0.1", port=0, access_log=True, log_config=None
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            assert time.monotonic() < deadline and thread.is_alive()
            time.sleep(0.02)
        port = server.servers[0].sockets[0].getsockname()[1]
        with httpx2.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
            assert http.put(f"/v1/links/{subject}", headers=party.headers()).status_code == 204
            assert http.delete(f"/v1/links/{subject}", headers=party.headers()).status_code == 204
            http.put("/v1/links/" + "0" * 24, headers=party.headers())
    finally:
        server.should_exit = True
        thread.join(15)
        logger.removeHandler(handler)
        logger.disabled, _ = saved
        logger.setLevel(saved[1])
    assert len(access) == 3, access  # the log is on: the requests are there
    for line in access:
        assert subject not in line and "0" * 24 not in line, line
    assert '"PUT /v1/links/{subject} HTTP/1.1" 204' in access[0]


def test_identification_and_links_work_on_the_embedded_sqlite_database(
    make_settings: Callable[..., Settings],
) -> None:
    """SQLite is the embedded default: identification, links and the record work there too
    (it hands back times without a zone, which Python will not compare with aware ones)."""
    from idcode.service.database import upgrade

    settings = make_settings()  # no database URL, no Redis: SQLite and in-process state
    upgrade(settings.sqlalchemy_url)
    tokens = Tokens(settings)
    with TestClient(create_app(settings)) as client:
        id_number = random_id_number()
        enrolled = client.post(
            "/v1/cards", json={"id_number": id_number, "name": "测试"}, headers=tokens.operator()
        )
        assert enrolled.status_code == 201, enrolled.text
        key = Ed25519PrivateKey.generate()
        created = client.post(
            "/v1/relying-parties", json=registration(key), headers=tokens.operator()
        )
        party = Party(created.json()["id"], key)
        code = consent_code(client, tokens, id_number, party, ["name"])
        identified = identify(client, party, code)
        assert identified.status_code == 200, identified.text
        assert identified.json()["attributes"] == {"name": "测试"}
        assert_problem(identify(client, party, code), 409, "code_used")
        subject = identified.json()["subject"]
        for _ in range(2):
            assert client.put(f"/v1/links/{subject}", headers=party.headers()).status_code == 204
        assert client.get("/v1/links", headers=party.headers()).json() == {"subjects": [subject]}
        record = client.get(
            "/v1/me/disclosures", params={"before": str(2**40)}, headers=tokens.citizen(id_number)
        )
        assert [d["attributes"] for d in record.json()] == [["name"]]
        # A consent that ended while its code still verified (times come back without a zone).
        late = consent_code(client, tokens, id_number, party, ["name"])
        _end_open_consents(client, party)
        assert_problem(identify(client, party, late), 422, "expired")


def _presentations(client: TestClient, party: Party, purpose: str = "registration") -> list[Any]:
    """The party's unspent consents as the identify route hands them to the recorder."""
    from sqlalchemy import select

    from idcode.service.models import CardRecord, ConsentRecord

    services = client.app.state.services  # type: ignore[attr-defined]
    with services.sessions() as session:
        rows = session.execute(
            select(ConsentRecord.code_id, CardRecord.pseudonym, CardRecord.status_index)
            .join(CardRecord, CardRecord.id == ConsentRecord.card_id)
            .where(ConsentRecord.relying_party_id == party.id, ConsentRecord.used_at.is_(None))
        ).all()
    return [
        Presentation(party.id, ("name",), code_id, pseudonym, index, purpose, None)
        for code_id, pseudonym, index in rows
    ]


def test_one_code_presented_twice_in_one_recording_group_is_disclosed_once(
    client: TestClient, tokens: Tokens, enrol: Enrol, register_party: RegisterParty
) -> None:
    """The recorder decides a group's identifications together, in one transaction: the
    second presentation of a code is refused as used, as it would be one after the other."""
    from idcode.errors import ConsentRefused
    from idcode.service import identification

    _, id_number = enrol()
    party = register_party()
    rogue = register_party()
    consent_code(client, tokens, id_number, party, ["name"])
    consent_code(client, tokens, id_number, party, ["name"])
    first, other = _presentations(client, party)
    stolen = Presentation(rogue.id, ("name",), *_code_and_card(first))
    services = client.app.state.services  # type: ignore[attr-defined]
    now = datetime.now(UTC)
    with services.engine.begin() as connection:
        outcomes = identification.identify(
            connection, services.vault, [stolen, first, other, first], now
        )
    reasons = [o.reason if isinstance(o, ConsentRefused) else None for o in outcomes]
    assert reasons == ["consented_to_another_party", None, None, "code_used"]
    assert isinstance(outcomes[1], dict) and outcomes[1]["attributes"].keys() == {"name"}
    audit = client.get(
        f"/v1/relying-parties/{party.id}/disclosures", headers=tokens.operator()
    ).json()
    assert len(audit) == 2


def _code_and_card(presentation: Any) -> tuple[Any, ...]:
    return (
        presentation.code_id,
        presentation.pseudonym,
        presentation.status_index,
        presentation.purpose,
        None,
    )


def test_presentations_queued_together_are_each_answered_and_one_code_disclosed_once(
    client: TestClient, tokens: Tokens, enrol: Enrol, register_party: RegisterParty
) -> None:
    import asyncio

    from idcode.errors import ConsentRefused

    _, id_number = enrol()
    party = register_party()
    for _ in range(3):
        consent_code(client, tokens, id_number, party, ["name"])
    presentations = _presentations(client, party)
    recorder = client.app.state.services.recorder  # type: ignore[attr-defined]

    async def present_all() -> list[Any]:
        queued = [*presentations, presentations[0]]  # one code twice
        return await asyncio.gather(*(recorder.identify(p) for p in queued), return_exceptions=True)

    outcomes = asyncio.run(present_all())
    answered = [o for o in outcomes if isinstance(o, dict)]
    refused = [o.reason for o in outcomes if isinstance(o, ConsentRefused)]
    assert len(answered) == 3 and refused == ["code_used"]
    assert len({answer["disclosure"] for answer in answered}) == 3
