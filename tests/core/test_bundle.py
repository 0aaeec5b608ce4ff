"""Trust bundles: only the pinned root key's bundles load; revocation, rotation and removal
reach the offline verifier through them; stale trust is reported before anything else."""

from __future__ import annotations

import json
import re
import zlib
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from idcode import b64url
from idcode.bundle import (
    BUNDLE_TYPE,
    DELTA_TYPE,
    TrustBundle,
    load_root_jwk,
    sign_bundle,
    verify_bundle,
    verify_delta,
)
from idcode.claims import CodeClaims
from idcode.cose import Algorithm
from idcode.errors import BundleError
from idcode.issuer import mint_code
from idcode.keys import PublicKey
from idcode.keystore import FileKeyStore, RootKey, initialise, open_key_store, rotate
from idcode.reasons import Reason
from idcode.replay import ReplayCache
from idcode.scenes import encode_scene_key
from idcode.statuslist import StatusDelta, StatusList
from idcode.testing import random_card
from idcode.verifier import verify
from tests.conftest import NOW

PREFIX = "WH1:"


@pytest.fixture
def store(tmp_path: Path) -> FileKeyStore:
    store = open_key_store(tmp_path / "keys")
    initialise(store, NOW, 90)
    return store


def bundle_for(
    root: RootKey,
    keys: list[PublicKey],
    status: StatusList | None = None,
    *,
    at: int = NOW,
    max_age: int = 3600,
) -> str:
    return sign_bundle(
        root,
        version=at,
        issued_at=at,
        max_age=max_age,
        keys=keys,
        status=status or StatusList(1024),
    )


def synced(store: FileKeyStore, token: str) -> TrustBundle:
    """What a terminal holds after syncing ``token``, with the root key pinned."""
    return verify_bundle(token, store.root_public_jwk())


def test_a_revoked_cards_fresh_code_is_denied_after_the_next_sync(store: FileKeyStore) -> None:
    card = random_card(status_index=42)
    code, _ = mint_code(card, store.signing_key(NOW), prefix=PREFIX, now=NOW)
    before = synced(store, bundle_for(store.root_key(), store.published_keys(NOW)))
    assert verify(code, before.trust(prefix=PREFIX), NOW).valid

    revoked = StatusList(1024)
    revoked.set(42, True)
    after = synced(store, bundle_for(store.root_key(), store.published_keys(NOW), revoked))
    fresh, _ = mint_code(card, store.signing_key(NOW + 5), prefix=PREFIX, now=NOW + 5)
    assert verify(fresh, after.trust(prefix=PREFIX), NOW + 5).reason is Reason.REVOKED


def test_a_full_rotation_verifies_codes_from_before_during_and_after_it(
    store: FileKeyStore,
) -> None:
    old_signer = store.signing_key(NOW)
    before, _ = mint_code(random_card(), old_signer, prefix=PREFIX, now=NOW)
    # Publish the next key ten minutes ahead; terminals sync in between.
    new_key = rotate(store, NOW + 60, 90, starts_in=600)
    during, _ = mint_code(random_card(), store.signing_key(NOW + 120), prefix=PREFIX, now=NOW + 120)
    assert store.signing_key(NOW + 120).kid == old_signer.kid
    trust = synced(
        store, bundle_for(store.root_key(), store.published_keys(NOW + 120), at=NOW + 120)
    ).trust(prefix=PREFIX)
    assert {key.kid for key in store.published_keys(NOW + 120)} == {old_signer.kid, new_key.kid}
    after_switch = NOW + 700
    after, _ = mint_code(
        random_card(), store.signing_key(after_switch), prefix=PREFIX, now=after_switch
    )
    assert store.signing_key(after_switch).kid == new_key.kid
    assert verify(before, trust, NOW + 30).valid
    assert verify(during, trust, NOW + 150).valid
    assert verify(after, trust, after_switch).valid  # trusted before it signed anything
    # A code the old key "signs" after its period ended is refused, even with the key trusted.
    forged = CodeClaims(after_switch, after_switch + 60, bytes(8), random_card())
    from idcode.issuer import sign_code

    assert verify(sign_code(forged, old_signer, PREFIX), trust, after_switch).reason is (
        Reason.UNKNOWN_KEY
    )


