"""The key store on a PKCS#11 token (SoftHSM2): keys made and used on the token, codes and
trust bundles it signs verified offline, rotation, removal, and what it refuses."""

from __future__ import annotations

import base64

import pkcs11
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pkcs11 import Attribute, KeyType, Mechanism, MechanismFlag, ObjectClass
from pkcs11.util.ec import encode_named_curve_parameters

from idcode.bundle import sign_bundle, verify_bundle
from idcode.cose import Algorithm
from idcode.errors import BundleError, KeyStoreError
from idcode.issuer import mint_code
from idcode.keystore import RETAIN_AFTER_SIGNING, initialise, rotate
from idcode.pkcs11store import MANIFEST_LABEL, ROOT_LABEL, TokenKeyStore, open_token_key_store
from idcode.statuslist import StatusList
from idcode.testing import random_card
from idcode.verifier import Trust, verify
from tests.pkcs11.conftest import SoftHsm
from tests.pkcs11.softhsm import needs_softhsm

pytestmark = needs_softhsm

NOW = 1_796_112_000
DAYS = 90
PREFIX = "WH1:"
BOTH = [Algorithm.EDDSA, Algorithm.ES256]


def objects(store: TokenKeyStore, **attributes: object) -> list[pkcs11.Object]:
    template = {Attribute[name.upper().rstrip("_")]: value for name, value in attributes.items()}
    return store._token.call("test", lambda s: list(s.get_objects(template)))


def verdict_of(store: TokenKeyStore, code: str, now: int) -> str:
    trust = Trust.of(store.published_keys(now), prefix=PREFIX, algorithms=BOTH)
    return verify(code, trust, now).reason.value


@pytest.mark.parametrize("alg", BOTH, ids=lambda a: a.jose_name)
def test_a_code_signed_on_the_token_verifies_offline_with_the_published_key(
    store: TokenKeyStore, alg: Algorithm
) -> None:
    created = initialise(store, NOW, DAYS, alg)

    assert [line.split()[0:2] for line in created] == [["root", "key"], ["issuer", "key"]]
    signer = store.signing_key(NOW)
    assert signer.alg is alg
    code, _ = mint_code(random_card(), signer, prefix=PREFIX, now=NOW)
    assert verdict_of(store, code, NOW) == "ok"
    # A code is 64 bytes of raw signature: r || s for ES256, as COSE wants it.
    assert len(signer.sign(b"message")) == 64
    assert signer.public.verify(signer.sign(b"message"), b"message")


def test_private_keys_are_generated_on_the_token_and_cannot_be_read_off_it(
    store: TokenKeyStore,
) -> None:
    initialise(store, NOW, DAYS)

    private_keys = objects(store, class_=ObjectClass.PRIVATE_KEY)
    assert sorted(str(key[Attribute.LABEL]) for key in private_keys) == sorted(
        [ROOT_LABEL, f"idcode-issuer-{store.issuer_keys()[0].kid}"]
    )
    for key in private_keys:
        assert key[Attribute.SENSITIVE] and key[Attribute.NEVER_EXTRACTABLE]
        assert not key[Attribute.EXTRACTABLE]
        with pytest.raises(pkcs11.exceptions.AttributeSensitive):
            key[Attribute.VALUE]
    with pytest.raises(KeyStoreError, match="never leaves it"):
        root = store.root_key().private_key
        assert isinstance(root, Ed25519PrivateKey)
        root.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )


def test_a_trust_bundle_signed_by_the_token_root_verifies_with_the_pinned_root_key(
    store: TokenKeyStore,
) -> None:
    initialise(store, NOW, DAYS)
    status = StatusList(1024)
    status.set(7, True)

    token = sign_bundle(
        store.root_key(),
        version=NOW,
        issued_at=NOW,
        max_age=3600,
        keys=store.published_keys(NOW),
        status=status,
    )

    bundle = verify_bundle(token, store.root_public_jwk())
    code, _ = mint_code(random_card(status_index=7), store.signing_key(NOW), prefix=PREFIX, now=NOW)
    trust = bundle.trust(prefix=PREFIX, algorithms=[Algorithm.EDDSA])
    assert verify(code, trust, NOW).reason.value == "revoked"
    another_root = Ed25519PrivateKey.generate().public_key()
    raw = another_root.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    forged = {
        **store.root_public_jwk(),
        "x": base64.urlsafe_b64encode(raw).rstrip(b"=").decode(),
    }
    with pytest.raises(BundleError):
        verify_bundle(token, forged)


