"""Visitor passes: issuance rules, the offline verifier's reasons in the code verifier's
order, window boundaries with clock skew, forgeries and cross-format confusion."""

from __future__ import annotations

import base45
import cbor2
import pytest
from hypothesis import given
from hypothesis import strategies as st

from idcode.codetext import decode_body, encode_body
from idcode.cose import Algorithm, decode_sign1, encode_protected, encode_sign1, to_be_signed
from idcode.errors import ClaimsError, CodeFormatError, PassWindowError
from idcode.keys import IssuerKey
from idcode.reasons import Reason
from idcode.scenes import DAY
from idcode.testing import TestIssuer, random_card
from idcode.verifier import Trust, verify
from idcode.visitorpass import (
    MAX_PASS_LEAD,
    MAX_PASS_LENGTH,
    MAX_PASS_WINDOW,
    PassClaims,
    issue_pass,
    pass_prefix,
    sign_pass,
    verify_pass,
)
from tests.conftest import NOW

HOST = bytes(range(12))
PASS_ID = bytes.fromhex("5e1f0c2a9b3d4e67")


def claims(**changes: object) -> PassClaims:
    values: dict[str, object] = {
        "valid_from": NOW,
        "valid_until": NOW + DAY,
        "issued_at": NOW,
        "pass_id": PASS_ID,
        "community": "garden-court",
        "host": HOST,
    }
    values.update(changes)
    return PassClaims(**values)  # type: ignore[arg-type]


def issue(issuer: TestIssuer, **window: int) -> str:
    text, _ = issue_pass(
        issuer.key,
        code_prefix=issuer.prefix,
        community="garden-court",
        host=HOST,
        valid_from=window.get("valid_from", NOW),
        valid_until=window.get("valid_until", NOW + DAY),
        now=window.get("now", NOW),
    )
    return text


def with_payload(issuer: TestIssuer, payload: bytes, *, resign: bool = True) -> str:
    """A pass whose payload is ``payload``, signed by the issuer (or keeping a signature
    over other bytes when ``resign`` is false)."""
    protected = encode_protected(int(issuer.alg), issuer.kid.encode())
    signature = issuer.key.sign(to_be_signed(protected, payload)) if resign else bytes(64)
    return pass_prefix(issuer.prefix) + encode_body(encode_sign1(protected, payload, signature))


# -- format ----------------------------------------------------------------------------------


def test_pass_prefix_puts_p_before_the_colon_of_the_code_prefix() -> None:
    assert pass_prefix("WH1:") == "WH1P:"
    assert pass_prefix("SZX2:") == "SZX2P:"


@pytest.mark.parametrize("not_a_prefix", ["WH1", "WH1P", "WH 1:", ""])
def test_pass_prefix_refuses_what_is_not_a_code_prefix(not_a_prefix: str) -> None:
    with pytest.raises(CodeFormatError):
        pass_prefix(not_a_prefix)


def test_issued_pass_verifies_with_its_claims(issuer: TestIssuer, trust: Trust) -> None:
    text, issued = issue_pass(
        issuer.key,
        code_prefix=issuer.prefix,
        community="garden-court",
        host=HOST,
        valid_from=NOW + 3600,
        valid_until=NOW + 2 * DAY,
        now=NOW,
    )

    verdict = verify_pass(text, trust, NOW + 3600)

    assert (verdict.reason, verdict.kid) == (Reason.OK, "T")
    assert verdict.claims == issued
    assert (issued.valid_from, issued.valid_until, issued.issued_at) == (
        NOW + 3600,
        NOW + 2 * DAY,
        NOW,
    )
    assert (issued.community, issued.host_subject) == ("garden-court", HOST.hex())
    assert len(issued.pass_id) == 8
    assert text.startswith("WH1P:")


def test_each_pass_gets_its_own_random_id(issuer: TestIssuer, trust: Trust) -> None:
    ids = set()
    for _ in range(20):
        verdict = verify_pass(issue(issuer), trust, NOW)
        assert verdict.claims is not None
        ids.add(verdict.claims.pass_id)
    assert len(ids) == 20


def test_claims_encoding_is_cbor_in_deterministic_order() -> None:
    expected = cbor2.dumps(
        {4: NOW + DAY, 5: NOW, 6: NOW, 7: PASS_ID, -2: "garden-court", -3: HOST}, canonical=True
    )
    assert claims().to_cbor() == expected
    assert PassClaims.from_cbor(expected) == claims()


