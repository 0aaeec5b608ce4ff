"""Code text: the prefix rules and the strict base45 decoder, checked against the base45 package."""

from __future__ import annotations

import base45
import pytest
from hypothesis import given
from hypothesis import strategies as st

from idcode.codetext import BASE45_ALPHABET, decode_body, encode_body, encode_text, prefix_for
from idcode.errors import CodeFormatError


def reference(body: str) -> bytes | None:
    """The base45 package's answer, None for invalid input (it forgives a trailing newline)."""
    if body.endswith("\n"):
        return None
    try:
        return bytes(base45.b45decode(body))
    except ValueError:
        return None


def ours(body: str) -> bytes | None:
    try:
        return decode_body(body)
    except CodeFormatError:
        return None


def test_encoder_matches_the_reference_for_every_16_bit_value() -> None:
    every_pair = b"".join(value.to_bytes(2, "big") for value in range(1 << 16))
    assert encode_body(every_pair) == base45.b45encode(every_pair).decode()


@given(st.binary(max_size=400))
def test_encoder_matches_the_reference_on_any_bytes(data: bytes) -> None:
    assert encode_body(data) == base45.b45encode(data).decode()


@given(st.binary(max_size=400))
def test_decoder_inverts_the_reference_encoder(data: bytes) -> None:
    assert decode_body(base45.b45encode(data).decode()) == data


@given(st.text(alphabet=BASE45_ALPHABET, max_size=60))
def test_decoder_agrees_with_the_reference_on_any_base45_text(body: str) -> None:
    assert ours(body) == reference(body)


@given(st.text(max_size=60))
def test_decoder_agrees_with_the_reference_on_any_text(body: str) -> None:
    assert ours(body) == reference(body)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("GGW", "above 65535"),  # 16 + 16*45 + 32*2025 = 65536
        (":::", "above 65535"),
        ("000:6", "final pair"),  # ":6" is 44 + 45 * 6 = 314 > 255
        ("0", "length"),
        ("abc", "alphabet"),
        ("AB\n", "alphabet"),
        ("ÄBC", "alphabet"),
    ],
)
def test_invalid_base45_says_why(body: str, message: str) -> None:
    with pytest.raises(CodeFormatError, match=message):
        decode_body(body)


def test_rfc_9285_examples_decode() -> None:
    assert decode_body("BB8") == b"AB"
    assert decode_body("%69 VD92EX0") == b"Hello!!"
    assert decode_body("UJCLQE7W581") == b"base-45"
    assert decode_body("QED8WEX0") == b"ietf!"


def test_prefix_joins_deployment_and_version() -> None:
    assert prefix_for() == "WH1:"
    assert prefix_for("SZB", 3) == "SZB3:"
    assert encode_text("WH1:", b"AB") == "WH1:BB8"


@pytest.mark.parametrize("deployment", ["", "wh", "1WH", "W-H", "ABCDEFGHI", "WH1"])
def test_bad_deployment_tag_is_refused(deployment: str) -> None:
    with pytest.raises(CodeFormatError, match="deployment"):
        prefix_for(deployment)