def test_rotation_switches_signing_and_keeps_the_old_key_published_for_its_codes(
    store: TokenKeyStore, softhsm: SoftHsm
) -> None:
    initialise(store, NOW, DAYS)
    old = store.signing_key(NOW)
    old_code, _ = mint_code(random_card(), old, prefix=PREFIX, now=NOW)

    new = rotate(store, NOW + 60, DAYS, Algorithm.ES256, starts_in=0)

    assert store.signing_key(NOW + 60).kid == new.kid != old.kid
    # The periods are on the token: a store opened anew reads the same.
    reopened = open_token_key_store(softhsm.settings)
    periods = {key.kid: (key.not_before, key.not_after) for key in reopened.issuer_keys()}
    assert periods == {old.kid: (NOW, NOW + 60), new.kid: (NOW + 60, NOW + 60 + DAYS * 86_400)}
    assert verdict_of(reopened, old_code, NOW + 30) == "ok"
    later = NOW + 60 + RETAIN_AFTER_SIGNING + 1
    assert [key.kid for key in reopened.published_keys(later)] == [new.kid]


def test_a_removed_key_is_unpublished_its_private_half_destroyed_and_its_kid_kept(
    store: TokenKeyStore,
) -> None:
    initialise(store, NOW, DAYS)
    kid = store.signing_key(NOW).kid
    code, _ = mint_code(random_card(), store.signing_key(NOW), prefix=PREFIX, now=NOW)

    store.remove_issuer_key(kid, NOW + 5)

    assert store.issuer_keys() == []
    assert verdict_of(store, code, NOW + 5) == "unknown_key"
    assert store.manifest().removed == {kid: NOW + 5}
    assert objects(store, label=f"idcode-issuer-{kid}") == []
    kept = objects(store, label=f"idcode-removed-{NOW + 5}-issuer-{kid}")
    assert [obj.object_class for obj in kept] == [ObjectClass.PUBLIC_KEY]
    with pytest.raises(KeyStoreError, match="may sign now"):
        store.signing_key(NOW + 5)


def test_a_private_key_imported_under_an_issuer_label_never_signs(store: TokenKeyStore) -> None:
    initialise(store, NOW, DAYS)
    kid = store.signing_key(NOW).kid
    label = f"idcode-issuer-{kid}"
    for key in objects(store, label=label, class_=ObjectClass.PRIVATE_KEY):
        key.destroy()
    raw = Ed25519PrivateKey.generate().private_bytes_raw()
    store._token.call(
        "importing a key",
        lambda s: s.create_object(
            {
                Attribute.CLASS: ObjectClass.PRIVATE_KEY,
                Attribute.KEY_TYPE: KeyType.EC_EDWARDS,
                Attribute.TOKEN: True,
                Attribute.PRIVATE: True,
                Attribute.SENSITIVE: True,
                Attribute.SIGN: True,
                Attribute.LABEL: label,
                Attribute.EC_PARAMS: encode_named_curve_parameters("1.3.101.112"),
                Attribute.VALUE: raw,
            }
        ),
    )

    with pytest.raises(KeyStoreError, match="extractable or not sensitive"):
        open_token_key_store_fresh(store).signing_key(NOW)


