"""The development identity provider's endpoints for the web wallet and the operator console
(development only): ``GET``/``POST /dev-idp/authorize`` (a sign-in page listing the demo
citizens, and for the console a demo operator) and
``POST /dev-idp/token`` (RFC 6749 section 4.1.3 with PKCE). idcode.service.devidp checks the
requests; this module speaks HTTP. Errors are RFC 6749's (``{"error",
"error_description"}``), not problem+json: they are what an OAuth client expects here.
"""

from __future__ import annotations

import html
import time
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from idcode.errors import AuthorizationRefused, SignInRefused, UntrustedRedirect
from idcode.service.api.deps import Services
from idcode.service.demodata import DEMO_CARDS
from idcode.service.devidp import (
    AUTHORIZE_PARAMETERS,
    ID_TOKEN_LIFETIME,
    AuthorizationRequest,
    DevIdentityProvider,
)
from idcode.service.masks import mask_name

router = APIRouter(prefix="/dev-idp", tags=["development identity provider"])
FORM = "application/x-www-form-urlencoded"
MAX_FIELDS = 32
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
PAGE_HEADERS = {
    **NO_STORE,
    "X-Frame-Options": "DENY",  # a sign-in page is never framed (clickjacking)
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
}


# The OpenAPI description of these routes, which read their parameters themselves (strictly,
# as RFC 6749 says: a repeated parameter is an error, which FastAPI's parsing would hide).
_TEXT = {"type": "string"}
_AUTHORIZE_PARAMETERS: dict[str, Any] = {
    "response_type": {"enum": ["code"]},
    "client_id": _TEXT,
    "redirect_uri": {"type": "string", "format": "uri"},
    "scope": {"type": "string", "description": "must include openid"},
    "state": _TEXT,
    "nonce": _TEXT,
    "code_challenge": {"type": "string", "pattern": "^[A-Za-z0-9_-]{43}$"},
    "code_challenge_method": {"enum": ["S256"]},
}
_REQUIRED = ["response_type", "client_id", "redirect_uri", "scope", "code_challenge"]
_HTML = {"text/html": {"schema": _TEXT}}
_BACK = {
    "description": "Back to the redirect URI: with code and state, or with error, "
    "error_description and state (RFC 6749 section 4.1.2)",
    "headers": {"Location": {"schema": _TEXT}},
}
_UNTRUSTED = {
    "description": "An unknown client or redirect URI: an error page, no redirect",
    "content": _HTML,
}
_OAUTH_ERROR = {
    "application/json": {
        "schema": {
            "type": "object",
            "properties": {"error": _TEXT, "error_description": _TEXT},
            "required": ["error", "error_description"],
        }
    }
}
AUTHORIZE_PAGE: dict[str, Any] = {
    "parameters": [
        {"name": name, "in": "query", "required": name in _REQUIRED, "schema": schema}
        for name, schema in _AUTHORIZE_PARAMETERS.items()
    ],
    "responses": {
        "200": {"description": "The sign-in page", "content": _HTML},
        "303": _BACK,
        "400": _UNTRUSTED,
    },
}
AUTHORIZE_CHOICE: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            FORM: {
                "schema": {
                    "type": "object",
                    "properties": {
                        **_AUTHORIZE_PARAMETERS,
                        "citizen": {
                            "type": "string",
                            "description": "a demo citizen's index, or operator (the "
                            "console's sign-in only)",
                        },
                        "cancel": _TEXT,
                    },
                    "required": _REQUIRED,
                }
            }
        },
    },
    "responses": {"303": _BACK, "400": _UNTRUSTED},
}
TOKEN: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            FORM: {
                "schema": {
                    "type": "object",
                    "properties": {
                        "grant_type": {"enum": ["authorization_code"]},
                        "code": _TEXT,
                        "redirect_uri": _TEXT,
                        "client_id": _TEXT,
                        "code_verifier": {
                            "type": "string",
                            "pattern": "^[A-Za-z0-9._~-]{43,128}$",
                        },
                    },
                    "required": [
                        "grant_type",
                        "code",
                        "redirect_uri",
                        "client_id",
                        "code_verifier",
                    ],
                }
            }
        },
    },
    "responses": {
        "200": {
            "description": "The ID token",
            "content": {
                "application/json": {
                    "schema": {
                        "type": "object",
                        "properties": {
                            "id_token": _TEXT,
                            "token_type": {"enum": ["Bearer"]},
                            "expires_in": {"type": "integer"},
                        },
                        "required": ["id_token", "token_type", "expires_in"],
                    }
                }
            },
        },
        "400": {"description": "An RFC 6749 error", "content": _OAUTH_ERROR},
        "401": {"description": "invalid_client", "content": _OAUTH_ERROR},
    },
}


