"""Personal data at rest: values sealed to their card and field, keyed lookup hashes, keys."""

from __future__ import annotations

import base64
import json
import secrets
import stat
from pathlib import Path

import pytest
from pydantic import SecretStr, ValidationError

from idcode.errors import IdcodeError, PersonalDataError, UnsafeFileError
from idcode.service.pii import (
    DEV_KEYS_FILE,
    KEY_LENGTH,
    PersonalDataVault,
    development_vault,
    vault_for,
    vault_from_keys,
)
from idcode.service.settings import Settings

CARD = "6f1c2f4e-5d0a-4c55-9d1e-1a2b3c4d5e6f"
OTHER_CARD = "0b7e0e3a-2f43-4d8e-8a7e-9c8b7a6f5e4d"
ID_NUMBER = "11010519491231002X"


def new_key() -> bytes:
    return secrets.token_bytes(KEY_LENGTH)


def b64(key: bytes) -> str:
    return base64.b64encode(key).decode()


@pytest.fixture
def vault() -> PersonalDataVault:
    return PersonalDataVault(new_key(), new_key())


def production_settings(tmp_path: Path, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "environment": "production",
        "keys_dir": tmp_path / "keys",
        "data_dir": tmp_path / "data",
        "demo_data": False,
        "oidc_issuer": "https://idp.example.gov.cn",
        "oidc_jwks_url": "https://idp.example.gov.cn/jwks.json",
        **overrides,
    }
    return Settings(**values)  # type: ignore[arg-type]


# -- encryption ----------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["张秀英", "13800000001", "1950-03-12", "", "x" * 10_000])
def test_encrypted_value_decrypts_to_itself(vault: PersonalDataVault, value: str) -> None:
    sealed = vault.encrypt(value, card_id=CARD, field="name")
    assert vault.decrypt(sealed, card_id=CARD, field="name") == value


def test_ciphertext_does_not_contain_the_value_and_differs_each_time(
    vault: PersonalDataVault,
) -> None:
    first = vault.encrypt(ID_NUMBER, card_id=CARD, field="id_number")
    second = vault.encrypt(ID_NUMBER, card_id=CARD, field="id_number")
    assert ID_NUMBER.encode() not in first
    assert first != second
    assert vault.decrypt(second, card_id=CARD, field="id_number") == ID_NUMBER


def test_value_copied_to_another_card_does_not_decrypt(vault: PersonalDataVault) -> None:
    sealed = vault.encrypt("张秀英", card_id=CARD, field="name")
    with pytest.raises(PersonalDataError, match="does not decrypt"):
        vault.decrypt(sealed, card_id=OTHER_CARD, field="name")


def test_value_copied_to_another_field_does_not_decrypt(vault: PersonalDataVault) -> None:
    sealed = vault.encrypt("13800000001", card_id=CARD, field="phone")
    with pytest.raises(PersonalDataError, match="does not decrypt"):
        vault.decrypt(sealed, card_id=CARD, field="name")


@pytest.mark.parametrize("position", [1, 5, 13, 20, -1])
def test_tampered_ciphertext_does_not_decrypt(vault: PersonalDataVault, position: int) -> None:
    sealed = bytearray(vault.encrypt("张秀英", card_id=CARD, field="name"))
    sealed[position] ^= 0x01
    with pytest.raises(PersonalDataError):
        vault.decrypt(bytes(sealed), card_id=CARD, field="name")


def test_truncated_ciphertext_does_not_decrypt(vault: PersonalDataVault) -> None:
    sealed = vault.encrypt("张秀英", card_id=CARD, field="name")
    for length in (0, 1, 13, len(sealed) - 1):
        with pytest.raises(PersonalDataError):
            vault.decrypt(sealed[:length], card_id=CARD, field="name")


def test_unknown_ciphertext_version_is_refused(vault: PersonalDataVault) -> None:
    sealed = vault.encrypt("张秀英", card_id=CARD, field="name")
    with pytest.raises(PersonalDataError, match="unknown ciphertext version for name"):
        vault.decrypt(b"\x03" + sealed[1:], card_id=CARD, field="name")


def test_ciphertext_from_another_encryption_key_does_not_decrypt() -> None:
    hash_key = new_key()
    sealed = PersonalDataVault(new_key(), hash_key).encrypt("张秀英", card_id=CARD, field="name")
    with pytest.raises(PersonalDataError, match="does not decrypt"):
        PersonalDataVault(new_key(), hash_key).decrypt(sealed, card_id=CARD, field="name")


