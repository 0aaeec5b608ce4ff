"""A terminal started with options no trust bundle can make right (no lane, a mode that does
not exist) stops at once with exit status 2 and the reason, before it syncs or journals:
otherwise it would deny every scan as stale_trust and say why only in its log."""

from __future__ import annotations

import io
import uuid
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from idcode.cli import main
from idcode.config import core_settings
from idcode.cose import Algorithm
from idcode.gm import SM2PrivateKey
from idcode.keystore import RootKey
from idcode.terminal import identity as identities
from idcode.terminal.identity import TerminalIdentity, new_terminal_key
from idcode.terminal.runtime import JOURNAL_FILE

CASES = [
    ("parking", [], "needs the option lane=entry or lane=exit (got none)"),
    ("parking", ["lane=exti"], "lane=entry or lane=exit (got 'exti')"),
    ("eldercare", [], "needs the option mode: canteen or home_care"),
    ("eldercare", ["mode=kitchen"], "not 'kitchen'"),
    ("culture", ["mode=gate"], "mode=entry or mode=loan ('gate')"),
    ("employment", [], "needs the option stand=<id>"),
    ("transport", [], "needs the option line="),
    ("transport", ["line=line 1"], "option line must be a line id"),
    ("transport", ["line="], "option line must be a line id"),
    ("employment", ["stand=A-01"], "option stand must be a stand id"),
    ("merchant", ["discount=Senior Day"], "must name a discount"),
]


@pytest.mark.parametrize(
    ("scene", "options", "message"), CASES, ids=[f"{c[0]}-{'-'.join(c[1])}" for c in CASES]
)
def test_a_terminal_with_options_no_bundle_can_fix_does_not_start(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    scene: str,
    options: list[str],
    message: str,
) -> None:
    directory = tmp_path / "terminal"
    root = RootKey("R", Ed25519PrivateKey.generate()).public_jwk
    # No service listens on port 9: a terminal that started would only log sync failures.
    identities.save(
        directory,
        TerminalIdentity(
            str(uuid.uuid4()), scene, "site-1", "http://127.0.0.1:9", new_terminal_key(), root
        ),
    )
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    flags = [flag for option in options for flag in ("--option", option)]

    status = main(["terminal", "run", "--dir", str(directory), "--input", "stdin", *flags])

    err = capsys.readouterr().err
    assert status == 2, err
    assert message in err
    assert not (directory / JOURNAL_FILE).exists()


ALGORITHM_CASES = [
    ("standard", "SM2", "--algorithms: SM2 is not an algorithm of the standard crypto profile"),
    ("standard", "EdDSA,SM2", "SM2 is not an algorithm of the standard crypto profile"),
    ("gm", "EdDSA", "--algorithms: EdDSA is not an algorithm of the gm crypto profile"),
    ("gm", "SM3", "--algorithms: unknown algorithm 'SM3'"),
]


@pytest.mark.parametrize(
    ("profile", "algorithms", "message"),
    ALGORITHM_CASES,
    ids=[f"{c[0]}-{c[1]}" for c in ALGORITHM_CASES],
)
def test_a_terminal_asked_to_accept_another_profiles_algorithm_does_not_start(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    profile: str,
    algorithms: str,
    message: str,
) -> None:
    directory = tmp_path / "terminal"
    # A root of the terminal's profile: one of the other is refused before the options are.
    root_key = SM2PrivateKey.generate() if profile == "gm" else Ed25519PrivateKey.generate()
    root = RootKey("R", root_key).public_jwk
    # And a key of its profile: one of the other is refused too (test_terminal_gm_key.py).
    key = new_terminal_key(Algorithm.SM2 if profile == "gm" else Algorithm.EDDSA)
    identities.save(
        directory,
        TerminalIdentity(str(uuid.uuid4()), "community", "site-1", "http://127.0.0.1:9", key, root),
    )
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    monkeypatch.setenv("IDCODE_CRYPTO_PROFILE", profile)
    core_settings.cache_clear()
    try:
        status = main(
            ["terminal", "run", "--dir", str(directory), "--algorithms", algorithms, "--offline"]
        )
    finally:
        monkeypatch.delenv("IDCODE_CRYPTO_PROFILE")
        core_settings.cache_clear()

    err = capsys.readouterr().err
    assert status == 2, err
    assert message in err
    assert not (directory / JOURNAL_FILE).exists()


@pytest.mark.parametrize(
    ("profile", "wanted"), [("gm", "public SM2 JWK"), ("standard", "public Ed25519 JWK")]
)
def test_a_terminal_whose_pinned_root_is_of_the_other_profile_does_not_start(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    profile: str,
    wanted: str,
) -> None:
    directory = tmp_path / "terminal"
    root_key = Ed25519PrivateKey.generate() if profile == "gm" else SM2PrivateKey.generate()
    identities.save(
        directory,
        TerminalIdentity(
            str(uuid.uuid4()),
            "community",
            "site-1",
            "http://127.0.0.1:9",
            new_terminal_key(),
            RootKey("R", root_key).public_jwk,
        ),
    )
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    monkeypatch.setenv("IDCODE_CRYPTO_PROFILE", profile)
    core_settings.cache_clear()
    try:
        status = main(["terminal", "run", "--dir", str(directory), "--offline"])
    finally:
        monkeypatch.delenv("IDCODE_CRYPTO_PROFILE")
        core_settings.cache_clear()

    err = capsys.readouterr().err
    assert status != 0, err
    assert f"the root key must be a {wanted} (the {profile} crypto profile's)" in err
    assert not (directory / JOURNAL_FILE).exists()
