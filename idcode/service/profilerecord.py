"""The crypto profile a database was written under, recorded in it, and the check that the
service's configured profile is that one: the lookup hashes and ciphertexts it holds, and the
subject keys terminals and relying parties were given, depend on the profile
(docs/crypto-profiles.md, "Personal data under the GM profile")."""

from __future__ import annotations

from sqlalchemy import Engine, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from idcode.errors import ConfigurationError
from idcode.profiles import CryptoProfile
from idcode.service.models import DeploymentSetting

PROFILE_SETTING = "crypto_profile"


def recorded_profile(engine: Engine) -> str | None:
    """The profile recorded in the database, or None where none is yet."""
    with Session(engine) as session:
        return session.scalar(
            select(DeploymentSetting.value).where(DeploymentSetting.name == PROFILE_SETTING)
        )


def check_recorded_profile(engine: Engine, profile: CryptoProfile) -> None:
    """Record ``profile`` in a database that has none yet; ConfigurationError, one line, when
    the database records another one."""
    recorded = recorded_profile(engine)
    if recorded is None:
        try:
            with Session(engine) as session, session.begin():
                session.add(DeploymentSetting(name=PROFILE_SETTING, value=profile.name))
        except IntegrityError:  # another replica recorded one first: check against it
            pass
        recorded = recorded_profile(engine)
    if recorded != profile.name:
        raise ConfigurationError(
            f"the database was written under the {recorded} crypto profile, but "
            f"IDCODE_CRYPTO_PROFILE is {profile.name}: its lookup hashes, ciphertexts and "
            f"subject keys are {recorded}'s; set IDCODE_CRYPTO_PROFILE={recorded}, or move the "
            f"cards to a new database of the {profile.name} profile (docs/crypto-profiles.md)"
        )
