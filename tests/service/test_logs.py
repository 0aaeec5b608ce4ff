"""The service's logs: request ids, one access line per request with its problem's reason,
JSON lines (IDCODE_LOG_FORMAT=json) from ``idcode serve`` and uvicorn alike, and no personal
data in any line (docs/logging.md)."""

from __future__ import annotations

import json
import logging
import os
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import httpx2
import pytest
from fastapi.concurrency import run_in_threadpool
from fastapi.testclient import TestClient

from idcode.logs import JsonFormatter, TextFormatter
from idcode.service.api.app import create_app
from idcode.service.api.requestlog import ACCESS_LOGGER, accepted_request_id, new_request_id
from idcode.service.auth import dev_token
from idcode.service.settings import Settings
from idcode.testing import random_id_number
from tests.services import REDIS_RUN_PREFIX, Tokens

WAIT = 30.0  # seconds a test waits for the server, never a measure


@pytest.fixture(scope="module")
def settings(
    tmp_path_factory: pytest.TempPathFactory, postgres_url: str, redis_url: str
) -> Settings:
    home = tmp_path_factory.mktemp("logs")
    return Settings(
        environment="development",
        keys_dir=home / "keys",
        data_dir=home / "data",
        demo_data=False,
        database_url=postgres_url,
        redis_url=redis_url,
        redis_prefix=f"{REDIS_RUN_PREFIX}logs-{secrets.token_hex(3)}:",
    )


@pytest.fixture(scope="module")
def client(settings: Settings) -> Iterator[TestClient]:
    app = create_app(settings)
    threaded = logging.getLogger("tests.threaded")

    async def log_in_a_worker_thread() -> dict[str, str]:
        # A route's blocking work runs in a worker thread: its lines carry the request id too.
        await run_in_threadpool(threaded.warning, "logged from a worker thread")
        return {}

    app.add_api_route("/test-only/log-in-a-thread", log_in_a_worker_thread)
    with TestClient(app) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def tokens(settings: Settings) -> Tokens:
    return Tokens(settings)


