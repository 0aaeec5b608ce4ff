"""The ``idcode`` command line, run as a real subprocess so that environment settings apply."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization

from idcode.cli import build_parser
from idcode.codetext import BASE45_ALPHABET

PREFIX = "WH1:"
QR_7M_CAPACITY = 174  # alphanumeric characters that fit QR version 7 at level M


class Cli:
    """Runs ``python -m idcode.cli`` in ``tmp_path`` with a key store of its own."""

    def __init__(self, tmp_path: Path, keys_dir: Path) -> None:
        self.cwd = tmp_path
        self.keys_dir = keys_dir

    def __call__(
        self,
        *args: str,
        stdin: str | bytes | None = None,
        env: dict[str, str] | None = None,
        keys_dir: Path | None = None,
    ) -> subprocess.CompletedProcess[str]:
        environment = {k: v for k, v in os.environ.items() if not k.startswith("IDCODE_")}
        # A UTF-8 locale's strict decoding, whatever the locale of the machine running tests.
        environment["PYTHONIOENCODING"] = "utf-8"
        environment["IDCODE_KEYS_DIR"] = str(keys_dir or self.keys_dir)
        environment.update(env or {})
        data = stdin.encode("utf-8") if isinstance(stdin, str) else stdin
        completed = subprocess.run(
            [sys.executable, "-m", "idcode.cli", *args],
            input=data,
            capture_output=True,
            cwd=self.cwd,
            env=environment,
            timeout=300,
            check=False,
        )
        return subprocess.CompletedProcess(
            completed.args,
            completed.returncode,
            completed.stdout.decode("utf-8"),
            completed.stderr.decode("utf-8"),
        )

    def mint(self, *args: str, keys_dir: Path | None = None) -> str:
        result = self("mint", *args, keys_dir=keys_dir)
        assert result.returncode == 0, result.stderr
        return result.stdout.strip()


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    return Cli(tmp_path, tmp_path / "keys")


def _verdicts(stdout: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stdout.splitlines()]


def _reasons(stdout: str) -> list[str]:
    return [verdict["reason"] for verdict in _verdicts(stdout)]


def _assert_usage_error(result: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert result.returncode == 2
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    for needle in needles:
        assert needle in result.stderr


# -- keys ----------------------------------------------------------------------------------


def test_keys_init_reports_the_root_and_issuer_keys_it_created(cli: Cli) -> None:
    result = cli("keys", "init")

    assert result.returncode == 0, result.stderr
    assert "created root key root-" in result.stdout
    assert "created issuer key" in result.stdout
    assert (cli.keys_dir / "root.pem").exists()


def test_keys_init_a_second_time_says_the_store_is_complete(cli: Cli) -> None:
    cli("keys", "init")

    result = cli("keys", "init")

    assert result.returncode == 0
    assert "created" not in result.stdout
    assert "already holds a root key and a signing issuer key" in result.stdout


def test_keys_list_after_init_shows_the_root_key_and_a_signing_key(cli: Cli) -> None:
    cli("keys", "init")

    result = cli("keys", "list")

    assert result.returncode == 0, result.stderr
    rows = [line.split() for line in result.stdout.splitlines()[1:]]
    assert len(rows) == 2
    root, issuer = rows
    assert root[0].startswith("root-")
    assert root[-1] == "root"
    assert len(issuer[0]) == 1
    assert issuer[1] == "EdDSA"
    assert issuer[-1] == "signing"


def test_keys_list_after_rotate_shows_the_next_key_as_published_but_not_signing(
    cli: Cli,
) -> None:
    cli("keys", "init")
    rotated = cli("keys", "rotate", "--starts-in", "3600")

    result = cli("keys", "list")

    assert rotated.returncode == 0, rotated.stderr
    assert "earlier keys stop signing then" in rotated.stdout
    states = [line.split(maxsplit=4)[-1] for line in result.stdout.splitlines()[2:]]
    assert sorted(states) == ["next (published, not signing yet)", "signing"]
    assert len(json.loads(cli("keys", "jwks").stdout)["keys"]) == 2


def test_keys_jwks_prints_a_jwk_set_without_private_members(cli: Cli) -> None:
    cli("keys", "init")

    result = cli("keys", "jwks")

    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert len(document["keys"]) == 1
    (jwk,) = document["keys"]
    assert jwk["kty"] == "OKP"
    assert jwk["alg"] == "EdDSA"
    assert len(jwk["kid"]) == 1
    assert "d" not in jwk


def test_keys_jwks_root_prints_the_root_public_key(cli: Cli) -> None:
    cli("keys", "init")

    result = cli("keys", "jwks", "--root")

    assert result.returncode == 0, result.stderr
    (jwk,) = json.loads(result.stdout)["keys"]
    assert jwk["kid"].startswith("root-")
    assert jwk["crv"] == "Ed25519"
    assert "d" not in jwk
    assert jwk["kid"] in cli("keys", "list").stdout


def test_keys_jwks_root_on_an_empty_store_says_to_run_keys_init(cli: Cli) -> None:
    result = cli("keys", "jwks", "--root")

    _assert_usage_error(result, "idcode keys init")


# -- mint and verify -----------------------------------------------------------------------


def test_mint_on_an_empty_key_dir_creates_keys_and_prints_one_code(cli: Cli) -> None:
    result = cli("mint")

    assert result.returncode == 0, result.stderr
    assert "created development root key" in result.stderr
    assert "created development issuer key" in result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 1
    (code,) = lines
    assert code.startswith(PREFIX)
    assert len(code) <= QR_7M_CAPACITY
    assert (cli.keys_dir / "root.pem").exists()


def test_mint_with_existing_keys_creates_nothing(cli: Cli) -> None:
    cli("keys", "init")

    result = cli("mint")

    assert result.returncode == 0
    assert result.stderr == ""


def test_verify_a_fresh_code_prints_one_json_line_valid_ok_and_exits_0(cli: Cli) -> None:
    code = cli.mint("--pseudonym", "0123456789ab", "--age-band", "age_65_69")

    result = cli("verify", code)

    assert result.returncode == 0, result.stderr
    (verdict,) = _verdicts(result.stdout)
    assert verdict["valid"] is True
    assert verdict["reason"] == "ok"
    assert verdict["claims"]["card"]["pseudonym"] == "0123456789ab"
    assert verdict["claims"]["card"]["age_band"] == "age_65_69"


def test_mint_takes_the_names_the_verdict_prints_and_still_the_hyphens_of_earlier_versions(
    cli: Cli,
) -> None:
    """Rough edge (e): one spelling of enumerations, the verdict's, everywhere."""
    parser = build_parser()
    one = parser.parse_args(["mint", "--residency", "non_resident", "--programme", "home_care"])
    old = parser.parse_args(["mint", "--residency", "Non-Resident", "--programme", "home-care"])
    assert (one.residency, one.programme) == (old.residency, old.programme)
    assert (one.residency, one.programme, one.age_band) == (
        "non_resident",
        ["home_care"],
        "age_18_59",
    )
    # What the old spelling mints, the verdict names in the one spelling.
    result = cli("verify", cli.mint("--residency", "non-resident", "--programme", "home-care"))
    (verdict,) = _verdicts(result.stdout)
    card = verdict["claims"]["card"]
    assert (card["residency"], card["programmes"]) == ("non_resident", ["home_care"])


