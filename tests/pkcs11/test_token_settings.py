"""The token's settings: a module, a token label and a PIN, whole and alone, or a precise
refusal that names the variable (the CLI prints it and exits with status 2)."""

from __future__ import annotations

from pathlib import Path

import pytest

from idcode.config import CoreSettings
from idcode.errors import ConfigurationError
from idcode.keystore import configured_key_store
from idcode.pkcs11store import TokenKeyStore
from tests.pkcs11.conftest import SoftHsm
from tests.pkcs11.softhsm import needs_softhsm

pytestmark = needs_softhsm


def settings_of(softhsm: SoftHsm, **overrides: str) -> CoreSettings:
    env = {k: v for k, v in softhsm.env(**overrides).items() if k.startswith("IDCODE_") and v}
    return CoreSettings.from_environment(env)


def test_the_settings_name_the_token_and_the_key_store_opens_on_it(
    store: TokenKeyStore, softhsm: SoftHsm
) -> None:
    opened = configured_key_store(settings_of(softhsm))

    assert isinstance(opened, TokenKeyStore)
    assert opened.location == f"PKCS#11 token {softhsm.label!r} ({softhsm.module})"


@pytest.mark.parametrize(
    ("env", "says"),
    [
        ({"IDCODE_PKCS11_TOKEN": ""}, "IDCODE_PKCS11_TOKEN must name the token"),
        ({"IDCODE_PKCS11_PIN_FILE": "/run/pin"}, "exactly one of IDCODE_PKCS11_PIN and"),
        ({"IDCODE_PKCS11_PIN": ""}, "exactly one of IDCODE_PKCS11_PIN and"),
        ({"IDCODE_PKCS11_MODULE": ""}, "set without IDCODE_PKCS11_MODULE"),
        ({"IDCODE_PKCS11_MODULE": "libsofthsm2.so"}, "must be an absolute path"),
        ({"IDCODE_KEY_PASSPHRASE": "x" * 20}, "IDCODE_KEY_PASSPHRASE encrypts key files"),
    ],
)
def test_incomplete_or_conflicting_token_settings_are_refused(
    softhsm: SoftHsm, env: dict[str, str], says: str
) -> None:
    with pytest.raises(ConfigurationError, match=r"^bad settings: ") as refused:
        settings_of(softhsm, **env)
    assert says in str(refused.value)


@pytest.mark.parametrize(
    ("module", "says"),
    [
        ("/nonexistent/libpkcs11.so", "/nonexistent/libpkcs11.so does not exist"),
        ("/etc/hostname", "cannot load /etc/hostname as a PKCS#11 module"),
    ],
)
def test_a_missing_or_unusable_module_is_named(softhsm: SoftHsm, module: str, says: str) -> None:
    settings = settings_of(softhsm, IDCODE_PKCS11_MODULE=module)

    with pytest.raises(ConfigurationError, match=r"^IDCODE_PKCS11_MODULE: ") as refused:
        configured_key_store(settings)
    assert says in str(refused.value)


def test_keys_dir_and_a_token_together_are_refused(softhsm: SoftHsm, tmp_path: Path) -> None:
    with pytest.raises(Exception, match="--keys-dir names a key directory, but IDCODE_PKCS11"):
        configured_key_store(settings_of(softhsm), tmp_path / "keys")
