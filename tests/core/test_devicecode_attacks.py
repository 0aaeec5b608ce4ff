"""Attacks on device codes (docs/code-format.md section 8), one regression test per class, in
the spirit of tests/core/test_attacks.py: weak and invalid device keys, signed objects of one
kind presented as another, signature malleability, clock and time-field extremes, the
verified-credentials cache, removed-device lists, prefixes and lengths."""

from __future__ import annotations

import secrets

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from idcode.claims import MAX_NUMERIC_DATE
from idcode.devicecode import (
    DEVICE_CODE_LIFETIME,
    Credential,
    DeviceKey,
    credential_to_be_signed,
    device_to_be_signed,
    encode_payload,
    make_device_code,
)
from idcode.errors import ClaimsError
from idcode.reasons import Reason
from idcode.replay import ReplayCache
from idcode.statuslist import StatusDelta, StatusListError
from idcode.testing import TestIssuer, random_card
from idcode.verifier import verify
from tests.conftest import NOW
from tests.forgery import b64url, device_message, device_payload, device_text

# The eight points of small order on Edwards25519, canonically encoded (identity, order 2,
# two of order 4, four of order 8), then non-canonical encodings of some of them (y >= p, or
# the sign bit set where x = 0): the list libsodium refuses in crypto_sign_verify.
SMALL_ORDER_ED25519 = [
    "0100000000000000000000000000000000000000000000000000000000000000",
    "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
    "0000000000000000000000000000000000000000000000000000000000000000",
    "0000000000000000000000000000000000000000000000000000000000000080",
    "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a",
    "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac03fa",
    "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05",
    "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc85",
    "0100000000000000000000000000000000000000000000000000000000000080",
    "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
    "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
    "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
    "eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
    "eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
]
# 2 is the smallest y with no x on the curve; 2**255 - 1 is y >= p, another number's encoding.
OFF_CURVE_ED25519 = (2).to_bytes(32, "little")
NON_CANONICAL_ED25519 = (2**255 - 1).to_bytes(32, "little")


def issuer_signed(issuer: TestIssuer, credential: bytes) -> bytes:
    """``credential`` (any bytes) signed by ``issuer`` as it signs credentials: what a
    confused or compromised issuance path would hand out."""
    return issuer.key.sign(
        credential_to_be_signed(credential, issuer.key.alg, issuer.key.kid.encode())
    )


def packed_credential(kind: int, kid: bytes, expires_at: int, key: bytes) -> bytes:
    return bytes([kind]) + kid + expires_at.to_bytes(4, "big") + random_card().to_bytes() + key


# -- weak and invalid device keys -------------------------------------------------------------


@pytest.mark.parametrize("encoding", SMALL_ORDER_ED25519)
def test_a_small_order_ed25519_key_cannot_be_registered_as_a_device(encoding: str) -> None:
    """Such a key verifies forged signatures (R of small order, S = 0) for any message: its
    credential, printed in every code, would let anyone make that card's codes."""
    x = b64url(bytes.fromhex(encoding))
    with pytest.raises(ValueError, match=r"small order|canonical"):
        DeviceKey.from_jwk({"kty": "OKP", "crv": "Ed25519", "x": x})


