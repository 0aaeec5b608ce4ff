"""Where scans come from and where decisions go: a text stream (stdin, for keyboard-wedge
scanners), a serial port, or a local HTTP endpoint for kiosk screens.

Every decision is acted on by writing it out (one JSON line, or the HTTP answer) after the
runtime has journaled it. A gate controller reads the line and opens the barrier on
``"admitted": true``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Iterator
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TextIO

from idcode.codetext import MAX_CODE_LENGTH
from idcode.terminal.httpbounds import BoundedRequests
from idcode.terminal.journal import JournalEntry
from idcode.terminal.runtime import TerminalRuntime

log = logging.getLogger("idcode.terminal")

# A scan longer than this is cut off before it reaches the verifier (which refuses anything
# over MAX_CODE_LENGTH as malformed anyway): a jammed scanner cannot fill memory.
MAX_SCAN_BYTES = 4 * MAX_CODE_LENGTH


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


class ScanServer(BoundedRequests, ThreadingHTTPServer):  # bounded: see terminal.httpbounds
    """``POST /scan`` (the code as text/plain, or JSON ``{"code": ...}``) answers with the
    decision; ``GET /status`` with the terminal's state. Meant for a kiosk screen on the same
    device: bind it to localhost."""

    daemon_threads = True

    def __init__(self, runtime: TerminalRuntime, address: tuple[str, int]) -> None:
        super().__init__(address, _ScanHandler)
        self.runtime = runtime


class _ScanHandler(BaseHTTPRequestHandler):
    server: ScanServer

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
        raw = self.rfile.read(length).decode("utf-8", errors="replace")
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
