"""`idcode bundle` and `idcode verify --bundle`: offline verification against a trust bundle."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest


def idcode(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("IDCODE_")}
    return subprocess.run(
        [sys.executable, "-m", "idcode.cli", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture
def city(tmp_path: Path) -> Path:
    assert idcode(tmp_path, "keys", "init").returncode == 0
    return tmp_path


def reasons(result: subprocess.CompletedProcess[str]) -> list[str]:
    return [json.loads(line)["reason"] for line in result.stdout.splitlines()]


def test_verify_with_a_bundle_denies_revoked_cards_and_passes_the_others(city: Path) -> None:
    revoked = idcode(city, "mint", "--status-index", "7").stdout.strip()
    fine = idcode(city, "mint", "--status-index", "8").stdout.strip()
    made = idcode(city, "bundle", "-o", "trust.jwt", "--revoked", "7")
    assert made.returncode == 0, made.stderr
    result = idcode(city, "verify", "--bundle", "trust.jwt", revoked, fine)
    assert reasons(result) == ["revoked", "ok"]
    assert result.returncode == 1


def test_a_stale_bundle_gives_stale_trust_or_a_warning_when_allowed(city: Path) -> None:
    issued = str(int(time.time()))
    later = str(int(issued) + 120)  # past the bundle's max-age and the code's expiry + skew
    code = idcode(city, "mint", "--at", issued).stdout.strip()
    assert (
        idcode(city, "bundle", "-o", "trust.jwt", "--max-age", "60", "--at", issued).returncode == 0
    )
    stale = idcode(city, "verify", "--bundle", "trust.jwt", "--at", later, code)
    assert reasons(stale) == ["stale_trust"]
    lenient = idcode(city, "verify", "--bundle", "trust.jwt", "--allow-stale", "--at", later, code)
    assert reasons(lenient) == ["expired"]  # judged as usual: the code itself is too old by then


def test_a_bundle_from_another_city_is_refused_with_a_clear_error(
    city: Path, tmp_path: Path
) -> None:
    code = idcode(city, "mint").stdout.strip()
    (city / "root.json").write_text(idcode(city, "keys", "jwks", "--root").stdout)
    other = tmp_path / "other"
    other.mkdir()
    assert idcode(other, "keys", "init").returncode == 0
    assert idcode(other, "bundle", "-o", str(city / "evil.jwt")).returncode == 0
    result = idcode(city, "verify", "--bundle", "evil.jwt", "--root", "root.json", code)
    assert result.returncode == 2
    assert "pinned root key" in result.stderr
    assert "Traceback" not in result.stderr
