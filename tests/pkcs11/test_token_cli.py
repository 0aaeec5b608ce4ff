"""``idcode keys`` and the commands that sign, against a SoftHSM2 token, each in a process of
its own: what one command writes on the token (keys, signing periods, removals) the next one
reads, and a wrong PIN, a missing token or a missing module is said precisely."""

from __future__ import annotations

import json
from pathlib import Path

from idcode.pkcs11store import TokenKeyStore
from tests.pkcs11.conftest import SoftHsm, run_idcode
from tests.pkcs11.softhsm import needs_softhsm

pytestmark = needs_softhsm


def states(listing: str) -> dict[str, str]:
    """kid -> state, from ``idcode keys list``."""
    rows = [line.split(None, 4) for line in listing.splitlines()[1:]]
    return {row[0]: row[4] for row in rows}


def test_keys_init_rotate_list_remove_mint_and_bundle_work_on_the_token(
    store: TokenKeyStore, softhsm: SoftHsm, tmp_path: Path
) -> None:
    def idcode(*args: str) -> str:
        result = run_idcode(softhsm, tmp_path, *args)
        assert result.returncode == 0, result.stderr
        return result.stdout

    t0, t1 = "1796112000", "1796112060"  # the rotation a minute after the first key
    init = idcode("keys", "init", "--at", t0)
    assert f"in PKCS#11 token '{softhsm.label}' ({softhsm.module})" in init
    first = init.splitlines()[1].split()[3]  # created issuer key K (EdDSA) in ...
    eddsa_code = idcode("mint", "--at", t0).strip()

    rotated = idcode("keys", "rotate", "--alg", "ES256", "--starts-in", "0", "--at", t1)
    second = rotated.split()[2]
    listed = states(idcode("keys", "list", "--at", t1))
    assert listed[second] == "signing"
    assert listed[first] == "retiring (published for its codes)"
    assert not (tmp_path / "keys").exists()  # nothing was written to a key directory

    es256_code = idcode("mint", "--at", t1).strip()
    idcode("bundle", "-o", "bundle.jws", "--at", t1)
    (tmp_path / "root.json").write_text(idcode("keys", "jwks", "--root"))
    verdicts = idcode(
        "verify", "--alg", "EdDSA", "--alg", "ES256", "--bundle", "bundle.jws",
        "--root", "root.json", "--at", t1, eddsa_code, es256_code,
    )  # fmt: skip
    assert [json.loads(line)["kid"] for line in verdicts.splitlines()] == [first, second]

    idcode("keys", "remove", first, "--at", t1)
    published = json.loads(idcode("keys", "jwks", "--at", t1))
    assert [jwk["kid"] for jwk in published["keys"]] == [second]


def test_a_wrong_pin_is_refused_with_the_variable_that_holds_it(
    store: TokenKeyStore, softhsm: SoftHsm, tmp_path: Path
) -> None:
    result = run_idcode(softhsm, tmp_path, "keys", "list", IDCODE_PKCS11_PIN="0" * 8)

    assert result.returncode == 2
    assert result.stderr.startswith("idcode: error: the user PIN (IDCODE_PKCS11_PIN) is wrong")
    assert softhsm.label in result.stderr


def test_a_missing_token_is_named_with_the_tokens_there(
    store: TokenKeyStore, softhsm: SoftHsm, tmp_path: Path
) -> None:
    absent = {"IDCODE_PKCS11_TOKEN": "no-such-token"}
    result = run_idcode(softhsm, tmp_path, "keys", "init", **absent)

    assert result.returncode == 2
    assert "IDCODE_PKCS11_TOKEN: no token labelled 'no-such-token'" in result.stderr
    assert f"(tokens there: '{softhsm.label}')" in result.stderr


def test_the_pin_comes_from_a_private_file_and_one_others_can_read_is_refused(
    store: TokenKeyStore, softhsm: SoftHsm, tmp_path: Path
) -> None:
    pin_file = tmp_path / "pin"
    pin_file.write_text(softhsm.pin + "\n")
    pin_file.chmod(0o600)
    by_file = {"IDCODE_PKCS11_PIN": "", "IDCODE_PKCS11_PIN_FILE": str(pin_file)}

    assert run_idcode(softhsm, tmp_path, "keys", "init", **by_file).returncode == 0
    pin_file.chmod(0o644)
    refused = run_idcode(softhsm, tmp_path, "keys", "list", **by_file)
    assert refused.returncode == 2
    assert "IDCODE_PKCS11_PIN_FILE" in refused.stderr and "readable by others" in refused.stderr