def test_a_pass_with_the_longest_community_name_stays_within_the_length_bound(
    issuer: TestIssuer, trust: Trust
) -> None:
    text = sign_pass(claims(community="c" * 64), issuer.key, issuer.prefix)
    assert len(text) <= MAX_PASS_LENGTH
    assert verify_pass(text, trust, NOW).valid


@pytest.mark.parametrize(
    "change",
    [
        {"community": ""},
        {"community": "c" * 65},
        {"community": "garden court"},
        {"community": "花园"},
        {"host": bytes(11)},
        {"pass_id": bytes(7)},
        {"valid_until": -1},
        {"issued_at": 2**32},
        {"valid_from": True},
    ],
    ids=[
        "empty-community",
        "long-community",
        "space",
        "non-ascii",
        "short-host",
        "short-id",
        "negative-time",
        "time-past-2106",
        "bool-time",
    ],
)
def test_claims_that_break_the_format_cannot_be_made(change: dict[str, object]) -> None:
    with pytest.raises(ClaimsError):
        claims(**change)


# -- issuance rules --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("valid_from", "valid_until", "reason"),
    [
        (NOW, NOW + MAX_PASS_WINDOW + 1, "window_too_long"),
        (NOW + DAY, NOW + DAY, "window_ends_before_start"),
        (NOW + DAY, NOW + 3600, "window_ends_before_start"),
        (NOW + MAX_PASS_LEAD + 1, NOW + MAX_PASS_LEAD + DAY, "window_too_far_ahead"),
        (NOW - 2 * DAY, NOW, "window_over"),
    ],
    ids=["over-7-days", "empty", "ends-before-start", "starts-after-30-days", "already-over"],
)
def test_issuance_refuses_a_window_outside_the_rules(
    issuer: TestIssuer, valid_from: int, valid_until: int, reason: str
) -> None:
    with pytest.raises(PassWindowError) as refused:
        issue(issuer, valid_from=valid_from, valid_until=valid_until)
    assert refused.value.reason == reason


def test_issuance_accepts_exactly_seven_days_starting_exactly_thirty_days_ahead(
    issuer: TestIssuer, trust: Trust
) -> None:
    start = NOW + MAX_PASS_LEAD
    text = issue(issuer, valid_from=start, valid_until=start + MAX_PASS_WINDOW)
    assert verify_pass(text, trust, start).valid


def test_a_window_that_started_before_issue_is_accepted_and_usable_from_issue(
    issuer: TestIssuer, trust: Trust
) -> None:
    # "Today" from the app: a window from local midnight, issued in the afternoon.
    text = issue(issuer, valid_from=NOW - 8 * 3600, valid_until=NOW + 16 * 3600)
    assert verify_pass(text, trust, NOW).valid
    # It did not exist before it was issued, whatever its window says.
    assert verify_pass(text, trust, NOW - 31).reason is Reason.NOT_YET_VALID


# -- window at the gate ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("offset", "reason"),
    [
        (-31, Reason.NOT_YET_VALID),
        (-30, Reason.OK),
        (DAY + 29, Reason.OK),
        (DAY + 30, Reason.EXPIRED),
    ],
    ids=["before-start-minus-skew", "start-minus-skew", "end-plus-skew-minus-1", "end-plus-skew"],
)
def test_window_boundaries_allow_the_trusts_clock_skew(
    issuer: TestIssuer, trust: Trust, offset: int, reason: Reason
) -> None:
    start = NOW + 3600
    text = issue(issuer, valid_from=start, valid_until=start + DAY)
    assert verify_pass(text, trust, start + offset).reason is reason


def test_with_no_clock_skew_the_end_itself_is_expired(issuer: TestIssuer) -> None:
    text = issue(issuer)
    assert verify_pass(text, issuer.trust(clock_skew=0), NOW + DAY - 1).valid
    assert verify_pass(text, issuer.trust(clock_skew=0), NOW + DAY).reason is Reason.EXPIRED


def test_stale_trust_is_denied_first_unless_the_scene_allows_it(issuer: TestIssuer) -> None:
    text = issue(issuer)
    stale = Trust.of(
        [issuer.key.public], prefix=issuer.prefix, algorithms=[issuer.alg], fresh_until=NOW
    )
    assert verify_pass(text, stale, NOW).reason is Reason.STALE_TRUST
    assert verify_pass("garbage", stale, NOW).reason is Reason.STALE_TRUST
    allowed = Trust.of(
        [issuer.key.public],
        prefix=issuer.prefix,
        algorithms=[issuer.alg],
        fresh_until=NOW,
        allow_stale=True,
    )
    verdict = verify_pass(text, allowed, NOW)
    assert verdict.valid
    assert "stale" in verdict.detail


