"""The web wallet in a real Chromium against a real ``idcode serve`` (PostgreSQL, Redis), with
real terminals: a citizen signs in at the development identity provider, the phone registers
its WebCrypto key, and a gate admits the code read off a screenshot; offline, past the code's
lifetime, the phone makes new codes an offline gate admits; after the citizen removes the
phone from another browser and the gate syncs, its next code is denied.

The page's clock is Playwright's (``context.clock``): a minute passes in an instant, and the
terminal is set to the page's time. Nothing in the verifier is faked.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from playwright.sync_api import Browser, BrowserContext, Page, expect

from idcode.cose import Algorithm
from idcode.keys import keys_from_jwks
from idcode.replay import ReplayCache
from idcode.service.demodata import DEMO_CARDS
from idcode.terminaltoken import relying_party_token
from idcode.verifier import Trust, verify
from tests.web.qrscan import read_qr
from tests.web.walletservice import (
    CREDENTIAL_SECONDS,
    TerminalClock,
    WalletService,
    terminal,
)

WAIT_MS = 30_000  # how long a step may take before the test fails; never a measure


@pytest.fixture(scope="module")
def service(web_service: WalletService) -> WalletService:
    return web_service


@pytest.fixture
def context(browser: Browser) -> Iterator[BrowserContext]:
    made = browser.new_context()
    made.set_default_timeout(WAIT_MS)
    try:
        yield made
    finally:
        made.close()


def sign_in(page: Page, service: WalletService, citizen: int) -> str:
    """Open the wallet, sign in as demo citizen ``citizen``; returns the first code's text
    as the page drew it (tests read codes off screenshots)."""
    page.goto(service.url + "/wallet/")
    page.get_by_role("button", name="Sign in").click()
    page.locator(f'button[data-citizen="{citizen}"]').click()
    expect(page.locator("#qr")).to_have_attribute("data-code", re.compile("^WH2:"))
    return str(page.locator("#qr").get_attribute("data-code"))


def scanned(page: Page, selector: str = "#qr") -> str:
    """The code a camera reads off the screen: zxing-cpp on a screenshot of the QR."""
    return str(read_qr(page.locator(selector).screenshot()).text)


def page_time(page: Page) -> int:
    now: int = page.evaluate("Math.floor(Date.now() / 1000)")
    return now


def next_code(page: Page, old: str) -> str:
    """Wait for the page to show a code other than ``old``."""
    page.wait_for_function(
        "(old) => { const c = document.querySelector('#qr').dataset.code; return c && c !== old; }",
        arg=old,
    )
    return str(page.locator("#qr").get_attribute("data-code"))


def online_trust(service: WalletService) -> Trust:
    jwks = service.client.get("/.well-known/jwks.json").json()
    return Trust.of(
        keys_from_jwks(jwks),
        prefix="WH1:",
        algorithms=[Algorithm.EDDSA, Algorithm.ES256],
        clock_skew=service.settings.clock_skew_seconds,
    )


def stored_device(page: Page) -> dict[str, Any]:
    """What the wallet keeps in IndexedDB about this device (not the key's bytes: it has
    none to give)."""
    record: dict[str, Any] = page.evaluate(
        """() => new Promise((resolve, reject) => {
            const open = indexedDB.open("idcode-wallet");
            open.onerror = () => reject(open.error);
            open.onsuccess = () => {
                const get = open.result.transaction("records").objectStore("records").get("device");
                get.onsuccess = () => {
                    const d = get.result;
                    resolve({
                        id: d.id, deviceId: d.deviceId, credentialLength: d.credential.length,
                        privateType: d.keyPair.privateKey.type,
                        privateExtractable: d.keyPair.privateKey.extractable,
                        algorithm: d.keyPair.privateKey.algorithm,
                        credentialExpiresAt: d.credentialExpiresAt,
                        credential: btoa(String.fromCharCode(...d.credential)),
                    });
                };
            };
        })"""
    )
    return record


def renewed_at(service: WalletService, citizen: int, device_id: str) -> str | None:
    """When the service last renewed the device's credential, as its citizen's list says."""
    listed = service.client.get(
        "/v1/devices", headers=service.tokens.citizen(DEMO_CARDS[citizen].id_number)
    )
    assert listed.status_code == 200, listed.text
    [device] = [d for d in listed.json()["devices"] if d["device_id"] == device_id]
    when: str | None = device["renewed_at"]
    return when


# -- online -----------------------------------------------------------------------------------


def test_citizen_signs_in_and_a_gate_admits_the_code_read_off_the_screen(
    context: BrowserContext, service: WalletService, tmp_path: Path
) -> None:
    page = context.new_page()
    drawn = sign_in(page, service, citizen=0)
    code = scanned(page)
    assert code == drawn and len(code) == 310
    assert page.url == service.url + "/wallet/"  # the authorization code left the address bar
    assert page.evaluate("sessionStorage.length") == 0  # and the PKCE verifier the session
    # The sign-in answer came back through the service worker, or else to the service,
    # whose access log masks the authorization code: no log line holds one.
    assert not re.search(r"[?&]code=(?!\{code\})", service.log_text())

    record = stored_device(page)
    assert record["privateType"] == "private" and record["privateExtractable"] is False
    assert record["algorithm"] == {"name": "ECDSA", "namedCurve": "P-256"}
    assert record["credentialLength"] == 50 + 64
    assert 0 < record["credentialExpiresAt"] - time.time() <= CREDENTIAL_SECONDS

    clock = TerminalClock()
    with terminal(service, tmp_path / "gate", clock) as gate:
        clock.now = page_time(page)
        decision = gate.scan(code)
        assert decision.admitted and decision.reason == "ok"
        assert gate.scan(code).reason == "replayed"

    verdict = verify(code, online_trust(service), now=page_time(page), replay=ReplayCache())
    assert verdict.valid and verdict.device is not None
    assert verdict.device.hex() == record["deviceId"]

    # The service lists the device for its citizen, as the wallet registered it.
    page.get_by_role("button", name="My devices").click()
    mine = page.locator(f'li[data-device-id="{record["deviceId"]}"]')
    expect(mine).to_contain_text("(this phone)")
    expect(mine).to_contain_text("Web wallet")


def test_citizen_renews_the_credential_with_one_tap(
    context: BrowserContext, service: WalletService
) -> None:
    page = context.new_page()
    sign_in(page, service, citizen=0)
    before = stored_device(page)
    assert renewed_at(service, 0, before["deviceId"]) is None
    page.get_by_role("button", name="Update offline pass").click()
    expect(page.locator("#message")).to_have_text("Offline pass renewed.")
    after = stored_device(page)
    assert after["id"] == before["id"] and after["deviceId"] == before["deviceId"]
    assert after["credentialExpiresAt"] >= before["credentialExpiresAt"]
    assert renewed_at(service, 0, before["deviceId"]) is not None  # the service renewed it


def test_wallet_renews_its_credential_by_itself_once_a_seventh_of_it_has_passed(
    context: BrowserContext, service: WalletService
) -> None:
    context.clock.install()
    page = context.new_page()
    sign_in(page, service, citizen=0)
    before = stored_device(page)
    assert renewed_at(service, 0, before["deviceId"]) is None
    context.clock.fast_forward("08:00")  # not yet: 3600 / 7 s is 8 min 34 s
    time.sleep(1)  # a tick of the page's clock (which runs on) decides, and does not renew
    assert stored_device(page)["credential"] == before["credential"]
    context.clock.fast_forward("01:00")
    deadline = time.monotonic() + WAIT_MS / 1000
    while stored_device(page)["credential"] == before["credential"]:
        assert time.monotonic() < deadline, "the wallet did not renew its credential"
        time.sleep(0.1)
    assert renewed_at(service, 0, before["deviceId"]) is not None


# -- offline ----------------------------------------------------------------------------------


def test_offline_phone_keeps_making_codes_an_offline_gate_admits_until_the_phone_is_removed(
    browser: Browser, context: BrowserContext, service: WalletService, tmp_path: Path
) -> None:
    context.clock.install()
    phone = context.new_page()
    first = sign_in(phone, service, citizen=1)
    phone.evaluate(
        """() => Promise.race([navigator.serviceWorker.ready.then(() => true),
            new Promise((_, no) => setTimeout(() => no(new Error("no service worker")), 30000))])"""
    )  # the shell is cached
    device_id = stored_device(phone)["deviceId"]

    clock = TerminalClock()
    with terminal(service, tmp_path / "gate", clock) as gate:
        # Both lose the network: the gate has synced, the phone has its credential.
        context.set_offline(True)
        assert phone.evaluate("navigator.onLine") is False
        expect(phone.locator("#network")).to_be_visible()

        context.clock.fast_forward("01:30")  # past the first code's 60 s
        second = next_code(phone, first)
        assert scanned(phone) == second
        clock.now = page_time(phone)
        assert gate.scan(first).reason == "expired"
        admitted = gate.scan(second)
        assert admitted.admitted and admitted.reason == "ok"

        # Opened again with no network: the service worker has the wallet, IndexedDB the key.
        phone.reload()
        expect(phone.locator("#qr")).to_have_attribute("data-code", re.compile("^WH2:"))
        third = scanned(phone)
        assert third not in (first, second)
        clock.now = page_time(phone)
        assert gate.scan(third).admitted

        # The citizen removes the lost phone from another browser, online.
        other_context = browser.new_context()
        other_context.set_default_timeout(WAIT_MS)
        try:
            other = other_context.new_page()
            sign_in(other, service, citizen=1)
            other.get_by_role("button", name="My devices").click()
            lost = other.locator(f'li[data-device-id="{device_id}"]')
            lost.get_by_role("button", name="Remove").click()
            lost.get_by_role("button", name="Confirm: remove").click()
            expect(other.locator(f'li[data-device-id="{device_id}"].removed')).to_be_visible()
        finally:
            other_context.close()

        # The gate syncs (the phone stays offline) and refuses the phone's next code.
        gate.sync_once()
        assert gate.bundle is not None
        assert bytes.fromhex(device_id) in gate.bundle.revoked_devices
        context.clock.fast_forward("01:00")
        fourth = next_code(phone, third)
        assert scanned(phone) == fourth
        clock.now = page_time(phone)
        denied = gate.scan(fourth)
        assert not denied.admitted and denied.reason == "revoked"

    # Back online, the phone learns it was removed when it tries to renew.
    context.set_offline(False)
    phone.get_by_role("button", name="Update offline pass").click()
    expect(phone.locator("#removed")).to_be_visible()
    assert phone.evaluate(
        """() => new Promise((resolve) => {
            const open = indexedDB.open("idcode-wallet");
            open.onsuccess = () => {
                const get = open.result.transaction("records").objectStore("records").get("device");
                get.onsuccess = () => resolve(get.result === undefined);
            };
        })"""
    )


def test_phone_whose_clock_is_ahead_is_warned_and_its_codes_are_refused_with_the_reason(
    context: BrowserContext, service: WalletService, tmp_path: Path
) -> None:
    context.clock.install(time=time.time() + 300)  # the phone is five minutes ahead
    page = context.new_page()
    code = sign_in(page, service, citizen=2)
    warning = page.locator("#clock-warning")
    expect(warning).to_be_visible()
    expect(warning).to_contain_text("5 min ahead of the service's")
    expect(warning).to_contain_text("Gates will refuse its codes")
    clock = TerminalClock()  # the gate's clock is right
    with terminal(service, tmp_path / "gate", clock) as gate:
        denied = gate.scan(scanned(page))
        assert denied.reason == "not_yet_valid"
    verdict = verify(code, online_trust(service), now=int(time.time()), replay=ReplayCache())
    assert verdict.reason.value == "not_yet_valid" and "clock is ahead" in verdict.detail


# -- consent ----------------------------------------------------------------------------------


def test_citizen_consents_on_the_wallet_and_the_counter_learns_only_what_was_ticked(
    context: BrowserContext, service: WalletService
) -> None:
    counter_key = Ed25519PrivateKey.generate()
    public_jwk = jwt.algorithms.OKPAlgorithm.to_jwk(counter_key.public_key(), as_dict=True)
    registered = service.client.post(
        "/v1/relying-parties",
        json={
            "name": "Riverside service hall",
            "sector": "government",
            "purposes": ["registration"],
            "attributes": ["name", "residency", "age_band"],
            "public_jwk": public_jwk,
        },
        headers=service.tokens.operator(),
    )
    assert registered.status_code == 201, registered.text
    party = registered.json()["id"]

    page = context.new_page()
    sign_in(page, service, citizen=3)
    page.get_by_role("button", name="Show my identity to…").click()
    page.locator(f'button[data-party="{party}"]').click()
    form = page.locator("#consent-form")
    expect(form.locator("#consent-identifying")).to_contain_text("Name")
    form.get_by_label("Age band").uncheck()
    form.get_by_role("button", name="Make a code for this counter").click()
    expect(page.locator("#consent-summary")).to_contain_text(
        "Only Riverside service hall can use this code, once, to learn: Name, Residency"
    )
    code = scanned(page, "#consent-qr")
    assert code.startswith("WH1:")

    identified = service.client.post(
        "/v1/identify",
        json={"code": code, "purpose": "registration", "counter": "window-1"},
        headers={"Authorization": "Bearer " + relying_party_token(party, counter_key)},
    )
    assert identified.status_code == 200, identified.text
    attributes = identified.json()["attributes"]
    assert set(attributes) == {"name", "residency"}
    assert attributes["residency"] == "non_resident"  # demo citizen 4 (demodata.py)
