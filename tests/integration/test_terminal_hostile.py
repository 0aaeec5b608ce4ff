"""A terminal meets hostile or garbled HTTP answers (a captive portal, a broken proxy, someone
on the network path): each becomes a precise error, the sync and upload loops go on, and the
next honest answer is taken. Also the other places that read a network answer: provisioning
from the command line, and the service's fetch of the identity provider's keys; and the
terminal's input loops (text lines, serial port, scan endpoint), which outlive a failing scan.

The hostile answers come from tests/hostile.py, raw bytes on a real loopback socket; the
honest ones from a real service (uvicorn on PostgreSQL and Redis, tests/live.py).
"""

from __future__ import annotations

import io
import json
import logging
import os
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi.testclient import TestClient
from jwt.algorithms import OKPAlgorithm

from idcode.cli import main as idcode_main
from idcode.errors import AuthError, BadResponse, ServiceError, ServiceUnreachable
from idcode.service.api.app import create_app
from idcode.service.auth import KeySource, TokenVerifier
from idcode.service.settings import Settings
from idcode.terminal import identity as identities
from idcode.terminal.client import TerminalClient, register
from idcode.terminal.identity import TerminalIdentity
from idcode.terminal.journal import JournalEntry
from idcode.terminal.runtime import TerminalRuntime
from idcode.terminal.scanners import scan_lines
from idcode.testing import TestIssuer
from tests.hostile import ANSWERS, HOSTILE_ETAG, Hostile, HostileService, sized
from tests.live import LiveService, live_service, live_settings

from .test_terminal_runtime import (
    SCENE,
    WAIT,
    call,
    enrol,
    issue,
    journaled_ids,
    local_terminal,
    mint,
    new_site,
    provision,
    revoke,
    running,
    scan_endpoint,
    stored_ids,
)

BY_NAME = [pytest.param(hostile, id=hostile.name) for hostile in ANSWERS]

# A well-formed id no record has, fixed: parameters are the same in every collection (xdist
# workers compare them).
FIXED_ID = uuid.UUID("6f1c3b52-7d2e-4a8b-9c0d-1e2f3a4b5c6d")


@pytest.fixture
def hostile() -> Iterator[HostileService]:
    with HostileService() as server:
        yield server


def identity_at(server: str) -> TerminalIdentity:
    return TerminalIdentity(
        str(uuid.uuid4()), SCENE, "site", server, identities.new_terminal_key(), {}
    )


def assert_precise(error: BaseException, hostile: Hostile) -> None:
    """The error names what went wrong, as the client's own type and reason."""
    if hostile.expected == "unreachable":
        assert type(error) is ServiceUnreachable, repr(error)
    else:
        assert isinstance(error, BadResponse), repr(error)
        assert error.reason == hostile.expected, repr(error)
        assert all(" " <= c <= "~" for c in str(error)), str(error)  # nothing to forge a log


# -- the client: every hostile answer is a precise error -------------------------------------


@pytest.mark.parametrize("hostile_answer", BY_NAME)
def test_hostile_answer_to_each_terminal_request_is_a_precise_error(
    hostile: HostileService, hostile_answer: Hostile
) -> None:
    client = TerminalClient(identity_at(hostile.url), timeout=WAIT)
    requests: dict[str, Callable[[], object]] = {
        "trust bundle": lambda: client.trust_bundle(None),
        "status delta": lambda: client.status_delta(3),
        "upload": lambda: client.upload([{"event_id": uuid.uuid4().hex}]),
        "register": lambda: register(
            hostile.url, "operator", scene=SCENE, site="site", public_jwk={}
        ),
    }
    for name, send in requests.items():
        hostile.script("GET", [hostile_answer.raw])
        hostile.script("POST", [hostile_answer.raw])
        with pytest.raises((ServiceError, ServiceUnreachable)) as raised:
            send()
        assert_precise(raised.value, hostile_answer)
        assert hostile.remaining("GET") + hostile.remaining("POST") == 1, name  # it was asked
        hostile.clear()


def test_service_problem_keeps_its_status_and_reason(hostile: HostileService) -> None:
    problem = b'{"type": "urn:idcode:problem:unknown_version", "reason": "unknown_version"}'
    hostile.script("GET", [sized("409 Conflict", "application/problem+json", problem)])
    client = TerminalClient(identity_at(hostile.url))

    with pytest.raises(ServiceError) as raised:
        client.status_delta(7)

    assert type(raised.value) is ServiceError
    assert (raised.value.status, raised.value.reason) == (409, "unknown_version")