@pytest.mark.parametrize(
    ("raw", "message"),
    [(OFF_CURVE_ED25519, "not a point"), (NON_CANONICAL_ED25519, "canonical")],
    ids=["off-curve", "y-above-p"],
)
def test_an_ed25519_key_that_is_not_a_canonical_point_cannot_be_registered(
    raw: bytes, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        DeviceKey.from_jwk({"kty": "OKP", "crv": "Ed25519", "x": b64url(raw)})


@pytest.mark.parametrize("encoding", SMALL_ORDER_ED25519)
def test_codes_forged_for_a_small_order_key_the_issuer_certified_are_malformed(
    issuer: TestIssuer, encoding: str
) -> None:
    """Defence in depth at the terminal: even a credential the issuer signed for such a key
    is refused before any signature is checked, so a forged code never verifies."""
    key = bytes.fromhex(encoding)
    credential = packed_credential(1, b"T", NOW + 3600, key)
    payload = device_payload(
        NOW, secrets.token_bytes(8), credential, issuer_signed(issuer, credential)
    )
    identity = bytes.fromhex(SMALL_ORDER_ED25519[0])
    forged = device_text("WH2:", device_message(payload, identity + bytes(32)))
    verdict = verify(forged, issuer.trust(), NOW, ReplayCache())
    assert verdict.reason is Reason.MALFORMED, verdict
    assert "device key" in verdict.detail
    with pytest.raises(ClaimsError):
        Credential.from_bytes(credential)


@pytest.mark.parametrize("raw", [OFF_CURVE_ED25519, NON_CANONICAL_ED25519], ids=["off", "y>=p"])
def test_a_credential_whose_ed25519_key_is_not_a_canonical_point_is_malformed(
    issuer: TestIssuer, raw: bytes
) -> None:
    """Section 8 step 4: the credential's key must be valid, so such a code is malformed
    (not bad_signature after both signature checks)."""
    credential = packed_credential(1, b"T", NOW + 3600, raw)
    payload = device_payload(NOW, bytes(8), credential, issuer_signed(issuer, credential))
    verdict = verify(device_text("WH2:", device_message(payload, bytes(64))), issuer.trust(), NOW)
    assert verdict.reason is Reason.MALFORMED, verdict


# -- time fields at their extremes ------------------------------------------------------------


@pytest.mark.parametrize("iat", [MAX_NUMERIC_DATE - DEVICE_CODE_LIFETIME + 1, MAX_NUMERIC_DATE])
@pytest.mark.parametrize("at", ["now", "then"])
def test_a_code_whose_end_is_past_32_bits_is_malformed_not_caught_by_the_safety_net(
    issuer: TestIssuer, iat: int, at: str
) -> None:
    """A code lives until iat + 60, which must be a 32-bit time as every time in a code is
    (section 1): a phone whose clock says 2106 gets a precise refusal, not the verifier's
    fail-closed net ("unexpected ClaimsError")."""
    device = Ed25519PrivateKey.generate()
    blob = issuer.credential(device, expires_at=MAX_NUMERIC_DATE)
    credential, signature = blob[:-64], blob[-64:]
    payload = device_payload(iat, bytes(8), credential, signature)
    text = device_text("WH2:", device_message(payload, device.sign(device_to_be_signed(payload))))
    verdict = verify(text, issuer.trust(), NOW if at == "now" else iat)
    assert verdict.reason is Reason.MALFORMED
    assert not verdict.detail.startswith("unexpected"), verdict.detail
    with pytest.raises(ClaimsError):
        encode_payload(iat, bytes(8), credential, signature)


def test_the_last_iat_whose_end_fits_32_bits_is_accepted(issuer: TestIssuer) -> None:
    device = Ed25519PrivateKey.generate()
    blob = issuer.credential(device, expires_at=MAX_NUMERIC_DATE)
    iat = MAX_NUMERIC_DATE - DEVICE_CODE_LIFETIME
    code = make_device_code(blob, device, prefix="WH2:", now=iat)
    verdict = verify(code, issuer.trust(), iat)
    assert verdict.valid and verdict.claims is not None
    assert verdict.claims.expires_at == MAX_NUMERIC_DATE


# -- removed-device lists ---------------------------------------------------------------------


@pytest.mark.parametrize("value", [None, "", {}, 0, False])
def test_a_delta_whose_revoked_devices_is_not_a_list_is_refused_like_a_bundles(
    value: object,
) -> None:
    """One reading for both documents: a bundle refuses ``"revoked_devices": null``, so a
    delta does too (absent is the one way to say "none")."""
    document = StatusDelta(1, 2, 8, (), ()).to_json()
    with pytest.raises(StatusListError):
        StatusDelta.from_json({**document, "revoked_devices": value})
