"""The bounded HTTP client of idcode's own clients (the terminal runtime, the device wallet):
one exchange with the service over plain ``urllib``, whose every answer is checked before
it is used.

Whatever comes back (a captive portal's page, a broken proxy, someone on the network path,
bytes that are not HTTP at all) ends as one of two errors, ServiceUnreachable (no answer)
or ServiceError (an answer; BadResponse when it is not one the service gives), never as a
ValueError, a UnicodeDecodeError or an ``http.client`` exception that would stop a caller's
loop or print a traceback. An answer is read up to a size the caller gives, no further; no
redirect is followed.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import re
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NoReturn

from idcode.errors import BadResponse, IdcodeError, ServiceError, ServiceUnreachable

__all__ = [
    "MAX_PROBLEM_BYTES",
    "BadResponse",
    "Response",
    "ServiceError",
    "ServiceUnreachable",
    "header",
    "json_value",
    "printable",
    "request",
]

#: The largest answer read unless the caller says otherwise: JSON answers are a few KiB.
DEFAULT_MAX_BYTES = 1024 * 1024
#: The largest error body read: a problem document is a few hundred bytes.
MAX_PROBLEM_BYTES = 64 * 1024
#: What of a problem's detail and validation errors a command says: enough for a list of scenes.
MAX_PROBLEM_DETAIL = 600
MAX_VALIDATION_ERRORS = 5

# A reason as the service writes them (docs/api.md): lower-case words joined by "_".
_REASON = re.compile(r"[a-z][a-z0-9_]{0,63}")


def printable(text: str, limit: int) -> str:
    """``text`` for a log line or a message: visible ASCII only, cut to ``limit`` characters,
    so that an answer cannot forge log lines, move a terminal's cursor or fill the log."""
    return "".join(c if " " <= c <= "~" else "?" for c in text[:limit])


def header(headers: Mapping[str, str], name: str) -> str | None:
    """A header's value, whatever the case of its name."""
    name = name.lower()
    return next((value for key, value in headers.items() if key.lower() == name), None)


def _media_type(headers: Mapping[str, str]) -> str | None:
    value = header(headers, "Content-Type")
    return None if value is None else value.partition(";")[0].strip().lower()


def _described(headers: Mapping[str, str], body: bytes) -> str:
    """What an unexpected answer was, without repeating it: its type and size."""
    return f"{printable(_media_type(headers) or 'no content type', 60)}, {len(body)} bytes"


@dataclass(frozen=True)
class Response:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        """The body as JSON; BadResponse when it is not (not UTF-8, not JSON, too deep)."""
        return json_value(self.status, self.body)

    def json_object(self) -> dict[str, Any]:
        """The body as a JSON object, of a JSON media type; BadResponse otherwise."""
        media_type = _media_type(self.headers)
        if media_type is not None and not (
            media_type == "application/json" or media_type.endswith("+json")
        ):
            raise BadResponse(
                self.status, f"expected JSON, got {_described(self.headers, self.body)}"
            )
        document = self.json()
        if not isinstance(document, dict):
            raise BadResponse(self.status, f"expected a JSON object, got a {_kind(document)}")
        return document

    def jws(self) -> str:
        """The body as a compact JWS (a bundle or a delta): ASCII of ``application/jwt``."""
        media_type = _media_type(self.headers)
        if media_type not in (None, "application/jwt"):
            raise BadResponse(
                self.status, f"expected application/jwt, got {_described(self.headers, self.body)}"
            )
        try:
            token = self.body.decode("ascii").strip()
        except UnicodeDecodeError:
            raise BadResponse(self.status, "the signed answer is not ASCII") from None
        if not token:
            raise BadResponse(self.status, "the answer is empty")
        return token

    def expect(self, *statuses: int) -> Response:
        """This answer, if its status is one of ``statuses`` (the service's success codes)."""
        if self.status not in statuses:
            raise BadResponse(
                self.status, f"expected HTTP {' or '.join(map(str, statuses))} for this request"
            )
        return self


def _kind(document: Any) -> str:
    return {list: "list", str: "string", bool: "boolean", type(None): "null"}.get(
        type(document), "number"
    )


def _no_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not JSON")


def json_value(status: int, body: bytes) -> Any:
    """``body`` parsed as JSON (RFC 8259: UTF-8, no NaN or Infinity); BadResponse otherwise."""
    try:
        return json.loads(body.decode("utf-8"), parse_constant=_no_constant)
    except UnicodeDecodeError:
        raise BadResponse(status, "the answer is not UTF-8") from None
    except RecursionError:
        raise BadResponse(status, "the answer's JSON is nested too deeply") from None
    except ValueError:  # not JSON, or a number too long to convert
        raise BadResponse(status, "the answer is not JSON") from None


def _problem(status: int, headers: Mapping[str, str], body: bytes) -> ServiceError:
    """The error an error answer stands for: the service's problem (RFC 9457) with its reason,
    or BadResponse when the body is not a problem document the service would write."""
    try:
        problem = json_value(status, body)
    except BadResponse:
        problem = None
    reason = problem.get("reason") if isinstance(problem, dict) else None
    if not isinstance(reason, str) or not _REASON.fullmatch(reason):
        return BadResponse(
            status, f"an error answer that is not a problem document ({_described(headers, body)})"
        )
    assert isinstance(problem, dict)
    detail = problem.get("detail")
    said = [detail] if isinstance(detail, str) else []
    # A 422's detail is only "The request is not valid."; what is wrong is in its errors (the
    # field and why, e.g. "scene must be one of community, parking, ..."), so they are said
    # too: a person at the command line then knows what to change.
    said += _validation_errors(problem.get("errors"))
    return ServiceError(status, reason, printable(" ".join(said), MAX_PROBLEM_DETAIL))


