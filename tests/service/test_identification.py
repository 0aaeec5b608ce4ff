"""Identification with consent through the real service (PostgreSQL and Redis): relying
parties, consent bound to one code, pairwise subjects, the disclosure record, links for a
party's own terminals (docs/identity.md)."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from typing import Any

import httpx2
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi.testclient import TestClient
from jwt.algorithms import ECAlgorithm, OKPAlgorithm

from idcode.attributes import ATTRIBUTES
from idcode.bundle import verify_bundle
from idcode.codetext import decode_body
from idcode.idnumber import sex
from idcode.keystore import open_key_store
from idcode.scenes import decode_scene_key, subject_of
from idcode.service.settings import Settings
from idcode.terminaltoken import relying_party_token, terminal_token
from idcode.testing import random_id_number
from tests.services import Tokens

PROBLEM_JSON = "application/problem+json"
Enrol = Callable[..., tuple[str, str]]
PartyKey = Ed25519PrivateKey | ec.EllipticCurvePrivateKey


@dataclass(frozen=True)
class Party:
    """A registered relying party as its counter runs: its id and its private key."""

    id: str
    private_key: PartyKey

    def headers(self, **token_args: Any) -> dict[str, str]:
        alg = "EdDSA" if isinstance(self.private_key, Ed25519PrivateKey) else "ES256"
        token = relying_party_token(self.id, self.private_key, alg, **token_args)
        return {"Authorization": f"Bearer {token}"}


def public_jwk(private_key: PartyKey) -> dict[str, Any]:
    if isinstance(private_key, Ed25519PrivateKey):
        return OKPAlgorithm.to_jwk(private_key.public_key(), as_dict=True)
    return ECAlgorithm.to_jwk(private_key.public_key(), as_dict=True)


def assert_problem(response: httpx2.Response, status: int, reason: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM_JSON
    problem: dict[str, Any] = response.json()
    assert problem["reason"] == reason, problem
    return problem


RegisterParty = Callable[..., Party]


@pytest.fixture
def register_party(client: TestClient, tokens: Tokens) -> RegisterParty:
    def register(
        attributes: list[str] | None = None,
        *,
        name: str = "市民中心 service hall",
        sector: str = "government",
        purposes: list[str] | None = None,
        private_key: PartyKey | None = None,
    ) -> Party:
        key = private_key or Ed25519PrivateKey.generate()
        body = {
            "name": name,
            "sector": sector,
            "purposes": purposes or ["registration"],
            "attributes": ["name", "id_number", "residency"] if attributes is None else attributes,
            "public_jwk": public_jwk(key),
        }
        response = client.post("/v1/relying-parties", json=body, headers=tokens.operator())
        assert response.status_code == 201, response.text
        return Party(response.json()["id"], key)

    return register


def consent_code(
    client: TestClient,
    tokens: Tokens,
    id_number: str,
    party: Party | str,
    attributes: list[str],
    **disclose: Any,
) -> str:
    to = party if isinstance(party, str) else party.id
    body = {"disclose": {"to": to, "attributes": attributes, **disclose}}
    response = client.post("/v1/codes", json=body, headers=tokens.citizen(id_number))
    assert response.status_code == 200, response.text
    code: str = response.json()["code"]
    return code


def plain_code(client: TestClient, tokens: Tokens, id_number: str) -> str:
    response = client.post("/v1/codes", headers=tokens.citizen(id_number))
    assert response.status_code == 200, response.text
    code: str = response.json()["code"]
    return code


def identify(
    client: TestClient, party: Party, code: str, purpose: str = "registration", **more: Any
) -> httpx2.Response:
    return client.post(
        "/v1/identify", json={"code": code, "purpose": purpose, **more}, headers=party.headers()
    )


@dataclass(frozen=True)
class PartyTerminal:
    """A terminal registered for a relying party (a hospital's kiosk), with its key."""

    id: str
    private_key: Ed25519PrivateKey

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {terminal_token(self.id, self.private_key)}"}


def register_terminal(
    client: TestClient,
    tokens: Tokens,
    party: Party | None,
    scene: str = "hospital",
    site: str = "ward-3",
) -> PartyTerminal:
    """Register a terminal (an operator's request), for ``party`` unless None."""
    key = Ed25519PrivateKey.generate()
    body: dict[str, Any] = {"scene": scene, "site": site, "public_jwk": public_jwk(key)}
    if party is not None:
        body["relying_party"] = party.id
    registered = client.post("/v1/terminals", json=body, headers=tokens.operator())
    assert registered.status_code == 201, registered.text
    return PartyTerminal(registered.json()["id"], key)


def bundle_scene(client: TestClient, terminal: PartyTerminal, settings: Settings) -> dict[str, Any]:
    """The scene of the terminal's trust bundle, checked with the city root key it pins."""
    fetched = client.get("/v1/trust-bundle", headers=terminal.headers())
    assert fetched.status_code == 200, fetched.text
    root = open_key_store(settings.keys_dir).root_public_jwk()
    return verify_bundle(fetched.text, root).scene


# -- relying parties --------------------------------------------------------------------------


def test_citizens_list_active_relying_parties_and_what_each_may_ask_for(
    client: TestClient, tokens: Tokens, enrol: Enrol, register_party: RegisterParty
) -> None:
    hall = register_party(["id_number", "name", "residency"], name="Service hall")
    shop = register_party(["age_band"], name="Corner shop", sector="commerce")
    gone = register_party(["name"], name="Closed office")
    client.post(f"/v1/relying-parties/{gone.id}/deactivate", headers=tokens.operator())
    _, id_number = enrol()
    response = client.get("/v1/relying-parties", headers=tokens.citizen(id_number))
    assert response.status_code == 200, response.text
    listed = {party["id"]: party for party in response.json()}
    # Other tests' parties may be listed too (one database per run).
    assert hall.id in listed and shop.id in listed and gone.id not in listed
    # The vocabulary's order, whatever order the operator gave.
    assert listed[hall.id]["attributes"] == ["name", "id_number", "residency"]
    assert listed[shop.id] == {
        "id": shop.id,
        "name": "Corner shop",
        "sector": "commerce",
        "purposes": ["registration"],
        "attributes": ["age_band"],
    }
    everyone = client.get("/v1/relying-parties", headers=tokens.operator()).json()
    assert {p["id"]: p["active"] for p in everyone if p["id"] in (hall.id, gone.id)} == {
        hall.id: True,
        gone.id: False,
    }
    assert_problem(
        client.get(f"/v1/relying-parties/{gone.id}", headers=tokens.citizen(id_number)),
        404,
        "relying_party_not_found",
    )


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"attributes": ["name", "phone"]}, "attributes"),
        ({"attributes": ["name", "face"]}, "attributes"),
        ({"sector": "casino"}, "sector"),
        ({"purposes": []}, "purposes"),
        ({"purposes": ["Registration"]}, "purposes"),
        ({"purposes": ["a" * 33]}, "purposes"),
        ({"name": ""}, "name"),
        ({"name": "hall\x00"}, "name"),
        ({"public_jwk": {"kty": "RSA", "n": "AQAB", "e": "AQAB"}}, "public_jwk"),
        ({"owner": "me"}, "owner"),
    ],
)
def test_a_relying_party_outside_the_vocabularies_is_refused(
    client: TestClient, tokens: Tokens, change: dict[str, Any], field: str
) -> None:
    body = {
        "name": "Hall",
        "sector": "government",
        "purposes": ["registration"],
        "attributes": ["name"],
        "public_jwk": public_jwk(Ed25519PrivateKey.generate()),
        **change,
    }
    response = client.post("/v1/relying-parties", json=body, headers=tokens.operator())
    problem = assert_problem(response, 422, "invalid_request")
    assert field in str(problem["errors"])


