"""The wallet's JavaScript against the Python core, in a real Chromium: device codes the page
makes with a non-extractable WebCrypto key verify with idcode.verifier, byte for byte as
idcode.devicecode lays them out (docs/code-format.md section 8); its base45, CBOR, QR symbol
and device tokens are what the core and the service read.
"""

from __future__ import annotations

import base64
import secrets
import uuid
from typing import Any

import cbor2
import pytest
from playwright.sync_api import Page

from idcode.codetext import decode_body, encode_body
from idcode.cose import Algorithm
from idcode.devicecode import (
    DEVICE_CODE_LIFETIME,
    MAX_CREDENTIAL_LIFETIME,
    DeviceKey,
    decode_device_message,
    device_prefix,
    encode_payload,
    issue_credential,
    split_blob,
)
from idcode.errors import Refusal
from idcode.qr import qr_version
from idcode.replay import ReplayCache
from idcode.service.requesttokens import check_read_token, public_signing_jwk, read_request_token
from idcode.terminaltoken import DEVICE_AUDIENCE
from idcode.testing import TestIssuer, random_card
from idcode.verifier import verify
from tests.conftest import NOW
from tests.web.conftest import TEST_ORIGIN
from tests.web.qrscan import read_qr

MODULE = f"{TEST_ORIGIN}/wallet/devicecode.js"
PREFIX = device_prefix("WH1:")


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def new_browser_key(page: Page, name: str = "device") -> dict[str, Any]:
    """A non-extractable P-256 key made by WebCrypto in the page (kept as window[name]);
    returns its public JWK and whether the private half can be exported."""
    result: dict[str, Any] = page.evaluate(
        """async ([module, name]) => {
            const m = await import(module);
            const pair = await m.newDeviceKey();
            window[name] = pair;
            let exported = true;
            try { await crypto.subtle.exportKey("pkcs8", pair.privateKey); }
            catch (error) { exported = error.name; }
            return {jwk: await m.publicJwk(pair), extractable: pair.privateKey.extractable,
                    exported};
        }""",
        [MODULE, name],
    )
    return result


def browser_code(
    page: Page, blob: bytes, now: int, code_id: bytes | None = None, key: str = "device"
) -> str:
    code: str = page.evaluate(
        """async ([module, key, blob, prefix, now, codeId]) => {
            const m = await import(module);
            const bytes = (b) => Uint8Array.from(atob(b), (c) => c.charCodeAt(0));
            const made = await m.makeDeviceCode({
                privateKey: window[key].privateKey, blob: bytes(blob), prefix, now,
                codeId: codeId === null ? undefined : bytes(codeId),
            });
            return made.code;
        }""",
        [MODULE, key, b64(blob), PREFIX, now, None if code_id is None else b64(code_id)],
    )
    return code


@pytest.fixture
def issuer() -> TestIssuer:
    return TestIssuer(alg=Algorithm.ES256, kid="E", now=NOW)


def test_device_key_is_p256_and_its_private_half_cannot_be_exported(
    wallet_origin: Page,
) -> None:
    made = new_browser_key(wallet_origin)
    assert made["extractable"] is False
    assert made["exported"] == "InvalidAccessError"
    assert set(made["jwk"]) == {"kty", "crv", "x", "y"}
    assert DeviceKey.from_jwk(made["jwk"]).alg is Algorithm.ES256


def test_codes_made_in_the_browser_are_valid_for_the_python_verifier(
    wallet_origin: Page, issuer: TestIssuer
) -> None:
    device = DeviceKey.from_jwk(new_browser_key(wallet_origin)["jwk"])
    card = random_card()
    blob = issue_credential(issuer.key, card, device, NOW + MAX_CREDENTIAL_LIFETIME)
    replay = ReplayCache()
    seen = set()
    for offset in range(0, 40, 2):  # 20 codes: signatures of every shape, fresh code ids
        code = browser_code(wallet_origin, blob, NOW + offset)
        assert code.startswith(PREFIX) and len(code) == 310
        verdict = verify(code, issuer.trust(), now=NOW + offset + 1, replay=replay)
        assert verdict.valid, verdict.detail
        assert verdict.device == device.device_id
        assert verdict.claims is not None and verdict.claims.card == card
        assert verdict.claims.issued_at == NOW + offset
        seen.add(verdict.claims.code_id)
    assert len(seen) == 20


def test_browser_payload_is_byte_for_byte_the_python_layout(
    wallet_origin: Page, issuer: TestIssuer
) -> None:
    device = DeviceKey.from_jwk(new_browser_key(wallet_origin)["jwk"])
    blob = issue_credential(issuer.key, random_card(), device, NOW + 86400)
    code_id = secrets.token_bytes(8)
    code = browser_code(wallet_origin, blob, NOW, code_id)
    message = decode_device_message(decode_body(code.removeprefix(PREFIX)))
    credential, signature = split_blob(blob)
    assert message.payload == encode_payload(NOW, code_id, credential, signature)
    assert message.code_id == code_id and message.issued_at == NOW
    assert message.credential_bytes == credential
    assert qr_version(code) == 10


def test_browser_code_lives_sixty_seconds_from_its_iat(
    wallet_origin: Page, issuer: TestIssuer
) -> None:
    device = DeviceKey.from_jwk(new_browser_key(wallet_origin)["jwk"])
    blob = issue_credential(issuer.key, random_card(), device, NOW + 86400)
    code = browser_code(wallet_origin, blob, NOW)
    trust = issuer.trust()
    skew = trust.clock_skew
    last = NOW + DEVICE_CODE_LIFETIME + skew - 1
    assert verify(code, trust, now=last, replay=ReplayCache()).valid
    late = verify(code, trust, now=last + 1, replay=ReplayCache())
    assert late.reason.value == "expired"
    early = verify(code, trust, now=NOW - skew - 1, replay=ReplayCache())
    assert early.reason.value == "not_yet_valid"