def test_entity_tag_that_could_not_be_sent_back_is_dropped(hostile: HostileService) -> None:
    answers = [
        (b'"\xe9t\xe9"', None),  # Latin-1: cannot be stored as ASCII nor sent back
        (b'"a"\x01', None),
        (b'"' + b"a" * 300 + b'"', None),
        (b'W/"v1"', 'W/"v1"'),
        (b'"v2"', '"v2"'),
    ]
    client = TerminalClient(identity_at(hostile.url))
    for tag, kept in answers:
        head = b"HTTP/1.1 200 OK\r\nContent-Type: application/jwt\r\nContent-Length: 5\r\n"
        hostile.script("GET", [head + b"ETag: " + tag + b"\r\n\r\na.b.c"])
        assert client.trust_bundle(None) == ("a.b.c", kept), tag


@pytest.mark.parametrize(
    "body",
    [
        b'{"id": 7}',
        b'{"id": "../../etc"}',
        b'{"id": "\\n"}',
        b'{"id": ["' + str(FIXED_ID).encode() + b'"]}',
        b"{}",
    ],
)
def test_registration_answer_without_a_terminal_id_is_a_bad_response(
    hostile: HostileService, body: bytes
) -> None:
    hostile.script("POST", [sized("201 Created", "application/json", body)])
    with pytest.raises(BadResponse) as raised:
        register(hostile.url, "operator", scene=SCENE, site="site", public_jwk={})
    assert raised.value.reason == "bad_response"


# -- the runtime: the loops survive every hostile answer, then take the honest ones ----------


@pytest.fixture(scope="module")
def service(
    tmp_path_factory: pytest.TempPathFactory, postgres_url: str, redis_url: str
) -> Iterator[LiveService]:
    workdir = tmp_path_factory.mktemp("hostile-service")
    settings = live_settings(workdir, postgres_url, redis_url, "hostile")
    with live_service(settings) as live:
        yield live


