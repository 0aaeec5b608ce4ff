"""A hostile HTTP service for tests: raw bytes on a real loopback socket, so that an answer can
be anything a captive portal, a broken proxy or someone on the network path might send,
malformed status lines and connections cut mid-answer included.

    with HostileService(upstream=service.address) as hostile:
        hostile.script("GET", [answer.raw for answer in ANSWERS])   # the next GETs get these
        ... point a terminal at hostile.url ...

Each request gets the next scripted answer for its method; once a method's script is used up,
requests are passed on to ``upstream`` (the real service) and its answer relayed, so that the
terminal then meets the honest service. A scripted answer may also be a function of the
honest answer (it is proxied, then rewritten). ``ANSWERS`` is the catalogue of hostile answers.
"""

from __future__ import annotations

import collections
import contextlib
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType

# A scripted answer: raw bytes sent as they are (then the connection is closed), or a rewrite
# of the upstream service's honest answer.
Script = bytes | Callable[[bytes], bytes]

MAX_REQUEST_BYTES = 16 * 1024 * 1024


def answer(status_line: str, headers: list[tuple[str, str]], body: bytes = b"") -> bytes:
    """Raw HTTP/1.1 answer bytes; headers as given (no Content-Length is added)."""
    head = status_line + "\r\n" + "".join(f"{name}: {value}\r\n" for name, value in headers)
    return head.encode("latin-1") + b"\r\n" + body


def sized(status: str, content_type: str | None, body: bytes) -> bytes:
    """A well-formed answer with this status, type and body."""
    headers = [("Content-Length", str(len(body))), ("Connection", "close")]
    if content_type is not None:
        headers.append(("Content-Type", content_type))
    return answer(f"HTTP/1.1 {status}", headers, body)


@dataclass(frozen=True)
class Hostile:
    name: str
    raw: Script
    #: What the terminal's client makes of it: a BadResponse's reason (``bad_response``,
    #: ``response_too_large``), or ``unreachable`` (ServiceUnreachable).
    expected: str = "bad_response"


def _problem(status: str, body: bytes, content_type: str = "application/problem+json") -> bytes:
    return sized(status, content_type, body)


def _etag_rewritten(honest: bytes) -> bytes:
    """The honest answer with its ETag replaced by one in Latin-1 (not ASCII)."""
    head, _, body = honest.partition(b"\r\n\r\n")
    lines = [line for line in head.split(b"\r\n") if not line.lower().startswith(b"etag:")]
    lines.append('ETag: "\u00e9t\u00e9"'.encode("latin-1"))
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


CHUNKED = [("Transfer-Encoding", "chunked"), ("Content-Type", "application/jwt")]

