"""A SoftHSM2 token of this test run's own: a configuration and a token directory in a
temporary directory (SOFTHSM2_CONF), initialised once per process, before the module is
loaded (SoftHSM2 reads its tokens when it is initialised), and emptied before each test."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pkcs11
import pytest
from pydantic import SecretStr

from idcode.config import TokenSettings
from idcode.pkcs11store import TokenKeyStore, open_token_key_store
from tests.pkcs11.softhsm import MODULE, SOFTHSM_UTIL


@dataclass(frozen=True)
class SoftHsm:
    module: Path
    label: str
    pin: str
    conf: Path

    @property
    def settings(self) -> TokenSettings:
        return TokenSettings(self.module, self.label, SecretStr(self.pin), None)

    def env(self, **overrides: str) -> dict[str, str]:
        """The variables that put a command's keys on this token."""
        return {
            "SOFTHSM2_CONF": str(self.conf),
            "IDCODE_PKCS11_MODULE": str(self.module),
            "IDCODE_PKCS11_TOKEN": self.label,
            "IDCODE_PKCS11_PIN": self.pin,
            **overrides,
        }


@pytest.fixture(scope="session")
def softhsm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SoftHsm]:
    if SOFTHSM_UTIL is None or MODULE is None:
        pytest.skip("SoftHSM2 is missing")
    directory = tmp_path_factory.mktemp("softhsm")
    (directory / "tokens").mkdir()
    conf = directory / "softhsm2.conf"
    conf.write_text(
        f"directories.tokendir = {directory / 'tokens'}\n"
        "objectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n"
    )
    previous = os.environ.get("SOFTHSM2_CONF")
    os.environ["SOFTHSM2_CONF"] = str(conf)
    hsm = SoftHsm(MODULE, f"idcode-{secrets.token_hex(4)}", secrets.token_hex(6), conf)
    init = [SOFTHSM_UTIL, "--init-token", "--free", "--label", hsm.label, "--pin", hsm.pin]
    subprocess.run(
        [*init, "--so-pin", secrets.token_hex(6)],
        check=True,
        capture_output=True,
    )
    yield hsm
    if previous is None:
        del os.environ["SOFTHSM2_CONF"]
    else:
        os.environ["SOFTHSM2_CONF"] = previous


@pytest.fixture
def store(softhsm: SoftHsm) -> TokenKeyStore:
    """A key store on the emptied token."""
    opened = open_token_key_store(softhsm.settings)

    def empty(session: pkcs11.Session) -> None:
        for obj in list(session.get_objects()):
            obj.destroy()

    opened._token.call("emptying the test token", empty)
    return open_token_key_store(softhsm.settings)


def run_idcode(
    softhsm: SoftHsm, cwd: Path, *args: str, **env: str
) -> subprocess.CompletedProcess[str]:
    """``idcode ARGS`` in a process of its own, its keys on the token."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("IDCODE_")}
    environment.update(softhsm.env(**env))
    environment["IDCODE_KEYS_DIR"] = str(cwd / "keys")
    return subprocess.run(
        [sys.executable, "-m", "idcode.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={k: v for k, v in environment.items() if v != ""},
        timeout=120,
        check=False,
    )
