"""The committed test vectors: our verifier agrees with every case, and the layers are true.

Version 1 cases follow docs/code-format.md section 2, device codes (version 2) section 8; a
case's ``expected.steps`` tells which.
"""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import base45
import cbor2
import pytest

from idcode.cose import Algorithm
from idcode.keys import keys_from_jwks
from idcode.replay import ReplayCache
from idcode.statuslist import StatusList, device_ids_from_json
from idcode.verifier import Trust, Verdict, verify

VECTORS = Path(__file__).parents[2] / "examples" / "test-vectors"
CASES = sorted((VECTORS / "cases").glob("*.json"))


DEVICE_STEP = "device_signature"  # a step only section 8 has


def load(path: Path) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(path.read_text())
    return document


def is_device_case(vector: dict[str, Any]) -> bool:
    return DEVICE_STEP in vector["expected"]["steps"]


DEVICE_CASES = [path for path in CASES if is_device_case(load(path))]


def run_vector(vector: dict[str, Any]) -> Verdict:
    trust_spec = vector["trust"]
    status = trust_spec.get("status")
    trust = Trust.of(
        keys_from_jwks(trust_spec["jwks"]),
        prefix=trust_spec["prefix"],
        algorithms=[Algorithm.from_name(name) for name in trust_spec["algorithms"]],
        clock_skew=trust_spec["clock_skew"],
        max_lifetime=trust_spec["max_lifetime"],
        status=None if status is None else StatusList.from_json(status),
        fresh_until=trust_spec.get("fresh_until"),
        revoked_devices=device_ids_from_json(trust_spec.get("revoked_devices", [])),
    )
    replay = ReplayCache()
    for code_id in vector["replay_seen"]:
        replay.check_and_record(bytes.fromhex(code_id), 2**32, 0)
    return verify(vector["code"], trust, vector["validation_clock_epoch"], replay)


def test_there_are_at_least_25_vectors_and_most_are_negative() -> None:
    outcomes = [load(path)["expected"]["valid"] for path in CASES]
    assert len(outcomes) >= 25
    assert outcomes.count(False) > len(outcomes) / 2


def test_vectors_cover_every_verification_step_of_both_versions() -> None:
    failing: dict[tuple[str, ...], set[str]] = defaultdict(set)
    for path in CASES:
        steps = load(path)["expected"]["steps"]
        failing[tuple(steps)] |= {step for step, passed in steps.items() if passed is False}
    assert len(failing) == 2  # section 2's steps and section 8's
    for order, failed in failing.items():
        assert failed == set(order)


def test_device_vectors_cover_both_device_keys_under_both_issuer_algorithms() -> None:
    valid = [load(path) for path in DEVICE_CASES if load(path)["expected"]["valid"]]
    pairs = set()
    for vector in valid:
        credential = vector["layers"]["credential"]
        issuer = next(k for k in vector["trust"]["jwks"]["keys"] if k["kid"] == credential["kid"])
        pairs.add((credential["kind"], issuer["alg"]))
    assert pairs == {(1, "EdDSA"), (2, "EdDSA"), (1, "ES256"), (2, "ES256")}
    assert len(DEVICE_CASES) - len(valid) > len(valid)


@pytest.mark.parametrize("path", CASES, ids=[path.stem for path in CASES])
def test_vector_verdict_matches_expected_reason(path: Path) -> None:
    vector = load(path)
    verdict = run_vector(vector)
    assert verdict.reason.value == vector["expected"]["reason"], verdict.detail
    assert verdict.valid is vector["expected"]["valid"]
    if verdict.valid and is_device_case(vector):
        # The verdict names the device that made the code, as the layers compute it.
        assert verdict.device is not None
        assert verdict.device.hex() == vector["layers"]["device_id"]


#: How the reference verifier's detail tells a device code's failing step from the other
#: steps with the same reason (docs/code-format.md section 8).
DEVICE_STEP_DETAILS = {
    "trust_fresh": "max-age",
    "length": "longer than",
    "unprefix": "expected prefix",
    "base45_decode": "base45",
    "key_found": "is not trusted",
    "alg_accepted": "key '",
    "issuer_signature": "the credential's issuer signature",
    "key_signing_period": "outside the key's signing period",
    "device_signature": "the device signature",
    "credential_not_expired": "the phone must go online to renew it",
    "made_before_credential_expiry": "made after the device's credential expired",
    "not_expired": "an old code, or the phone's clock is behind",
    "not_before_issued": "the phone's clock is ahead",
    "device_not_removed": "the citizen removed this device",
}


