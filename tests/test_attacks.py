"""One regression test per attack class (as PyJWT keeps tests/test_advisory.py), on codes,
visitor passes, ID tokens, terminal tokens and trust bundles: algorithm confusion, a public
key used as an HMAC secret, kid tricks, truncated signatures, CBOR bombs and deep nesting,
deeply nested JSON bodies, oversized bodies, clock games and replay (across two replicas:
tests/test_replicas.py)."""

from __future__ import annotations

import base64
import hmac
import json
import time
import uuid
from collections.abc import Callable
from typing import Any

import base45
import cbor2
import httpx2
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi.testclient import TestClient
from hypothesis import given
from hypothesis import strategies as st
from jwt.algorithms import OKPAlgorithm

from idcode.auth import DEV_IDP_KID, dev_idp_jwks, dev_idp_key
from idcode.bundle import BUNDLE_TYPE, DELTA_TYPE, BundleError, verify_bundle, verify_delta
from idcode.claims import CodeClaims
from idcode.cose import Algorithm, encode_protected, encode_sign1, to_be_signed
from idcode.errors import KeyMaterialError
from idcode.keys import PublicKey, keys_from_jwks
from idcode.keystore import open_key_store
from idcode.reasons import Reason
from idcode.replay import ReplayCache
from idcode.settings import Settings
from idcode.statuslist import StatusDelta, StatusList
from idcode.terminals import terminal_token
from idcode.testing import TestIssuer, random_card
from idcode.verifier import Trust, verify
from idcode.visitorpass import PassClaims, pass_prefix, verify_pass

from .conftest import NOW, Tokens


def code_with_protected(issuer: TestIssuer, protected: bytes, sign: bool = True) -> str:
    payload = CodeClaims(NOW, NOW + 60, bytes(8), random_card()).to_cbor()
    signature = issuer.key.sign(to_be_signed(protected, payload)) if sign else bytes(64)
    encoded: bytes = base45.b45encode(encode_sign1(protected, payload, signature))
    return issuer.prefix + encoded.decode()


def test_bignum_alg_is_malformed_not_an_exception(issuer: TestIssuer, trust: Trust) -> None:
    protected = cbor2.dumps({1: 2**64, 4: b"T"})  # cbor2 writes tag 2 for 2**64
    assert verify(code_with_protected(issuer, protected), trust, NOW).reason is Reason.MALFORMED


@pytest.mark.parametrize(
    "tagged_alg",
    [cbor2.CBORTag(24, b"\x27"), cbor2.CBORTag(55799, -8), cbor2.CBORTag(35, "a+"), -8.0],
    ids=["encoded-cbor", "self-describe", "regex", "float"],
)
def test_tags_and_floats_in_the_header_are_refused_before_any_tag_handler_runs(
    issuer: TestIssuer, trust: Trust, tagged_alg: Any
) -> None:
    protected = cbor2.dumps({1: tagged_alg, 4: b"T"})
    assert verify(code_with_protected(issuer, protected), trust, NOW).reason is Reason.MALFORMED


@given(
    st.recursive(
        st.none()
        | st.booleans()
        | st.integers()
        | st.floats()
        | st.binary(max_size=8)
        | st.text(max_size=8),
        lambda children: (
            st.lists(children, max_size=3)
            | st.dictionaries(st.integers(-5, 5), children, max_size=3)
            | st.builds(cbor2.CBORTag, st.sampled_from([0, 1, 2, 3, 4, 5, 24, 32, 55799]), children)
        ),
        max_leaves=6,
    )
)
def test_any_cbor_value_as_alg_or_kid_never_raises_or_verifies(value: Any) -> None:
    issuer = TestIssuer(now=NOW)
    for header in ({1: value, 4: b"T"}, {1: -8, 4: value}):
        try:
            protected = cbor2.dumps(header)
        except (ValueError, TypeError, OverflowError):
            continue
        code = code_with_protected(issuer, protected)
        assert not verify(code, issuer.trust(), NOW).valid or header == {1: -8, 4: b"T"}


