"""What every idcode command promises: its exit statuses (docs/cli.md), --version, a quiet end
when its reader goes away, a clear word when an extra is missing, and core and terminal
commands that never read the service's settings."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from idcode import __version__
from idcode.cli import EXIT_BROKEN_PIPE, EXIT_INVALID, EXIT_OK, EXIT_UNAVAILABLE, EXIT_USAGE


def idcode(
    tmp_path: Path, *args: str, env: dict[str, str] | None = None, prelude: str = ""
) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("IDCODE_")}
    environment["IDCODE_KEYS_DIR"] = str(tmp_path / "keys")
    environment.update(env or {})
    script = f"{prelude}\nimport sys\nfrom idcode.cli import main\nsys.exit(main(sys.argv[1:]))"
    return subprocess.run(
        [sys.executable, "-c", script, *args],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=environment,
        timeout=120,
        check=False,
    )


def test_exit_statuses_are_distinct() -> None:
    statuses = [EXIT_OK, EXIT_INVALID, EXIT_USAGE, EXIT_UNAVAILABLE, EXIT_BROKEN_PIPE]
    assert statuses == [0, 1, 2, 3, 141]


def test_version_prints_the_installed_version(tmp_path: Path) -> None:
    result = idcode(tmp_path, "--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"idcode {__version__}"
    assert __version__ != "0+unknown"  # read from the installed distribution


def test_verify_piped_into_a_reader_that_stops_ends_quietly(tmp_path: Path) -> None:
    minted = idcode(tmp_path, "mint")
    assert minted.returncode == 0, minted.stderr
    codes = tmp_path / "codes.txt"  # far more verdicts than a pipe buffer holds
    codes.write_text((minted.stdout.strip() + "\n") * 20_000)
    environment = {k: v for k, v in os.environ.items() if not k.startswith("IDCODE_")}
    environment["IDCODE_KEYS_DIR"] = str(tmp_path / "keys")
    with codes.open("rb") as stdin:
        verify = subprocess.Popen(
            [sys.executable, "-m", "idcode.cli", "verify", "--no-replay-check", "-"],
            stdin=stdin,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=tmp_path,
            env=environment,
        )
    assert verify.stdout is not None
    first = verify.stdout.readline()  # as `| head -1` does, then goes away
    verify.stdout.close()
    status = verify.wait(timeout=120)
    assert verify.stderr is not None
    with verify.stderr:
        stderr = verify.stderr.read().decode()
    assert b'"valid":true' in first
    assert status == EXIT_BROKEN_PIPE, stderr
    assert stderr == ""  # no traceback, no "Exception ignored"


def test_terminal_commands_do_not_read_the_services_settings(tmp_path: Path) -> None:
    """A production terminal has no personal-data keys; the service's settings would ask for
    them. (Before, `idcode terminal status` failed asking for IDCODE_PII_ENCRYPTION_KEY.)"""
    result = idcode(
        tmp_path,
        "terminal",
        "status",
        "--dir",
        str(tmp_path / "gate"),
        env={"IDCODE_ENVIRONMENT": "production"},
    )
    assert result.returncode == EXIT_USAGE
    assert "holds no provisioned terminal" in result.stderr
    assert "IDCODE_PII" not in result.stderr


def test_core_commands_do_not_read_the_services_settings(tmp_path: Path) -> None:
    result = idcode(
        tmp_path, "mint", env={"IDCODE_ENVIRONMENT": "production", "IDCODE_REDIS_URL": "x"}
    )
    assert result.returncode == EXIT_OK, result.stderr


def test_a_bad_core_setting_is_named_with_exit_status_2(tmp_path: Path) -> None:
    result = idcode(tmp_path, "mint", env={"IDCODE_CODE_TTL_SECONDS": "0"})
    assert result.returncode == EXIT_USAGE
    assert "idcode: error: bad settings: IDCODE_CODE_TTL_SECONDS" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_service_that_cannot_be_reached_is_exit_status_3(tmp_path: Path) -> None:
    (tmp_path / "root.json").write_text(
        '{"kty": "OKP", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}'
    )
    result = idcode(
        tmp_path,
        "terminal",
        "provision",
        "--dir",
        str(tmp_path / "gate"),
        "--scene",
        "community",
        "--site",
        "garden-court",
        "--server",
        "http://127.0.0.1:9",  # discard: nothing listens
        "--root",
        str(tmp_path / "root.json"),
        "--operator-token",
        "x",
    )
    assert result.returncode == EXIT_UNAVAILABLE, result.stderr
    assert result.stderr.startswith("idcode: error: cannot reach")
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("command", "missing", "extra"),
    [
        (["serve"], "pydantic_settings", "service"),
        (["demo"], "pydantic_settings", "service"),
        (["qr", "WH1:X", "-o", "code.png"], "qrcode", "qr"),
    ],
)
def test_a_command_whose_extra_is_missing_says_which_to_install(
    tmp_path: Path, command: list[str], missing: str, extra: str
) -> None:
    # As on an install without the extra: importing the library fails.
    result = idcode(tmp_path, *command, prelude=f"import sys; sys.modules[{missing!r}] = None")
    assert result.returncode == EXIT_USAGE
    assert f"needs idcode[{extra}]" in result.stderr
    assert f"pip install 'idcode[{extra}]'" in result.stderr
    assert "Traceback" not in result.stderr
