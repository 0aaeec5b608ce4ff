"""Bounds for the terminal's local HTTP endpoint (``--input http:HOST:PORT``, scanners.py):
what a client on the kiosk's network can make the terminal hold, and for how long.

``http.server`` alone holds up to 100 header lines of 64 KiB each per request, and a thread
for every connection, however slowly its request trickles in, for as long as it trickles
(a per-read socket timeout starts again with every byte). A kiosk screen sends small
requests, one at a time: here a request must arrive whole within ``request_seconds``, its
request line and headers within MAX_HEAD_BYTES (431, or 414 for the request line), and
connections beyond ``max_connections`` are answered 503 at once.
"""

from __future__ import annotations

import contextlib
import http.client
import socket
import socketserver
import threading
from functools import cache
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from io import BufferedIOBase
from typing import Any

MAX_HEAD_BYTES = 8 * 1024  # request line and headers together
REQUEST_SECONDS = 10.0  # for the whole request to arrive, head and body
MAX_CONNECTIONS = 16
_TOO_MANY = b'{"reason": "too_many_connections"}'


class BoundedRequests(socketserver.ThreadingMixIn):
    """Server mixin: a connection slot per request thread, and handlers with a bounded head
    and one deadline. Set ``request_seconds`` and ``max_connections`` before serving."""

    request_seconds: float = REQUEST_SECONDS
    max_connections: int = MAX_CONNECTIONS
    _slots: threading.BoundedSemaphore | None = None

    def process_request(self, request: Any, client_address: Any) -> None:
        if self._slots is None:
            self._slots = threading.BoundedSemaphore(self.max_connections)
        if not self._slots.acquire(blocking=False):
            with contextlib.suppress(OSError):
                request.sendall(
                    b"HTTP/1.0 503 Service Unavailable\r\nContent-Type: application/json\r\n"
                    b"Content-Length: %d\r\nConnection: close\r\n\r\n%s"
                    % (len(_TOO_MANY), _TOO_MANY)
                )
            self.shutdown_request(request)  # type: ignore[attr-defined]
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
            assert self._slots is not None
            self._slots.release()

    def finish_request(self, request: Any, client_address: Any) -> None:
        handler: Any = _bounded(self.RequestHandlerClass)  # type: ignore[attr-defined]
        handler(request, client_address, self)


@cache
def _bounded(handler: type[BaseHTTPRequestHandler]) -> type[BaseHTTPRequestHandler]:
    return type(handler.__name__, (_BoundedHandler, handler), {})


class _HeadBudget:
    """The request stream as http.server reads it: the request line and header lines draw on
    one budget; a body read that comes back short (cut off at the deadline) is an error, so
    that half a scan is never decided."""

    def __init__(self, stream: BufferedIOBase, read_done: Any) -> None:
        self._stream = stream
        self._left = MAX_HEAD_BYTES
        self._read_done = read_done

    def readline(self, size: int = -1) -> bytes:
        line = self._stream.readline(self._left + 1 if size < 0 else min(size, self._left + 1))
        self._left -= len(line)
        if self._left < 0:
            raise http.client.LineTooLong("request head")
        return line

    def read(self, size: int = -1) -> bytes:
        body = self._stream.read(size)
        self._read_done()
        if size > 0 and len(body) < size:
            raise ConnectionAbortedError("the request's body was cut off")
        return body

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


class _BoundedHandler(BaseHTTPRequestHandler):
    def setup(self) -> None:
        super().setup()
        self.rfile = _HeadBudget(self.rfile, self._request_read)  # type: ignore[assignment]
        seconds = getattr(self.server, "request_seconds", REQUEST_SECONDS)
        self._deadline = threading.Timer(seconds, self._cut_off)
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

    def parse_request(self) -> bool:
        parsed = super().parse_request()
        if parsed and "Content-Length" not in self.headers:
            self._request_read()  # no body to wait for
        return parsed

    def handle_one_request(self) -> None:
        try:
            super().handle_one_request()
        except http.client.LineTooLong:  # the request line: header lines are parse_request's
            self.requestline = self.request_version = self.command = ""
            self.close_connection = True
            self.send_error(HTTPStatus.REQUEST_URI_TOO_LONG)
