"""The operator console in a real Chromium against a real ``idcode serve`` (PostgreSQL, Redis):
an operator signs in at the development identity provider, visits every page, decommissions a
terminal and suspends a card; every request the browser made went to the service itself."""

from __future__ import annotations

import uuid
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import Browser, Request, expect

from idcode.terminal import identity as identities
from idcode.terminal.client import register
from idcode.testing import random_id_number
from tests.web.walletservice import WalletService

WAIT_MS = 30_000  # how long a step may take before the test fails; never a measure


@pytest.fixture(scope="module")
def service(web_service: WalletService) -> WalletService:
    return web_service


def test_operator_signs_in_visits_every_page_and_acts_with_requests_to_the_service_only(
    browser: Browser, service: WalletService
) -> None:
    site = f"gate-{uuid.uuid4().hex[:6]}"
    terminal_id = register(
        service.url,
        service.operator_token(),
        scene="community",
        site=site,
        public_jwk=identities.public_jwk_of(identities.new_terminal_key()),
    )
    id_number = random_id_number()
    enrolled = service.client.post(
        "/v1/cards",
        json={"id_number": id_number, "name": "林小红"},
        headers=service.tokens.operator(),
    )
    assert enrolled.status_code == 201, enrolled.text
    context = browser.new_context()
    context.set_default_timeout(WAIT_MS)
    requested: list[str] = []
    page = context.new_page()
    page.on("request", lambda request: requested.append(_url(request)))
    try:
        page.goto(service.url + "/console/")
        # Not signed in: the development provider's page, which offers the demo operator.
        expect(page.locator("h1")).to_have_text("Sign in (development)")
        page.click("button[data-citizen=operator]")
        expect(page.locator("h1")).to_have_text("Overview")
        expect(page.locator("header .who")).to_have_text("dev-operator")

        page.click("nav >> text=Terminals")
        row = page.locator(f"tr[data-terminal='{terminal_id}']")
        expect(row).to_contain_text(site)
        expect(row).to_contain_text("active")
        row.locator("text=Decommission…").click()
        expect(page.locator("h1")).to_have_text("Decommission a terminal")
        page.click("button.danger")
        expect(page.locator("p.done")).to_contain_text(terminal_id)
        expect(page.locator(f"tr[data-terminal='{terminal_id}']")).to_contain_text("decommissioned")

        page.click("nav >> text=Cards")
        page.fill("input[name=id_number]", id_number)
        page.click("text=Look up")
        expect(page.locator("h1")).to_have_text("Card")
        expect(page.locator("dd.status")).to_have_text("active")
        expect(page.locator("main")).not_to_contain_text("林小红")
        expect(page.locator("main")).not_to_contain_text(id_number)
        page.select_option("select[name=action]", "suspend")
        page.select_option("select[name=reason]", "reported_lost")
        page.click("text=Change status")
        expect(page.locator("p.done")).to_have_text("The card's status is now suspended.")
        expect(page.locator("dd.status")).to_have_text("suspended")

        page.click("nav >> text=Events")
        expect(page.locator("h1")).to_have_text("Events")
        page.fill("input[name=reason]", "expired")
        page.click("text=Filter")
        expect(page.locator("table")).to_contain_text("No event matches")

        page.click("nav >> text=Relying parties")
        expect(page.locator("h1")).to_have_text("Relying parties")

        page.click("text=Sign out")
        expect(page.locator("main")).to_contain_text("You are signed out.")
        page.goto(service.url + "/console/terminals")
        expect(page.locator("h1")).to_have_text("Sign in (development)")
    finally:
        context.close()
    origin = urlsplit(service.url)
    assert requested, "the browser made no request"
    elsewhere = [
        url for url in requested if (urlsplit(url).scheme, urlsplit(url).netloc) != origin[:2]
    ]
    assert not elsewhere, elsewhere
    assert any(url.endswith("/console/static/console.css") for url in requested)


def _url(request: Request) -> str:
    return request.url
