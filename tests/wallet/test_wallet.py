"""The device wallet without a service: its directory, the codes it makes offline and what it
says about the credential and the clock, its checks of URLs and ID tokens, and every hostile
answer a broken or hostile network can give it (tests/hostile.py). The wallet against the
real service: tests/integration/test_wallet.py."""

from __future__ import annotations

import json
import stat
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from idcode import b64url
from idcode.claims import AgeBand, Programme, Residency
from idcode.cli import main
from idcode.cose import Algorithm
from idcode.devicecode import MAX_CREDENTIAL_LIFETIME, DeviceKey, device_prefix
from idcode.errors import BadResponse, ServiceError, ServiceUnreachable, UsageError
from idcode.replay import ReplayCache
from idcode.testing import TestIssuer, random_card
from idcode.verifier import verify
from idcode.wallet import service
from idcode.wallet.store import KEY_FILE, STATE_FILE, WalletState, WalletStore, new_device_key
from tests.conftest import NOW
from tests.hostile import ANSWERS, Hostile, HostileService, sized

UNREACHABLE = "http://127.0.0.1:9"  # the discard port: nothing answers there
# Shaped like an ID token, signed by nobody: what the wallet must send and never repeat.
TOKEN = "eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJ0ZXN0In0.c2lnbmF0dXJl"  # noqa: S105
DEVICE_UUID = "3f0c2d1e-8a4b-4c6d-9e7f-0a1b2c3d4e5f"

Run = Callable[..., tuple[int, str, str]]


@pytest.fixture
def run(capsys: pytest.CaptureFixture[str]) -> Run:
    """``idcode wallet ARGS`` in this process: (exit status, stdout, stderr)."""

    def wallet(*args: str) -> tuple[int, str, str]:
        status = main(["wallet", *args])
        out, err = capsys.readouterr()
        return status, out, err

    return wallet


def make_wallet(
    directory: Path,
    issuer: TestIssuer,
    alg: Algorithm = Algorithm.EDDSA,
    *,
    expires_at: int | None = None,
    clock_offset: int = 0,
    synced_at: int = NOW,
) -> WalletState:
    """A wallet as a registration at ``issuer`` would leave it (the credential the issuer's
    own helper makes), at a service that cannot be reached."""
    key = new_device_key(alg)
    card = random_card(
        residency=Residency.REGISTERED,
        age_band=AgeBand.AGE_70_79,
        programmes=Programme.MEAL_SUBSIDY,
    )
    expiry = issuer.now + MAX_CREDENTIAL_LIFETIME if expires_at is None else expires_at
    blob = issuer.credential(key, card, expires_at=expiry)
    state = WalletState(
        server=UNREACHABLE,
        device=DEVICE_UUID,
        device_id=DeviceKey.from_public_key(key.public_key()).device_id.hex(),
        alg=alg.jose_name,
        label=None,
        credential=b64url.encode(blob),
        credential_expires_at=expiry,
        code_prefix=device_prefix(issuer.prefix),
        clock_offset=clock_offset,
        synced_at=synced_at,
    )
    store = WalletStore(directory)
    store.prepare()
    store.create(key, state)
    return state


def admitted(code: str, issuer: TestIssuer, at: int) -> bool:
    return verify(code, issuer.trust(), at, ReplayCache()).valid


# -- codes with no network ---------------------------------------------------------------------


@pytest.mark.parametrize("alg", [Algorithm.EDDSA, Algorithm.ES256])
def test_code_is_made_offline_and_verifies_at_a_terminal(
    run: Run, issuer: TestIssuer, tmp_path: Path, alg: Algorithm
) -> None:
    make_wallet(tmp_path / "w", issuer, alg)  # its service is unreachable
    status, out, err = run("code", "--dir", str(tmp_path / "w"), "--at", str(NOW + 5))
    code = out.strip()
    assert (status, err) == (0, "")
    assert code.startswith("WH2:")
    verdict = verify(code, issuer.trust(), NOW + 5, ReplayCache())
    assert verdict.valid, verdict
    assert verdict.claims is not None and verdict.claims.issued_at == NOW + 5
    assert verdict.claims.card.age_band is AgeBand.AGE_70_79


