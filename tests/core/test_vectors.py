"""The committed test vectors: our verifier agrees with every case, and the layers are true."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import base45
import cbor2
import pytest

from idcode.cose import Algorithm
from idcode.keys import keys_from_jwks
from idcode.replay import ReplayCache
from idcode.verifier import Trust, Verdict, verify

VECTORS = Path(__file__).parents[2] / "examples" / "test-vectors"
CASES = sorted((VECTORS / "cases").glob("*.json"))


def load(path: Path) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(path.read_text())
    return document


def run_vector(vector: dict[str, Any]) -> Verdict:
    trust_spec = vector["trust"]
    trust = Trust.of(
        keys_from_jwks(trust_spec["jwks"]),
        prefix=trust_spec["prefix"],
        algorithms=[Algorithm.from_name(name) for name in trust_spec["algorithms"]],
        clock_skew=trust_spec["clock_skew"],
        max_lifetime=trust_spec["max_lifetime"],
    )
    replay = ReplayCache()
    for code_id in vector["replay_seen"]:
        replay.check_and_record(bytes.fromhex(code_id), 2**32, 0)
    return verify(vector["code"], trust, vector["validation_clock_epoch"], replay)


def test_there_are_at_least_25_vectors_and_most_are_negative() -> None:
    outcomes = [load(path)["expected"]["valid"] for path in CASES]
    assert len(outcomes) >= 25
    assert outcomes.count(False) > len(outcomes) / 2


def test_vectors_cover_every_verification_step() -> None:
    failing_steps = {
        step
        for path in CASES
        for step, passed in load(path)["expected"]["steps"].items()
        if passed is False
    }
    all_steps = set(load(CASES[0])["expected"]["steps"])
    assert failing_steps == all_steps


@pytest.mark.parametrize("path", CASES, ids=[path.stem for path in CASES])
def test_vector_verdict_matches_expected_reason(path: Path) -> None:
    vector = load(path)
    verdict = run_vector(vector)
    assert verdict.reason.value == vector["expected"]["reason"], verdict.detail
    assert verdict.valid is vector["expected"]["valid"]


@pytest.mark.parametrize("path", CASES, ids=[path.stem for path in CASES])
def test_vector_layers_are_the_layers_of_its_code(path: Path) -> None:
    vector = load(path)
    layers = vector["layers"]
    assert vector["code"] == layers["prefix"] + layers["base45"]
    if layers["cose_hex"] is not None:
        assert base45.b45decode(layers["base45"]).hex() == layers["cose_hex"]
    if "payload_hex" in layers:
        protected, _, payload, signature = cbor2.loads(bytes.fromhex(layers["cose_hex"]))
        assert protected.hex() == layers["protected_hex"]
        assert payload.hex() == layers["payload_hex"]
        assert signature.hex() == layers["signature_hex"]
        sig_structure = cbor2.dumps(["Signature1", protected, b"", payload])
        assert sig_structure.hex() == layers["sig_structure_hex"]


def test_steps_after_the_failing_one_are_not_reached() -> None:
    for path in CASES:
        steps = list(load(path)["expected"]["steps"].values())
        if False in steps:
            failed_at = steps.index(False)
            assert all(steps[:failed_at]) and all(s is None for s in steps[failed_at + 1 :])
        else:
            assert all(steps)


def test_generator_regenerates_vectors_that_still_verify(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, str(VECTORS / "generate.py"), str(tmp_path)],
        check=True,
        capture_output=True,
    )
    fresh = sorted(tmp_path.glob("*.json"))
    assert [path.name for path in fresh] == [path.name for path in CASES]
    for path in fresh:
        vector = load(path)
        assert run_vector(vector).reason.value == vector["expected"]["reason"], path.name
