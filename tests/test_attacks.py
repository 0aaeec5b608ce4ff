"""One regression test per attack class on the verifier and key handling (as PyJWT keeps
tests/test_advisory.py): algorithm and key confusion, hostile CBOR, clock games, replay."""

from __future__ import annotations

from typing import Any

import base45
import cbor2
import pytest
from hypothesis import given
from hypothesis import strategies as st

from idcode.claims import CodeClaims
from idcode.cose import Algorithm, encode_sign1, to_be_signed
from idcode.errors import KeyMaterialError
from idcode.keys import PublicKey, keys_from_jwks
from idcode.reasons import Reason
from idcode.replay import ReplayCache
from idcode.testing import TestIssuer, random_card
from idcode.verifier import Trust, verify

from .conftest import NOW


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
    ],
)
def test_dangerous_or_sloppy_jwks_are_refused(change: dict[str, Any], message: str) -> None:
    with pytest.raises(KeyMaterialError, match=message):
        PublicKey.from_jwk({**good_jwk(), **change})


def test_a_jwk_set_naming_one_kid_twice_is_refused() -> None:
    with pytest.raises(KeyMaterialError, match="same kid twice"):
        keys_from_jwks({"keys": [good_jwk(), good_jwk()]})
