"""The offline verifier: reasons, their order, clock boundaries and replay handling."""

from __future__ import annotations

import dataclasses

import pytest

from idcode.claims import AgeBand, Card, CodeClaims, Programme, Residency
from idcode.cose import Algorithm
from idcode.keys import IssuerKey
from idcode.reasons import DESCRIPTIONS, Reason
from idcode.replay import ReplayCache
from idcode.testing import TestIssuer, random_card
from idcode.verifier import Trust, verify
from tests.conftest import NOW


def test_fresh_code_is_valid_and_carries_its_card(issuer: TestIssuer, trust: Trust) -> None:
    card = random_card(
        status_index=2_500_000,
        residency=Residency.PERMIT,
        age_band=AgeBand.AGE_80_PLUS,
        programmes=Programme.HOME_CARE | Programme.DISABILITY,
    )
    verdict = verify(issuer.mint(card), trust, NOW, ReplayCache())
    assert verdict.valid
    assert verdict.reason is Reason.OK
    assert verdict.claims is not None
    assert verdict.claims.card == card
    assert verdict.kid == "T"


def test_es256_code_is_valid_when_es256_is_configured(es256_issuer: TestIssuer) -> None:
    assert verify(es256_issuer.mint(), es256_issuer.trust(), NOW).valid


def test_es256_code_is_refused_by_an_eddsa_only_verifier(
    issuer: TestIssuer, es256_issuer: TestIssuer
) -> None:
    trust = Trust.of(
        [issuer.key.public, es256_issuer.key.public],
        prefix=issuer.prefix,
        algorithms=[Algorithm.EDDSA],
    )
    assert verify(es256_issuer.mint(), trust, NOW).reason is Reason.UNSUPPORTED_ALG


@pytest.mark.parametrize(
    ("offset_from_exp", "reason"),
    [
        (-1, Reason.OK),
        (0, Reason.OK),
        (29, Reason.OK),
        (30, Reason.EXPIRED),
        (3600, Reason.EXPIRED),
    ],
)
def test_expiry_boundary_is_exp_plus_skew(
    issuer: TestIssuer, trust: Trust, offset_from_exp: int, reason: Reason
) -> None:
    code = issuer.mint(ttl=60)
    assert verify(code, trust, NOW + 60 + offset_from_exp).reason is reason


@pytest.mark.parametrize(
    ("offset_from_iat", "reason"),
    [(0, Reason.OK), (-30, Reason.OK), (-31, Reason.NOT_YET_VALID), (-3600, Reason.NOT_YET_VALID)],
)
def test_code_from_the_future_is_not_yet_valid_beyond_the_skew(
    issuer: TestIssuer, trust: Trust, offset_from_iat: int, reason: Reason
) -> None:
    assert verify(issuer.mint(), trust, NOW + offset_from_iat).reason is reason


def test_zero_skew_makes_exp_itself_the_first_expired_second(issuer: TestIssuer) -> None:
    code = issuer.mint(ttl=60)
    trust = issuer.trust(clock_skew=0)
    assert verify(code, trust, NOW + 59).valid
    assert verify(code, trust, NOW + 60).reason is Reason.EXPIRED


def test_second_presentation_of_a_code_is_replayed(issuer: TestIssuer, trust: Trust) -> None:
    replay = ReplayCache()
    code = issuer.mint()
    assert verify(code, trust, NOW, replay).valid
    assert verify(code, trust, NOW + 1, replay).reason is Reason.REPLAYED


def test_forged_expired_or_malformed_codes_never_touch_the_replay_state(
    issuer: TestIssuer, trust: Trust
) -> None:
    replay = ReplayCache()
    forged = TestIssuer(now=NOW).mint()  # same kid "T", another key
    expired = issuer.mint(at=NOW - 3600)
    for code in (forged, expired, "WH1:%%%", "nonsense"):
        assert not verify(code, trust, NOW, replay).valid
    assert len(replay) == 0


def test_replay_entries_are_forgotten_once_the_code_has_expired(
    issuer: TestIssuer, trust: Trust
) -> None:
    replay = ReplayCache()
    verify(issuer.mint(ttl=60), trust, NOW, replay)
    assert len(replay) == 1
    verify(issuer.mint(at=NOW + 90, ttl=60), trust, NOW + 90, replay)  # exp + skew passed
    assert len(replay) == 1


