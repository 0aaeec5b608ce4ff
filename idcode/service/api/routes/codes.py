"""Citizens get codes: ``POST /v1/codes`` as JSON or as a QR image, optionally with consent to
an identification (docs/identity.md), and ``GET /v1/me``."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Body, Request, Response
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field

from idcode.claims import CodeClaims
from idcode.errors import RequestRefused
from idcode.issuer import mint_code
from idcode.qr import qr_image
from idcode.service import metrics
from idcode.service.api.deps import AuthenticatedFirst, CitizenDep, Services, ServicesDep
from idcode.service.api.problems import Problem, problem_responses
from idcode.service.api.times import UtcTime
from idcode.service.cards import CardSnapshot, attribute_names, find_by_id_hash, snapshot
from idcode.service.identification import Disclose, consent_target, give_consent
from idcode.service.models import CardStatus
from idcode.service.vocabulary import AgeBand, Programme, Residency

router = APIRouter(prefix="/v1", tags=["citizens"], route_class=AuthenticatedFirst)

MEDIA_TYPES = ("application/json", "image/png", "image/svg+xml")
CODE_TEXT_HEADER = "X-Code-Text"
NO_CARD = "No citizen card is enrolled for this citizen."


class CodeRequest(BaseModel):
    """What a code is asked for with. No body, or no ``disclose``: an ordinary code."""

    model_config = ConfigDict(extra="forbid")

    disclose: Disclose | None = Field(
        default=None,
        description="Consent, held for this code alone, to disclose these attributes to this "
        "relying party once (docs/identity.md).",
    )


class Disclosing(BaseModel):
    to: str
    name: str = Field(description="The relying party's name, for the app to show.")
    attributes: list[str] = Field(
        description="What will be disclosed: the consented attributes the party may ask for."
    )
    purpose: str | None = None


class IssuedCode(BaseModel):
    code: str
    expires_at: UtcTime
    refresh_at: UtcTime
    disclose: Disclosing | None = None


class MyCard(BaseModel):
    id: str
    status: CardStatus
    residency: Residency
    age_band: AgeBand
    programmes: list[Programme]


def negotiate(accept: str | None) -> str | None:
    """The best of MEDIA_TYPES for an Accept header (JSON when absent), None if none fits."""
    if not accept:
        return MEDIA_TYPES[0]
    best: tuple[float, int] | None = None
    chosen = None
    for part in accept.lower().split(","):  # media types are case-insensitive (RFC 9110)
        media, *params = (p.strip() for p in part.split(";"))
        quality = 1.0
        for param in params:
            if param.startswith("q="):
                try:
                    quality = float(param[2:])
                except ValueError:
                    quality = 0.0
        for rank, candidate in enumerate(MEDIA_TYPES):
            if quality > 0 and media in (candidate, candidate.split("/")[0] + "/*", "*/*"):
                key = (quality, -rank)
                if best is None or key > best:
                    best, chosen = key, candidate
    return chosen


async def citizen_card(
    services: Services, id_number: str, now: float, *, rate_limit: int = 0
) -> CardSnapshot:
    """The caller's card, from the shared cache or the database, counting the request
    against the citizen's rate limit when ``rate_limit`` is set (one Redis round trip)."""
    id_hash = services.vault.citizen_key(id_number)
    if id_hash is None:  # enrolment refuses such a number, so no card can have it
        raise Problem(404, "card_not_found", NO_CARD)
    card, wait = await services.state.admit(id_hash, rate_limit, now)
    if wait is not None:
        raise Problem(
            429,
            "rate_limited",
            "Too many codes asked for; wait a moment.",
            headers={"Retry-After": str(wait)},
        )
    if card is None:
        card = await run_in_threadpool(_load_card, services, id_hash)
        if card is None:
            raise Problem(404, "card_not_found", NO_CARD)
        await services.state.cache_card(id_hash, card, int(now))
    return card


def _load_card(services: Services, id_hash: bytes) -> CardSnapshot | None:
    with services.sessions() as session:
        record = find_by_id_hash(session, id_hash)
        return None if record is None else snapshot(record, services.vault, datetime.now(UTC))


