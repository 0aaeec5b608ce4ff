"""The device wallet (``idcode wallet``) against the real service (uvicorn on PostgreSQL and
Redis): register, codes with no network, renewal, the citizen's list, removal; a code made
with the network down verified by ``idcode verify --bundle`` and admitted at every scene's
terminal; and the wallet's checks of what a hostile network does to honest answers.
"""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from jwt.algorithms import OKPAlgorithm

from idcode import b64url
from idcode.cli import main
from idcode.cose import Algorithm
from idcode.devicecode import (
    MAX_CREDENTIAL_LIFETIME,
    Credential,
    issue_credential,
    split_blob,
)
from idcode.errors import ServiceError
from idcode.keys import KID_ALPHABET, IssuerKey, keys_from_jwks
from idcode.keystore import open_key_store
from idcode.replay import ReplayCache
from idcode.terminal import identity as identities
from idcode.terminal.client import register as register_terminal
from idcode.terminal.identity import TerminalIdentity
from idcode.terminal.runtime import TerminalRuntime
from idcode.terminal.trust import BUNDLE_FILE
from idcode.terminaltoken import relying_party_token
from idcode.testing import TestIssuer, random_id_number
from idcode.verifier import Trust, verify
from idcode.wallet import service as wallet_service
from idcode.wallet.store import KEY_FILE, STATE_FILE, WalletStore
from tests.hostile import HostileService, sized
from tests.integration.test_terminal_runtime import AdmitEveryCode
from tests.live import LiveService, live_service, live_settings

# Age band 70-79 all year round, whatever the year the tests run in.
SEVENTY_FIVE = date(date.today().year - 75, 1, 1)
ALGS = [pytest.param(Algorithm.EDDSA, id="Ed25519"), pytest.param(Algorithm.ES256, id="P-256")]

Run = Callable[..., tuple[int, str, str]]


@pytest.fixture(scope="module")
def service(
    tmp_path_factory: pytest.TempPathFactory, postgres_url: str, redis_url: str
) -> Iterator[LiveService]:
    """One live service for this module; each test enrols its own citizens."""
    settings = live_settings(tmp_path_factory.mktemp("wallet"), postgres_url, redis_url, "wallet")
    with live_service(settings) as live:
        yield live


@pytest.fixture
def run(capsys: pytest.CaptureFixture[str]) -> Run:
    """``idcode wallet ARGS`` in this process: (exit status, stdout, stderr)."""

    def wallet(*args: str) -> tuple[int, str, str]:
        status = main(["wallet", *args])
        out, err = capsys.readouterr()
        return status, out, err

    return wallet


def enrol(service: LiveService, birth: date | None = None, **card: Any) -> tuple[str, str]:
    """Enrol a card; (its id, the citizen's ID token)."""
    id_number = random_id_number(birth)
    response = service.client.post(
        "/v1/cards",
        json={"id_number": id_number, "name": "测试", **card},
        headers=service.tokens.operator(),
    )
    assert response.status_code == 201, response.text
    return response.json()["id"], citizen_token(service, id_number)


def citizen_token(service: LiveService, id_number: str) -> str:
    return service.tokens.citizen(id_number)["Authorization"].removeprefix("Bearer ")


def published_trust(service: LiveService) -> Trust:
    """What a terminal without a bundle trusts: the service's JWK Set."""
    keys = keys_from_jwks(service.client.get("/.well-known/jwks.json").json())
    return Trust.of(keys, prefix=service.settings.code_prefix, algorithms={k.alg for k in keys})


def devices_of(run: Run, directory: Path) -> list[dict[str, Any]]:
    status, out, err = run("devices", "--dir", str(directory), "--json")
    assert status == 0, err
    listed: list[dict[str, Any]] = json.loads(out)["devices"]
    return listed


# -- the wallet's life ------------------------------------------------------------------------


