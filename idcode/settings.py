"""Settings, read once from ``IDCODE_*`` environment variables and then fixed."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from idcode.codetext import DEFAULT_DEPLOYMENT, prefix_for
from idcode.issuer import DEFAULT_TTL, MAX_TTL
from idcode.verifier import DEFAULT_CLOCK_SKEW


class Settings(BaseSettings):
    """Every setting idcode reads; see docs/settings.md for the table."""

    model_config = SettingsConfigDict(env_prefix="IDCODE_", frozen=True, extra="ignore")

    keys_dir: Path = Field(default=Path("keys"), description="Key store directory.")
    key_passphrase: SecretStr | None = Field(
        default=None, description="Encrypts private keys at rest when set."
    )
    deployment: str = Field(
        default=DEFAULT_DEPLOYMENT, description="Deployment tag; the code prefix is tag + '1:'."
    )
    code_ttl_seconds: int = Field(default=DEFAULT_TTL, ge=1, le=MAX_TTL)
    clock_skew_seconds: int = Field(default=DEFAULT_CLOCK_SKEW, ge=0, le=300)
    issuer_key_days: int = Field(
        default=90, ge=1, le=3650, description="Signing period of a new issuer key."
    )

    @field_validator("deployment")
    @classmethod
    def _deployment_is_a_valid_prefix(cls, deployment: str) -> str:
        prefix_for(deployment)
        return deployment

    @property
    def code_prefix(self) -> str:
        return prefix_for(self.deployment)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process's settings, read from the environment on first use."""
    return Settings()