class Lines(logging.Handler):
    """Every line logged while it is attached, formatted as JSON and as text."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.json: list[dict[str, Any]] = []
        self.text: list[str] = []
        self._json, self._text = JsonFormatter(), TextFormatter()

    def emit(self, record: logging.LogRecord) -> None:
        if record.name.startswith("httpx"):
            return  # the test's own HTTP client, which logs the URLs it was given
        formatted = self._json.format(record)
        assert "\n" not in formatted
        self.json.append(json.loads(formatted))
        self.text.append(self._text.format(record))

    def access(self) -> list[dict[str, Any]]:
        return [line for line in self.json if line["logger"] == ACCESS_LOGGER]


@pytest.fixture
def lines() -> Iterator[Lines]:
    handler = Lines()
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


# -- request ids ----------------------------------------------------------------------------


def test_a_well_formed_request_id_is_taken_returned_and_in_the_requests_lines(
    client: TestClient, lines: Lines
) -> None:
    response = client.get("/test-only/log-in-a-thread", headers={"X-Request-Id": "gate-7.a:42"})
    assert response.headers["X-Request-Id"] == "gate-7.a:42"
    threaded = [line for line in lines.json if line["logger"] == "tests.threaded"]
    assert [line["request_id"] for line in threaded] == ["gate-7.a:42"]
    assert [line["request_id"] for line in lines.access()] == ["gate-7.a:42"]
    assert any(text.endswith("request_id=gate-7.a:42") for text in lines.text)


@pytest.mark.parametrize(
    "header",
    [
        "short",  # under 8 characters
        "x" * 65,  # over 64
        "has space inside",
        "new\\nline\\ninjected",
        "110101199003077777",  # digits only: could be an ID or a phone number
        "11010519491231002X",  # an ID number whose check character is X
        "11010519491231002x",
        "id:11010519491231002X",
        "tel-13912345678",  # a phone number in a name
        "born19581123",  # a birth date written out
        "card.6222021234567890123",
        "13912345678abcde",  # hex-shaped, with a mobile number in it
        "4bf92f3577b34da6110105194912310029",  # hex-shaped, with 15 digits in a row
        "电子码请求编号一二",
    ],
)
def test_a_malformed_or_unbounded_request_id_is_replaced_by_a_new_one(
    client: TestClient, lines: Lines, header: str
) -> None:
    response = client.get("/healthz", headers={b"X-Request-Id": header.encode()})
    returned = response.headers["X-Request-Id"]
    assert returned != header and accepted_request_id(returned.encode()) == returned
    assert [line["request_id"] for line in lines.access()] == [returned]
    assert all(header not in text for text in lines.text)


@pytest.mark.parametrize(
    "header",
    [
        "3f2504e0-4f89-11d3-9a0c-0305e82c3301",  # a UUID
        "4bf92f3577b34da6a3ce929d0e0e4736",  # a W3C trace id
        "0af7651916cd43dd8448eb211c80319c",  # nginx's $request_id: 32 hex digits
        "00f067aa0ba902b7",  # a W3C parent id
        "gate-7.a:42",
        "req-00042-retry",  # short runs of digits
        "1234567890abcdef",  # hex with ten digits in a row: no mobile number, under 15
    ],
)
def test_machine_made_and_named_request_ids_are_taken(header: str) -> None:
    assert accepted_request_id(header.encode()) == header


def test_every_request_gets_its_own_id(client: TestClient) -> None:
    ids = {client.get("/healthz").headers["X-Request-Id"] for _ in range(3)}
    assert len(ids) == 3


def test_a_forked_worker_does_not_repeat_its_parents_request_ids() -> None:
    """New ids come from a generator seeded per process; a worker forked from a process that
    already made ids is seeded again (os.register_at_fork), so two workers' ids differ."""
    new_request_id()
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # the child: its next ids, to the parent
        os.write(write, ",".join(new_request_id() for _ in range(50)).encode())
        os._exit(0)
    os.close(write)
    os.waitpid(child, 0)
    with os.fdopen(read) as pipe:
        childs = pipe.read().split(",")
    parents = [new_request_id() for _ in range(50)]
    assert len(childs) == 50 and not set(childs) & set(parents)
    assert all(len(i) == 32 and int(i, 16) >= 0 for i in childs + parents)
    assert len(set(parents)) == 50


def test_every_new_request_id_is_taken_back_when_a_caller_sends_it_again() -> None:
    """About one random 32-hex-digit id in ninety holds a run the acceptance rules refuse
    (15 digits, a mobile number): new ids never do, so a retry keeps its id."""
    ids = [new_request_id() for _ in range(5_000)]
    assert all(accepted_request_id(i.encode()) == i for i in ids)


# -- the access line ------------------------------------------------------------------------


def test_the_access_line_has_method_route_template_status_and_duration(
    client: TestClient, tokens: Tokens, lines: Lines
) -> None:
    response = client.get("/v1/events", params={"limit": 1}, headers=tokens.operator())
    assert response.status_code == 200
    (line,) = lines.access()
    assert (line["level"], line["method"], line["route"], line["status"]) == (
        "info",
        "GET",
        "/v1/events",
        200,
    )
    assert isinstance(line["duration_ms"], float) and "reason" not in line
    assert line["time"].endswith("Z")


def _refusals(tokens: Tokens) -> list[tuple[str, str, dict[str, Any], int, str]]:
    return [
        ("POST", "/v1/codes", {}, 401, "missing_token"),
        ("POST", "/v1/codes", {"headers": {"Authorization": "Bearer abc"}}, 401, "invalid_token"),
        ("GET", "/v1/events", {"headers": tokens.citizen(random_id_number())}, 403, "forbidden"),
        ("GET", "/v1/nothing-here", {}, 404, "not_found"),
        ("DELETE", "/v1/codes", {}, 405, "method_not_allowed"),
        (
            "POST",
            "/v1/cards",
            {"headers": tokens.operator(), "content": "a=1", "json_type": "text/plain"},
            415,
            "unsupported_media_type",
        ),
        (
            "GET",
            "/v1/events",
            {"headers": tokens.operator(), "params": {"limit": 0}},
            422,
            "invalid_request",
        ),
        (
            "POST",
            "/v1/cards",
            {"headers": tokens.operator(), "content": b"{" * (64 * 1024 + 1)},
            413,
            "payload_too_large",
        ),
    ]


