"""The operator console's pages and forms at ``/console/`` (docs/console.md).

Server-rendered HTML (Jinja2, autoescaped), no script. Operators sign in at the identity
provider with OpenID Connect's authorization-code flow and PKCE; the console keeps the session
in an encrypted cookie (session.py) and refuses anyone without the operator role. Every form
is a POST carrying the session's CSRF token, and its cookie is SameSite=Lax: a page elsewhere
can neither read the token nor send the cookie with a cross-site POST.

Actions call the same functions as the API's routes (a card's status: routes/cards.py's
change_card_status; a terminal: fleet.decommission), so the console has no rules of its own.
Personal data is shown masked as the API shows it (cards.card_view); a card is looked up by
the keyed hash of its ID number, which is sent in a POST body, never in an address.
"""

from __future__ import annotations

import hmac
import json
import re
import secrets
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import jwt
from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, PackageLoader, StrictUndefined
from sqlalchemy import func, select

from idcode.errors import AuthError, InvalidIdNumber, RequestRefused, SignInRefused
from idcode.idnumber import normalise_id_number
from idcode.service.api.deps import Services
from idcode.service.api.problems import Problem
from idcode.service.api.routes.cards import change_card_status
from idcode.service.api.routes.devidp import console_redirect_uri, redeem_code
from idcode.service.auth import Principal
from idcode.service.cards import (
    STATUS_REASONS,
    TRANSITIONS,
    card_view,
    find_by_id_hash,
    record_audit,
)
from idcode.service.console import charts, queries
from idcode.service.console.session import (
    SIGN_IN_SECONDS,
    CookieBox,
    OperatorSession,
    SignIn,
    code_challenge,
    new_sign_in,
    session_key,
)
from idcode.service.devices import devices_of
from idcode.service.events import as_utc
from idcode.service.fleet import TERMINAL_ID, decommission
from idcode.service.models import (
    CardRecord,
    LinkRecord,
    RelyingPartyRecord,
    TerminalRecord,
)
from idcode.service.redistopology import STATE_ERRORS
from idcode.service.revocation import status_version

router = APIRouter(prefix="/console", include_in_schema=False)

FORM = "application/x-www-form-urlencoded"
REASON = re.compile(r"[a-z0-9_]{1,48}")  # as GET /v1/events takes it
MAX_FORM_BYTES = 8 * 1024
TOKEN_TIMEOUT_SECONDS = 10
SIGN_IN_PATH = "/console/auth"
TEMPLATES = Environment(
    loader=PackageLoader("idcode.service.console", "templates"),
    autoescape=True,  # every template, whatever its name: nothing reaches a page unescaped
    undefined=StrictUndefined,  # a misspelt variable is an error, not an empty string
    trim_blocks=True,
    lstrip_blocks=True,
)


def _utc(at: datetime, pattern: str = "%Y-%m-%d %H:%M:%S") -> str:
    """A stored time as UTC text; SQLite gives it back without its offset (it is UTC)."""
    return as_utc(at).strftime(pattern)


TEMPLATES.filters["utc"] = _utc
STYLESHEET = (resources.files("idcode.service.console") / "static" / "console.css").read_bytes()


@dataclass(frozen=True, slots=True)
class Cookies:
    """The console's cookie names and attributes for one service."""

    box: CookieBox
    secure: bool

    @property
    def session(self) -> str:
        # __Host-: only ever set by this origin over https, for the whole site (RFC 6265bis).
        return "__Host-idcode-console" if self.secure else "idcode-console"

    @property
    def sign_in(self) -> str:
        return "__Secure-idcode-console-sign-in" if self.secure else "idcode-console-sign-in"


def _cookies(request: Request) -> Cookies:
    """Made on first use: the key comes from the key store the service already opened."""
    cookies: Cookies | None = getattr(request.app.state, "console_cookies", None)
    if cookies is None:
        settings = _services(request).settings
        cookies = Cookies(CookieBox(session_key(settings.keys_dir)), not settings.development)
        request.app.state.console_cookies = cookies
    return cookies


def _services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


