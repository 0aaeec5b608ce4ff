"""A new scene from another package: the example library adapter (examples/library-adapter),
tested with the shipped helpers, and made known to the SDK and the service by its entry point.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from idcode.claims import Residency
from idcode.errors import SceneError
from idcode.scenes import load_adapter, scene_names
from idcode.testing import TestIssuer, TestTerminal
from tests.services import Tokens

EXAMPLE = Path(__file__).parents[2] / "examples" / "library-adapter"


@pytest.fixture
def library(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Any:
    """The example installed as a distribution would be: its module importable and its
    entry point declared in a .dist-info directory on sys.path."""
    dist_info = tmp_path / "idcode_library_example-1.0.0.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: idcode-library-example\nVersion: 1.0.0\n"
    )
    (dist_info / "entry_points.txt").write_text(
        "[idcode.scenes]\nlibrary = idcode_library:Adapter\n"
    )
    monkeypatch.syspath_prepend(str(EXAMPLE))
    monkeypatch.syspath_prepend(str(tmp_path))
    import idcode_library

    return idcode_library


def test_the_examples_readme_python_runs_as_written(library: Any) -> None:
    """Regression (issue 15, 6j): the example had no README, unlike every other example."""
    readme = (EXAMPLE / "README.md").read_text(encoding="utf-8")
    [block] = re.findall(r"```python\n(.*?)```", readme, flags=re.DOTALL)
    exec(compile(block, "README.md", "exec"), {})  # noqa: S102  (our own README)
    assert "pip install -e examples/library-adapter" in readme
    assert "(idcode_library.py)" in readme and "docs/adapters.md" in readme


def test_library_adapter_is_a_new_scene_in_under_60_lines() -> None:
    assert len((EXAMPLE / "idcode_library.py").read_text().splitlines()) < 60


def test_library_gate_admits_once_a_day_within_capacity(library: Any) -> None:
    issuer = TestIssuer()
    gate = TestTerminal(issuer.bundle("library", data={"daily_capacity": 2}), library.Adapter)

    first, second, third = (issuer.mint() for _ in range(3))
    card = issuer.mint(residency=Residency.NON_RESIDENT)

    assert gate.scan(first).admitted
    assert gate.scan(card).result["visitor"] is True
    assert gate.scan(third).reason == "capacity_reached"
    assert gate.scan(second).reason == "capacity_reached"
    assert gate.scan(issuer.mint(at=issuer.now + 86_400), at=issuer.now + 86_400).admitted


def test_library_gate_refuses_visitors_where_the_library_says_so(library: Any) -> None:
    issuer = TestIssuer()
    gate = TestTerminal(issuer.bundle("library", data={"visitors": False}), library.Adapter)

    assert gate.scan(issuer.mint(residency=Residency.NON_RESIDENT)).reason == (
        "visitors_not_admitted"
    )
    assert gate.scan(issuer.mint(residency=Residency.PERMIT)).admitted


def test_entry_point_makes_the_scene_known_and_loadable(library: Any) -> None:
    assert "library" in scene_names()
    assert load_adapter("library") is library.Adapter


def test_unknown_scene_names_the_known_ones() -> None:
    with pytest.raises(SceneError, match="known are community, parking, tourism, eldercare"):
        load_adapter("cinema")


def test_service_registers_terminals_and_validates_scene_data_of_a_plugin_scene(
    library: Any, client: TestClient, tokens: Tokens
) -> None:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from idcode.terminal.identity import public_jwk_of

    body = {
        "scene": "library",
        "site": "main-hall",
        "public_jwk": public_jwk_of(Ed25519PrivateKey.generate()),
    }
    registered = client.post("/v1/terminals", json=body, headers=tokens.operator())
    stored = client.put(
        "/v1/scenes/library/main-hall", json={"daily_capacity": 500}, headers=tokens.operator()
    )
    refused = client.put(
        "/v1/scenes/library/main-hall", json={"daily_capacity": 0}, headers=tokens.operator()
    )

    assert registered.status_code == 201, registered.text
    assert stored.status_code == 200, stored.text
    assert refused.status_code == 422 and refused.json()["reason"] == "invalid_scene_data"