def test_every_4xx_is_logged_at_warning_with_its_problems_reason(
    client: TestClient, tokens: Tokens, lines: Lines
) -> None:
    for method, path, options, status, reason in _refusals(tokens):
        options = dict(options)
        if "json_type" in options:
            options["headers"] = {**options["headers"], "Content-Type": options.pop("json_type")}
        lines.json.clear()
        response = client.request(method, path, **options)
        assert (response.status_code, response.json()["reason"]) == (status, reason), path
        (line,) = lines.access()
        assert (line["level"], line["status"], line["reason"]) == ("warning", status, reason)
        assert line["request_id"] == response.headers["X-Request-Id"]


def test_a_401_line_says_why_the_token_was_refused(
    client: TestClient, settings: Settings, lines: Lines
) -> None:
    token = dev_token(settings, "citizen-1", id_number=random_id_number())
    head, body, _ = token.split(".")
    forged = f"{head}.{body}.{dev_token(settings, 'op').split('.')[2]}"
    for authorization, why in (
        (None, "missing_token"),
        (
            f"Bearer {forged}",
            "invalid_token: the ID token is not valid: Signature verification failed",
        ),
    ):
        lines.json.clear()
        headers = {"Authorization": authorization} if authorization else {}
        assert client.post("/v1/codes", headers=headers).status_code == 401
        (line,) = lines.access()
        assert why in line["message"]
        assert line["reason"] == why.split(":")[0]


# -- no personal data -----------------------------------------------------------------------


def test_no_line_holds_an_id_number_name_phone_birth_date_code_or_pseudonym(
    client: TestClient, tokens: Tokens, lines: Lines
) -> None:
    id_number = random_id_number(date(1958, 11, 23))
    name, phone = "欧阳娜娜", "13912345678"
    card = {"id_number": id_number, "name": name, "phone": phone}
    enrolled = client.post("/v1/cards", json=card, headers=tokens.operator())
    assert enrolled.status_code == 201, enrolled.text
    pseudonym = enrolled.json()["pseudonym"]
    again = client.post("/v1/cards", json=card, headers=tokens.operator())
    assert again.status_code == 409
    # Personal data in the wrong places: a bad field, a query, a path, a request id.
    client.post("/v1/cards", json={**card, "phone": f"{phone}x"}, headers=tokens.operator())
    client.get(f"/v1/cards/{id_number}", headers={"X-Request-Id": id_number})
    client.get(
        "/v1/events", params={"reason": name, "terminal_id": phone}, headers=tokens.operator()
    )
    citizen = tokens.citizen(id_number)
    issued = client.post("/v1/codes", headers=citizen)
    assert issued.status_code == 200, issued.text
    code = issued.json()["code"]
    verified = client.post("/v1/verify", json={"code": code}, headers=tokens.verifier())
    assert verified.status_code == 200, verified.text
    assert (
        client.post("/v1/verify", json={"code": code}, headers=tokens.verifier()).json()["reason"]
        == "replayed"
    )
    client.post("/v1/codes", headers={"Authorization": "Bearer " + id_number})

    assert len(lines.access()) >= 9
    written = "\n".join(lines.text) + "\n" + "\n".join(map(json.dumps, lines.json))
    written += "\n" + "\n".join(json.dumps(line, ensure_ascii=False) for line in lines.json)
    for personal in (
        id_number,
        id_number[-6:],
        name,
        phone,
        "1958-11-23",
        "19581123",
        code,
        code[4:40],
        pseudonym,
    ):
        assert personal not in written, personal


