"""The terminal's side of the service API: signed requests for trust and event uploads.

Each request carries a fresh single-use token signed with the terminal's key
(``idcode.terminaltoken``). Plain ``urllib``: a terminal makes a few small
requests a minute, and the standard library keeps its footprint small.

Every answer is checked before it is used: whatever comes back (a captive portal's page, a
broken proxy, someone on the network path, bytes that are not HTTP at all) ends as one of
two errors, ServiceUnreachable (no answer) or ServiceError (an answer; BadResponse when it is
not one the service gives), never as a ValueError, a UnicodeDecodeError or an
``http.client`` exception that would stop the terminal's sync or upload loop.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import logging
import re
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NoReturn
from urllib.parse import urlsplit

from idcode.bundle import MAX_BUNDLE_BYTES
from idcode.errors import BadResponse as BadResponse
from idcode.errors import IdcodeError
from idcode.errors import ServiceError as ServiceError
from idcode.errors import ServiceUnreachable as ServiceUnreachable
from idcode.terminal.identity import TerminalIdentity
from idcode.terminaltoken import terminal_token

# The largest answer a terminal reads: a trust bundle is at most 8 MiB (bundle.MAX_BUNDLE_BYTES).
MAX_RESPONSE_BYTES = MAX_BUNDLE_BYTES + 64 * 1024
# The largest error body read: a problem document is a few hundred bytes.
MAX_PROBLEM_BYTES = 64 * 1024
log = logging.getLogger("idcode.terminal")

# A reason as the service writes them (docs/api.md): lower-case words joined by "_".
_REASON = re.compile(r"[a-z][a-z0-9_]{0,63}")
# An entity tag (RFC 9110, 8.8.3) of a sane length, in visible ASCII: it is stored and sent
# back in If-None-Match, where anything else would break every later bundle request.
_ETAG = re.compile(r'(W/)?"[\x21\x23-\x7e]{0,200}"')
_TERMINAL_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def _printable(text: str, limit: int) -> str:
    """``text`` for a log line: visible ASCII only, cut to ``limit`` characters, so that an
    answer cannot forge log lines or fill the log."""
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
    return f"{_printable(_media_type(headers) or 'no content type', 60)}, {len(body)} bytes"


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
    return ServiceError(status, reason, _printable(detail if isinstance(detail, str) else "", 200))


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """A terminal follows no redirect. The service never sends one, urllib would forward the
    terminal's token to wherever it points, and it turns an upload (POST) into a GET whose
    answer could pass for the upload's: the events would be marked sent and never arrive.
    The 3xx answer then surfaces as an HTTPError, handled as a BadResponse."""

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
) -> Response:
    """One HTTP exchange; 2xx and 304 are answers. Anything else raises ServiceError (its
    subclass BadResponse for an answer the service does not give), or ServiceUnreachable."""
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
        return _exchange(prepared, timeout, status)
    except urllib.error.URLError as exc:
        reason = _printable(str(exc.reason), 200)
        raise ServiceUnreachable(f"cannot reach {url}: {reason}") from None
    except http.client.IncompleteRead:
        raise BadResponse(status[0], "the answer was cut short") from None
    except OSError as exc:  # refused, reset, timed out, closed before any answer
        raise ServiceUnreachable(
            f"cannot reach {url}: {type(exc).__name__} {_printable(str(exc), 200)}".rstrip()
        ) from None
    except (http.client.HTTPException, ValueError) as exc:
        # Not HTTP: a garbled status line, header lines too long or too many, a chunk size
        # that is not a number (http.client raises a bare ValueError for that).
        raise BadResponse(
            status[0], f"not a well-formed HTTP answer ({type(exc).__name__})"
        ) from None


def _exchange(prepared: urllib.request.Request, timeout: float, status: list[int]) -> Response:
    """Send ``prepared`` and read the answer; transport errors are left to ``request``."""
    try:
        with _OPENER.open(prepared, timeout=timeout) as answer:
            status[0] = answer.status
            content = _read(answer, answer.status, MAX_RESPONSE_BYTES)
            return Response(answer.status, dict(answer.headers.items()), content)
    except urllib.error.HTTPError as exc:
        error = exc  # an HTTPError is also the answer: its status, headers and body
    status[0] = error.code
    with contextlib.closing(error):  # it holds the connection
        headers = dict(error.headers.items()) if error.headers is not None else {}
        if error.code == 304:
            return Response(304, headers, b"")
        if 300 <= error.code < 400:
            where = _printable(header(headers, "Location") or "nowhere", 80)
            raise BadResponse(error.code, f"redirected to {where}; a terminal follows no redirect")
        raise _problem(error.code, headers, _read(error, error.code, MAX_PROBLEM_BYTES))


class TerminalClient:
    """What a provisioned terminal asks of the service."""

    def __init__(self, identity: TerminalIdentity, timeout: float = 10.0) -> None:
        self.identity = identity
        self.timeout = timeout
        address = urlsplit(identity.server)
        if address.scheme == "http" and address.hostname not in ("127.0.0.1", "localhost", "::1"):
            # Bundles and deltas are signed, but request tokens and uploads are not encrypted.
            log.warning(
                "the service URL %s is plain HTTP: use https beyond this machine", identity.server
            )

    def _call(
        self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
    ) -> Response:
        token = terminal_token(self.identity.id, self.identity.private_key, self.identity.alg)
        return request(
            self.identity.server + path,
            method=method,
            body=body,
            headers={"Authorization": f"Bearer {token}", **(headers or {})},
            timeout=self.timeout,
        )

    def trust_bundle(self, etag: str | None) -> tuple[str | None, str | None]:
        """(the bundle JWS, its ETag), or (None, etag) when it has not changed."""
        answer = self._call(
            "GET", "/v1/trust-bundle", headers={"If-None-Match": etag} if etag else None
        )
        tag = _etag(answer.headers)
        if answer.status == 304:
            return None, tag or etag
        return answer.expect(200).jws(), tag

    def status_delta(self, since: int) -> str:
        return self._call("GET", f"/v1/trust-bundle/status-delta?since={since}").expect(200).jws()

    def upload(self, events: list[dict[str, Any]]) -> dict[str, int]:
        """Send a batch; the service's counts. Checked against the batch: an answer that does
        not count these events is not the service's answer to them, and marks nothing sent."""
        answer = self._call("POST", "/v1/events", {"events": events}).expect(200)
        result = answer.json_object()
        counts: dict[str, int] = {}
        for name in ("received", "stored", "duplicates"):
            value = result.get(name)
            if type(value) is not int or value < 0:  # bool is an int: refused too
                raise BadResponse(answer.status, f"the upload result's {name!r} is not a count")
            counts[name] = value
        unique = len({event.get("event_id") for event in events})
        if counts["received"] != len(events) or counts["stored"] + counts["duplicates"] != unique:
            raise BadResponse(answer.status, "the upload result does not count the events sent")
        return counts


def _etag(headers: Mapping[str, str]) -> str | None:
    """The answer's entity tag, or None when it has none the terminal could send back."""
    tag = header(headers, "ETag")
    return tag if tag is not None and _ETAG.fullmatch(tag) else None


def register(
    server: str,
    operator_token: str,
    *,
    scene: str,
    site: str,
    public_jwk: dict[str, Any],
    relying_party: str | None = None,
) -> str:
    """Register a terminal's public key with the service; returns its id (a UUID).
    ``relying_party``: the id of the relying party the terminal belongs to (a hospital's
    kiosk)."""
    body: dict[str, Any] = {"scene": scene, "site": site, "public_jwk": public_jwk}
    if relying_party is not None:
        body["relying_party"] = relying_party
    answer = request(
        server.rstrip("/") + "/v1/terminals",
        method="POST",
        body=body,
        headers={"Authorization": f"Bearer {operator_token}"},
    ).expect(201)
    terminal_id = answer.json_object().get("id")
    # The id names the terminal in every request token and journal line: only the service's
    # own form (a UUID) is taken.
    if not isinstance(terminal_id, str) or not _TERMINAL_ID.fullmatch(terminal_id):
        raise BadResponse(answer.status, "the registration answer has no terminal id")
    return terminal_id