def test_each_code_is_fresh(run: Run, issuer: TestIssuer, tmp_path: Path) -> None:
    make_wallet(tmp_path / "w", issuer)
    codes = {run("code", "--dir", str(tmp_path / "w"), "--at", str(NOW))[1] for _ in range(3)}
    assert len(codes) == 3
    replay = ReplayCache()
    assert all(verify(code.strip(), issuer.trust(), NOW, replay).valid for code in codes)


def test_code_carries_the_services_time_when_this_clock_is_wrong(
    run: Run, issuer: TestIssuer, tmp_path: Path
) -> None:
    """A phone 10 minutes behind: its own clock would make codes every terminal refuses as
    expired; the offset measured at the last sync corrects it (with a warning)."""
    behind = 600
    make_wallet(tmp_path / "w", issuer, clock_offset=behind, synced_at=NOW - behind)
    status, out, err = run("code", "--dir", str(tmp_path / "w"), "--at", str(NOW - behind))
    assert status == 1
    assert "clock was 10 min behind the service's" in err and "renew" in err
    assert admitted(out.strip(), issuer, NOW)


def test_small_clock_offset_is_corrected_without_a_warning(
    run: Run, issuer: TestIssuer, tmp_path: Path
) -> None:
    make_wallet(tmp_path / "w", issuer, clock_offset=-20, synced_at=NOW + 20)
    status, out, err = run("code", "--dir", str(tmp_path / "w"), "--at", str(NOW + 20))
    assert (status, err) == (0, "")
    assert admitted(out.strip(), issuer, NOW)
    status, _, err = run("code", "--dir", str(tmp_path / "w"), "--at", str(NOW + 20),
                         "--max-offset", "10")  # fmt: skip
    assert status == 1 and "20 s ahead of the service's" in err


def test_clock_set_back_since_the_last_sync_is_a_warning(
    run: Run, issuer: TestIssuer, tmp_path: Path
) -> None:
    make_wallet(tmp_path / "w", issuer)
    status, out, err = run("code", "--dir", str(tmp_path / "w"), "--at", str(NOW - 3600))
    assert status == 1 and out.startswith("WH2:")
    assert "earlier than at the last sync: it was set back" in err


def test_expired_credential_makes_no_code_and_says_to_renew(
    run: Run, issuer: TestIssuer, tmp_path: Path
) -> None:
    make_wallet(tmp_path / "w", issuer, expires_at=NOW + 100)
    status, out, err = run("code", "--dir", str(tmp_path / "w"), "--at", str(NOW + 100))
    assert (status, out) == (1, "")
    assert "the credential expired at" in err and "idcode wallet renew" in err
    status, out, err = run("qr", "--dir", str(tmp_path / "w"), "--at", str(NOW + 200),
                           "-o", str(tmp_path / "code.png"))  # fmt: skip
    assert (status, out) == (1, "") and not (tmp_path / "code.png").exists()


def test_credential_about_to_expire_gives_a_code_and_a_warning(
    run: Run, issuer: TestIssuer, tmp_path: Path
) -> None:
    make_wallet(tmp_path / "w", issuer, expires_at=NOW + 3 * 3600)
    status, out, err = run("code", "--dir", str(tmp_path / "w"), "--at", str(NOW))
    assert status == 1
    assert "the credential expires in 3 h 0 min" in err and "renew" in err
    assert admitted(out.strip(), issuer, NOW)
    status, _, err = run("code", "--dir", str(tmp_path / "w"), "--at", str(NOW),
                         "--warn-within", "3600")  # fmt: skip
    assert (status, err) == (0, "")


