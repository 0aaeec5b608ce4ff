"""Where scans come from and where decisions go: a text stream (stdin, for keyboard-wedge
scanners), a serial port, or a local HTTP endpoint for kiosk screens.

Every decision is acted on by writing it out (one JSON line, or the HTTP answer) after the
runtime has journaled it. A gate controller reads the line and opens the barrier on
``"admitted": true``.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import logging
import socket
import threading
from collections.abc import Iterable, Iterator
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from io import BufferedIOBase
from typing import Any, TextIO

from idcode.codetext import MAX_CODE_LENGTH
from idcode.terminal.journal import JournalEntry
from idcode.terminal.runtime import TerminalRuntime

log = logging.getLogger("idcode.terminal")

# A scan longer than this is cut off before it reaches the verifier (which refuses anything
# over MAX_CODE_LENGTH as malformed anyway): a jammed scanner cannot fill memory.
MAX_SCAN_BYTES = 4 * MAX_CODE_LENGTH
# The scan endpoint's bounds: a kiosk screen sends small requests, one at a time. Without
# them http.server holds up to 100 header lines of 64 KiB each per request, and a thread for
# every connection, however slow, for ever.
MAX_SCAN_HEAD_BYTES = 8 * 1024  # request line and headers together
SCAN_REQUEST_SECONDS = 10.0  # for the whole request to arrive, head and body
MAX_SCAN_CONNECTIONS = 16


def decision_line(entry: JournalEntry) -> dict[str, Any]:
    """What the terminal acts on: no subject, no code, nothing about the person."""
    return {
        "event_id": entry.event_id,
        "at": entry.at,
        "admitted": entry.admitted,
        "reason": entry.reason,
        "action": entry.action,
        "result": dict(entry.result),
    }


def scan_lines(runtime: TerminalRuntime, lines: Iterable[str], out: TextIO) -> int:
    """Decide on each non-empty line and write each decision as a JSON line; returns the
    number of scans."""
    count = 0
    for line in lines:
        text = line.strip()[:MAX_SCAN_BYTES]
        if not text:
            continue
        entry = runtime.scan(text)
        out.write(json.dumps(decision_line(entry), ensure_ascii=False) + "\n")
        out.flush()
        count += 1
    return count


def serial_lines(port: str, baudrate: int = 9600) -> Iterator[str]:
    """Lines from a serial scanner (CR, LF or CR LF terminated), as text. Runs until the port
    goes away. Uses pyserial, the standard serial library for Python."""
    import serial  # imported here: only serial terminals need it

    with serial.Serial(port, baudrate=baudrate, timeout=1) as device:
        pending = bytearray()
        while True:
            chunk = device.read(device.in_waiting or 1)
            if not chunk:
                continue
            pending += chunk
            while True:
                ends = [i for i in (pending.find(b"\r"), pending.find(b"\n")) if i >= 0]
                if not ends:
                    if len(pending) > MAX_SCAN_BYTES:
                        del pending[:]  # garbage without an end: drop it
                    break
                end = min(ends)
                line, pending[:] = bytes(pending[:end]), pending[end + 1 :]
                if line:
                    yield line.decode("ascii", errors="replace")


class ScanServer(ThreadingHTTPServer):
    """``POST /scan`` (the code as text/plain, or JSON ``{"code": ...}``) answers with the
    decision; ``GET /status`` with the terminal's state. Meant for a kiosk screen on the same
    device: bind it to localhost. A request must arrive within ``request_seconds`` with a
    head of at most MAX_SCAN_HEAD_BYTES; connections beyond ``max_connections`` get 503."""

    daemon_threads = True

    def __init__(
        self,
        runtime: TerminalRuntime,
        address: tuple[str, int],
        *,
        request_seconds: float = SCAN_REQUEST_SECONDS,
        max_connections: int = MAX_SCAN_CONNECTIONS,
    ) -> None:
        super().__init__(address, _ScanHandler)
        self.runtime = runtime
        self.request_seconds = request_seconds
        self._slots = threading.BoundedSemaphore(max_connections)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            body = b'{"reason": "too_many_connections"}'
            with contextlib.suppress(OSError):
                request.sendall(
                    b"HTTP/1.0 503 Service Unavailable\r\nContent-Type: application/json\r\n"
                    b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body)
                )
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()  # no thread was started to release it
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()


class _HeadBudget:
    """The request stream as http.server reads it: the request line and header lines draw on
    one budget of MAX_SCAN_HEAD_BYTES (http.server's own limits are 64 KiB a line and 100
    lines); the body is read as asked (do_POST bounds it by MAX_SCAN_BYTES)."""

    def __init__(self, stream: BufferedIOBase) -> None:
        self._stream = stream
        self._left = MAX_SCAN_HEAD_BYTES

    def readline(self, size: int = -1) -> bytes:
        line = self._stream.readline(self._left + 1 if size < 0 else min(size, self._left + 1))
        self._left -= len(line)
        if self._left < 0:
            raise http.client.LineTooLong("request head")
        return line

    def read(self, size: int = -1) -> bytes:
        return self._stream.read(size)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


class _ScanHandler(BaseHTTPRequestHandler):
    server: ScanServer

    def setup(self) -> None:
        super().setup()
        self.rfile = _HeadBudget(self.rfile)  # type: ignore[assignment]
        # One deadline for the whole request, however slowly it trickles in: a per-read
        # socket timeout would start again with every byte.
        self._deadline = threading.Timer(self.server.request_seconds, self._cut_off)
        self._deadline.daemon = True
        self._deadline.start()

    def _cut_off(self) -> None:
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)  # a blocked read returns at once

    def _request_read(self) -> None:
        self._deadline.cancel()

    def finish(self) -> None:
        self._deadline.cancel()
        super().finish()

    def handle_one_request(self) -> None:
        try:
            super().handle_one_request()
        except http.client.LineTooLong:  # the request line: header lines are parse_request's
            self.requestline = self.request_version = self.command = ""
            self.close_connection = True
            self.send_error(HTTPStatus.REQUEST_URI_TOO_LONG)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("scan endpoint: " + format, *args)

    def _answer(self, status: int, document: Any) -> None:
        body = json.dumps(document, ensure_ascii=False).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        self._request_read()
        if self.path != "/status":
            self._answer(HTTPStatus.NOT_FOUND, {"reason": "not_found"})
            return
        self._answer(HTTPStatus.OK, self.server.runtime.status())

    def do_POST(self) -> None:
        if self.path != "/scan":
            self._answer(HTTPStatus.NOT_FOUND, {"reason": "not_found"})
            return
        try:
            length = int(self.headers.get("Content-Length", "0"))
        except ValueError:
            length = -1
        if not 0 < length <= MAX_SCAN_BYTES:
            self._answer(HTTPStatus.BAD_REQUEST, {"reason": "bad_request", "detail": "size"})
            return
        received = self.rfile.read(length)
        self._request_read()
        if len(received) < length:  # cut off at the deadline, or the client went away
            self.close_connection = True
            return
        raw = received.decode("utf-8", errors="replace")
        text: object = raw
        if self.headers.get("Content-Type", "").startswith("application/json"):
            try:
                document = json.loads(raw)
                text = document.get("code") if isinstance(document, dict) else None
            except ValueError:
                text = None
            if not isinstance(text, str):
                self._answer(
                    HTTPStatus.BAD_REQUEST,
                    {"reason": "bad_request", "detail": 'send {"code": "..."}'},
                )
                return
        code = str(text).strip()
        if not code:
            # As on the other inputs, a blank scan is no scan: nothing to decide or journal.
            self._answer(HTTPStatus.BAD_REQUEST, {"reason": "bad_request", "detail": "empty"})
            return
        entry = self.server.runtime.scan(code)
        self._answer(HTTPStatus.OK, decision_line(entry))
