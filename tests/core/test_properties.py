"""Property tests: no input makes the verifier raise or accept a forgery; claims round-trip."""

from __future__ import annotations

import base45
import cbor2
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from idcode.claims import (
    CODE_ID_LENGTH,
    MAX_NUMERIC_DATE,
    MAX_STATUS_INDEX,
    PSEUDONYM_LENGTH,
    AgeBand,
    Card,
    CodeClaims,
    Programme,
    Residency,
)
from idcode.codetext import BASE45_ALPHABET
from idcode.cose import encode_protected, encode_sign1, to_be_signed
from idcode.issuer import MAX_TTL
from idcode.reasons import Reason
from idcode.replay import ReplayCache
from idcode.testing import TestIssuer
from idcode.verifier import Verdict, verify

NOW = 1_796_112_000
ISSUER = TestIssuer(now=NOW)
TRUST = ISSUER.trust()
VALID_CODE = ISSUER.mint()
PREFIX = ISSUER.prefix

cards = st.builds(
    Card,
    pseudonym=st.binary(min_size=PSEUDONYM_LENGTH, max_size=PSEUDONYM_LENGTH),
    status_index=st.integers(0, MAX_STATUS_INDEX),
    residency=st.sampled_from(Residency),
    age_band=st.sampled_from(AgeBand),
    programmes=st.integers(0, (1 << 10) - 1).map(Programme),
)


@st.composite
def claim_sets(draw: st.DrawFn) -> CodeClaims:
    issued_at = draw(st.integers(0, MAX_NUMERIC_DATE - MAX_TTL))
    expires_at = issued_at + draw(st.integers(0, MAX_TTL))
    return CodeClaims(
        issued_at=issued_at,
        expires_at=expires_at,
        code_id=draw(st.binary(min_size=CODE_ID_LENGTH, max_size=CODE_ID_LENGTH)),
        card=draw(cards),
    )


cbor_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**64), 2**64)
    | st.floats()
    | st.binary(max_size=80)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=5)
        | st.dictionaries(st.integers(-30, 30) | st.text(max_size=3), children, max_size=5)
    ),
    max_leaves=20,
)


@st.composite
def mutated_codes(draw: st.DrawFn) -> str:
    """The valid code with 1-3 character edits: substitute, insert, delete or truncate."""
    code = list(VALID_CODE)
    for _ in range(draw(st.integers(1, 3))):
        position = draw(st.integers(0, max(len(code) - 1, 0)))
        edit = draw(st.sampled_from(["substitute", "insert", "delete", "truncate"]))
        character = draw(st.sampled_from(BASE45_ALPHABET + "abcxyz\n\x00é"))
        if edit == "substitute" and code:
            code[position] = character
        elif edit == "insert":
            code.insert(position, character)
        elif edit == "delete" and code:
            del code[position]
        elif edit == "truncate":
            code = code[:position]
    mutated = "".join(code)
    assume(mutated != VALID_CODE)
    return mutated


@st.composite
def flipped_messages(draw: st.DrawFn) -> str:
    """The valid code's COSE bytes with bits flipped, re-encoded in base45 with the prefix."""
    message = bytearray(base45.b45decode(VALID_CODE[len(PREFIX) :]))
    for _ in range(draw(st.integers(1, 4))):
        message[draw(st.integers(0, len(message) - 1))] ^= 1 << draw(st.integers(0, 7))
    assume(bytes(message) != base45.b45decode(VALID_CODE[len(PREFIX) :]))
    encoded: bytes = base45.b45encode(bytes(message))
    return PREFIX + encoded.decode()


@given(st.text(max_size=600))
def test_random_text_never_raises_and_never_verifies(text: str) -> None:
    assert not verify_now(text).valid


@given(st.text(alphabet=BASE45_ALPHABET, max_size=300))
def test_random_base45_after_the_prefix_never_verifies(body: str) -> None:
    assert not verify_now(PREFIX + body).valid


@given(mutated_codes())
def test_mutated_code_never_raises_and_never_verifies(code: str) -> None:
    assert not verify_now(code).valid


@given(flipped_messages())
def test_bit_flipped_code_is_refused_for_structure_or_signature(code: str) -> None:
    assert verify_now(code).reason in {
        Reason.MALFORMED,
        Reason.UNSUPPORTED_ALG,
        Reason.UNKNOWN_KEY,
        Reason.BAD_SIGNATURE,
    }


@given(cbor_values)
def test_any_cbor_value_in_place_of_the_cose_message_is_refused(value: object) -> None:
    code = PREFIX + base45.b45encode(cbor2.dumps(value)).decode()
    assert not verify_now(code).valid


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(cbor_values)
def test_any_signed_payload_but_a_valid_claims_set_is_malformed(payload_value: object) -> None:
    payload = cbor2.dumps(payload_value)
    protected = encode_protected(int(ISSUER.key.alg), ISSUER.key.kid.encode())
    signature = ISSUER.key.sign(to_be_signed(protected, payload))
    code = PREFIX + base45.b45encode(encode_sign1(protected, payload, signature)).decode()
    assert verify_now(code).reason is Reason.MALFORMED


@given(claim_sets())
def test_claims_round_trip_through_cbor(claims: CodeClaims) -> None:
    assert CodeClaims.from_cbor(claims.to_cbor()) == claims


@given(claim_sets())
def test_every_valid_claim_set_signs_and_verifies_to_itself(claims: CodeClaims) -> None:
    verdict = verify_now(ISSUER.sign(claims), now=claims.issued_at)
    assert verdict.valid, verdict.reason
    assert verdict.claims == claims


@given(claim_sets())
def test_every_code_fits_qr_version_7_m(claims: CodeClaims) -> None:
    code = ISSUER.sign(claims)
    assert len(code) - len(PREFIX) <= 170
    assert len(code) <= 178  # QR 7-M alphanumeric capacity


def verify_now(code: str, now: int = NOW) -> Verdict:
    return verify(code, TRUST, now, ReplayCache())