def test_code_signed_by_another_browser_key_than_the_certified_one_is_a_bad_signature(
    wallet_origin: Page, issuer: TestIssuer
) -> None:
    certified = DeviceKey.from_jwk(new_browser_key(wallet_origin, "certified")["jwk"])
    new_browser_key(wallet_origin, "other")
    blob = issue_credential(issuer.key, random_card(), certified, NOW + 86400)
    code = browser_code(wallet_origin, blob, NOW, key="other")
    verdict = verify(code, issuer.trust(), now=NOW, replay=ReplayCache())
    assert verdict.reason.value == "bad_signature"
    good = browser_code(wallet_origin, blob, NOW, key="certified")
    assert verify(good, issuer.trust(), now=NOW, replay=ReplayCache()).valid


def test_browser_refuses_to_encode_an_iat_the_format_cannot_carry(
    wallet_origin: Page, issuer: TestIssuer
) -> None:
    device = DeviceKey.from_jwk(new_browser_key(wallet_origin)["jwk"])
    blob = issue_credential(issuer.key, random_card(), device, NOW + 86400)
    for bad in (0xFFFF, 2**32, 1.5):
        with pytest.raises(Exception, match="iat is a 32-bit time"):
            browser_code(wallet_origin, blob, bad)  # type: ignore[arg-type]


def test_browser_base45_and_cbor_match_the_python_encoders(wallet_origin: Page) -> None:
    samples = [secrets.token_bytes(n) for n in (0, 1, 2, 3, 23, 24, 25, 255, 256, 300)]
    samples += [b"\x00\x00", b"\xff\xff", b"\xff", bytes(range(256))]
    answers = wallet_origin.evaluate(
        """async ([module, samples]) => {
            const m = await import(module);
            const bytes = (b) => Uint8Array.from(atob(b), (c) => c.charCodeAt(0));
            const text = (u) => btoa(String.fromCharCode(...u));
            return samples.map((s) => [m.base45(bytes(s)), text(m.cbor.bytes(bytes(s)))]);
        }""",
        [MODULE, [b64(s) for s in samples]],
    )
    for sample, (text, encoded) in zip(samples, answers, strict=True):
        assert text == encode_body(sample)
        assert base64.b64decode(encoded) == cbor2.dumps(sample)
    integers = [0, 23, 24, 255, 256, 65535, 65536, 2**32 - 1]
    encoded_integers = wallet_origin.evaluate(
        """async ([module, values]) => {
            const m = await import(module);
            return values.map((v) => btoa(String.fromCharCode(...m.cbor.uint(v))));
        }""",
        [MODULE, integers],
    )
    for value, encoded in zip(integers, encoded_integers, strict=True):
        assert base64.b64decode(encoded) == cbor2.dumps(value)


def test_device_token_from_the_browser_passes_the_services_request_token_check(
    wallet_origin: Page,
) -> None:
    jwk = new_browser_key(wallet_origin)["jwk"]
    device_uuid = str(uuid.uuid4())
    token: str = wallet_origin.evaluate(
        """async ([module, id, now]) => {
            const m = await import(module);
            return m.deviceToken({privateKey: window.device.privateKey, deviceUuid: id, now});
        }""",
        [MODULE, device_uuid, NOW],
    )
    read = read_request_token(token, refused=Refusal, not_signed="not signed")
    signed = check_read_token(
        read,
        audience=DEVICE_AUDIENCE,
        public_jwk=public_signing_jwk(jwk),
        refused=Refusal,
        not_signed="not signed",
        now=NOW,
    )
    assert signed.party_id == device_uuid
    other = new_browser_key(wallet_origin, "other")["jwk"]
    with pytest.raises(Refusal, match="not signed"):
        check_read_token(
            read_request_token(token, refused=Refusal, not_signed="not signed"),
            audience=DEVICE_AUDIENCE,
            public_jwk=public_signing_jwk(other),
            refused=Refusal,
            not_signed="not signed",
            now=NOW,
        )


def test_qr_symbol_drawn_by_the_page_reads_back_as_the_code_at_version_10_level_m(
    wallet_origin: Page, issuer: TestIssuer
) -> None:
    device = DeviceKey.from_jwk(new_browser_key(wallet_origin)["jwk"])
    blob = issue_credential(issuer.key, random_card(), device, NOW + 86400)
    code = browser_code(wallet_origin, blob, NOW)
    drawn = wallet_origin.evaluate(
        """async ([origin, code]) => {
            const {drawCode} = await import(origin + "/wallet/qr.js");
            const canvas = document.createElement("canvas");
            canvas.id = "qr";
            document.body.append(canvas);
            return drawCode(canvas, code);
        }""",
        [TEST_ORIGIN, code],
    )
    assert drawn == {"version": 10, "modules": 57}
    scanned = read_qr(wallet_origin.locator("#qr").screenshot())
    assert scanned.text == code
    assert isinstance(scanned.extra, dict)
    assert scanned.ec_level == "M" and scanned.extra["Version"] == "10"
    assert scanned.symbology_identifier == "]Q1"  # no ECI, no FNC1: one plain segment