def test_a_key_removed_in_an_emergency_stops_verifying_after_the_sync(
    store: FileKeyStore,
) -> None:
    compromised = store.signing_key(NOW)
    code, _ = mint_code(random_card(), compromised, prefix=PREFIX, now=NOW)
    rotate(store, NOW, 90)
    without_it = [key for key in store.published_keys(NOW) if key.kid != compromised.kid]
    trust = synced(store, bundle_for(store.root_key(), without_it)).trust(prefix=PREFIX)
    assert verify(code, trust, NOW + 1).reason is Reason.UNKNOWN_KEY


def test_a_bundle_signed_by_any_other_key_is_refused(store: FileKeyStore, tmp_path: Path) -> None:
    other = open_key_store(tmp_path / "other")
    initialise(other, NOW, 90)
    with pytest.raises(BundleError, match="another key"):
        synced(store, bundle_for(other.root_key(), store.published_keys(NOW)))
    # The same kid on another key: the signature gives it away.
    impostor = RootKey(store.root_key().kid, other.root_key().private_key)
    with pytest.raises(BundleError, match="does not verify"):
        synced(store, bundle_for(impostor, store.published_keys(NOW)))


def test_a_bundle_changed_by_one_byte_is_refused(store: FileKeyStore) -> None:
    token = bundle_for(store.root_key(), store.published_keys(NOW))
    for position in (10, len(token) // 2, len(token) - 5):
        changed = (
            token[:position] + ("A" if token[position] != "A" else "B") + token[position + 1 :]
        )
        with pytest.raises(BundleError):
            synced(store, changed)


def test_a_stale_bundle_denies_with_stale_trust_unless_the_scene_allows_it(
    store: FileKeyStore,
) -> None:
    bundle = synced(store, bundle_for(store.root_key(), store.published_keys(NOW), max_age=600))
    code, _ = mint_code(random_card(), store.signing_key(NOW + 600), prefix=PREFIX, now=NOW + 600)
    replay = ReplayCache()
    assert verify(code, bundle.trust(prefix=PREFIX), NOW + 599).valid
    stale = verify(code, bundle.trust(prefix=PREFIX), NOW + 600, replay)
    assert stale.reason is Reason.STALE_TRUST
    assert len(replay) == 0
    assert verify("garbage", bundle.trust(prefix=PREFIX), NOW + 600).reason is Reason.STALE_TRUST
    lenient = verify(code, bundle.trust(prefix=PREFIX, allow_stale=True), NOW + 601)
    assert lenient.valid
    assert "stale" in lenient.detail


def test_the_terminal_measures_its_clock_drift_against_the_bundle(store: FileKeyStore) -> None:
    bundle = synced(store, bundle_for(store.root_key(), store.published_keys(NOW)))
    assert bundle.clock_drift(NOW + 95) == 95
    assert bundle.clock_drift(NOW - 20) == -20


@pytest.mark.parametrize(
    "root",
    [
        {"keys": []},
        {"kty": "OKP", "crv": "Ed448", "x": "AA"},
        {"kty": "OKP", "crv": "Ed25519", "x": "AA", "d": "AA"},
    ],
    ids=["empty-set", "not-ed25519", "private"],
)
def test_a_root_key_must_be_one_public_ed25519_key(root: dict[str, object]) -> None:
    with pytest.raises(BundleError):
        load_root_jwk(root)


def test_bundle_algorithms_are_the_verifiers_choice(store: FileKeyStore) -> None:
    bundle = synced(store, bundle_for(store.root_key(), store.published_keys(NOW)))
    code, _ = mint_code(random_card(), store.signing_key(NOW), prefix=PREFIX, now=NOW)
    trust = bundle.trust(prefix=PREFIX, algorithms=[Algorithm.ES256])
    assert verify(code, trust, NOW).reason is Reason.UNSUPPORTED_ALG


def test_only_a_delta_from_the_bundles_own_version_applies(store: FileKeyStore) -> None:
    bundle = synced(store, bundle_for(store.root_key(), store.published_keys(NOW)))
    revoked = bundle.status.copy()
    revoked.set(5, True)
    later = StatusDelta.between(bundle.status, revoked, bundle.version, bundle.version + 2)
    assert bundle.apply_delta(later, NOW + 60).status.is_invalid(5)
    # An old delta (from an earlier version), replayed, cannot undo the revocation.
    old = StatusDelta(bundle.version - 1, bundle.version + 1, 1024, (), (5,))
    with pytest.raises(BundleError, match="from version"):
        bundle.apply_delta(later, NOW + 60).apply_delta(old, NOW + 120)


def test_a_terminal_never_switches_to_an_older_bundle(store: FileKeyStore) -> None:
    older = synced(store, bundle_for(store.root_key(), store.published_keys(NOW), at=NOW))
    newer = synced(store, bundle_for(store.root_key(), store.published_keys(NOW), at=NOW + 60))
    assert older.superseded_by(newer)
    assert not newer.superseded_by(older)


def test_signed_deltas_verify_only_with_the_pinned_root_key(
    store: FileKeyStore, tmp_path: Path
) -> None:
    import jwt

    delta = StatusDelta(1, 2, 16, (3,), ())
    root = store.root_key()
    token = jwt.encode(
        {"iss": "idcode", "iat": NOW, "delta": delta.to_json()},
        _ed25519(root.private_key),
        algorithm="EdDSA",
        headers={"kid": root.kid, "typ": DELTA_TYPE},
    )
    assert verify_delta(token, store.root_public_jwk()) == (delta, NOW)
    other = open_key_store(tmp_path / "other")
    initialise(other, NOW, 90)
    forged = jwt.encode(
        {"iss": "idcode", "iat": NOW, "delta": delta.to_json()},
        _ed25519(other.root_key().private_key),
        algorithm="EdDSA",
        headers={"kid": root.kid, "typ": DELTA_TYPE},
    )
    with pytest.raises(BundleError):
        verify_delta(forged, store.root_public_jwk())


# -- strict parsing of what the root key signed (outside review, finding 8c) -------------------
#
# Each case is signed with the real root key, so the signature is valid: only the parser can
# refuse it, and it must, with a reason naming what is wrong.


def root_signed(store: FileKeyStore, payload: bytes | dict[str, Any], typ: str) -> str:
    """A JWS of ``typ`` over ``payload`` (bytes as they are, or a dict as JSON) that the
    pinned root key signed."""
    root = store.root_key()
    raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return jwt.api_jws.encode(
        raw, _ed25519(root.private_key), algorithm="EdDSA", headers={"kid": root.kid, "typ": typ}
    )


def bundle_claims(store: FileKeyStore) -> dict[str, Any]:
    """The claims of a strict bundle with a scene block, as the service signs them."""
    token = sign_bundle(
        store.root_key(),
        version=7,
        issued_at=NOW,
        max_age=3600,
        keys=store.published_keys(NOW),
        status=StatusList(1024),
        scene={
            "scene": "parking",
            "site": "lot-1",
            "version": 3,
            "data": {"unit_fee": 200},
            "subject_key": encode_scene_key(bytes(32)),
        },
    )
    claims: dict[str, Any] = jwt.decode(token, options={"verify_signature": False})
    return claims


def changed(claims: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """``claims`` (deep-copied) with the member at ``path`` ("status.bits") set to ``value``."""
    copy: dict[str, Any] = json.loads(json.dumps(claims))
    *parents, last = path.split(".")
    target = copy
    for name in parents:
        target = target[name]
    target[last] = value
    return copy


def test_the_strict_reference_bundle_verifies(store: FileKeyStore) -> None:
    """Guards the cases below: each differs from this bundle in one way only."""
    bundle = synced(store, root_signed(store, bundle_claims(store), BUNDLE_TYPE))
    assert bundle.scene["site"] == "lot-1"


LST_OF_1024 = StatusList(1024).to_json()["lst"]
PARTY = "1b4e28ba-2fa1-41d2-883f-0016d3cca427"  # a relying party's id, as the service makes one


def test_a_relying_partys_terminal_learns_its_party_from_the_scene_block(
    store: FileKeyStore,
) -> None:
    claims = changed(bundle_claims(store), "scene.relying_party", PARTY)
    bundle = synced(store, root_signed(store, claims, BUNDLE_TYPE))
    assert bundle.relying_party == PARTY
    assert bundle.scene["relying_party"] == PARTY
    scene_terminal = synced(store, root_signed(store, bundle_claims(store), BUNDLE_TYPE))
    assert scene_terminal.relying_party is None


@pytest.mark.parametrize(
    ("path", "value", "reason"),
    [
        ("status.bits", True, "bits"),
        ("status.bits", 1.0, "bits"),
        ("status.size", 1024.0, "size must be an integer"),
        ("status.lst", LST_OF_1024 + "!!", "allows only"),
        ("status.lst", LST_OF_1024[:5] + "\n" + LST_OF_1024[5:], "allows only"),
        ("status.lst", LST_OF_1024 + "=" * (-len(LST_OF_1024) % 4 or 4), "allows only"),
        (
            "status.lst",
            b64url.encode(zlib.compress(bytes(128), 9) + b"trailing"),
            "after the end of its ZLIB stream",
        ),
        ("status.extra", 1, "unknown members"),
        ("ver", True, "ver, iat and max_age must be non-negative integers"),
        ("max_age", 3600.0, "ver, iat and max_age must be non-negative integers"),
        ("iat", True, "iat must be a non-negative integer"),
        ("iat", float(NOW), "iat must be a non-negative integer"),
        ("scene.version", True, "scene.version"),
        ("scene.data", [], "scene.data must be an object"),
        ("scene.site", "lot 1", "scene.site"),
        ("scene.subject_key", "AAAA" * 10 + "AAA=", "scene.subject_key"),
        ("scene.subject_key", "AAAA" * 10 + "AA!A", "scene.subject_key"),
        ("scene.owner", "x", "scene must have exactly the members"),
        ("scene.relying_party", "hospital-1", "scene.relying_party"),
        ("scene.relying_party", PARTY.upper(), "scene.relying_party"),
        ("scene.relying_party", PARTY + "\n", "scene.relying_party"),
        ("scene.relying_party", None, "scene.relying_party"),
        ("scene.relying_party", [PARTY], "scene.relying_party"),
    ],
)
def test_a_lenient_bundle_signed_by_the_root_key_is_refused_with_a_precise_reason(
    store: FileKeyStore, path: str, value: Any, reason: str
) -> None:
    token = root_signed(store, changed(bundle_claims(store), path, value), BUNDLE_TYPE)
    with pytest.raises(BundleError, match=re.escape(reason)):
        synced(store, token)


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b'{"ver": 1, "ver": 2}', "a member appears twice"),
        (b'{"iat": NaN}', "NaN is not JSON"),
        (b'{"iat": Infinity}', "Infinity is not JSON"),
        (b'{"note": "\\ud800"}', "unpaired surrogate"),
    ],
    ids=["duplicate-member", "nan", "infinity", "lone-surrogate"],
)
def test_a_bundle_payload_that_is_not_strict_json_is_refused(
    store: FileKeyStore, payload: bytes, reason: str
) -> None:
    claims = json.dumps(bundle_claims(store)).encode()
    # The hostile member is added inside the (valid) bundle's object.
    hostile = claims[:-1] + b", " + payload[1:]
    with pytest.raises(BundleError, match=reason):
        synced(store, root_signed(store, hostile, BUNDLE_TYPE))


