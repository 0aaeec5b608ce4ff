"""An independent COSE/CWT implementation (the ``cwt`` package) verifies our codes.

v1 codes are untagged COSE_Sign1 (RFC 9052 section 2 lets the context say what the bytes
are; here the prefix does). Generic libraries that need the tag get it by prepending the
one byte 0xD2 (tag 18), which is all an integrator has to add.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import base45
import cwt
import pytest

from idcode.claims import CLAIM_CARD, CLAIM_CTI, CLAIM_EXP, CLAIM_IAT
from idcode.cose import Algorithm
from idcode.testing import TestIssuer, random_card

VECTORS = sorted((Path(__file__).parents[2] / "examples/test-vectors/cases").glob("*.json"))
VALID = [path for path in VECTORS if json.loads(path.read_text())["expected"]["valid"]]
COSE_SIGN1_TAG = b"\xd2"


def tagged(code: str, prefix: str = "WH1:") -> bytes:
    message: bytes = base45.b45decode(code[len(prefix) :])
    return COSE_SIGN1_TAG + message


@pytest.mark.parametrize("path", VALID, ids=[path.stem for path in VALID])
def test_cwt_package_verifies_every_valid_vector(path: Path) -> None:
    vector = json.loads(path.read_text())
    keys = [cwt.COSEKey.from_jwk(jwk) for jwk in vector["trust"]["jwks"]["keys"]]
    # no_verify skips only cwt's wall-clock checks; the signature is still verified.
    claims = cwt.decode(tagged(vector["code"]), keys, no_verify=True)
    assert claims[CLAIM_EXP] == vector["layers"]["claims"]["4"]
    assert isinstance(claims, dict)
    assert claims[CLAIM_CTI].hex() == vector["layers"]["claims"]["7"]


@pytest.mark.parametrize("alg", list(Algorithm), ids=lambda alg: alg.jose_name)
def test_cwt_package_verifies_a_fresh_code_including_its_expiry(alg: Algorithm) -> None:
    issuer = TestIssuer(alg=alg, now=int(time.time()))
    card = random_card(status_index=3_000_000)
    code = issuer.mint(card)
    key = cwt.COSEKey.from_jwk(issuer.key.public.to_jwk())
    claims = cwt.decode(tagged(code), key)
    assert isinstance(claims, dict)
    assert claims[CLAIM_IAT] == issuer.now
    assert claims[CLAIM_CARD] == card.to_bytes()


def test_cwt_package_refuses_a_vector_with_a_flipped_signature_bit() -> None:
    vector = json.loads(next(p for p in VECTORS if "signature-bit-flip" in p.name).read_text())
    key = cwt.COSEKey.from_jwk(vector["trust"]["jwks"]["keys"][0])
    with pytest.raises(cwt.VerifyError):
        cwt.decode(tagged(vector["code"]), key, no_verify=True)