def test_a_trusted_key_cannot_sign_a_code_that_lives_longer_than_codes_may(
    issuer: TestIssuer, trust: Trust
) -> None:
    forever = CodeClaims(NOW, 2**32 - 1, bytes(8), random_card())  # a leaked key's dream
    replay = ReplayCache()
    verdict = verify(issuer.sign(forever), trust, NOW + 86_400 * 365, replay)
    assert verdict.reason is Reason.MALFORMED
    assert "lives longer" in verdict.detail
    assert len(replay) == 0


@pytest.mark.parametrize("at", [NOW - 3600, NOW + 3600], ids=["from-the-future", "expired"])
def test_clock_failures_never_touch_the_replay_state(issuer: TestIssuer, at: int) -> None:
    replay = ReplayCache()
    assert not verify(issuer.mint(), issuer.trust(), at, replay).valid
    assert len(replay) == 0


def test_es256_key_used_with_an_eddsa_header_is_algorithm_confusion(
    issuer: TestIssuer, es256_issuer: TestIssuer
) -> None:
    trust = Trust.of(
        [es256_issuer.key.public], prefix="WH1:", algorithms=[Algorithm.EDDSA, Algorithm.ES256]
    )
    eddsa_signed_as_e = TestIssuer(kid="E", now=NOW).mint()
    assert verify(eddsa_signed_as_e, trust, NOW).reason is Reason.UNSUPPORTED_ALG


def good_jwk() -> dict[str, Any]:
    return TestIssuer(kid="K").key.public.to_jwk()


def unused_bits_set(text: str) -> str:
    """``text`` (base64url of 32 bytes: 43 characters, 2 unused bits) with an unused bit set."""
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    return text[:-1] + alphabet[alphabet.index(text[-1]) | 1]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"d": "AAAA"}, "private"),
        ({"kid": 7}, "kid"),
        ({"kid": "KK"}, "one ASCII"),
        ({"use": "enc"}, "use"),
        ({"nbf": 10, "exp": 5}, "nbf > exp"),
        ({"nbf": "yesterday"}, "integer"),
        ({"alg": "ES256"}, "unusable"),
        ({"alg": "eddsa"}, "unknown algorithm"),
        ({"alg": "HS256"}, "unknown algorithm"),
        ({"crv": "Ed448"}, "unusable"),
        # pyjwt's base64url decoder ignores padding, drops junk and unused bits, so these
        # loaded as the same key (review 10, finding 8c).
        ({"x": good_jwk()["x"][:20] + "\x00=" + good_jwk()["x"][20:]}, "allows only"),
        ({"x": good_jwk()["x"][:20] + "!!!!" + good_jwk()["x"][20:]}, "allows only"),
        ({"x": unused_bits_set(good_jwk()["x"])}, "not canonical"),
    ],
)
def test_dangerous_or_sloppy_jwks_are_refused(change: dict[str, Any], message: str) -> None:
    with pytest.raises(KeyMaterialError, match=message):
        PublicKey.from_jwk({**good_jwk(), **change})


def test_a_jwk_set_naming_one_kid_twice_is_refused() -> None:
    with pytest.raises(KeyMaterialError, match="same kid twice"):
        keys_from_jwks({"keys": [good_jwk(), good_jwk()]})


# == The attack classes of issue 6, one regression test each ===================================
#
# Replay across two replicas: tests/test_replicas.py,
# test_code_verified_on_one_replica_is_replayed_on_the_other (two real server processes on one
# PostgreSQL and Redis), and tests/test_api_verify.py,
# test_a_code_accepted_by_one_replica_is_replayed_at_another (two apps in one process).
# Algorithm confusion for codes is test_es256_key_used_with_an_eddsa_header_is_algorithm_confusion
# above; for passes, tests/test_visitorpass.py,
# test_pass_claiming_another_algorithm_for_a_trusted_key_is_unsupported_alg; alg "none" and
# HS256 ID tokens signed with the identity provider's PEM or raw public key are in
# tests/test_api_auth.py (BAD_TOKENS).