# -- forgeries -------------------------------------------------------------------------------


def test_pass_with_a_changed_community_is_bad_signature(issuer: TestIssuer, trust: Trust) -> None:
    message = decode_sign1(decode_body(issue(issuer).removeprefix("WH1P:")))
    forged_payload = claims(
        issued_at=NOW, pass_id=PassClaims.from_cbor(message.payload).pass_id, community="river-view"
    ).to_cbor()
    forged = "WH1P:" + encode_body(
        encode_sign1(message.protected, forged_payload, message.signature)
    )
    assert verify_pass(forged, trust, NOW).reason is Reason.BAD_SIGNATURE


def test_pass_with_a_longer_window_is_bad_signature(issuer: TestIssuer, trust: Trust) -> None:
    text = issue(issuer)
    message = decode_sign1(decode_body(text.removeprefix("WH1P:")))
    original = PassClaims.from_cbor(message.payload)
    longer = PassClaims(
        original.valid_from,
        original.valid_until + DAY,
        original.issued_at,
        original.pass_id,
        original.community,
        original.host,
    ).to_cbor()
    forged = "WH1P:" + encode_body(encode_sign1(message.protected, longer, message.signature))
    assert verify_pass(forged, trust, NOW).reason is Reason.BAD_SIGNATURE


def test_pass_signed_by_an_untrusted_key_is_unknown_key(trust: Trust) -> None:
    stranger = TestIssuer(kid="U", now=NOW)
    assert verify_pass(issue(stranger), trust, NOW).reason is Reason.UNKNOWN_KEY


def test_pass_signed_by_another_key_with_a_trusted_kid_is_bad_signature(trust: Trust) -> None:
    impostor = TestIssuer(kid="T", now=NOW)
    assert verify_pass(issue(impostor), trust, NOW).reason is Reason.BAD_SIGNATURE


def test_pass_in_an_algorithm_the_verifier_does_not_accept_is_unsupported_alg(
    es256_issuer: TestIssuer, issuer: TestIssuer
) -> None:
    eddsa_only = Trust.of(
        [issuer.key.public, es256_issuer.key.public],
        prefix=issuer.prefix,
        algorithms=[Algorithm.EDDSA],
    )
    assert verify_pass(issue(es256_issuer), eddsa_only, NOW).reason is Reason.UNSUPPORTED_ALG


def test_pass_claiming_another_algorithm_for_a_trusted_key_is_unsupported_alg(
    issuer: TestIssuer,
) -> None:
    confused = TestIssuer(alg=Algorithm.ES256, kid="T", now=NOW)
    both = Trust.of(
        [issuer.key.public], prefix=issuer.prefix, algorithms=[Algorithm.EDDSA, Algorithm.ES256]
    )
    assert verify_pass(issue(confused), both, NOW).reason is Reason.UNSUPPORTED_ALG


def test_es256_pass_verifies_with_its_key(es256_issuer: TestIssuer) -> None:
    assert verify_pass(issue(es256_issuer), es256_issuer.trust(), NOW).valid


def test_pass_issued_outside_the_keys_signing_period_is_unknown_key(issuer: TestIssuer) -> None:
    key = IssuerKey.generate("K", not_before=NOW, not_after=NOW + DAY)
    trust = Trust.of([key.public], prefix=issuer.prefix, algorithms=[Algorithm.EDDSA])
    after = sign_pass(
        claims(issued_at=NOW + DAY, valid_from=NOW + DAY, valid_until=NOW + 2 * DAY),
        key,
        issuer.prefix,
    )
    within = sign_pass(claims(issued_at=NOW + DAY - 1), key, issuer.prefix)
    assert verify_pass(after, trust, NOW + DAY).reason is Reason.UNKNOWN_KEY
    assert verify_pass(within, trust, NOW + DAY).valid


@pytest.mark.parametrize(
    "changes",
    [
        {"valid_until": NOW + MAX_PASS_WINDOW + 1},
        {"valid_from": NOW + MAX_PASS_LEAD + 1, "valid_until": NOW + MAX_PASS_LEAD + DAY},
        {"valid_from": NOW + DAY, "valid_until": NOW + DAY},
    ],
    ids=["over-7-days", "starts-after-30-days", "empty-window"],
)
def test_a_properly_signed_pass_breaking_the_window_rules_is_malformed(
    issuer: TestIssuer, trust: Trust, changes: dict[str, int]
) -> None:
    text = sign_pass(claims(**changes), issuer.key, issuer.prefix)
    verdict = verify_pass(text, trust, NOW + DAY)
    assert verdict.reason is Reason.MALFORMED
    assert verdict.claims is not None  # what it claimed, for the operator's log