@pytest.fixture
def thread_crashes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Threads that died of an exception ("Exception in thread ..."), by name."""
    crashes: list[str] = []

    def record(args: threading.ExceptHookArgs) -> None:
        crashes.append(f"{args.thread.name if args.thread else '?'}: {args.exc_type.__name__}")

    monkeypatch.setattr(threading, "excepthook", record)
    return crashes


def wait_for(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT * 2
    while not condition():
        assert time.monotonic() < deadline, f"gave up waiting: {what}"
        time.sleep(0.02)


def loops_alive() -> set[str]:
    return {t.name for t in threading.enumerate() if t.name in ("idcode-sync", "idcode-upload")}


def test_hostile_answers_do_not_stop_sync_or_upload_and_honest_answers_are_then_taken(
    service: LiveService,
    tmp_path: Path,
    thread_crashes: list[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="idcode.terminal")
    directory = tmp_path / "gate"
    card_id, id_number = enrol(service)
    before, after = issue(service, id_number), issue(service, id_number)  # after: once revoked
    with HostileService(upstream=service.address) as hostile:
        identity = replace(provision(service, directory, new_site()), server=hostile.url)
        # Every hostile answer to the bundle requests, then an honest bundle whose ETag cannot
        # be kept; every hostile answer to the uploads, then the service's own answers.
        hostile.script("GET", [answer.raw for answer in ANSWERS] + [HOSTILE_ETAG.raw])
        hostile.script("POST", [answer.raw for answer in ANSWERS])
        with running(
            directory,
            identity,
            sync_interval=0.05,
            bundle_interval=3600,  # once the bundle is held, status deltas
            upload_interval=0.05,
            max_backoff=0.05,
        ) as runtime:
            early = [runtime.scan(mint(service, time.time())) for _ in range(3)]
            runtime.start()
            wait_for(lambda: runtime.bundle is not None, "the honest bundle")
            assert hostile.remaining("GET") == 0
            admitted = runtime.scan(before)

            wait_for(
                lambda: (
                    not hostile.remaining("POST") and not runtime.journal.pending_count(identity.id)
                ),
                "the honest uploads",
            )
            assert stored_ids(service, identity.id) == journaled_ids(runtime)

            # A revocation still reaches the terminal, through hostile answers to its deltas.
            assert runtime.bundle is not None
            version = runtime.bundle.version
            hostile.script("GET", [answer.raw for answer in ANSWERS])
            # The terminal syncs one request at a time: once it took a scripted answer, no
            # request relayed before the script is still on its way to pick up the revocation.
            wait_for(lambda: hostile.remaining("GET") < len(ANSWERS), "a hostile delta answer")
            revoke(service, card_id)
            wait_for(
                lambda: runtime.bundle is not None and runtime.bundle.version > version,
                "the honest status delta",
            )
            assert hostile.remaining("GET") == 0
            refused = runtime.scan(after)
            wait_for(lambda: not runtime.journal.pending_count(identity.id), "the last upload")
            assert loops_alive() == {"idcode-sync", "idcode-upload"}
            assert stored_ids(service, identity.id) == journaled_ids(runtime)

    assert [entry.reason for entry in early] == ["stale_trust"] * 3
    assert (admitted.reason, refused.reason) == ("ok", "revoked")
    assert thread_crashes == []
    # Each failure was expected and said what it was: nothing logged as an unexpected error.
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert sum("failed (BadResponse)" in line for line in warnings) >= len(ANSWERS)


class Exploding(TerminalClient):
    """A client with a bug: its first calls raise errors nobody planned for."""

    def __init__(self, identity: TerminalIdentity, failures: list[BaseException]) -> None:
        super().__init__(identity)
        self.failures = failures

    def trust_bundle(self, etag: str | None) -> tuple[str | None, str | None]:
        if self.failures:
            raise self.failures.pop(0)
        return super().trust_bundle(etag)

    def upload(self, events: list[dict[str, Any]]) -> dict[str, int]:
        if self.failures:
            raise self.failures.pop(0)
        return super().upload(events)


def test_unexpected_errors_are_logged_by_type_and_the_loops_go_on(
    service: LiveService,
    tmp_path: Path,
    thread_crashes: list[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="idcode.terminal")
    directory = tmp_path / "gate"
    identity = provision(service, directory, new_site())
    code_text = "WH1:A-CODE-TEXT-THAT-MUST-NOT-BE-LOGGED"
    failures: list[BaseException] = [
        KeyError(code_text),
        AttributeError(code_text),
        RecursionError(code_text),
        UnicodeDecodeError("ascii", code_text.encode(), 0, 1, code_text),
        MemoryError(code_text),
        TypeError(code_text),
    ]
    client = Exploding(identity, failures)
    with running(
        directory, identity, client=client, sync_interval=0.05, upload_interval=0.05,
        max_backoff=0.05,
    ) as runtime:  # fmt: skip
        runtime.scan(mint(service, time.time()))
        runtime.start()
        wait_for(lambda: runtime.bundle is not None, "the bundle after the errors")
        wait_for(lambda: not runtime.journal.pending_count(identity.id), "the upload")
        assert loops_alive() == {"idcode-sync", "idcode-upload"}
        assert stored_ids(service, identity.id) == journaled_ids(runtime)

    assert failures == [] and thread_crashes == []
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 6
    for kind in ("KeyError", "AttributeError", "RecursionError", "MemoryError", "TypeError"):
        assert any(f"unexpected {kind} at " in line for line in errors), kind
    assert all(code_text not in record.getMessage() for record in caplog.records)


# -- provisioning from the command line --------------------------------------------------------


@pytest.mark.parametrize("hostile_answer", BY_NAME)
def test_hostile_answer_to_provisioning_is_a_clear_cli_error(
    hostile: HostileService,
    hostile_answer: Hostile,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    root = Ed25519PrivateKey.generate().public_key()
    (tmp_path / "root.json").write_text(json.dumps(OKPAlgorithm.to_jwk(root, as_dict=True)))
    hostile.script("POST", [hostile_answer.raw])
    directory = tmp_path / "gate"

    status = idcode_main(
        [
            "terminal",
            "provision",
            *("--dir", str(directory), "--server", hostile.url),
            *("--scene", SCENE, "--site", "site", "--root", str(tmp_path / "root.json")),
            *("--operator-token", "operator"),
        ]
    )

    error = capsys.readouterr().err
    # docs/cli.md: 3 when the service is away (try later), 2 for an answer it would not give.
    unreachable = hostile_answer.expected == "unreachable"
    assert status == (3 if unreachable else 2)
    expected = "cannot reach" if unreachable else "unusable answer"
    assert error.startswith(f"idcode: error: {expected}"), error
    assert not identities.is_provisioned(directory)


def test_provisioning_against_a_captive_portal_exits_2_without_a_traceback(
    hostile: HostileService, tmp_path: Path
) -> None:
    root = Ed25519PrivateKey.generate().public_key()
    (tmp_path / "root.json").write_text(json.dumps(OKPAlgorithm.to_jwk(root, as_dict=True)))
    hostile.script("POST", [sized("200 OK", "text/html", "<html>登录 Wi-Fi</html>".encode())])
    arguments = ["--dir", str(tmp_path / "gate"), "--server", hostile.url, "--scene", SCENE]
    arguments += ["--site", "site", "--root", "root.json", "--operator-token", "operator"]
    environment = {k: v for k, v in os.environ.items() if not k.startswith("IDCODE_")}
    environment.update(IDCODE_ENVIRONMENT="development", IDCODE_KEYS_DIR=str(tmp_path / "k"))
    done = subprocess.run(
        [sys.executable, "-m", "idcode.cli", "terminal", "provision", *arguments],
        cwd=tmp_path,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert "unusable answer from the service (HTTP 200, bad_response)" in done.stderr
    assert "expected HTTP 201" in done.stderr


@pytest.mark.parametrize("root", [b"<html>", b"\xff\xfe", b"[1]", b'{"keys": "x"}'])
def test_root_key_file_that_is_not_a_root_key_is_a_clear_cli_error(
    root: bytes,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    (tmp_path / "root.json").write_bytes(root)

    status = idcode_main(
        [
            "terminal",
            "provision",
            *("--dir", str(tmp_path / "gate"), "--server", "http://127.0.0.1:9"),
            *("--scene", SCENE, "--site", "site", "--root", str(tmp_path / "root.json")),
            *("--operator-token", "operator"),
        ]
    )

    assert status == 2
    assert "does not hold the city root key" in capsys.readouterr().err


@pytest.mark.parametrize("hostile_answer", BY_NAME)
def test_examples_stop_with_a_message_on_a_hostile_answer(
    hostile: HostileService, hostile_answer: Hostile, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The examples' requests (examples/terminal_common.py) end with a one-line message."""
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[2] / "examples"))
    from terminal_common import Example

    example = Example.__new__(Example)  # only its server is needed to make a request
    example.server = hostile.url
    hostile.script("GET", [hostile_answer.raw])
    try:
        example.call("GET", "/healthz")  # JSON of any shape is returned: its caller reads it
    except SystemExit as stopped:
        assert isinstance(stopped.code, str)
        assert stopped.code.startswith(("GET /healthz: ", "cannot reach ")), stopped.code