def test_verify_the_same_code_twice_in_one_run_gives_ok_then_replayed_and_exits_1(
    cli: Cli,
) -> None:
    code = cli.mint()

    result = cli("verify", code, code)

    assert result.returncode == 1
    assert _reasons(result.stdout) == ["ok", "replayed"]


def test_verify_no_replay_check_accepts_the_same_code_twice(cli: Cli) -> None:
    code = cli.mint()

    result = cli("verify", "--no-replay-check", code, code)

    assert result.returncode == 0
    assert _reasons(result.stdout) == ["ok", "ok"]


def test_verify_stdin_prints_one_verdict_per_non_blank_line_in_order(cli: Cli) -> None:
    an_hour_ago = str(int(time.time()) - 3600)
    expired = cli.mint("--at", an_hour_ago)
    valid = cli.mint()
    lines = [valid, "not a code", "", "   ", f"{PREFIX}AAAA", expired]

    result = cli("verify", "-", stdin="\n".join(lines) + "\n")

    assert result.returncode == 1
    assert _reasons(result.stdout) == ["ok", "unknown_prefix", "malformed", "expired"]
    assert "Traceback" not in result.stderr


def test_verify_without_codes_reads_stdin(cli: Cli) -> None:
    code = cli.mint()

    result = cli("verify", stdin=code + "\n")

    assert result.returncode == 0
    assert _reasons(result.stdout) == ["ok"]


