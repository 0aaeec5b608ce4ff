"""The terminal's side of the service API: signed requests for trust and event uploads.

Each request carries a fresh single-use token signed with the terminal's key
(``idcode.terminaltoken``). Plain ``urllib`` through the core's bounded client
(``idcode.httpclient``): a terminal makes a few small requests a minute, and the standard
library keeps its footprint small.

Every answer is checked before it is used: whatever comes back ends as one of two errors,
ServiceUnreachable (no answer) or ServiceError (an answer; BadResponse when it is not one
the service gives), never as an exception that would stop the terminal's sync or upload loop.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

from idcode import httpclient
from idcode.bundle import MAX_BUNDLE_BYTES
from idcode.errors import BadResponse as BadResponse
from idcode.errors import ServiceError as ServiceError
from idcode.errors import ServiceUnreachable as ServiceUnreachable
from idcode.httpclient import MAX_PROBLEM_BYTES as MAX_PROBLEM_BYTES
from idcode.httpclient import Response as Response
from idcode.httpclient import header as header
from idcode.httpclient import json_value as json_value
from idcode.protocol import JOURNAL_BACKLOG_HEADER, MAX_JOURNAL_BACKLOG
from idcode.terminal.identity import TerminalIdentity
from idcode.terminaltoken import terminal_token

# The largest answer a terminal reads: a trust bundle is at most 8 MiB (bundle.MAX_BUNDLE_BYTES).
MAX_RESPONSE_BYTES = MAX_BUNDLE_BYTES + 64 * 1024
# An entity tag (RFC 9110, 8.8.3) of a sane length, in visible ASCII: it is stored and sent
# back in If-None-Match, where anything else would break every later bundle request.
_ETAG = re.compile(r'(W/)?"[\x21\x23-\x7e]{0,200}"')
_TERMINAL_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
log = logging.getLogger("idcode.terminal")


def request(
    url: str,
    *,
    method: str = "GET",
    body: Any = None,
    headers: dict[str, str] | None = None,
    timeout: float = 10.0,
) -> Response:
    """One exchange with the service (``idcode.httpclient.request``), reading answers up to
    the size of the largest trust bundle."""
    return httpclient.request(
        url,
        method=method,
        body=body,
        headers=headers,
        timeout=timeout,
        max_bytes=MAX_RESPONSE_BYTES,
    )


class TerminalClient:
    """What a provisioned terminal asks of the service."""

    def __init__(
        self,
        identity: TerminalIdentity,
        timeout: float = 10.0,
        backlog: Callable[[], int] | None = None,
    ) -> None:
        """``backlog``: the journal's events not yet uploaded, reported with every request
        (idcode.protocol.JOURNAL_BACKLOG_HEADER) for the service's fleet metrics."""
        self.identity = identity
        self.timeout = timeout
        self.backlog = backlog
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
        sent = {"Authorization": f"Bearer {token}", **(headers or {})}
        if self.backlog is not None:
            sent[JOURNAL_BACKLOG_HEADER] = str(min(max(0, self.backlog()), MAX_JOURNAL_BACKLOG))
        return request(
            self.identity.server + path,
            method=method,
            body=body,
            headers=sent,
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