# -- the service's fetch of the identity provider's keys ----------------------------------------

JWKS_ANSWERS = [
    *(hostile for hostile in ANSWERS if hostile.name != "closed at once"),
    Hostile("JWKS keys not a list", sized("200 OK", "application/json", b'{"keys": "k1"}')),
    Hostile("JWKS key not an object", sized("200 OK", "application/json", b'{"keys": ["k1"]}')),
    Hostile(
        "JWKS key with odd members",
        sized(
            "200 OK",
            "application/json",
            b'{"keys": [{"kty": "OKP", "crv": "Ed25519", "x": 5, "kid": "k1"},'
            b' {"kty": "RSA", "n": "!!", "e": [], "kid": "k1"}, {"kty": 7}]}',
        ),
    ),
    Hostile("JWKS with no keys", sized("200 OK", "application/json", b'{"keys": []}')),
    Hostile("closed at once", b""),
]


def provider_token(settings: Settings) -> str:
    claims = {"iss": settings.oidc_issuer, "aud": settings.oidc_audience, "sub": "x"}
    return jwt.encode(
        {**claims, "iat": int(time.time()), "exp": int(time.time()) + 60},
        Ed25519PrivateKey.generate(),
        algorithm="EdDSA",
        headers={"kid": "k1"},
    )


@pytest.mark.parametrize(
    "hostile_answer", [pytest.param(h, id=h.name) for h in JWKS_ANSWERS]
)  # fmt: skip
def test_hostile_key_set_answer_is_idp_unavailable(
    hostile: HostileService, hostile_answer: Hostile, tmp_path: Path
) -> None:
    settings = Settings(environment="development", keys_dir=tmp_path / "keys")
    verifier = TokenVerifier(settings, KeySource(url=f"{hostile.url}/jwks.json"))
    for _ in range(2):  # and again: nothing unusable is kept in pyjwt's cache
        hostile.script("GET", [hostile_answer.raw])
        with pytest.raises(AuthError) as raised:
            verifier.verify(provider_token(settings))
        assert raised.value.reason == "idp_unavailable", raised.value