@pytest.mark.parametrize("alg", ALGS)
def test_wallet_registers_makes_codes_renews_lists_and_removes_its_own_device(
    service: LiveService,
    run: Run,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    alg: Algorithm,
) -> None:
    _, token = enrol(service, SEVENTY_FIVE, programmes=["meal_subsidy"])
    monkeypatch.setenv("IDCODE_ID_TOKEN", token)
    phone = tmp_path / "phone"
    status, out, err = run("register", "--server", service.url, "--dir", str(phone),
                           "--alg", alg.jose_name, "--label", "test phone")  # fmt: skip
    assert (status, err) == (0, ""), err
    assert out.startswith("registered device ") and "credential valid until" in out
    for path in (phone / KEY_FILE, phone / STATE_FILE):
        assert token not in path.read_text()

    _, state = WalletStore(phone).load()
    shown = json.loads(run("status", "--dir", str(phone))[1])
    assert shown["device"] == state.device and shown["alg"] == alg.jose_name
    assert shown["card"]["age_band"] == "age_70_79"
    assert shown["card"]["programmes"] == ["meal_subsidy"]
    # Seven days from the service's now, read by this clock plus an offset of +-1 s.
    assert MAX_CREDENTIAL_LIFETIME - 120 < shown["credential_seconds_left"] <= 604_801
    assert abs(shown["clock_offset"]) <= 1  # the service runs on this machine's clock

    status, out, err = run("code", "--dir", str(phone))
    assert (status, err) == (0, "")
    verdict = verify(out.strip(), published_trust(service), int(time.time()), ReplayCache())
    assert verdict.valid, verdict
    assert verdict.device is not None and verdict.device.hex() == state.device_id

    status, out, err = run("renew", "--dir", str(phone))
    assert (status, err) == (0, "")
    assert f"renewed the credential of device {state.device}" in out
    [listed] = devices_of(run, phone)
    assert listed["id"] == state.device and listed["this_wallet"]
    assert listed["device_id"] == state.device_id and listed["label"] == "test phone"
    assert listed["renewed_at"] is not None and listed["removed_at"] is None

    status, out, err = run("remove", state.device, "--dir", str(phone))
    assert (status, err) == (0, "")
    assert "this wallet's own device" in out
    assert not (phone / KEY_FILE).exists() and not (phone / STATE_FILE).exists()
    status, _, err = run("code", "--dir", str(phone))
    assert status == 2 and "not a registered wallet" in err
    # Listing needs the service's URL now that the wallet is gone.
    status, out, _ = run("devices", "--dir", str(phone), "--server", service.url, "--json")
    assert status == 0 and json.loads(out)["devices"][0]["removed_at"] is not None


def test_code_is_made_with_the_cli_as_a_process_and_verified_by_idcode_verify(
    service: LiveService, tmp_path: Path
) -> None:
    _, token = enrol(service)
    phone = tmp_path / "phone"
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "IDCODE_ID_TOKEN": token}
    done = idcode_cli("wallet", "register", "--server", service.url, "--dir", str(phone), env=env)
    assert done.returncode == 0, done.stderr
    code = idcode_cli("wallet", "code", "--dir", str(phone), env=env).stdout.strip()
    jwks = tmp_path / "jwks.json"
    jwks.write_text(service.client.get("/.well-known/jwks.json").text)
    checked = idcode_cli("verify", "--jwks", str(jwks), code, env=env)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert json.loads(checked.stdout)["valid"] is True


def idcode_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "idcode.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