def test_a_code_is_not_a_pass_and_a_pass_is_not_a_code(issuer: TestIssuer, trust: Trust) -> None:
    code = issuer.mint(random_card())
    text = issue(issuer)
    assert verify_pass(code, trust, NOW).reason is Reason.UNKNOWN_PREFIX
    assert verify(text, trust, NOW).reason is Reason.UNKNOWN_PREFIX
    # The same key signs both; the claims sets differ, so neither body reads as the other.
    as_pass = "WH1P:" + code.removeprefix("WH1:")
    as_code = "WH1:" + text.removeprefix("WH1P:")
    assert verify_pass(as_pass, trust, NOW).reason is Reason.MALFORMED
    assert verify(as_code, trust, NOW).reason is Reason.MALFORMED


def test_another_deployments_pass_is_unknown_prefix(trust: Trust) -> None:
    elsewhere = TestIssuer(kid="T", deployment="SZ", now=NOW)
    assert verify_pass(issue(elsewhere), trust, NOW).reason is Reason.UNKNOWN_PREFIX


@pytest.mark.parametrize(
    "payload",
    [
        cbor2.dumps({5: NOW, 4: NOW + DAY, 6: NOW, 7: PASS_ID, -2: "garden-court", -3: HOST}),
        cbor2.dumps(
            {4: NOW + DAY, 5: NOW, 6: NOW, 7: PASS_ID, -2: "garden-court", -3: HOST, -4: 1},
            canonical=True,
        ),
        cbor2.dumps({4: NOW + DAY, 5: NOW, 6: NOW, 7: PASS_ID, -2: "garden-court"}, canonical=True),
        cbor2.dumps(
            {4: NOW + DAY, 5: NOW, 6: NOW, 7: PASS_ID, -2: b"garden-court", -3: HOST},
            canonical=True,
        ),
        cbor2.dumps(
            {4: float(NOW + DAY), 5: NOW, 6: NOW, 7: PASS_ID, -2: "garden-court", -3: HOST},
            canonical=True,
        ),
        cbor2.dumps([NOW, NOW + DAY]),
    ],
    ids=["key-order", "extra-claim", "missing-host", "community-as-bytes", "float-time", "array"],
)
def test_signed_claims_not_exactly_a_pass_are_malformed(
    issuer: TestIssuer, trust: Trust, payload: bytes
) -> None:
    assert verify_pass(with_payload(issuer, payload), trust, NOW).reason is Reason.MALFORMED


@pytest.mark.parametrize(
    "text",
    [None, 42, b"WH1P:", "WH1P:", "WH1P:abc", "WH1P:" + "0" * MAX_PASS_LENGTH, "WH1P:A\n"],
    ids=["none", "int", "bytes", "empty-body", "lower-case", "too-long", "newline"],
)
def test_malformed_input_is_a_verdict_not_an_exception(trust: Trust, text: object) -> None:
    assert verify_pass(text, trust, NOW).reason is Reason.MALFORMED


def test_a_pass_is_checked_for_its_signature_before_its_claims(
    issuer: TestIssuer, trust: Trust
) -> None:
    # Junk claims under a wrong signature: the signature fails first, as for codes.
    junk = cbor2.dumps({1: 2})
    assert verify_pass(with_payload(issuer, junk, resign=False), trust, NOW).reason is (
        Reason.BAD_SIGNATURE
    )


@given(st.binary(max_size=300))
def test_any_bytes_after_the_prefix_give_a_verdict(body: bytes) -> None:
    issuer = TestIssuer(now=NOW)
    text = "WH1P:" + base45.b45encode(body).decode()
    verdict = verify_pass(text, issuer.trust(), NOW)
    assert verdict.reason in (Reason.MALFORMED, Reason.UNKNOWN_KEY, Reason.UNSUPPORTED_ALG)


@given(st.text(max_size=300))
def test_any_text_gives_a_verdict(text: str) -> None:
    issuer = TestIssuer(now=NOW)
    verdict = verify_pass("WH1P:" + text, issuer.trust(), NOW)
    assert not verdict.valid