def test_only_operators_register_and_deactivate_relying_parties(
    client: TestClient, tokens: Tokens, enrol: Enrol, register_party: RegisterParty
) -> None:
    _, id_number = enrol()
    party = register_party()
    body = {
        "name": "Hall",
        "sector": "government",
        "purposes": ["registration"],
        "attributes": ["name"],
        "public_jwk": public_jwk(Ed25519PrivateKey.generate()),
    }
    citizen = tokens.citizen(id_number)
    assert_problem(client.post("/v1/relying-parties", json=body, headers=citizen), 403, "forbidden")
    assert_problem(
        client.post(f"/v1/relying-parties/{party.id}/deactivate", headers=citizen),
        403,
        "forbidden",
    )
    assert_problem(client.get("/v1/relying-parties"), 401, "missing_token")
    # A relying party's own token is no operator's.
    assert_problem(client.get("/v1/relying-parties", headers=party.headers()), 401, "invalid_token")


# -- consent bound to one code ----------------------------------------------------------------


def test_a_consent_code_has_the_size_and_format_of_any_code(
    client: TestClient, tokens: Tokens, enrol: Enrol, register_party: RegisterParty
) -> None:
    _, id_number = enrol()
    party = register_party()
    with_consent = consent_code(client, tokens, id_number, party, ["name", "id_number"])
    without = plain_code(client, tokens, id_number)
    assert len(with_consent) == len(without)
    # Nothing in the code names the party or the attributes: the same claims as any code.
    message = decode_body(with_consent[4:])
    assert len(message) == len(decode_body(without[4:]))
    assert bytes.fromhex(party.id.replace("-", ""))[:4] not in message