@pytest.mark.parametrize("junk", ["!", "=", " ", "\n", "AAA"])
def test_a_bundle_whose_signature_has_junk_characters_is_refused(
    store: FileKeyStore, junk: str
) -> None:
    """pyjwt's decoder drops characters outside the alphabet: the same signature in many
    texts. Only the canonical text is accepted."""
    token = root_signed(store, bundle_claims(store), BUNDLE_TYPE)
    synced(store, token)
    with pytest.raises(BundleError, match="JWS signature"):
        synced(store, token + junk)


def test_a_bundle_whose_signature_text_is_not_canonical_is_refused(store: FileKeyStore) -> None:
    token = root_signed(store, bundle_claims(store), BUNDLE_TYPE)
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    # 64 bytes are 86 characters; the last carries 4 unused bits.
    altered = token[:-1] + alphabet[alphabet.index(token[-1]) + 1]
    with pytest.raises(BundleError, match="not canonical"):
        synced(store, altered)


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"iat": True}, "iat must be a non-negative integer"),
        ({"delta.base": True}, "integers"),
        ({"delta.invalidated": "!"}, "allows only"),
        (
            {"delta.invalidated": b64url.encode(zlib.compress(bytes([4])) + b"x")},
            "after the end of its ZLIB stream",
        ),
        ({"delta.extra": 0}, "unknown members"),
    ],
)
def test_a_lenient_delta_signed_by_the_root_key_is_refused_with_a_precise_reason(
    store: FileKeyStore, changes: dict[str, Any], reason: str
) -> None:
    claims: dict[str, Any] = {
        "iss": "idcode",
        "iat": NOW,
        "delta": StatusDelta(1, 2, 16, (3,), ()).to_json(),
    }
    for path, value in changes.items():
        claims = changed(claims, path, value)
    with pytest.raises(BundleError, match=re.escape(reason)):
        verify_delta(root_signed(store, claims, DELTA_TYPE), store.root_public_jwk())


def _ed25519(key: object) -> Ed25519PrivateKey:
    """A root key of the standard profile, as pyjwt takes it."""
    assert isinstance(key, Ed25519PrivateKey)
    return key
