"""The HTTP/1.1 protocol ``idcode serve`` runs: uvicorn's httptools protocol with bounds on
what a client can make the server hold before the application sees a request.

Neither uvicorn nor httptools (llhttp) bounds the request head: one 64 MiB header was held
in memory and answered, and a connection that never finished its head was held for ever.
Here the head is fed to the parser in pieces no larger than what is left of its byte
budget, so the parser never holds more than about twice ``max_head_bytes`` of one head
(a pipelined head that starts inside the previous body piece is counted from the next
piece); the number of header fields and the URL length are counted in the parser's
callbacks; and a deadline runs from the first byte of a head (from the connection for the
first one) to its end. After an early answer (a 401 or 413 before the body was read) the
unread body is drained and discarded for at most the same time, then the connection is
closed. A refused request is answered, the sending side shut, and what the client still
sends discarded for a moment before the close (a "lingering close", as nginx does: closing
with unread bytes would reset the connection and could destroy the answer before the
client reads it). Connections beyond ``max_connections`` are answered 503 and closed.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from functools import partial
from http import HTTPStatus
from typing import TYPE_CHECKING, Any, cast

import httptools
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from idcode.service.api import requestlog

if TYPE_CHECKING:
    from idcode.service.settings import Settings

PROBLEM_JSON = b"application/problem+json"
LINGER_SECONDS = 2.0  # at most, after a refusal, before the connection is closed


@dataclass(frozen=True)
class HeadLimits:
    """What one connection may make the server hold, and for how long."""

    max_head_bytes: int = 16 * 1024
    max_headers: int = 100
    max_url_bytes: int = 8 * 1024
    head_timeout: float = 10.0
    max_connections: int = 1000

    @classmethod
    def from_settings(cls, settings: Settings) -> HeadLimits:
        return cls(
            max_head_bytes=settings.http_max_head_bytes,
            max_headers=settings.http_max_headers,
            max_url_bytes=settings.http_max_url_bytes,
            head_timeout=settings.http_head_timeout_seconds,
            max_connections=settings.http_max_connections,
        )


def protocol_for(limits: HeadLimits) -> type[asyncio.Protocol]:
    """The ``http=`` argument of ``uvicorn.run``: a partial rather than a subclass made on the
    fly, so that it pickles by reference into ``--workers`` processes."""
    return cast("type[asyncio.Protocol]", partial(BoundedHttpToolsProtocol, limits=limits))


class _Refused(Exception):
    """Raised in a parser callback to stop parsing; the refusal is in ``_refusal``."""


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
        *,
        limits: HeadLimits,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.limits = limits
        # Bytes of the head being received; None from its end until the message is complete
        # (the body belongs to the application, bounded by problems.BodyLimit).
        self._head_bytes: int | None = 0
        self._header_count = 0
        self._refusal: tuple[HTTPStatus, str, str] | None = None
        self._deadline: asyncio.TimerHandle | None = None
        self._lingering = False  # refused: what still comes is discarded until the close

    # -- connection ---------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.limits.max_connections:
            self._refuse(
                HTTPStatus.SERVICE_UNAVAILABLE,
                "too_many_connections",
                "The service holds as many connections as it may; try again shortly.",
            )
            return
        self._arm_deadline()  # the first head, which may never come

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_deadline()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._lingering:
            return
        self._unset_keepalive_if_required()
        limit = self.limits.max_head_bytes
        if len(data) <= limit - (self._head_bytes or 0):  # the usual case: one piece
            if self._head_bytes is not None:
                self._head_bytes += len(data)
            self._feed(data)
        else:
            view = memoryview(data)
            while view and not (self._lingering or self.transport.is_closing()):
                if self._head_bytes is None:  # body bytes, in pieces so a pipelined head
                    piece, view = view[:limit], view[limit:]  # that starts in one is bounded
                else:
                    room = limit - self._head_bytes
                    if room <= 0:
                        self._refuse_large_head()
                        return
                    piece, view = view[:room], view[room:]
                    self._head_bytes += len(piece)
                self._feed(piece)
        if self._lingering or self.transport.is_closing() or self._head_bytes is None:
            return
        if self._head_bytes >= limit:
            self._refuse_large_head()  # the head is still not complete at its limit
        elif self._head_bytes and self._deadline is None:
            self._arm_deadline()  # a head that did not come in one piece

    def _feed(self, data: bytes | memoryview) -> None:
        """uvicorn's data_received without its error mapping: a refusal from a callback keeps
        its own status instead of becoming 400."""
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserCallbackError:
            if self._refusal is not None:
                self._refuse(*self._refusal)
            else:
                self._refuse(HTTPStatus.BAD_REQUEST, "bad_request", "Invalid HTTP request.")
        except httptools.HttpParserError:
            self.logger.warning("Invalid HTTP request received.")
            self._refuse(HTTPStatus.BAD_REQUEST, "bad_request", "Invalid HTTP request.")
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()

    # -- parser callbacks ---------------------------------------------------------------------

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._header_count = 0

    def on_url(self, url: bytes) -> None:
        if len(self.url) + len(url) > self.limits.max_url_bytes:
            self._refusal = (
                HTTPStatus.REQUEST_URI_TOO_LONG,
                "uri_too_long",
                f"The request target is limited to {self.limits.max_url_bytes} bytes.",
            )
            raise _Refused
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_count += 1
        if self._header_count > self.limits.max_headers:
            self._refusal = (
                HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE,
                "request_headers_too_large",
                f"A request may have at most {self.limits.max_headers} header fields.",
            )
            raise _Refused
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._head_bytes = None
        self._disarm_deadline()
        super().on_headers_complete()
        if self.cycle is not None and not self.cycle.keep_alive:
            # uvicorn closes after this answer; if it comes before the body was read, a
            # plain close would reset the connection under the client's feet.
            self.cycle.transport = cast("asyncio.Transport", _CloseAfterAnswer(self))

    def on_message_complete(self) -> None:
        self._head_bytes = 0  # whatever comes next begins a new head
        draining = self.cycle is not None and self.cycle.response_complete
        super().on_message_complete()
        if draining:
            # The answer went out before the body was read; the body is now drained. uvicorn
            # armed its keep-alive timer when the answer went out, and the body's bytes
            # cancelled it: idle from here, so arm it again.
            self._disarm_deadline()
            self._unset_keepalive_if_required()
            self.timeout_keep_alive_task = self.loop.call_later(
                self.timeout_keep_alive, self.timeout_keep_alive_handler
            )

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self._head_bytes is None and not (self._lingering or self.transport.is_closing()):
            # Answered before the request's body was all read (a 401 or 413 does not read
            # it): uvicorn discards the rest as it comes, for at most the head timeout.
            self._arm_deadline()

    # -- refusals and deadlines ---------------------------------------------------------------

    def _refuse_large_head(self) -> None:
        self._refuse(
            HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE,
            "request_headers_too_large",
            f"The request line and headers are limited to {self.limits.max_head_bytes} bytes.",
        )

    def _arm_deadline(self) -> None:
        self._disarm_deadline()
        self._deadline = self.loop.call_later(self.limits.head_timeout, self._deadline_passed)

    def _disarm_deadline(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _deadline_passed(self) -> None:
        self._deadline = None
        if self._lingering or self.transport.is_closing():
            return
        if self._head_bytes:  # part of a head came: say why the connection ends
            self._refuse(
                HTTPStatus.REQUEST_TIMEOUT,
                "request_timeout",
                f"The request head must arrive within {self.limits.head_timeout:g} s.",
            )
        else:  # nothing came, or an unread body kept coming after the answer
            self.transport.close()

    def _refuse(self, status: HTTPStatus, reason: str, title: str) -> None:
        """Answer with a problem, shut the sending side and close after a moment; only close
        while an answer is being written (a refusal of a pipelined request must not cut
        into it) or when the connection was over the limit (nothing to wait for)."""
        self._disarm_deadline()
        self._lingering = True
        if self.cycle is not None and not self.cycle.response_complete:
            self.transport.close()
            return
        body = json.dumps(
            {
                "type": f"urn:idcode:problem:{reason}",
                "title": title,
                "status": int(status),
                "reason": reason,
            }
        ).encode()
        head = [f"HTTP/1.1 {status.value} {status.phrase}".encode()]
        head += [name + b": " + value for name, value in self.server_state.default_headers]
        request_id = requestlog.log_refused_connection(int(status), reason, title)
        head += [
            b"x-request-id: " + request_id.encode("ascii"),
            b"content-type: " + PROBLEM_JSON,
            b"content-length: " + str(len(body)).encode(),
            b"connection: close",
        ]
        if status == HTTPStatus.SERVICE_UNAVAILABLE:
            head.append(b"retry-after: 5")
        self.transport.write(b"\r\n".join(head) + b"\r\n\r\n" + body)
        if status == HTTPStatus.SERVICE_UNAVAILABLE:
            self.transport.close()  # a connection over the limit is not kept a moment longer
        else:
            self._linger()

    def _close_after_answer(self) -> None:
        if self._head_bytes is None and not self.transport.is_closing():
            self._disarm_deadline()
            self._lingering = True
            self._linger()  # the body is still coming
        else:
            self.transport.close()

    def _linger(self) -> None:
        """Shut the sending side, discard what still comes (data_received), close soon."""
        if not self.transport.can_write_eof():
            self.transport.close()
            return
        self.transport.write_eof()
        self._deadline = self.loop.call_later(
            min(LINGER_SECONDS, self.limits.head_timeout), self.transport.close
        )


class _CloseAfterAnswer:
    """The transport as a request's cycle sees it, for a request after which the connection
    closes: its close() lingers while the request's body is still coming."""

    def __init__(self, protocol: BoundedHttpToolsProtocol) -> None:
        self._protocol = protocol
        self._transport = protocol.transport

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)

    def close(self) -> None:
        self._protocol._close_after_answer()
