"""The API's documentation pages and the home page in a real Chromium: they draw the API, and
every request they make goes to the service itself (city systems run on closed networks, where
a CDN, a web font or an online validator cannot be reached)."""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import Browser, Page, expect

from tests.live import LiveService, live_service, live_settings

WAIT_MS = 30_000  # how long a step may take before the test fails; never a measure
ISSUE_CODE = "Issue a fresh code for the caller's card"  # POST /v1/codes's summary


@pytest.fixture(scope="module")
def service(
    tmp_path_factory: pytest.TempPathFactory, postgres_url: str, redis_url: str
) -> Iterator[LiveService]:
    settings = live_settings(tmp_path_factory.mktemp("api-docs"), postgres_url, redis_url, "docs")
    with live_service(settings) as live:
        yield live


class RecordedPage:
    """A page and every URL it asked for, in order."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.requested: list[str] = []
        page.on("request", lambda request: self.requested.append(request.url))

    def elsewhere(self, origin: str) -> list[str]:
        """The requests that left the service: anything but its origin, and but data: and
        blob: URLs, which the page makes from what it already holds."""
        return [
            url
            for url in self.requested
            if urlsplit(url).scheme not in ("data", "blob") and not url.startswith(origin + "/")
        ]


@pytest.fixture
def recorded(browser: Browser) -> Iterator[RecordedPage]:
    context = browser.new_context()
    context.set_default_timeout(WAIT_MS)
    try:
        yield RecordedPage(context.new_page())
    finally:
        context.close()


def test_swagger_ui_draws_the_operations_from_the_service_alone(
    service: LiveService, recorded: RecordedPage
) -> None:
    recorded.page.goto(service.url + "/docs")
    # An operation's summary and its explicit operation id, as Swagger UI lists them.
    expect(recorded.page.get_by_text(ISSUE_CODE).first).to_be_visible()
    expect(recorded.page.get_by_text("issue_code", exact=True).first).to_be_visible()
    recorded.page.wait_for_load_state("networkidle")
    assert service.url + "/openapi.json" in recorded.requested
    assert recorded.elsewhere(service.url) == []


def test_home_page_links_to_the_docs_and_redoc_draws_the_operations_from_the_service_alone(
    service: LiveService, recorded: RecordedPage
) -> None:
    recorded.page.goto(service.url + "/")
    expect(recorded.page.get_by_role("link", name="API reference", exact=True)).to_have_attribute(
        "href", "/docs"
    )
    # A development service signs the wallet's citizens in with its own IdP: the wallet is there.
    expect(recorded.page.get_by_role("link", name="Web wallet")).to_have_attribute(
        "href", "/wallet/"
    )
    # ReDoc, reached as a reader would: its page, ReDoc's script and the document, nothing else.
    recorded.page.get_by_role("link", name="API reference (ReDoc)").click()
    expect(recorded.page.get_by_role("heading", name=ISSUE_CODE)).to_be_visible()
    recorded.page.wait_for_load_state("networkidle")
    assert service.url + "/api-docs/redoc/redoc.standalone.js" in recorded.requested
    assert recorded.elsewhere(service.url) == []
