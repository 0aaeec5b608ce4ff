"""The root key under the GM profile: an SM2 root, the JWS alg ``SM2`` (idcode.jws), trust
bundles, status deltas and the key manifest signed with it, and no fallback across profiles."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import hmac as crypto_hmac

from idcode import b64url
from idcode.bundle import (
    load_root_jwk,
    pinned_profile,
    sign_bundle,
    sign_delta,
    verify_bundle,
    verify_delta,
)
from idcode.cose import Algorithm
from idcode.decider import Decider
from idcode.errors import BundleError, ConfigurationError, KeyStoreError
from idcode.gm import SM2PrivateKey
from idcode.issuer import mint_code
from idcode.jws import RootJWT, SM2Algorithm
from idcode.keystore import FileKeyStore, RootKey, initialise, open_key_store, rotate
from idcode.profiles import GM, STANDARD
from idcode.replay import ReplayCache
from idcode.scenes import Decision, MemoryHistory, Scan, SceneAdapter, encode_scene_key, subject_of
from idcode.statuslist import StatusDelta, StatusList
from idcode.testing import random_card
from tests.conftest import NOW


@pytest.fixture
def gm_store(tmp_path: Path) -> FileKeyStore:
    store = open_key_store(tmp_path / "gm")
    initialise(store, NOW, 90, Algorithm.SM2, GM.root_algorithm)
    return store


@pytest.fixture
def standard_store(tmp_path: Path) -> FileKeyStore:
    store = open_key_store(tmp_path / "standard")
    initialise(store, NOW, 90)
    return store


def _bundle(root: RootKey, store: FileKeyStore, version: int = 1) -> str:
    return sign_bundle(
        root,
        version=version,
        issued_at=NOW,
        max_age=3600,
        keys=store.published_keys(NOW),
        status=StatusList(64),
    )


def test_a_store_made_under_gm_has_an_sm2_root_with_an_sm2_jwk(gm_store: FileKeyStore) -> None:
    root = gm_store.root_key()
    assert isinstance(root.private_key, SM2PrivateKey)
    assert root.alg is Algorithm.SM2
    jwk = gm_store.root_public_jwk()
    assert {k: jwk[k] for k in ("kty", "crv", "alg", "use")} == {
        "kty": "EC",
        "crv": "SM2",
        "alg": "SM2",
        "use": "sig",
    }
    assert len(b64url.decode(jwk["x"])) == len(b64url.decode(jwk["y"])) == 32
    assert "d" not in jwk
    # The point in the JWK is the root key's own: reopened, the store checks them together.
    assert open_key_store(gm_store.directory).root_key().public_jwk == jwk


def test_the_key_manifest_signed_by_an_sm2_root_lists_the_keys_across_a_rotation(
    gm_store: FileKeyStore,
) -> None:
    new = rotate(gm_store, NOW, 90, Algorithm.SM2, starts_in=3600)
    token = (gm_store.directory / "manifest.jwt").read_text().strip()
    assert jwt.get_unverified_header(token)["alg"] == "SM2"
    reopened = open_key_store(gm_store.directory)
    assert new.kid in {key.kid for key in reopened.issuer_keys()}
    assert len(reopened.issuer_keys()) == 2


def test_a_manifest_with_one_flipped_signature_bit_stops_the_store(
    gm_store: FileKeyStore,
) -> None:
    path = gm_store.directory / "manifest.jwt"
    head, payload, signature = path.read_text().strip().split(".")
    raw = bytearray(b64url.decode(signature))
    raw[5] ^= 1
    path.write_text(f"{head}.{payload}.{b64url.encode(bytes(raw))}\n")
    with pytest.raises(KeyStoreError, match="does not verify with the root key"):
        open_key_store(gm_store.directory).issuer_keys()


def test_a_gm_bundle_and_delta_round_trip_with_alg_sm2(gm_store: FileKeyStore) -> None:
    root = gm_store.root_key()
    token = _bundle(root, gm_store)
    assert jwt.get_unverified_header(token) == {
        "alg": "SM2",
        "kid": root.kid,
        "typ": "idcode-trust+jwt",
    }
    signature = b64url.decode(token.split(".")[2])
    assert len(signature) == 64  # r || s
    pinned = load_root_jwk({"keys": [gm_store.root_public_jwk()]}, GM)
    assert pinned_profile(pinned) is GM
    bundle = verify_bundle(token, pinned, GM)
    assert [key.kid for key in bundle.keys] == [key.kid for key in gm_store.published_keys(NOW)]
    assert {key.alg for key in bundle.keys} == {Algorithm.SM2}
    delta = StatusDelta(1, 2, 64, (3,), ())
    assert verify_delta(sign_delta(root, delta, NOW + 5), pinned, GM) == (delta, NOW + 5)


@pytest.mark.parametrize("part", [0, 1, 2])
def test_a_tampered_sm2_bundle_is_refused(gm_store: FileKeyStore, part: int) -> None:
    parts = _bundle(gm_store.root_key(), gm_store).split(".")
    raw = bytearray(b64url.decode(parts[part]))
    if part == 0:  # the header: same alg and kid, another typ spelling would fail earlier
        header = json.loads(raw)
        header["x"] = 1
        raw = bytearray(json.dumps(header).encode())
    else:
        raw[len(raw) // 2] ^= 1
    parts[part] = b64url.encode(bytes(raw))
    with pytest.raises(BundleError, match=r"does not verify with the pinned root key|strict JSON"):
        verify_bundle(".".join(parts), gm_store.root_public_jwk(), GM)


def test_an_sm2_bundle_signed_by_another_sm2_root_is_refused(
    gm_store: FileKeyStore, tmp_path: Path
) -> None:
    other = open_key_store(tmp_path / "other")
    initialise(other, NOW, 90, Algorithm.SM2, Algorithm.SM2)
    forged = RootKey(gm_store.root_key().kid, other.root_key().private_key)
    with pytest.raises(BundleError, match="does not verify with the pinned root key"):
        verify_bundle(_bundle(forged, gm_store), gm_store.root_public_jwk(), GM)


def test_a_standard_terminal_refuses_an_sm2_bundle_naming_the_algorithm(
    gm_store: FileKeyStore, standard_store: FileKeyStore
) -> None:
    token = _bundle(gm_store.root_key(), gm_store)
    with pytest.raises(
        BundleError, match="alg 'SM2', but the standard crypto profile accepts EdDSA only"
    ):
        verify_bundle(token, standard_store.root_public_jwk(), STANDARD)
    with pytest.raises(BundleError, match="alg 'SM2', but the standard"):
        verify_bundle(token, gm_store.root_public_jwk())  # the default profile is standard
    with pytest.raises(BundleError, match="public Ed25519 JWK"):
        load_root_jwk(gm_store.root_public_jwk(), STANDARD)


def test_a_gm_terminal_refuses_an_eddsa_bundle_naming_the_algorithm(
    gm_store: FileKeyStore, standard_store: FileKeyStore
) -> None:
    token = _bundle(standard_store.root_key(), standard_store)
    with pytest.raises(
        BundleError, match="alg 'EdDSA', but the gm crypto profile accepts SM2 only"
    ):
        verify_bundle(token, gm_store.root_public_jwk(), GM)
    delta = sign_delta(standard_store.root_key(), StatusDelta(1, 2, 64, (3,), ()), NOW)
    with pytest.raises(BundleError, match="alg 'EdDSA', but the gm"):
        verify_delta(delta, gm_store.root_public_jwk(), GM)
    with pytest.raises(BundleError, match="public SM2 JWK"):
        load_root_jwk(standard_store.root_public_jwk(), GM)


def test_an_sm2_signed_bundle_with_a_pinned_ed25519_root_under_gm_names_the_pinned_key(
    gm_store: FileKeyStore, standard_store: FileKeyStore
) -> None:
    token = _bundle(gm_store.root_key(), gm_store)
    with pytest.raises(BundleError, match="the pinned root key is EdDSA"):
        verify_bundle(token, standard_store.root_public_jwk(), GM)


def test_alg_sm2_is_known_only_to_the_sm2_instance() -> None:
    assert "SM2" not in jwt.algorithms.get_default_algorithms()
    with pytest.raises(NotImplementedError):
        jwt.api_jws.get_algorithm_by_name("SM2")
    with pytest.raises(NotImplementedError):
        RootJWT(Algorithm.EDDSA)._jws.get_algorithm_by_name("SM2")
    assert isinstance(RootJWT(Algorithm.SM2)._jws.get_algorithm_by_name("SM2"), SM2Algorithm)


def test_the_sm2_jws_algorithm_round_trips_its_jwk_and_refuses_other_keys() -> None:
    key = SM2PrivateKey.generate()
    jwk: dict[str, Any] = SM2Algorithm.to_jwk(key, as_dict=True)
    assert SM2Algorithm.from_jwk(json.dumps(jwk)).to_bytes() == key.public_key().to_bytes()
    algorithm = SM2Algorithm()
    signature = algorithm.sign(b"input", key)
    assert algorithm.verify(b"input", SM2Algorithm.from_jwk(jwk), signature)
    assert not algorithm.verify(b"inpuT", key.public_key(), signature)
    assert not algorithm.verify(b"input", key.public_key(), signature[:63])
    with pytest.raises(jwt.InvalidKeyError):
        algorithm.prepare_key("secret")
    with pytest.raises(jwt.InvalidKeyError):
        SM2Algorithm.from_jwk({**jwk, "d": jwk["x"]})


def test_a_service_refuses_a_root_of_the_other_profile_in_one_line(
    gm_store: FileKeyStore, standard_store: FileKeyStore
) -> None:
    GM.check_root_key(gm_store.root_public_jwk(), gm_store.location)
    STANDARD.check_root_key(standard_store.root_public_jwk(), standard_store.location)
    with pytest.raises(
        ConfigurationError, match="is SM2, but the standard crypto profile's root key is EdDSA"
    ):
        STANDARD.check_root_key(gm_store.root_public_jwk(), gm_store.location)
    with pytest.raises(
        ConfigurationError, match="is EdDSA, but the gm crypto profile's root key is SM2"
    ):
        GM.check_root_key(standard_store.root_public_jwk(), standard_store.location)


class _AdmitEveryCode(SceneAdapter):
    scene = "community"

    def decide_valid(self, scan: Scan, card: object, subject: str, history: object) -> Decision:
        return Decision.admit("entry")


def _independent_hmac_sm3(key: bytes, data: bytes) -> bytes:
    mac = crypto_hmac.HMAC(key, hashes.SM3())
    mac.update(data)
    return mac.finalize()


def test_a_gm_terminal_keys_its_subjects_with_hmac_sm3_from_its_bundle(
    gm_store: FileKeyStore,
) -> None:
    """The subject a GM terminal journals is HMAC-SM3 of the pseudonym (as the service keys the
    subjects it lists under gm), taken from the bundle's profile, not a setting of its own."""
    subject_key = bytes(range(32))
    token = sign_bundle(
        gm_store.root_key(),
        version=1,
        issued_at=NOW,
        max_age=3600,
        keys=gm_store.published_keys(NOW),
        status=StatusList(64),
        scene={
            "scene": "community",
            "site": "s",
            "version": 1,
            "data": {},
            "subject_key": encode_scene_key(subject_key),
        },
    )
    bundle = verify_bundle(token, gm_store.root_public_jwk(), GM)
    assert bundle.profile is GM
    card = random_card()
    code, _ = mint_code(card, gm_store.signing_key(NOW), prefix="HC1:", now=NOW)
    decider = Decider(
        bundle, _AdmitEveryCode, prefix="HC1:", replay=ReplayCache(), algorithms=[Algorithm.SM2]
    )

    scan, decision = decider.decide(code, NOW, MemoryHistory())

    assert decision.admitted, scan.verdict
    expected = _independent_hmac_sm3(subject_key, card.pseudonym)[:12].hex()
    assert scan.subject == expected == subject_of(subject_key, card.pseudonym, GM.hash_name)
    assert scan.subject != subject_of(subject_key, card.pseudonym)  # not HMAC-SHA256
    # What the service computes with the profile's keyed hash is the terminal's subject.
    assert GM.mac(subject_key, card.pseudonym)[:12].hex() == scan.subject
    assert STANDARD.mac(subject_key, card.pseudonym)[:12].hex() == subject_of(
        subject_key, card.pseudonym
    )