def b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def compact_jws(
    header: dict[str, Any], claims: dict[str, Any], sign: Callable[[bytes], bytes]
) -> str:
    """A compact JWS assembled by hand (pyjwt rightly refuses to make most of these)."""
    signing_input = b64url(json.dumps(header).encode()) + "." + b64url(json.dumps(claims).encode())
    return signing_input + "." + b64url(sign(signing_input.encode()))


def public_key_secrets(public_jwk: dict[str, Any], public_key: Any) -> dict[str, bytes]:
    """A public key in the forms an attacker would try as an HMAC secret."""
    return {
        "jwk-json": json.dumps(public_jwk).encode(),
        "jwk-json-compact": json.dumps(public_jwk, separators=(",", ":"), sort_keys=True).encode(),
        "pem": public_key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
        "raw": public_key.public_bytes_raw(),
    }


def hmac_signer(secret: bytes, digest: str = "sha256") -> Callable[[bytes], bytes]:
    return lambda message: hmac.digest(secret, message, digest)


def cose_text(prefix: str, protected: bytes, payload: bytes, signature: bytes) -> str:
    encoded: bytes = base45.b45encode(encode_sign1(protected, payload, signature))
    return prefix + encoded.decode()


PASS = PassClaims(NOW, NOW + 3600, NOW, bytes(8), "garden-court", bytes(12))
SECRET_FORMS = ["jwk-json", "jwk-json-compact", "pem", "raw"]
Enrol = Callable[..., tuple[str, str]]


