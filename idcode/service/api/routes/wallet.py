"""The web wallet (docs/wallet.md): its static files at ``/wallet/`` and ``GET
/wallet/config.json``, which tells it where citizens sign in.

The files ship inside the package (``idcode/service/web-wallet/``) and are read once when the
application is built: a closed set, served from memory with an ETag, nothing from a CDN and no
build step. The service worker's cache name carries a digest of every file, so a new release
replaces the cached shell by itself.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from importlib import resources
from typing import Any
from urllib.parse import urlsplit

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response

from idcode.service.api.deps import Services
from idcode.service.api.problems import Problem, problem_responses
from idcode.service.settings import DEV_IDP_ISSUER

router = APIRouter(tags=["wallet"])

MEDIA_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".webmanifest": "application/manifest+json",
    ".svg": "image/svg+xml",
    "LICENSE": "text/plain; charset=utf-8",
}
SHELL_VERSION = "__SHELL_VERSION__"  # replaced in sw.js by the digest of the files


@dataclass(frozen=True, slots=True)
class WalletFile:
    body: bytes
    media_type: str
    etag: str


def _media_type(name: str) -> str:
    for suffix, media_type in MEDIA_TYPES.items():
        if name.endswith(suffix):
            return media_type
    raise ValueError(f"the wallet file {name} has no known media type")


def load_wallet_files() -> dict[str, WalletFile]:
    """Every file of the wallet by its path under /wallet/ ("" is index.html)."""
    root = resources.files("idcode.service") / "web-wallet"
    raw: dict[str, bytes] = {}

    def walk(folder: Any, prefix: str) -> None:
        for entry in folder.iterdir():
            if entry.is_dir():
                walk(entry, f"{prefix}{entry.name}/")
            elif not entry.name.startswith("."):
                raw[prefix + entry.name] = entry.read_bytes()

    walk(root, "")
    digest = hashlib.sha256()
    for name in sorted(raw):
        digest.update(name.encode() + b"\0" + hashlib.sha256(raw[name]).digest())
    version = digest.hexdigest()[:16]
    raw["sw.js"] = raw["sw.js"].replace(SHELL_VERSION.encode(), version.encode())
    files = {
        name: WalletFile(body, _media_type(name), f'"{hashlib.sha256(body).hexdigest()[:32]}"')
        for name, body in raw.items()
    }
    files[""] = files["index.html"]
    return files


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def content_security_policy(services: Services) -> str:
    """Scripts and styles of the wallet only; requests to this service and to the identity
    provider's token endpoint; never framed."""
    settings = services.settings
    connect = "'self'"
    if settings.wallet_token_endpoint is not None:
        connect += " " + _origin(settings.wallet_token_endpoint)
    return (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        f"connect-src {connect}; manifest-src 'self'; worker-src 'self'; "
        "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )


@router.get("/wallet", include_in_schema=False)
async def wallet_root() -> Response:
    return RedirectResponse("/wallet/", 308)


@router.get(
    "/wallet/config.json",
    operation_id="read_wallet_config",
    summary="Where the web wallet signs citizens in (OIDC endpoints, client id)",
    responses=problem_responses(404),
)
async def wallet_config(request: Request) -> Response:
    """Where the web wallet signs citizens in: the identity provider's endpoints and the wallet's
    client id. 404 wallet_not_configured when this service names none."""
    services: Services = request.app.state.services
    settings = services.settings
    if settings.dev_idp_serves_wallet:
        base = str(request.base_url)
        issuer = DEV_IDP_ISSUER
        authorization = base + "dev-idp/authorize"
        token = base + "dev-idp/token"
    elif settings.wallet_authorization_endpoint and settings.wallet_token_endpoint:
        issuer = settings.oidc_issuer
        authorization = settings.wallet_authorization_endpoint
        token = settings.wallet_token_endpoint
    else:
        raise Problem(
            404,
            "wallet_not_configured",
            "This service names no identity provider for the web wallet.",
            "Set IDCODE_WALLET_AUTHORIZATION_ENDPOINT and IDCODE_WALLET_TOKEN_ENDPOINT.",
        )
    config = {
        "issuer": issuer,
        "authorization_endpoint": authorization,
        "token_endpoint": token,
        "client_id": settings.wallet_client,
        "scope": "openid",
        "development": settings.development,
        "server_time": int(time.time()),
    }
    return Response(
        json.dumps(config), media_type="application/json", headers={"Cache-Control": "no-store"}
    )


@router.get("/wallet/{name:path}", include_in_schema=False)
async def wallet_file(name: str, request: Request) -> Response:
    files: dict[str, WalletFile] = request.app.state.wallet_files
    found = files.get(name)
    if found is None:
        raise Problem(404, "not_found", "No such file of the wallet.")
    headers = {
        # Always revalidated (cheap, by ETag): the service worker keeps the offline copy.
        "Cache-Control": "no-cache",
        "ETag": found.etag,
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
    }
    if found.media_type.startswith("text/html"):
        headers["Content-Security-Policy"] = content_security_policy(request.app.state.services)
        headers["X-Frame-Options"] = "DENY"
    if request.headers.get("if-none-match") == found.etag:
        return Response(status_code=304, headers=headers)
    return Response(found.body, media_type=found.media_type, headers=headers)