def test_qr_image_holds_a_code_of_qr_version_10_at_most(
    run: Run, issuer: TestIssuer, tmp_path: Path
) -> None:
    make_wallet(tmp_path / "w", issuer, Algorithm.ES256)
    image = tmp_path / "code.png"
    status, out, err = run("qr", "--dir", str(tmp_path / "w"), "-o", str(image), "--at", str(NOW))
    assert (status, err) == (0, "")
    version = int(out.split("QR version ")[1].split("-")[0])
    assert version <= 10
    assert image.read_bytes().startswith(b"\x89PNG")


def test_status_shows_the_credential_and_the_card_attributes_but_no_pseudonym(
    run: Run, issuer: TestIssuer, tmp_path: Path
) -> None:
    state = make_wallet(tmp_path / "w", issuer)
    status, out, _ = run("status", "--dir", str(tmp_path / "w"), "--at", str(NOW))
    shown = json.loads(out)
    assert status == 0
    assert shown["device_id"] == state.device_id
    assert shown["credential_seconds_left"] == MAX_CREDENTIAL_LIFETIME
    assert shown["card"]["age_band"] == "age_70_79"
    assert shown["card"]["programmes"] == ["meal_subsidy"]
    assert "pseudonym" not in shown["card"] and state.parsed.card.pseudonym.hex() not in out


# -- the wallet's directory --------------------------------------------------------------------


def test_wallet_is_owner_only(issuer: TestIssuer, tmp_path: Path) -> None:
    make_wallet(tmp_path / "w", issuer)
    assert stat.S_IMODE((tmp_path / "w").stat().st_mode) == 0o700
    for name in (KEY_FILE, STATE_FILE):
        assert stat.S_IMODE((tmp_path / "w" / name).stat().st_mode) == 0o600


def test_wallet_in_a_directory_others_can_write_is_refused(
    run: Run, issuer: TestIssuer, tmp_path: Path
) -> None:
    make_wallet(tmp_path / "w", issuer)
    (tmp_path / "w").chmod(0o777)
    status, out, err = run("code", "--dir", str(tmp_path / "w"))
    assert (status, out) == (2, "")
    assert "writable by group or others" in err
    status, _, err = run("register", "--dir", str(tmp_path / "w"), "--server", UNREACHABLE,
                         "--token", TOKEN)  # fmt: skip
    assert status == 2 and "writable by group or others" in err


@pytest.mark.parametrize("name", [KEY_FILE, STATE_FILE])
def test_wallet_file_others_can_read_or_a_link_is_refused(
    run: Run, issuer: TestIssuer, tmp_path: Path, name: str
) -> None:
    make_wallet(tmp_path / "w", issuer)
    (tmp_path / "w" / name).chmod(0o644)
    status, _, err = run("code", "--dir", str(tmp_path / "w"))
    assert status == 2 and "readable by others" in err
    (tmp_path / "w" / name).chmod(0o600)
    (tmp_path / "w" / name).rename(tmp_path / "elsewhere")
    (tmp_path / "w" / name).symlink_to(tmp_path / "elsewhere")
    status, _, err = run("code", "--dir", str(tmp_path / "w"))
    assert status == 2 and "symbolic link" in err


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda s: "{not json", "is damaged"),
        (lambda s: json.dumps({**s, "version": 9}), "not a version 1 wallet state"),
        (lambda s: json.dumps({**s, "clock_offset": "0"}), "clock_offset is not an integer"),
        (lambda s: json.dumps({**s, "credential": "AAAA"}), "the credential is unusable"),
        (lambda s: json.dumps({**s, "credential_expires_at": 1}), "does not match"),
        (lambda s: "[" * 100_000, "is damaged"),
    ],
)
def test_damaged_wallet_state_is_a_precise_error(
    run: Run,
    issuer: TestIssuer,
    tmp_path: Path,
    damage: Callable[[dict[str, object]], str],
    message: str,
) -> None:
    make_wallet(tmp_path / "w", issuer)
    state_file = tmp_path / "w" / STATE_FILE
    state_file.write_text(damage(json.loads(state_file.read_text())))
    status, out, err = run("code", "--dir", str(tmp_path / "w"))
    assert (status, out) == (2, "")
    assert message in err and err.startswith("idcode: error:") and "Traceback" not in err