def test_full_replay_cache_evicts_the_soonest_expiring_entry_and_counts_it(
    issuer: TestIssuer, trust: Trust
) -> None:
    replay = ReplayCache(capacity=2)
    first, second, third = issuer.mint(ttl=10), issuer.mint(ttl=50), issuer.mint(ttl=60)
    for code in (first, second, third):
        assert verify(code, trust, NOW, replay).valid
    assert len(replay) == 2
    assert replay.evictions == 1
    assert verify(second, trust, NOW, replay).reason is Reason.REPLAYED


def test_unknown_kid_is_refused_with_unknown_key(issuer: TestIssuer) -> None:
    other = TestIssuer(kid="Q", now=NOW)
    assert verify(other.mint(), issuer.trust(), NOW).reason is Reason.UNKNOWN_KEY


def test_code_signed_by_another_key_under_a_trusted_kid_has_a_bad_signature(
    issuer: TestIssuer, trust: Trust
) -> None:
    impostor = TestIssuer(kid=issuer.kid, now=NOW)
    assert verify(impostor.mint(), trust, NOW).reason is Reason.BAD_SIGNATURE


def test_code_issued_outside_the_keys_signing_period_is_unknown_key(issuer: TestIssuer) -> None:
    key = IssuerKey.generate("K", not_before=NOW, not_after=NOW + 600)
    trust = Trust.of([key.public], prefix=issuer.prefix, algorithms=[Algorithm.EDDSA])
    card = random_card()
    before = CodeClaims(NOW - 60, NOW, bytes(8), card)
    after = CodeClaims(NOW + 600, NOW + 660, bytes(8), card)
    inside = CodeClaims(NOW + 599, NOW + 659, bytes(8), card)
    from idcode.issuer import sign_code

    assert (
        verify(sign_code(before, key, issuer.prefix), trust, NOW - 30).reason is Reason.UNKNOWN_KEY
    )
    assert (
        verify(sign_code(after, key, issuer.prefix), trust, NOW + 610).reason is Reason.UNKNOWN_KEY
    )
    assert verify(sign_code(inside, key, issuer.prefix), trust, NOW + 610).valid


def test_signature_is_checked_before_expiry(issuer: TestIssuer, trust: Trust) -> None:
    impostor = TestIssuer(kid=issuer.kid, now=NOW - 3600)
    assert verify(impostor.mint(), trust, NOW).reason is Reason.BAD_SIGNATURE


@pytest.mark.parametrize("code", [None, 42, b"WH1:", ["WH1:"], 3.5])
def test_non_text_input_is_malformed_not_an_exception(code: object, trust: Trust) -> None:
    assert verify(code, trust, NOW).reason is Reason.MALFORMED


def test_other_deployments_code_is_unknown_prefix(trust: Trust) -> None:
    other = TestIssuer(deployment="SZ", now=NOW)
    assert verify(other.mint(), trust, NOW).reason is Reason.UNKNOWN_PREFIX


def test_trust_refuses_two_keys_with_one_kid(issuer: TestIssuer) -> None:
    twin = TestIssuer(kid=issuer.kid)
    with pytest.raises(ValueError, match="share kid"):
        Trust.of([issuer.key.public, twin.key.public], prefix="WH1:", algorithms=[Algorithm.EDDSA])


def test_verdict_json_has_valid_and_reason_and_no_personal_fields(
    issuer: TestIssuer, trust: Trust
) -> None:
    verdict = verify(issuer.mint(), trust, NOW).to_json()
    assert verdict["valid"] is True
    assert verdict["reason"] == "ok"
    assert set(verdict["claims"]) == {"iat", "exp", "cti", "card"}
    assert set(verdict["claims"]["card"]) == {
        "pseudonym",
        "status_index",
        "residency",
        "age_band",
        "programmes",
        "programme_bits",
    }


def test_every_reason_has_a_description() -> None:
    assert set(DESCRIPTIONS) == set(Reason)


def test_verdicts_compare_by_reason_and_claims_not_detail(issuer: TestIssuer) -> None:
    a = verify("x", issuer.trust(), NOW)
    assert dataclasses.replace(a, detail="other words") == a


def test_card_rejects_out_of_range_values() -> None:
    with pytest.raises(ValueError, match="pseudonym"):
        Card(pseudonym=b"12345", status_index=0)
    with pytest.raises(ValueError, match="status index"):
        Card(pseudonym=bytes(6), status_index=1 << 24)
    with pytest.raises(ValueError, match="programme"):
        Card(pseudonym=bytes(6), status_index=0, programmes=Programme(1 << 10))
