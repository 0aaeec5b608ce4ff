"""Fixtures of the web wallet's tests: a real Chromium (the distribution's, by its path) driven
by Playwright, and the wallet's files as the package ships them.

Chromium missing is a failure, never a skip: scripts/test installs it (README, "Running the
tests"); IDCODE_TEST_CHROMIUM names another build.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from importlib import resources

import pytest
from playwright.sync_api import Browser, Page, Playwright, Route, expect, sync_playwright

from tests.web.walletservice import WalletService, wallet_service

#: How long an ``expect`` assertion waits for the page to come right, for every browser test
#: (a context's default timeout does not reach assertions, whose own default is 5 s): never a
#: measure, only the point at which a page that did not come right fails its test. A page
#: drawn by a large script (ReDoc) took over 5 s on a busy two-core machine.
expect.set_options(timeout=30_000)

#: An https origin the tests make up: a secure context (WebCrypto, service workers) whose
#: requests Playwright answers from the package's files (wallet_origin).
TEST_ORIGIN = "https://wallet.test"


def chromium_path() -> str:
    path = os.environ.get("IDCODE_TEST_CHROMIUM") or next(
        filter(None, (shutil.which(name) for name in ("chromium", "chromium-browser"))), None
    )
    if not path:
        pytest.fail(
            "Chromium is not installed: the web wallet's tests need it. Run scripts/test (it "
            "installs the distribution's package) or set IDCODE_TEST_CHROMIUM.",
            pytrace=False,
        )
    return path


@pytest.fixture(scope="session")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as driver:
        yield driver


@pytest.fixture(scope="session")
def browser(playwright: Playwright) -> Iterator[Browser]:
    launched = playwright.chromium.launch(executable_path=chromium_path())
    try:
        yield launched
    finally:
        launched.close()


@pytest.fixture(scope="session")
def web_service(
    tmp_path_factory: pytest.TempPathFactory, redis_url: str
) -> Iterator[WalletService]:
    """One real ``idcode serve`` for the browser tests (the wallet's and the console's): a
    cold start costs more than a dozen seconds. Each test makes what it changes its own (a
    terminal, a card) or, like the wallet's, works on its own demo citizen."""
    with wallet_service(tmp_path_factory.mktemp("web-service"), redis_url) as running:
        yield running


def wallet_file(name: str) -> bytes:
    return (resources.files("idcode.service") / "web-wallet" / name).read_bytes()


@pytest.fixture
def wallet_origin(browser: Browser) -> Iterator[Page]:
    """A page at TEST_ORIGIN/wallet/blank, where the wallet's modules can be imported (as the
    service serves them: JavaScript media type); nothing else answers."""
    context = browser.new_context()

    def answer(route: Route) -> None:
        path = route.request.url.removeprefix(TEST_ORIGIN)
        if path == "/wallet/blank":
            route.fulfill(body="<!doctype html><title>blank</title>", content_type="text/html")
        elif path.startswith("/wallet/") and path.endswith((".js", ".mjs")):
            route.fulfill(
                body=wallet_file(path.removeprefix("/wallet/")),
                content_type="text/javascript",
            )
        else:
            route.fulfill(status=404, body="")

    context.route(f"{TEST_ORIGIN}/**", answer)
    page = context.new_page()
    page.goto(f"{TEST_ORIGIN}/wallet/blank")
    try:
        yield page
    finally:
        context.close()