def test_the_app_learns_what_the_consent_will_disclose(
    client: TestClient, tokens: Tokens, enrol: Enrol, register_party: RegisterParty
) -> None:
    _, id_number = enrol()
    shop = register_party(["age_band"], name="Corner shop", sector="commerce")
    body = {"disclose": {"to": shop.id, "attributes": ["name", "age_band", "name"]}}
    response = client.post("/v1/codes", json=body, headers=tokens.citizen(id_number))
    assert response.status_code == 200, response.text
    assert response.json()["disclose"] == {
        "to": shop.id,
        "name": "Corner shop",
        "attributes": ["age_band"],
        "purpose": None,
    }
    assert response.headers["X-Code-Discloses-To"] == shop.id


@pytest.mark.parametrize(
    ("disclose", "reason"),
    [
        ({"to": str(uuid.uuid4()), "attributes": ["name"]}, "relying_party_not_found"),
        ({"attributes": ["phone"]}, "invalid_request"),
        ({"attributes": ["name"], "purpose": "marketing"}, "unknown_purpose"),
        ({"attributes": ["name"], "purpose": "Marketing!"}, "invalid_request"),
        ({"attributes": "name"}, "invalid_request"),
        ({"attributes": ["name"], "to": "not-a-party"}, "invalid_request"),
        ({"attributes": ["name"], "everything": True}, "invalid_request"),
    ],
)
def test_a_consent_that_cannot_be_held_gets_no_code(
    client: TestClient,
    tokens: Tokens,
    enrol: Enrol,
    register_party: RegisterParty,
    disclose: dict[str, Any],
    reason: str,
) -> None:
    _, id_number = enrol()
    party = register_party()
    body = {"disclose": {"to": party.id, **disclose}}
    response = client.post("/v1/codes", json=body, headers=tokens.citizen(id_number))
    assert_problem(response, 422, reason)


def test_no_consent_can_name_a_deactivated_party(
    client: TestClient, tokens: Tokens, enrol: Enrol, register_party: RegisterParty
) -> None:
    _, id_number = enrol()
    party = register_party()
    client.post(f"/v1/relying-parties/{party.id}/deactivate", headers=tokens.operator())
    body = {"disclose": {"to": party.id, "attributes": ["name"]}}
    response = client.post("/v1/codes", json=body, headers=tokens.citizen(id_number))
    assert_problem(response, 422, "relying_party_not_found")


