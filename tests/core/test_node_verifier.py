"""The Node.js example verifier passes every test vector: the spec is enough to interoperate."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "node-verifier"
VECTORS = ROOT / "examples" / "test-vectors"

pytestmark = pytest.mark.node


@pytest.fixture
def node() -> str:
    """The node executable; the tests skip where the example cannot run."""
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not on PATH")
    if not (EXAMPLE / "node_modules").is_dir():
        pytest.skip(
            "examples/node-verifier/node_modules is missing: "
            "run `npm ci --prefix examples/node-verifier`"
        )
    return node


def run_node_verifier(node: str, vector_dir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [node, str(EXAMPLE / "verify.mjs"), str(vector_dir)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def assert_all_pass(result: subprocess.CompletedProcess[str], count: int) -> None:
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    lines = result.stdout.splitlines()
    assert lines[-1] == f"{count} passed, 0 failed", output
    assert sum(line.startswith("PASS ") for line in lines) == count, output


def test_committed_vectors(node: str) -> None:
    cases = VECTORS / "cases"
    assert_all_pass(run_node_verifier(node, cases), len(list(cases.glob("*.json"))))


def test_freshly_generated_vectors(node: str, tmp_path: Path) -> None:
    # New keys and signatures on every run: the Node verifier cannot pass by accident of
    # the committed bytes.
    generated = subprocess.run(
        [sys.executable, str(VECTORS / "generate.py"), str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert generated.returncode == 0, generated.stdout + generated.stderr
    count = len(list(tmp_path.glob("*.json")))
    assert count == len(list((VECTORS / "cases").glob("*.json")))
    assert_all_pass(run_node_verifier(node, tmp_path), count)