def test_hostile_key_set_answer_gives_citizens_503_not_500(
    hostile: HostileService, service_settings: Settings
) -> None:
    settings = service_settings.model_copy(update={"oidc_jwks_url": f"{hostile.url}/jwks.json"})
    kinds = [h for h in JWKS_ANSWERS if h.name in ("non-ASCII bundle", "JSON deeply nested")]
    kinds += [h for h in JWKS_ANSWERS if h.name.startswith("JWKS key")]
    with TestClient(create_app(settings)) as client:
        for kind in kinds:
            hostile.script("GET", [kind.raw])
            response = client.post(
                "/v1/codes", headers={"Authorization": f"Bearer {provider_token(settings)}"}
            )
            assert response.status_code == 503, (kind.name, response.text)
            assert response.json()["reason"] == "idp_unavailable"


# -- the scanner inputs: an error in one scan does not end the input --------------------------


class FailingOnce:
    """Wraps a runtime's scan: the ``nth`` scan fails as a journal on a failing disk would."""

    def __init__(self, runtime: TerminalRuntime, nth: int) -> None:
        self.scan, self.nth, self.calls = runtime.scan, nth, 0

    def __call__(self, text: str) -> JournalEntry:
        self.calls += 1
        if self.calls == self.nth:
            raise sqlite3.OperationalError(f"disk I/O error while journaling {text}")
        return self.scan(text)


def test_scan_that_cannot_be_journaled_is_denied_and_the_next_lines_are_decided(
    issuer: TestIssuer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    codes = [issuer.mint() for _ in range(3)]
    out = io.StringIO()
    with local_terminal(tmp_path / "gate", issuer) as runtime:
        runtime.scan = FailingOnce(runtime, 2)  # type: ignore[method-assign]
        count = scan_lines(runtime, [code + "\n" for code in codes], out)
        journaled = runtime.journal.entries()

    decisions = [json.loads(line) for line in out.getvalue().splitlines()]
    assert count == 3
    assert [(d["admitted"], d["reason"]) for d in decisions] == [
        (True, "ok"),
        (False, "terminal_error"),
        (True, "ok"),
    ]
    assert decisions[1]["event_id"] is None and len(journaled) == 2
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "unexpected OperationalError at " in errors[0]
    assert all(code not in r.getMessage() for r in caplog.records for code in codes)


def test_scan_endpoint_answers_500_denied_when_a_scan_fails_and_serves_the_next_one(
    issuer: TestIssuer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first, second = issuer.mint(), issuer.mint()
    with local_terminal(tmp_path / "gate", issuer) as runtime, scan_endpoint(runtime) as address:
        runtime.scan = FailingOnce(runtime, 1)  # type: ignore[method-assign]
        failed = call(address, "POST", "/scan", first.encode())
        decided = call(address, "POST", "/scan", second.encode())

    assert failed[0] == 500
    assert (failed[1]["admitted"], failed[1]["reason"]) == (False, "terminal_error")
    assert decided[0] == 200 and decided[1]["reason"] == "ok"
    assert "Traceback" not in capsys.readouterr().err


def test_serial_port_that_goes_away_is_opened_again_and_its_scans_decided(
    issuer: TestIssuer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from idcode.terminal.scanners import reopening_serial_lines

    codes = [issuer.mint() for _ in range(3)]
    openings: list[str] = []

    def flaky_port(port: str, baudrate: int, opened: Callable[[], None]) -> Iterator[str]:
        """The first opening delivers two scans, then the USB link resets; the second, one."""
        openings.append(port)
        opened()
        if len(openings) == 1:
            yield from codes[:2]
            raise OSError(5, "Input/output error")
        yield codes[2]

    out = io.StringIO()
    lines = reopening_serial_lines("/dev/ttyUSB0", open_lines=flaky_port, max_pause=0.01)
    with local_terminal(tmp_path / "gate", issuer) as runtime:
        count = scan_lines(runtime, lines, out)

    assert count == 3 and openings == ["/dev/ttyUSB0"] * 2
    assert [json.loads(line)["reason"] for line in out.getvalue().splitlines()] == ["ok"] * 3
    assert any("went away (OSError)" in r.getMessage() for r in caplog.records)


def test_serial_port_that_cannot_be_opened_at_all_is_an_error(tmp_path: Path) -> None:
    from idcode.terminal.scanners import reopening_serial_lines

    with pytest.raises(OSError):
        next(reopening_serial_lines(str(tmp_path / "no-such-port"), max_pause=0.01))