def assert_problem(response: httpx2.Response, status: int, reason: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert (response.json()["reason"], response.json()["status"]) == (reason, status)


def operator_claims(settings: Settings) -> dict[str, Any]:
    """Claims of a valid operator ID token from the development identity provider."""
    now = int(time.time())
    return {
        "iss": settings.oidc_issuer,
        "aud": settings.oidc_audience,
        "sub": "mallory",
        "iat": now,
        "exp": now + 600,
        settings.oidc_roles_claim: [settings.operator_role],
    }


def terminal_claims(terminal_id: str) -> dict[str, Any]:
    now = int(time.time())
    return {
        "iss": terminal_id,
        "sub": terminal_id,
        "aud": "idcode",
        "iat": now,
        "exp": now + 60,
        "jti": uuid.uuid4().hex,
    }


def root_claims(typ: str) -> dict[str, Any]:
    """Valid claims of a trust bundle or a status delta."""
    if typ == DELTA_TYPE:
        return {"iss": "idcode", "iat": NOW, "delta": StatusDelta(0, 1, 8, (1,), ()).to_json()}
    return {
        "iss": "idcode",
        "iat": NOW,
        "ver": 1,
        "max_age": 3600,
        "keys": {"keys": []},
        "status": StatusList(8).to_json(),
        "scene": {},
    }


def register_terminal(
    client: TestClient, tokens: Tokens, site: str = "hall-1"
) -> tuple[str, Ed25519PrivateKey, dict[str, Any]]:
    """A community terminal registered by an operator: (its id, its key, its public JWK)."""
    key = Ed25519PrivateKey.generate()
    jwk = OKPAlgorithm.to_jwk(key.public_key(), as_dict=True)
    body = {"scene": "community", "site": site, "public_jwk": jwk}
    response = client.post("/v1/terminals", json=body, headers=tokens.operator())
    assert response.status_code == 201, response.text
    return response.json()["id"], key, jwk


def test_the_forging_helpers_make_accepted_tokens_when_nothing_is_wrong(
    client: TestClient, tokens: Tokens, service_settings: Settings, issuer: TestIssuer
) -> None:
    """Guards the tests below: their tokens fail for their one defect, not for another."""
    id_token = compact_jws(
        {"alg": "EdDSA", "typ": "JWT", "kid": DEV_IDP_KID},
        operator_claims(service_settings),
        dev_idp_key(service_settings.keys_dir).sign,
    )
    assert client.get("/v1/terminals", headers={"Authorization": f"Bearer {id_token}"}).is_success
    terminal_id, key, _ = register_terminal(client, tokens)
    terminal = compact_jws({"alg": "EdDSA"}, terminal_claims(terminal_id), key.sign)
    assert client.get(
        "/v1/trust-bundle", headers={"Authorization": f"Bearer {terminal}"}
    ).is_success
    root = issuer.root
    for typ, load in ((BUNDLE_TYPE, verify_bundle), (DELTA_TYPE, verify_delta)):
        header = {"alg": "EdDSA", "typ": typ, "kid": root.kid}
        load(compact_jws(header, root_claims(typ), root.private_key.sign), root.public_jwk)


# -- a public key used as an HMAC secret ------------------------------------------------------


@pytest.mark.parametrize("secret_form", SECRET_FORMS)
@pytest.mark.parametrize(
    ("cose_alg", "digest", "reason"),
    [(7, "sha512", Reason.UNSUPPORTED_ALG), (5, "sha256", Reason.MALFORMED)],
    ids=["hmac-512-64-byte-tag", "hmac-256-32-byte-tag"],
)
def test_code_or_pass_maced_with_the_public_key_as_hmac_secret_is_refused(
    issuer: TestIssuer, trust: Trust, secret_form: str, cose_alg: int, digest: str, reason: Reason
) -> None:
    """COSE HMAC (alg 5, 7) keyed with the trusted key's public forms: a 64-byte tag reaches
    the algorithm check and is unsupported_alg; a 32-byte one is not a signature at all."""
    key = issuer.key.public
    secret = public_key_secrets(key.to_jwk(), key.key)[secret_form]
    protected = encode_protected(cose_alg, key.kid.encode())
    for payload, prefix, check in (
        (CodeClaims(NOW, NOW + 60, bytes(8), random_card()).to_cbor(), issuer.prefix, verify),
        (PASS.to_cbor(), pass_prefix(issuer.prefix), verify_pass),
    ):
        tag = hmac.digest(secret, to_be_signed(protected, payload), digest)
        assert check(cose_text(prefix, protected, payload, tag), trust, NOW).reason is reason


@pytest.mark.parametrize("secret_form", SECRET_FORMS)
def test_id_token_hs256_with_the_idp_public_jwk_as_secret_is_401(
    client: TestClient, service_settings: Settings, secret_form: str
) -> None:
    """(tests/test_api_auth.py tries the PEM and raw forms on three more endpoints.)"""
    public = dev_idp_key(service_settings.keys_dir).public_key()
    jwk = dev_idp_jwks(service_settings.keys_dir)["keys"][0]
    secret = public_key_secrets(jwk, public)[secret_form]
    token = compact_jws(
        {"alg": "HS256", "typ": "JWT", "kid": DEV_IDP_KID},
        operator_claims(service_settings),
        hmac_signer(secret),
    )
    response = client.get("/v1/terminals", headers={"Authorization": f"Bearer {token}"})
    assert_problem(response, 401, "invalid_token")


@pytest.mark.parametrize("secret_form", SECRET_FORMS)
def test_terminal_token_hs256_with_the_terminals_public_jwk_as_secret_is_401(
    client: TestClient, tokens: Tokens, secret_form: str
) -> None:
    terminal_id, key, jwk = register_terminal(client, tokens)
    secret = public_key_secrets(jwk, key.public_key())[secret_form]
    token = compact_jws(
        {"alg": "HS256", "typ": "JWT"}, terminal_claims(terminal_id), hmac_signer(secret)
    )
    response = client.get("/v1/trust-bundle", headers={"Authorization": f"Bearer {token}"})
    assert_problem(response, 401, "invalid_token")


@pytest.mark.parametrize("secret_form", SECRET_FORMS)
@pytest.mark.parametrize("typ", [BUNDLE_TYPE, DELTA_TYPE])
def test_bundle_or_delta_hs256_with_the_root_public_jwk_as_secret_is_bundle_error(
    issuer: TestIssuer, secret_form: str, typ: str
) -> None:
    root_jwk = issuer.root.public_jwk
    secret = public_key_secrets(root_jwk, issuer.root.private_key.public_key())[secret_form]
    for alg in ("HS256", "EdDSA"):  # the header naming HMAC, or lying that it is EdDSA
        token = compact_jws(
            {"alg": alg, "typ": typ, "kid": root_jwk["kid"]}, root_claims(typ), hmac_signer(secret)
        )
        with pytest.raises(BundleError):
            (verify_bundle if typ == BUNDLE_TYPE else verify_delta)(token, root_jwk)


def test_bundle_or_delta_with_alg_none_or_another_algorithm_is_bundle_error(
    issuer: TestIssuer,
) -> None:
    root_jwk = issuer.root.public_jwk
    for typ, load in ((BUNDLE_TYPE, verify_bundle), (DELTA_TYPE, verify_delta)):
        for alg in ("none", "ES256", "RS256", "eddsa"):
            token = compact_jws(
                {"alg": alg, "typ": typ, "kid": root_jwk["kid"]},
                root_claims(typ),
                issuer.root.private_key.sign if alg == "eddsa" else lambda _: b"",
            )
            with pytest.raises(BundleError):
                load(token, root_jwk)


# -- kid tricks -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kid", "reason"),
    [
        (b"", Reason.UNKNOWN_KEY),
        (b"X", Reason.UNKNOWN_KEY),
        (b"t", Reason.UNKNOWN_KEY),  # kids are case-sensitive
        (b"TT", Reason.UNKNOWN_KEY),
        (b"T\x00", Reason.UNKNOWN_KEY),
        (b"\xff", Reason.UNKNOWN_KEY),
        ("Ｔ".encode(), Reason.UNKNOWN_KEY),  # noqa: RUF001  full-width T
        (b"../../keys/T", Reason.UNKNOWN_KEY),
        (b"K" * 200, Reason.UNKNOWN_KEY),
        (b"K" * 300, Reason.MALFORMED),  # the text is then over 512 characters
    ],
    ids=[
        "empty",
        "unknown",
        "lower-case",
        "two-letters",
        "nul",
        "not-utf8",
        "full-width",
        "path",
        "long",
        "too-long",
    ],
)
def test_code_and_pass_with_a_tricky_kid_are_refused_before_any_key_is_used(
    issuer: TestIssuer, trust: Trust, kid: bytes, reason: Reason
) -> None:
    protected = encode_protected(int(issuer.key.alg), kid)
    for payload, prefix, check in (
        (CodeClaims(NOW, NOW + 60, bytes(8), random_card()).to_cbor(), issuer.prefix, verify),
        (PASS.to_cbor(), pass_prefix(issuer.prefix), verify_pass),
    ):
        # Signed by the trusted key itself: only the kid is wrong.
        signature = issuer.key.sign(to_be_signed(protected, payload))
        assert check(cose_text(prefix, protected, payload, signature), trust, NOW).reason is reason