def _validation_errors(errors: object) -> list[str]:
    """The ``errors`` member of an ``invalid_request`` problem, as ``field: why`` phrases; any
    other shape is left out (it is the service's answer, not to be trusted to be well formed)."""
    if not isinstance(errors, list):
        return []
    phrases = []
    for error in errors[:MAX_VALIDATION_ERRORS]:
        if not isinstance(error, dict) or not isinstance(error.get("msg"), str):
            continue
        location = error.get("loc")
        parts = (
            [str(part) for part in location if isinstance(part, str | int)]
            if isinstance(location, list)
            else []
        )
        # "body" and "query" say where in the request, which a command's user did not write.
        field = ".".join(parts[1:] if parts[:1] in (["body"], ["query"]) else parts)
        phrases.append(f"{field}: {error['msg']}." if field else f"{error['msg']}.")
    return phrases


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """No redirect is followed. The service never sends one, urllib would forward the
    caller's token to wherever it points, and it turns a POST (a terminal's upload) into a
    GET whose answer could pass for the POST's: the events would be marked sent and never
    arrive. The 3xx answer then surfaces as an HTTPError, handled as a BadResponse."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_OPENER = urllib.request.build_opener(_NoRedirects)


def _read(answer: Any, status: int, limit: int) -> bytes:
    """The body, at most ``limit`` bytes, and all of it: http.client returns a body cut short
    of its Content-Length without complaint."""
    body: bytes = answer.read(limit + 1)
    if len(body) > limit:
        raise BadResponse(status, f"over {limit} bytes", reason="response_too_large")
    headers = answer.headers
    declared = headers.get("Content-Length", "") if headers is not None else ""
    chunked = headers is not None and "chunked" in headers.get("Transfer-Encoding", "").lower()
    if not chunked and declared.strip().isdigit() and len(body) < int(declared):
        raise BadResponse(status, "the answer was cut short")
    return body


def request(
    url: str,
    *,
    method: str = "GET",
    body: Any = None,
    headers: dict[str, str] | None = None,
    timeout: float = 10.0,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> Response:
    """One HTTP exchange; 2xx and 304 are answers. Anything else raises ServiceError (its
    subclass BadResponse for an answer the service does not give), or ServiceUnreachable.
    ``max_bytes``: the largest body read (BadResponse ``response_too_large`` beyond)."""
    if not url.startswith(("http://", "https://")):
        raise IdcodeError(f"the service URL must be http(s), got {url[:40]!r}")
    data = json.dumps(body).encode() if body is not None else None
    all_headers = {"Accept": "application/json, application/jwt", **(headers or {})}
    if data is not None:
        all_headers["Content-Type"] = "application/json"
    # The scheme is checked above, and redirects are not followed: no file:// or other
    # opener is reachable.
    prepared = urllib.request.Request(url, data=data, headers=all_headers, method=method)  # noqa: S310
    status = [0]  # the status read so far, for the error of an answer cut short
    try:
        return _exchange(prepared, timeout, status, max_bytes)
    except urllib.error.URLError as exc:
        reason = printable(str(exc.reason), 200)
        raise ServiceUnreachable(f"cannot reach {url}: {reason}") from None
    except http.client.IncompleteRead:
        raise BadResponse(status[0], "the answer was cut short") from None
    except OSError as exc:  # refused, reset, timed out, closed before any answer
        raise ServiceUnreachable(
            f"cannot reach {url}: {type(exc).__name__} {printable(str(exc), 200)}".rstrip()
        ) from None
    except (http.client.HTTPException, ValueError) as exc:
        # Not HTTP: a garbled status line, header lines too long or too many, a chunk size
        # that is not a number (http.client raises a bare ValueError for that).
        raise BadResponse(
            status[0], f"not a well-formed HTTP answer ({type(exc).__name__})"
        ) from None


def _exchange(
    prepared: urllib.request.Request, timeout: float, status: list[int], max_bytes: int
) -> Response:
    """Send ``prepared`` and read the answer; transport errors are left to ``request``."""
    try:
        with _OPENER.open(prepared, timeout=timeout) as answer:
            status[0] = answer.status
            content = _read(answer, answer.status, max_bytes)
            return Response(answer.status, dict(answer.headers.items()), content)
    except urllib.error.HTTPError as exc:
        error = exc  # an HTTPError is also the answer: its status, headers and body
    status[0] = error.code
    with contextlib.closing(error):  # it holds the connection
        headers = dict(error.headers.items()) if error.headers is not None else {}
        if error.code == 304:
            return Response(304, headers, b"")
        if 300 <= error.code < 400:
            where = printable(header(headers, "Location") or "nowhere", 80)
            raise BadResponse(error.code, f"redirected to {where}; idcode follows no redirect")
        raise _problem(error.code, headers, _read(error, error.code, MAX_PROBLEM_BYTES))
