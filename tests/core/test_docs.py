"""The documentation tells the truth: the worked example is the committed vector."""

from __future__ import annotations

import json
import re
from pathlib import Path

ROOT = Path(__file__).parents[2]
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


DEVICE_SECTION = SPEC.split("## 8. Device codes", 1)[1]
DEVICE_EXAMPLE_TEXT = DEVICE_SECTION.split("### Worked example", 1)[1]
DEVICE_EXAMPLE = json.loads(
    (ROOT / "examples/test-vectors/cases/057-device-valid-ed25519.json").read_text()
)


def test_device_worked_example_code_text_is_the_device_vectors() -> None:
    code = DEVICE_EXAMPLE["code"]
    assert code in DEVICE_EXAMPLE_TEXT
    assert f"**Code text** ({len(code)} characters" in DEVICE_EXAMPLE_TEXT


def test_device_worked_example_bytes_are_the_device_vectors() -> None:
    hex_in_spec = re.sub(r"\s+", "", DEVICE_EXAMPLE_TEXT)
    layers = DEVICE_EXAMPLE["layers"]
    for name in (
        "cose_hex",
        "sig_structure_hex",
        "credential_hex",
        "issuer_sig_structure_hex",
        "issuer_signature_hex",
        "issuer_protected_hex",
        "device_id",
    ):
        assert layers[name] in hex_in_spec, name
    credential = layers["credential"]
    annotated = [
        f"{credential['kind']:02x}   ",
        f"{ord(credential['kid']):02x}   ",
        f"{credential['exp']:08x}   ",
        f"{credential['card_hex']}   ",
        f"{credential['device_key_hex']}   ",
        f"1a {layers['iat']:08x}   ",
        f"48 {layers['cti']}   ",
    ]
    for line in annotated:
        assert line in DEVICE_EXAMPLE_TEXT, line
    assert f"**COSE_Sign1** ({len(layers['cose_hex']) // 2} bytes)" in DEVICE_EXAMPLE_TEXT
    assert f"**Payload** ({len(layers['payload_hex']) // 2} bytes)" in DEVICE_EXAMPLE_TEXT


def test_device_worked_example_keys_and_times_are_the_device_vectors() -> None:
    assert json.dumps(DEVICE_EXAMPLE["trust"]["jwks"]["keys"][0], indent=2) in DEVICE_EXAMPLE_TEXT
    assert json.dumps(DEVICE_EXAMPLE["layers"]["device_key_jwk"]) in DEVICE_EXAMPLE_TEXT
    layers = DEVICE_EXAMPLE["layers"]
    assert f"({layers['credential']['exp']})" in DEVICE_EXAMPLE_TEXT
    assert f"({layers['iat']})" in DEVICE_EXAMPLE_TEXT
    assert f"Verified at {DEVICE_EXAMPLE['validation_clock']}" in DEVICE_EXAMPLE_TEXT
    assert DEVICE_EXAMPLE["expected"]["valid"] is True


def test_device_worked_example_verdict_is_the_verifiers() -> None:
    from tests.core.test_vectors import run_vector

    verdict = run_vector(DEVICE_EXAMPLE).to_json()
    assert verdict["valid"] is True and verdict["reason"] == "ok"
    assert f'"device": "{verdict["device"]}"' in DEVICE_EXAMPLE_TEXT


def test_device_step_names_of_the_vectors_are_the_spec_tables() -> None:
    table = DEVICE_SECTION.split("### Verifying a device code", 1)[1].split("###", 1)[0]
    rows = [line.split("|") for line in table.splitlines() if re.match(r"\| \d+ \|", line)]
    listed = [(row[-2].strip().strip("`"), row[3].strip().split()[0].strip("`")) for row in rows]
    steps = DEVICE_EXAMPLE["expected"]["steps"]
    assert [name for name, _ in listed] == list(steps)
    # Each row's reason is the one a case failing at that step expects.
    cases = sorted((ROOT / "examples/test-vectors/cases").glob("*.json"))
    reasons = {}
    for path in cases:
        expected = json.loads(path.read_text())["expected"]
        for name, passed in expected["steps"].items():
            if passed is False and list(expected["steps"]) == list(steps):
                reasons[name] = expected["reason"]
    assert reasons == dict(listed)


def test_spec_lists_every_reason() -> None:
    from idcode.reasons import Reason

    for reason in Reason:
        assert f"`{reason.value}`" in SPEC


ADAPTERS_DOC = (ROOT / "docs" / "adapters.md").read_text(encoding="utf-8")


def test_adapters_doc_lists_every_scenes_reasons_and_actions() -> None:
    from idcode.scenes import SCENES, load_adapter

    rows = {
        line.split("|")[1].strip(): line
        for line in ADAPTERS_DOC.splitlines()
        if line.startswith("| ") and line.split("|")[1].strip() in SCENES
    }
    for scene in SCENES:
        adapter = load_adapter(scene)
        listed = set(re.findall(r"`([a-z_]+)`", rows[scene].split("|", 2)[2]))
        assert listed >= set(adapter.reasons) | set(adapter.actions), scene


def test_adapters_doc_example_is_the_library_adapter_as_shipped() -> None:
    shipped = (ROOT / "examples" / "library-adapter" / "idcode_library.py").read_text()
    example = ADAPTERS_DOC.split("## A new scene in under 60 lines", 1)[1]
    code = example.split("```python\n", 1)[1].split("```", 1)[0]
    assert code.strip() in shipped


def test_readme_python_examples_run_as_written() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)```", readme, flags=re.DOTALL)
    assert len(blocks) >= 2
    for block in blocks:
        exec(compile(block, "README.md", "exec"), {})  # noqa: S102  (our own README)


SERVICE_HALL_DOC = (ROOT / "docs" / "scenes" / "servicehall.md").read_text(encoding="utf-8")


def _consent_refusals() -> set[str]:
    """The reasons idcode/service/identification.py refuses an identification with, read from
    its source (tests/core imports nothing of the service)."""
    import ast

    tree = ast.parse((ROOT / "idcode" / "service" / "identification.py").read_text())
    constants: dict[str, object] = {
        target.id: node.value.value
        for node in tree.body
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant)
        for target in node.targets
        if isinstance(target, ast.Name)
    }
    reasons: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "ConsentRefused":
            first = node.args[0]
            reason = (
                first.value
                if isinstance(first, ast.Constant)
                else constants.get(getattr(first, "id", ""))
            )
            assert isinstance(reason, str), ast.dump(first)
            reasons.add(reason)
    return reasons


def test_service_hall_doc_says_what_to_tell_the_citizen_for_every_refusal() -> None:
    from idcode.reasons import Reason

    table = SERVICE_HALL_DOC.split("## Refusals", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in table.splitlines() if line.startswith("| `")]
    listed = {reason for row in rows for reason in re.findall(r"`([a-z_]+)`", row.split("|")[1])}
    # The service verifies the code as a terminal would, without a status list or replay state
    # (the consent is spent once instead), and with its own keys, never stale.
    online = {r.value for r in Reason} - {"ok", "stale_trust", "replayed"}
    refusals = _consent_refusals()
    assert {"no_consent", "consented_to_another_party", "code_used"} <= refusals
    assert refusals | online <= listed