def test_verify_stdin_with_bytes_that_are_not_utf8_reports_them_as_invalid_codes(
    cli: Cli,
) -> None:
    code = cli.mint()
    scanned = b"\xff\xfe\n" + PREFIX.encode() + b"\xb0\xa1\n" + code.encode() + b"\n"

    result = cli("verify", "-", stdin=scanned)

    assert "Traceback" not in result.stderr
    assert result.returncode == 1
    assert _reasons(result.stdout) == ["unknown_prefix", "malformed", "ok"]


def test_verify_with_nothing_on_stdin_is_a_usage_error(cli: Cli) -> None:
    result = cli("verify", "-", stdin="\n\n")

    _assert_usage_error(result, "no code to verify")


def test_verify_with_the_jwks_of_the_code_issuer_gives_ok(cli: Cli, tmp_path: Path) -> None:
    code = cli.mint()
    jwks_file = tmp_path / "issuer.jwks.json"
    jwks_file.write_text(cli("keys", "jwks").stdout)

    result = cli("verify", "--jwks", str(jwks_file), code, keys_dir=tmp_path / "elsewhere")

    assert result.returncode == 0, result.stdout
    assert _reasons(result.stdout) == ["ok"]


def _other_issuer_jwk(cli: Cli, tmp_path: Path) -> dict[str, Any]:
    other = tmp_path / "other-keys"
    assert cli("keys", "init", keys_dir=other).returncode == 0
    (jwk,) = json.loads(cli("keys", "jwks", keys_dir=other).stdout)["keys"]
    assert isinstance(jwk, dict)
    return jwk


def test_verify_with_another_issuers_jwks_under_another_kid_gives_unknown_key(
    cli: Cli, tmp_path: Path
) -> None:
    code = cli.mint()
    code_kid = json.loads(cli("keys", "jwks").stdout)["keys"][0]["kid"]
    jwk = _other_issuer_jwk(cli, tmp_path)
    jwk["kid"] = "0" if code_kid != "0" else "1"
    jwks_file = tmp_path / "other.jwks.json"
    jwks_file.write_text(json.dumps({"keys": [jwk]}))

    result = cli("verify", "--jwks", str(jwks_file), code)

    assert result.returncode == 1
    assert _reasons(result.stdout) == ["unknown_key"]


def test_verify_with_another_issuers_jwks_under_the_same_kid_gives_bad_signature(
    cli: Cli, tmp_path: Path
) -> None:
    code = cli.mint()
    code_kid = json.loads(cli("keys", "jwks").stdout)["keys"][0]["kid"]
    jwk = _other_issuer_jwk(cli, tmp_path)
    jwk["kid"] = code_kid
    jwks_file = tmp_path / "other.jwks.json"
    jwks_file.write_text(json.dumps({"keys": [jwk]}))

    result = cli("verify", "--jwks", str(jwks_file), code)

    assert result.returncode == 1
    assert _reasons(result.stdout) == ["bad_signature"]


def test_verify_with_an_unreadable_jwks_file_is_a_usage_error(cli: Cli, tmp_path: Path) -> None:
    code = cli.mint()
    (tmp_path / "broken.json").write_text("{not json")

    missing = cli("verify", "--jwks", str(tmp_path / "missing.json"), code)
    broken = cli("verify", "--jwks", str(tmp_path / "broken.json"), code)

    _assert_usage_error(missing, "cannot read JWK Set")
    _assert_usage_error(broken, "cannot read JWK Set")