JWS_KIDS = {
    "empty": "",
    "path-traversal": "../../keys/dev-idp.pem",
    "absolute-path": "/etc/passwd",
    "url": "https://attacker.example/jwks.json",
    "non-ascii": "密钥",
    "long": "k" * 4096,
    "not-a-string": 7,
}


@pytest.mark.parametrize("kid", JWS_KIDS.values(), ids=JWS_KIDS.keys())
def test_id_token_with_a_tricky_kid_is_401_even_when_signed_by_the_idp(
    client: TestClient, service_settings: Settings, kid: object
) -> None:
    key = dev_idp_key(service_settings.keys_dir)
    token = compact_jws(
        {"alg": "EdDSA", "typ": "JWT", "kid": kid}, operator_claims(service_settings), key.sign
    )
    response = client.get("/v1/terminals", headers={"Authorization": f"Bearer {token}"})
    assert_problem(response, 401, "invalid_token")


@pytest.mark.parametrize("kid", JWS_KIDS.values(), ids=JWS_KIDS.keys())
def test_terminal_token_with_a_tricky_kid_is_verified_with_the_terminals_own_key_only(
    client: TestClient, tokens: Tokens, kid: object
) -> None:
    terminal_id, key, _ = register_terminal(client, tokens)
    forged = compact_jws(
        {"alg": "EdDSA", "kid": kid},
        terminal_claims(terminal_id),
        Ed25519PrivateKey.generate().sign,
    )
    response = client.get("/v1/trust-bundle", headers={"Authorization": f"Bearer {forged}"})
    assert_problem(response, 401, "invalid_token")
    # The kid decides nothing: the same header signed by the terminal's key is accepted (a
    # kid that is not even a string makes any token invalid, RFC 7515 section 4.1.4).
    genuine = compact_jws({"alg": "EdDSA", "kid": kid}, terminal_claims(terminal_id), key.sign)
    response = client.get("/v1/trust-bundle", headers={"Authorization": f"Bearer {genuine}"})
    assert response.status_code == (200 if isinstance(kid, str) else 401), response.text