def test_credential_for_another_key_in_the_wallet_is_refused(
    run: Run, issuer: TestIssuer, tmp_path: Path
) -> None:
    make_wallet(tmp_path / "w", issuer)
    make_wallet(tmp_path / "other", issuer)
    (tmp_path / "w" / KEY_FILE).write_bytes((tmp_path / "other" / KEY_FILE).read_bytes())
    status, _, err = run("code", "--dir", str(tmp_path / "w"))
    assert status == 2 and "a credential for another key" in err


def test_no_wallet_says_how_to_make_one(run: Run, tmp_path: Path) -> None:
    status, _, err = run("code", "--dir", str(tmp_path / "none"))
    assert status == 2 and "idcode wallet register --server URL" in err


def test_registering_over_a_wallet_is_refused_before_any_request(
    run: Run, issuer: TestIssuer, tmp_path: Path
) -> None:
    make_wallet(tmp_path / "w", issuer)
    before = (tmp_path / "w" / KEY_FILE).read_bytes()
    status, _, err = run("register", "--dir", str(tmp_path / "w"), "--server", UNREACHABLE,
                         "--token", TOKEN)  # fmt: skip
    assert status == 2 and "already holds a wallet" in err  # not "cannot reach"
    assert (tmp_path / "w" / KEY_FILE).read_bytes() == before


