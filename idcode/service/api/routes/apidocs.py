"""The API's documentation pages (``/docs``, Swagger UI; ``/redoc``, ReDoc) and the service's
home page (``/``), all served from the package: city systems run on closed networks, where a
page that loads its scripts from a public CDN stays blank.

Swagger UI's and ReDoc's files are vendored unchanged in ``idcode/service/api-docs/``
(versions, origin and how to update them: docs/dependencies.md) and read once when the
application is built, like the web wallet's. The pages' Content-Security-Policy allows only the
service's own origin, so a page that tried to reach elsewhere would be stopped by the browser,
not only by the absence of a link.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from html import escape
from importlib import resources

from fastapi import APIRouter, FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse, Response

from idcode import __version__
from idcode.service.api.problems import Problem

router = APIRouter(include_in_schema=False)

#: Where the vendored files are served, by their folder in ``api-docs/``.
ASSETS_PATH = "/api-docs"
#: The vendored files the pages use; nothing else of the folder is served.
ASSET_FILES = (
    "swagger-ui/swagger-ui-bundle.js",
    "swagger-ui/swagger-ui.css",
    "swagger-ui/favicon-32x32.png",
    "swagger-ui/LICENSE",
    "swagger-ui/NOTICE",
    "redoc/redoc.standalone.js",
    "redoc/LICENSE",
)
MEDIA_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".png": "image/png",
    "LICENSE": "text/plain; charset=utf-8",
    "NOTICE": "text/plain; charset=utf-8",
}
#: Changes made in memory as the files are read, so the vendored files stay byte for byte
#: what npm ships (docs/dependencies.md gives their hashes). ReDoc 2 draws Redocly's logo from
#: cdn.redoc.ly in its sidebar, unconditionally, with no option to turn it off: an empty data:
#: URL makes no request, and ReDoc drops an image that fails to load. A new version that no
#: longer holds the URL stops the service from starting (and the tests), not silently.
SUBSTITUTIONS = {
    "redoc/redoc.standalone.js": (
        (b'src:"https://cdn.redoc.ly/redoc/logo-mini.svg"', b'src:"data:,"'),
    ),
}
#: Only the service itself. Swagger UI's page starts it with an inline script and ReDoc styles
#: itself inline and runs its search in a worker made from a blob; neither needs another origin.
PAGE_POLICY = (
    "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; font-src 'self' data:; worker-src 'self' blob:; connect-src 'self'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
PAGE_HEADERS = {
    "Content-Security-Policy": PAGE_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}
#: Swagger UI's settings: no call to the public validator (validator.swagger.io) to draw its
#: badge; the operation ids shown, as clients name operations by them (docs/api.md).
SWAGGER_UI_PARAMETERS = {"validatorUrl": None, "displayOperationId": True}


@dataclass(frozen=True, slots=True)
class AssetFile:
    body: bytes
    media_type: str
    etag: str


def load_asset_files() -> dict[str, AssetFile]:
    """The vendored files by their path under ASSETS_PATH."""
    root = resources.files("idcode.service") / "api-docs"
    files = {}
    for name in ASSET_FILES:
        body = (root / name).read_bytes()
        for old, new in SUBSTITUTIONS.get(name, ()):
            if body.count(old) != 1:
                raise RuntimeError(f"api-docs/{name} does not hold {old!r} once: see SUBSTITUTIONS")
            body = body.replace(old, new)
        media_type = next(m for suffix, m in MEDIA_TYPES.items() if name.endswith(suffix))
        etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
        files[name] = AssetFile(body, media_type, etag)
    return files


def install(app: FastAPI) -> None:
    """Serve the docs pages from the package; the app must be built with ``docs_url=None`` and
    ``redoc_url=None`` (FastAPI's own pages load from a CDN)."""
    app.state.api_doc_files = load_asset_files()
    app.include_router(router)


def _page(response: HTMLResponse) -> HTMLResponse:
    response.headers.update(PAGE_HEADERS)
    return response


@router.get("/docs")
async def swagger_ui(request: Request) -> HTMLResponse:
    app: FastAPI = request.app
    return _page(
        get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json",
            title=f"{app.title} API",
            swagger_js_url=f"{ASSETS_PATH}/swagger-ui/swagger-ui-bundle.js",
            swagger_css_url=f"{ASSETS_PATH}/swagger-ui/swagger-ui.css",
            swagger_favicon_url=f"{ASSETS_PATH}/swagger-ui/favicon-32x32.png",
            oauth2_redirect_url=None,
            swagger_ui_parameters=SWAGGER_UI_PARAMETERS,
        )
    )