@pytest.mark.parametrize("kid", JWS_KIDS.values(), ids=JWS_KIDS.keys())
def test_bundle_or_delta_naming_another_kid_than_the_pinned_roots_is_bundle_error(
    issuer: TestIssuer, kid: object
) -> None:
    root_jwk = issuer.root.public_jwk
    for typ, load in ((BUNDLE_TYPE, verify_bundle), (DELTA_TYPE, verify_delta)):
        token = compact_jws(
            {"alg": "EdDSA", "typ": typ, "kid": kid}, root_claims(typ), issuer.root.private_key.sign
        )
        with pytest.raises(BundleError):
            load(token, root_jwk)


# -- truncated signatures ---------------------------------------------------------------------


@pytest.mark.parametrize("length", [0, 1, 32, 63])
def test_code_and_pass_with_a_truncated_signature_are_malformed(
    issuer: TestIssuer, trust: Trust, length: int
) -> None:
    protected = encode_protected(int(issuer.key.alg), issuer.key.kid.encode())
    for payload, prefix, check in (
        (CodeClaims(NOW, NOW + 60, bytes(8), random_card()).to_cbor(), issuer.prefix, verify),
        (PASS.to_cbor(), pass_prefix(issuer.prefix), verify_pass),
    ):
        signature = issuer.key.sign(to_be_signed(protected, payload))[:length]
        verdict = check(cose_text(prefix, protected, payload, signature), trust, NOW)
        assert verdict.reason is Reason.MALFORMED
        assert "signature must be 64 bytes" in verdict.detail


def truncated(token: str, keep: int) -> str:
    """``token`` with its signature cut to its first ``keep`` bytes."""
    signing_input, _, signature = token.rpartition(".")
    raw = base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4))
    return signing_input + "." + b64url(raw[:keep])


@pytest.mark.parametrize("keep", [0, 32, 63])
def test_id_token_terminal_token_bundle_and_delta_with_a_truncated_signature_are_refused(
    client: TestClient, tokens: Tokens, service_settings: Settings, keep: int
) -> None:
    operator = tokens.operator()["Authorization"].removeprefix("Bearer ")
    response = client.get(
        "/v1/terminals", headers={"Authorization": f"Bearer {truncated(operator, keep)}"}
    )
    assert_problem(response, 401, "invalid_token")

    terminal_id, key, _ = register_terminal(client, tokens)
    token = truncated(terminal_token(terminal_id, key), keep)
    response = client.get("/v1/trust-bundle", headers={"Authorization": f"Bearer {token}"})
    assert_problem(response, 401, "invalid_token")

    root = open_key_store(service_settings.keys_dir).root_public_jwk()
    bundle = client.get(
        "/v1/trust-bundle", headers={"Authorization": "Bearer " + terminal_token(terminal_id, key)}
    )
    delta = client.get(
        "/v1/trust-bundle/status-delta?since=0",
        headers={"Authorization": "Bearer " + terminal_token(terminal_id, key)},
    )
    assert (bundle.status_code, delta.status_code) == (200, 200)
    verify_bundle(bundle.text, root)  # whole, they load
    verify_delta(delta.text, root)
    with pytest.raises(BundleError):
        verify_bundle(truncated(bundle.text, keep), root)
    with pytest.raises(BundleError):
        verify_delta(truncated(delta.text, keep), root)


# -- CBOR bombs and deep nesting --------------------------------------------------------------

