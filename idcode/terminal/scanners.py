"""Where scans come from and where decisions go: a text stream (stdin, for keyboard-wedge
scanners), a serial port, or a local HTTP endpoint for kiosk screens.

Every decision is acted on by writing it out (one JSON line, or the HTTP answer) after the
runtime has journaled it; only a relying party's terminal adds the scan's subject. A gate
controller reads the line and opens the barrier on ``"admitted": true``. No input loop ends on
an error: a scan that cannot be decided and journaled is denied (``terminal_error``, fail
closed) and logged, a serial port that goes away is opened again, and the scan endpoint
answers every request.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
import traceback
from collections.abc import Callable, Iterable, Iterator
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TextIO

from idcode.codetext import MAX_CODE_LENGTH
from idcode.reasons import DESCRIPTIONS, Reason
from idcode.terminal.httpbounds import BoundedRequests
from idcode.terminal.journal import JournalEntry
from idcode.terminal.runtime import TerminalRuntime, backoff

log = logging.getLogger("idcode.terminal")

# A scan longer than this is cut off before it reaches the verifier (which refuses anything
# over MAX_CODE_LENGTH as malformed anyway): a jammed scanner cannot fill memory.
MAX_SCAN_BYTES = 4 * MAX_CODE_LENGTH


#: The screen's words for the reasons that are not the verifier's (those have
#: idcode.reasons.DESCRIPTIONS); a scene's own reason is said as its words ("no_entry": "no
#: entry"), which the adapters choose to be readable.
_OTHER_DESCRIPTIONS = {
    "terminal_error": "the terminal could not decide (see its log)",
    "adapter_error": "the scene's rules failed on this code (see the terminal's log)",
    "undeclared_reason": "the scene's rules gave a reason they do not declare",
}
#: The detail of an empty scan line (a misread: a keyboard-wedge scanner's stray Enter).
NOTHING_READ = "Nothing read (an empty scan); scan again."


def decision_detail(admitted: bool, reason: str, action: str) -> str:
    """A short sentence for the lane's screen or log, from the machine fields only, so it can
    hold no personal data: "Admitted (resident)." or "Denied: the code has expired."."""
    if admitted:
        return f"Admitted ({action.replace('_', ' ')})." if action else "Admitted."
    if reason in Reason.__members__.values():
        said = DESCRIPTIONS[Reason(reason)].rstrip(".")
        said = said[:1].lower() + said[1:]
    else:
        said = _OTHER_DESCRIPTIONS.get(reason, reason.replace("_", " "))
    return f"Denied: {said}."


def decision_line(entry: JournalEntry, *, subject: bool = False) -> dict[str, Any]:
    """What the terminal acts on: no code and nothing about the person. ``subject``: add the
    scan's subject (null when the code did not verify), for the terminal of a relying party,
    whose own software maps its pairwise subject to its own record (a patient number), or of a
    site-scoped scene whose adapter says so (a library maps its own subject to a member)."""
    line: dict[str, Any] = {
        "event_id": entry.event_id,
        "at": entry.at,
        "admitted": entry.admitted,
        "reason": entry.reason,
        "action": entry.action,
        "result": dict(entry.result),
        "detail": decision_detail(entry.admitted, entry.reason, entry.action),
    }
    if subject:
        line["subject"] = entry.subject
    return line


def _line(runtime: TerminalRuntime, entry: JournalEntry) -> dict[str, Any]:
    """The decision line of ``runtime``'s scan: with the subject when its trust bundle names
    the relying party it belongs to, or its adapter gives the site's software the site's own
    subject (``SceneAdapter.subject_in_decision_line``: a library's loan desk). (A terminal's
    party is fixed when it is registered, so a bundle adopted between the scan and its line
    names the same party.)"""
    return decision_line(entry, subject=runtime.subject_in_lines)


#: The reason of a scan the terminal could not decide and journal (its journal's disk failing,
#: say): the gate stays shut and the input goes on.
TERMINAL_ERROR = "terminal_error"


def _where(exc: BaseException) -> str:
    """Where an unexpected error was raised (file:line), for a log line without its message:
    the message of an error nobody planned for may hold the scanned text."""
    frames = traceback.extract_tb(exc.__traceback__)
    return f"{frames[-1].filename.rsplit('/', 1)[-1]}:{frames[-1].lineno}" if frames else "?"


def undecided(
    at: int, *, subject: bool = False, reason: str = TERMINAL_ERROR, detail: str | None = None
) -> dict[str, Any]:
    """The decision line of a scan that could not be decided: denied, and not journaled.
    ``subject``: a relying party's terminal, whose lines all have a subject member (null)."""
    line: dict[str, Any] = {
        "event_id": None,
        "at": at,
        "admitted": False,
        "reason": reason,
        "action": "",
        "result": {},
        "detail": detail or decision_detail(False, reason, ""),
    }
    if subject:
        line["subject"] = None
    return line


