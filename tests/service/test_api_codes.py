"""Citizens' codes: ``POST /v1/codes`` as JSON or QR image, card status, rate limit, ``/v1/me``."""

from __future__ import annotations

import io
import time
from collections.abc import Callable, Iterator
from datetime import date, datetime

import httpx2
import pytest
import redis
from fastapi.testclient import TestClient
from PIL import Image

from idcode.claims import AgeBand, CodeClaims
from idcode.cose import Algorithm
from idcode.keys import keys_from_jwks
from idcode.qr import qr_image
from idcode.service.api.app import create_app
from idcode.service.settings import Settings
from idcode.testing import random_id_number
from idcode.verifier import Trust, verify
from tests.services import Tokens

Enrol = Callable[..., tuple[str, str]]
PROBLEM_JSON = "application/problem+json"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# What an IdP might send from a form filled in with an IME: digits U+FF10-U+FF19.
FULL_WIDTH_ID_NUMBER = "".join(chr(ord(c) + 0xFEE0) for c in "42010219610723123X")


def assert_problem(response: httpx2.Response, status: int, reason: str) -> None:
    """The response is an RFC 9457 problem with this status and machine-readable reason."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM_JSON
    problem = response.json()
    assert problem["type"] == f"urn:idcode:problem:{reason}"
    assert (problem["reason"], problem["status"]) == (reason, status)
    assert problem["title"]


def decode_code(client: TestClient, settings: Settings, code: str) -> CodeClaims:
    """The claims of a code, verified with the keys the service publishes."""
    keys = keys_from_jwks(client.get("/.well-known/jwks.json").json())
    trust = Trust.of(
        keys, prefix=settings.code_prefix, algorithms=[Algorithm.EDDSA, Algorithm.ES256]
    )
    verdict = verify(code, trust, int(time.time()))
    assert verdict.valid and verdict.claims is not None, verdict
    return verdict.claims


def enrol_through(client: TestClient, tokens: Tokens) -> tuple[str, str]:
    """Enrol a card on any running service; returns (card id, ID number)."""
    id_number = random_id_number()
    response = client.post(
        "/v1/cards", json={"id_number": id_number, "name": "测试"}, headers=tokens.operator()
    )
    assert response.status_code == 201, response.text
    return response.json()["id"], id_number


def change_status(client: TestClient, tokens: Tokens, card_id: str, action: str) -> None:
    response = client.post(
        f"/v1/cards/{card_id}/status", json={"action": action}, headers=tokens.operator()
    )
    assert response.status_code == 200, response.text


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


def keys_under(redis_client: redis.Redis, pattern: str) -> list[bytes]:
    return list(redis_client.scan_iter(match=pattern, count=1000))


# -- the code and its formats -------------------------------------------------------------


def test_a_code_comes_as_json_with_its_expiry_and_an_earlier_refresh_time(
    client: TestClient, tokens: Tokens, enrol: Enrol, service_settings: Settings
) -> None:
    _, id_number = enrol()
    response = client.post("/v1/codes", headers=tokens.citizen(id_number))

    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.headers["cache-control"] == "no-store"
    issued = response.json()
    assert set(issued) == {"code", "expires_at", "refresh_at"}
    assert issued["code"].startswith("WH1:")
    claims = decode_code(client, service_settings, issued["code"])
    assert claims.expires_at - claims.issued_at == service_settings.code_ttl_seconds
    expires_at = datetime.fromisoformat(issued["expires_at"])
    refresh_at = datetime.fromisoformat(issued["refresh_at"])
    assert expires_at.timestamp() == claims.expires_at
    assert claims.issued_at < refresh_at.timestamp() < claims.expires_at
    assert datetime.fromisoformat(response.headers["x-code-expires-at"]) == expires_at
    assert datetime.fromisoformat(response.headers["x-code-refresh-at"]) == refresh_at


def test_every_request_gets_a_different_code(
    client: TestClient, tokens: Tokens, enrol: Enrol
) -> None:
    _, id_number = enrol()
    codes = {client.post("/v1/codes", headers=tokens.citizen(id_number)).json()["code"]}
    codes.add(client.post("/v1/codes", headers=tokens.citizen(id_number)).json()["code"])
    assert len(codes) == 2


def test_accept_image_png_returns_the_code_as_a_png_qr_image(
    client: TestClient, tokens: Tokens, enrol: Enrol
) -> None:
    _, id_number = enrol()
    headers = {**tokens.citizen(id_number), "Accept": "image/png"}
    response = client.post("/v1/codes", headers=headers)

    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png"
    assert response.headers["cache-control"] == "no-store"
    assert "x-code-expires-at" in response.headers
    assert response.content.startswith(PNG_SIGNATURE)
    with Image.open(io.BytesIO(response.content)) as image:
        assert image.format == "PNG"
        assert image.width == image.height


@pytest.mark.parametrize("media_type", ["image/png", "image/svg+xml"])
def test_a_qr_image_comes_with_the_same_codes_text_in_a_header(
    client: TestClient,
    tokens: Tokens,
    enrol: Enrol,
    service_settings: Settings,
    media_type: str,
) -> None:
    """Regression (issue 15, 6i): an app that asked for the image could not get the text;
    a second request would have minted another code."""
    _, id_number = enrol()
    headers = {**tokens.citizen(id_number), "Accept": media_type}
    response = client.post("/v1/codes", headers=headers)

    assert response.status_code == 200, response.text
    quoted = response.headers["x-code-text"]
    assert quoted[0] == quoted[-1] == '"'  # an RFC 8941 string: a trailing space survives
    code = quoted[1:-1]
    assert code.startswith("WH1:") and '"' not in code and "\\" not in code
    claims = decode_code(client, service_settings, code)
    assert datetime.fromisoformat(response.headers["x-code-expires-at"]).timestamp() == (
        claims.expires_at
    )
    # The image is this code's: the QR rendering is deterministic.
    assert response.content == qr_image(code, media_type)


def test_a_json_code_has_no_text_header_beside_its_body(
    client: TestClient, tokens: Tokens, enrol: Enrol
) -> None:
    _, id_number = enrol()
    response = client.post("/v1/codes", headers=tokens.citizen(id_number))
    assert response.status_code == 200, response.text
    assert "x-code-text" not in response.headers


def test_accept_image_svg_returns_the_code_as_an_svg_qr_image(
    client: TestClient, tokens: Tokens, enrol: Enrol
) -> None:
    _, id_number = enrol()
    headers = {**tokens.citizen(id_number), "Accept": "image/svg+xml"}
    response = client.post("/v1/codes", headers=headers)

    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("image/svg+xml")
    assert response.headers["cache-control"] == "no-store"
    assert "<svg" in response.text
    assert response.text.rstrip().endswith("</svg>")


@pytest.mark.parametrize("accept", ["text/html", "application/xml, text/*", "image/png;q=0"])
def test_an_accept_header_naming_no_offered_type_is_406_not_acceptable(
    client: TestClient, tokens: Tokens, enrol: Enrol, accept: str
) -> None:
    _, id_number = enrol()
    response = client.post("/v1/codes", headers={**tokens.citizen(id_number), "Accept": accept})
    assert_problem(response, 406, "not_acceptable")


@pytest.mark.parametrize(
    ("accept", "media_type"),
    [
        ("image/png;q=0.5, application/json", "application/json"),
        ("application/json;q=0.2, image/svg+xml;q=0.9", "image/svg+xml"),
        ("text/html, image/png;q=0.1", "image/png"),
        ("image/*", "image/png"),
        ("*/*", "application/json"),
        ("application/json;q=0, image/*;q=0.3", "image/png"),
    ],
)
def test_the_response_format_follows_the_accept_header_and_its_q_values(
    client: TestClient, tokens: Tokens, enrol: Enrol, accept: str, media_type: str
) -> None:
    _, id_number = enrol()
    response = client.post("/v1/codes", headers={**tokens.citizen(id_number), "Accept": accept})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].split(";")[0] == media_type


@pytest.mark.parametrize(
    ("accept", "media_type"),
    [
        ("IMAGE/PNG", "image/png"),
        ("Image/SVG+XML", "image/svg+xml"),
        ("image/png;Q=0.1, Application/JSON", "application/json"),
    ],
)
def test_media_types_in_the_accept_header_are_case_insensitive(
    client: TestClient, tokens: Tokens, enrol: Enrol, accept: str, media_type: str
) -> None:
    _, id_number = enrol()
    response = client.post("/v1/codes", headers={**tokens.citizen(id_number), "Accept": accept})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].split(";")[0] == media_type


# -- card status --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("action", "reason"),
    [("suspend", "card_suspended"), ("lost", "card_lost"), ("revoke", "card_revoked")],
)
def test_a_status_change_stops_codes_at_once_although_the_card_was_cached(
    client: TestClient,
    tokens: Tokens,
    enrol: Enrol,
    service_settings: Settings,
    redis_client: redis.Redis,
    action: str,
    reason: str,
) -> None:
    card_id, id_number = enrol()
    assert client.post("/v1/codes", headers=tokens.citizen(id_number)).status_code == 200
    assert keys_under(redis_client, f"{service_settings.redis_prefix}card:*"), "not cached"

    change_status(client, tokens, card_id, action)

    response = client.post("/v1/codes", headers=tokens.citizen(id_number))
    assert_problem(response, 403, reason)
    me = client.get("/v1/me", headers=tokens.citizen(id_number))
    assert me.json()["status"] == reason.removeprefix("card_")


@pytest.mark.parametrize("action", ["suspend", "lost"])
def test_a_reinstated_card_gets_codes_again(
    client: TestClient, tokens: Tokens, enrol: Enrol, action: str
) -> None:
    card_id, id_number = enrol()
    change_status(client, tokens, card_id, action)
    assert client.post("/v1/codes", headers=tokens.citizen(id_number)).status_code == 403

    change_status(client, tokens, card_id, "reinstate")

    response = client.post("/v1/codes", headers=tokens.citizen(id_number))
    assert response.status_code == 200, response.text
    assert response.json()["code"].startswith("WH1:")


def test_a_revoked_card_cannot_be_reinstated(
    client: TestClient, tokens: Tokens, enrol: Enrol
) -> None:
    card_id, id_number = enrol()
    change_status(client, tokens, card_id, "revoke")
    response = client.post(
        f"/v1/cards/{card_id}/status", json={"action": "reinstate"}, headers=tokens.operator()
    )
    assert_problem(response, 409, "invalid_transition")
    assert_problem(client.post("/v1/codes", headers=tokens.citizen(id_number)), 403, "card_revoked")


@pytest.mark.parametrize(("method", "path"), [("POST", "/v1/codes"), ("GET", "/v1/me")])
def test_a_citizen_without_a_card_is_404_card_not_found(
    client: TestClient, tokens: Tokens, method: str, path: str
) -> None:
    response = client.request(method, path, headers=tokens.citizen(random_id_number()))
    assert_problem(response, 404, "card_not_found")


@pytest.mark.parametrize(("method", "path"), [("POST", "/v1/codes"), ("GET", "/v1/me")])
@pytest.mark.parametrize(
    "id_number",
    [FULL_WIDTH_ID_NUMBER, "42010219610723123é", "4201021961072312", ""],
    ids=["full-width", "accented", "too-short", "empty"],
)
def test_a_token_whose_id_number_is_not_valid_finds_no_card_rather_than_failing(
    client: TestClient, tokens: Tokens, method: str, path: str, id_number: str
) -> None:
    response = client.request(method, path, headers=tokens.citizen(id_number))
    assert_problem(response, 404, "card_not_found")


# -- rate limit (real Redis) --------------------------------------------------------------


def _not_at_the_end_of_a_minute() -> None:
    """The limit counts per clock minute; a burst that straddles two would count twice."""
    left = 60 - time.time() % 60
    if left < 5:
        time.sleep(left + 0.1)


def test_the_fourth_code_within_a_minute_is_429_rate_limited_counted_in_redis(
    make_settings: Callable[..., Settings],
    postgres_url: str,
    redis_url: str,
    redis_client: redis.Redis,
) -> None:
    settings = make_settings(
        database_url=postgres_url, redis_url=redis_url, rate_limit_per_minute=3
    )
    tokens = Tokens(settings)
    with TestClient(create_app(settings)) as client:
        card_id, id_number = enrol_through(client, tokens)
        _, neighbour_id_number = enrol_through(client, tokens)
        _not_at_the_end_of_a_minute()

        statuses = [
            client.post("/v1/codes", headers=tokens.citizen(id_number)).status_code
            for _ in range(3)
        ]
        fourth = client.post("/v1/codes", headers=tokens.citizen(id_number))
        neighbour = client.post("/v1/codes", headers=tokens.citizen(neighbour_id_number))

    assert statuses == [200, 200, 200]
    assert_problem(fourth, 429, "rate_limited")
    assert 1 <= int(fourth.headers["retry-after"]) <= 60
    assert neighbour.status_code == 200, "the limit is per citizen, not for everyone"
    counters = keys_under(redis_client, f"{settings.redis_prefix}rate:*")
    assert sorted(int(redis_client.get(key) or 0) for key in counters) == [1, 4]
    assert all(card_id.encode() not in key and id_number.encode() not in key for key in counters)


def test_the_rate_limit_is_shared_by_every_replica_through_redis(
    make_settings: Callable[..., Settings], postgres_url: str, redis_url: str
) -> None:
    settings = make_settings(
        database_url=postgres_url, redis_url=redis_url, rate_limit_per_minute=3
    )
    tokens = Tokens(settings)
    with (
        TestClient(create_app(settings)) as replica_a,
        TestClient(create_app(settings)) as replica_b,
    ):
        _, id_number = enrol_through(replica_a, tokens)
        _not_at_the_end_of_a_minute()
        statuses = [
            replica.post("/v1/codes", headers=tokens.citizen(id_number)).status_code
            for replica in (replica_a, replica_b, replica_a, replica_b)
        ]
    assert statuses == [200, 200, 200, 429]


def test_a_rate_limit_of_zero_lifts_the_limit(
    make_settings: Callable[..., Settings],
    postgres_url: str,
    redis_url: str,
    redis_client: redis.Redis,
) -> None:
    settings = make_settings(
        database_url=postgres_url, redis_url=redis_url, rate_limit_per_minute=0
    )
    tokens = Tokens(settings)
    with TestClient(create_app(settings)) as client:
        _, id_number = enrol_through(client, tokens)
        statuses = {
            client.post("/v1/codes", headers=tokens.citizen(id_number)).status_code
            for _ in range(40)
        }
    assert statuses == {200}
    assert keys_under(redis_client, f"{settings.redis_prefix}rate:*") == []


# -- the citizen's own card ---------------------------------------------------------------


def test_me_shows_the_cards_status_and_coarse_attributes_but_no_personal_data(
    client: TestClient, tokens: Tokens, enrol: Enrol
) -> None:
    name, phone = "欧阳明月", "+86 139 0712 3456"
    card_id, id_number = enrol(
        name=name, phone=phone, residency="permit", programmes=["meal_subsidy", "home_care"]
    )
    response = client.get("/v1/me", headers=tokens.citizen(id_number))

    assert response.status_code == 200, response.text
    me = response.json()
    assert me == {
        "id": card_id,
        "status": "active",
        "residency": "permit",
        "age_band": me["age_band"],
        "programmes": ["home_care", "meal_subsidy"],
    }
    for personal in (id_number, id_number[6:14], name, phone, name[0]):
        assert personal not in response.text


def _years_ago(years: int) -> date:
    """A birth date that makes someone ``years`` old today (1 January, so never a leap day)."""
    return date(date.today().year - years, 1, 1)


@pytest.mark.parametrize(
    ("age", "band"),
    [
        (3, AgeBand.UNDER_6),
        (12, AgeBand.AGE_6_17),
        (40, AgeBand.AGE_18_59),
        (62, AgeBand.AGE_60_64),
        (66, AgeBand.AGE_65_69),
        (75, AgeBand.AGE_70_79),
        (90, AgeBand.AGE_80_PLUS),
    ],
)
def test_the_codes_age_band_follows_the_birth_date_in_the_id_number(
    client: TestClient,
    tokens: Tokens,
    enrol: Enrol,
    service_settings: Settings,
    age: int,
    band: AgeBand,
) -> None:
    _, id_number = enrol(id_number=random_id_number(birth=_years_ago(age)))

    issued = client.post("/v1/codes", headers=tokens.citizen(id_number)).json()
    me = client.get("/v1/me", headers=tokens.citizen(id_number)).json()

    assert decode_code(client, service_settings, issued["code"]).card.age_band is band
    assert me["age_band"] == band.name.lower()
