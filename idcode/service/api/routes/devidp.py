"""The development identity provider's endpoints for the web wallet (development only):
``GET``/``POST /dev-idp/authorize`` (a sign-in page listing the demo citizens) and
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

from idcode.service.api.deps import Services
from idcode.service.demodata import DEMO_CARDS
from idcode.service.devidp import (
    AUTHORIZE_PARAMETERS,
    ID_TOKEN_LIFETIME,
    AuthorizationError,
    AuthorizationRequest,
    DevIdentityProvider,
    OAuthError,
    UnsafeRedirect,
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


def wallet_redirect_uri(request: Request) -> str:
    """The one redirect URI registered for the wallet at the development provider: the
    wallet this service serves, at the address the browser used."""
    return str(request.base_url) + "wallet/"


def _provider(request: Request) -> DevIdentityProvider:
    provider: DevIdentityProvider = request.app.state.dev_idp  # app.py, at start-up
    return provider


def _redirect(uri: str, params: dict[str, str]) -> RedirectResponse:
    separator = "&" if urlsplit(uri).query else "?"
    return RedirectResponse(uri + separator + urlencode(params), 303, headers=NO_STORE)


def _error_redirect(exc: AuthorizationError) -> RedirectResponse:
    params = {"error": exc.error, "error_description": exc.description}
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


def _sign_in_page(request: AuthorizationRequest) -> Response:
    hidden = "".join(
        f'<input type="hidden" name="{html.escape(name)}" value="{html.escape(value)}">'
        for name, value in request.hidden_fields().items()
    )
    buttons = []
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
        raise OAuthError("invalid_request", f"the body must be {FORM}")
    body = await request.body()
    try:
        return parse_qs(
            body.decode("ascii"),
            keep_blank_values=True,
            max_num_fields=MAX_FIELDS,
            errors="strict",
        )
    except UnicodeDecodeError:
        raise OAuthError(
            "invalid_request", "the body is not url-encoded UTF-8 (RFC 6749 appendix B)"
        ) from None
    except ValueError:
        raise OAuthError("invalid_request", f"the body has more than {MAX_FIELDS} fields") from None


def _check(request: Request, params: Mapping[str, Sequence[str]]) -> AuthorizationRequest:
    return _provider(request).authorization_request(
        params, frozenset({wallet_redirect_uri(request)})
    )


@router.get("/authorize", summary="Sign-in page of the development provider (development)")
async def authorize_page(request: Request) -> Response:
    try:
        return _sign_in_page(_check(request, _query(request)))
    except UnsafeRedirect as exc:
        return _refusal_page(str(exc))
    except AuthorizationError as exc:
        return _error_redirect(exc)


@router.post("/authorize", summary="The citizen's choice on the sign-in page (development)")
async def authorize_choice(request: Request) -> Response:
    try:
        form = await _form(request)
    except OAuthError as exc:
        return _refusal_page(exc.description)
    # The form carries the request back: it is checked again, as if it had just arrived.
    request_params = {name: form[name] for name in AUTHORIZE_PARAMETERS if name in form}
    try:
        checked = _check(request, request_params)
    except UnsafeRedirect as exc:
        return _refusal_page(str(exc))
    except AuthorizationError as exc:
        return _error_redirect(exc)
    state = {"state": checked.state} if checked.state is not None else {}
    choice = form.get("citizen", [])
    if form.get("cancel"):
        return _redirect(
            checked.redirect_uri,
            {"error": "access_denied", "error_description": "the citizen cancelled", **state},
        )
    if len(choice) != 1 or choice[0] not in {str(i) for i in range(len(DEMO_CARDS))}:
        return _redirect(
            checked.redirect_uri,
            {"error": "invalid_request", "error_description": "no demo citizen chosen", **state},
        )
    code = _provider(request).issue_code(checked, int(choice[0]), int(time.time()))
    return _redirect(checked.redirect_uri, {"code": code, **state})


def _token_error(exc: OAuthError) -> JSONResponse:
    headers = dict(NO_STORE)
    if exc.status == 401:
        headers["WWW-Authenticate"] = 'Basic realm="idcode-dev-idp"'  # RFC 6749 section 5.2
    return JSONResponse(
        {"error": exc.error, "error_description": exc.description}, exc.status, headers=headers
    )


@router.post(
    "/token",
    summary="Redeem an authorization code for an ID token (development)",
    responses={
        200: {"description": "{id_token, token_type, expires_in}"},
        400: {"description": "RFC 6749 error: {error, error_description}"},
        401: {"description": "invalid_client"},
    },
)
async def token(request: Request) -> Response:
    services: Services = request.app.state.services
    now = int(time.time())
    try:
        redeemed = _provider(request).redeem(await _form(request), now)
    except OAuthError as exc:
        return _token_error(exc)
    # Single use across replicas, recorded only once everything else holds: a request that
    # failed (a wrong verifier, say) does not burn the citizen's code.
    forget_after = redeemed.expires_at + services.settings.clock_skew_seconds
    if await services.state.seen_before(redeemed.code_id, forget_after, now):
        return _token_error(OAuthError("invalid_grant", "the authorization code was used already"))
    answer: dict[str, Any] = {
        "id_token": redeemed.id_token,
        "token_type": "Bearer",
        "expires_in": ID_TOKEN_LIFETIME,
    }
    return JSONResponse(answer, headers=NO_STORE)
