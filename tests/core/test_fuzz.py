"""Fuzzing the offline decisions, layer by layer.

Codes and visitor passes are built as structurally valid COSE_Sign1 messages (RFC 9052) with
CWT claims (RFC 8392), then given random field values and random mutations in each layer:
the text (prefix, base45), the COSE structure (header maps, array, signature) and the CBOR
claims. CBOR is written by hand here, so the mutations include what no generic encoder
writes: duplicate map keys, indefinite lengths, overlong heads, tags, floats and simple
values. Trust bundles and status deltas are fuzzed as JWS: header, payload and signature.

Whatever comes in, the verifiers answer with exactly one reason from ``Reason`` without
needing their fail-closed net (a detail "unexpected ..." would mean a decoder raised), and
they accept only what a trusted key signed in exactly the issuer's byte form.
``verify_bundle`` and ``verify_delta`` either load or raise ``BundleError``, never anything
else, and load only what the pinned root key signed.

Each fuzzer runs 150 examples; IDCODE_FUZZ_EXAMPLES=5000 runs a longer hunt.
"""

from __future__ import annotations

import base64
import hmac
import json
import os
import struct
import zlib
from dataclasses import dataclass
from typing import Any

import base45
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, currently_in_test_context, event, given, settings
from hypothesis import strategies as st

from idcode import cbor
from idcode.bundle import BUNDLE_TYPE, DELTA_TYPE, TrustBundle, verify_bundle, verify_delta
from idcode.claims import AgeBand, Card, CodeClaims, Residency
from idcode.codetext import BASE45_ALPHABET
from idcode.cose import Algorithm, encode_protected, encode_sign1, to_be_signed
from idcode.errors import BundleError
from idcode.keys import IssuerKey, jwks
from idcode.reasons import Reason
from idcode.replay import ReplayCache
from idcode.statuslist import MAX_ENTRIES, StatusDelta, StatusList
from idcode.testing import TestIssuer
from idcode.verifier import Trust, Verdict, verify
from idcode.visitorpass import PassClaims, PassVerdict, pass_prefix, sign_pass, verify_pass
from tests.conftest import NOW

ISSUER = TestIssuer(kid="T", now=NOW)
ES256_ISSUER = TestIssuer(alg=Algorithm.ES256, kid="E", now=NOW)
# Same kid and algorithm as the trusted EdDSA key, but not trusted: a forger's key.
FORGER = IssuerKey.generate("T")
TRUSTED = {"T": ISSUER.key, "E": ES256_ISSUER.key}
TRUST = Trust.of(
    [ISSUER.key.public, ES256_ISSUER.key.public],
    prefix=ISSUER.prefix,
    algorithms=[Algorithm.EDDSA, Algorithm.ES256],
)
PREFIX = ISSUER.prefix
PASS_PREFIX = pass_prefix(PREFIX)
DAY = 86_400
HOST = bytes(range(12))