def test_decryption_error_names_the_field_and_card_but_not_the_value(
    vault: PersonalDataVault,
) -> None:
    sealed = vault.encrypt("张秀英", card_id=CARD, field="name")
    with pytest.raises(PersonalDataError) as caught:
        vault.decrypt(sealed, card_id=OTHER_CARD, field="name")
    assert str(caught.value) == f"name of card {OTHER_CARD} does not decrypt"


# -- lookup hashes --------------------------------------------------------------------------


def test_lookup_hash_is_deterministic_and_32_bytes(vault: PersonalDataVault) -> None:
    assert vault.lookup_hash(ID_NUMBER) == vault.lookup_hash(ID_NUMBER)
    assert len(vault.lookup_hash(ID_NUMBER)) == 32
    assert vault.lookup_hash(ID_NUMBER) != vault.lookup_hash("310115198806150032")


def test_lookup_hash_depends_on_the_hash_key_only() -> None:
    hash_key = new_key()
    same_hash_key = PersonalDataVault(new_key(), hash_key).lookup_hash(ID_NUMBER)
    assert PersonalDataVault(new_key(), hash_key).lookup_hash(ID_NUMBER) == same_hash_key
    assert PersonalDataVault(new_key(), new_key()).lookup_hash(ID_NUMBER) != same_hash_key


def test_lookup_hash_is_not_a_plain_hash_of_the_number(vault: PersonalDataVault) -> None:
    import hashlib

    assert vault.lookup_hash(ID_NUMBER) != hashlib.sha256(ID_NUMBER.encode()).digest()


# -- keys -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("encryption", "hashing"), [(16, 32), (32, 31), (33, 32), (0, 0)])
def test_keys_must_be_32_bytes(encryption: int, hashing: int) -> None:
    with pytest.raises(PersonalDataError, match="must be 32 bytes each"):
        PersonalDataVault(secrets.token_bytes(encryption), secrets.token_bytes(hashing))


def test_encryption_key_and_hash_key_must_differ() -> None:
    key = new_key()
    with pytest.raises(PersonalDataError, match="must differ"):
        PersonalDataVault(key, key)


def test_keys_from_base64_make_a_working_vault() -> None:
    encryption, hashing = new_key(), new_key()
    vault = vault_from_keys(b64(encryption), b64(hashing))
    assert vault.lookup_hash(ID_NUMBER) == PersonalDataVault(encryption, hashing).lookup_hash(
        ID_NUMBER
    )


@pytest.mark.parametrize("bad", ["not base64!", "====", "QUJD\x00"])
def test_encryption_key_that_is_not_base64_is_named_in_the_error(bad: str) -> None:
    with pytest.raises(PersonalDataError, match="IDCODE_PII_ENCRYPTION_KEY is not base64"):
        vault_from_keys(bad, b64(new_key()))


def test_hash_key_that_is_not_base64_is_named_in_the_error() -> None:
    with pytest.raises(PersonalDataError, match="IDCODE_PII_HASH_KEY is not base64"):
        vault_from_keys(b64(new_key()), "*" * 44)


def test_base64_key_of_the_wrong_length_is_refused() -> None:
    with pytest.raises(PersonalDataError, match="IDCODE_PII_HASH_KEY must decode to 32 bytes"):
        vault_from_keys(b64(new_key()), b64(secrets.token_bytes(16)))


# -- development keys and settings ------------------------------------------------------------


def test_development_keys_are_created_private_and_reused(tmp_path: Path) -> None:
    keys_dir = tmp_path / "keys"
    first = development_vault(keys_dir)
    path = keys_dir / DEV_KEYS_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    sealed = first.encrypt("张秀英", card_id=CARD, field="name")
    created = path.read_bytes()

    second = development_vault(keys_dir)
    assert path.read_bytes() == created
    assert second.decrypt(sealed, card_id=CARD, field="name") == "张秀英"
    assert second.lookup_hash(ID_NUMBER) == first.lookup_hash(ID_NUMBER)


def test_development_keys_differ_between_key_directories(tmp_path: Path) -> None:
    one = development_vault(tmp_path / "one")
    two = development_vault(tmp_path / "two")
    assert one.lookup_hash(ID_NUMBER) != two.lookup_hash(ID_NUMBER)


