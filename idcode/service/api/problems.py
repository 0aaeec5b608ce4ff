"""Errors as ``application/problem+json`` (RFC 9457), each with one machine-readable reason.

The reason is in the ``reason`` member and at the end of ``type``
(``urn:idcode:problem:<reason>``); docs/api.md lists them. Verification reasons are the
verifier's own (``expired``, ``bad_signature``, ...), so the API, the CLI and the terminals
speak one vocabulary. No problem ever repeats the request's personal data.
"""

from __future__ import annotations

import logging
import traceback
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from redis.exceptions import RedisClusterException, RedisError
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as SQLAlchemyTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from idcode.errors import KeyStoreError
from idcode.service import metrics
from idcode.service.api import requestlog
from idcode.text import printable

log = logging.getLogger("idcode.service.api")
PROBLEM_JSON = "application/problem+json"


class ProblemBody(BaseModel):
    """The RFC 9457 members idcode uses, plus ``reason``."""

    type: str
    title: str
    status: int
    reason: str
    detail: str | None = None
    errors: list[dict[str, Any]] | None = None


class Problem(Exception):
    def __init__(
        self,
        status: int,
        reason: str,
        title: str,
        detail: str | None = None,
        *,
        headers: dict[str, str] | None = None,
        errors: list[dict[str, Any]] | None = None,
    ) -> None:
        # Titles start with a capital letter, those made from an error's message too
        # ("the ID token ..." from an AuthError), so that clients can show them as they are.
        title = title[:1].upper() + title[1:]
        super().__init__(title)
        self.status, self.reason, self.title, self.detail = status, reason, title, detail
        self.headers, self.errors = headers or {}, errors

    def response(self) -> JSONResponse:
        requestlog.note_problem(self.reason, self.detail)
        body: dict[str, Any] = {
            "type": f"urn:idcode:problem:{self.reason}",
            "title": self.title,
            "status": self.status,
            "reason": self.reason,
        }
        if self.detail:
            body["detail"] = self.detail
        if self.errors is not None:
            body["errors"] = self.errors
        return JSONResponse(body, self.status, headers=self.headers, media_type=PROBLEM_JSON)


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for the problems a route can answer with."""
    return {status: {"model": ProblemBody, "content": {PROBLEM_JSON: {}}} for status in statuses}


_HTTP_REASONS = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    413: "payload_too_large",
    415: "unsupported_media_type",
}


def install(app: FastAPI) -> None:
    @app.exception_handler(Problem)
    async def _problem(_: Request, exc: Problem) -> JSONResponse:
        return exc.response()

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            # No "input": the rejected value may be an ID number or a name.
            {
                # A member name the client sent may hold an unpaired surrogate, which would
                # fail the response's UTF-8 encoding (a 500): escaped.
                "loc": [printable(p) if isinstance(p, str) else p for p in error["loc"]],
                "msg": str(error["msg"]).removeprefix("Value error, "),
            }
            for error in exc.errors()
        ]
        return Problem(
            422, "invalid_request", "The request is not valid.", errors=errors
        ).response()

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        reason = _HTTP_REASONS.get(exc.status_code, "http_error")
        return Problem(
            exc.status_code, reason, str(exc.detail), headers=dict(exc.headers or {})
        ).response()

    @app.exception_handler(DBAPIError)
    async def _database_down(_: Request, exc: DBAPIError) -> JSONResponse:
        if not database_unreachable(exc):
            metrics.count_database_error("other")
            raise exc  # a defect (an integrity error, say): UnexpectedErrors answers 500
        metrics.count_database_error("unreachable")
        log.error("database unavailable: %s", type(exc.orig).__name__)
        return _database_unavailable()

    @app.exception_handler(SQLAlchemyTimeoutError)
    async def _pool_exhausted(_: Request, exc: SQLAlchemyTimeoutError) -> JSONResponse:
        metrics.count_database_error("pool_exhausted")
        log.error("database unavailable: no connection free in the pool")
        return _database_unavailable()

    # The cluster client's own errors (a slot no node serves, no node reachable) are not
    # RedisError (idcode.service.redistopology.STATE_ERRORS).
    @app.exception_handler(RedisClusterException)
    @app.exception_handler(RedisError)
    async def _state_down(_: Request, exc: Exception) -> JSONResponse:
        log.error("shared state (Redis) unavailable: %s", type(exc).__name__)
        return Problem(
            503,
            "state_unavailable",
            "The shared state cannot be reached; try again shortly.",
            headers={"Retry-After": "5"},
        ).response()

    @app.exception_handler(KeyStoreError)
    async def _cannot_sign(_: Request, exc: KeyStoreError) -> JSONResponse:
        log.error("issuer keys unavailable: %s", exc)
        return Problem(
            503,
            "no_signing_key",
            "The service has no issuer key that may sign now.",
            headers={"Retry-After": "60"},
        ).response()

    app.add_middleware(UnexpectedErrors)
    # Outermost: a body over its limit is refused before any route (or token check) reads it.
    app.add_middleware(BodyLimit)


def database_unreachable(exc: DBAPIError) -> bool:
    """Whether a database error means "cannot reach it now" (503) rather than a defect."""
    return isinstance(exc, OperationalError | InterfaceError) or exc.connection_invalidated


def _database_unavailable() -> JSONResponse:
    return Problem(
        503,
        "database_unavailable",
        "The database cannot be reached; try again shortly.",
        headers={"Retry-After": "5"},
    ).response()


DEFAULT_BODY_LIMIT = 64 * 1024
BODY_LIMITS = {"/v1/cards/import": 64 * 1024 * 1024, "/v1/events": 1024 * 1024}
# Scene data lists residents and permits: a large community's list is well over 64 KiB.
SCENE_DATA_LIMIT = 2 * 1024 * 1024  # idcode.service.fleet.MAX_SCENE_DATA_BYTES


class BodyLimit:
    """Refuse request bodies over their route's limit with 413, by Content-Length or while
    they stream in, so nobody (authenticated or not) can make the service buffer them."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        limit = BODY_LIMITS.get(path) or (
            SCENE_DATA_LIMIT if path.startswith("/v1/scenes/") else DEFAULT_BODY_LIMIT
        )
        too_large = Problem(
            413, "payload_too_large", f"The request body is limited to {limit} bytes here."
        )
        for name, value in scope["headers"]:
            if name == b"content-length" and value.isdigit() and int(value) > limit:
                await too_large.response()(scope, receive, send)
                return
        received = 0
        answered = started = False

        async def counting_receive() -> Message:
            # Past the limit: answer 413 at once and tell the app the client has gone, so it
            # stops reading; whatever it tries to send afterwards is dropped.
            nonlocal received, answered
            if answered:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    answered = True
                    if not started:
                        await too_large.response()(scope, receive, send)
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if not answered:
                started = started or message["type"] == "http.response.start"
                await send(message)

        await self.app(scope, counting_receive, guarded_send)


class UnexpectedErrors:
    """Answer any unexpected exception with a 500 problem and log only its type and stack.

    A plain ASGI middleware rather than an ``Exception`` handler: Starlette re-raises after
    such a handler, and the server would then log the exception's message, which could
    quote a request's personal data.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception as exc:
            # The type and where it was raised, never the message.
            where = "".join(traceback.format_tb(exc.__traceback__))
            log.error("unexpected %s\n%s", type(exc).__name__, where)
            if not started:
                response = Problem(500, "internal_error", "Something went wrong on our side.")
                await response.response()(scope, receive, send)