@pytest.mark.parametrize("path", DEVICE_CASES, ids=[path.stem for path in DEVICE_CASES])
def test_device_vector_fails_at_the_step_it_names(path: Path) -> None:
    vector = load(path)
    failed = [step for step, passed in vector["expected"]["steps"].items() if passed is False]
    detail = run_vector(vector).detail
    if failed and failed[0] in DEVICE_STEP_DETAILS:
        assert DEVICE_STEP_DETAILS[failed[0]] in detail
    # No other step's detail: the code fails where the vector says, not at a later step
    # that happens to give the same reason.
    for step, words in DEVICE_STEP_DETAILS.items():
        if step not in failed and step != "base45_decode":
            assert words not in detail, step


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
    if "credential_hex" in layers:
        check_device_layers(vector)


def check_device_layers(vector: dict[str, Any]) -> None:
    """A device code's layers, recomputed with cbor2 and hashlib from the COSE bytes."""
    layers = vector["layers"]
    _, _, payload, _ = cbor2.loads(bytes.fromhex(layers["cose_hex"]))
    iat, cti, credential, issuer_signature = cbor2.loads(payload)
    assert (iat, cti.hex()) == (layers["iat"], layers["cti"])
    assert credential.hex() == layers["credential_hex"]
    assert issuer_signature.hex() == layers["issuer_signature_hex"]
    fields = layers["credential"]
    assert bytes([fields["kind"]]) + fields["kid"].encode("latin-1") == credential[:2]
    assert fields["exp"].to_bytes(4, "big").hex() + fields["card_hex"] == credential[2:17].hex()
    key = credential[17:]
    assert fields["device_key_hex"] == key.hex()
    if "device_id" in layers:
        assert layers["device_id"] == hashlib.sha256(key).digest()[:8].hex()
    jwk = layers.get("device_key_jwk")
    if jwk is not None:
        x = base64.urlsafe_b64decode(jwk["x"] + "=")
        if jwk["kty"] == "OKP":
            assert x == key
        else:  # SEC 1 compressed point: 02 or 03 by the parity of y, then x
            y = base64.urlsafe_b64decode(jwk["y"] + "=")
            assert bytes([2 + (y[-1] & 1)]) + x == key
    if layers.get("issuer_protected_hex") is not None:
        issuer = next(k for k in vector["trust"]["jwks"]["keys"] if k["kid"] == fields["kid"])
        header = cbor2.dumps({1: {"EdDSA": -8, "ES256": -7}[issuer["alg"]], 4: credential[1:2]})
        assert header.hex() == layers["issuer_protected_hex"]
        signed = cbor2.dumps(["Signature1", header, b"", credential])
        assert signed.hex() == layers["issuer_sig_structure_hex"]


def test_layers_decode_exactly_as_far_as_the_steps_say() -> None:
    # A case whose text is not base45 has no COSE layer, and one whose base45 step passed has.
    for path in CASES:
        vector = load(path)
        decoded = vector["expected"]["steps"]["base45_decode"]
        if decoded is not None:
            assert (vector["layers"]["cose_hex"] is not None) is decoded, path.name
        # The reference decoder agrees (its detail names base45 when that step fails).
        if decoded is False:
            assert "base45" in run_vector(vector).detail, path.name


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
    for path, committed in zip(fresh, CASES, strict=True):
        vector = load(path)
        assert run_vector(vector).reason.value == vector["expected"]["reason"], path.name
        # New keys and signatures, the same structure: every member, its type and, for
        # everything but keys and bytes, its value.
        assert shape(vector) == shape(load(committed)), path.name
        assert vector["expected"] == load(committed)["expected"]


def shape(document: object) -> object:
    """The structure of a vector: members and types, byte and key values left out."""
    if isinstance(document, dict):
        return {name: shape(value) for name, value in document.items()}
    if isinstance(document, list):
        return [shape(item) for item in document]
    return type(document).__name__


def test_generator_keeps_existing_cases_byte_for_byte(tmp_path: Path) -> None:
    for path in CASES:
        (tmp_path / path.name).write_bytes(path.read_bytes())
    missing = [CASES[0], DEVICE_CASES[0]]
    for path in missing:
        (tmp_path / path.name).unlink()
    subprocess.run(
        [sys.executable, str(VECTORS / "generate.py"), "--keep-existing", str(tmp_path)],
        check=True,
        capture_output=True,
    )
    for path in CASES:
        written = (tmp_path / path.name).read_bytes()
        assert (written == path.read_bytes()) is (path not in missing), path.name
        assert (
            run_vector(load(tmp_path / path.name)).reason.value
            == (load(path)["expected"]["reason"])
        )