def test_development_keys_readable_by_others_are_refused(tmp_path: Path) -> None:
    development_vault(tmp_path / "keys")
    (tmp_path / "keys" / DEV_KEYS_FILE).chmod(0o644)
    with pytest.raises(IdcodeError, match="readable by others"):
        development_vault(tmp_path / "keys")


def test_damaged_development_keys_file_is_refused_naming_the_file(tmp_path: Path) -> None:
    development_vault(tmp_path / "keys")
    path = tmp_path / "keys" / DEV_KEYS_FILE
    path.write_text(json.dumps({"encryption_key": b64(new_key())}))
    with pytest.raises(PersonalDataError, match=f"cannot read {path}"):
        development_vault(tmp_path / "keys")


def test_development_settings_without_keys_use_the_development_keys_file(tmp_path: Path) -> None:
    settings = Settings(environment="development", keys_dir=tmp_path / "keys")
    vault = vault_for(settings)
    assert (tmp_path / "keys" / DEV_KEYS_FILE).exists()
    assert vault.lookup_hash(ID_NUMBER) == development_vault(tmp_path / "keys").lookup_hash(
        ID_NUMBER
    )


def test_production_settings_without_keys_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="IDCODE_PII_ENCRYPTION_KEY and IDCODE_PII_HASH_KEY"):
        production_settings(tmp_path)


def test_vault_for_production_settings_without_keys_refuses_rather_than_generate_keys(
    tmp_path: Path,
) -> None:
    # Settings built without validation stand for a caller that got past the settings check.
    valid = production_settings(
        tmp_path, pii_encryption_key=b64(new_key()), pii_hash_key=b64(new_key())
    )
    unchecked = Settings.model_construct(
        **{**valid.__dict__, "pii_encryption_key": None, "pii_hash_key": None}
    )
    with pytest.raises(PersonalDataError, match="set IDCODE_PII_ENCRYPTION_KEY"):
        vault_for(unchecked)
    assert not (tmp_path / "keys" / DEV_KEYS_FILE).exists()


def test_production_settings_with_keys_use_them_and_write_no_key_file(tmp_path: Path) -> None:
    encryption, hashing = new_key(), new_key()
    settings = production_settings(
        tmp_path, pii_encryption_key=SecretStr(b64(encryption)), pii_hash_key=b64(hashing)
    )
    vault = vault_for(settings)
    assert vault.lookup_hash(ID_NUMBER) == PersonalDataVault(encryption, hashing).lookup_hash(
        ID_NUMBER
    )
    assert not (tmp_path / "keys").exists()


def test_production_settings_with_bad_keys_fail_when_the_vault_is_built(tmp_path: Path) -> None:
    settings = production_settings(tmp_path, pii_encryption_key="short", pii_hash_key="short")
    with pytest.raises(PersonalDataError, match="IDCODE_PII_ENCRYPTION_KEY"):
        vault_for(settings)


def test_production_settings_refuse_an_identity_provider_key_set_over_plain_http(
    tmp_path: Path,
) -> None:
    with pytest.raises(ValidationError, match="IDCODE_OIDC_JWKS_URL must be https"):
        production_settings(tmp_path, oidc_jwks_url="http://idp.example.gov.cn/jwks.json")


# -- other secrets idcode reads from its key directory -----------------------------------------


def test_development_secrets_another_user_could_swap_are_refused_on_every_read(
    tmp_path: Path,
) -> None:
    keys_dir = tmp_path / "keys"  # the helpers create it, owner-only
    from idcode.service.auth import dev_idp_key
    from idcode.service.pii import development_vault

    dev_idp_key(keys_dir)
    development_vault(keys_dir)
    idp, pii = keys_dir / "dev-idp.pem", keys_dir / "pii-keys.json"
    assert idp.exists() and pii.exists()

    keys_dir.chmod(0o777)
    with pytest.raises(UnsafeFileError, match="writable by group or others"):
        dev_idp_key(keys_dir)
    with pytest.raises(UnsafeFileError, match="writable by group or others"):
        development_vault(keys_dir)
    keys_dir.chmod(0o700)

    for path, read in ((idp, dev_idp_key), (pii, development_vault)):
        path.chmod(0o620)
        with pytest.raises(UnsafeFileError, match=r"readable by others|writable"):
            read(keys_dir)
        path.chmod(0o600)
        target = tmp_path / path.name
        path.rename(target)
        path.symlink_to(target)
        with pytest.raises(UnsafeFileError, match="symbolic link"):
            read(keys_dir)
        path.unlink()
        target.rename(path)