#: Every kind of hostile answer the terminal's client must survive, each for any request.
ANSWERS: list[Hostile] = [
    # 200 answers whose content is not what was asked for
    Hostile("non-ASCII bundle", sized("200 OK", "application/jwt", b"eyJ\xff\xfe.\x80.\x00")),
    Hostile("UTF-8 bundle", sized("200 OK", "application/jwt", "é.é.é".encode())),
    Hostile("captive portal page", sized("200 OK", "text/html", b"<html>Wi-Fi login</html>")),
    Hostile("empty 200", sized("200 OK", "application/jwt", b"")),
    Hostile("204 no content", answer("HTTP/1.1 204 No Content", [])),
    Hostile("gzip body", sized("200 OK", "application/jwt", b"\x1f\x8b\x08\x00garbage")),
    Hostile("JSON not UTF-8", sized("200 OK", "application/json", b'{"id": "\xff"}')),
    Hostile("JSON list", sized("200 OK", "application/json", b"[1, 2, 3]")),
    Hostile("JSON string", sized("200 OK", "application/json", b'"ok"')),
    Hostile("JSON number", sized("200 OK", "application/json", b"200")),
    Hostile("JSON deeply nested", sized("200 OK", "application/json", b"[" * 200_000)),
    Hostile(
        "JSON deeply nested in an object",
        sized("200 OK", "application/json", b'{"stored": ' + b'{"a": ' * 100_000),
    ),
    Hostile("JSON NaN", sized("200 OK", "application/json", b'{"received": NaN}')),
    Hostile("JSON huge number", sized("200 OK", "application/json", b"1" + b"0" * 10_000)),
    Hostile("JSON empty object", sized("200 OK", "application/json", b"{}")),
    Hostile(
        "counts as strings",
        sized("200 OK", "application/json", b'{"received": "1", "stored": "1", "duplicates": "0"}'),
    ),
    Hostile(
        "counts as booleans",
        sized(
            "200 OK", "application/json", b'{"received": true, "stored": true, "duplicates": false}'
        ),
    ),
    Hostile(
        "negative counts",
        sized("200 OK", "application/json", b'{"received": -1, "stored": -1, "duplicates": 0}'),
    ),
    Hostile(
        "counts of nothing",  # a plausible answer, but not to the events sent
        sized("200 OK", "application/json", b'{"received": 0, "stored": 0, "duplicates": 0}'),
    ),
    Hostile(
        "JSON under an HTML type",
        sized("200 OK", "text/html", b'{"received": 1, "stored": 1, "duplicates": 0}'),
    ),
    # error answers whose body is not a problem document
    Hostile("problem is a list", _problem("500 Internal Server Error", b'["reason"]')),
    Hostile("problem is a string", _problem("503 Service Unavailable", b'"down"')),
    Hostile("problem is a number", _problem("502 Bad Gateway", b"42")),
    Hostile("problem is null", _problem("500 Internal Server Error", b"null")),
    Hostile("problem reason not a string", _problem("500 Oops", b'{"reason": 7, "detail": []}')),
    Hostile(
        "problem reason forging a log line",
        _problem("500 Oops", b'{"reason": "x\\nINFO all is well"}'),
    ),
    Hostile("problem deeply nested", _problem("500 Oops", b"[" * 60_000)),
    Hostile(
        "problem too large",
        _problem("422 Unprocessable", b" " * 100_000 + b"{}"),
        expected="response_too_large",
    ),
    Hostile("problem not UTF-8", _problem("500 Oops", b'{"reason": "\xff\xfe"}')),
    Hostile("problem NaN", _problem("500 Oops", b'{"reason": NaN}')),
    Hostile("proxy's HTML 502", _problem("502 Bad Gateway", b"<html>502</html>", "text/html")),
    Hostile("garbled 409", _problem("409 Conflict", b"<html>conflict</html>", "text/html")),
    Hostile("garbled 413", _problem("413 Too Large", b"too large", "text/plain")),
    Hostile("garbled 422", _problem("422 Unprocessable", b"<html>no</html>", "text/html")),
    Hostile("status 101", answer("HTTP/1.1 101 Switching Protocols", [("Upgrade", "x")])),
    Hostile("status 999", sized("999 Whatever", None, b"")),
    # answers that are not well-formed HTTP
    Hostile("malformed status line", b"HTTP/1.1 two hundred OK\r\n\r\n"),
    Hostile("not HTTP at all", b"SSH-2.0-OpenSSH_9.6\r\n"),
    Hostile("a bare body", b"eyJhbGciOiJFZERTQSJ9.e30.sig"),
    Hostile("status line only", b"HTTP/1.1 200 OK\r\n"),
    Hostile("header line too long", answer("HTTP/1.1 200 OK", [("X-Pad", "a" * 70_000)])),
    Hostile(
        "too many headers",
        answer("HTTP/1.1 200 OK", [(f"X-{n}", "1") for n in range(150)], b""),
    ),
    Hostile(
        "cut short mid-body",
        answer("HTTP/1.1 200 OK", [("Content-Length", "1000")], b"eyJhbGciOi"),
    ),
    Hostile("bad chunk size", answer("HTTP/1.1 200 OK", CHUNKED, b"zz\r\nabc\r\n0\r\n\r\n")),
    Hostile("chunk cut short", answer("HTTP/1.1 200 OK", CHUNKED, b"100\r\neyJhbGci")),
    Hostile("chunk size line too long", answer("HTTP/1.1 200 OK", CHUNKED, b"1" * 70_000)),
    Hostile(
        "redirect to another host",
        answer("HTTP/1.1 302 Found", [("Location", "http://127.0.0.2:9/v1/events")]),
    ),
    Hostile(
        "redirect to a file",
        answer("HTTP/1.1 307 Temporary Redirect", [("Location", "file:///etc/passwd")]),
    ),
    Hostile(
        "redirect to the same path",
        answer("HTTP/1.1 303 See Other", [("Location", "/v1/trust-bundle")]),
    ),
    Hostile("closed at once", b"", expected="unreachable"),
]

#: An honest trust-bundle answer whose ETag cannot be stored or sent back.
HOSTILE_ETAG = Hostile("honest bundle, Latin-1 ETag", _etag_rewritten)


class HostileService:
    def __init__(self, upstream: tuple[str, int] | None = None) -> None:
        self.upstream = upstream
        self._scripts: dict[str, collections.deque[Script]] = collections.defaultdict(
            collections.deque
        )
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.1)  # so that the accept loop notices the end promptly
        self.port: int = self._listener.getsockname()[1]
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def script(self, method: str, answers: list[Script]) -> None:
        """Answer the next requests with ``method`` with ``answers``, in order."""
        with self._lock:
            self._scripts[method].extend(answers)

    def clear(self) -> None:
        """Forget the answers not yet given."""
        with self._lock:
            self._scripts.clear()

    def remaining(self, method: str) -> int:
        with self._lock:
            return len(self._scripts[method])

    def __enter__(self) -> HostileService:
        self._thread.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._closed.set()
        self._thread.join(timeout=5)
        self._listener.close()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                connection, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._serve, args=(connection,), daemon=True).start()

    def _serve(self, connection: socket.socket) -> None:
        with contextlib.closing(connection):
            connection.settimeout(10)
            try:
                request = _read_request(connection)
            except OSError:
                return
            method = request.split(b" ", 1)[0].decode("latin-1")
            with self._lock:
                scripted = self._scripts[method].popleft() if self._scripts[method] else None
            with contextlib.suppress(OSError):  # the client may hang up first: fine
                if isinstance(scripted, bytes):
                    connection.sendall(scripted)
                    return
                honest = self._relay(request)
                connection.sendall(honest if scripted is None else scripted(honest))

    def _relay(self, request: bytes) -> bytes:
        if self.upstream is None:
            return b""  # nothing behind: the client sees the connection closed
        with socket.create_connection(self.upstream, timeout=10) as upstream:
            upstream.sendall(request)
            chunks = []
            while chunk := upstream.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks)


def _read_request(connection: socket.socket) -> bytes:
    """One whole request (urllib sends Content-Length with a body, and Connection: close)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = connection.recv(65536)
        if not chunk or len(data) > MAX_REQUEST_BYTES:
            return data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    while len(body) < min(length, MAX_REQUEST_BYTES):
        chunk = connection.recv(65536)
        if not chunk:
            break
        body += chunk
    return head + b"\r\n\r\n" + body
