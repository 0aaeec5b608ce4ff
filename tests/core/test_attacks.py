"""One regression test per attack class (as PyJWT keeps tests/test_advisory.py), on what
the core checks (codes, visitor passes, trust bundles and status deltas): algorithm
confusion, a public key used as an HMAC secret, kid tricks, truncated signatures, CBOR bombs
and deep nesting, clock games. The same classes on ID tokens, terminal tokens and request
bodies are in tests/service/test_attacks.py; replay across two replicas is in
tests/integration/test_replicas.py."""

from __future__ import annotations

import hmac
from typing import Any

import base45
import cbor2
import pytest
from hypothesis import given
from hypothesis import strategies as st

from idcode.bundle import BUNDLE_TYPE, DELTA_TYPE, verify_bundle, verify_delta
from idcode.claims import CodeClaims
from idcode.cose import Algorithm, encode_protected, encode_sign1, to_be_signed
from idcode.errors import BundleError, KeyMaterialError
from idcode.keys import PublicKey, keys_from_jwks
from idcode.reasons import Reason
from idcode.replay import ReplayCache
from idcode.testing import TestIssuer, random_card
from idcode.verifier import Trust, verify
from idcode.visitorpass import PassClaims, pass_prefix, verify_pass
from tests.conftest import NOW
from tests.forgery import (
    JWS_KIDS,
    SECRET_FORMS,
    compact_jws,
    hmac_signer,
    public_key_secrets,
    root_claims,
)


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
# Replay across two replicas: tests/integration/test_replicas.py,
# test_code_verified_on_one_replica_is_replayed_on_the_other (two real server processes on one
# PostgreSQL and Redis), and tests/service/test_api_verify.py,
# test_a_code_accepted_by_one_replica_is_replayed_at_another (two apps in one process).
# Algorithm confusion for codes is test_es256_key_used_with_an_eddsa_header_is_algorithm_confusion
# above; for passes, tests/core/test_visitorpass.py,
# test_pass_claiming_another_algorithm_for_a_trusted_key_is_unsupported_alg; alg "none" and
# HS256 ID tokens signed with the identity provider's PEM or raw public key are in
# tests/service/test_api_auth.py (BAD_TOKENS).










def cose_text(prefix: str, protected: bytes, payload: bytes, signature: bytes) -> str:
    encoded: bytes = base45.b45encode(encode_sign1(protected, payload, signature))
    return prefix + encoded.decode()


PASS = PassClaims(NOW, NOW + 3600, NOW, bytes(8), "garden-court", bytes(12))














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










# -- oversized bodies -------------------------------------------------------------------------

KIB, MIB = 1024, 1024 * 1024
# (method, path, its body limit, the media type it reads)
# Routes that take no body have the default limit too.