# -- identification ---------------------------------------------------------------------------


def test_identification_discloses_the_consented_attributes_and_a_subject(
    client: TestClient, tokens: Tokens, enrol: Enrol, register_party: RegisterParty
) -> None:
    id_number = random_id_number(date(1950, 3, 9))
    enrol(id_number=id_number, name="王芳", residency="permit", programmes=["meal_subsidy"])
    hospital = register_party(list(ATTRIBUTES), name="City hospital", sector="health")
    code = consent_code(client, tokens, id_number, hospital, list(ATTRIBUTES))
    response = identify(client, hospital, code, counter="desk-2")
    assert response.status_code == 200, response.text
    assert response.headers["Cache-Control"] == "no-store"
    identified = response.json()
    assert identified["attributes"] == {
        "name": "王芳",
        "id_number": id_number,
        "sex": sex(id_number),
        "birth_date": "1950-03-09",
        "residency": "permit",
        "age_band": identified["attributes"]["age_band"],
        "programmes": ["meal_subsidy"],
    }
    assert identified["attributes"]["age_band"] in ("age_70_79", "age_80_plus")
    assert len(identified["subject"]) == 24
    assert identified["purpose"] == "registration"


def test_without_consent_nothing_is_disclosed(
    client: TestClient, tokens: Tokens, enrol: Enrol, register_party: RegisterParty
) -> None:
    _, id_number = enrol()
    party = register_party()
    problem = assert_problem(
        identify(client, party, plain_code(client, tokens, id_number)), 403, "no_consent"
    )
    assert id_number not in str(problem) and "subject" not in problem
    # Nor with a body that asks for no disclosure.
    response = client.post("/v1/codes", json={}, headers=tokens.citizen(id_number))
    assert_problem(identify(client, party, response.json()["code"]), 403, "no_consent")


def test_consent_for_one_party_presented_by_another_is_refused_and_stays_usable(
    client: TestClient, tokens: Tokens, enrol: Enrol, register_party: RegisterParty
) -> None:
    _, id_number = enrol()
    hall, rogue = register_party(), register_party(name="Rogue counter")
    code = consent_code(client, tokens, id_number, hall, ["name"])
    problem = assert_problem(identify(client, rogue, code), 403, "consented_to_another_party")
    assert "attributes" not in problem and "subject" not in problem
    # The rogue's attempt does not spend the citizen's consent.
    assert identify(client, hall, code).status_code == 200


def test_a_second_identification_with_the_same_code_is_refused(
    client: TestClient, tokens: Tokens, enrol: Enrol, register_party: RegisterParty
) -> None:
    _, id_number = enrol()
    party = register_party()
    code = consent_code(client, tokens, id_number, party, ["name"])
    assert identify(client, party, code).status_code == 200
    assert_problem(identify(client, party, code), 409, "code_used")


