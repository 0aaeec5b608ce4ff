"""The settings of the core's commands: the key store, the code prefix and lifetime, the
clock-skew allowance. Read once from ``IDCODE_*`` environment variables, then fixed.

The service's settings (``idcode.service.settings.Settings``) extend these with its own, so
one variable means the same everywhere; the core and the terminal never read the service's
(a gate has no personal-data keys to ask for). docs/settings.md has the table.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from idcode.codetext import DEFAULT_DEPLOYMENT, prefix_for
from idcode.errors import ConfigurationError, KeyStoreError
from idcode.issuer import DEFAULT_TTL, MAX_TTL
from idcode.logs import LogFormat
from idcode.profiles import PROFILES, CryptoProfile, ProfileName
from idcode.secretfiles import check_private
from idcode.verifier import DEFAULT_CLOCK_SKEW, MAX_CLOCK_SKEW

ENV_PREFIX = "IDCODE_"
DEFAULT_ISSUER_KEY_DAYS = 90
MAX_ISSUER_KEY_DAYS = 3650


@dataclass(frozen=True)
class TokenSettings:
    """A PKCS#11 token: its module, its label, and its user PIN or the file that holds it."""

    module: Path
    label: str
    pin: SecretStr | None
    pin_file: Path | None

    def read_pin(self) -> str:
        """The user PIN; the file's is read now, and must be private to this user (or root).

        A symbolic link is followed (a secrets mount links its files), and its target checked.
        """
        if self.pin is not None:
            return self.pin.get_secret_value()
        assert self.pin_file is not None  # CoreSettings checks that one of the two is set
        try:
            target = self.pin_file.resolve(strict=True)
            check_private(target)
            text = target.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ConfigurationError(
                f"{ENV_PREFIX}PKCS11_PIN_FILE: {self.pin_file} does not exist"
            ) from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigurationError(
                f"{ENV_PREFIX}PKCS11_PIN_FILE: cannot read {self.pin_file}: {exc}"
            ) from None
        except KeyStoreError as exc:  # UnsafeFileError: readable by others, another owner
            raise ConfigurationError(f"{ENV_PREFIX}PKCS11_PIN_FILE: {exc}") from None
        pin = text.removesuffix("\n").removesuffix("\r")
        if not pin or "\n" in pin:
            raise ConfigurationError(
                f"{ENV_PREFIX}PKCS11_PIN_FILE: {self.pin_file} must hold the PIN on one line"
            )
        return pin