def test_removing_another_device_refuses_its_codes_at_a_terminal_from_its_next_sync(
    service: LiveService, run: Run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A lost phone: the citizen removes it from another wallet; a terminal that syncs (a
    status delta, not a new bundle) refuses the lost phone's codes, the others still pass."""
    _, token = enrol(service)
    monkeypatch.setenv("IDCODE_ID_TOKEN", token)
    lost, kept = tmp_path / "lost", tmp_path / "kept"
    for phone in (lost, kept):
        assert run("register", "--server", service.url, "--dir", str(phone))[0] == 0
    lost_device = WalletStore(lost).load()[1].device
    terminal = Terminal.provision(service, tmp_path / "gate", "community", None)
    with terminal.running(AdmitEveryCode) as gate:
        assert gate.sync_once() == "bundle"
        assert gate.scan(code_of(run, lost)).admitted

        status, out, err = run("remove", lost_device, "--dir", str(kept))
        assert (status, err) == (0, ""), err
        assert "own device" not in out and (lost / KEY_FILE).exists()

        assert gate.sync_once() == "delta"
        refused = gate.scan(code_of(run, lost))
        assert (refused.admitted, refused.reason) == (False, "revoked")
        assert gate.scan(code_of(run, kept)).admitted

    status, _, err = run("renew", "--dir", str(lost))
    assert status == 2 and "403 device_removed" in err


def code_of(run: Run, phone: Path) -> str:
    status, out, err = run("code", "--dir", str(phone))
    assert (status, err) == (0, ""), err
    return out.strip()


def test_renewal_dates_its_token_by_the_services_clock(
    service: LiveService, tmp_path: Path
) -> None:
    """A phone whose clock is two hours behind: the renewal's device token, dated by that
    clock, would be refused; dated by the clock plus the offset measured at registration, it
    is taken, and the renewal measures the offset again."""
    _, token = enrol(service)
    behind = 7200

    def phone_clock() -> float:
        return time.time() - behind

    key = Ed25519PrivateKey.generate()
    state = wallet_service.register(service.url, token, key, clock=phone_clock)
    assert abs(state.clock_offset - behind) <= 1
    renewed = wallet_service.renew(state, key, clock=phone_clock)
    assert abs(renewed.clock_offset - behind) <= 1
    with pytest.raises(ServiceError) as raised:  # the same clock, uncorrected
        wallet_service.renew(replace(state, clock_offset=0), key, clock=phone_clock)
    assert raised.value.status == 401


# -- the Done-when: offline codes at every scene's terminal -------------------------------------


@dataclass
class Terminal:
    """A terminal registered with the live service, in its own directory."""

    directory: Path
    identity: TerminalIdentity
    options: dict[str, str]
    journal: Path | None = None

    @classmethod
    def provision(
        cls,
        service: LiveService,
        directory: Path,
        scene: str,
        data: dict[str, Any] | None,
        *,
        site: str | None = None,
        options: dict[str, str] | None = None,
        relying_party: str | None = None,
        journal: Path | None = None,
    ) -> Terminal:
        site = site or f"{scene}-{directory.name}"
        if data is not None:
            response = service.client.put(
                f"/v1/scenes/{scene}/{site}", json=data, headers=service.tokens.operator()
            )
            assert response.status_code == 200, response.text
        private_key = identities.new_terminal_key()
        operator = service.tokens.operator()["Authorization"].removeprefix("Bearer ")
        terminal_id = register_terminal(
            service.url,
            operator,
            scene=scene,
            site=site,
            public_jwk=identities.public_jwk_of(private_key),
            relying_party=relying_party,
        )
        identity = TerminalIdentity(
            terminal_id, scene, site, service.url, private_key, service.root_jwk
        )
        identities.save(directory, identity)
        return cls(directory, identity, options or {}, journal)

    def running(self, adapter: Any = None) -> _Running:
        return _Running(
            TerminalRuntime(
                self.directory,
                self.identity,
                options=self.options,
                journal_path=self.journal,
                adapter=adapter,
                upload_interval=3600,
            )
        )


class _Running:
    def __init__(self, runtime: TerminalRuntime) -> None:
        self.runtime = runtime

    def __enter__(self) -> TerminalRuntime:
        return self.runtime

    def __exit__(self, *exc: object) -> None:
        self.runtime.stop()


class Hospital:
    """A hospital as a relying party: its desk identifies the citizen with consent and links
    the subject, so that its kiosk recognises the citizen offline."""

    def __init__(self, service: LiveService) -> None:
        self.service = service
        self.key = Ed25519PrivateKey.generate()
        body = {
            "name": "测试医院",
            "sector": "health",
            "purposes": ["registration"],
            "attributes": ["name"],
            "public_jwk": OKPAlgorithm.to_jwk(self.key.public_key(), as_dict=True),
        }
        response = service.client.post(
            "/v1/relying-parties", json=body, headers=service.tokens.operator()
        )
        assert response.status_code == 201, response.text
        self.id: str = response.json()["id"]

    def headers(self) -> dict[str, str]:
        return {"Authorization": "Bearer " + relying_party_token(self.id, self.key, "EdDSA")}

    def register_at_the_desk(self, citizen_token: str) -> None:
        consent = {"disclose": {"to": self.id, "attributes": ["name"], "purpose": "registration"}}
        issued = self.service.client.post(
            "/v1/codes", json=consent, headers={"Authorization": f"Bearer {citizen_token}"}
        )
        assert issued.status_code == 200, issued.text
        identified = self.service.client.post(
            "/v1/identify",
            json={"code": issued.json()["code"], "purpose": "registration", "counter": "desk"},
            headers=self.headers(),
        )
        assert identified.status_code == 200, identified.text
        subject = identified.json()["subject"]
        linked = self.service.client.put(f"/v1/links/{subject}", headers=self.headers())
        assert linked.status_code == 204, linked.text


#: What each scene's terminal must answer a senior resident enrolled in the meal subsidy and
#: home care (the action and result members that show the card data was used).
EXPECTED: dict[str, tuple[str, dict[str, object]]] = {
    "community gate": ("resident", {}),
    "parking entry lane": ("entry", {"tariff": "permit"}),
    "parking exit lane": ("exit", {"tariff": "permit", "fee": 0}),
    "tourism turnstile": ("entry", {"ticket": "elder", "price": 0}),
    "eldercare canteen": ("meal", {"subsidy": 500, "meals_today": 1}),
    "eldercare home care": ("check_in", {}),
    "hospital kiosk": ("check_in", {"linked": True}),
}


def provision_every_scene(
    service: LiveService, workdir: Path, card_id: str, citizen_token: str
) -> dict[str, Terminal]:
    """One terminal of each scene (both lanes of a car park, both eldercare modes), with the
    scene data under which this citizen is admitted."""
    card = f"card:{card_id}"
    parking = workdir / "parking-lanes.sqlite3"
    hospital = Hospital(service)
    hospital.register_at_the_desk(citizen_token)
    parking_data = {"unit_fee": 500, "resident_unit_fee": 300, "permits": [card]}
    eldercare_data = {
        "meal_subsidy_fen": {"age_60_64": 300, "age_70_79": 500, "age_80_plus": 800},
        "meal_windows": [],  # meals at any hour: the test runs whenever it runs
    }
    return {
        "community gate": Terminal.provision(
            service, workdir / "gate", "community", {"residents": [card]}
        ),
        "parking entry lane": Terminal.provision(
            service,
            workdir / "entry",
            "parking",
            parking_data,
            site="car-park",
            options={"lane": "entry"},
            journal=parking,
        ),
        "parking exit lane": Terminal.provision(
            service,
            workdir / "exit",
            "parking",
            None,
            site="car-park",
            options={"lane": "exit"},
            journal=parking,
        ),
        "tourism turnstile": Terminal.provision(
            service,
            workdir / "turnstile",
            "tourism",
            {"prices": {"standard": 8000, "senior": 4000, "elder": 0}},
        ),
        "eldercare canteen": Terminal.provision(
            service,
            workdir / "canteen",
            "eldercare",
            eldercare_data,
            site="care-centre",
            options={"mode": "canteen"},
        ),
        "eldercare home care": Terminal.provision(
            service,
            workdir / "caregiver",
            "eldercare",
            None,
            site="care-centre",
            options={"mode": "home_care"},
        ),
        "hospital kiosk": Terminal.provision(
            service, workdir / "kiosk", "hospital", None, relying_party=hospital.id
        ),
    }


def wait_until_closed(address: tuple[str, int]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(address, timeout=1).close()
        except OSError:
            return
        time.sleep(0.05)
    raise AssertionError(f"the service at {address} still answers")


@pytest.mark.parametrize("alg", ALGS)
def test_code_made_with_the_network_down_verifies_with_idcode_verify_bundle_and_is_admitted_at_every_scenes_terminal(  # noqa: E501
    tmp_path: Path, postgres_url: str, redis_url: str, alg: Algorithm
) -> None:
    """The issue's Done-when: register, sync every scene's terminal, stop the service, then
    make codes with ``idcode wallet code`` (a process of its own), verify each with
    ``idcode verify --bundle`` against a terminal's bundle and the pinned root key, and scan
    one at each terminal, offline. The citizen: 75 (age band 70-79: the elder ticket,
    the 70-79 meal subsidy), a registered resident of the community, a permit holder of the
    car park, enrolled in the meal subsidy and home care, registered at the hospital's desk."""
    settings = live_settings(tmp_path / "service", postgres_url, redis_url, "wallet-offline")
    phone = tmp_path / "phone"
    root = tmp_path / "root.json"
    with contextlib.ExitStack() as stack:
        with live_service(settings) as service:
            card_id, token = enrol(
                service, SEVENTY_FIVE, residency="registered",
                programmes=["meal_subsidy", "home_care"],
            )  # fmt: skip
            env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "IDCODE_ID_TOKEN": token}
            registered = idcode_cli("wallet", "register", "--server", service.url, "--dir",
                                    str(phone), "--alg", alg.jose_name, env=env)  # fmt: skip
            assert registered.returncode == 0, registered.stderr
            terminals = provision_every_scene(service, tmp_path, card_id, token)
            runtimes = {
                name: stack.enter_context(terminal.running())
                for name, terminal in terminals.items()
            }
            for name, runtime in runtimes.items():
                assert runtime.sync_once() == "bundle", name
                runtime.network.clear()  # offline from here on
            root.write_text(json.dumps({"keys": [service.root_jwk]}))
            address = service.address
        # The service has stopped (its thread joined): from here on nothing answers.
        wait_until_closed(address)
        offline = {**env, "IDCODE_ID_TOKEN": ""}  # and there is no ID token either
        for name, runtime in runtimes.items():
            made = idcode_cli("wallet", "code", "--dir", str(phone), env=offline)
            assert (made.returncode, made.stderr) == (0, ""), made.stderr
            code = made.stdout.strip()
            bundle = terminals[name].directory / BUNDLE_FILE
            checked = idcode_cli("verify", "--bundle", str(bundle), "--root", str(root), code,
                                 env=offline)  # fmt: skip
            assert checked.returncode == 0, (name, checked.stdout, checked.stderr)
            verdict = json.loads(checked.stdout)
            assert (verdict["valid"], verdict["reason"]) == (True, "ok"), verdict
            assert verdict["claims"]["card"]["age_band"] == "age_70_79"
            assert verdict["claims"]["card"]["programmes"] == ["home_care", "meal_subsidy"]

            entry = runtime.scan(code)
            action, result = EXPECTED[name]
            assert entry.admitted, (name, entry)
            assert (entry.reason, entry.action) == ("ok", action), (name, entry)
            assert result.items() <= dict(entry.result).items(), (name, entry.result)


# -- what a hostile network does to honest answers ----------------------------------------------


def rewrite_json(change: Callable[[dict[str, Any]], None]) -> Callable[[bytes], bytes]:
    """A HostileService script: the honest answer, its JSON body changed by ``change``."""

    def rewrite(honest: bytes) -> bytes:
        head, _, body = honest.partition(b"\r\n\r\n")
        document = json.loads(body)
        change(document)
        status = head.split(b"\r\n", 1)[0].decode().split(" ", 1)[1]
        return sized(status, "application/json", json.dumps(document).encode())

    return rewrite


def credential_of(document: dict[str, Any]) -> Credential:
    return Credential.from_bytes(split_blob(b64url.decode(document["credential"]))[0])


def resigned(
    signer: Any, *, expires_at: Callable[[dict[str, Any], Credential], int] | None = None
) -> Callable[[dict[str, Any]], None]:
    """Replace the credential with one for the same card and key, signed by ``signer`` (a
    function of the service's key store, or a key), expiring as ``expires_at`` says."""

    def change(document: dict[str, Any]) -> None:
        credential = credential_of(document)
        expiry = credential.expires_at if expires_at is None else expires_at(document, credential)
        key = signer() if callable(signer) else signer
        blob = issue_credential(key, credential.card, credential.device, expiry)
        document["credential"] = b64url.encode(blob)
        document["credential_expires_at"] = expiry

    return change


def set_member(name: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def change(document: dict[str, Any]) -> None:
        document[name] = value

    return change


def another_keys_credential(document: dict[str, Any]) -> None:
    blob = TestIssuer().credential(Ed25519PrivateKey.generate())
    document["credential"] = b64url.encode(blob)
    document["credential_expires_at"] = Credential.from_bytes(split_blob(blob)[0]).expires_at


@dataclass(frozen=True)
class Rewrite:
    name: str
    change: Callable[[LiveService], Callable[[dict[str, Any]], None]]
    message: str
    #: Whether the answer got past its own checks, so that only the JWKS check found it.
    late: bool = False


REWRITES = [
    Rewrite("credential for another key", lambda s: another_keys_credential,
            "the credential certifies another key than this wallet's"),
    Rewrite("credential signed by an unpublished key with the service's kid",
            lambda s: resigned(lambda: IssuerKey.generate(_kid(s))),
            "does not verify with the service's published keys (bad_signature", late=True),
    Rewrite("credential signed by a key the service does not publish",
            lambda s: resigned(lambda: IssuerKey.generate(_unpublished_kid(s))),
            "does not verify with the service's published keys (unknown_key", late=True),
    Rewrite("credential valid 30 days, signed by the service's own key",
            lambda s: resigned(lambda: _signer(s),
                               expires_at=lambda d, c: d["server_time"] + 30 * 86_400),
            "longer than the 604800 s a credential may be"),
    Rewrite("credential already expired, signed by the service's own key",
            lambda s: resigned(lambda: _signer(s), expires_at=lambda d, c: d["server_time"] - 5),
            "already expired by the service's own clock"),
    Rewrite("credential cut short", lambda s: set_member("credential", "AQ"),
            "the credential is not one"),
    Rewrite("credential not base64url", lambda s: set_member("credential", "!!!"),
            "the credential is not one"),
    Rewrite("expiry not the credential's", lambda s: set_member("credential_expires_at", 7),
            "credential_expires_at is not the credential's expiry"),
    Rewrite("device_id of another key", lambda s: set_member("device_id", "00" * 8),
            "device_id is not this key's"),
    Rewrite("id not a UUID", lambda s: set_member("id", "../../v1/cards"),
            "no device id"),
    Rewrite("server_time in 1999", lambda s: set_member("server_time", 915_148_800),
            "no plausible server_time"),
    Rewrite("server_time a string", lambda s: set_member("server_time", "now"),
            "no plausible server_time"),
    Rewrite("code prefix not a device prefix", lambda s: set_member("code_prefix", "WH1:"),
            "code_prefix is not a device-code prefix"),
    Rewrite("code lifetime of 300 s", lambda s: set_member("code_lifetime", 300),
            "code_lifetime is not 60 s"),
    Rewrite("label with a line break", lambda s: set_member("label", "phone\nINFO ok"),
            "label is not printable"),
]  # fmt: skip


def _unpublished_kid(service: LiveService) -> str:
    """A kid none of the service's keys has (its kids are drawn at random: "Z" may be one)."""
    used = {key.kid for key in open_key_store(service.settings.keys_dir).issuer_keys()}
    return next(kid for kid in KID_ALPHABET if kid not in used)


def _signer(service: LiveService) -> Any:
    return open_key_store(service.settings.keys_dir).signing_key(int(time.time()))


def _kid(service: LiveService) -> str:
    kid: str = _signer(service).kid
    return kid


@pytest.mark.parametrize("rewrite", [pytest.param(r, id=r.name) for r in REWRITES])
def test_rewritten_registration_answer_is_refused_precisely_and_nothing_is_kept(
    service: LiveService,
    run: Run,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    rewrite: Rewrite,
) -> None:
    _, token = enrol(service)
    monkeypatch.setenv("IDCODE_ID_TOKEN", token)
    phone = tmp_path / "phone"
    with HostileService(upstream=service.address) as hostile:
        hostile.script("POST", [rewrite_json(rewrite.change(service))])
        status, out, err = run("register", "--server", hostile.url, "--dir", str(phone))
    assert (status, out) == (2, "")
    assert rewrite.message in err, err
    assert "Traceback" not in err and token not in err
    assert not WalletStore(phone).holds_a_wallet()
    # The service did register the device: a refusal after its answer says which one to remove.
    [registered] = devices_of_service(service, token)
    assert (f"remove the device with 'idcode wallet remove {registered}" in err) == rewrite.late


def devices_of_service(service: LiveService, token: str) -> list[str]:
    response = service.client.get("/v1/devices", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200, response.text
    return [device["id"] for device in response.json()["devices"]]


def test_unusable_jwks_after_an_honest_registration_keeps_nothing_and_names_the_device(
    service: LiveService, run: Run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, token = enrol(service)
    monkeypatch.setenv("IDCODE_ID_TOKEN", token)
    other = TestIssuer().key.public.to_jwk()
    with HostileService(upstream=service.address) as hostile:
        hostile.script("GET", [sized("200 OK", "application/json",
                                     json.dumps({"keys": [other]}).encode())])  # fmt: skip
        status, _, err = run("register", "--server", hostile.url, "--dir", str(tmp_path / "p"))
    assert status == 2
    assert "does not verify with the service's published keys" in err
    [registered] = devices_of_service(service, token)
    assert f"idcode wallet remove {registered}" in err
    assert not WalletStore(tmp_path / "p").holds_a_wallet()


def test_renewal_answer_for_another_device_leaves_the_wallet_as_it_was(
    service: LiveService, run: Run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, token = enrol(service)
    monkeypatch.setenv("IDCODE_ID_TOKEN", token)
    phone = tmp_path / "phone"
    with HostileService(upstream=service.address) as hostile:
        assert run("register", "--server", hostile.url, "--dir", str(phone))[0] == 0
        before = (phone / STATE_FILE).read_bytes()
        other = "00000000-0000-4000-8000-000000000000"
        hostile.script("POST", [rewrite_json(set_member("id", other))])
        status, _, err = run("renew", "--dir", str(phone))
        assert status == 2 and "names another device" in err
        assert (phone / STATE_FILE).read_bytes() == before
        assert run("renew", "--dir", str(phone))[0] == 0  # honest again: renewed