CBOR_BOMBS = {
    # Heads that declare far more than the message holds: nothing may be allocated for them.
    "array-of-2**64-1-items": b"\x9b" + b"\xff" * 8,
    "map-of-2**32-1-entries": b"\xba" + b"\xff" * 4,
    "byte-string-of-2**63-bytes": b"\x5b\x80" + bytes(7),
    "text-of-2**32-1-bytes": b"\x7a" + b"\xff" * 4,
    # Nesting as deep as a code's length allows.
    "arrays-300-deep": b"\x81" * 300 + b"\x00",
    "maps-150-deep": b"\xa1\x01" * 150 + b"\x00",
    "indefinite-arrays-300-deep": b"\x9f" * 300 + b"\xff" * 300,
    "tags-300-deep": b"\xd8\x18" * 150 + b"\x00",
}


@pytest.mark.parametrize("bomb", CBOR_BOMBS.values(), ids=CBOR_BOMBS.keys())
def test_cbor_bomb_as_code_or_pass_message_or_as_signed_claims_is_malformed(
    issuer: TestIssuer, trust: Trust, bomb: bytes
) -> None:
    protected = encode_protected(int(issuer.key.alg), issuer.key.kid.encode())
    for prefix, check in ((issuer.prefix, verify), (pass_prefix(issuer.prefix), verify_pass)):
        as_message = prefix + base45.b45encode(bomb).decode()
        # Inside a correctly signed message, where the claims are decoded.
        signed = cose_text(prefix, protected, bomb, issuer.key.sign(to_be_signed(protected, bomb)))
        for text in (as_message, signed):
            verdict = check(text, trust, NOW)
            assert verdict.reason is Reason.MALFORMED, (text[:40], verdict)
            assert not verdict.detail.startswith("unexpected")  # refused, not caught


DEEP = 10_000  # levels of JSON nesting: at most 60 KB, under every body limit


class Callers:
    """Authorization headers for each kind of caller; a terminal's token is fresh each time
    (it is single-use, and checked before a body is read)."""

    def __init__(self, client: TestClient, tokens: Tokens, enrol: Enrol) -> None:
        self.tokens = tokens
        self.id_number = enrol()[1]
        self.terminal_id, self.key, _ = register_terminal(client, tokens)

    def headers(self, caller: str) -> dict[str, str]:
        if caller == "terminal":
            return {"Authorization": "Bearer " + terminal_token(self.terminal_id, self.key)}
        if caller == "citizen":
            return self.tokens.citizen(self.id_number)
        return self.tokens.verifier() if caller == "verifier" else self.tokens.operator()


@pytest.mark.parametrize(
    ("method", "path", "body", "caller"),
    [
        ("POST", "/v1/verify", b'{"code": %s}', "verifier"),
        ("POST", "/v1/cards", b'{"id_number": "1", "name": %s}', "operator"),
        (
            "POST",
            "/v1/terminals",
            b'{"scene": "community", "site": "x", "public_jwk": %s}',
            "operator",
        ),
        ("POST", "/v1/events", b'{"events": [{"scene_result": %s}]}', "terminal"),
        ("POST", "/v1/visitor-passes", b'{"community": %s}', "citizen"),
    ],
    ids=["verify", "enrol", "register-terminal", "events", "visitor-pass"],
)
def test_deeply_nested_json_body_is_a_4xx_problem_not_a_500(
    client: TestClient,
    tokens: Tokens,
    enrol: Enrol,
    method: str,
    path: str,
    body: bytes,
    caller: str,
) -> None:
    callers = Callers(client, tokens, enrol)
    for nested in (b"[" * DEEP + b"]" * DEEP, b'{"a":' * DEEP + b"1" + b"}" * DEEP):
        response = client.request(
            method,
            path,
            content=body % nested,
            headers={**callers.headers(caller), "Content-Type": "application/json"},
        )
        assert response.status_code in (400, 422), response.text
        assert response.headers["content-type"] == "application/problem+json"