def decide(runtime: TerminalRuntime, text: str) -> dict[str, Any]:
    """The decision line for one scan; a scan the runtime fails on is denied, never raised."""
    try:
        return _line(runtime, runtime.scan(text))
    except Exception as exc:  # the input loop's boundary: deny, log, go on with the next scan
        log.error(
            "a scan could not be decided: unexpected %s at %s; denied with %s",
            type(exc).__name__,
            _where(exc),
            TERMINAL_ERROR,
        )
        return undecided(int(time.time()), subject=runtime.subject_in_lines)


def scan_lines(runtime: TerminalRuntime, lines: Iterable[str], out: TextIO) -> int:
    """Decide on each line and write each decision as a JSON line; returns the number of
    scans. An empty (or blank) line is a misread: the controller gets a line saying so
    (denied ``malformed``, ``"event_id": null``), and nothing is journaled, since nothing was
    scanned. (A serial scanner's CR LF is one line end, not an empty line: serial_lines.)"""
    count = 0
    for line in lines:
        text = line.strip()[:MAX_SCAN_BYTES]
        if not text:
            misread = undecided(
                int(time.time()),
                subject=runtime.subject_in_lines,
                reason=Reason.MALFORMED.value,
                detail=NOTHING_READ,
            )
            out.write(json.dumps(misread) + "\n")
            out.flush()
            continue
        out.write(json.dumps(decide(runtime, text), ensure_ascii=False) + "\n")
        out.flush()
        count += 1
    return count


def serial_lines(
    port: str, baudrate: int = 9600, opened: Callable[[], None] | None = None
) -> Iterator[str]:
    """Lines from a serial scanner (CR, LF or CR LF terminated), as text. Runs until the port
    goes away; ``opened`` is called once the port is open. Uses pyserial, the standard serial
    library for Python."""
    import serial  # imported here: only serial terminals need it

    with serial.Serial(port, baudrate=baudrate, timeout=1) as device:
        if opened is not None:
            opened()
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


def reopening_serial_lines(
    port: str,
    baudrate: int = 9600,
    *,
    open_lines: Callable[..., Iterator[str]] = serial_lines,
    max_pause: float = 30.0,
) -> Iterator[str]:
    """``serial_lines``, opened again whenever the port goes away (a scanner unplugged, a USB
    reset), after a pause that grows to ``max_pause``: the gate reads again once its scanner is
    back. A port that cannot be opened at the start is an error (a wrong --input)."""
    ever_opened, failures = False, 0

    def opened() -> None:
        nonlocal ever_opened, failures
        ever_opened, failures = True, 0

    while True:
        try:
            yield from open_lines(port, baudrate, opened)
            return
        except OSError as exc:  # pyserial's SerialException is an OSError
            if not ever_opened:
                raise
            failures += 1
            log.warning(
                "the serial scanner on %s went away (%s); opening it again",
                port,
                type(exc).__name__,
            )
        time.sleep(backoff(failures, cap=max_pause))


class ScanServer(BoundedRequests, ThreadingHTTPServer):  # bounded: see terminal.httpbounds
    """``POST /scan`` (the code as text/plain, or JSON ``{"code": ...}``) answers with the
    decision; ``GET /status`` with the terminal's state. Meant for a kiosk screen on the same
    device: bind it to localhost."""

    daemon_threads = True

    def __init__(self, runtime: TerminalRuntime, address: tuple[str, int]) -> None:
        super().__init__(address, _ScanHandler)
        self.runtime = runtime

    def handle_error(self, request: Any, client_address: Any) -> None:
        # socketserver would print the traceback to stderr; the handler answers and logs its
        # own errors, so what reaches here is the kiosk hanging up or stalling: logged, no more.
        log.info("scan endpoint: a request ended early")


class _ScanHandler(BaseHTTPRequestHandler):
    server: ScanServer
    timeout = 30  # seconds a kiosk may take to send its request: a stalled one frees the thread

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("scan endpoint: " + format, *args)

    def _answer(self, status: int, document: Any) -> None:
        body = json.dumps(document, ensure_ascii=False).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _guarded(self, handle: Callable[[], None]) -> None:
        """Run a request's handler; an error in it is logged and answered (500, denied)."""
        try:
            handle()
        except OSError:
            raise  # the kiosk went away mid-request: nothing to answer (handle_error logs it)
        except Exception as exc:  # the request's boundary: the endpoint serves the next one
            log.error(
                "scan endpoint: unexpected %s at %s; answered %s",
                type(exc).__name__,
                _where(exc),
                TERMINAL_ERROR,
            )
            with contextlib.suppress(OSError):
                line = undecided(int(time.time()), subject=self.server.runtime.subject_in_lines)
                self._answer(HTTPStatus.INTERNAL_SERVER_ERROR, line)

    def do_GET(self) -> None:
        self._guarded(self._get)

    def do_POST(self) -> None:
        self._guarded(self._post)

    def _get(self) -> None:
        if self.path != "/status":
            self._answer(HTTPStatus.NOT_FOUND, {"reason": "not_found"})
            return
        self._answer(HTTPStatus.OK, self.server.runtime.status())

    def _post(self) -> None:
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
        entry = self.server.runtime.scan(code)  # an error here is answered by _guarded
        self._answer(HTTPStatus.OK, _line(self.server.runtime, entry))
