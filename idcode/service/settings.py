"""The service's settings, read once from ``IDCODE_*`` environment variables and then fixed.

They extend the core's (``idcode.config.CoreSettings``): one variable means the same to
every command."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict, SettingsError

from idcode.config import CoreSettings, describe_settings_error
from idcode.devicecode import MAX_CREDENTIAL_LIFETIME
from idcode.errors import ConfigurationError
from idcode.protocol import MAX_BUNDLE_MAX_AGE

DEV_IDP_ISSUER = "urn:idcode:dev-idp"
#: The longest a trust bundle may stay fresh: the longest a terminal can be meant to decide
#: offline (the service also accepts that terminal's older events for this long, and more).


#: The shortest retention of scan events: the oldest event a terminal may still upload
#: (idcode.service.events.MAX_EVENT_AGE: the longest bundle max-age and five days).
MIN_EVENT_RETENTION_DAYS = MAX_BUNDLE_MAX_AGE // 86_400 + 5

# What a command that is not the service says when the service's development keys are not
# where IDCODE_KEYS_DIR points: the usual cause is a relative IDCODE_KEYS_DIR (default keys/)
# read from another directory than the one `idcode serve` runs in.
NOT_THE_SERVICE_KEY_STORE = (
    "IDCODE_KEYS_DIR must name the key store of the running service (`idcode serve` creates "
    "it on first start, relative to its own working directory); run this command where the "
    "service runs, or set IDCODE_KEYS_DIR to that directory"
)


class Settings(BaseSettings, CoreSettings):
    """Every setting the service reads: the core's (key store, code prefix and lifetime,
    clock skew) and its own; docs/settings.md has the table."""

    model_config = SettingsConfigDict(env_prefix="IDCODE_", frozen=True, extra="ignore")

    environment: Literal["development", "production"] = "development"

    # Service
    data_dir: Path = Field(default=Path("data"), description="SQLite file and other local data.")
    database_url: str | None = Field(
        default=None, description="SQLAlchemy URL; default SQLite in data_dir."
    )
    redis_url: str | None = Field(
        default=None,
        description="Redis URL: one server (redis://, rediss://, unix://), a cluster "
        "(redis+cluster://) or a Sentinel service (redis+sentinel://); unset means in-process "
        "state (one process only).",
    )
    redis_prefix: str = Field(
        default="idcode:",
        description="Prefix of every Redis key (no braces: keys carry hash tags of their own).",
    )
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    rate_limit_per_minute: int = Field(
        default=30, ge=0, description="Code requests per citizen per minute; 0 lifts the limit."
    )
    demo_data: bool = Field(default=True, description="Enrol demo cards into an empty database.")
    bundle_max_age_seconds: int = Field(
        default=48 * 3600,
        ge=300,
        le=MAX_BUNDLE_MAX_AGE,
        description="How long a terminal's trust bundle stays fresh.",
    )
    max_devices_per_card: int = Field(
        default=5, ge=1, le=20, description="Active devices one card may have (docs/devices.md)."
    )
    device_credential_seconds: int = Field(
        default=MAX_CREDENTIAL_LIFETIME,
        ge=3600,
        le=MAX_CREDENTIAL_LIFETIME,
        description="How long a device's credential lives from its issue or renewal.",
    )
    events_retention_days: int = Field(
        default=184,
        ge=MIN_EVENT_RETENTION_DAYS,
        le=3660,
        description="Scan events older than this are purged by `idcode events purge` "
        "(whole months; docs/data.md, Retention).",
    )
    # Metrics (docs/operations.md)
    metrics_token: SecretStr | None = Field(
        default=None,
        min_length=16,
        description="When set, GET /metrics wants it as a bearer token; unset, /metrics is "
        "open to whoever reaches the port (the city's gateway must not route it).",
    )
    metrics_terminal_series: int = Field(
        default=2000,
        ge=0,
        le=100_000,
        description="Per-terminal fleet series while at most this many terminals are active; "
        "more: only the per-scene aggregates (0: never per terminal).",
    )

    # HTTP server bounds (idcode serve: idcode.service.api.headlimits), per worker process
    http_max_head_bytes: int = Field(
        default=16 * 1024,
        ge=1024,
        le=1024 * 1024,
        description="Request line and headers together; more is refused with 431.",
    )
    http_max_headers: int = Field(
        default=100, ge=10, le=1000, description="Header fields per request; more: 431."
    )
    http_max_url_bytes: int = Field(
        default=8 * 1024, ge=256, le=1024 * 1024, description="Request target; longer: 414."
    )
    http_head_timeout_seconds: float = Field(
        default=10.0,
        gt=0,
        le=300,
        description="Time for a request head to arrive (and for an unread body to drain).",
    )
    http_max_connections: int = Field(
        default=1000, ge=1, le=1_000_000, description="Open connections; more are refused."
    )

    # Personal data at rest
    pii_encryption_key: SecretStr | None = Field(
        default=None, description="32 bytes, base64: AES-256-GCM key for personal data."
    )
    pii_hash_key: SecretStr | None = Field(
        default=None, description="32 bytes, base64: HMAC-SHA256 key for ID number lookups."
    )

    # Citizen and operator authentication (OIDC ID tokens)
    oidc_issuer: str = DEV_IDP_ISSUER
    oidc_audience: str = "idcode"
    oidc_jwks_url: str | None = None
    oidc_jwks_file: Path | None = None
    oidc_algorithms: list[str] = Field(default=["EdDSA", "ES256", "RS256"])
    oidc_id_number_claim: str = "id_number"
    oidc_roles_claim: str = "roles"
    operator_role: str = "idcode-operator"
    verifier_role: str = "idcode-verifier"

    # The web wallet (/wallet/, docs/wallet.md): where it signs citizens in. In development
    # the service's own provider (/dev-idp/) serves it when these are unset.
    wallet_client_id: str | None = Field(
        default=None,
        min_length=1,
        max_length=255,
        description="The wallet's OIDC client id at the identity provider; default: the "
        "OIDC audience.",
    )
    wallet_authorization_endpoint: str | None = Field(
        default=None, description="The identity provider's authorization endpoint (https)."
    )
    wallet_token_endpoint: str | None = Field(
        default=None, description="The identity provider's token endpoint (https)."
    )

    # The operator console (/console/, docs/console.md): it signs operators in at the same
    # identity provider as the wallet (in development, the service's own provider).
    console_client_id: str | None = Field(
        default=None,
        min_length=1,
        max_length=255,
        description="The console's OIDC client id at the identity provider; default: the wallet's.",
    )
    console_session_seconds: int = Field(
        default=8 * 3600,
        ge=300,
        le=24 * 3600,
        description="How long an operator stays signed in to the console (at most the ID "
        "token's lifetime).",
    )

    @field_validator("data_dir", mode="before")
    @classmethod
    def _data_directory_is_named(cls, value: object) -> object:
        if isinstance(value, str) and not value.strip():
            raise ValueError("must name a directory (it is empty)")
        return value

    @field_validator("database_url")
    @classmethod
    def _known_database(cls, url: str | None) -> str | None:
        if url is not None and not url.startswith(("sqlite:", "postgresql", "postgres:")):
            raise ValueError("must be a sqlite:/// or postgresql:// URL")
        return url

    @field_validator("redis_url")
    @classmethod
    def _redis_topology(cls, url: str | None) -> str | None:
        if url is not None:
            # Imported here: redis-py is loaded only by commands that name a Redis.
            from idcode.service import redistopology

            redistopology.parse(url)  # RedisURLError is a ValueError; it never repeats the URL
        return url

    @field_validator("redis_prefix")
    @classmethod
    def _no_hash_tag_in_prefix(cls, prefix: str) -> str:
        # A brace in the prefix would change which part of a key Redis Cluster hashes, and
        # a citizen's card and rate keys could land in different slots (docs/data.md).
        if "{" in prefix or "}" in prefix:
            raise ValueError("must not contain '{' or '}' (keys carry a hash tag of their own)")
        return prefix

    @field_validator("oidc_algorithms")
    @classmethod
    def _no_symmetric_or_none_algorithms(cls, algorithms: list[str]) -> list[str]:
        allowed = {"EdDSA", "ES256", "ES384", "RS256", "RS384", "RS512", "PS256"}
        refused = [alg for alg in algorithms if alg not in allowed]
        if refused or not algorithms:
            raise ValueError(f"only asymmetric algorithms are accepted ({sorted(allowed)})")
        return algorithms

    @field_validator("wallet_authorization_endpoint", "wallet_token_endpoint")
    @classmethod
    def _absolute_web_address(cls, url: str | None) -> str | None:
        if url is not None and (
            not url.startswith(("https://", "http://"))
            or any(c.isspace() or c in '#"<>' for c in url)
            or len(url) > 2000
        ):
            raise ValueError("must be an absolute http(s) URL without a fragment")
        return url

    @model_validator(mode="after")
    def _wallet_endpoints_come_together(self) -> Settings:
        if (self.wallet_authorization_endpoint is None) != (self.wallet_token_endpoint is None):
            raise ValueError(
                "IDCODE_WALLET_AUTHORIZATION_ENDPOINT and IDCODE_WALLET_TOKEN_ENDPOINT are set "
                "together (or neither: the development provider, in development only)"
            )
        return self

    @model_validator(mode="after")
    def _production_refuses_development_secrets(self) -> Settings:
        if self.environment != "production":
            return self
        problems = []
        if self.pii_encryption_key is None or self.pii_hash_key is None:
            problems.append("IDCODE_PII_ENCRYPTION_KEY and IDCODE_PII_HASH_KEY must be set")
        if self.oidc_issuer == DEV_IDP_ISSUER:
            problems.append("IDCODE_OIDC_ISSUER must name the city's identity provider")
        if self.oidc_jwks_url is None and self.oidc_jwks_file is None:
            problems.append("IDCODE_OIDC_JWKS_URL (or _FILE) must be set")
        if self.oidc_jwks_url is not None and not self.oidc_jwks_url.startswith("https://"):
            problems.append("IDCODE_OIDC_JWKS_URL must be https: the keys decide who is who")
        if self.demo_data:
            problems.append("IDCODE_DEMO_DATA must be false")
        for name in ("wallet_authorization_endpoint", "wallet_token_endpoint"):
            endpoint = getattr(self, name)
            if endpoint is not None and not endpoint.startswith("https://"):
                problems.append(f"IDCODE_{name.upper()} must be https: it carries sign-ins")
        if problems:
            raise ValueError("production mode refuses development defaults: " + "; ".join(problems))
        return self

    @property
    def development(self) -> bool:
        return self.environment == "development"

    @property
    def dev_idp_serves_wallet(self) -> bool:
        """Whether the service's development identity provider signs the wallet's citizens in:
        development, its issuer trusted, and no other provider named for the wallet."""
        return (
            self.development
            and self.oidc_issuer == DEV_IDP_ISSUER
            and self.wallet_authorization_endpoint is None
        )

    @property
    def wallet_client(self) -> str:
        """The wallet's OIDC client id: its setting, or the audience of the ID tokens."""
        return self.wallet_client_id or self.oidc_audience

    @property
    def console_client(self) -> str:
        """The console's OIDC client id: its setting, or the wallet's."""
        return self.console_client_id or self.wallet_client

    @property
    def sqlalchemy_url(self) -> str:
        """The database URL with the driver SQLAlchemy should use (psycopg 3 for PostgreSQL)."""
        url = self.database_url or f"sqlite:///{self.data_dir / 'idcode.db'}"
        for scheme in ("postgresql://", "postgres://"):
            if url.startswith(scheme):
                return "postgresql+psycopg://" + url[len(scheme) :]
        return url


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process's settings, read from the environment on first use; ConfigurationError
    names each bad variable."""
    try:
        return Settings()
    except ValidationError as exc:
        raise ConfigurationError(describe_settings_error(exc)) from None
    except SettingsError as exc:  # e.g. a list setting that is not JSON
        raise ConfigurationError(f"bad settings: {exc}") from None