@router.get("/redoc")
async def redoc(request: Request) -> HTMLResponse:
    app: FastAPI = request.app
    return _page(
        get_redoc_html(
            openapi_url=app.openapi_url or "/openapi.json",
            title=f"{app.title} API",
            redoc_js_url=f"{ASSETS_PATH}/redoc/redoc.standalone.js",
            redoc_favicon_url=f"{ASSETS_PATH}/swagger-ui/favicon-32x32.png",
            # FastAPI would link Montserrat and Roboto from fonts.googleapis.com; ReDoc falls
            # back to the system's sans-serif.
            with_google_fonts=False,
        )
    )


@router.get(ASSETS_PATH + "/{name:path}")
async def asset_file(name: str, request: Request) -> Response:
    files: dict[str, AssetFile] = request.app.state.api_doc_files
    found = files.get(name)
    if found is None:
        raise Problem(404, "not_found", "No such file of the API documentation.")
    headers = {"Cache-Control": "no-cache", "ETag": found.etag, "X-Content-Type-Options": "nosniff"}
    if request.headers.get("if-none-match") == found.etag:
        return Response(status_code=304, headers=headers)
    return Response(found.body, media_type=found.media_type, headers=headers)


HOME_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>idcode {version}</title>
<link rel="icon" href="{assets}/swagger-ui/favicon-32x32.png">
<style>
body {{ font: 16px/1.5 system-ui, sans-serif; max-width: 40rem; margin: 2rem auto;
  padding: 0 1rem; color: #1b1b1b; }}
h1 {{ font-size: 1.5rem; margin-bottom: 0.25rem; }}
li {{ margin: 0.4rem 0; }}
code {{ font-size: 0.9em; }}
</style>
</head>
<body>
<h1>idcode</h1>
<p>The city's citizen e-code service, version {version}.</p>
<ul>
{links}
</ul>
</body>
</html>
"""


def _home_links(request: Request) -> list[tuple[str, str, str]]:
    """(href, label, what it is) for each page this service serves. The console is part of
    every service (app.py); the wallet only where an identity provider signs its citizens in
    (as GET /wallet/config.json decides), so the page never links to a dead end."""
    app: FastAPI = request.app
    links = [
        ("/docs", "API reference", "Swagger UI: every operation, with a form to try it"),
        ("/redoc", "API reference (ReDoc)", "the same document, on one page to read"),
        (app.openapi_url or "/openapi.json", "OpenAPI document", "for client generators"),
        ("/console/", "Operator console", "cards, terminals, events; operators sign in"),
    ]
    settings = request.app.state.services.settings
    if settings.dev_idp_serves_wallet or settings.wallet_authorization_endpoint:
        links.append(("/wallet/", "Web wallet", "a citizen's code in the browser"))
    return links


@router.get("/")
async def home(request: Request) -> HTMLResponse:
    links = "\n".join(
        f'<li><a href="{escape(href)}">{escape(label)}</a>: {escape(what)}</li>'
        for href, label, what in _home_links(request)
    )
    page = HOME_PAGE.format(version=escape(__version__), assets=ASSETS_PATH, links=links)
    return _page(HTMLResponse(page))