def wallet_redirect_uri(request: Request) -> str:
    """The one redirect URI registered for the wallet at the development provider: the
    wallet this service serves, at the address the browser used."""
    return str(request.base_url) + "wallet/"


def console_redirect_uri(request: Request) -> str:
    """The console's registered redirect URI at the development provider (console/pages.py)."""
    return str(request.base_url) + "console/auth/callback"


def _provider(request: Request) -> DevIdentityProvider:
    provider: DevIdentityProvider = request.app.state.dev_idp  # app.py, at start-up
    return provider


def _redirect(uri: str, params: dict[str, str]) -> RedirectResponse:
    separator = "&" if urlsplit(uri).query else "?"
    return RedirectResponse(uri + separator + urlencode(params), 303, headers=NO_STORE)


def _error_redirect(exc: AuthorizationRefused) -> RedirectResponse:
    params = {"error": exc.reason, "error_description": str(exc)}
    if exc.state is not None:
        params["state"] = exc.state
    return _redirect(exc.redirect_uri, params)


def _page(title: str, body: str, status: int = 200, form_target: str | None = None) -> Response:
    # form-action also governs where a form's answer may redirect (the wallet's address).
    targets = "'self'" + (f" {form_target}" if form_target else "")
    policy = (
        "default-src 'none'; style-src 'unsafe-inline'; "
        f"form-action {targets}; frame-ancestors 'none'; base-uri 'none'"
    )
    document = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(title)}</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 28rem; margin: 2rem auto; padding: 0 1rem; }}
