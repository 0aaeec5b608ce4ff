"""What a client can make a real ``idcode serve`` process hold: request heads are bounded in
bytes, fields and time, connections in number, and a caller without a valid token costs no
body read (outside review, issue 10, findings 3 and 8a).

The server is a real process on a loopback port with PostgreSQL and Redis, spoken to over
raw sockets: the bounds live in the HTTP protocol (idcode.service.api.headlimits), below anything an
in-process client would reach. The head timeout is set to one second so the tests wait for
the server's behaviour (EOF on a socket) with generous upper bounds, never timing it.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx2
import pytest

from tests.live import free_port
from tests.services import REDIS_RUN_PREFIX

HEAD_TIMEOUT = 1.0  # IDCODE_HTTP_HEAD_TIMEOUT_SECONDS of the server under test
MAX_CONNECTIONS = 400  # IDCODE_HTTP_MAX_CONNECTIONS
STARTUP_SECONDS = 60
WAIT = 30.0  # the upper bound for anything the server should do "within the head timeout"
MIB = 1024 * 1024


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    port: int
    log: Path

    def connect(self) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=WAIT)
        return sock

    def rss_kib(self) -> int:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise AssertionError("no VmRSS")

    def healthy(self) -> bool:
        try:
            return httpx2.get(f"http://127.0.0.1:{self.port}/healthz", timeout=5).status_code == 200
        except httpx2.TransportError:
            return False


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, postgres_url: str, redis_url: str
) -> Iterator[Server]:
    workdir = tmp_path_factory.mktemp("http-limits")
    env = {k: v for k, v in os.environ.items() if not k.startswith("IDCODE_")}
    env.update(
        PYTHONUNBUFFERED="1",
        IDCODE_ENVIRONMENT="development",
        IDCODE_DATABASE_URL=postgres_url,
        IDCODE_REDIS_URL=redis_url,
        IDCODE_REDIS_PREFIX=f"{REDIS_RUN_PREFIX}limits-{secrets.token_hex(3)}:",
        IDCODE_KEYS_DIR=str(workdir / "keys"),
        IDCODE_DATA_DIR=str(workdir / "data"),
        IDCODE_DEMO_DATA="false",
        IDCODE_HTTP_HEAD_TIMEOUT_SECONDS=str(HEAD_TIMEOUT),
        IDCODE_HTTP_MAX_CONNECTIONS=str(MAX_CONNECTIONS),
    )
    port = free_port()
    log = workdir / "serve.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "idcode.cli", "serve", "--port", str(port), "--no-access-log"],
            env=env,
            cwd=workdir,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    running = Server(process, port, log)
    try:
        deadline = time.monotonic() + STARTUP_SECONDS
        while not running.healthy():
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail("idcode serve did not start:\n" + log.read_text(errors="replace"))
            time.sleep(0.2)
        yield running
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def _send_in_background(sock: socket.socket, data: bytes) -> threading.Thread:
    """Send ``data`` while the caller reads: the server may answer and close long before a
    large request is all sent, and then the rest fails to send, which is expected."""

    def send() -> None:
        with contextlib.suppress(OSError):
            sock.sendall(data)

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    return sender


def _read_until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (or WAIT passes: then the
    test fails on what came, since a held connection is the defect)."""
    sock.settimeout(WAIT)
    received = b""
    try:
        while chunk := sock.recv(65536):
            received += chunk
    except TimeoutError:
        pytest.fail(f"the server held the connection for {WAIT} s; it sent {received[:200]!r}")
    except ConnectionResetError:
        pass  # a reset after the answer: what was received before it counts
    return received


def _status(answer: bytes) -> int:
    assert answer.startswith(b"HTTP/1.1 "), answer[:200]
    return int(answer.split(b" ", 2)[1])


def _request(server: Server, head: bytes, body: bytes = b"") -> bytes:
    with server.connect() as sock:
        sender = _send_in_background(sock, head + body)
        answer = _read_until_closed(sock)
        sender.join(timeout=WAIT)
        return answer