def test_wallet_directory_defaults_to_the_environment_variable(
    run: Run, issuer: TestIssuer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_wallet(tmp_path / "w", issuer)
    monkeypatch.setenv("IDCODE_WALLET_DIR", str(tmp_path / "w"))
    status, out, _ = run("code", "--at", str(NOW))
    assert status == 0 and admitted(out.strip(), issuer, NOW)


# -- URLs and ID tokens ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://idcode.city.example", "refusing plain http"),
        ("http://10.0.0.5:8000", "refusing plain http"),
        ("ftp://idcode.city.example", "must be https://"),
        ("idcode.city.example", "must be https://"),
        ("https://user:pass@idcode.city.example", "no user"),
        ("https://idcode.city.example/?x=1", "no user, query"),
        ("https://[::1", "must be https://"),
    ],
)
def test_unusable_service_url_is_refused(url: str, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        service.service_url(url)


@pytest.mark.parametrize(
    "url", ["https://idcode.city.example/", "http://127.0.0.1:8000", "http://localhost:8000/"]
)
def test_https_or_loopback_service_url_is_taken(url: str) -> None:
    assert service.service_url(url) == url.rstrip("/")


@pytest.mark.parametrize(
    "token",
    ["", "not a token", "a.b", "eyJ.eyJ.sig\nX-Injected: 1", "é.é.é", "a." + "b" * 20_000 + ".c"],
)
def test_unusable_id_token_is_refused_without_repeating_it(
    run: Run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, token: str
) -> None:
    monkeypatch.setenv("IDCODE_ID_TOKEN", token)
    status, out, err = run("register", "--dir", str(tmp_path / "w"), "--server", UNREACHABLE)
    assert status == 2
    assert "ID token" in err
    if token.strip():
        assert token[:12] not in out + err
    assert not (tmp_path / "w" / KEY_FILE).exists()


def test_missing_id_token_says_where_to_put_it(
    run: Run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("IDCODE_ID_TOKEN", raising=False)
    status, _, err = run("devices", "--server", UNREACHABLE, "--dir", str(tmp_path / "w"))
    assert status == 2 and "IDCODE_ID_TOKEN" in err and "--token-file" in err


def test_id_token_is_read_from_a_file_and_never_echoed(
    run: Run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("IDCODE_ID_TOKEN", raising=False)
    (tmp_path / "token").write_text(TOKEN + "\n")
    status, out, err = run("devices", "--server", UNREACHABLE, "--dir", str(tmp_path / "w"),
                           "--token-file", str(tmp_path / "token"))  # fmt: skip
    assert status == 3 and "cannot reach" in err  # the token was taken; nobody answered
    assert TOKEN not in out + err
    status, _, err = run("devices", "--server", UNREACHABLE, "--dir", str(tmp_path / "w"),
                         "--token-file", str(tmp_path / "missing"))  # fmt: skip
    assert status == 2 and "cannot read the ID token file" in err


# -- hostile answers ---------------------------------------------------------------------------


@pytest.fixture
def hostile() -> Iterator[HostileService]:
    with HostileService() as server:
        yield server


BY_NAME = [pytest.param(hostile, id=hostile.name) for hostile in ANSWERS]


@pytest.mark.parametrize("hostile_answer", BY_NAME)
def test_hostile_answer_to_each_wallet_request_is_a_precise_error(
    hostile: HostileService, hostile_answer: Hostile, issuer: TestIssuer, tmp_path: Path
) -> None:
    state = replace(make_wallet(tmp_path / "w", issuer), server=hostile.url)
    key = WalletStore(tmp_path / "w").load()[0]
    requests: dict[str, Callable[[], object]] = {
        "register": lambda: service.register(hostile.url, TOKEN, Ed25519PrivateKey.generate()),
        "renew": lambda: service.renew(state, key),
        "jwks": lambda: service.check_credential(hostile.url, state, key),
        "devices": lambda: service.list_devices(hostile.url, TOKEN),
        "remove": lambda: service.remove_device(hostile.url, TOKEN, DEVICE_UUID),
    }
    if hostile_answer.name == "204 no content":
        del requests["remove"]  # what the service answers a removal: not hostile there
    expected = hostile_answer.expected
    assert isinstance(hostile_answer.raw, bytes)
    if len(hostile_answer.raw) > service.MAX_ANSWER_BYTES:  # the wallet reads less than a gate
        expected = "response_too_large"
    for name, send in requests.items():
        for method in ("GET", "POST", "DELETE"):
            hostile.script(method, [hostile_answer.raw])
        with pytest.raises((ServiceError, ServiceUnreachable)) as raised:
            send()
        error = raised.value
        if expected == "unreachable":
            assert type(error) is ServiceUnreachable, (name, repr(error))
        else:
            assert isinstance(error, BadResponse), (name, repr(error))
            assert error.reason == expected, (name, repr(error))
            assert all(" " <= c <= "~" for c in str(error)), str(error)
        assert TOKEN not in str(error)
        hostile.clear()


def test_hostile_answer_through_the_cli_is_one_error_line_and_no_wallet(
    run: Run, hostile: HostileService, tmp_path: Path
) -> None:
    for hostile_answer in ANSWERS:
        hostile.script("POST", [hostile_answer.raw])
        status, out, err = run("register", "--dir", str(tmp_path / "w"), "--server",
                               hostile.url, "--token", TOKEN)  # fmt: skip
        assert status in (2, 3), hostile_answer.name
        assert out == "" and err.startswith("idcode: error:") and err.count("\n") == 1, err
        assert not WalletStore(tmp_path / "w").holds_a_wallet(), hostile_answer.name
        hostile.clear()


def test_service_refusal_keeps_its_status_and_reason(
    run: Run, hostile: HostileService, tmp_path: Path
) -> None:
    problem = b'{"reason": "too_many_devices", "detail": "remove one first"}'
    hostile.script("POST", [sized("409 Conflict", "application/problem+json", problem)])
    status, _, err = run("register", "--dir", str(tmp_path / "w"), "--server", hostile.url,
                         "--token", TOKEN)  # fmt: skip
    assert status == 2
    assert "409 too_many_devices: remove one first" in err


def test_device_key_of_the_chosen_algorithm_is_kept_as_pkcs8(
    issuer: TestIssuer, tmp_path: Path
) -> None:
    make_wallet(tmp_path / "w", issuer, Algorithm.ES256)
    key, state = WalletStore(tmp_path / "w").load()
    assert state.alg == "ES256" and state.parsed.device.alg is Algorithm.ES256
    assert (tmp_path / "w" / KEY_FILE).read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    assert DeviceKey.from_public_key(key.public_key()) == state.parsed.device