class CoreSettings(BaseModel):
    """The settings the core reads; the service's Settings inherit them."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    keys_dir: Path = Field(default=Path("keys"), description="Key store directory.")
    key_passphrase: SecretStr | None = Field(
        default=None, description="Encrypts private keys at rest when set."
    )
    deployment: str = Field(
        default=DEFAULT_DEPLOYMENT, description="Deployment tag; the code prefix is tag + '1:'."
    )
    code_ttl_seconds: int = Field(default=DEFAULT_TTL, ge=1, le=MAX_TTL)
    clock_skew_seconds: int = Field(default=DEFAULT_CLOCK_SKEW, ge=0, le=MAX_CLOCK_SKEW)
    issuer_key_days: int = Field(
        default=DEFAULT_ISSUER_KEY_DAYS,
        ge=1,
        le=MAX_ISSUER_KEY_DAYS,
        description="Signing period of a new issuer key.",
    )

    log_format: LogFormat = Field(
        default="text", description="Log lines as text or as one JSON object each (logs.py)."
    )
    crypto_profile: ProfileName = Field(
        default=ProfileName.STANDARD,
        description="standard (EdDSA, ES256; AES-256-GCM, HMAC-SHA256) or gm (SM2; SM4-GCM, "
        "HMAC-SM3): the algorithms the deployment issues and accepts, and of its personal data "
        "at rest; recorded in the database at the first start (profiles.py, "
        "docs/crypto-profiles.md).",
    )

    # Keys on a PKCS#11 token instead of in keys_dir (docs/keys.md, "PKCS#11").
    pkcs11_module: Path | None = Field(
        default=None, description="PKCS#11 module (a shared library); set, keys live on a token."
    )
    pkcs11_token: str | None = Field(default=None, description="Label of the token.")
    pkcs11_pin: SecretStr | None = Field(default=None, description="The token's user PIN.")
    pkcs11_pin_file: Path | None = Field(
        default=None, description="A file holding the user PIN (instead of IDCODE_PKCS11_PIN)."
    )

    @field_validator("keys_dir", mode="before")
    @classmethod
    def _directory_is_named(cls, value: object) -> object:
        if isinstance(value, str) and not value.strip():
            raise ValueError("must name a directory (it is empty)")
        return value

    @field_validator("key_passphrase")
    @classmethod
    def _passphrase_is_not_empty(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value():
            # An empty passphrase would silently leave private keys in the clear.
            raise ValueError("is set but empty; unset it or give a passphrase")
        return value

    @model_validator(mode="after")
    def _pkcs11_is_whole(self) -> CoreSettings:
        # A model validator's message has no variable of its own: each names its variables.
        if self.pkcs11_module is None:
            stray = [
                f"{ENV_PREFIX}{name.upper()}"
                for name in ("pkcs11_token", "pkcs11_pin", "pkcs11_pin_file")
                if getattr(self, name) is not None
            ]
            if stray:
                raise ValueError(
                    f"{', '.join(stray)} set without {ENV_PREFIX}PKCS11_MODULE, the PKCS#11 "
                    "module that would use it"
                )
            return self
        if not str(self.pkcs11_module).strip() or not self.pkcs11_module.is_absolute():
            raise ValueError(
                f"{ENV_PREFIX}PKCS11_MODULE must be an absolute path to the module "
                f"(a shared library), got {str(self.pkcs11_module)!r}"
            )
        if not self.pkcs11_token:
            raise ValueError(
                f"{ENV_PREFIX}PKCS11_MODULE is set: {ENV_PREFIX}PKCS11_TOKEN must name the token"
            )
        if (self.pkcs11_pin is None) == (self.pkcs11_pin_file is None):
            raise ValueError(
                f"{ENV_PREFIX}PKCS11_MODULE is set: give the user PIN in exactly one of "
                f"{ENV_PREFIX}PKCS11_PIN and {ENV_PREFIX}PKCS11_PIN_FILE"
            )
        if self.pkcs11_pin is not None and not self.pkcs11_pin.get_secret_value():
            raise ValueError(f"{ENV_PREFIX}PKCS11_PIN is set but empty")
        if self.key_passphrase is not None:
            raise ValueError(
                f"{ENV_PREFIX}KEY_PASSPHRASE encrypts key files, and with "
                f"{ENV_PREFIX}PKCS11_MODULE set no key is a file: unset one of them"
            )
        return self

    @field_validator("deployment")
    @classmethod
    def _deployment_is_a_valid_prefix(cls, deployment: str) -> str:
        prefix_for(deployment)
        return deployment

    @property
    def passphrase(self) -> str | None:
        return self.key_passphrase.get_secret_value() if self.key_passphrase else None

    @property
    def token(self) -> TokenSettings | None:
        """Where the keys live when they are on a PKCS#11 token; None: in ``keys_dir``."""
        if self.pkcs11_module is None or self.pkcs11_token is None:
            return None
        return TokenSettings(
            module=self.pkcs11_module,
            label=self.pkcs11_token,
            pin=self.pkcs11_pin,
            pin_file=self.pkcs11_pin_file,
        )

    @property
    def profile(self) -> CryptoProfile:
        return PROFILES[self.crypto_profile]

    @property
    def code_prefix(self) -> str:
        return prefix_for(self.deployment)

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> CoreSettings:
        """The settings from ``IDCODE_*`` variables; ConfigurationError names a bad one."""
        environ = os.environ if environ is None else environ
        values = {
            name: environ[ENV_PREFIX + name.upper()]
            for name in CoreSettings.model_fields
            if ENV_PREFIX + name.upper() in environ
        }
        try:
            return cls.model_validate(values)
        except ValidationError as exc:
            raise ConfigurationError(describe_settings_error(exc)) from None


def describe_settings_error(exc: ValidationError) -> str:
    """One line naming each bad variable: ``bad settings: IDCODE_X: why; ...``."""
    problems = "; ".join(
        (f"{ENV_PREFIX}{'_'.join(map(str, error['loc'])).upper()}: " if error["loc"] else "")
        + str(error["msg"]).removeprefix("Value error, ")
        for error in exc.errors()
    )
    return f"bad settings: {problems}"


@lru_cache(maxsize=1)
def core_settings() -> CoreSettings:
    """This process's core settings, read from the environment on first use."""
    return CoreSettings.from_environment()