def test_verify_at_a_time_before_issue_gives_not_yet_valid(cli: Cli) -> None:
    issued = int(time.time())
    code = cli.mint("--at", str(issued))

    result = cli("verify", "--at", str(issued - 3600), code)

    assert result.returncode == 1
    assert _reasons(result.stdout) == ["not_yet_valid"]


def test_verify_accepts_an_iso_8601_time_for_at(cli: Cli) -> None:
    code = cli.mint("--at", "2030-01-01T08:00:00Z")

    during = cli("verify", "--at", "2030-01-01T08:00:30Z", code)
    after = cli("verify", "--at", "2030-01-01T09:00:00", code)  # no zone: UTC

    assert _reasons(during.stdout) == ["ok"]
    assert _reasons(after.stdout) == ["expired"]


def test_verify_accepting_only_es256_refuses_an_eddsa_code_as_unsupported_alg(cli: Cli) -> None:
    code = cli.mint()

    result = cli("verify", "--alg", "ES256", code)

    assert result.returncode == 1
    assert _reasons(result.stdout) == ["unsupported_alg"]


def test_es256_keys_from_keys_init_mint_codes_that_verify_with_alg_es256(cli: Cli) -> None:
    cli("keys", "init", "--alg", "ES256")
    code = cli.mint()

    eddsa_only = cli("verify", code)
    es256 = cli("verify", "--alg", "ES256", code)

    assert _reasons(eddsa_only.stdout) == ["unsupported_alg"]
    assert _reasons(es256.stdout) == ["ok"]


# -- usage errors and settings -------------------------------------------------------------------


@pytest.mark.parametrize("ttl", ["0", "3601", "-5", "soon"])
def test_mint_with_a_ttl_out_of_range_is_a_usage_error(cli: Cli, ttl: str) -> None:
    result = cli("mint", "--ttl", ttl)

    _assert_usage_error(result, "--ttl")


@pytest.mark.parametrize("pseudonym", ["zz", "0123456789", "0123456789abcd", "0123456789ag"])
def test_mint_with_a_bad_pseudonym_is_a_usage_error(cli: Cli, pseudonym: str) -> None:
    result = cli("mint", "--pseudonym", pseudonym)

    _assert_usage_error(result, "--pseudonym", "12 hex digits")
    assert not cli.keys_dir.exists()


def test_mint_with_an_unparseable_at_is_a_usage_error(cli: Cli) -> None:
    result = cli("mint", "--at", "yesterday")

    _assert_usage_error(result, "not an ISO 8601 time")


def test_lowercase_deployment_setting_is_an_error_naming_idcode_deployment(cli: Cli) -> None:
    result = cli("mint", env={"IDCODE_DEPLOYMENT": "wh"})

    _assert_usage_error(result, "IDCODE_DEPLOYMENT")
    assert not cli.keys_dir.exists()


def test_out_of_range_ttl_setting_is_an_error_naming_idcode_code_ttl_seconds(cli: Cli) -> None:
    result = cli("verify", "x", env={"IDCODE_CODE_TTL_SECONDS": "0"})

    _assert_usage_error(result, "IDCODE_CODE_TTL_SECONDS")


def test_deployment_setting_sets_the_code_prefix(cli: Cli) -> None:
    env = {"IDCODE_DEPLOYMENT": "TOWN"}
    minted = cli("mint", env=env)

    own = cli("verify", minted.stdout.strip(), env=env)
    default = cli("verify", minted.stdout.strip())

    assert minted.stdout.startswith("TOWN1:")
    assert _reasons(own.stdout) == ["ok"]
    assert _reasons(default.stdout) == ["unknown_prefix"]


def test_passphrase_setting_encrypts_keys_and_minting_without_it_is_a_clear_error(
    cli: Cli,
) -> None:
    env = {"IDCODE_KEY_PASSPHRASE": "correct horse"}
    code = cli("mint", env=env).stdout.strip()

    without = cli("mint")
    verified = cli("verify", code)  # verifying needs only public keys

    assert b"ENCRYPTED" in (cli.keys_dir / "root.pem").read_bytes()
    _assert_usage_error(without, "IDCODE_KEY_PASSPHRASE")
    assert _reasons(verified.stdout) == ["ok"]


