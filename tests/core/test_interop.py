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
import cbor2
import cwt
import pytest

from idcode.claims import CLAIM_CARD, CLAIM_CTI, CLAIM_EXP, CLAIM_IAT
from idcode.cose import Algorithm
from idcode.testing import TestIssuer, random_card

VECTORS = sorted((Path(__file__).parents[2] / "examples/test-vectors/cases").glob("*.json"))
_DOCUMENTS = {path: json.loads(path.read_text()) for path in VECTORS}
# Version 1 codes; the device codes (docs/code-format.md section 8) are the vectors whose
# steps include the device signature.
# SM2 codes (the GM profile) are left out: SM2 has no COSE registration, so no generic
# library knows alg -65537 (cwt refuses the JWK: "Unsupported or unknown alg: SM2"); the
# Node verifier checks them with SM2 code of its own (tests/core/test_node_verifier.py).
VALID = [
    path
    for path, vector in _DOCUMENTS.items()
    if vector["expected"]["valid"]
    and "device_signature" not in vector["expected"]["steps"]
    and vector["trust"]["algorithms"] != ["SM2"]
]
VALID_DEVICE = [
    path
    for path, vector in _DOCUMENTS.items()
    if vector["expected"]["valid"] and "device_signature" in vector["expected"]["steps"]
]
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


@pytest.mark.parametrize("path", VALID_DEVICE, ids=[path.stem for path in VALID_DEVICE])
def test_cose_package_verifies_both_signatures_of_every_valid_device_vector(path: Path) -> None:
    """Section 8: the issuer signature is an ordinary COSE_Sign1 whose protected header the
    verifier rebuilds; the device signature one with an empty protected header, whose
    algorithm a generic library is told in the unprotected header (which is not signed)."""
    vector = _DOCUMENTS[path]
    layers = vector["layers"]
    _, _, payload, device_signature = cbor2.loads(base45.b45decode(layers["base45"]))
    iat, cti, credential, issuer_signature = cbor2.loads(payload)
    issuer_jwk = next(
        jwk for jwk in vector["trust"]["jwks"]["keys"] if jwk["kid"] == chr(credential[1])
    )
    issuer_sign1 = cbor2.dumps(
        cbor2.CBORTag(
            18,
            [bytes.fromhex(layers["issuer_protected_hex"]), {}, credential, issuer_signature],
        )
    )
    issuer_key = cwt.COSEKey.from_jwk(issuer_jwk)
    assert cwt.COSE.new().decode(issuer_sign1, issuer_key) == credential
    device_jwk = layers["device_key_jwk"]
    alg = {"OKP": -8, "EC": -7}[device_jwk["kty"]]
    device_sign1 = cbor2.dumps(cbor2.CBORTag(18, [b"", {1: alg}, payload, device_signature]))
    device_key = cwt.COSEKey.from_jwk({**device_jwk, "kid": "D"})
    assert cwt.COSE.new().decode(device_sign1, device_key) == payload
    # And a changed credential does not verify under the issuer's key.
    forged = bytearray(credential)
    forged[6] ^= 1
    with pytest.raises(cwt.VerifyError):
        cwt.COSE.new().decode(
            cbor2.dumps(
                cbor2.CBORTag(
                    18,
                    [
                        bytes.fromhex(layers["issuer_protected_hex"]),
                        {},
                        bytes(forged),
                        issuer_signature,
                    ],
                )
            ),
            issuer_key,
        )
    assert (iat, cti.hex()) == (layers["iat"], layers["cti"])


@pytest.mark.parametrize(
    "alg", [Algorithm.EDDSA, Algorithm.ES256], ids=lambda alg: alg.jose_name
)  # SM2 has no COSE registration: see VALID above
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