def _now() -> int:
    return int(time.time())


# -- rendering --------------------------------------------------------------------------------


def _policy(form_action: str = "'self'") -> str:
    return (
        "default-src 'none'; style-src 'self'; img-src 'self'; "
        f"form-action {form_action}; frame-ancestors 'none'; base-uri 'none'"
    )


PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "X-Frame-Options": "DENY",
    # Not no-referrer: with it, browsers send "Origin: null" with a form, which checked_form
    # refuses. same-origin tells nothing to any other site.
    "Referrer-Policy": "same-origin",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": _policy(),
}


def render(
    template: str,
    session: OperatorSession | None,
    status: int = 200,
    **context: Any,
) -> HTMLResponse:
    page = TEMPLATES.get_template(template).render(
        operator=session.subject if session else None,
        csrf=session.csrf if session else None,
        **context,
    )
    return HTMLResponse(page, status, headers=PAGE_HEADERS)


def message(session: OperatorSession | None, status: int, title: str, text: str) -> HTMLResponse:
    return render("message.html", session, status, title=title, text=text)


def _see(path: str) -> RedirectResponse:
    return RedirectResponse(path, 303, headers={"Cache-Control": "no-store"})


# -- who is signed in -------------------------------------------------------------------------


def signed_in(request: Request) -> OperatorSession | None:
    cookies = _cookies(request)
    return cookies.box.open_session(request.cookies.get(cookies.session), _now())


async def checked_form(request: Request) -> tuple[OperatorSession, dict[str, str]] | Response:
    """The signed-in operator and the form's fields, once the form has proved it came from a
    console page of this session (its CSRF token, its origin); otherwise the page to answer
    with, which the caller returns as it is."""
    session = signed_in(request)
    if session is None:
        return message(None, 403, "Signed out", "Your session has ended: sign in and try again.")
    stale = message(
        session,
        403,
        "Form refused",
        "This form did not come from a console page of your session. Reload the page and "
        "try again.",
    )
    # Browsers send Origin with every POST. Its host, not its scheme, is compared: behind a
    # proxy that ends TLS the service may see http while the browser says https.
    origin = request.headers.get("origin")
    if origin is not None and urlsplit(origin).netloc != request.url.netloc:
        return stale
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type != FORM:
        return message(session, 415, "Form refused", f"A form is sent as {FORM}.")
    body = await request.body()
    if len(body) > MAX_FORM_BYTES:
        return message(session, 413, "Form refused", "The form is too large.")
    try:
        parsed = parse_qs(body.decode("utf-8"), max_num_fields=16, errors="strict")
    except ValueError:  # not UTF-8, or too many fields
        return message(session, 400, "Form refused", "The form cannot be read.")
    fields = {name: values[0] for name, values in parsed.items() if len(values) == 1}
    if not hmac.compare_digest(fields.get("csrf", "").encode(), session.csrf.encode()):
        return stale
    return session, fields


# -- signing in -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Provider:
    """Where operators sign in: the authorization endpoint, and the token endpoint (None: the
    development provider, whose codes are redeemed in this process)."""

    client_id: str
    authorization_endpoint: str
    token_endpoint: str | None


def _provider(request: Request) -> Provider | None:
    settings = _services(request).settings
    if settings.dev_idp_serves_wallet:
        return Provider(settings.console_client, str(request.base_url) + "dev-idp/authorize", None)
    if settings.wallet_authorization_endpoint and settings.wallet_token_endpoint:
        return Provider(
            settings.console_client,
            settings.wallet_authorization_endpoint,
            settings.wallet_token_endpoint,
        )
    return None