def test_concurrent_identifications_with_one_code_disclose_once(
    client: TestClient, tokens: Tokens, enrol: Enrol, register_party: RegisterParty
) -> None:
    _, id_number = enrol()
    party = register_party()
    code = consent_code(client, tokens, id_number, party, ["name"])
    statuses: list[int] = []
    lock = threading.Lock()

    def present() -> None:
        status = identify(client, party, code).status_code
        with lock:
            statuses.append(status)

    threads = [threading.Thread(target=present) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert sorted(statuses) == [200, 409, 409, 409, 409, 409]
    card_disclosures = client.get("/v1/me/disclosures", headers=tokens.citizen(id_number)).json()
    assert len(card_disclosures) == 1


def test_only_consented_attributes_the_party_may_ask_for_are_returned(
    client: TestClient, tokens: Tokens, enrol: Enrol, register_party: RegisterParty
) -> None:
    _, id_number = enrol(residency="registered")
    shop = register_party(["age_band", "residency"], sector="commerce", name="Shop")
    code = consent_code(client, tokens, id_number, shop, ["name", "id_number", "age_band"])
    identified = identify(client, shop, code).json()
    assert set(identified["attributes"]) == {"age_band"}
    # And the record says what was disclosed, not what was consented to.
    record = client.get("/v1/me/disclosures", headers=tokens.citizen(id_number)).json()
    assert record[0]["attributes"] == ["age_band"]


def test_an_empty_consent_discloses_the_subject_alone(
    client: TestClient, tokens: Tokens, enrol: Enrol, register_party: RegisterParty
) -> None:
    _, id_number = enrol()
    party = register_party()
    identified = identify(client, party, consent_code(client, tokens, id_number, party, []))
    assert identified.status_code == 200, identified.text
    assert identified.json()["attributes"] == {}
    assert len(identified.json()["subject"]) == 24


def test_subjects_differ_across_parties_and_stay_stable_across_codes(
    client: TestClient, tokens: Tokens, enrol: Enrol, register_party: RegisterParty
) -> None:
    _, id_number = enrol()
    _, other_number = enrol()
    hall, hospital = register_party(), register_party(sector="health")

    def subject(party: Party, number: str) -> str:
        response = identify(client, party, consent_code(client, tokens, number, party, []))
        assert response.status_code == 200, response.text
        value: str = response.json()["subject"]
        return value

    at_hall = {subject(hall, id_number) for _ in range(3)}
    at_hospital = {subject(hospital, id_number) for _ in range(3)}
    assert len(at_hall) == len(at_hospital) == 1
    assert at_hall != at_hospital
    assert subject(hall, other_number) not in at_hall


def test_a_subject_is_unrelated_to_the_scene_subjects_of_the_same_card(
    client: TestClient,
    tokens: Tokens,
    enrol: Enrol,
    register_party: RegisterParty,
    service_settings: Settings,
) -> None:
    card_id, id_number = enrol()
    party = register_party()
    code = consent_code(client, tokens, id_number, party, [])
    subject = identify(client, party, code).json()["subject"]
    pseudonym = bytes.fromhex(
        client.get(f"/v1/cards/{card_id}", headers=tokens.operator()).json()["pseudonym"]
    )
    from idcode.service.pii import vault_for

    vault = vault_for(service_settings)
    for scene in ("community", "parking", "tourism", "eldercare"):
        assert subject != subject_of(vault.scene_subject_key(scene), pseudonym)


def test_a_revoked_card_is_not_identified(
    client: TestClient, tokens: Tokens, enrol: Enrol, register_party: RegisterParty
) -> None:
    card_id, id_number = enrol()
    party = register_party()
    code = consent_code(client, tokens, id_number, party, ["name"])
    response = client.post(
        f"/v1/cards/{card_id}/status", json={"action": "suspend"}, headers=tokens.operator()
    )
    assert response.status_code == 200, response.text
    assert_problem(identify(client, party, code), 403, "revoked")


def test_an_expired_code_is_not_identified(
    make_settings: Callable[..., Settings],
    postgres_url: str,
    redis_url: str,
) -> None:
    settings = make_settings(
        database_url=postgres_url, redis_url=redis_url, code_ttl_seconds=1, clock_skew_seconds=0
    )
    tokens = Tokens(settings)
    from idcode.service.api.app import create_app

    with TestClient(create_app(settings)) as client:
        id_number = random_id_number()
        body = {"id_number": id_number, "name": "测试"}
        assert client.post("/v1/cards", json=body, headers=tokens.operator()).status_code == 201
        key = Ed25519PrivateKey.generate()
        registration = {
            "name": "Hall",
            "sector": "government",
            "purposes": ["registration"],
            "attributes": ["name"],
            "public_jwk": public_jwk(key),
        }
        created = client.post("/v1/relying-parties", json=registration, headers=tokens.operator())
        party = Party(created.json()["id"], key)
        code = consent_code(client, tokens, id_number, party, ["name"])
        import time

        time.sleep(2.2)  # the code lives one second; no clock-skew allowance
        assert_problem(identify(client, party, code), 422, "expired")


@pytest.mark.parametrize(
    ("mangle", "reason"),
    [
        (lambda code: code[:-3] + ("AAA" if code[-3:] != "AAA" else "BBB"), None),
        (lambda code: "XX1:" + code[4:], "unknown_prefix"),
        (lambda code: code[:40], None),
    ],
)
def test_a_code_that_does_not_verify_is_refused_with_the_verifiers_reason(
    client: TestClient,
    tokens: Tokens,
    enrol: Enrol,
    register_party: RegisterParty,
    mangle: Callable[[str], str],
    reason: str | None,
) -> None:
    _, id_number = enrol()
    party = register_party()
    code = consent_code(client, tokens, id_number, party, ["name"])
    response = identify(client, party, mangle(code))
    assert response.status_code == 422, response.text
    assert reason is None or response.json()["reason"] == reason
    assert response.json()["reason"] in {
        "malformed",
        "unknown_prefix",
        "bad_signature",
        "unknown_key",
    }
    # The code itself is still good for its party.
    assert identify(client, party, code).status_code == 200


def test_the_purpose_must_be_the_partys_and_the_consented_one(
    client: TestClient, tokens: Tokens, enrol: Enrol, register_party: RegisterParty
) -> None:
    _, id_number = enrol()
    party = register_party(purposes=["registration", "benefit_application"])
    code = consent_code(client, tokens, id_number, party, ["name"], purpose="registration")
    assert_problem(identify(client, party, code, purpose="marketing"), 422, "unknown_purpose")
    assert_problem(
        identify(client, party, code, purpose="benefit_application"), 403, "purpose_mismatch"
    )
    assert identify(client, party, code, purpose="registration").status_code == 200


def test_a_deactivated_party_is_refused_at_its_next_request(
    client: TestClient, tokens: Tokens, enrol: Enrol, register_party: RegisterParty
) -> None:
    _, id_number = enrol()
    party = register_party()
    code = consent_code(client, tokens, id_number, party, ["name"])
    response = client.post(f"/v1/relying-parties/{party.id}/deactivate", headers=tokens.operator())
    assert response.status_code == 200 and response.json()["active"] is False
    assert_problem(identify(client, party, code), 403, "relying_party_deactivated")


def test_a_relying_party_token_is_single_use_and_must_be_its_keys(
    client: TestClient, tokens: Tokens, enrol: Enrol, register_party: RegisterParty
) -> None:
    _, id_number = enrol()
    party = register_party(private_key=ec.generate_private_key(ec.SECP256R1()))
    code = consent_code(client, tokens, id_number, party, ["name"])
    headers = party.headers()
    body = {"code": code, "purpose": "registration"}
    forged = Party(party.id, Ed25519PrivateKey.generate())
    assert_problem(
        client.post("/v1/identify", json=body, headers=forged.headers()), 401, "invalid_token"
    )
    unknown = Party(str(uuid.uuid4()), Ed25519PrivateKey.generate())
    assert_problem(
        client.post("/v1/identify", json=body, headers=unknown.headers()), 401, "invalid_token"
    )
    # A terminal's token (another audience) signed with the party's key is not the party's.
    terminal_style = terminal_token(party.id, party.private_key, "ES256")
    assert_problem(
        client.post(
            "/v1/identify", json=body, headers={"Authorization": f"Bearer {terminal_style}"}
        ),
        401,
        "invalid_token",
    )
    assert client.post("/v1/identify", json=body, headers=headers).status_code == 200
    assert_problem(client.post("/v1/identify", json=body, headers=headers), 401, "token_replayed")


def test_operators_see_that_a_party_called_only_once_its_token_was_accepted(
    client: TestClient, tokens: Tokens, register_party: RegisterParty
) -> None:
    party = register_party()

    def last_seen() -> str | None:
        response = client.get(f"/v1/relying-parties/{party.id}", headers=tokens.operator())
        assert response.status_code == 200, response.text
        seen: str | None = response.json().get("last_seen_at")
        return seen

    forged = Party(party.id, Ed25519PrivateKey.generate())
    assert_problem(client.get("/v1/links", headers=forged.headers()), 401, "invalid_token")
    assert last_seen() is None
    assert client.get("/v1/links", headers=party.headers()).status_code == 200
    assert last_seen() is not None


def test_a_citizen_or_operator_token_cannot_identify(
    client: TestClient, tokens: Tokens, enrol: Enrol, register_party: RegisterParty
) -> None:
    _, id_number = enrol()
    party = register_party()
    code = consent_code(client, tokens, id_number, party, ["name"])
    body = {"code": code, "purpose": "registration"}
    for headers in (tokens.citizen(id_number), tokens.operator(), {}):
        response = client.post("/v1/identify", json=body, headers=headers)
        assert response.status_code == 401, response.text


# -- the disclosure record --------------------------------------------------------------------


def test_the_citizen_sees_every_disclosure_and_only_their_own(
    client: TestClient, tokens: Tokens, enrol: Enrol, register_party: RegisterParty
) -> None:
    _, id_number = enrol()
    _, other = enrol()
    hall = register_party(name="Service hall")
    hospital = register_party(["name", "sex"], name="Hospital", sector="health")
    identify(client, hall, consent_code(client, tokens, id_number, hall, ["name"]), counter="w-3")
    identify(client, hospital, consent_code(client, tokens, id_number, hospital, ["name", "sex"]))
    identify(client, hall, consent_code(client, tokens, other, hall, ["name"]))
    # Refused identifications disclose nothing and are not disclosures.
    identify(client, hospital, consent_code(client, tokens, id_number, hall, ["name"]))
    record = client.get("/v1/me/disclosures", headers=tokens.citizen(id_number)).json()
    assert [(d["relying_party"]["name"], d["attributes"], d["counter"]) for d in record] == [
        ("Hospital", ["name", "sex"], None),
        ("Service hall", ["name"], "w-3"),
    ]
    assert all(d["purpose"] == "registration" and "card_id" not in d for d in record)
    # Paging, newest first.
    older = client.get(
        "/v1/me/disclosures",
        params={"before": record[0]["id"], "limit": 1},
        headers=tokens.citizen(id_number),
    ).json()
    assert [d["id"] for d in older] == [record[1]["id"]]


def test_operators_audit_disclosures_by_relying_party(
    client: TestClient, tokens: Tokens, enrol: Enrol, register_party: RegisterParty
) -> None:
    card_id, id_number = enrol()
    hall = register_party()
    identify(client, hall, consent_code(client, tokens, id_number, hall, ["name"]), counter="w-1")
    audit = client.get(f"/v1/relying-parties/{hall.id}/disclosures", headers=tokens.operator())
    assert audit.status_code == 200, audit.text
    [entry] = audit.json()
    assert (entry["card_id"], entry["attributes"], entry["counter"]) == (card_id, ["name"], "w-1")
    assert_problem(
        client.get(f"/v1/relying-parties/{hall.id}/disclosures", headers=tokens.citizen(id_number)),
        403,
        "forbidden",
    )


def test_no_personal_data_is_logged_by_an_identification(
    client: TestClient,
    tokens: Tokens,
    enrol: Enrol,
    register_party: RegisterParty,
    caplog: pytest.LogCaptureFixture,
) -> None:
    id_number = random_id_number(date(1961, 7, 1))
    enrol(id_number=id_number, name="赵敏")
    party = register_party(list(ATTRIBUTES))
    caplog.set_level("DEBUG")
    code = consent_code(client, tokens, id_number, party, list(ATTRIBUTES))
    assert identify(client, party, code).status_code == 200
    identify(client, party, code)
    logged = caplog.text
    for personal in (id_number, "赵敏", "1961-07-01", id_number[-6:]):
        assert personal not in logged


# -- links and a party's own terminals --------------------------------------------------------


def test_a_partys_terminal_recognises_the_subjects_it_linked(
    client: TestClient,
    tokens: Tokens,
    enrol: Enrol,
    register_party: RegisterParty,
    service_settings: Settings,
) -> None:
    card_id, id_number = enrol()
    hospital = register_party(["name"], sector="health")
    identified = identify(client, hospital, consent_code(client, tokens, id_number, hospital, []))
    subject = identified.json()["subject"]
    kiosk = register_terminal(client, tokens, hospital)
    before = bundle_scene(client, kiosk, service_settings)
    assert before["data"]["linked_subjects"] == []
    # Its bundle names the party, so the kiosk hands each decision's subject to the party's
    # own software (docs/terminal.md).
    assert before["relying_party"] == hospital.id
    response = client.put(f"/v1/links/{subject}", headers=hospital.headers())
    assert response.status_code == 204, response.text
    after = bundle_scene(client, kiosk, service_settings)
    assert after["data"]["linked_subjects"] == [subject]
    # The kiosk computes, offline, the very subject the desk was given.
    pseudonym = bytes.fromhex(
        client.get(f"/v1/cards/{card_id}", headers=tokens.operator()).json()["pseudonym"]
    )
    assert subject_of(decode_scene_key(after["subject_key"]), pseudonym) == subject
    listed = client.get("/v1/links", headers=hospital.headers()).json()
    assert listed == {"subjects": [subject]}
    assert client.delete(f"/v1/links/{subject}", headers=hospital.headers()).status_code == 204
    assert bundle_scene(client, kiosk, service_settings)["data"]["linked_subjects"] == []
    assert_problem(
        client.delete(f"/v1/links/{subject}", headers=hospital.headers()), 404, "link_not_found"
    )


def test_a_party_links_only_subjects_it_was_disclosed(
    client: TestClient, tokens: Tokens, enrol: Enrol, register_party: RegisterParty
) -> None:
    _, id_number = enrol()
    hall, hospital = register_party(), register_party(sector="health")
    at_hall = identify(client, hall, consent_code(client, tokens, id_number, hall, [])).json()
    assert_problem(
        client.put(f"/v1/links/{at_hall['subject']}", headers=hospital.headers()),
        422,
        "subject_not_disclosed",
    )
    assert_problem(
        client.put("/v1/links/" + "0" * 24, headers=hall.headers()), 422, "subject_not_disclosed"
    )
    response = client.put("/v1/links/" + "G" * 24, headers=hall.headers())
    assert response.status_code == 422


def test_deactivating_a_party_decommissions_its_terminals(
    client: TestClient, tokens: Tokens, register_party: RegisterParty
) -> None:
    party = register_party()
    kiosk = register_terminal(client, tokens, party)
    client.post(f"/v1/relying-parties/{party.id}/deactivate", headers=tokens.operator())
    response = client.get("/v1/trust-bundle", headers=kiosk.headers())
    assert_problem(response, 403, "terminal_decommissioned")
    # And no new terminal can be registered for it.
    body = {
        "scene": "hospital",
        "site": "ward-3",
        "public_jwk": public_jwk(Ed25519PrivateKey.generate()),
        "relying_party": party.id,
    }
    response = client.post("/v1/terminals", json=body, headers=tokens.operator())
    assert_problem(response, 422, "relying_party_not_found")


def test_only_a_relying_partys_terminal_gets_a_bundle_naming_a_party(
    client: TestClient, tokens: Tokens, register_party: RegisterParty, service_settings: Settings
) -> None:
    hospital = register_party(["name"], sector="health")

    def bundle_of(party: Party | None) -> dict[str, Any]:
        return bundle_scene(client, register_terminal(client, tokens, party), service_settings)

    kiosk, screen = bundle_of(hospital), bundle_of(None)
    assert kiosk["relying_party"] == hospital.id
    assert "relying_party" not in screen
    assert set(screen) == {"scene", "site", "version", "data", "subject_key"}