def test_a_key_pair_generated_again_under_a_listed_label_is_refused(store: TokenKeyStore) -> None:
    initialise(store, NOW, DAYS)
    label = f"idcode-issuer-{store.signing_key(NOW).kid}"
    for key in objects(store, label=label, class_=ObjectClass.PRIVATE_KEY):
        key.destroy()
    store._token.call(
        "generating a key",
        lambda s: s.generate_keypair(
            KeyType.EC_EDWARDS,
            mechanism=Mechanism.EC_EDWARDS_KEY_PAIR_GEN,
            store=True,
            label=label,
            capabilities=MechanismFlag.SIGN | MechanismFlag.VERIFY,
            public_template={Attribute.EC_PARAMS: encode_named_curve_parameters("1.3.101.112")},
            private_template={Attribute.SENSITIVE: True, Attribute.EXTRACTABLE: False},
        ),
    )

    with pytest.raises(KeyStoreError, match="not the private half"):
        open_token_key_store_fresh(store).signing_key(NOW)


def test_an_issuer_key_the_manifest_does_not_list_is_not_published(store: TokenKeyStore) -> None:
    initialise(store, NOW, DAYS)
    listed = [key.kid for key in store.issuer_keys()]
    store._token.call(
        "planting a key",
        lambda s: s.generate_keypair(
            KeyType.EC_EDWARDS,
            mechanism=Mechanism.EC_EDWARDS_KEY_PAIR_GEN,
            store=True,
            label="idcode-issuer-Z" if listed != ["Z"] else "idcode-issuer-Y",
            public_template={Attribute.EC_PARAMS: encode_named_curve_parameters("1.3.101.112")},
        ),
    )

    assert [key.kid for key in open_token_key_store_fresh(store).issuer_keys()] == listed


def test_a_manifest_that_does_not_verify_with_the_root_key_is_refused(
    store: TokenKeyStore,
) -> None:
    initialise(store, NOW, DAYS)
    store._token.call(
        "planting a manifest",
        lambda s: s.create_object(
            {
                Attribute.CLASS: ObjectClass.DATA,
                Attribute.TOKEN: True,
                Attribute.PRIVATE: True,
                Attribute.LABEL: MANIFEST_LABEL,
                Attribute.VALUE: b"eyJhbGciOiJub25lIn0.e30.",
            }
        ),
    )

    with pytest.raises(KeyStoreError, match="does not verify with the root key"):
        open_token_key_store_fresh(store).issuer_keys()


def test_a_signer_goes_on_signing_after_the_token_session_is_lost(store: TokenKeyStore) -> None:
    initialise(store, NOW, DAYS)
    signer = store.signing_key(NOW)
    root = store.root_key()
    session = store._token.session()
    session.close()  # as a token restart would: the login is gone with the last session

    assert signer.public.verify(signer.sign(b"after"), b"after")
    assert len(root.private_key.sign(b"after")) == 64


def open_token_key_store_fresh(store: TokenKeyStore) -> TokenKeyStore:
    """Another store object on the same token: it reads everything from the token again."""
    return TokenKeyStore(store._token)


def test_an_sm2_issuer_key_is_refused_on_a_token_and_nothing_is_made(
    store: TokenKeyStore,
) -> None:
    """PKCS#11 defines no SM2 mechanism (the GM profile's keys stay in a key directory)."""
    initialise(store, NOW, DAYS)
    before = {public.kid for public in store.issuer_keys()}
    with pytest.raises(KeyStoreError, match="SM2 keys cannot live on a PKCS#11 token"):
        rotate(store, NOW + 60, DAYS, Algorithm.SM2, starts_in=0)
    assert {public.kid for public in store.issuer_keys()} == before
    assert store.signing_key(NOW + 60).alg is Algorithm.EDDSA


def test_an_sm2_root_key_is_refused_on_a_token_and_nothing_is_made(
    store: TokenKeyStore,
) -> None:
    """The GM profile's root key is SM2: a token refuses it as it refuses SM2 issuer keys."""
    with pytest.raises(KeyStoreError, match="SM2 root key cannot live on a PKCS#11 token"):
        initialise(store, NOW, DAYS, Algorithm.SM2, Algorithm.SM2)
    assert not store.has_root_key()
    assert store.issuer_keys() == []
