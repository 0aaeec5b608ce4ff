"""A terminal's own key under the crypto profiles: provisioned under gm against a live gm service
(PostgreSQL, Redis) it is SM2, registered as such, and its SM2 request tokens fetch a bundle that
verifies with the pinned SM2 root; a terminal directory of the other profile does not load."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from idcode.bundle import verify_bundle
from idcode.cli import main
from idcode.config import core_settings
from idcode.cose import Algorithm
from idcode.errors import ProvisioningError
from idcode.gm import SM2PrivateKey
from idcode.keystore import RootKey
from idcode.profiles import GM, ProfileName
from idcode.terminal import identity as identities
from idcode.terminal.client import TerminalClient
from idcode.terminal.identity import TerminalIdentity, new_terminal_key
from tests.live import live_service, live_settings


@pytest.fixture
def profile_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[str], None]]:
    """Sets IDCODE_CRYPTO_PROFILE for the terminal side (core_settings), undone afterwards."""

    def use(profile: str) -> None:
        monkeypatch.setenv("IDCODE_CRYPTO_PROFILE", profile)
        core_settings.cache_clear()

    yield use
    monkeypatch.delenv("IDCODE_CRYPTO_PROFILE", raising=False)
    core_settings.cache_clear()


def test_a_terminal_provisioned_under_gm_signs_sm2_tokens_its_service_accepts(
    tmp_path: Path,
    fresh_postgres_url: Callable[..., str],
    redis_url: str,
    profile_env: Callable[[str], None],
) -> None:
    profile_env("gm")
    settings = live_settings(tmp_path, fresh_postgres_url(), redis_url, "gm-terminal")
    settings = settings.model_copy(update={"crypto_profile": ProfileName.GM})
    with live_service(settings) as service:
        root = tmp_path / "root.json"
        root.write_text(json.dumps(service.root_jwk))
        directory = tmp_path / "gate"
        operator = service.tokens.operator()["Authorization"].removeprefix("Bearer ")
        status = main(
            [
                "terminal", "provision", "--dir", str(directory), "--server", service.url,
                "--scene", "community", "--site", "gate-gm", "--root", str(root),
                "--operator-token", operator,
            ]
        )  # fmt: skip
        assert status == 0
        identity = identities.load(directory)
        assert isinstance(identity.private_key, SM2PrivateKey)
        assert identity.alg == "SM2"
        assert json.loads((directory / identities.IDENTITY_FILE).read_text())["alg"] == "SM2"

        bundle, _ = TerminalClient(identity).trust_bundle(None)
        assert bundle is not None
        held = verify_bundle(bundle, identity.root_jwk, GM)  # the service's SM2 root signed it
        assert {key.alg for key in held.keys} == {Algorithm.SM2}


@pytest.mark.parametrize(
    ("profile", "held", "wanted"), [("gm", "EdDSA", "SM2"), ("standard", "SM2", "EdDSA")]
)
def test_a_terminal_whose_key_is_of_the_other_profile_does_not_load(
    tmp_path: Path, profile_env: Callable[[str], None], profile: str, held: str, wanted: str
) -> None:
    # The root is of the loading profile: only the terminal's own key is wrong.
    root_key = SM2PrivateKey.generate() if profile == "gm" else Ed25519PrivateKey.generate()
    directory = tmp_path / "gate"
    identities.save(
        directory,
        TerminalIdentity(
            str(uuid.uuid4()),
            "community",
            "site-1",
            "http://127.0.0.1:9",
            new_terminal_key(Algorithm.from_name(held, exact=True)),
            RootKey("R", root_key).public_jwk,
        ),
    )
    profile_env(profile)
    with pytest.raises(ProvisioningError) as refused:
        identities.load(directory)
    assert f"signs with {held}, but the {profile} crypto profile's terminals sign with " in str(
        refused.value
    )
    assert str(refused.value).split("sign with ")[1].startswith(wanted)