def test_keys_init_re_encrypts_a_pbkdf2_store_of_an_earlier_release_with_argon2id(
    cli: Cli,
) -> None:
    env = {"IDCODE_KEY_PASSPHRASE": "correct horse"}
    cli("keys", "init")
    pem_files = sorted(cli.keys_dir.glob("*.pem"))
    for path in pem_files:  # as releases before Argon2id wrote them: PKCS#8 with PBKDF2
        key = serialization.load_pem_private_key(path.read_bytes(), None)
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"correct horse"),
        )
        path.unlink()
        path.write_bytes(pem)
        path.chmod(0o600)

    upgraded = cli("keys", "init", env=env)
    code = cli("mint", env=env).stdout.strip()

    assert upgraded.returncode == 0, upgraded.stderr
    assert upgraded.stdout.count("re-encrypted") == len(pem_files) == 2
    for path in pem_files:
        assert path.read_bytes().startswith(b"-----BEGIN IDCODE ENCRYPTED PRIVATE KEY-----")
    assert _reasons(cli("verify", code).stdout) == ["ok"]


def test_mint_with_a_world_readable_key_file_is_refused_with_a_chmod_hint(cli: Cli) -> None:
    cli("keys", "init")
    (issuer_pem,) = cli.keys_dir.glob("issuer-*.pem")
    issuer_pem.chmod(0o644)

    result = cli("mint")

    _assert_usage_error(result, "chmod 600")


ATTACKER_KID = "Z"  # issuer-5a.json, as in the outside review's reproducer


def _plant_attacker_key(cli: Cli) -> str:
    """Drop issuer-5a.json with an attacker's public JWK into the key store; return a code
    the attacker signed with the matching private key."""
    from idcode.codetext import prefix_for
    from idcode.cose import Algorithm
    from idcode.issuer import mint_code
    from idcode.keys import IssuerKey
    from idcode.testing import random_card

    now = int(time.time())
    attacker = IssuerKey.generate(ATTACKER_KID, Algorithm.EDDSA, now - 60, now + 86_400)
    planted = cli.keys_dir / f"issuer-{ord(ATTACKER_KID):02x}.json"
    planted.write_text(json.dumps({"public_jwk": attacker.public.to_jwk()}))
    code, _ = mint_code(random_card(), attacker, prefix=prefix_for(), now=now, ttl=600)
    return code


@pytest.mark.parametrize(
    "command",
    [
        ["mint"],
        ["keys", "init"],
        ["keys", "list"],
        ["keys", "jwks"],
        ["keys", "jwks", "--root"],
        ["keys", "rotate"],
        ["keys", "remove", ATTACKER_KID],
        ["bundle", "-o", "bundle.jwt"],
        ["verify", "--no-replay-check", "CODE"],
    ],
    ids=" ".join,
)
def test_every_command_refuses_a_key_directory_others_can_write_to(
    cli: Cli, command: list[str]
) -> None:
    cli("keys", "init")
    cli.keys_dir.chmod(0o777)
    attacker_code = _plant_attacker_key(cli)

    result = cli(*[attacker_code if arg == "CODE" else arg for arg in command])

    _assert_usage_error(result, str(cli.keys_dir), "writable by group or others")


def test_a_key_file_dropped_into_the_key_store_is_not_trusted_by_any_command(
    cli: Cli, tmp_path: Path
) -> None:
    cli("keys", "init")
    attacker_code = _plant_attacker_key(cli)

    jwks = cli("keys", "jwks")
    listing = cli("keys", "list")
    verified = cli("verify", attacker_code)
    cli("bundle", "-o", "bundle.jwt")
    with_bundle = cli("verify", "--bundle", "bundle.jwt", attacker_code)
    ours = cli("verify", "--bundle", "bundle.jwt", cli.mint())

    assert jwks.returncode == 0, jwks.stderr
    assert ATTACKER_KID not in [key["kid"] for key in json.loads(jwks.stdout)["keys"]]
    assert not [line for line in listing.stdout.splitlines() if line.startswith(ATTACKER_KID)]
    assert "issuer-5a.json" in listing.stderr  # said once, as a warning, by every command
    assert _reasons(verified.stdout) == ["unknown_key"]
    assert _reasons(with_bundle.stdout) == ["unknown_key"]
    assert _reasons(ours.stdout) == ["ok"]


