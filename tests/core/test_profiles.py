"""Crypto profiles and SM2 codes in the core: the setting, SM2 keys and their JWKs (hostile
ones too), the COSE layout, the verifier's allow-list across profiles, the file key store and
the command line under ``IDCODE_CRYPTO_PROFILE``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import base45
import cbor2
import pytest
from hypothesis import given
from hypothesis import strategies as st

from idcode import b64url, cose, gm
from idcode.claims import CodeClaims
from idcode.codetext import decode_body
from idcode.config import CoreSettings
from idcode.cose import Algorithm
from idcode.errors import ConfigurationError, KeyMaterialError
from idcode.issuer import sign_code
from idcode.keys import IssuerKey, PublicKey, keys_from_jwks
from idcode.keystore import open_key_store, rotate
from idcode.profiles import GM, PROFILES, STANDARD, ProfileName
from idcode.testing import TestIssuer, TestTerminal, random_card
from idcode.verifier import Trust, verify
from tests.conftest import NOW
from tests.core.test_cli import Cli

PREFIX = "WH1:"
SM2_KEY = IssuerKey.generate("S", Algorithm.SM2)
ED_KEY = IssuerKey.generate("A", Algorithm.EDDSA)


def code_of(key: IssuerKey) -> str:
    claims = CodeClaims(NOW, NOW + 60, bytes(range(8)), random_card())
    return sign_code(claims, key, PREFIX)


def trust_of(algorithms: tuple[Algorithm, ...], *keys: IssuerKey) -> Trust:
    return Trust.of([key.public for key in keys], prefix=PREFIX, algorithms=algorithms)


# -- the setting ------------------------------------------------------------------------------


def test_the_profile_is_standard_unless_the_environment_says_gm() -> None:
    assert CoreSettings.from_environment({}).profile is STANDARD
    assert CoreSettings.from_environment({"IDCODE_CRYPTO_PROFILE": "gm"}).profile is GM


def test_an_unknown_profile_is_refused_naming_the_variable() -> None:
    with pytest.raises(ConfigurationError, match="IDCODE_CRYPTO_PROFILE"):
        CoreSettings.from_environment({"IDCODE_CRYPTO_PROFILE": "sm"})


def test_no_profile_shares_an_algorithm_with_another() -> None:
    standard, gm_profile = PROFILES[ProfileName.STANDARD], PROFILES[ProfileName.GM]
    assert not standard.code_algorithms & gm_profile.code_algorithms
    for profile in (standard, gm_profile):
        assert profile.issuer_algorithm in profile.code_algorithms
        assert set(profile.default_code_algorithms) <= profile.code_algorithms


def test_an_option_naming_the_other_profiles_algorithm_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="SM2 is not an algorithm of the standard"):
        STANDARD.check_code_algorithms([Algorithm.EDDSA, Algorithm.SM2], "--algorithms")
    with pytest.raises(ConfigurationError, match="EdDSA is not an algorithm of the gm"):
        GM.check_code_algorithms([Algorithm.EDDSA], "--alg")


def test_a_key_that_will_sign_counts_and_a_retired_one_does_not() -> None:
    retired = IssuerKey.generate("R", Algorithm.EDDSA, NOW - 100, NOW - 10).public
    GM.check_issuer_keys([retired, SM2_KEY.public], NOW)
    upcoming = IssuerKey.generate("U", Algorithm.EDDSA, NOW + 10, NOW + 100).public
    with pytest.raises(ConfigurationError, match="issuer key 'U' is EdDSA"):
        GM.check_issuer_keys([upcoming], NOW)


# -- keys and JWKs ----------------------------------------------------------------------------


def test_an_sm2_issuer_key_round_trips_through_its_jwk_and_verifies_its_signature() -> None:
    jwk = SM2_KEY.public.to_jwk()
    assert (jwk["kty"], jwk["crv"], jwk["alg"]) == ("EC", "SM2", "SM2")
    assert len(b64url.decode(jwk["x"])) == len(b64url.decode(jwk["y"])) == 32
    loaded = PublicKey.from_jwk(json.loads(json.dumps(jwk)))
    assert loaded == SM2_KEY.public
    signature = SM2_KEY.sign(b"message")
    assert len(signature) == 64
    assert loaded.verify(signature, b"message")
    assert not loaded.verify(signature, b"messagE")
    # The signature is GM/T 0003 over SM3 with the default user id: idcode.gm checks it too.
    gm.SM2PublicKey.from_bytes(b"\x04" + b64url.decode(jwk["x"]) + b64url.decode(jwk["y"])).verify(
        signature, b"message"
    )


def _sm2_jwk(**changes: Any) -> dict[str, Any]:
    jwk = SM2_KEY.public.to_jwk()
    for member, value in changes.items():
        if value is None:
            del jwk[member]
        else:
            jwk[member] = value
    return jwk


def _off_curve_y() -> str:
    y = int.from_bytes(b64url.decode(SM2_KEY.public.to_jwk()["y"]), "big")
    return b64url.encode(((y + 1) % gm.P).to_bytes(32, "big"))


HOSTILE_SM2_JWKS = {
    "off-curve": (_sm2_jwk(y=_off_curve_y()), "not on the SM2 curve"),
    "coordinate-above-p": (_sm2_jwk(x=b64url.encode(gm.P.to_bytes(32, "big"))), "below the prime"),
    "short-x": (_sm2_jwk(x=b64url.encode(bytes(31))), "must be 32 bytes"),
    "padded-y": (_sm2_jwk(y=_sm2_jwk()["y"] + "="), "JWK member y"),
    "no-y": (_sm2_jwk(y=None), "JWK member y"),
    "crv-p256": (_sm2_jwk(crv="P-256"), "crv 'SM2'"),
    "kty-okp": (_sm2_jwk(kty="OKP"), "kty 'EC'"),
    "private": (_sm2_jwk(d=b64url.encode(bytes(32))), "private JWK"),
    "alg-lowercase": (_sm2_jwk(alg="sm2"), "unknown algorithm"),
    "p256-key-claiming-sm2": (
        {**IssuerKey.generate("E", Algorithm.ES256).public.to_jwk(), "alg": "SM2"},
        "crv 'SM2'",
    ),
    "sm2-key-claiming-es256": (_sm2_jwk(alg="ES256"), "unusable JWK"),
}


@pytest.mark.parametrize("case", HOSTILE_SM2_JWKS, ids=HOSTILE_SM2_JWKS.keys())
def test_a_hostile_sm2_jwk_is_a_key_material_error(case: str) -> None:
    jwk, message = HOSTILE_SM2_JWKS[case]
    with pytest.raises(KeyMaterialError, match=message):
        keys_from_jwks({"keys": [jwk]})


# -- COSE -------------------------------------------------------------------------------------


def test_an_sm2_code_is_four_bytes_longer_than_an_eddsa_code() -> None:
    sm2 = decode_body(code_of(SM2_KEY)[len(PREFIX) :])
    eddsa = decode_body(code_of(ED_KEY)[len(PREFIX) :])
    assert (len(eddsa), len(sm2)) == (113, 117)
    assert cbor2.loads(cbor2.loads(sm2)[0]) == {1: -65537, 4: b"S"}
    assert len(code_of(SM2_KEY)) - len(code_of(ED_KEY)) == 6


sm2_layout_messages = st.builds(
    lambda kid, payload, signature: cose.encode_sign1(
        cose.encode_protected(int(Algorithm.SM2), kid), payload, signature
    ),
    st.binary(min_size=1, max_size=1),
    st.binary(min_size=36, max_size=36),
    st.binary(min_size=64, max_size=64),
)


@given(sm2_layout_messages, st.integers(0, 116), st.integers(0, 7))
def test_the_sm2_fast_path_agrees_with_the_general_parser(
    message: bytes, index: int, bit: int
) -> None:
    assert cose.decode_fixed_layout(message) == cose.decode_general(message)
    mutated = bytearray(message)
    mutated[index] ^= 1 << bit
    fast = cose.decode_fixed_layout(bytes(mutated))
    if fast is not None:
        assert fast == cose.decode_general(bytes(mutated))


# -- the verifier across profiles -------------------------------------------------------------


def test_an_sm2_code_is_valid_under_gm_and_unsupported_alg_under_standard() -> None:
    code = code_of(SM2_KEY)
    assert verify(code, trust_of(GM.default_code_algorithms, SM2_KEY), NOW).valid
    # Even a standard verifier that holds the SM2 key refuses at the allow-list.
    verdict = verify(code, trust_of(tuple(STANDARD.code_algorithms), SM2_KEY, ED_KEY), NOW)
    assert verdict.reason.value == "unsupported_alg"
    assert verdict.detail == "alg -65537 (SM2) is not accepted here (accepted: EdDSA, ES256)"


def test_an_eddsa_code_is_unsupported_alg_under_gm() -> None:
    verdict = verify(code_of(ED_KEY), trust_of(GM.default_code_algorithms, SM2_KEY, ED_KEY), NOW)
    assert verdict.reason.value == "unsupported_alg"
    assert verdict.detail == "alg -8 (EdDSA) is not accepted here (accepted: SM2)"


def test_an_sm2_code_whose_header_claims_eddsa_is_refused_under_either_profile() -> None:
    code = code_of(SM2_KEY)
    message = cose.decode_sign1(decode_body(code[len(PREFIX) :]))
    forged = PREFIX + base45.b45encode(
        cose.encode_sign1(cose.encode_protected(-8, b"S"), message.payload, message.signature)
    ).decode("ascii")
    assert verify(forged, trust_of(GM.default_code_algorithms, SM2_KEY), NOW).reason.value == (
        "unsupported_alg"
    )
    standard = verify(forged, trust_of(STANDARD.default_code_algorithms, SM2_KEY), NOW)
    assert (standard.reason.value, standard.detail) == ("unsupported_alg", "key 'S' is SM2")


def test_a_tampered_sm2_code_is_bad_signature() -> None:
    body = bytearray(decode_body(code_of(SM2_KEY)[len(PREFIX) :]))
    body[-1] ^= 1
    tampered = PREFIX + base45.b45encode(bytes(body)).decode("ascii")
    verdict = verify(tampered, trust_of(GM.default_code_algorithms, SM2_KEY), NOW)
    assert verdict.reason.value == "bad_signature"


# -- the file key store and the command line --------------------------------------------------


@pytest.mark.parametrize("passphrase", [None, "correct horse"], ids=["clear", "encrypted"])
def test_the_file_key_store_keeps_sm2_issuer_keys(tmp_path: Path, passphrase: str | None) -> None:
    store = open_key_store(tmp_path / "keys", passphrase)
    store.create_root_key()
    created = rotate(store, NOW, 30, Algorithm.SM2)
    pem = (tmp_path / "keys" / f"issuer-{ord(created.kid):02x}.pem").read_bytes()
    # With a passphrase, an Argon2id key file (idcode.keyfile) around the SM2 key's PKCS#8.
    assert pem.startswith(
        b"-----BEGIN IDCODE ENCRYPTED PRIVATE KEY" if passphrase else b"-----BEGIN PRIVATE KEY"
    )
    signer = open_key_store(tmp_path / "keys", passphrase).signing_key(NOW)
    assert signer.alg is Algorithm.SM2 and signer.public == created
    assert created.verify(signer.sign(b"x"), b"x")


def test_gm_key_commands_mint_and_verify_sm2_and_standard_ones_refuse_it(cli: Cli) -> None:
    gm_env = {"IDCODE_CRYPTO_PROFILE": "gm"}
    assert cli("keys", "init", env=gm_env).returncode == 0
    listing = cli("keys", "list", env=gm_env).stdout
    assert "SM2" in listing and "signing" in listing
    code = cli("mint", env=gm_env).stdout.strip()

    valid = cli("verify", code, env=gm_env)
    assert valid.returncode == 0, valid.stderr
    refused = cli("verify", code)
    assert refused.returncode == 1
    assert json.loads(refused.stdout)["reason"] == "unsupported_alg"
    widened = cli("verify", "--alg", "SM2", code)
    assert widened.returncode == 2
    assert "SM2 is not an algorithm of the standard crypto profile" in widened.stderr
    standard_mint = cli("keys", "rotate", "--alg", "EdDSA", env=gm_env)
    assert standard_mint.returncode == 2
    assert "EdDSA is not an algorithm of the gm crypto profile" in standard_mint.stderr


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    return Cli(tmp_path, tmp_path / "keys")


# -- a terminal with a trust bundle -----------------------------------------------------------


def test_a_gm_terminal_admits_an_sm2_code_from_its_bundle_and_a_standard_one_refuses_it() -> None:
    issuer = TestIssuer(alg=Algorithm.SM2, now=NOW)
    bundle = issuer.bundle("tourism", "yellow-crane-tower", {})
    assert [key.alg for key in bundle.keys] == [Algorithm.SM2]  # through the signed JWS

    gm_gate = TestTerminal(bundle, algorithms=GM.default_code_algorithms)
    assert gm_gate.scan(issuer.mint(at=NOW)).admitted
    standard_gate = TestTerminal(bundle, algorithms=STANDARD.code_algorithms)
    refused = standard_gate.scan(issuer.mint(at=NOW))
    assert (refused.admitted, refused.reason) == (False, "unsupported_alg")


def test_the_gm_profile_is_refused_at_start_where_hashlib_lacks_sm3(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Subjects and lookups take HMAC-SM3 from hashlib: a Python whose OpenSSL has no SM3 is
    told so when the profile is checked, not at the first scan."""
    assert GM.check_available()  # here: the system's OpenSSL, with SM2 and SM3
    assert STANDARD.check_available() == ""
    import hashlib

    monkeypatch.setattr(hashlib, "algorithms_available", {"sha256"})
    with pytest.raises(ConfigurationError, match=r"needs HMAC-SM3.*hashlib has no sm3"):
        GM.check_available()
    assert STANDARD.check_available() == ""


def test_the_profiles_keyed_hashes_are_hmac_sha256_and_hmac_sm3() -> None:
    """Fixed values, from the OpenSSL command line: ``echo -n pseudonym | openssl dgst -sha256
    (-sm3) -mac HMAC -macopt key:kkkk...`` (32 of k)."""
    key, data = b"k" * 32, b"pseudonym"
    assert STANDARD.mac(key, data).hex() == (
        "30bdc4f3c7493a33366843fb6d72359e43cf643de5f6a74b342d2d7cfb235b32"
    )
    assert GM.mac(key, data).hex() == (
        "9c20cf347c1c298efeffb83fcf02d2274886832a7e7beda02861723471f81f37"
    )
    assert GM.mac(key, data) == gm.hmac_sm3(key, data)
