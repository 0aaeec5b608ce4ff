"""The file key store: creation, permissions, passphrases, key ids, rotation and JWKS export."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from idcode.codetext import prefix_for
from idcode.cose import Algorithm
from idcode.errors import KeyStoreError
from idcode.issuer import MAX_TTL, mint_code
from idcode.keys import KID_ALPHABET, PublicKey, Signer, jwks, keys_from_jwks
from idcode.keystore import (
    RETAIN_AFTER_SIGNING,
    FileKeyStore,
    initialise,
    open_key_store,
    rotate,
)
from idcode.reasons import Reason
from idcode.testing import random_card
from idcode.verifier import Trust, Verdict, verify

NOW = 1_800_000_000  # a fixed clock: the key store takes time as an argument
DAY = 86_400
PREFIX = prefix_for()


@pytest.fixture
def keys_dir(tmp_path: Path) -> Path:
    return tmp_path / "keys"  # does not exist yet: the store creates it


@pytest.fixture
def store(keys_dir: Path) -> FileKeyStore:
    return open_key_store(keys_dir)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _mint(signer: Signer, at: int, ttl: int = 60) -> str:
    code, _ = mint_code(random_card(), signer, prefix=PREFIX, now=at, ttl=ttl)
    return code


def _verify(
    code: str,
    keys: list[PublicKey],
    at: int,
    algorithms: tuple[Algorithm, ...] = (Algorithm.EDDSA,),
    clock_skew: int = 30,
) -> Verdict:
    trust = Trust.of(keys, prefix=PREFIX, algorithms=algorithms, clock_skew=clock_skew)
    return verify(code, trust, at)


def _kids(keys: list[PublicKey]) -> set[str]:
    return {key.kid for key in keys}


# -- first use ---------------------------------------------------------------------------


def test_first_use_creates_the_directory_with_mode_0700(
    store: FileKeyStore, keys_dir: Path
) -> None:
    initialise(store, NOW, 90)

    assert keys_dir.is_dir()
    assert _mode(keys_dir) == 0o700


def test_first_use_creates_a_root_key_and_one_issuer_key(
    store: FileKeyStore, keys_dir: Path
) -> None:
    created = initialise(store, NOW, 90)

    assert len(created) == 2
    assert created[0].startswith("root key root-")
    assert created[1].startswith("issuer key ")
    assert store.root_key().kid.startswith("root-")
    issuer_keys = store.issuer_keys()
    assert len(issuer_keys) == 1
    assert issuer_keys[0].not_before == NOW
    assert issuer_keys[0].not_after == NOW + 90 * DAY
    assert store.signing_key(NOW).kid == issuer_keys[0].kid
    assert sorted(p.name for p in keys_dir.iterdir()) == sorted(
        [
            ".lock",  # held while creating keys, so replicas starting together agree
            "root.pem",
            "root.json",
            f"issuer-{ord(issuer_keys[0].kid):02x}.pem",
            f"issuer-{ord(issuer_keys[0].kid):02x}.json",
        ]
    )


def test_private_key_files_are_created_with_mode_0600(store: FileKeyStore, keys_dir: Path) -> None:
    initialise(store, NOW, 90)

    pem_files = sorted(keys_dir.glob("*.pem"))
    assert len(pem_files) == 2
    for path in pem_files:
        assert _mode(path) == 0o600, path.name


def test_initialise_a_second_time_creates_nothing(store: FileKeyStore, keys_dir: Path) -> None:
    initialise(store, NOW, 90)
    before = {path.name: path.read_bytes() for path in keys_dir.iterdir()}

    created = initialise(store, NOW + 60, 90)

    assert created == []
    assert {path.name: path.read_bytes() for path in keys_dir.iterdir()} == before


def test_initialise_adds_an_issuer_key_but_no_root_when_no_key_signs_any_more(
    store: FileKeyStore,
) -> None:
    initialise(store, NOW, 1)
    root_kid = store.root_key().kid

    created = initialise(store, NOW + 2 * DAY, 1)

    assert len(created) == 1
    assert created[0].startswith("issuer key ")
    assert store.root_key().kid == root_kid
    assert len(store.issuer_keys()) == 2


# -- passphrases and permissions -----------------------------------------------------------


def test_with_a_passphrase_private_key_files_are_encrypted(keys_dir: Path) -> None:
    initialise(open_key_store(keys_dir, "correct horse"), NOW, 90)

    pem_files = sorted(keys_dir.glob("*.pem"))
    assert len(pem_files) == 2
    for path in pem_files:
        assert b"ENCRYPTED" in path.read_bytes(), path.name


def test_encrypted_keys_load_and_sign_with_the_right_passphrase(keys_dir: Path) -> None:
    store = open_key_store(keys_dir, "correct horse")
    initialise(store, NOW, 90)

    reopened = open_key_store(keys_dir, "correct horse")
    code = _mint(reopened.signing_key(NOW), NOW)

    assert reopened.root_key().kid == store.root_key().kid
    assert _verify(code, reopened.published_keys(NOW), NOW).reason is Reason.OK


def test_encrypted_key_with_a_wrong_passphrase_is_refused_with_a_clear_message(
    keys_dir: Path,
) -> None:
    initialise(open_key_store(keys_dir, "correct horse"), NOW, 90)

    with pytest.raises(KeyStoreError, match="wrong passphrase"):
        open_key_store(keys_dir, "battery staple").signing_key(NOW)
    with pytest.raises(KeyStoreError, match="wrong passphrase"):
        open_key_store(keys_dir, "battery staple").root_key()


def test_encrypted_key_without_a_passphrase_asks_for_idcode_key_passphrase(
    keys_dir: Path,
) -> None:
    initialise(open_key_store(keys_dir, "correct horse"), NOW, 90)

    with pytest.raises(KeyStoreError, match="encrypted; set IDCODE_KEY_PASSPHRASE"):
        open_key_store(keys_dir).signing_key(NOW)


def test_an_empty_passphrase_is_refused_rather_than_writing_keys_in_the_clear(
    keys_dir: Path,
) -> None:
    with pytest.raises(KeyStoreError, match="set but empty"):
        open_key_store(keys_dir, "")


def test_unencrypted_key_opened_with_a_passphrase_is_refused_with_a_clear_message(
    store: FileKeyStore, keys_dir: Path
) -> None:
    initialise(store, NOW, 90)

    with pytest.raises(KeyStoreError, match="not encrypted but a passphrase was given"):
        open_key_store(keys_dir, "correct horse").signing_key(NOW)


def test_public_keys_are_readable_without_the_passphrase(keys_dir: Path) -> None:
    store = open_key_store(keys_dir, "correct horse")
    initialise(store, NOW, 90)

    assert _kids(open_key_store(keys_dir).published_keys(NOW)) == _kids(store.issuer_keys())


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644])
def test_issuer_key_file_readable_by_others_is_refused_with_a_chmod_600_hint(
    store: FileKeyStore, keys_dir: Path, mode: int
) -> None:
    initialise(store, NOW, 90)
    (issuer_pem,) = keys_dir.glob("issuer-*.pem")
    issuer_pem.chmod(mode)

    with pytest.raises(KeyStoreError, match="chmod 600") as excinfo:
        store.signing_key(NOW)
    assert str(issuer_pem) in str(excinfo.value)


def test_root_key_file_readable_by_others_is_refused_with_a_chmod_600_hint(
    store: FileKeyStore, keys_dir: Path
) -> None:
    initialise(store, NOW, 90)
    (keys_dir / "root.pem").chmod(0o644)

    with pytest.raises(KeyStoreError, match="chmod 600"):
        store.root_key()


def test_missing_private_key_file_is_a_key_store_error(store: FileKeyStore, keys_dir: Path) -> None:
    initialise(store, NOW, 90)
    (issuer_pem,) = keys_dir.glob("issuer-*.pem")
    issuer_pem.unlink()

    with pytest.raises(KeyStoreError, match="cannot read"):
        store.signing_key(NOW)


# -- key ids ---------------------------------------------------------------------------------


def test_kids_are_single_ascii_letters_or_digits_distinct_across_all_keys(
    store: FileKeyStore,
) -> None:
    for _ in KID_ALPHABET:
        store.create_issuer_key(Algorithm.EDDSA, NOW, NOW + DAY)

    kids = [key.kid for key in store.issuer_keys()]
    assert len(kids) == len(KID_ALPHABET) == 62
    assert set(kids) == set(KID_ALPHABET)
    for kid in kids:
        assert len(kid) == 1
        assert kid.isascii()
        assert kid.isalnum()


def test_creating_a_key_when_every_kid_is_taken_says_to_delete_retired_keys(
    store: FileKeyStore,
) -> None:
    for _ in KID_ALPHABET:
        store.create_issuer_key(Algorithm.EDDSA, NOW, NOW + DAY)

    with pytest.raises(KeyStoreError, match="delete retired issuer keys"):
        store.create_issuer_key(Algorithm.EDDSA, NOW, NOW + DAY)


def test_key_file_names_use_the_hex_kid_so_lower_and_upper_case_kids_cannot_collide(
    store: FileKeyStore, keys_dir: Path
) -> None:
    for _ in KID_ALPHABET:
        store.create_issuer_key(Algorithm.EDDSA, NOW, NOW + DAY)

    names = [path.name for path in keys_dir.glob("issuer-*")]
    assert len(names) == 2 * len(KID_ALPHABET)
    # On a case-insensitive file system these names would still all be different.
    assert len({name.lower() for name in names}) == len(names)
    assert (keys_dir / "issuer-61.pem").exists()  # kid 'a'
    assert (keys_dir / "issuer-41.pem").exists()  # kid 'A'
    meta_a = json.loads((keys_dir / "issuer-61.json").read_text())
    meta_upper_a = json.loads((keys_dir / "issuer-41.json").read_text())
    assert meta_a["public_jwk"]["kid"] == "a"
    assert meta_upper_a["public_jwk"]["kid"] == "A"


def test_a_key_signing_period_must_end_after_it_starts(store: FileKeyStore) -> None:
    with pytest.raises(KeyStoreError, match="must end after it starts"):
        store.create_issuer_key(Algorithm.EDDSA, NOW, NOW)


# -- signing key -----------------------------------------------------------------------------


def test_signing_key_on_an_empty_store_raises_key_store_error(store: FileKeyStore) -> None:
    with pytest.raises(KeyStoreError, match="no issuer key"):
        store.signing_key(NOW)


def test_signing_key_raises_key_store_error_before_and_after_every_signing_period(
    store: FileKeyStore,
) -> None:
    initialise(store, NOW, 1)

    assert store.signing_key(NOW).kid == store.signing_key(NOW + DAY - 1).kid
    with pytest.raises(KeyStoreError, match="may sign now"):
        store.signing_key(NOW - 1)
    with pytest.raises(KeyStoreError, match="may sign now"):
        store.signing_key(NOW + DAY)


def test_root_key_on_an_empty_store_raises_key_store_error(store: FileKeyStore) -> None:
    with pytest.raises(KeyStoreError, match="no root key"):
        store.root_key()


# -- rotation ----------------------------------------------------------------------------------

SWITCH_IN = 3_600


@pytest.fixture
def rotated(store: FileKeyStore) -> tuple[FileKeyStore, str, str]:
    """A store whose first key signs from NOW; a second key rotated in at NOW + SWITCH_IN."""
    initialise(store, NOW, 90)
    old_kid = store.signing_key(NOW).kid
    new_kid = rotate(store, NOW, 90, starts_in=SWITCH_IN).kid
    return store, old_kid, new_kid


def test_rotation_gives_the_new_key_a_different_kid(
    rotated: tuple[FileKeyStore, str, str],
) -> None:
    _, old_kid, new_kid = rotated

    assert new_kid != old_kid


def test_rotated_key_is_published_immediately(rotated: tuple[FileKeyStore, str, str]) -> None:
    store, old_kid, new_kid = rotated

    assert _kids(store.published_keys(NOW)) == {old_kid, new_kid}


def test_old_key_keeps_signing_until_the_switch_and_the_new_key_signs_from_it(
    rotated: tuple[FileKeyStore, str, str],
) -> None:
    store, old_kid, new_kid = rotated

    assert store.signing_key(NOW).kid == old_kid
    assert store.signing_key(NOW + SWITCH_IN - 1).kid == old_kid
    assert store.signing_key(NOW + SWITCH_IN).kid == new_kid
    assert store.signing_key(NOW + 90 * DAY).kid == new_kid


def test_codes_from_the_old_key_before_the_switch_still_verify_after_it(
    rotated: tuple[FileKeyStore, str, str],
) -> None:
    store, old_kid, _ = rotated
    issued = NOW + SWITCH_IN - 10
    code = _mint(store.signing_key(issued), issued, ttl=60)

    checked = NOW + SWITCH_IN + 20
    verdict = _verify(code, store.published_keys(checked), checked)

    assert verdict.reason is Reason.OK
    assert verdict.kid == old_kid


def test_codes_from_the_new_key_verify_from_the_switch(
    rotated: tuple[FileKeyStore, str, str],
) -> None:
    store, _, new_kid = rotated
    code = _mint(store.signing_key(NOW + SWITCH_IN), NOW + SWITCH_IN)

    verdict = _verify(code, store.published_keys(NOW + SWITCH_IN), NOW + SWITCH_IN + 1)

    assert verdict.reason is Reason.OK
    assert verdict.kid == new_kid


def test_old_key_used_after_the_switch_makes_codes_verifiers_refuse_as_unknown_key(
    rotated: tuple[FileKeyStore, str, str],
) -> None:
    store, old_kid, _ = rotated
    stale_signer = store.signing_key(NOW)  # e.g. a process that loaded the key before rotating
    issued = NOW + SWITCH_IN + 5
    code = _mint(stale_signer, issued)

    verdict = _verify(code, store.published_keys(issued), issued)

    assert verdict.reason is Reason.UNKNOWN_KEY
    assert verdict.kid == old_kid


def test_old_key_stays_published_until_its_signing_end_plus_the_retention(
    rotated: tuple[FileKeyStore, str, str],
) -> None:
    store, old_kid, new_kid = rotated
    old_end = NOW + SWITCH_IN

    assert _kids(store.published_keys(old_end)) == {old_kid, new_kid}
    assert _kids(store.published_keys(old_end + RETAIN_AFTER_SIGNING - 1)) == {old_kid, new_kid}
    assert _kids(store.published_keys(old_end + RETAIN_AFTER_SIGNING)) == {new_kid}


def test_longest_lived_code_from_the_old_key_verifies_until_it_expires_after_rotation(
    rotated: tuple[FileKeyStore, str, str],
) -> None:
    store, old_kid, _ = rotated
    issued = NOW + SWITCH_IN - 1  # the old key's last signing second
    code = _mint(store.signing_key(issued), issued, ttl=MAX_TTL)
    max_skew = 300
    last_valid = issued + MAX_TTL + max_skew - 1

    verdict = _verify(code, store.published_keys(last_valid), last_valid, clock_skew=max_skew)
    after = _verify(code, store.published_keys(last_valid + 1), last_valid + 1, clock_skew=max_skew)

    assert verdict.reason is Reason.OK
    assert verdict.kid == old_kid
    assert after.reason is Reason.EXPIRED


def test_rotation_cannot_start_a_key_in_the_past(store: FileKeyStore) -> None:
    initialise(store, NOW, 90)

    with pytest.raises(KeyStoreError, match="past"):
        rotate(store, NOW, 90, starts_in=-1)
    assert len(store.issuer_keys()) == 1


def test_end_signing_period_of_an_unknown_kid_is_a_key_store_error(store: FileKeyStore) -> None:
    initialise(store, NOW, 90)
    unused = next(kid for kid in KID_ALPHABET if kid != store.signing_key(NOW).kid)

    with pytest.raises(KeyStoreError, match="no issuer key"):
        store.end_signing_period(unused, NOW)


# -- ES256 and JWKS ------------------------------------------------------------------------------


def test_es256_keys_sign_codes_that_verify_with_es256_accepted(store: FileKeyStore) -> None:
    initialise(store, NOW, 90, Algorithm.ES256)
    signer = store.signing_key(NOW)
    code = _mint(signer, NOW)

    verdict = _verify(code, store.published_keys(NOW), NOW, algorithms=(Algorithm.ES256,))

    assert signer.alg is Algorithm.ES256
    assert store.issuer_keys()[0].alg is Algorithm.ES256
    assert verdict.reason is Reason.OK


def test_es256_codes_are_refused_by_a_verifier_accepting_only_eddsa(store: FileKeyStore) -> None:
    initialise(store, NOW, 90, Algorithm.ES256)
    code = _mint(store.signing_key(NOW), NOW)

    verdict = _verify(code, store.published_keys(NOW), NOW, algorithms=(Algorithm.EDDSA,))

    assert verdict.reason is Reason.UNSUPPORTED_ALG


def test_encrypted_es256_keys_load_with_the_passphrase(keys_dir: Path) -> None:
    initialise(open_key_store(keys_dir, "correct horse"), NOW, 90, Algorithm.ES256)

    signer = open_key_store(keys_dir, "correct horse").signing_key(NOW)
    code = _mint(signer, NOW)

    assert signer.alg is Algorithm.ES256
    assert _verify(code, [signer.public], NOW, algorithms=(Algorithm.ES256,)).valid


def test_jwks_export_round_trips_through_keys_from_jwks(
    rotated: tuple[FileKeyStore, str, str],
) -> None:
    store, _, _ = rotated
    published = store.published_keys(NOW)

    document = json.loads(json.dumps(jwks(published)))
    loaded = keys_from_jwks(document)

    assert loaded == published
    assert [(k.kid, k.alg, k.not_before, k.not_after) for k in loaded] == [
        (k.kid, k.alg, k.not_before, k.not_after) for k in published
    ]


def test_jwks_export_holds_no_private_key_member(store: FileKeyStore, keys_dir: Path) -> None:
    initialise(store, NOW, 90)
    rotate(store, NOW, 90, Algorithm.ES256, starts_in=SWITCH_IN)

    document = jwks(store.published_keys(NOW))

    assert len(document["keys"]) == 2
    for jwk in document["keys"]:
        assert "d" not in jwk
    assert "d" not in store.root_key().public_jwk
    def members(value: object) -> set[str]:
        if isinstance(value, dict):
            return set(value).union(*(members(v) for v in value.values()))
        if isinstance(value, list):
            return set().union(*(members(v) for v in value))
        return set()

    for meta in keys_dir.glob("*.json"):  # the public metadata files never hold one either
        # Parsed, not searched as text: a key's one-letter kid may itself be "d".
        assert "d" not in members(json.loads(meta.read_text())), meta


def test_codes_verify_with_keys_loaded_from_the_exported_jwks(store: FileKeyStore) -> None:
    initialise(store, NOW, 90)
    code = _mint(store.signing_key(NOW), NOW)

    keys = keys_from_jwks(json.loads(json.dumps(jwks(store.published_keys(NOW)))))

    assert _verify(code, keys, NOW).reason is Reason.OK
