"""``idcode demo`` under the GM crypto profile: SM2-signed codes admitted at every scene."""

from __future__ import annotations

import io
import re
from pathlib import Path
from typing import Any

import pytest

from idcode.cose import Algorithm
from idcode.demo.city import run
from idcode.keystore import configured_key_store
from idcode.profiles import ProfileName
from idcode.service.settings import Settings
from idcode.terminal.runtime import TerminalRuntime
from tests.integration.test_citydemo import SCENE_DENIALS

# A row of the demo's table: the terminal in 20 columns, then its scans and admissions.
TABLE_ROW = re.compile(r"^(?P<terminal>\S.{19})\s*(?P<scans>\d+)\s+(?P<admitted>\d+)  ")


def test_gm_demo_admits_sm2_codes_at_every_scene_and_uploads_exactly(tmp_path: Path) -> None:
    out = io.StringIO()

    status = run(out, citizens=60, seed=11, workdir=tmp_path, profile=ProfileName.GM)

    report = out.getvalue()
    assert status == 0, report
    assert "crypto profile gm: codes signed with SM2, the terminals accept SM2" in report
    # The only issuer keys the service had were SM2: every code it issued is SM2-signed.
    store = configured_key_store(
        Settings(keys_dir=tmp_path / "keys", crypto_profile=ProfileName.GM)
    )
    assert {key.alg for key in store.issuer_keys()} == {Algorithm.SM2}, report
    admitted: dict[str, int] = {}
    for line in report.splitlines():
        row = TABLE_ROW.match(line)
        if row and row["terminal"].strip() in SCENE_DENIALS:
            admitted.setdefault(row["terminal"].strip(), int(row["admitted"]))
    assert set(admitted) == set(SCENE_DENIALS), report
    assert all(count > 0 for count in admitted.values()), admitted
    assert "unsupported_alg" not in report, report
    assert report.count("exactly these") == len(SCENE_DENIALS), report
    assert report.rstrip().endswith("the service holds exactly the events the terminals journaled")


def test_demo_fails_when_its_terminals_refuse_the_service_s_algorithm(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The check the test above relies on can fail: a GM service with standard terminals
    (the demo's terminals before they took the profile's algorithms)."""
    from idcode.demo import city

    class StandardTerminal(TerminalRuntime):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **{**kwargs, "algorithms": (Algorithm.EDDSA,)})

    monkeypatch.setattr(city, "TerminalRuntime", StandardTerminal)
    out = io.StringIO()

    status = city.run(out, citizens=20, seed=5, workdir=tmp_path, profile=ProfileName.GM)

    report = out.getvalue()
    assert status == 1, report
    assert "CHECK FAILED: unsupported_alg at community gate" in report, report
