"""Device codes (docs/code-format.md section 8): made offline by a phone, verified offline."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from idcode import verifier
from idcode.bundle import TrustBundle
from idcode.claims import Card
from idcode.codetext import decode_body, encode_text
from idcode.cose import Algorithm
from idcode.devicecode import (
    DEVICE_CODE_LIFETIME,
    MAX_CREDENTIAL_LIFETIME,
    Credential,
    DeviceKey,
    decode_device_message,
    device_prefix,
    issue_credential,
    make_device_code,
    split_blob,
)
from idcode.errors import ClaimsError, CoseError
from idcode.keys import IssuerKey
from idcode.qr import qr_version
from idcode.reasons import Reason
from idcode.replay import ReplayCache
from idcode.statuslist import StatusDelta, StatusList, device_ids_from_json
from idcode.testing import TestIssuer, random_card
from idcode.verifier import Trust, verify


def _p256() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


KEYS: dict[str, Callable[[], object]] = {"Ed25519": Ed25519PrivateKey.generate, "P-256": _p256}


@pytest.fixture(params=sorted(KEYS))
def device_key(request: pytest.FixtureRequest) -> object:
    return KEYS[request.param]()


@pytest.fixture
def issuer() -> TestIssuer:
    return TestIssuer()


def test_a_device_code_made_offline_verifies_and_names_its_device(
    issuer: TestIssuer, device_key: object
) -> None:
    card = random_card()
    blob = issuer.credential(device_key, card)
    code = issuer.device_code(device_key, blob)
    verdict = verify(code, issuer.trust(), issuer.now, ReplayCache())
    assert verdict.valid, verdict.detail
    assert verdict.claims is not None and verdict.claims.card == card
    assert verdict.claims.expires_at == verdict.claims.issued_at + DEVICE_CODE_LIFETIME
    public = device_key.public_key()  # type: ignore[attr-defined]
    assert verdict.device == DeviceKey.from_public_key(public).device_id
    assert verdict.to_json()["device"] == verdict.device.hex()


def test_sizes_fit_qr_version_10_at_level_m(issuer: TestIssuer) -> None:
    for name, make in KEYS.items():
        key = make()
        code = issuer.device_code(key)
        expected = {"Ed25519": 309, "P-256": 310}[name]
        assert len(code) == expected
        assert len(decode_body(code[4:])) == expected - 106
        assert qr_version(code) == 10


def test_codes_are_fresh_each_time_and_replay_is_caught(
    issuer: TestIssuer, device_key: object
) -> None:
    blob = issuer.credential(device_key)
    first, second = (issuer.device_code(device_key, blob) for _ in range(2))
    assert first != second
    replay = ReplayCache()
    trust = issuer.trust()
    assert verify(first, trust, issuer.now, replay).valid
    assert verify(second, trust, issuer.now, replay).valid
    again = verify(first, trust, issuer.now, replay)
    assert again.reason is Reason.REPLAYED and again.device is not None


@pytest.mark.parametrize(
    ("offset", "reason", "detail"),
    [
        (-31, Reason.NOT_YET_VALID, "31 s ahead"),  # the phone's clock 31 s ahead
        (-30, Reason.OK, ""),
        (89, Reason.OK, ""),
        (90, Reason.EXPIRED, "made 90 s before"),
        (3600, Reason.EXPIRED, "phone's clock is behind"),
    ],
)
def test_the_clock_rules_and_a_wrong_phone_clock_get_a_precise_reason(
    issuer: TestIssuer, offset: int, reason: Reason, detail: str
) -> None:
    key = Ed25519PrivateKey.generate()
    code = issuer.device_code(key, at=issuer.now)
    verdict = verify(code, issuer.trust(), issuer.now + offset)
    assert verdict.reason is reason
    assert detail in verdict.detail


def test_an_expired_credential_asks_the_phone_to_go_online(issuer: TestIssuer) -> None:
    key = Ed25519PrivateKey.generate()
    blob = issuer.credential(key, expires_at=issuer.now + 100)
    code = issuer.device_code(key, blob, at=issuer.now + 95)
    assert verify(code, issuer.trust(), issuer.now + 95).valid
    late = verify(code, issuer.trust(), issuer.now + 130)
    assert late.reason is Reason.EXPIRED and "go online to renew" in late.detail
    # Made after the credential ended, even if checked within the skew.
    after = issuer.device_code(key, blob, at=issuer.now + 100)
    refused = verify(after, issuer.trust(), issuer.now + 100)
    assert refused.reason is Reason.EXPIRED
    assert "after the device's credential expired" in refused.detail


def test_a_removed_device_is_refused_without_revoking_the_card(issuer: TestIssuer) -> None:
    lost, kept = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    card = random_card()
    lost_code = issuer.device_code(lost, issuer.credential(lost, card))
    kept_code = issuer.device_code(kept, issuer.credential(kept, card))
    lost_id = DeviceKey.from_public_key(lost.public_key()).device_id
    bundle = issuer.bundle("community", revoked_devices=[lost_id])
    trust = bundle.trust(prefix=issuer.prefix)
    verdict = verify(lost_code, trust, issuer.now)
    assert verdict.reason is Reason.REVOKED and "removed this device" in verdict.detail
    assert verify(kept_code, trust, issuer.now).valid
    assert verify(issuer.mint(card), trust, issuer.now).valid


def test_a_revoked_card_refuses_its_device_codes(issuer: TestIssuer) -> None:
    key = Ed25519PrivateKey.generate()
    card = random_card()
    bundle = issuer.bundle("community", revoked=[card.status_index], status_size=2**24)
    code = issuer.device_code(key, issuer.credential(key, card))
    verdict = verify(code, bundle.trust(prefix=issuer.prefix), issuer.now)
    assert verdict.reason is Reason.REVOKED


def test_a_status_delta_carries_removed_devices_to_a_terminal(issuer: TestIssuer) -> None:
    key = Ed25519PrivateKey.generate()
    code = issuer.device_code(key)
    device_id = DeviceKey.from_public_key(key.public_key()).device_id
    bundle = issuer.bundle("community")
    assert verify(code, bundle.trust(prefix=issuer.prefix), issuer.now).valid
    delta = StatusDelta(1, 2, bundle.status.size, (), (), (device_id,))
    wire = StatusDelta.from_json(json.loads(json.dumps(delta.to_json())))
    assert wire == delta
    synced = bundle.apply_delta(wire, issuer.now + 1)
    assert verify(code, synced.trust(prefix=issuer.prefix), issuer.now + 1).reason is (
        Reason.REVOKED
    )
    # A delta without devices keeps the five members of before.
    assert "revoked_devices" not in StatusDelta(1, 2, 8, (), ()).to_json()


@pytest.mark.parametrize(
    "ids",
    [
        "0123456789abcdef",
        ["0123456789ABCDEF"],
        ["0123456789abcde"],
        ["1123456789abcdef", "0123456789abcdef"],
        ["0123456789abcdef", "0123456789abcdef"],
        [1],
    ],
)
def test_revoked_device_lists_are_read_strictly(ids: object) -> None:
    with pytest.raises(ClaimsError.__mro__[1]):  # FormatError: StatusListError's base
        device_ids_from_json(ids)


def test_forged_and_mismatched_parts_are_refused(issuer: TestIssuer, device_key: object) -> None:
    card = random_card()
    blob = issuer.credential(device_key, card)
    code = issuer.device_code(device_key, blob)
    trust, now = issuer.trust(), issuer.now
    body = decode_body(code[4:])
    message = decode_device_message(body)
    credential, issuer_signature = split_blob(blob)

    def rebuilt(**changes: bytes) -> str:
        parts = message._replace(**changes)  # type: ignore[arg-type]
        payload = (
            b"\x84\x1a"
            + parts.payload[2:6]
            + b"\x48"
            + parts.code_id
            + bytes([0x58, len(parts.credential_bytes)])
            + parts.credential_bytes
            + b"\x58\x40"
            + parts.issuer_signature
        )
        raw = (
            b"\x84\x40\xa0\x58"
            + bytes([len(payload)])
            + payload
            + b"\x58\x40"
            + parts.device_signature
        )
        return encode_text("WH2:", raw)

    # Another card in the credential: the issuer did not sign it.
    other = bytearray(credential)
    other[6] ^= 1
    forged = verify(rebuilt(credential_bytes=bytes(other)), trust, now)
    assert forged.reason is Reason.BAD_SIGNATURE and "issuer" in forged.detail
    # Another code id under the device's signature.
    moved = verify(rebuilt(code_id=b"\x00" * 8), trust, now)
    assert moved.reason is Reason.BAD_SIGNATURE and moved.detail == "the device signature"
    # Another device's signature over this payload.
    thief_key = Ed25519PrivateKey.generate()
    thief = issuer.device_code(thief_key, issuer.credential(thief_key, card))
    stolen = decode_device_message(decode_body(thief[4:])).device_signature
    assert verify(rebuilt(device_signature=stolen), trust, now).reason is Reason.BAD_SIGNATURE
    # The issuer's signature over another credential.
    assert verify(rebuilt(issuer_signature=bytes(64)), trust, now).reason is (Reason.BAD_SIGNATURE)
    assert issuer_signature == message.issuer_signature


def test_a_credential_from_a_key_this_terminal_does_not_trust_is_refused(
    issuer: TestIssuer,
) -> None:
    key = Ed25519PrivateKey.generate()
    stranger = IssuerKey.generate("T", Algorithm.EDDSA)  # the same kid, another key
    blob = issue_credential(
        stranger, random_card(), DeviceKey.from_public_key(key.public_key()), issuer.now + 60
    )
    code = make_device_code(blob, key, prefix="WH2:", now=issuer.now)
    assert verify(code, issuer.trust(), issuer.now).reason is Reason.BAD_SIGNATURE
    unknown = IssuerKey.generate("Z", Algorithm.EDDSA)
    blob = issue_credential(
        unknown, random_card(), DeviceKey.from_public_key(key.public_key()), issuer.now + 60
    )
    code = make_device_code(blob, key, prefix="WH2:", now=issuer.now)
    assert verify(code, issuer.trust(), issuer.now).reason is Reason.UNKNOWN_KEY
    es = Trust.of([issuer.key.public], prefix="WH1:", algorithms=[Algorithm.ES256])
    assert verify(issuer.device_code(key), es, issuer.now).reason is Reason.UNSUPPORTED_ALG


def test_credentials_outside_the_keys_signing_period_are_refused(issuer: TestIssuer) -> None:
    now = issuer.now
    key = IssuerKey.generate("K", Algorithm.EDDSA, not_before=now - 100, not_after=now + 100)
    device = Ed25519PrivateKey.generate()
    trust = Trust.of([key.public], prefix="WH1:", algorithms=[Algorithm.EDDSA])
    public = DeviceKey.from_public_key(device.public_key())
    for expires_at, ok in [
        (now - 100, False),
        (now + 100 + MAX_CREDENTIAL_LIFETIME, True),
        (now + 101 + MAX_CREDENTIAL_LIFETIME, False),
    ]:
        blob = issue_credential(key, random_card(), public, expires_at)
        code = make_device_code(blob, device, prefix="WH2:", now=now - 50)
        verdict = verify(code, trust, now - 50)
        assert verdict.valid is ok or verdict.reason is Reason.UNKNOWN_KEY
        if not ok:
            assert "signing period" in verdict.detail


def test_a_verified_credential_is_remembered_for_the_key_that_verified_it_only(
    issuer: TestIssuer,
) -> None:
    key = Ed25519PrivateKey.generate()
    blob = issuer.credential(key)
    first = issuer.trust()
    assert verify(issuer.device_code(key, blob), first, issuer.now).valid
    assert verifier._verified_credentials[blob] is first.keys[b"T"]
    # A new trust with the same key objects (a status delta applied): still remembered.
    bundle = issuer.bundle("community")
    trust = bundle.trust(prefix=issuer.prefix)
    assert verify(issuer.device_code(key, blob), trust, issuer.now).valid
    remembered = verifier._verified_credentials[blob]
    assert remembered is trust.keys[b"T"]
    delta = StatusDelta(base=1, target=2, size=bundle.status.size, invalidated=(), validated=())
    later = bundle.apply_delta(delta, issuer.now + 60)
    assert later.trust(prefix=issuer.prefix).keys[b"T"] is remembered
    # Another key under the same kid: the remembered credential does not carry over.
    other = TestIssuer(now=issuer.now)
    assert verify(issuer.device_code(key, blob), other.trust(), issuer.now).reason in (
        Reason.BAD_SIGNATURE,
        Reason.UNKNOWN_KEY,
    )


def test_the_private_key_must_match_the_credential(issuer: TestIssuer) -> None:
    blob = issuer.credential(Ed25519PrivateKey.generate())
    with pytest.raises(ValueError, match="not the key this credential certifies"):
        make_device_code(blob, Ed25519PrivateKey.generate(), prefix="WH2:", now=issuer.now)
    with pytest.raises(ClaimsError):
        split_blob(blob[:-1])


def test_prefixes() -> None:
    assert device_prefix("WH1:") == "WH2:"
    assert device_prefix("SZXA1:") == "SZXA2:"


@pytest.mark.parametrize(
    "jwk",
    [
        None,
        [],
        {"kty": "OKP", "crv": "Ed25519"},
        {"kty": "OKP", "crv": "Ed25519", "x": "AAAA"},
        {"kty": "OKP", "crv": "Ed25519", "x": "A" * 43, "d": "A" * 43},
        {"kty": "OKP", "crv": "Ed25519", "x": "A" * 42 + "=="},
        {"kty": "OKP", "crv": "X25519", "x": "A" * 43},
        {"kty": "EC", "crv": "P-384", "x": "A" * 64, "y": "A" * 64},
        {"kty": "EC", "crv": "P-256", "x": "A" * 43, "y": "A" * 43},  # not on the curve
        {"kty": "EC", "crv": "P-256", "x": "A" * 43},
        {"kty": "RSA", "n": "AQAB", "e": "AQAB"},
    ],
)
def test_device_keys_from_bad_jwks_are_refused_with_a_reason(jwk: object) -> None:
    with pytest.raises(ValueError) as caught:
        DeviceKey.from_jwk(jwk)
    assert str(caught.value)


def test_device_keys_round_trip_through_jwks(device_key: object) -> None:
    key = DeviceKey.from_public_key(device_key.public_key())  # type: ignore[attr-defined]
    assert DeviceKey.from_jwk(key.to_jwk()) == key


def test_a_credential_with_an_invalid_point_is_malformed(issuer: TestIssuer) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    code = issuer.device_code(key)
    raw = bytearray(decode_body(code[4:]))
    # The compressed point's x, replaced by a value with no point on the curve for it.
    message = decode_device_message(bytes(raw))
    start = bytes(raw).index(message.credential_bytes) + 17 + 1
    for candidate in range(256):
        raw[start : start + 32] = bytes([candidate]) * 32
        try:
            Credential.from_bytes(bytes(raw[start - 18 : start + 32]))
        except ClaimsError as exc:
            if "not a valid point" in str(exc):
                break
    verdict = verify(encode_text("WH2:", bytes(raw)), issuer.trust(), issuer.now)
    assert verdict.reason is Reason.MALFORMED


@settings(max_examples=400, deadline=None)
@given(data=st.data())
def test_any_mutation_of_a_device_code_is_refused_and_never_raises(data: st.DataObject) -> None:
    issuer = _SHARED
    raw = bytearray(_SHARED_RAW)
    for _ in range(data.draw(st.integers(1, 4))):
        edit = data.draw(st.sampled_from(["flip", "insert", "delete", "truncate"]))
        position = data.draw(st.integers(0, len(raw) - 1))
        if edit == "flip":
            raw[position] ^= data.draw(st.integers(1, 255))
        elif edit == "insert":
            raw.insert(position, data.draw(st.integers(0, 255)))
        elif edit == "delete":
            del raw[position]
        else:
            del raw[position:]
        if not raw:
            raw.append(0)
    verdict = verify(encode_text("WH2:", bytes(raw)), issuer.trust(), issuer.now)
    if bytes(raw) != _SHARED_RAW:
        assert not verdict.valid


_SHARED = TestIssuer()
_SHARED_RAW = decode_body(_SHARED.device_code(Ed25519PrivateKey.generate())[4:])


def test_decoding_refuses_every_other_layout() -> None:
    with pytest.raises(CoseError):
        decode_device_message(b"")
    with pytest.raises(CoseError):
        decode_device_message(_SHARED_RAW + b"\x00")
    with pytest.raises(CoseError):
        decode_device_message(b"\x84\x41\x00" + _SHARED_RAW[3:])


def test_bundles_round_trip_their_removed_devices(issuer: TestIssuer) -> None:
    ids = [bytes.fromhex("00" * 8), bytes.fromhex("ff" * 8)]
    bundle = issuer.bundle("community", revoked_devices=ids)
    assert isinstance(bundle, TrustBundle)
    assert bundle.revoked_devices == frozenset(ids)
    assert issuer.bundle("community").revoked_devices == frozenset()
    assert StatusList(8).size == 8
    assert Card.from_bytes(random_card().to_bytes())