def test_oversized_headers_are_refused_431_and_the_server_does_not_keep_them(
    server: Server,
) -> None:
    assert server.healthy()
    before = server.rss_kib()
    for size in [64 * 1024] * 20 + [64 * MIB]:
        head = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Padding: " + b"a" * size + b"\r\n\r\n"
        answer = _request(server, head)
        assert _status(answer) == 431, answer[:300]
        assert b"request_headers_too_large" in answer
    grown_mib = (server.rss_kib() - before) / 1024
    assert grown_mib < 8, f"the server grew by {grown_mib:.1f} MiB"
    assert server.healthy()


def test_too_many_header_fields_are_refused_431(server: Server) -> None:
    fields = b"".join(b"X-Field-%d: 1\r\n" % i for i in range(200))
    answer = _request(server, b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + fields + b"\r\n")
    assert _status(answer) == 431
    assert b"request_headers_too_large" in answer


def test_overlong_request_target_is_refused_414(server: Server) -> None:
    answer = _request(server, b"GET /healthz?" + b"q" * 12_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    assert _status(answer) == 414
    assert b"uri_too_long" in answer


def test_connections_with_unfinished_heads_are_closed_by_the_server(server: Server) -> None:
    """300 slowloris connections: some send nothing, some half a head, some dribble a byte
    at a time (which resets no timer of ours: the head has one deadline)."""
    silent = [server.connect() for _ in range(100)]
    halves = [server.connect() for _ in range(100)]
    for sock in halves:
        sock.sendall(b"POST /v1/codes HTTP/1.1\r\nHost: x\r\n")
    dribblers = [server.connect() for _ in range(100)]
    stop = threading.Event()

    def dribble() -> None:
        for byte in b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"s" * 1000:
            for sock in dribblers:
                with contextlib.suppress(OSError):  # closed by the server: what is waited for
                    sock.send(bytes([byte]))
            if stop.wait(HEAD_TIMEOUT / 5):
                return

    dribbling = threading.Thread(target=dribble, daemon=True)
    dribbling.start()
    try:
        answers = [_read_until_closed(sock) for sock in silent + halves + dribblers]
    finally:
        stop.set()
        dribbling.join(timeout=WAIT)
        for sock in silent + halves + dribblers:
            sock.close()
    assert all(answer == b"" for answer in answers[:100])  # nothing asked, nothing said
    assert {_status(answer) for answer in answers[100:]} == {408}
    assert server.healthy()


def test_connections_over_the_limit_are_refused_503(server: Server) -> None:
    held = []
    try:
        for _ in range(MAX_CONNECTIONS + 20):
            held.append(server.connect())
        # The last ones were over the limit: answered at once and closed.
        answers = [_read_until_closed(sock) for sock in held[-10:]]
        assert {_status(answer) for answer in answers} == {503}
        assert all(b"too_many_connections" in answer for answer in answers)
    finally:
        for sock in held:
            sock.close()
    deadline = time.monotonic() + WAIT
    while not server.healthy():  # the server goes on once the connections are gone
        assert time.monotonic() < deadline, "the server did not recover"
        time.sleep(0.2)


@pytest.mark.parametrize(
    ("path", "content_type"),
    [("/v1/events", "application/json"), ("/v1/cards/import", "text/csv")],
)
@pytest.mark.parametrize("authorization", [None, "Bearer not-a-token"])
def test_request_without_valid_token_is_refused_before_its_body_arrives(
    server: Server, path: str, content_type: str, authorization: str | None
) -> None:
    """The body is announced (1 MiB) but never sent in full: the 401 can only come if the
    server answered without reading it, and the connection is then closed after the
    head timeout rather than held for the rest of the body."""
    head = (
        f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {MIB}\r\n"
        + (f"Authorization: {authorization}\r\n" if authorization else "")
        + "\r\n"
    ).encode()
    with server.connect() as sock:
        sock.sendall(head + b"{" * 1024)
        answer = _read_until_closed(sock)
    assert _status(answer) == 401, answer[:300]
    assert b"missing_token" in answer if authorization is None else b"invalid_token" in answer
    assert server.healthy()


def test_normal_requests_work_and_keep_their_connection(server: Server) -> None:
    with server.connect() as sock:
        for _ in range(3):  # one connection, several requests, as a keep-alive client does
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            answer = b""
            while not answer.endswith(b'{"status":"ok"}'):
                chunk = sock.recv(65536)
                assert chunk, f"closed after {answer!r}"
                answer += chunk
            assert _status(answer) == 200
