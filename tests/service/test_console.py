"""The operator console (/console/) over HTTP, on the real service (PostgreSQL, Redis): sign-in
through the development identity provider (authorization code with PKCE), the session cookie,
CSRF, and each page and action. tests/web/test_console_browser.py drives it in Chromium."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import secrets
import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import parse_qs, urlsplit

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi.testclient import TestClient
from jwt.algorithms import OKPAlgorithm
from redis.exceptions import RedisError
from sqlalchemy import select
from sqlalchemy.orm import Session

from idcode.service.api.accesslog import ACCESS_LOGGER, MaskSubjects
from idcode.service.api.app import create_app
from idcode.service.api.deps import Services
from idcode.service.auth import dev_token
from idcode.service.console.session import (
    CookieBox,
    OperatorSession,
    code_challenge,
    new_sign_in,
    session_key,
)
from idcode.service.database import upgrade
from idcode.service.devidp import DEMO_OPERATOR_SUBJECT
from idcode.service.issuedtally import IssuedTally
from idcode.service.models import (
    AuditRecord,
    CardRecord,
    RelyingPartyRecord,
    ScanEvent,
    TerminalRecord,
)
from idcode.service.revocation import status_version
from idcode.service.settings import Settings
from idcode.service.state import FailoverState, MemoryState, RedisState
from idcode.testing import random_id_number
from tests.services import REDIS_RUN_PREFIX, Tokens

COOKIE = "idcode-console"


@pytest.fixture(scope="module")
def settings(
    tmp_path_factory: pytest.TempPathFactory, postgres_url: str, redis_url: str
) -> Settings:
    workdir = tmp_path_factory.mktemp("console")
    return Settings(
        environment="development",
        keys_dir=workdir / "keys",
        data_dir=workdir / "data",
        demo_data=False,
        database_url=postgres_url,
        redis_url=redis_url,
        redis_prefix=f"{REDIS_RUN_PREFIX}console-{secrets.token_hex(3)}:",
    )


@pytest.fixture(scope="module")
def app_client(settings: Settings) -> Iterator[TestClient]:
    """One service for the module; each test gets a fresh browser (cookie jar) below."""
    with TestClient(create_app(settings)) as client:
        yield client


@pytest.fixture
def browser(app_client: TestClient) -> TestClient:
    app_client.cookies.clear()
    return app_client


@pytest.fixture
def operator(browser: TestClient) -> TestClient:
    sign_in(browser, "operator")
    return browser


class Forms(HTMLParser):
    """Every form of a page: its action and its fields (inputs and selects' first option)."""

    def __init__(self) -> None:
        super().__init__()
        self.forms: list[dict[str, Any]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag == "form":
            self.forms.append({"action": found.get("action"), "fields": {}, "buttons": []})
        elif tag == "input" and self.forms and found.get("name"):
            self.forms[-1]["fields"][found["name"]] = found.get("value") or ""
        elif tag == "button" and self.forms and found.get("name"):
            self.forms[-1]["buttons"].append((found["name"], found.get("value")))


def forms_of(page: str) -> list[dict[str, Any]]:
    parser = Forms()
    parser.feed(page)
    return parser.forms


def csrf_of(page: str) -> str:
    tokens = {form["fields"].get("csrf") for form in forms_of(page)} - {None}
    assert len(tokens) == 1, tokens
    return str(tokens.pop())


def sign_in(browser: TestClient, who: str) -> Any:
    """Sign in at the development provider as ``who`` ("operator" or a citizen's index);
    returns the callback's answer."""
    start = browser.get("/console/sign-in", follow_redirects=False)
    assert start.status_code == 303
    page = browser.get(start.headers["location"])
    assert page.status_code == 200, page.text
    (form,) = forms_of(page.text)
    chosen = browser.post(
        "/dev-idp/authorize", data={**form["fields"], "citizen": who}, follow_redirects=False
    )
    assert chosen.status_code == 303, chosen.text
    callback = chosen.headers["location"]
    assert callback.startswith("http://testserver/console/auth/callback?")
    return browser.get(callback, follow_redirects=False)


def post(browser: TestClient, path: str, page: str, **fields: str) -> Any:
    return browser.post(path, data={"csrf": csrf_of(page), **fields}, follow_redirects=False)


def database(app_client: TestClient) -> Session:
    services: Services = app_client.app.state.services  # type: ignore[attr-defined]
    return services.sessions()


def record(session: Session, terminal_id: str) -> TerminalRecord:
    found = session.get(TerminalRecord, terminal_id)
    assert found is not None
    return found


def add_terminal(
    app_client: TestClient,
    scene: str = "community",
    trust_version: int | None = None,
    journal_backlog: int | None = None,
) -> str:
    terminal_id = str(uuid.uuid4())
    with database(app_client) as session:
        session.add(
            TerminalRecord(
                id=terminal_id,
                scene=scene,
                site="gate-<1>",
                public_jwk={},
                clock_drift=-3,
                last_seen_at=datetime.now(UTC),
                trust_version=trust_version,
                journal_backlog=journal_backlog,
            )
        )
        session.commit()
    return terminal_id


def add_events(app_client: TestClient, terminal_id: str, reasons: list[str]) -> None:
    now = datetime.now(UTC)
    with database(app_client) as session:
        for n, reason in enumerate(reasons):
            session.add(
                ScanEvent(
                    terminal_id=terminal_id,
                    event_id=f"e-{n:04d}",
                    occurred_at=now - timedelta(seconds=n),
                    valid=reason == "ok",
                    reason=reason,
                    scene_result={},
                )
            )
        session.commit()


# -- signing in ---------------------------------------------------------------------------------


def test_visitor_without_a_session_is_sent_to_sign_in_with_pkce(browser: TestClient) -> None:
    assert browser.get("/console/", follow_redirects=False).headers["location"] == (
        "/console/sign-in"
    )
    start = browser.get("/console/sign-in", follow_redirects=False)
    location = urlsplit(start.headers["location"])
    assert location.path == "/dev-idp/authorize"
    query = {name: values[0] for name, values in parse_qs(location.query).items()}
    assert query["code_challenge_method"] == "S256" and len(query["code_challenge"]) == 43
    assert query["redirect_uri"] == "http://testserver/console/auth/callback"
    assert query["state"] and query["nonce"]
    cookie = start.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=lax" in cookie and "Path=/console/auth" in cookie
    assert query["state"] not in cookie  # sealed, not readable


def test_operator_signs_in_and_gets_a_bounded_http_only_session(
    browser: TestClient, settings: Settings
) -> None:
    answer = sign_in(browser, "operator")
    assert answer.status_code == 303 and answer.headers["location"] == "/console/"
    cookie = next(c for c in answer.headers.get_list("set-cookie") if c.startswith(COOKIE + "="))
    assert "HttpOnly" in cookie and "SameSite=lax" in cookie
    max_age = int(re.search(r"Max-Age=(\d+)", cookie).group(1))  # type: ignore[union-attr]
    assert 0 < max_age <= settings.console_session_seconds
    overview = browser.get("/console/")
    assert overview.status_code == 200
    assert DEMO_OPERATOR_SUBJECT in overview.text
    policy = overview.headers["content-security-policy"]
    assert "default-src 'none'" in policy and "script-src" not in policy
    assert overview.headers["cache-control"] == "no-store"


def test_citizen_is_refused_the_console(browser: TestClient) -> None:
    answer = sign_in(browser, "0")
    assert answer.status_code == 403
    assert "without the operator role" in answer.text
    assert COOKIE not in browser.cookies
    assert browser.get("/console/", follow_redirects=False).status_code == 303


def test_wallet_sign_in_offers_no_operator(browser: TestClient) -> None:
    challenge = "A" * 43
    page = browser.get(
        "/dev-idp/authorize",
        params={
            "response_type": "code",
            "client_id": "idcode",
            "redirect_uri": "http://testserver/wallet/",
            "scope": "openid",
            "code_challenge": challenge,
            "code_challenge_method": "S256",
        },
    )
    assert page.status_code == 200 and 'value="operator"' not in page.text
    (form,) = forms_of(page.text)
    chosen = browser.post(
        "/dev-idp/authorize", data={**form["fields"], "citizen": "operator"}, follow_redirects=False
    )
    assert "error=invalid_request" in chosen.headers["location"]


def test_callback_is_refused_for_another_state_a_replayed_code_or_no_sign_in(
    browser: TestClient,
) -> None:
    start = browser.get("/console/sign-in", follow_redirects=False)
    page = browser.get(start.headers["location"])
    (form,) = forms_of(page.text)
    chosen = browser.post(
        "/dev-idp/authorize", data={**form["fields"], "citizen": "operator"}, follow_redirects=False
    )
    callback = chosen.headers["location"]
    forged = re.sub(r"state=[^&]+", "state=another", callback)
    refused = browser.get(forged, follow_redirects=False)
    assert refused.status_code == 400 and "not for this sign-in" in refused.text
    assert browser.get(callback, follow_redirects=False).status_code == 303
    # The same answer again: the sign-in cookie is gone, and the code was spent.
    again = browser.get(callback, follow_redirects=False)
    assert again.status_code == 400 and "start again" in again.text
    browser.cookies.clear()
    assert browser.get(callback, follow_redirects=False).status_code == 400


def test_provider_error_is_shown_escaped(browser: TestClient) -> None:
    start = browser.get("/console/sign-in", follow_redirects=False)
    state = parse_qs(urlsplit(start.headers["location"]).query)["state"][0]
    answer = browser.get(
        "/console/auth/callback",
        params={"state": state, "error": "access_denied", "error_description": "<b>no</b>"},
    )
    assert answer.status_code == 401
    assert "&lt;b&gt;no&lt;/b&gt;" in answer.text and "<b>no</b>" not in answer.text


def test_altered_or_foreign_session_cookie_is_no_session(
    browser: TestClient, settings: Settings
) -> None:
    box = CookieBox(session_key(settings.keys_dir))
    good = box.seal_session(OperatorSession("op", 2**40, "c"))
    for value in (
        good[:-2] + ("AA" if not good.endswith("AA") else "BB"),
        box.seal_sign_in(new_sign_in(0)),  # a sign-in cookie is not a session
        CookieBox(bytes(32)).seal_session(OperatorSession("op", 2**40, "c")),
        box.seal_session(OperatorSession("op", 1, "c")),  # expired
        "not base64 !",
    ):
        browser.cookies.set(COOKIE, value)
        assert browser.get("/console/", follow_redirects=False).status_code == 303
    browser.cookies.set(COOKIE, good)
    assert browser.get("/console/").status_code == 200


def test_sign_out_ends_the_session(operator: TestClient) -> None:
    page = operator.get("/console/").text
    assert post(operator, "/console/sign-out", page).status_code == 200
    assert operator.get("/console/", follow_redirects=False).status_code == 303


# -- CSRF -----------------------------------------------------------------------------------


def test_form_without_the_session_token_or_from_another_origin_changes_nothing(
    operator: TestClient, app_client: TestClient
) -> None:
    terminal_id = add_terminal(app_client)
    path = f"/console/terminals/{terminal_id}/decommission"
    page = operator.get(path).text
    assert operator.post(path, data={"confirm": "1"}).status_code == 403
    assert operator.post(path, data={"csrf": "x" * 43}).status_code == 403
    foreign = operator.post(
        path, data={"csrf": csrf_of(page)}, headers={"Origin": "https://evil.example"}
    )
    assert foreign.status_code == 403 and "did not come from" in foreign.text
    for origin in ("null", "http://testserver.evil.example"):
        refused = operator.post(path, data={"csrf": csrf_of(page)}, headers={"Origin": origin})
        assert refused.status_code == 403
    operator.cookies.clear()
    assert operator.post(path, data={"csrf": csrf_of(page)}).status_code == 403
    with database(app_client) as session:
        assert record(session, terminal_id).active


# -- pages and actions ----------------------------------------------------------------------


def test_overview_charts_scans_per_scene_and_denials_by_reason(
    operator: TestClient, app_client: TestClient
) -> None:
    scene = "scene-" + secrets.token_hex(3)
    denial = "reason_" + secrets.token_hex(3)
    add_events(app_client, add_terminal(app_client, scene), ["ok", "ok", denial, denial, denial])
    page = operator.get("/console/").text
    # Five scans, in one hour's column or, at an hour's start, two.
    columns = re.findall(rf"<title>{scene}, \d\d:00 UTC: (\d+)</title>", page)
    assert 1 <= len(columns) <= 2 and sum(map(int, columns)) == 5
    assert f"<title>{denial}: 3</title>" in page
    assert page.count("<svg") >= 2 and "<script" not in page


def test_terminal_fleet_and_decommission_with_confirmation(
    operator: TestClient, app_client: TestClient, settings: Settings
) -> None:
    card_id, _ = enrol_card(app_client, settings)
    revoked = app_client.post(
        f"/v1/cards/{card_id}/status",
        json={"action": "revoke"},
        headers=Tokens(settings).operator(),
    )
    assert revoked.status_code == 200, revoked.text  # the status list's version goes up
    with database(app_client) as session:
        version = status_version(session)
    terminal_id = add_terminal(app_client, trust_version=version - 1, journal_backlog=17)
    silent_id = add_terminal(app_client)
    fleet = operator.get("/console/terminals").text
    assert terminal_id in fleet and "gate-&lt;1&gt;" in fleet and "-3 s" in fleet
    row = fleet[fleet.index(f'data-terminal="{terminal_id}"') :].split("</tr>")[0]
    assert f"<td>{version - 1} (1 behind)</td>" in row and "<td>17</td>" in row
    silent = fleet[fleet.index(f'data-terminal="{silent_id}"') :].split("</tr>")[0]
    assert silent.count("<td>\u2013</td>") == 2  # an en dash: neither reported yet
    confirm = operator.get(f"/console/terminals/{terminal_id}/decommission")
    assert confirm.status_code == 200 and "Decommission this terminal" in confirm.text
    done = post(operator, f"/console/terminals/{terminal_id}/decommission", confirm.text)
    assert done.status_code == 303
    assert operator.get(done.headers["location"]).text.count("is decommissioned") == 1
    with database(app_client) as session:
        assert not record(session, terminal_id).active
        audit = session.scalars(
            select(AuditRecord).where(AuditRecord.action == "terminal.decommission")
        ).all()
        assert any(
            a.detail == {"terminal": terminal_id} and a.actor == DEMO_OPERATOR_SUBJECT
            for a in audit
        )
    unknown = operator.get(f"/console/terminals/{uuid.uuid4()}/decommission")
    assert unknown.status_code == 404


def enrol_card(app_client: TestClient, settings: Settings, name: str = "王小明") -> tuple[str, str]:
    id_number = random_id_number()
    answer = app_client.post(
        "/v1/cards",
        json={"id_number": id_number, "name": name, "phone": "13800138000"},
        headers=Tokens(settings).operator(),
    )
    assert answer.status_code == 201, answer.text
    return answer.json()["id"], id_number


def test_card_looked_up_by_id_number_shows_personal_data_masked_only(
    operator: TestClient, app_client: TestClient, settings: Settings
) -> None:
    card_id, id_number = enrol_card(app_client, settings)
    phone = Ed25519PrivateKey.generate().public_key()
    device = app_client.post(
        "/v1/devices",
        json={"public_jwk": OKPAlgorithm.to_jwk(phone, as_dict=True), "label": "Wang's phone"},
        headers=Tokens(settings).citizen(id_number),
    )
    assert device.status_code == 201, device.text
    lookup = operator.get("/console/cards").text
    found = post(operator, "/console/cards", lookup, id_number=id_number.lower())
    assert found.status_code == 303 and found.headers["location"] == f"/console/cards/{card_id}"
    page = operator.get(found.headers["location"]).text
    api = app_client.get(f"/v1/cards/{card_id}", headers=Tokens(settings).operator()).json()
    assert api["name_masked"] in page and api["id_number_masked"] in page  # as the API shows
    assert "王小明" not in page and id_number not in page and "13800138000" not in page
    assert re.search(rf"<code>{device.json()['id']}</code></td>\s*<td>EdDSA</td>", page)
    assert "<td>active</td>" in page and "phone" not in page  # the citizen's label is not shown
    missing = post(operator, "/console/cards", lookup, id_number=random_id_number())
    assert missing.status_code == 404 and "No card has this ID number" in missing.text
    invalid = post(operator, "/console/cards", lookup, id_number="12345")
    assert invalid.status_code == 422 and "18 characters" in invalid.text
    assert operator.get("/console/cards/not-a-uuid").status_code == 404


def test_card_status_change_needs_a_reason_and_is_audited_with_the_operator(
    operator: TestClient, app_client: TestClient, settings: Settings
) -> None:
    card_id, _ = enrol_card(app_client, settings)
    path = f"/console/cards/{card_id}"
    page = operator.get(path).text
    no_reason = post(operator, path + "/status", page, action="suspend", reason="")
    assert no_reason.status_code == 422 and "reason" in no_reason.text
    done = post(operator, path + "/status", page, action="suspend", reason="reported_lost")
    assert done.status_code == 303
    shown = operator.get(done.headers["location"]).text
    assert "status is now suspended" in shown
    wrong = post(operator, path + "/status", shown, action="suspend", reason="citizen_request")
    assert wrong.status_code == 409 and "Cannot suspend a card that is suspended" in wrong.text
    api = app_client.get(f"/v1/cards/{card_id}", headers=Tokens(settings).operator())
    assert api.json()["status"] == "suspended"
    with database(app_client) as session:
        change = session.scalars(
            select(AuditRecord).where(
                AuditRecord.card_id == card_id, AuditRecord.action == "card.suspend"
            )
        ).one()
        assert change.actor == DEMO_OPERATOR_SUBJECT
        assert change.detail == {"from": "active", "to": "suspended", "reason": "reported_lost"}
        assert (
            session.scalars(select(CardRecord.status).where(CardRecord.id == card_id)).one()
            == "suspended"
        )


def test_events_are_filtered_and_paged(operator: TestClient, app_client: TestClient) -> None:
    terminal_id = add_terminal(app_client)
    add_events(app_client, terminal_id, ["ok"] * 52 + ["expired"] * 3)
    first = operator.get("/console/events", params={"terminal": terminal_id})
    assert first.status_code == 200 and first.text.count("<code>e-") == 50
    older = re.search(r'href="(\?[^"]*page=2)" rel="next"', first.text)
    assert older is not None
    second = operator.get("/console/events" + older.group(1).replace("&amp;", "&"))
    assert second.text.count("<code>e-") == 5 and 'rel="next"' not in second.text
    denied = operator.get("/console/events", params={"terminal": terminal_id, "reason": "expired"})
    assert denied.text.count("<code>e-") == 3
    future = (datetime.now(UTC) + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M")
    later = operator.get("/console/events", params={"terminal": terminal_id, "since": future})
    assert "No event matches" in later.text
    for odd in ({"since": "0001-01-01T00:00+14:00"}, {"reason": "Expired"}, {"reason": "é"}):
        assert operator.get("/console/events", params=odd).status_code == 422
    bad = operator.get("/console/events", params={"since": "yesterday", "terminal": "x"})
    assert bad.status_code == 422
    assert "must be a date and time" in bad.text and "a terminal&#39;s id" in bad.text


def test_relying_parties_are_listed_escaped(operator: TestClient, app_client: TestClient) -> None:
    party_id = str(uuid.uuid4())
    with database(app_client) as session:
        session.add(
            RelyingPartyRecord(
                id=party_id,
                name="<script>Library</script>",
                sector="culture",
                purposes=["membership"],
                attributes=["age_band"],
                public_jwk={},
            )
        )
        session.commit()
    page = operator.get("/console/relying-parties").text
    assert party_id in page and "&lt;script&gt;Library&lt;/script&gt;" in page
    assert "<script>" not in page


def test_stylesheet_is_served_from_the_package(browser: TestClient) -> None:
    answer = browser.get("/console/static/console.css")
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/css")
    assert "http" not in answer.text  # nothing fetched from elsewhere


def test_session_key_lives_in_the_key_store(settings: Settings) -> None:
    assert (Path(settings.keys_dir) / "console-session.key").stat().st_mode & 0o077 == 0


def test_access_log_masks_the_authorization_code_of_the_console_sign_in() -> None:
    line = logging.LogRecord(
        ACCESS_LOGGER,
        logging.INFO,
        __file__,
        1,
        '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:1", "GET", "/console/auth/callback?code=secret-code&state=s", "1.1", 303),
        None,
    )
    assert MaskSubjects().filter(line)
    assert "secret-code" not in line.getMessage() and "code={code}&state=s" in line.getMessage()


def test_api_status_change_takes_the_same_closed_set_of_reasons(
    app_client: TestClient, settings: Settings
) -> None:
    card_id, _ = enrol_card(app_client, settings)
    path = f"/v1/cards/{card_id}/status"
    operator = Tokens(settings).operator()
    refused = app_client.post(path, json={"action": "lost", "reason": "Mr Wang"}, headers=operator)
    assert refused.status_code == 422 and "reason" in refused.text
    done = app_client.post(
        path, json={"action": "lost", "reason": "reported_lost"}, headers=operator
    )
    assert done.status_code == 200 and done.json()["status"] == "lost"
    with database(app_client) as session:
        change = session.scalars(
            select(AuditRecord).where(
                AuditRecord.card_id == card_id, AuditRecord.action == "card.lost"
            )
        ).one()
        assert change.detail["reason"] == "reported_lost"


# -- a city provider (not the development one): the token endpoint over HTTP ----------------


class CityProvider(BaseHTTPRequestHandler):
    """The city's token endpoint, as RFC 6749 section 4.1.3 describes it: it redeems the one
    code it issued, checks the PKCE verifier against the challenge and answers an ID token
    (signed with the development key, which these settings trust)."""

    settings: ClassVar[Settings]
    issued: ClassVar[dict[str, tuple[str, str, tuple[str, ...]]]] = {}  # code: challenge...

    def do_POST(self) -> None:
        length = int(self.headers["content-length"])
        form = {k: v[0] for k, v in parse_qs(self.rfile.read(length).decode()).items()}
        found = self.issued.pop(form.get("code", ""), None)
        if found is None or code_challenge(form.get("code_verifier", "")) != found[0]:
            self._answer(400, {"error": "invalid_grant"})
            return
        token = dev_token(self.settings, "city-operator-7", roles=found[2], nonce=found[1])
        self._answer(200, {"id_token": token, "token_type": "Bearer"})

    def _answer(self, status: int, document: dict[str, str]) -> None:
        body = json.dumps(document).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass


@pytest.fixture(scope="module")
def city(settings: Settings) -> Iterator[tuple[TestClient, str]]:
    """The console of a service whose operators sign in at CityProvider."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), CityProvider)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    token_url = f"http://127.0.0.1:{server.server_address[1]}/token"
    city_settings = settings.model_copy(
        update={
            "wallet_authorization_endpoint": "https://login.city.example/authorize",
            "wallet_token_endpoint": token_url,
            "console_client_id": "city-console",
        }
    )
    CityProvider.settings = city_settings
    try:
        with TestClient(create_app(city_settings)) as client:
            yield client, token_url
    finally:
        server.shutdown()
        server.server_close()


def city_sign_in(client: TestClient, roles: tuple[str, ...], *, redeemable: bool = True) -> Any:
    start = client.get("/console/sign-in", follow_redirects=False)
    location = urlsplit(start.headers["location"])
    assert f"{location.scheme}://{location.netloc}{location.path}" == (
        "https://login.city.example/authorize"
    )
    query = {k: v[0] for k, v in parse_qs(location.query).items()}
    assert query["client_id"] == "city-console"
    code = secrets.token_urlsafe(16)
    if redeemable:
        CityProvider.issued[code] = (query["code_challenge"], query["nonce"], roles)
    return client.get(
        "/console/auth/callback",
        params={"code": code, "state": query["state"]},
        follow_redirects=False,
    )


def test_operator_signs_in_at_the_city_provider_over_http(
    city: tuple[TestClient, str], settings: Settings
) -> None:
    client, _ = city
    client.cookies.clear()
    assert city_sign_in(client, (settings.operator_role,)).status_code == 303
    assert "city-operator-7" in client.get("/console/").text
    client.cookies.clear()
    refused = city_sign_in(client, ())
    assert refused.status_code == 403 and "without the operator role" in refused.text
    client.cookies.clear()
    unknown = city_sign_in(client, (settings.operator_role,), redeemable=False)
    assert unknown.status_code == 401 and "invalid_grant" in unknown.text


def test_overview_counts_per_hour_on_sqlite_too(tmp_path: Path) -> None:
    """SQLite (the development default) has its own SQL for the hour of a time."""
    sqlite = Settings(
        environment="development", keys_dir=tmp_path / "keys", data_dir=tmp_path, demo_data=False
    )
    upgrade(sqlite.sqlalchemy_url)
    with TestClient(create_app(sqlite)) as client:
        terminal_id = add_terminal(client, "parking")
        add_events(client, terminal_id, ["ok", "expired", "expired"])
        sign_in(client, "operator")
        page = client.get("/console/").text
    columns = re.findall(r"<title>parking, \d\d:00 UTC: (\d+)</title>", page)
    assert 1 <= len(columns) <= 2 and sum(map(int, columns)) == 3
    assert "<title>expired: 2</title>" in page


# -- codes issued ---------------------------------------------------------------------------


def issued_total(page: str) -> int:
    return sum(map(int, re.findall(r"<title>codes issued, \d\d:00 UTC: (\d+)</title>", page)))


def test_overview_charts_codes_issued_before_and_after_the_replica_flushes(
    operator: TestClient, app_client: TestClient, settings: Settings
) -> None:
    _, id_number = enrol_card(app_client, settings)
    services: Services = app_client.app.state.services  # type: ignore[attr-defined]
    portal = app_client.portal
    assert portal is not None
    portal.call(services.issued.flush, services.state)
    before = issued_total(operator.get("/console/").text)
    citizen = Tokens(settings).citizen(id_number)
    for _ in range(3):
        assert app_client.post("/v1/codes", headers=citizen).status_code == 200
    assert issued_total(operator.get("/console/").text) == before + 3  # pending, this replica
    portal.call(services.issued.flush, services.state)
    assert services.issued.pending() == {}
    assert issued_total(operator.get("/console/").text) == before + 3  # shared, not twice


def test_tally_keeps_its_counts_while_redis_is_away_and_adds_them_later() -> None:
    async def scenario() -> tuple[dict[int, int], list[int]]:
        away = FailoverState(RedisState("redis://127.0.0.1:1", "idcode-test:"))
        tally = IssuedTally()
        tally.add(7200.0)
        tally.add(7300.0)
        await tally.flush(away)
        kept = tally.pending()
        with pytest.raises(RedisError):
            await away.issued([2])
        await away.close()
        memory = MemoryState()
        await tally.flush(memory)
        return kept, await memory.issued([1, 2, 3])

    # A thread of its own: a session that ran the browser tests has a loop in this one.
    with ThreadPoolExecutor(1) as thread:
        kept, counted = thread.submit(asyncio.run, scenario()).result()
    assert kept == {2: 2} and counted == [0, 2, 0]


def test_development_provider_gives_the_demo_operator_the_operator_role_and_no_id_number(
    browser: TestClient, settings: Settings
) -> None:
    verifier = secrets.token_urlsafe(48)
    console = "http://testserver/console/auth/callback"
    params = {
        "response_type": "code",
        "client_id": settings.console_client,
        "redirect_uri": console,
        "scope": "openid",
        "code_challenge": code_challenge(verifier),
        "code_challenge_method": "S256",
    }
    page = browser.get("/dev-idp/authorize", params=params)
    assert 'value="operator"' in page.text
    chosen = browser.post(
        "/dev-idp/authorize", data={**params, "citizen": "operator"}, follow_redirects=False
    )
    code = parse_qs(urlsplit(chosen.headers["location"]).query)["code"][0]
    answer = browser.post(
        "/dev-idp/token",
        data={
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": console,
            "client_id": settings.console_client,
            "code_verifier": verifier,
        },
    )
    assert answer.status_code == 200, answer.text
    claims = jwt.decode(answer.json()["id_token"], options={"verify_signature": False})
    assert claims["sub"] == DEMO_OPERATOR_SUBJECT
    assert claims[settings.oidc_roles_claim] == [settings.operator_role]
    assert settings.oidc_id_number_claim not in claims
