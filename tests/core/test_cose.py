"""COSE_Sign1 structure: the fixed-layout fast path agrees with the general parser."""

from __future__ import annotations

import cbor2
import pytest
from hypothesis import given
from hypothesis import strategies as st

from idcode import cose
from idcode.cbor import encode_bytes, encode_int
from idcode.errors import CoseError


def general(message: bytes) -> cose.Sign1 | str:
    try:
        return cose.decode_general(message)
    except CoseError as exc:
        return f"error: {exc}"


fixed_layout_messages = st.builds(
    lambda alg, kid, payload, signature: cose.encode_sign1(
        cose.encode_protected(alg, kid), payload, signature
    ),
    st.integers(-24, 23),
    st.binary(min_size=1, max_size=1),
    st.binary(min_size=36, max_size=36),
    st.binary(min_size=64, max_size=64),
)


@given(fixed_layout_messages)
def test_fast_path_and_general_parser_agree_on_every_fixed_layout_message(message: bytes) -> None:
    fast = cose.decode_fixed_layout(message)
    assert fast is not None
    assert fast == general(message)


@given(fixed_layout_messages, st.integers(0, 112), st.integers(0, 7))
def test_fast_path_never_accepts_what_the_general_parser_refuses(
    message: bytes, index: int, bit: int
) -> None:
    mutated = bytearray(message)
    mutated[index] ^= 1 << bit
    fast = cose.decode_fixed_layout(bytes(mutated))
    if fast is not None:
        assert fast == general(bytes(mutated))


@given(st.integers(-(2**64), 2**64 - 1))
def test_integer_encoding_is_cbor2_canonical(value: int) -> None:
    assert encode_int(value) == cbor2.dumps(value, canonical=True)


@given(st.binary(max_size=70_000))
def test_byte_string_encoding_is_cbor2_canonical(value: bytes) -> None:
    assert encode_bytes(value) == cbor2.dumps(value, canonical=True)


def test_protected_header_with_a_text_alg_is_encoded_by_cbor2() -> None:
    assert cose.encode_protected("EdDSA", b"A") == cbor2.dumps(
        {1: "EdDSA", 4: b"A"}, canonical=True
    )


def test_sig_structure_is_the_rfc_9052_array() -> None:
    assert cose.to_be_signed(b"\xa0", b"xyz") == cbor2.dumps(["Signature1", b"\xa0", b"", b"xyz"])


@pytest.mark.parametrize(
    "message",
    [
        cbor2.dumps([b"\xa2\x01\x27\x04\x41A", {}, b"x" * 36, b"s" * 64]) + b"\x00",
        cbor2.dumps([b"\xa3\x01\x27\x04\x41A\x05\x00", {}, b"x" * 36, b"s" * 64]),
        cbor2.dumps([b"\xa2\x01\x27\x04\x41A", {}, None, b"s" * 64]),
    ],
    ids=["trailing-byte", "extra-header", "detached-payload"],
)
def test_structures_outside_v1_are_refused(message: bytes) -> None:
    with pytest.raises(CoseError):
        cose.decode_sign1(message)
