"""The terminal's side of the service API: signed requests for trust and event uploads.

Each request carries a fresh single-use token signed with the terminal's key
(``idcode.terminal.token``). Plain ``urllib``: a terminal makes a few small
requests a minute, and the standard library keeps its footprint small.
"""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from idcode.bundle import MAX_BUNDLE_BYTES
from idcode.errors import IdcodeError
from idcode.terminal.identity import TerminalIdentity
from idcode.terminal.token import terminal_token

# The largest answer a terminal reads: a trust bundle is at most 8 MiB (bundle.MAX_BUNDLE_BYTES).
MAX_RESPONSE_BYTES = MAX_BUNDLE_BYTES + 64 * 1024
log = logging.getLogger("idcode.terminal")


class ServiceError(IdcodeError):
    """The service answered with an error (``status`` and the problem's ``reason``)."""

    def __init__(self, status: int, reason: str, detail: str = "") -> None:
        super().__init__(f"the service answered {status} {reason}: {detail}".rstrip(": "))
        self.status = status
        self.reason = reason


class ServiceUnreachable(IdcodeError):
    """No answer: the network or the service is down. The terminal carries on offline."""


@dataclass(frozen=True)
class Response:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def request(
    url: str,
    *,
    method: str = "GET",
    body: Any = None,
    headers: dict[str, str] | None = None,
    timeout: float = 10.0,
) -> Response:
    """One HTTP exchange; 2xx and 304 are answers, other statuses raise ServiceError."""
    if not url.startswith(("http://", "https://")):
        raise IdcodeError(f"the service URL must be http(s), got {url[:40]!r}")
    data = json.dumps(body).encode() if body is not None else None
    all_headers = {"Accept": "application/json, application/jwt", **(headers or {})}
    if data is not None:
        all_headers["Content-Type"] = "application/json"
    # The scheme is checked above: no file:// or other opener is reachable.
    prepared = urllib.request.Request(url, data=data, headers=all_headers, method=method)  # noqa: S310
    try:
        with urllib.request.urlopen(prepared, timeout=timeout) as answer:  # noqa: S310
            body = answer.read(MAX_RESPONSE_BYTES + 1)
            if len(body) > MAX_RESPONSE_BYTES:
                raise ServiceError(
                    answer.status, "response_too_large", f"over {MAX_RESPONSE_BYTES} bytes"
                )
            return Response(answer.status, dict(answer.headers.items()), body)
    except urllib.error.HTTPError as exc:
        if exc.code == 304:
            return Response(304, dict(exc.headers.items()), b"")
        raw = exc.read()
        try:
            problem = json.loads(raw)
            reason, detail = str(problem.get("reason", "")), str(problem.get("detail", ""))
        except ValueError:
            reason, detail = "", raw[:200].decode("utf-8", "replace")
        raise ServiceError(exc.code, reason or "error", detail) from None
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        raise ServiceUnreachable(f"cannot reach {url}: {exc}") from None


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
        tag = answer.headers.get("ETag") or answer.headers.get("etag")
        if answer.status == 304:
            return None, tag or etag
        return answer.body.decode("ascii"), tag

    def status_delta(self, since: int) -> str:
        return self._call("GET", f"/v1/trust-bundle/status-delta?since={since}").body.decode(
            "ascii"
        )

    def upload(self, events: list[dict[str, Any]]) -> dict[str, int]:
        result: dict[str, int] = self._call("POST", "/v1/events", {"events": events}).json()
        return result


def register(
    server: str, operator_token: str, *, scene: str, site: str, public_jwk: dict[str, Any]
) -> str:
    """Register a terminal's public key with the service; returns its id."""
    answer = request(
        server.rstrip("/") + "/v1/terminals",
        method="POST",
        body={"scene": scene, "site": site, "public_jwk": public_jwk},
        headers={"Authorization": f"Bearer {operator_token}"},
    )
    return str(answer.json()["id"])