FUZZ = settings(
    max_examples=int(os.environ.get("IDCODE_FUZZ_EXAMPLES", "150")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


# -- CBOR by hand ---------------------------------------------------------------------------


def overlong_head(major: int, value: int, width: int) -> bytes:
    """A head whose argument takes ``width`` bytes, whether or not it needs them."""
    info = {1: 24, 2: 25, 4: 26, 8: 27}[width]
    return bytes((major << 5 | info,)) + value.to_bytes(width, "big")


@st.composite
def heads(draw: st.DrawFn, major: int, value: int) -> bytes:
    """The shortest head for ``value``, or now and then an overlong one."""
    if draw(st.integers(0, 5)) == 0:
        widths = [width for width in (1, 2, 4, 8) if value < 1 << (8 * width)]
        return overlong_head(major, value, draw(st.sampled_from(widths)))
    return cbor.head(major, value)


@st.composite
def cbor_ints(draw: st.DrawFn, values: st.SearchStrategy[int] | None = None) -> bytes:
    value = draw(values if values is not None else st.integers(-(2**64), 2**64 - 1))
    if value >= 0:
        return draw(heads(0, value))
    return draw(heads(1, -1 - value))


@st.composite
def cbor_strings(draw: st.DrawFn, major: int, content: st.SearchStrategy[bytes]) -> bytes:
    """A byte (2) or text (3) string: definite, or indefinite in chunks."""
    data = draw(content)
    if draw(st.integers(0, 5)) == 0:
        cut = draw(st.integers(0, len(data)))
        chunks = [data[:cut], data[cut:]]
        return (
            bytes((major << 5 | 31,))
            + b"".join(draw(heads(major, len(chunk))) + chunk for chunk in chunks)
            + b"\xff"
        )
    return draw(heads(major, len(data))) + data


def cbor_bytes(content: st.SearchStrategy[bytes] | None = None) -> st.SearchStrategy[bytes]:
    return cbor_strings(2, content if content is not None else st.binary(max_size=40))


def cbor_texts(content: st.SearchStrategy[str] | None = None) -> st.SearchStrategy[bytes]:
    texts = content if content is not None else st.text(max_size=20)
    # Now and then bytes that are not UTF-8, under the text major type.
    return cbor_strings(
        3, texts.map(str.encode) | st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80"])
    )


FLOATS = st.one_of(
    st.floats(width=16).map(lambda f: b"\xf9" + struct.pack(">e", f)),
    st.floats(width=32).map(lambda f: b"\xfa" + struct.pack(">f", f)),
    st.floats().map(lambda f: b"\xfb" + struct.pack(">d", f)),
)
SIMPLE = st.sampled_from([b"\xf4", b"\xf5", b"\xf6", b"\xf7", b"\xf8\x20", b"\xf8\xff", b"\xe0"])
# Truncated heads, reserved additional information, a lone break.
BROKEN = st.sampled_from([b"\x18", b"\x59\x01", b"\x1c", b"\x3d", b"\x7e", b"\xff", b""])
TAGS = st.sampled_from([0, 1, 2, 3, 4, 18, 24, 32, 35, 55799, 2**32])


@st.composite
def tagged(draw: st.DrawFn, item: st.SearchStrategy[bytes]) -> bytes:
    return draw(heads(6, draw(TAGS))) + draw(item)


@st.composite
def arrays(draw: st.DrawFn, items: st.SearchStrategy[bytes]) -> bytes:
    elements = draw(st.lists(items, max_size=5))
    if draw(st.integers(0, 5)) == 0:
        return b"\x9f" + b"".join(elements) + b"\xff"
    return draw(heads(4, len(elements))) + b"".join(elements)


@st.composite
def maps(
    draw: st.DrawFn, keys: st.SearchStrategy[bytes], values: st.SearchStrategy[bytes]
) -> bytes:
    return encode_map(draw(st.lists(st.tuples(keys, values), max_size=5)), draw(indefinite()))


def indefinite() -> st.SearchStrategy[bool]:
    return st.integers(0, 5).map(lambda n: n == 0)


def encode_map(pairs: list[tuple[bytes, bytes]], indefinite: bool = False) -> bytes:
    """A map of already encoded keys and values, in the order given (duplicates kept)."""
    body = b"".join(key + value for key, value in pairs)
    if indefinite:
        return b"\xbf" + body + b"\xff"
    return cbor.head(5, len(pairs)) + body


CBOR_LEAVES = st.one_of(
    cbor_ints(),
    cbor_bytes(),
    cbor_texts(),
    FLOATS,
    SIMPLE,
    BROKEN,
)
CBOR_ITEMS = st.recursive(
    CBOR_LEAVES,
    lambda children: st.one_of(
        arrays(children),
        maps(cbor_ints(st.integers(-30, 30)) | cbor_texts(), children),
        tagged(children),
    ),
    max_leaves=10,
)


def deeply_nested(depth: int, opener: bytes = b"\x81") -> bytes:
    """``depth`` one-item arrays (or maps with ``b"\\xa1\\x01"``) around a zero."""
    return opener * depth + b"\x00"


def b45(data: bytes) -> str:
    """Base45 by the reference package (not idcode's own encoder)."""
    encoded: bytes = base45.b45encode(data)
    return encoded.decode()


# -- codes and passes as layers -------------------------------------------------------------


@dataclass(frozen=True)
class Built:
    """A code or pass text and whether a trusted key signed exactly its protected header and
    payload (only then may it be accepted)."""

    text: str
    signed_by_trusted_key: bool


def valid_claims() -> CodeClaims:
    card = Card(bytes.fromhex("a3f09c41d27e"), 7, Residency.REGISTERED, AgeBand.AGE_65_69)
    return CodeClaims(NOW, NOW + 60, bytes.fromhex("5e1f0c2a9b3d4e67"), card)


def valid_pass() -> PassClaims:
    return PassClaims(NOW, NOW + DAY, NOW, bytes(8), "garden-court", HOST)


def replaced(
    draw: st.DrawFn, pairs: list[tuple[bytes, bytes]], nasty: st.SearchStrategy[bytes]
) -> list[tuple[bytes, bytes]]:
    """``pairs`` with random mutations: values replaced, entries dropped, duplicated, added
    with unknown labels, moved; the map's own encoding is left to the caller."""
    pairs = list(pairs)
    for _ in range(draw(st.integers(0, 3))):
        mutation = draw(st.sampled_from(["value", "drop", "duplicate", "extra", "move"]))
        if not pairs and mutation != "extra":
            continue
        index = draw(st.integers(0, max(len(pairs) - 1, 0)))
        if mutation == "value":
            pairs[index] = (pairs[index][0], draw(nasty))
        elif mutation == "drop":
            del pairs[index]
        elif mutation == "duplicate":
            pairs.insert(draw(st.integers(0, len(pairs))), (pairs[index][0], draw(nasty)))
        elif mutation == "extra":
            label = draw(cbor_ints(st.integers(-70_000, 70_000)) | cbor_texts())
            pairs.insert(draw(st.integers(0, len(pairs))), (label, draw(nasty)))
        else:
            pairs.insert(draw(st.integers(0, len(pairs) - 1)), pairs.pop(index))
    return pairs


# Values that no claim and no header may hold, and some that are almost right.
NASTY_VALUES = st.one_of(
    cbor_ints(
        st.sampled_from([-1, 0, -(2**63), 2**32, 2**63, 2**64 - 1, -(2**64), NOW, NOW + 3601])
    ),
    cbor_ints(),
    FLOATS,
    st.just(b"\xfb" + struct.pack(">d", float(NOW + 60))),
    SIMPLE,
    cbor_bytes(st.binary(max_size=20)),
    cbor_texts(),
    st.just(b"\xc1\x1a" + (NOW + 60).to_bytes(4, "big")),  # tag 1, an epoch date
    st.just(b"\xc2\x49\x01" + bytes(8)),  # tag 2, a bignum of 2**64
    st.just(deeply_nested(200)),
    st.just(deeply_nested(200, b"\xa1\x01")),
    CBOR_ITEMS,
)


def plausible_ints(values: st.SearchStrategy[int], mutated: bool) -> st.SearchStrategy[bytes]:
    return cbor_ints(values) if mutated else values.map(cbor.encode_int)


def plausible_bytes(values: st.SearchStrategy[bytes], mutated: bool) -> st.SearchStrategy[bytes]:
    return cbor_bytes(values) if mutated else values.map(cbor.encode_bytes)


@st.composite
def card_claims(draw: st.DrawFn) -> bytes:
    """An 11-byte card claim; its age band now and then one of the reserved ones."""
    attributes = draw(st.integers(0, 3)) << 14 | draw(st.integers(0, 9)) << 10
    attributes |= draw(st.integers(0, 1023))
    return draw(st.binary(min_size=9, max_size=9)) + attributes.to_bytes(2, "big")


@st.composite
def code_claims_payloads(draw: st.DrawFn) -> bytes:
    """A claims map with plausible values around NOW (valid, expired, early, too long-lived),
    and in three of four examples random mutations of its entries and encoding."""
    mutated = draw(st.integers(0, 3)) > 0
    expires_at = NOW + draw(st.integers(-4000, 4000))
    issued_at = expires_at - draw(st.integers(-5, 3700))
    pairs = [
        (b"\x04", draw(plausible_ints(st.just(expires_at), mutated))),
        (b"\x06", draw(plausible_ints(st.just(issued_at), mutated))),
        (b"\x07", draw(plausible_bytes(st.binary(min_size=8, max_size=8), mutated))),
        (b"\x20", draw(plausible_bytes(card_claims(), mutated))),
    ]
    if not mutated:
        return encode_map(pairs)
    return encode_map(replaced(draw, pairs, NASTY_VALUES), draw(indefinite()))


@st.composite
def pass_claims_payloads(draw: st.DrawFn) -> bytes:
    """A pass's claims map with plausible windows around NOW (within and outside the rules),
    and in three of four examples random mutations of its entries and encoding."""
    mutated = draw(st.integers(0, 3)) > 0
    issued_at = NOW + draw(st.integers(-DAY, DAY))
    valid_from = issued_at + draw(st.integers(-8 * DAY, 31 * DAY))
    valid_until = valid_from + draw(st.integers(-60, 8 * DAY))
    communities = st.just("garden-court") | st.text(max_size=70)
    communities |= st.sampled_from(["", "a" * 65, "garden court", "../etc", "花园"])
    pairs = [
        (b"\x04", draw(plausible_ints(st.just(valid_until), mutated))),
        (b"\x05", draw(plausible_ints(st.just(valid_from), mutated))),
        (b"\x06", draw(plausible_ints(st.just(issued_at), mutated))),
        (b"\x07", draw(plausible_bytes(st.binary(min_size=8, max_size=8), mutated))),
        (b"\x21", draw(cbor_texts(communities) if mutated else st.just(b"\x6cgarden-court"))),
        (b"\x22", draw(plausible_bytes(st.binary(min_size=12, max_size=12), mutated))),
    ]
    if not mutated:
        return encode_map(pairs)
    return encode_map(replaced(draw, pairs, NASTY_VALUES), draw(indefinite()))


KIDS = st.one_of(
    st.sampled_from([b"T", b"E", b"", b"X", b"TT", b"t", b"\xff", "é".encode(), b"../../keys/T"]),
    st.binary(min_size=2, max_size=300),
)
ALGS = st.one_of(
    cbor_ints(st.sampled_from([-8, -7, -35, -36, -257, 0, 5, 6, 7, -65535, 2**64 - 1])),
    cbor_texts(st.sampled_from(["EdDSA", "ES256", "HS256", "none", ""])),
)


@st.composite
def protected_headers(draw: st.DrawFn, alg: int, kid: bytes) -> bytes:
    """The header map {1: alg, 4: kid} with wrong values, other or extra labels, duplicates,
    another order or a non-deterministic encoding."""
    pairs = [
        (b"\x01", draw(cbor_ints(st.just(alg)) | ALGS)),
        (b"\x04", draw(cbor_bytes(st.just(kid) | KIDS))),
    ]
    pairs = replaced(draw, pairs, NASTY_VALUES | ALGS | cbor_bytes(KIDS))
    return encode_map(pairs, draw(indefinite()))


SIGNERS = ["trusted"] * 4 + ["trusted-es256", "forger", "random", "truncated", "extended", "zeros"]
LAYERS = ["none", "header", "identity", "structure", "signature"]


@st.composite
def messages(draw: st.DrawFn, payloads: st.SearchStrategy[bytes], prefix: str) -> Built:
    """A COSE_Sign1 around a payload from ``payloads``, as text with ``prefix``, signed by one
    of SIGNERS and mutated in one of LAYERS: its protected header map, the algorithm and key it
    names (another trusted key's kid, an unknown kid, the other algorithm), or its structure
    (array length, tags, indefinite lengths, an unprotected header, a detached payload,
    trailing bytes)."""
    signer = draw(st.sampled_from(SIGNERS))
    key = ES256_ISSUER.key if signer == "trusted-es256" else ISSUER.key
    layer = draw(st.sampled_from(LAYERS))
    alg, kid = int(key.alg), key.kid.encode()
    if layer == "identity":
        alg = draw(st.sampled_from([Algorithm.EDDSA.value, Algorithm.ES256.value, -35, 0]))
        kid = draw(st.sampled_from([b"T", b"E", b"X", b""]))
    protected = (
        draw(protected_headers(alg, kid)) if layer == "header" else encode_protected(alg, kid)
    )
    payload = draw(payloads)
    to_sign = to_be_signed(protected, payload)
    signature = {
        "trusted": lambda: ISSUER.key.sign(to_sign),
        "trusted-es256": lambda: ES256_ISSUER.key.sign(to_sign),
        "forger": lambda: FORGER.sign(to_sign),
        "random": lambda: draw(st.binary(min_size=64, max_size=64)),
        "truncated": lambda: key.sign(to_sign)[: draw(st.integers(0, 63))],
        "extended": lambda: key.sign(to_sign) + draw(st.binary(min_size=1, max_size=8)),
        "zeros": lambda: bytes(64),
    }[signer]()
    if layer != "structure":
        message = encode_sign1(protected, payload, signature)
        return Built(prefix + b45(message), signer.startswith("trusted"))
    items = [
        draw(cbor_bytes(st.just(protected)) | st.just(protected)),  # or the map unwrapped
        draw(st.just(b"\xa0") | maps(cbor_ints(st.integers(-5, 40)), NASTY_VALUES) | CBOR_ITEMS),
        draw(cbor_bytes(st.just(payload)) | st.just(b"\xf6") | st.just(payload)),
        draw(cbor_bytes(st.just(signature))),
    ]
    layout = draw(st.sampled_from(["plain", "short", "long", "indefinite", "tagged", "trailing"]))
    if layout == "short":
        del items[draw(st.integers(0, 3))]
    elif layout == "long":
        items.insert(draw(st.integers(0, 4)), draw(CBOR_ITEMS))
    message = (
        b"\x9f" + b"".join(items) + b"\xff"
        if layout == "indefinite"
        else draw(heads(4, len(items))) + b"".join(items)
    )
    if layout == "tagged":
        message = draw(heads(6, draw(st.sampled_from([18, 98, 61, 55799])))) + message
    elif layout == "trailing":
        message += draw(st.binary(min_size=1, max_size=4))
    return Built(prefix + b45(message), signer.startswith("trusted"))


def signed(payload: bytes, prefix: str) -> str:
    """``payload`` under the trusted EdDSA key, in the exact COSE layout of issued codes."""
    protected = encode_protected(int(ISSUER.key.alg), ISSUER.key.kid.encode())
    message = encode_sign1(protected, payload, ISSUER.key.sign(to_be_signed(protected, payload)))
    return prefix + b45(message)


# -- the text layer -------------------------------------------------------------------------


@st.composite
def prefix_mutations(draw: st.DrawFn, text: str) -> str:
    """``text`` with its prefix changed the ways a scanner, a lookalike or a forger might."""
    body = text[len(PREFIX) :]
    prefix = draw(
        st.sampled_from(
            [
                "wh1:",
                "WH1",
                "WH2:",
                "WH01:",
                "WH11:",
                "SZ1:",
                "WH1P:",
                " WH1:",
                "\ufeffWH1:",
                "\uff37\uff281:",  # full-width lookalikes
                "WH1\uff1a",
                "WH1:WH1:",
                "",
                "HC1:",
            ]
        )
        | st.text(alphabet="WHPwh01:\x00 \n", max_size=6)
    )
    tail = draw(st.sampled_from(["", "", "\n", "\r\n", " ", "\x00", "=", "a"]))
    return prefix + body + tail


@st.composite
def base45_mutations(draw: st.DrawFn, text: str) -> str:
    """``text`` with random edits to its base45 body, or a random body altogether."""
    if draw(st.booleans()):
        return PREFIX + draw(st.text(alphabet=BASE45_ALPHABET, max_size=520))
    body = list(text[len(PREFIX) :])
    for _ in range(draw(st.integers(1, 4))):
        position = draw(st.integers(0, len(body)))
        character = draw(st.sampled_from(BASE45_ALPHABET + "abc=_\t\n\x00é"))
        edit = draw(st.sampled_from(["insert", "replace", "delete"]))
        if edit == "insert":
            body.insert(position, character)
        elif body and position < len(body):
            if edit == "replace":
                body[position] = character
            else:
                del body[position]
    return PREFIX + "".join(body)


# -- the oracle ----------------------------------------------------------------------------


def check_code(built: Built) -> Verdict:
    """Verify ``built`` with fresh replay state and check what any verdict must satisfy."""
    verdict = verify(built.text, TRUST, NOW, ReplayCache())
    note(verdict.reason)
    assert type(verdict.reason) is Reason
    assert not verdict.detail.startswith("unexpected"), verdict.detail  # a decoder raised
    if verdict.valid:
        assert built.signed_by_trusted_key
        assert verdict.claims is not None and verdict.kid is not None
        assert built.text == canonical(verdict.kid, verdict.claims.to_cbor(), built.text, PREFIX)
    return verdict


def check_pass(built: Built, now: int = NOW) -> PassVerdict:
    verdict = verify_pass(built.text, TRUST, now)
    note(verdict.reason)
    assert type(verdict.reason) is Reason
    assert not verdict.detail.startswith("unexpected"), verdict.detail
    if verdict.valid:
        assert built.signed_by_trusted_key
        assert verdict.claims is not None and verdict.kid is not None
        expected = canonical(verdict.kid, verdict.claims.to_cbor(), built.text, PASS_PREFIX)
        assert built.text == expected
        if verdict.kid == "T":  # Ed25519 signs deterministically: the issuer's own text
            assert built.text == sign_pass(verdict.claims, ISSUER.key, PREFIX)
    return verdict


def note(reason: Reason) -> None:
    """Count the reasons a fuzzer reaches (pytest --hypothesis-show-statistics)."""
    if currently_in_test_context():
        event(f"reason: {reason}")


def canonical(kid: str, payload: bytes, text: str, prefix: str) -> str:
    """The only text an accepted ``text`` may be: the issuer's layout for its payload, with
    its own signature (ES256 signatures are randomised), which the key must verify."""
    key = TRUSTED[kid]
    protected = encode_protected(int(key.alg), kid.encode())
    signature = base45.b45decode(text[len(prefix) :])[-64:]
    assert key.public.verify(signature, to_be_signed(protected, payload))
    return prefix + b45(encode_sign1(protected, payload, signature))


# Reasons only the checks up to the signature give (malformed and unknown_key come later too).
BEFORE_THE_SIGNATURE = {Reason.UNKNOWN_PREFIX, Reason.UNSUPPORTED_ALG, Reason.BAD_SIGNATURE}


# -- codes ---------------------------------------------------------------------------------


@FUZZ
@given(messages(st.just(valid_claims().to_cbor()) | code_claims_payloads(), PREFIX))
def test_mutated_cose_structure_gives_one_reason_and_only_the_issuers_exact_form_is_ok(
    built: Built,
) -> None:
    check_code(built)


@FUZZ
@given(code_claims_payloads())
def test_mutated_claims_signed_by_the_trusted_key_are_judged_on_their_claims_alone(
    payload: bytes,
) -> None:
    verdict = check_code(Built(signed(payload, PREFIX), signed_by_trusted_key=True))
    assert verdict.reason not in BEFORE_THE_SIGNATURE
    if verdict.reason is not Reason.MALFORMED:
        assert verdict.claims is not None and verdict.claims.to_cbor() == payload


@FUZZ
@given(st.data())
def test_mutated_prefix_or_base45_of_a_valid_code_is_never_accepted(data: st.DataObject) -> None:
    code = ISSUER.sign(valid_claims())
    text = data.draw(prefix_mutations(code) | base45_mutations(code))
    verdict = check_code(Built(text, signed_by_trusted_key=text == code))
    if text != code:
        # Refused for its text, structure, algorithm, kid or signature, never its claims.
        assert verdict.reason in BEFORE_THE_SIGNATURE | {Reason.MALFORMED, Reason.UNKNOWN_KEY}


@FUZZ
@given(CBOR_ITEMS)
def test_any_hand_encoded_cbor_item_as_the_message_or_as_signed_claims_is_refused(
    item: bytes,
) -> None:
    assert not check_code(Built(PREFIX + b45(item), False)).valid
    verdict = check_code(Built(signed(item, PREFIX), signed_by_trusted_key=True))
    assert verdict.reason is Reason.MALFORMED or item == valid_claims().to_cbor()


@settings(max_examples=50, deadline=None)
@given(
    st.one_of(
        st.none(),
        st.integers(),
        st.floats(),
        st.binary(max_size=200),
        st.lists(st.text(max_size=5), max_size=3),
        st.dictionaries(st.text(max_size=3), st.integers(), max_size=3),
    )
)
def test_input_that_is_not_text_is_malformed_for_codes_and_passes(value: object) -> None:
    assert verify(value, TRUST, NOW, ReplayCache()).reason is Reason.MALFORMED
    assert verify_pass(value, TRUST, NOW).reason is Reason.MALFORMED


# -- visitor passes ------------------------------------------------------------------------


@FUZZ
@given(messages(st.just(valid_pass().to_cbor()) | pass_claims_payloads(), PASS_PREFIX))
def test_mutated_pass_structure_gives_one_reason_and_only_the_issuers_exact_form_is_ok(
    built: Built,
) -> None:
    check_pass(built)


@FUZZ
@given(pass_claims_payloads(), st.sampled_from([NOW, NOW + DAY // 2, NOW + 8 * DAY]))
def test_mutated_pass_claims_signed_by_the_trusted_key_are_judged_on_their_claims_alone(
    payload: bytes, now: int
) -> None:
    verdict = check_pass(Built(signed(payload, PASS_PREFIX), signed_by_trusted_key=True), now)
    assert verdict.reason not in BEFORE_THE_SIGNATURE
    if verdict.reason is not Reason.MALFORMED:
        assert verdict.claims is not None and verdict.claims.to_cbor() == payload


@FUZZ
@given(code_claims_payloads() | pass_claims_payloads())
def test_a_signed_code_is_never_a_pass_nor_a_signed_pass_a_code(payload: bytes) -> None:
    as_code = signed(payload, PREFIX)
    as_pass = signed(payload, PASS_PREFIX)
    # (Past the length bound a text is malformed before its prefix is looked at.)
    assert check_pass(Built(as_code, False)).reason is Reason.UNKNOWN_PREFIX or len(as_code) > 512
    # A pass text starts with the code prefix's letters but not with the code prefix.
    assert check_code(Built(as_pass, False)).reason is Reason.UNKNOWN_PREFIX or len(as_pass) > 512


# -- trust bundles and status deltas -------------------------------------------------------

ROOT = ISSUER.root
ROOT_JWK = ROOT.public_jwk
OTHER_ROOT = Ed25519PrivateKey.generate()
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=12),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4)
    ),
    max_leaves=12,
)
NASTY_JSON = st.one_of(
    JSON_VALUES,
    st.sampled_from([-1, 2**63, 2**64, 1e300, 1.5, True, "1", "", [], {}]),
    st.just(json.loads("[" * 400 + "]" * 400)),  # deep, but within what json reads
)


def b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


# 8 KiB that inflate to 8 MiB, for a list of 16 entries (2 bytes).
ZLIB_BOMB = b64url(zlib.compress(bytes(8 * 1024 * 1024), 9))


def json_members(draw: st.DrawFn, members: dict[str, Any]) -> dict[str, Any]:
    """``members`` with random ones replaced, dropped or added."""
    members = dict(members)
    for _ in range(draw(st.integers(0, 3))):
        name = draw(st.sampled_from(sorted(members)) | st.text(max_size=8))
        if draw(st.booleans()) and name in members:
            del members[name]
        else:
            members[name] = draw(NASTY_JSON)
    return members


@st.composite
def status_lists(draw: st.DrawFn) -> Any:
    valid = StatusList(16).to_json()
    if draw(st.booleans()):
        return json_members(draw, valid)
    return draw(
        st.sampled_from(
            [
                valid,
                {**valid, "size": MAX_ENTRIES + 1},
                {**valid, "size": 17},
                {**valid, "bits": 2},
                {**valid, "bits": True},
                {**valid, "lst": "***"},
                {**valid, "lst": "é"},
                {**valid, "lst": ZLIB_BOMB},
                {"bits": 1, "size": 9, "lst": b64url(zlib.compress(b"\x00\xff", 9))},
            ]
        )
    )


@st.composite
def key_sets(draw: st.DrawFn) -> Any:
    jwk = ISSUER.key.public.to_jwk()
    if draw(st.booleans()):
        return {"keys": [json_members(draw, jwk)]}
    secret = {"kty": "oct", "k": b64url(b"secret"), "alg": "HS256", "kid": "H", "use": "sig"}
    return draw(
        st.sampled_from(
            [
                jwks([ISSUER.key.public]),
                {"keys": [jwk, jwk]},
                {"keys": [{**jwk, "alg": "HS256"}]},
                {"keys": [secret]},
                {"keys": [{**jwk, "d": jwk["x"]}]},
                {"keys": [{**jwk, "kid": "../../etc/passwd"}]},
                {"keys": [{**jwk, "kid": "T" * 10_000}]},
                {"keys": [{**jwk, "kid": "根"}]},
                {"keys": [{**jwk, "x": jwk["x"][:-4]}]},
                {"keys": "T"},
                [],
            ]
        )
    )


def valid_bundle_claims() -> dict[str, Any]:
    return {
        "iss": "idcode",
        "iat": NOW,
        "ver": 3,
        "max_age": 3600,
        "keys": jwks([ISSUER.key.public]),
        "status": StatusList(16).to_json(),
        # The scene block as the service sends it: all five members (docs/trust.md).
        "scene": {
            "scene": "community",
            "site": "test-site",
            "version": 1,
            "data": {},
            "subject_key": b64url(bytes(32)),
        },
    }


def valid_delta_claims() -> dict[str, Any]:
    delta = StatusDelta(base=3, target=5, size=16, invalidated=(1, 2), validated=(3,))
    return {"iss": "idcode", "iat": NOW, "delta": delta.to_json()}


@st.composite
def delta_documents(draw: st.DrawFn) -> Any:
    valid = valid_delta_claims()["delta"]
    if draw(st.booleans()):
        return json_members(draw, valid)
    return draw(
        st.sampled_from(
            [
                valid,
                {**valid, "invalidated": b64url(zlib.compress(b"\x80" * 8, 9))},  # endless varint
                {**valid, "invalidated": b64url(zlib.compress(b"\x01\x00", 9))},  # a gap of 0
                {**valid, "invalidated": b64url(zlib.compress(b"\x7f" * 100, 9))},  # past the end
                {**valid, "validated": valid["invalidated"]},
                {**valid, "base": 6},
                {**valid, "size": MAX_ENTRIES + 1},
            ]
        )
    )


@dataclass(frozen=True)
class Token:
    text: str
    signed_by_root: bool


JWS_LAYERS = ["none", "header", "claims", "encoding", "signature", "framing"]


def hmac_secrets() -> list[bytes]:
    """The root's public key as an HMAC secret, in the forms an attacker would try."""
    assert isinstance(ROOT.private_key, Ed25519PrivateKey)
    public = ROOT.private_key.public_key()
    return [
        json.dumps(ROOT_JWK).encode(),
        json.dumps(ROOT_JWK, sort_keys=True, separators=(",", ":")).encode(),
        public.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
        public.public_bytes_raw(),
        ROOT_JWK["x"].encode(),
    ]


@st.composite
def jws_tokens(draw: st.DrawFn, typ: str) -> Token:
    """A compact JWS of ``typ``, signed by the root key unless its signature is the layer
    fuzzed; the others are its header, its claims (keys, status list, scene, delta, any
    member), the JSON encoding of either, and the compact framing."""
    layer = draw(st.sampled_from(JWS_LAYERS))
    header: dict[str, Any] = {"alg": "EdDSA", "typ": typ, "kid": ROOT_JWK["kid"]}
    if layer == "header":
        header["alg"] = draw(st.sampled_from(["EdDSA", "HS256", "none", "ES256", "eddsa", None]))
        header["typ"] = draw(st.sampled_from([typ, BUNDLE_TYPE, DELTA_TYPE, "JWT", "", 1]))
        header["kid"] = draw(
            st.sampled_from([ROOT_JWK["kid"], "", "T", "../../keys/root", "R" * 5000, "根", 0])
        )
        if draw(st.booleans()):  # an embedded key, as in the "jwk" header injection
            header["jwk"] = draw(st.sampled_from([ROOT_JWK, ISSUER.key.public.to_jwk()]))
        header = json_members(draw, header)
    if typ == BUNDLE_TYPE:
        claims = valid_bundle_claims()
        if layer == "claims":
            claims["keys"] = draw(key_sets())
            claims["status"] = draw(status_lists())
            claims["scene"] = draw(st.just(claims["scene"]) | NASTY_JSON)
    else:
        claims = valid_delta_claims()
        if layer == "claims":
            claims["delta"] = draw(delta_documents())
    if layer == "claims":
        claims = json_members(draw, claims)
    encoded_header, encoded_claims = json.dumps(header).encode(), json.dumps(claims).encode()
    if layer == "encoding":
        broken = [b"", b"null", b"[1]", b"{", b"\xff", b"[" * 3000 + b"]" * 3000]
        if draw(st.booleans()):
            encoded_header = draw(st.sampled_from(broken))
        else:
            encoded_claims = draw(st.sampled_from(broken))
    signing_input = (b64url(encoded_header) + "." + b64url(encoded_claims)).encode()
    signature = ROOT.private_key.sign(signing_input)
    if layer == "signature":
        signature = draw(
            st.sampled_from(
                [
                    OTHER_ROOT.sign(signing_input),
                    b"",
                    *(hmac.digest(secret, signing_input, "sha256") for secret in hmac_secrets()),
                ]
            )
            | st.integers(0, 63).map(lambda length: signature[:length])
            | st.binary(max_size=80)
        )
    text = signing_input.decode() + "." + b64url(signature)
    if layer == "framing":
        text = draw(st.sampled_from([text + ".", text[:-1], text.replace(".", "..", 1), ".."]))
    return Token(text, signed_by_root=layer != "signature")


@FUZZ
@given(jws_tokens(BUNDLE_TYPE))
def test_fuzzed_trust_bundle_loads_only_if_the_root_signed_it_and_otherwise_is_bundle_error(
    token: Token,
) -> None:
    try:
        bundle = verify_bundle(token.text, ROOT_JWK)
    except BundleError as exc:
        event(f"refused: {str(exc)[:40]}")
        return
    event("loaded")
    assert token.signed_by_root
    assert isinstance(bundle, TrustBundle)


@FUZZ
@given(jws_tokens(DELTA_TYPE))
def test_fuzzed_status_delta_loads_only_if_the_root_signed_it_and_otherwise_is_bundle_error(
    token: Token,
) -> None:
    try:
        delta, signed_at = verify_delta(token.text, ROOT_JWK)
    except BundleError as exc:
        event(f"refused: {str(exc)[:40]}")
        return
    event("loaded")
    assert token.signed_by_root
    assert isinstance(delta, StatusDelta) and type(signed_at) is int


@settings(max_examples=50, deadline=None)
@given(st.one_of(st.none(), st.integers(), st.binary(max_size=50), st.text(max_size=200)))
def test_anything_that_is_not_a_compact_jws_is_bundle_error(value: Any) -> None:
    for load in (verify_bundle, verify_delta):
        try:
            load(value, ROOT_JWK)
        except BundleError:
            continue
        raise AssertionError(f"{load.__name__} accepted {value!r}")


def test_the_fuzzers_valid_starting_points_are_accepted() -> None:
    """Guards the fuzzers above: what they mutate starts out valid, so their refusals come
    from the mutations, not from a broken starting point."""
    assert verify(ISSUER.sign(valid_claims()), TRUST, NOW).valid
    es256 = Built(ES256_ISSUER.sign(valid_claims()), signed_by_trusted_key=True)
    assert check_code(es256).valid
    assert check_code(Built(signed(valid_claims().to_cbor(), PREFIX), True)).valid
    assert check_pass(Built(signed(valid_pass().to_cbor(), PASS_PREFIX), True)).valid
    for typ, claims in ((BUNDLE_TYPE, valid_bundle_claims()), (DELTA_TYPE, valid_delta_claims())):
        header = {"alg": "EdDSA", "typ": typ, "kid": ROOT_JWK["kid"]}
        signing_input = (
            b64url(json.dumps(header).encode()) + "." + b64url(json.dumps(claims).encode())
        )
        token = signing_input + "." + b64url(ROOT.private_key.sign(signing_input.encode()))
        if typ == BUNDLE_TYPE:
            assert verify_bundle(token, ROOT_JWK).version == 3
        else:
            assert verify_delta(token, ROOT_JWK)[0].target == 5