# -- idcode serve with IDCODE_LOG_FORMAT=json ----------------------------------------------


@dataclass
class Served:
    url: str
    log: Path
    settings: Settings

    def lines(self) -> list[str]:
        return self.log.read_text(encoding="utf-8").splitlines()


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """``idcode serve`` on its embedded defaults, its lines as JSON."""
    workdir = tmp_path_factory.mktemp("serve-json")
    env = {k: v for k, v in os.environ.items() if not k.startswith("IDCODE_")}
    env.update(
        PYTHONUNBUFFERED="1",
        IDCODE_LOG_FORMAT="json",
        IDCODE_KEYS_DIR=str(workdir / "keys"),
        IDCODE_DATA_DIR=str(workdir / "data"),
        IDCODE_DEMO_DATA="false",
    )
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    log = workdir / "serve.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "idcode.cli", "serve", "--port", str(port)],
            env=env,
            cwd=workdir,
            stdout=subprocess.DEVNULL,
            stderr=output,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + WAIT
        while True:
            try:
                if httpx2.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx2.TransportError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail("idcode serve did not start:\n" + log.read_text(errors="replace"))
            time.sleep(0.1)
        yield Served(url, log, Settings(keys_dir=workdir / "keys", data_dir=workdir / "data"))
    finally:
        process.terminate()
        process.wait(timeout=WAIT)


def test_idcode_serve_writes_every_line_uvicorns_included_as_one_json_object(
    served: Served,
) -> None:
    refused = httpx2.post(
        f"{served.url}/v1/codes", headers={"X-Request-Id": "logs-test-0001"}, timeout=WAIT
    )
    assert refused.status_code == 401
    operator = dev_token(served.settings, "op", roles=(served.settings.operator_role,))
    wrong_type = httpx2.post(
        f"{served.url}/v1/cards",
        content="id_number=1",
        headers={
            "Authorization": f"Bearer {operator}",
            "Content-Type": "application/x-www-form-urlencoded",
        },
        timeout=WAIT,
    )
    assert wrong_type.status_code == 415
    deadline = time.monotonic() + WAIT
    while sum(ACCESS_LOGGER in line for line in served.lines()) < 3:
        assert time.monotonic() < deadline, served.lines()
        time.sleep(0.05)

    parsed = [json.loads(line) for line in served.lines()]  # every line is one JSON object
    assert all({"time", "level", "logger", "message"} <= line.keys() for line in parsed)
    assert any(line["logger"].startswith("uvicorn") for line in parsed), parsed
    access = [line for line in parsed if line["logger"] == ACCESS_LOGGER]
    first = next(line for line in access if line["request_id"] == "logs-test-0001")
    assert (first["route"], first["status"], first["reason"]) == ("/v1/codes", 401, "missing_token")
    second = next(
        line for line in access if line["request_id"] == wrong_type.headers["X-Request-Id"]
    )
    assert (second["status"], second["reason"]) == (415, "unsupported_media_type")


def test_a_request_the_http_protocol_refuses_has_an_id_and_a_line_with_its_reason(
    served: Served,
) -> None:
    # Refused before the application sees it (headlimits.py): over 8 KiB of request target.
    too_long = httpx2.get(f"{served.url}/v1/cards/{'x' * 9000}", timeout=WAIT)
    assert (too_long.status_code, too_long.json()["reason"]) == (414, "uri_too_long")
    refused_id = too_long.headers["X-Request-Id"]
    deadline = time.monotonic() + WAIT
    while refused_id not in served.log.read_text(encoding="utf-8"):
        assert time.monotonic() < deadline, served.lines()
        time.sleep(0.05)
    (line,) = [json.loads(text) for text in served.lines() if refused_id in text]
    assert (line["level"], line["status"], line["reason"]) == ("warning", 414, "uri_too_long")
    assert "x" * 100 not in line["message"]