@pytest.mark.parametrize("depth", [40, 500, 100_000])
def test_deeply_nested_scene_data_is_refused_and_not_stored(
    client: TestClient, tokens: Tokens, depth: int
) -> None:
    site = f"deep-{depth}"
    nested = b"[" * depth + b"]" * depth
    response = client.put(
        f"/v1/scenes/community/{site}",
        content=b'{"residents": [], "rules": ' + nested + b"}",
        headers={**tokens.operator(), "Content-Type": "application/json"},
    )
    assert response.status_code in (400, 422), response.text
    assert response.headers["content-type"] == "application/problem+json"
    if response.status_code == 422:
        assert response.json()["reason"] == "invalid_scene_data"
    # Nothing was stored: a terminal of the site gets the empty scene data.
    terminal_id, key, _ = register_terminal(client, tokens, site=site)
    bundle = client.get(
        "/v1/trust-bundle", headers={"Authorization": "Bearer " + terminal_token(terminal_id, key)}
    )
    assert jwt.decode(bundle.text, options={"verify_signature": False})["scene"]["version"] == 0


# -- oversized bodies -------------------------------------------------------------------------

KIB, MIB = 1024, 1024 * 1024
# (method, path, its body limit, the media type it reads)
BODY_LIMITS = [
    ("POST", "/v1/verify", 64 * KIB, "application/json"),
    ("POST", "/v1/cards", 64 * KIB, "application/json"),
    ("POST", f"/v1/cards/{uuid.UUID(int=1)}/status", 64 * KIB, "application/json"),
    ("POST", "/v1/terminals", 64 * KIB, "application/json"),
    ("POST", "/v1/visitor-passes", 64 * KIB, "application/json"),
    ("POST", "/v1/events", 1 * MIB, "application/json"),
    ("PUT", "/v1/scenes/community/big-site", 2 * MIB, "application/json"),
    ("POST", "/v1/cards/import", 64 * MIB, "text/csv"),
]
# Routes that take no body have the default limit too.
NO_BODY = [("POST", "/v1/codes", 64 * KIB, "application/json"), ("GET", "/v1/me", 64 * KIB, "")]


@pytest.mark.parametrize(
    ("method", "path", "limit", "media_type"),
    BODY_LIMITS + NO_BODY,
    ids=[f"{method} {path}" for method, path, _, _ in BODY_LIMITS + NO_BODY],
)
def test_body_declared_one_byte_over_its_routes_limit_is_413_before_any_token_is_read(
    client: TestClient, method: str, path: str, limit: int, media_type: str
) -> None:
    headers = {"Content-Type": media_type} if media_type else {}
    over = client.request(method, path, content=b" " * (limit + 1), headers=headers)
    assert_problem(over, 413, "payload_too_large")
    assert str(limit) in over.json()["title"]
    at_the_limit = client.request(method, path, content=b" " * limit, headers=headers)
    # Through the limit: refused for what it is (not JSON, or no token), not for its size.
    assert at_the_limit.status_code in (401, 422), at_the_limit.text
    assert at_the_limit.headers["content-type"] == "application/problem+json"


@pytest.mark.parametrize(
    ("method", "path", "limit", "media_type"),
    BODY_LIMITS,
    ids=[f"{method} {path}" for method, path, _, _ in BODY_LIMITS],
)
def test_body_streamed_without_a_length_is_cut_off_with_413_one_byte_over_the_limit(
    client: TestClient,
    tokens: Tokens,
    enrol: Enrol,
    method: str,
    path: str,
    limit: int,
    media_type: str,
) -> None:
    """Chunked, with a caller the route admits: callers are checked before the body is read
    (finding 8a of issue 10), so only an admitted caller's body is read at all."""
    caller = {"/v1/visitor-passes": "citizen", "/v1/events": "terminal", "/v1/verify": "verifier"}
    headers = Callers(client, tokens, enrol).headers(caller.get(path, "operator"))
    chunk = 256 * KIB
    body = (b" " * min(chunk, limit + 1 - start) for start in range(0, limit + 1, chunk))
    response = client.request(
        method, path, content=body, headers={**headers, "Content-Type": media_type}
    )
    assert "content-length" not in response.request.headers
    assert_problem(response, 413, "payload_too_large")
