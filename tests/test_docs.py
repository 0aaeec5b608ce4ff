"""The documentation tells the truth: the worked example is the committed vector."""

from __future__ import annotations

import json
import re
from pathlib import Path

ROOT = Path(__file__).parent.parent
SPEC = (ROOT / "docs" / "code-format.md").read_text()
EXAMPLE = json.loads((ROOT / "examples/test-vectors/cases/001-valid-eddsa.json").read_text())


def test_worked_example_code_text_is_the_first_vectors() -> None:
    assert EXAMPLE["code"] in SPEC


def test_worked_example_bytes_are_the_first_vectors() -> None:
    hex_in_spec = re.sub(r"\s+", "", SPEC)
    layers = EXAMPLE["layers"]
    assert layers["cose_hex"] in hex_in_spec
    assert layers["sig_structure_hex"] in hex_in_spec


def test_worked_example_claims_are_the_first_vectors() -> None:
    claims = EXAMPLE["layers"]["claims"]
    diagnostic = (
        f"{{4: {claims['4']}, 6: {claims['6']}, 7: h'{claims['7']}', -1: h'{claims['-1']}'}}"
    )
    assert diagnostic in SPEC


def test_worked_example_key_is_the_first_vectors() -> None:
    assert json.dumps(EXAMPLE["trust"]["jwks"]["keys"][0], indent=2) in SPEC


def test_spec_lists_every_reason() -> None:
    from idcode.reasons import Reason

    for reason in Reason:
        assert f"`{reason.value}`" in SPEC