@router.get("/sign-in")
async def sign_in(request: Request) -> Response:
    provider = _provider(request)
    if provider is None:
        return message(
            None,
            503,
            "No identity provider",
            "The console signs operators in at the identity provider named by "
            "IDCODE_WALLET_AUTHORIZATION_ENDPOINT and IDCODE_WALLET_TOKEN_ENDPOINT; "
            "neither is set.",
        )
    started = new_sign_in(_now())
    params = {
        "response_type": "code",
        "client_id": provider.client_id,
        "redirect_uri": console_redirect_uri(request),
        "scope": "openid",
        "state": started.state,
        "nonce": started.nonce,
        "code_challenge": code_challenge(started.verifier),
        "code_challenge_method": "S256",
    }
    separator = "&" if "?" in provider.authorization_endpoint else "?"
    response = _see(provider.authorization_endpoint + separator + urlencode(params))
    cookies = _cookies(request)
    response.set_cookie(
        cookies.sign_in,
        cookies.box.seal_sign_in(started),
        max_age=SIGN_IN_SECONDS,
        path=SIGN_IN_PATH,
        secure=cookies.secure,
        httponly=True,
        samesite="lax",  # it must come back with the provider's redirect, a cross-site GET
    )
    return response


def _fetch_token(provider: Provider, form: dict[str, str]) -> str:
    """The ID token from the provider's token endpoint (RFC 6749 section 4.1.3)."""
    assert provider.token_endpoint is not None
    request = urllib.request.Request(  # noqa: S310  (the endpoint is an http(s) setting)
        provider.token_endpoint,
        data=urlencode(form).encode(),
        headers={"Content-Type": FORM, "Accept": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=TOKEN_TIMEOUT_SECONDS) as answer:  # noqa: S310
            document = json.loads(answer.read(64 * 1024))
    except urllib.error.HTTPError as exc:
        try:
            error = json.loads(exc.read(4096)).get("error", "")
        except (ValueError, AttributeError):
            error = ""
        raise SignInRefused(
            str(error)[:64] or "server_error", f"the token endpoint answered {exc.code}"
        ) from None
    except (OSError, ValueError) as exc:
        raise SignInRefused(
            "temporarily_unavailable", f"the token endpoint cannot be used ({type(exc).__name__})"
        ) from None
    token = document.get("id_token") if isinstance(document, dict) else None
    if not isinstance(token, str):
        raise SignInRefused("invalid_grant", "the token endpoint's answer has no id_token")
    return token


@router.get("/auth/callback")
async def sign_in_callback(request: Request) -> Response:
    cookies = _cookies(request)
    now = _now()
    started = cookies.box.open_sign_in(request.cookies.get(cookies.sign_in), now)
    params = request.query_params
    if started is None:
        return _refused(400, "This sign-in has expired or was not started here: start again.", None)
    if not hmac.compare_digest(params.get("state", "").encode(), started.state.encode()):
        return _refused(400, "The identity provider's answer is not for this sign-in.", None)
    if "error" in params:
        error = params.get("error", "")[:64]
        description = params.get("error_description", "")[:200]
        return _refused(401, f"The identity provider refused: {error} ({description}).", None)
    code = params.get("code")
    provider = _provider(request)
    if not code or provider is None:
        return _refused(400, "The identity provider's answer has no authorization code.", None)
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": console_redirect_uri(request),
        "client_id": provider.client_id,
        "code_verifier": started.verifier,
    }
    try:
        if provider.token_endpoint is None:
            id_token = await redeem_code(request, {k: [v] for k, v in form.items()})
        else:
            id_token = await run_in_threadpool(_fetch_token, provider, form)
    except SignInRefused as exc:
        return _refused(401, f"The sign-in was refused: {exc.reason} ({exc}).", None)
    return await _open_session(request, started, id_token, now)


