"""The request id and the access log: one line per request, with its route, status, time and,
for a problem, its reason.

Every request gets an id: the caller's ``X-Request-Id`` when it is well-formed (a proxy or a
client that tracks its requests), else a new one. It is returned as ``X-Request-Id`` and set
in ``idcode.logs.request_id`` while the request is handled, so every line logged for it
carries it. The access line names the route's template (``/v1/links/{subject}``), never the
path or the query the caller sent, and no client address: a path can hold a pairwise
subject, a query an authorization code, and a citizen's address is personal data (the
proxy in front, which needs it, logs it under its own rules). Problems (``problems.Problem``)
tell this module their reason and detail (``note_problem``): a 401 says why it was refused
(``missing_token``, ``token_expired``, ``invalid_token: ... Signature verification failed``).

Levels follow the status, as Django's request log does: 2xx and 3xx ``info``, 4xx
``warning``, 5xx ``error``; ``idcode serve --no-access-log`` keeps the warnings and errors.
"""

from __future__ import annotations

import logging
import os
import random
import re
import time
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from idcode.logs import fields, request_id
from idcode.text import printable

ACCESS_LOGGER = "idcode.service.access"
REQUEST_ID_HEADER = "X-Request-Id"
#: A caller's request id is taken when it is 8-64 of these characters (UUIDs, W3C trace ids,
#: nginx's $request_id) and cannot be personal data: see accepted_request_id.
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{8,64}")
#: The ids machines make: a UUID, or 16-64 hex digits (a W3C trace id, nginx's $request_id).
_MACHINE_ID = re.compile(
    r"[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}|[0-9A-Fa-f]{16,64}"
)
#: Six digits in a row: every ID number (17 digits and a digit or X), phone number (11),
#: bank card number and written-out birth date (19581123) has such a run.
_DIGIT_RUN = re.compile(r"[0-9]{6}")
#: What even a machine-made id must not hold: a mobile number, or 15 digits in a row (an ID
#: number, a card number). Random hex holds one by chance about once in a hundred ids; that
#: id is replaced, and the answer's X-Request-Id tells the caller the one used.
_PERSONAL_RUN = re.compile(r"1[3-9][0-9]{9}|[0-9]{15}")

log = logging.getLogger(ACCESS_LOGGER)


@dataclass
class _Outcome:
    """What a request's handling tells its access line (mutable: set deep inside the app,
    read by the middleware, whatever contexts the handling ran in)."""

    reason: str | None = None
    detail: str | None = None


_outcome: ContextVar[_Outcome | None] = ContextVar("idcode_request_outcome", default=None)


def note_problem(reason: str, detail: str | None) -> None:
    """Record the problem a request is answered with, for its access line."""
    outcome = _outcome.get()
    if outcome is not None:
        outcome.reason, outcome.detail = reason, detail


def accepted_request_id(header: bytes | None) -> str | None:
    """The caller's request id if it is well-formed, bounded and cannot be personal data,
    else None (the request gets a new id).

    Taken: a machine-made id (a UUID, or 16-64 hex digits) that is not only digits and holds
    no mobile number and no 15 digits in a row, and any other id of the allowed characters
    with no run of six digits. Not taken: anything an ID number, a phone number, a card
    number or a birth date could be written as, such as ``11010519491231002X`` (an ID number
    whose check character is X), ``tel-13912345678``, ``13912345678abcde`` or
    ``born19581123``: an app that named its requests after its citizen would otherwise put
    them in every log line."""
    if header is None:
        return None
    try:
        text = header.decode("ascii")
    except UnicodeDecodeError:
        return None
    if _REQUEST_ID.fullmatch(text) is None or text.isdigit():
        return None
    if _PERSONAL_RUN.search(text) is not None:
        return None
    if _MACHINE_ID.fullmatch(text) is None and _DIGIT_RUN.search(text) is not None:
        return None
    return text


class _RequestIds:
    """New request ids: 128 random bits, 32 hex digits, from a generator seeded once per
    process from the system's randomness (and again in a forked child, so two workers never
    share a sequence). An id has to be unique, not secret: it authorises nothing. The
    generator needs no system call per request, which ``uuid.uuid4()`` (``os.urandom``) does
    (docs/logging.md#request-ids)."""

    def __init__(self) -> None:
        self._random = random.Random(os.urandom(32))

    def reseed(self) -> None:
        self._random.seed(os.urandom(32))

    def new(self) -> str:
        # An id a caller sends back (a retry) must be taken again: about one in ninety random
        # ids holds a run accepted_request_id refuses, and is drawn again.
        while True:
            text = f"{self._random.getrandbits(128):032x}"
            if _PERSONAL_RUN.search(text) is None:
                return text


_ids = _RequestIds()
os.register_at_fork(after_in_child=_ids.reseed)
new_request_id = _ids.new


#: Told each answer's scope, status and seconds as its access line is (metrics.RequestMetrics).
Observer = Callable[[Scope, int, float], None]


class RequestLog:
    """ASGI middleware, outermost: the request id, then one access line per request, and the
    answer's status and time to ``observe`` (the metrics: one layer times a request for both,
    which costs issuance less than a layer each did)."""

    def __init__(self, app: ASGIApp, observe: Observer | None = None) -> None:
        self.app = app
        self.observe = observe

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        header = None
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                header = value
                break
        current = accepted_request_id(header) or new_request_id()
        tag = (b"x-request-id", current.encode("ascii"))
        outcome = _Outcome()
        id_token = request_id.set(current)
        outcome_token = _outcome.set(outcome)
        status = 500  # if the app answers nothing at all

        async def tagging_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = [(k, v) for k, v in message.get("headers", ()) if k != b"x-request-id"]
                headers.append(tag)
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, tagging_send)
        finally:
            _outcome.reset(outcome_token)
            seconds = time.perf_counter() - started
            if self.observe is not None:
                self.observe(scope, status, seconds)
            _log_request(scope, status, outcome, seconds)
            request_id.reset(id_token)


def log_refused_connection(status: int, reason: str, title: str) -> str:
    """The access line of a request the HTTP protocol refused before the application saw it
    (headlimits.py: 408, 414, 431, 503); returns the request id its answer carries."""
    current = new_request_id()
    token = request_id.set(current)
    try:
        _log_line(None, None, status, _Outcome(reason, title), None)
    finally:
        request_id.reset(token)
    return current


def _log_request(scope: Scope, status: int, outcome: _Outcome, seconds: float) -> None:
    if status < 400 and not log.isEnabledFor(logging.INFO):  # idcode serve --no-access-log
        return
    route = getattr(scope.get("route"), "path", None)
    _log_line(scope["method"], route, status, outcome, seconds)


def _log_line(
    method: str | None, route: str | None, status: int, outcome: _Outcome, seconds: float | None
) -> None:
    level = logging.INFO if status < 400 else logging.WARNING if status < 500 else logging.ERROR
    if not log.isEnabledFor(level):
        return
    duration_ms = None if seconds is None else round(seconds * 1000, 1)
    detail = printable(outcome.detail) if outcome.detail else None
    problem = ""
    if outcome.reason:
        problem = f" {outcome.reason}" + (f": {detail}" if detail else "")
    if method is None:  # refused by the HTTP protocol: no method, route or time to tell
        message = f"{status}{problem} (refused before the request was read)"
    else:
        message = f"{method} {route or '(no route)'} {status}{problem} {duration_ms:.1f} ms"
    log.log(
        level,
        "%s",
        message,
        extra=fields(
            method=method,
            route=route,
            status=status,
            duration_ms=duration_ms,
            reason=outcome.reason,
            detail=detail,
        ),
    )