button {{ display: block; width: 100%; margin: .5rem 0; padding: .8rem; font-size: 1rem;
  text-align: left; border: 1px solid #888; border-radius: .5rem; background: #f4f6f8; }}
.note {{ color: #8a4b00; background: #fff4e0; padding: .6rem; border-radius: .4rem; }}
</style></head>
<body><h1>{html.escape(title)}</h1>
{body}
</body></html>"""
    return HTMLResponse(
        document, status, headers={**PAGE_HEADERS, "Content-Security-Policy": policy}
    )


def _refusal_page(description: str) -> Response:
    return _page(
        "Sign-in refused",
        f"<p>The application that sent you here made a request this provider cannot trust: "
        f"{html.escape(description)}.</p><p>You were not signed in and were not sent back.</p>",
        400,
    )


def _sign_in_page(request: AuthorizationRequest, offer_operator: bool) -> Response:
    hidden = "".join(
        f'<input type="hidden" name="{html.escape(name)}" value="{html.escape(value)}">'
        for name, value in request.hidden_fields().items()
    )
    buttons = []
    if offer_operator:
        buttons.append(
            '<button type="submit" name="citizen" value="operator" data-citizen="operator">'
            "Demo operator <small>(operator role)</small></button>"
        )
    for index, card in enumerate(DEMO_CARDS):
        details = ", ".join([card.residency, *card.programmes])
        buttons.append(
            f'<button type="submit" name="citizen" value="{index}" '
            f'data-citizen="{index}">{html.escape(mask_name(card.name))} '
            f"<small>({html.escape(details)})</small></button>"
        )
    target = urlsplit(request.redirect_uri)
    body = f"""<p class="note">Development identity provider: made-up demo citizens, no password.
Production signs citizens in at the city's identity provider.</p>
<p>Sign in to <b>{html.escape(request.client_id)}</b> as:</p>
<form method="post" action="authorize">{hidden}{"".join(buttons)}
<button type="submit" name="cancel" value="1">Cancel</button></form>"""
    return _page("Sign in (development)", body, form_target=f"{target.scheme}://{target.netloc}")


def _query(request: Request) -> dict[str, list[str]]:
    params: dict[str, list[str]] = {}
    for name, value in request.query_params.multi_items():
        params.setdefault(name, []).append(value)
    return params


async def _form(request: Request) -> dict[str, list[str]]:
    """The request's url-encoded form, strictly: its media type, UTF-8, at most MAX_FIELDS."""
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type != FORM:
        raise SignInRefused("invalid_request", f"the body must be {FORM}")
    body = await request.body()
    try:
        return parse_qs(
            body.decode("ascii"),
            keep_blank_values=True,
            max_num_fields=MAX_FIELDS,
            errors="strict",
        )
    except UnicodeDecodeError:
        raise SignInRefused(
            "invalid_request", "the body is not url-encoded UTF-8 (RFC 6749 appendix B)"
        ) from None
    except ValueError:
        raise SignInRefused(
            "invalid_request", f"the body has more than {MAX_FIELDS} fields"
        ) from None


def _check(request: Request, params: Mapping[str, Sequence[str]]) -> AuthorizationRequest:
    provider = _provider(request)
    wallet, console = wallet_redirect_uri(request), console_redirect_uri(request)
    clients = {provider.client_id: frozenset({wallet})}
    settings = request.app.state.services.settings
    clients[settings.console_client] = clients.get(settings.console_client, frozenset()) | {console}
    return provider.authorization_request(params, clients)


@router.get(
    "/authorize",
    operation_id="dev_idp_authorize_page",
    summary="Sign-in page of the development provider (development)",
    response_class=HTMLResponse,
    openapi_extra=AUTHORIZE_PAGE,
)
async def authorize_page(request: Request) -> Response:
    """Development only: the development identity provider's sign-in page, which lets a developer
    pick a demo citizen instead of signing in."""
    try:
        checked = _check(request, _query(request))
        return _sign_in_page(checked, checked.redirect_uri == console_redirect_uri(request))
    except UntrustedRedirect as exc:
        return _refusal_page(str(exc))
    except AuthorizationRefused as exc:
        return _error_redirect(exc)


@router.post(
    "/authorize",
    operation_id="dev_idp_authorize",
    summary="The citizen's choice on the sign-in page (development)",
    response_class=HTMLResponse,
    openapi_extra=AUTHORIZE_CHOICE,
)
async def authorize_choice(request: Request) -> Response:
    """Development only: the choice made on the sign-in page; redirects to the wallet with an
    authorization code (or an error, when cancelled)."""
    try:
        form = await _form(request)
    except SignInRefused as exc:
        return _refusal_page(str(exc))
    # The form carries the request back: it is checked again, as if it had just arrived.
    request_params = {name: form[name] for name in AUTHORIZE_PARAMETERS if name in form}
    try:
        checked = _check(request, request_params)
    except UntrustedRedirect as exc:
        return _refusal_page(str(exc))
    except AuthorizationRefused as exc:
        return _error_redirect(exc)
    state = {"state": checked.state} if checked.state is not None else {}
    choice = form.get("citizen", [])
    if form.get("cancel"):
        return _redirect(
            checked.redirect_uri,
            {"error": "access_denied", "error_description": "the citizen cancelled", **state},
        )
    # The demo operator is offered to the console only: the wallet's sign-in is for citizens.
    operator = checked.redirect_uri == console_redirect_uri(request) and choice == ["operator"]
    if not operator and (
        len(choice) != 1 or choice[0] not in {str(i) for i in range(len(DEMO_CARDS))}
    ):
        return _redirect(
            checked.redirect_uri,
            {"error": "invalid_request", "error_description": "no demo citizen chosen", **state},
        )
    citizen = None if operator else int(choice[0])
    code = _provider(request).issue_code(checked, citizen, int(time.time()))
    return _redirect(checked.redirect_uri, {"code": code, **state})


def _token_error(exc: SignInRefused) -> JSONResponse:
    headers = dict(NO_STORE)
    if exc.status == 401:
        headers["WWW-Authenticate"] = 'Basic realm="idcode-dev-idp"'  # RFC 6749 section 5.2
    return JSONResponse(
        {"error": exc.reason, "error_description": str(exc)}, exc.status, headers=headers
    )


@router.post(
    "/token",
    operation_id="dev_idp_token",
    summary="Redeem an authorization code for an ID token (development)",
    openapi_extra=TOKEN,
)
async def token(request: Request) -> Response:
    """Development only: redeem an authorization code and its PKCE verifier for an ID token, as a
    real OIDC provider's token endpoint does."""
    try:
        id_token = await redeem_code(request, await _form(request))
    except SignInRefused as exc:
        return _token_error(exc)
    answer: dict[str, Any] = {
        "id_token": id_token,
        "token_type": "Bearer",
        "expires_in": ID_TOKEN_LIFETIME,
    }
    return JSONResponse(answer, headers=NO_STORE)


async def redeem_code(request: Request, form: Mapping[str, Sequence[str]]) -> str:
    """The ID token for a token request's authorization code, or SignInRefused. The token
    endpoint's work, also done in-process by the console's sign-in (console/pages.py)."""
    services: Services = request.app.state.services
    now = int(time.time())
    redeemed = _provider(request).redeem(form, now)
    # Single use across replicas, recorded only once everything else holds: a request that
    # failed (a wrong verifier, say) does not burn the citizen's code.
    forget_after = redeemed.expires_at + services.settings.clock_skew_seconds
    if await services.state.seen_before(redeemed.code_id, forget_after, now):
        raise SignInRefused("invalid_grant", "the authorization code was used already")
    return redeemed.id_token