async def _open_session(request: Request, started: SignIn, id_token: str, now: int) -> Response:
    services = _services(request)
    try:
        tokens = services.tokens
        principal: Principal = (
            await run_in_threadpool(tokens.verify, id_token)
            if tokens.needs_network
            else tokens.verify(id_token)
        )
    except AuthError as exc:
        return _refused(401, f"The ID token was refused: {exc}.", None)
    # Verified above: only read here for the nonce (replay of another sign-in's token) and exp.
    claims = jwt.decode(id_token, options={"verify_signature": False})
    if not hmac.compare_digest(str(claims.get("nonce", "")).encode(), started.nonce.encode()):
        return _refused(401, "The ID token was made for another sign-in (nonce).", None)
    if services.settings.operator_role not in principal.roles:
        return _refused(
            403,
            "You are signed in at the identity provider, but without the operator role: "
            "the console is for operators only.",
            None,
        )
    expires_at = min(int(claims["exp"]), now + services.settings.console_session_seconds)
    session = OperatorSession(principal.subject, expires_at, secrets.token_urlsafe(32))
    cookies = _cookies(request)
    response = _see("/console/")
    response.set_cookie(
        cookies.session,
        cookies.box.seal_session(session),
        max_age=max(expires_at - now, 0),
        path="/",
        secure=cookies.secure,
        httponly=True,
        samesite="lax",
    )
    # With the attributes it was set with: a __Secure- cookie is only replaced by a Secure one.
    response.delete_cookie(
        cookies.sign_in, path=SIGN_IN_PATH, secure=cookies.secure, httponly=True, samesite="lax"
    )
    return response


def _refused(status: int, text: str, session: OperatorSession | None) -> HTMLResponse:
    return render("signin.html", session, status, text=text)


@router.post("/sign-out")
async def sign_out(request: Request) -> Response:
    form = await checked_form(request)
    if isinstance(form, Response):
        return form
    response = render("signin.html", None, 200, text="You are signed out.")
    cookies = _cookies(request)
    response.delete_cookie(
        cookies.session, path="/", secure=cookies.secure, httponly=True, samesite="lax"
    )
    return response


@router.get("/static/console.css")
async def stylesheet() -> Response:
    return Response(
        STYLESHEET,
        media_type="text/css",
        headers={"Cache-Control": "public, max-age=3600", "X-Content-Type-Options": "nosniff"},
    )


# -- pages ------------------------------------------------------------------------------------


