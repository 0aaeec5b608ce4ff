"""The settings of the core's commands: the key store, the code prefix and lifetime, the
clock-skew allowance. Read once from ``IDCODE_*`` environment variables, then fixed.

The service's settings (``idcode.service.settings.Settings``) extend these with its own, so
one variable means the same everywhere; the core and the terminal never read the service's
(a gate has no personal-data keys to ask for). docs/settings.md has the table.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

from idcode.codetext import DEFAULT_DEPLOYMENT, prefix_for
from idcode.errors import ConfigurationError
from idcode.issuer import DEFAULT_TTL, MAX_TTL
from idcode.logs import LogFormat
from idcode.profiles import PROFILES, CryptoProfile, ProfileName
from idcode.verifier import DEFAULT_CLOCK_SKEW, MAX_CLOCK_SKEW

ENV_PREFIX = "IDCODE_"
DEFAULT_ISSUER_KEY_DAYS = 90
MAX_ISSUER_KEY_DAYS = 3650


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
        description="standard (EdDSA, ES256) or gm (SM2): the algorithms the deployment "
        "issues and accepts (profiles.py, docs/crypto-profiles.md).",
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

    @field_validator("deployment")
    @classmethod
    def _deployment_is_a_valid_prefix(cls, deployment: str) -> str:
        prefix_for(deployment)
        return deployment

    @property
    def passphrase(self) -> str | None:
        return self.key_passphrase.get_secret_value() if self.key_passphrase else None

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