def test_mint_refuses_a_key_store_whose_manifest_was_tampered_with(cli: Cli) -> None:
    cli("keys", "init")
    manifest = cli.keys_dir / "manifest.jwt"
    header, payload, signature = manifest.read_text().strip().split(".")
    manifest.write_text(f"{header}.{payload[:-2]}AA.{signature}\n")

    result = cli("mint")

    _assert_usage_error(result, str(manifest), "does not verify with the root key")


# -- qr -------------------------------------------------------------------------------------------


def test_qr_writes_a_png_and_reports_qr_version_7(cli: Cli, tmp_path: Path) -> None:
    code = cli.mint()

    result = cli("qr", code, "-o", "x.png")

    assert result.returncode == 0, result.stderr
    assert (tmp_path / "x.png").read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert "QR version 7-M" in result.stdout


def test_qr_writes_an_svg_and_reports_qr_version_7(cli: Cli, tmp_path: Path) -> None:
    code = cli.mint()

    result = cli("qr", code, "-o", "x.svg")

    assert result.returncode == 0, result.stderr
    assert "<svg" in (tmp_path / "x.svg").read_text()
    assert "QR version 7-M" in result.stdout


def test_qr_to_a_gif_is_a_usage_error_and_writes_nothing(cli: Cli, tmp_path: Path) -> None:
    code = cli.mint()

    result = cli("qr", code, "-o", "x.gif")

    _assert_usage_error(result, ".png or .svg")
    assert not (tmp_path / "x.gif").exists()


# -- robustness -----------------------------------------------------------------------------------


def _mutations(code: str, count: int, seed: int) -> list[str]:
    """``count`` single-edit mutations of ``code``, none of which reads back as ``code``."""
    rng = random.Random(seed)
    alphabet = BASE45_ALPHABET + "abcxyz!#&_=é\t"
    mutated: list[str] = []
    while len(mutated) < count:
        position = rng.randrange(len(code))
        operation = rng.choice(["substitute", "delete", "insert", "truncate"])
        if operation == "substitute":
            candidate = code[:position] + rng.choice(alphabet) + code[position + 1 :]
        elif operation == "delete":
            candidate = code[:position] + code[position + 1 :]
        elif operation == "insert":
            candidate = code[:position] + rng.choice(alphabet) + code[position:]
        else:
            candidate = code[: rng.randrange(1, len(code))]
        # The CLI strips each line and skips blank ones: keep only mutations it will see as
        # one different, non-blank code.
        if candidate.strip() and candidate.strip() != code:
            mutated.append(candidate)
    return mutated


def test_verify_stdin_gives_one_invalid_verdict_for_each_of_1000_mutated_codes(
    cli: Cli,
) -> None:
    code = cli.mint()
    mutated = _mutations(code, 1_000, seed=20261129)
    assert len(set(mutated)) > 500  # varied input, not one mutation repeated

    result = cli("verify", "-", stdin="\n".join(mutated) + "\n")

    verdicts = _verdicts(result.stdout)
    assert len(verdicts) == 1_000
    assert not any(verdict["valid"] for verdict in verdicts)
    assert "ok" not in {verdict["reason"] for verdict in verdicts}
    assert "Traceback" not in result.stderr
    assert result.returncode == 1


# -- help -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args", [["--help"], ["verify", "--help"], ["mint", "--help"], ["keys", "--help"]]
)
def test_help_exits_0_and_prints_usage(cli: Cli, args: list[str]) -> None:
    result = cli(*args)

    assert result.returncode == 0
    assert result.stdout.startswith("usage: idcode")
    assert result.stderr == ""


def test_no_command_is_a_usage_error(cli: Cli) -> None:
    result = cli()

    assert result.returncode == 2
    assert "usage: idcode" in result.stderr
    assert "Traceback" not in result.stderr