@router.get("/")
async def overview(request: Request) -> Response:
    session = signed_in(request)
    if session is None:
        return _see("/console/sign-in")
    services = _services(request)

    # An earlier window (``?until=``) shows older hours, those a purge removed too.
    now, problems = datetime.now(UTC), []
    shown = request.query_params.get("until", "").strip()
    if shown:
        try:
            now = _time(shown)
        except ValueError:
            problems.append("'until' must be a date and time (UTC), like 2026-05-01T08:00.")

    def work() -> dict[str, Any]:
        with services.sessions() as db:
            scans = queries.scans_per_scene_per_hour(db, now)
            denials = queries.denials_by_reason(db, now)
        return {
            "scans": charts.stacked_hours(scans),
            "denials": charts.horizontal_bars(denials),
        }

    drawn = await run_in_threadpool(work)
    hours = queries.window_hours(now)
    numbers = [int(hour.timestamp()) // queries.HOUR for hour in hours]
    try:
        shared = await services.state.issued(numbers)
    except STATE_ERRORS:
        issued = None  # the shared state is away: no chart rather than a partial one
    else:
        # This replica's counts since its last flush are not in the shared tally yet.
        pending = services.issued.pending()
        counts = tuple(n + pending.get(hour, 0) for n, hour in zip(shared, numbers, strict=True))
        issued = charts.stacked_hours(queries.HourlyCounts(hours, {"codes issued": counts}))
    return render(
        "overview.html",
        session,
        422 if problems else 200,
        issued=issued,
        problems=problems,
        until=shown,
        window=f"{hours[0]:%Y-%m-%d %H}:00 to {hours[-1]:%Y-%m-%d %H}:59 UTC"
        if shown and not problems
        else None,
        **drawn,
    )


@router.get("/terminals")
async def terminals(request: Request) -> Response:
    session = signed_in(request)
    if session is None:
        return _see("/console/sign-in")
    services = _services(request)

    def work() -> tuple[list[TerminalRecord], int]:
        with services.sessions() as db:
            fleet = list(
                db.scalars(
                    select(TerminalRecord).order_by(
                        TerminalRecord.active.desc(), TerminalRecord.scene, TerminalRecord.site
                    )
                )
            )
            return fleet, status_version(db)

    fleet, version = await run_in_threadpool(work)
    done = request.query_params.get("decommissioned")
    return render(
        "terminals.html",
        session,
        terminals=fleet,
        status_version=version,
        decommissioned=done if done and TERMINAL_ID.fullmatch(done) else None,
    )


def _terminal_id(value: str) -> str | None:
    return value if TERMINAL_ID.fullmatch(value) else None


@router.get("/terminals/{terminal_id}/decommission")
async def confirm_decommission(request: Request, terminal_id: str) -> Response:
    session = signed_in(request)
    if session is None:
        return _see("/console/sign-in")
    services = _services(request)
    checked = _terminal_id(terminal_id)

    def work() -> TerminalRecord | None:
        with services.sessions() as db:
            return db.get(TerminalRecord, checked) if checked else None

    record = await run_in_threadpool(work)
    if record is None:
        return message(session, 404, "No such terminal", "No terminal has this id.")
    return render("decommission.html", session, terminal=record)


@router.post("/terminals/{terminal_id}/decommission")
async def decommission_terminal(request: Request, terminal_id: str) -> Response:
    form = await checked_form(request)
    if isinstance(form, Response):
        return form
    session, _ = form
    services = _services(request)
    checked = _terminal_id(terminal_id)

    def work() -> None:
        with services.sessions() as db:
            decommission(db, str(checked), session.subject)
            db.commit()

    try:
        if checked is None:
            raise RequestRefused("terminal_not_found", "no terminal with this id")
        await run_in_threadpool(work)
    except RequestRefused:
        return message(session, 404, "No such terminal", "No terminal has this id.")
    return _see(f"/console/terminals?decommissioned={checked}")


@router.get("/cards")
async def card_lookup(request: Request) -> Response:
    session = signed_in(request)
    if session is None:
        return _see("/console/sign-in")
    return render("cards.html", session, problem=None)


@router.post("/cards")
async def find_card(request: Request) -> Response:
    form = await checked_form(request)
    if isinstance(form, Response):
        return form
    session, fields = form
    services = _services(request)
    try:
        id_number = normalise_id_number(fields.get("id_number", ""))
    except InvalidIdNumber as exc:
        return render("cards.html", session, 422, problem=f"Not a valid ID number: {exc}.")

    def work() -> str | None:
        with services.sessions() as db:
            record = find_by_id_hash(db, services.vault.lookup_hash(id_number))
            return None if record is None else record.id

    card_id = await run_in_threadpool(work)
    if card_id is None:
        return render("cards.html", session, 404, problem="No card has this ID number.")
    return _see(f"/console/cards/{card_id}")


def _card_id(value: str) -> str | None:
    try:
        return str(uuid.UUID(value))
    except ValueError:
        return None


async def _card_page(
    request: Request,
    session: OperatorSession,
    card_id: str,
    status: int = 200,
    problem: str | None = None,
) -> Response:
    services = _services(request)

    def work() -> dict[str, Any] | None:
        with services.sessions() as db:
            record = db.scalars(select(CardRecord).where(CardRecord.id == card_id)).first()
            if record is None:
                return None
            now = datetime.now(UTC)
            view = card_view(record, services.vault, now)
            devices = [
                {
                    "id": device.id,
                    "alg": device.alg,
                    "created_at": device.created_at,
                    "credential_expires_at": device.credential_expires_at,
                    "state": "removed"
                    if device.removed_at is not None
                    else "expired"
                    if as_utc(device.credential_expires_at) <= now
                    else "active",
                }
                for device in devices_of(db, card_id)
            ]
            record_audit(db, session.subject, "card.read", card_id)  # as GET /v1/cards/{id}
            db.commit()
            return {"card": view, "devices": devices}

    shown = await run_in_threadpool(work)
    if shown is None:
        return message(session, 404, "No such card", "No card has this id.")
    actions = [a for a, (sources, _) in TRANSITIONS.items() if shown["card"]["status"] in sources]
    return render(
        "card.html",
        session,
        status,
        problem=problem,
        actions=actions,
        reasons=STATUS_REASONS,
        changed=request.query_params.get("changed") in TRANSITIONS,
        **shown,
    )


@router.get("/cards/{card_id}")
async def card(request: Request, card_id: str) -> Response:
    session = signed_in(request)
    if session is None:
        return _see("/console/sign-in")
    checked = _card_id(card_id)
    if checked is None:
        return message(session, 404, "No such card", "A card's id is a UUID.")
    return await _card_page(request, session, checked)


@router.post("/cards/{card_id}/status")
async def card_status(request: Request, card_id: str) -> Response:
    form = await checked_form(request)
    if isinstance(form, Response):
        return form
    session, fields = form
    checked = _card_id(card_id)
    if checked is None:
        return message(session, 404, "No such card", "A card's id is a UUID.")
    action, reason = fields.get("action", ""), fields.get("reason", "")
    if reason not in STATUS_REASONS:
        return await _card_page(
            request, session, checked, 422, "Choose why the status changes (a reason)."
        )
    try:
        await change_card_status(_services(request), checked, action, session.subject, reason)
    except Problem as problem:
        return await _card_page(
            request, session, checked, problem.status, f"{problem.title} {problem.detail or ''}"
        )
    return _see(f"/console/cards/{checked}?changed={action}")


def _time(value: str) -> datetime:
    """A filter time from a datetime-local field, in UTC (which it is when it names no
    offset); ValueError for anything else, a time UTC cannot hold (year 1 at +14:00) too."""
    try:
        return as_utc(datetime.fromisoformat(value))
    except OverflowError:
        raise ValueError("out of range") from None


@router.get("/events")
async def events(request: Request) -> Response:
    session = signed_in(request)
    if session is None:
        return _see("/console/sign-in")
    params = request.query_params
    shown = {
        name: params.get(name, "").strip() for name in ("terminal", "reason", "since", "until")
    }
    problems = []
    terminal_id = shown["terminal"] or None
    if terminal_id is not None and not TERMINAL_ID.fullmatch(terminal_id):
        problems.append("The terminal must be a terminal's id.")
        terminal_id = None
    reason = shown["reason"] or None
    if reason is not None and not REASON.fullmatch(reason):
        problems.append("A reason is lower-case letters, digits and underscores.")
        reason = None
    times: dict[str, datetime | None] = {}
    for name in ("since", "until"):
        try:
            times[name] = _time(shown[name]) if shown[name] else None
        except ValueError:
            problems.append(f"'{name}' must be a date and time (UTC), like 2026-05-01T08:00.")
            times[name] = None
    page_text = params.get("page", "1")
    page = int(page_text) if page_text.isdigit() and 0 < int(page_text) <= 10_000 else 1
    where = queries.EventFilter(terminal_id, reason, times["since"], times["until"])
    services = _services(request)

    def work() -> queries.EventPage:
        with services.sessions() as db:
            return queries.events_page(db, where, page)

    found = await run_in_threadpool(work)
    links = {
        name: "?" + urlencode({**{k: v for k, v in shown.items() if v}, "page": number})
        for name, number in (("newer", page - 1), ("older", page + 1))
    }
    return render(
        "events.html",
        session,
        422 if problems else 200,
        filter=shown,
        problems=problems,
        found=found,
        newer=links["newer"] if page > 1 else None,
        older=links["older"] if found.has_next else None,
    )


@router.get("/relying-parties")
async def relying_parties(request: Request) -> Response:
    session = signed_in(request)
    if session is None:
        return _see("/console/sign-in")
    services = _services(request)

    def work() -> list[tuple[RelyingPartyRecord, int]]:
        with services.sessions() as db:
            links = dict(
                db.execute(
                    select(LinkRecord.relying_party_id, func.count()).group_by(
                        LinkRecord.relying_party_id
                    )
                ).all()
            )
            parties = db.scalars(
                select(RelyingPartyRecord).order_by(RelyingPartyRecord.name, RelyingPartyRecord.id)
            )
            return [(party, int(links.get(party.id, 0))) for party in parties]

    return render("parties.html", session, parties=await run_in_threadpool(work))