@router.post(
    "/codes",
    operation_id="issue_code",
    summary="Issue a fresh code for the caller's card",
    response_model=IssuedCode,
    responses={
        200: {
            "description": "The code, as JSON or (by Accept) as a QR image",
            "content": {"image/png": {}, "image/svg+xml": {}},
            "headers": {
                "X-Code-Text": {
                    "description": "With a QR image: the code's text, as a quoted "
                    'Structured Field string (RFC 8941): "WH1:…"',
                    "schema": {"type": "string"},
                },
                "X-Code-Expires-At": {
                    "description": "When the code expires (RFC 3339, UTC).",
                    "schema": {"type": "string", "format": "date-time"},
                },
                "X-Code-Refresh-At": {
                    "description": "When to ask for the next code (RFC 3339, UTC).",
                    "schema": {"type": "string", "format": "date-time"},
                },
            },
        },
        **problem_responses(401, 403, 404, 406, 422, 429, 503),
    },
)
async def issue_code(
    request: Request, citizen: CitizenDep, asked: Annotated[CodeRequest | None, Body()] = None
) -> Response:
    """A fresh, short-lived signed code for the caller's own card, as text (JSON) or drawn as a QR
    code (Accept: image/png or image/svg+xml). With disclose, the code also carries the
    caller's consent to disclose named attributes to one relying party once
    (docs/identity.md). Refused while the card is not active; rate-limited per card (429)."""
    services: Services = request.app.state.services  # not a dependency: see deps.authenticate
    media_type = negotiate(request.headers.get("accept"))
    if media_type is None:
        raise Problem(406, "not_acceptable", "Ask for " + ", ".join(MEDIA_TYPES) + ".")
    now = time.time()
    assert citizen.id_number is not None
    settings = services.settings
    card = await citizen_card(
        services, citizen.id_number, now, rate_limit=settings.rate_limit_per_minute
    )
    if card.status != "active":
        raise Problem(
            403, f"card_{card.status}", f"The card is {card.status}; no code can be issued."
        )
    ttl = settings.code_ttl_seconds
    code, claims = mint_code(
        card.card(),
        services.keys.signer(int(now)),
        prefix=services.code_prefix,
        now=int(now),
        ttl=ttl,
    )
    refresh_at = claims.expires_at - max(1, ttl // 6)
    headers = {
        "Cache-Control": "no-store",
        "X-Code-Expires-At": _iso(claims.expires_at),
        "X-Code-Refresh-At": _iso(refresh_at),
    }
    disclosing = None
    if asked is not None and asked.disclose is not None:
        disclosing = await _hold_consent(services, card, asked.disclose, claims)
        headers["X-Code-Discloses-To"] = disclosing["to"]
    metrics.count_code("code" if disclosing is None else "code_with_consent", services.code_prefix)
    services.issued.add(now)  # the console's chart (issuedtally.py)
    if media_type != "application/json":
        image = await run_in_threadpool(qr_image, code, media_type)
        # The code's text beside its image, for an app that shows both (text for a screen
        # reader, a copy button, a terminal without a camera): another request would mint
        # another code. A Structured Field string (RFC 8941) in quotes, since a base45 code
        # may end in a space, which HTTP strips from a bare header value; base45 has neither
        # '"' nor '\', so removing the quotes gives the code.
        headers[CODE_TEXT_HEADER] = f'"{code}"'
        return Response(image, media_type=media_type, headers=headers)
    # The IssuedCode schema, written directly: this is the hottest route.
    document: dict[str, Any] = {
        "code": code,
        "expires_at": headers["X-Code-Expires-At"],
        "refresh_at": headers["X-Code-Refresh-At"],
    }
    if disclosing is not None:
        document["disclose"] = disclosing
    return Response(json.dumps(document), media_type="application/json", headers=headers)


async def _hold_consent(
    services: Services, card: CardSnapshot, disclose: Disclose, claims: CodeClaims
) -> dict[str, Any]:
    """Hold the citizen's consent for the code just minted (or a problem: then no code)."""
    keep_until = claims.expires_at + services.settings.clock_skew_seconds

    def work() -> dict[str, Any]:
        with services.sessions() as session:
            try:
                target = consent_target(session, disclose)
            except RequestRefused as exc:
                raise Problem(422, exc.reason, str(exc)) from None
            give_consent(session, card.card_id, disclose, claims, keep_until)
            session.commit()
        return {
            "to": target.party_id,
            "name": target.party_name,
            "attributes": target.attributes,
            "purpose": target.purpose,
        }

    return await run_in_threadpool(work)


@router.get(
    "/me",
    operation_id="read_my_card",
    summary="The caller's own card: status and coarse attributes",
    response_model=MyCard,
    responses=problem_responses(401, 403, 404),
)
async def my_card(citizen: CitizenDep, services: ServicesDep) -> dict[str, Any]:
    """The caller's own card as codes describe it: its status and coarse attributes, never the
    name or ID number. An app shows it to explain a refusal (a suspended card) or an
    entitlement."""
    assert citizen.id_number is not None
    card = await citizen_card(services, citizen.id_number, int(time.time()))
    return {
        "id": card.card_id,
        "status": card.status,
        **attribute_names(card),
    }


def _iso(seconds: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))
