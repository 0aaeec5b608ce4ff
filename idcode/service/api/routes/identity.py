"""Identification with consent: relying parties (operators register them, citizens list them),
``POST /v1/identify`` (a relying party's counter), the links its terminals recognise, and the
disclosure record (``GET /v1/me/disclosures`` for citizens, per party for operators).

See docs/identity.md for the model and docs/api.md for each route's answers.
"""

from __future__ import annotations

import json
import time
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select

from idcode.attributes import COUNTER, PURPOSE
from idcode.codetext import MAX_CODE_LENGTH
from idcode.errors import (
    ConsentRefused,
    RecordingFailed,
    Refusal,
    RelyingPartyAuthError,
    RequestRefused,
)
from idcode.reasons import Reason
from idcode.scenes import SUBJECT_PATTERN
from idcode.service import identification, metrics, relyingparties
from idcode.service.api.deps import (
    AuthenticatedFirst,
    CitizenDep,
    CitizenOrOperatorDep,
    OperatorDep,
    Services,
    ServicesDep,
    bearer_token,
    caller_check,
    is_operator,
    spend_request_token,
)
from idcode.service.api.problems import Problem, problem_responses
from idcode.service.api.routes.codes import citizen_card
from idcode.service.api.times import UtcTime
from idcode.service.models import RelyingPartyRecord
from idcode.service.partycache import KnownParty
from idcode.service.relyingparties import NewRelyingParty
from idcode.service.requesttokens import PARTY_ID, check_read_token, read_request_token
from idcode.terminaltoken import RELYING_PARTY_AUDIENCE
from idcode.verifier import verify

router = APIRouter(prefix="/v1", tags=["identification"], route_class=AuthenticatedFirst)
PartyId = Annotated[
    str, Path(pattern=f"^{PARTY_ID.pattern}$", description="A relying party's id (UUID).")
]
Subject = Annotated[str, Path(pattern=SUBJECT_PATTERN, description="A pairwise subject.")]
Before = Annotated[
    int | None, Query(ge=1, le=2**62, description="Only records older than this record id.")
]
Limit = Annotated[int, Query(ge=1, le=1000)]


class RelyingPartyOut(BaseModel):
    """A relying party as citizens see it; operators also see its state."""

    id: str
    name: str
    sector: str
    purposes: list[str]
    attributes: list[str]
    active: bool | None = None
    created_at: UtcTime | None = None
    deactivated_at: UtcTime | None = None
    last_seen_at: UtcTime | None = Field(
        default=None, description="When its counters last called, to within a second."
    )


class Identification(BaseModel):
    """A scanned code presented by a relying party's counter."""

    model_config = ConfigDict(extra="forbid")

    code: str = Field(max_length=MAX_CODE_LENGTH * 2)
    purpose: str = Field(
        max_length=32, pattern=f"^{PURPOSE.pattern}$", description="One of the party's purposes."
    )
    counter: str | None = Field(
        default=None,
        pattern=f"^{COUNTER.pattern}$",
        description="Which counter asks (window-3): kept in the disclosure record.",
    )


class Identified(BaseModel):
    subject: str = Field(description="The citizen's pairwise subject at this relying party.")
    attributes: dict[str, Any] = Field(
        description="The attributes both consented to and allowed for this party."
    )
    purpose: str
    disclosure: int = Field(description="The disclosure record's id.")
    identified_at: UtcTime


class PartyOut(BaseModel):
    id: str
    name: str
    sector: str


class DisclosureOut(BaseModel):
    id: int
    at: UtcTime
    relying_party: PartyOut
    purpose: str
    attributes: list[str]
    counter: str | None = None


class AuditedDisclosure(DisclosureOut):
    card_id: str


class Links(BaseModel):
    subjects: list[str]


def _view(record: RelyingPartyRecord, operator: bool) -> dict[str, Any]:
    view: dict[str, Any] = {
        "id": record.id,
        "name": record.name,
        "sector": record.sector,
        "purposes": record.purposes,
        "attributes": record.attributes,
    }
    if operator:
        view |= {
            "active": record.active,
            "created_at": record.created_at,
            "deactivated_at": record.deactivated_at,
            "last_seen_at": record.last_seen_at,
        }
    return view


async def _relying_party(request: Request) -> KnownParty:
    """The relying party that signed this request, or a 401/403 problem, checked as
    deps.signed_caller checks terminals but against the process's cache of parties
    (partycache.py): a hit takes no database session and no thread-pool hop. In this order:
    every check of the token (signature, times, still active), then its single use, then the
    last-seen time (kept to within relyingparties.SEEN_RESOLUTION by each replica)."""
    services: Services = request.app.state.services
    token = bearer_token(request)
    if token is None:
        raise Problem(
            401,
            "missing_token",
            "A relying-party token is required.",
            headers={"WWW-Authenticate": "Bearer"},
        )
    try:
        read = read_request_token(
            token,
            refused=RelyingPartyAuthError,
            not_signed=relyingparties.NOT_SIGNED,
            profile=services.settings.profile,
        )
        party = services.parties.fresh(read.party_id)
        if party is None:
            party = await run_in_threadpool(services.parties.load, read.party_id)
        # On the event loop, as issuance verifies its ID tokens: one signature check.
        signed = check_read_token(
            read,
            audience=RELYING_PARTY_AUDIENCE,
            public_jwk=None if party is None else party.public_jwk,
            refused=RelyingPartyAuthError,
            not_signed=relyingparties.NOT_SIGNED,
            now=time.time(),
        )
        assert party is not None  # its key signed the token
        # Checked only now, so that an unsigned token cannot probe which parties exist.
        if not party.active:
            raise RelyingPartyAuthError(
                relyingparties.DEACTIVATED, "this relying party is deactivated"
            )
    except Refusal as exc:
        status = 403 if exc.reason == relyingparties.DEACTIVATED else 401
        raise Problem(
            status, exc.reason, "The relying-party token was refused.", str(exc)
        ) from None
    await spend_request_token(services, "relying-party", party.id, signed.jti)
    now = time.time()
    if services.parties.seen_to_write(party.id, now, relyingparties.SEEN_RESOLUTION):

        def seen() -> None:
            with services.sessions() as session:
                relyingparties.record_seen(session, party.id, now)
                session.commit()

        await run_in_threadpool(seen)
    return party


RelyingPartyDep = Annotated[KnownParty, Depends(caller_check(_relying_party))]


@router.post(
    "/relying-parties",
    operation_id="register_relying_party",
    status_code=201,
    response_model=RelyingPartyOut,
    response_model_exclude_none=True,
    summary="Register a relying party: what it may ask for, its purposes and its key",
    responses=problem_responses(401, 403, 422),
)
async def register_relying_party(
    new: NewRelyingParty, operator: OperatorDep, services: ServicesDep
) -> dict[str, Any]:
    """Register a relying party (operators): a service hall, a hospital, a job fair, with the
    attributes it may ask for, its purposes and the key its counters sign requests with."""

    def work() -> dict[str, Any]:
        with services.sessions() as session:
            try:
                record = relyingparties.register(
                    session, new, operator.subject, services.settings.profile
                )
            except RequestRefused as exc:
                raise Problem(422, exc.reason, str(exc)) from None
            session.commit()
            return _view(record, operator=True)

    return await run_in_threadpool(work)


@router.get(
    "/relying-parties",
    operation_id="list_relying_parties",
    response_model=list[RelyingPartyOut],
    response_model_exclude_none=True,
    summary="The relying parties and what each may ask for (citizens: the active ones)",
    responses=problem_responses(401, 403),
)
async def list_relying_parties(
    request: Request, caller: CitizenOrOperatorDep, services: ServicesDep
) -> list[dict[str, Any]]:
    """The relying parties and what each may ask for: for operators all of them, for citizens the
    active ones, so an app can show whom a consent would go to."""
    operator = is_operator(request, caller)

    def work() -> list[dict[str, Any]]:
        with services.sessions() as session:
            query = select(RelyingPartyRecord).order_by(
                RelyingPartyRecord.name, RelyingPartyRecord.id
            )
            if not operator:
                query = query.where(RelyingPartyRecord.active.is_(True))
            return [_view(record, operator) for record in session.scalars(query)]

    return await run_in_threadpool(work)


@router.get(
    "/relying-parties/{party_id}",
    operation_id="read_relying_party",
    response_model=RelyingPartyOut,
    response_model_exclude_none=True,
    summary="One relying party and what it may ask for",
    responses=problem_responses(401, 403, 404),
)
async def get_relying_party(
    party_id: PartyId, request: Request, caller: CitizenOrOperatorDep, services: ServicesDep
) -> dict[str, Any]:
    """One relying party and what it may ask for, for operators and citizens (an app's consent
    screen)."""
    operator = is_operator(request, caller)

    def work() -> dict[str, Any]:
        with services.sessions() as session:
            record = session.get(RelyingPartyRecord, party_id)
            if record is None or not (record.active or operator):
                raise Problem(404, "relying_party_not_found", "No relying party with this id.")
            return _view(record, operator)

    return await run_in_threadpool(work)


@router.post(
    "/relying-parties/{party_id}/deactivate",
    operation_id="deactivate_relying_party",
    response_model=RelyingPartyOut,
    response_model_exclude_none=True,
    summary="Cut a relying party off at once, with its terminals (final)",
    responses=problem_responses(401, 403, 404),
)
async def deactivate_relying_party(
    party_id: PartyId, operator: OperatorDep, services: ServicesDep
) -> dict[str, Any]:
    """Cut a relying party off at once, with its terminals (operators): their requests are refused
    from now on. Final: the party is not deleted, so its disclosure record stays."""

    def work() -> dict[str, Any]:
        with services.sessions() as session:
            try:
                record = relyingparties.deactivate(session, party_id, operator.subject)
            except RequestRefused as exc:
                raise Problem(404, exc.reason, str(exc)) from None
            session.commit()
            # Other replicas read it again within partycache.MAX_AGE; until then the
            # transactions of identifications and links refuse it themselves.
            services.parties.forget(party_id)
            return _view(record, operator=True)

    return await run_in_threadpool(work)


@router.get(
    "/relying-parties/{party_id}/disclosures",
    operation_id="list_party_disclosures",
    response_model=list[AuditedDisclosure],
    summary="A relying party's disclosure record, newest first (operators' audit)",
    responses=problem_responses(401, 403, 404),
)
async def party_disclosures(
    party_id: PartyId,
    operator: OperatorDep,
    services: ServicesDep,
    before: Before = None,
    limit: Limit = 100,
) -> list[dict[str, Any]]:
    """A relying party's disclosure record for an operator's audit, newest first: when, for which
    purpose, which attributes of which card, at which counter. Paged with before and limit."""

    def work() -> list[dict[str, Any]]:
        with services.sessions() as session:
            if session.get(RelyingPartyRecord, party_id) is None:
                raise Problem(404, "relying_party_not_found", "No relying party with this id.")
            return identification.disclosures(
                session, party_id=party_id, before=before, limit=limit
            )

    return await run_in_threadpool(work)


@router.post(
    "/identify",
    operation_id="identify",
    response_model=Identified,
    summary="Identify the citizen whose code a counter scanned, with their consent, once",
    responses={
        200: {"headers": {"Cache-Control": {"schema": {"type": "string"}}}},
        **problem_responses(401, 403, 409, 422, 503),
    },
)
async def identify(
    presented: Identification, party: RelyingPartyDep, services: ServicesDep
) -> Response:
    """A relying party's counter identifies the citizen whose code it scanned, with the consent
    the citizen gave in that code, once: the attributes consented to and a pairwise
    subject. Every identification is recorded for the citizen (GET /v1/me/disclosures)."""
    now = int(time.time())
    if presented.purpose not in party.purposes:
        metrics.count_identification("unknown_purpose")
        raise Problem(422, "unknown_purpose", "This relying party has no such purpose.")
    verdict = verify(presented.code, services.online_trust(now), now)
    if not verdict.valid or verdict.claims is None:
        metrics.count_identification(verdict.reason.value)
        raise Problem(
            422, verdict.reason.value, "The code does not verify.", verdict.detail or None
        )
    claims = verdict.claims
    presentation = identification.Presentation(
        party_id=party.id,
        party_attributes=party.attributes,
        code_id=claims.code_id,
        pseudonym=claims.card.pseudonym,
        status_index=claims.card.status_index,
        purpose=presented.purpose,
        counter=presented.counter,
    )
    try:
        identified = await services.recorder.identify(presentation)
    except ConsentRefused as exc:
        metrics.count_identification(exc.reason)
        raise Problem(exc.status, exc.reason, _REFUSALS.get(exc.reason, str(exc))) from None
    except RecordingFailed as exc:
        if not exc.unavailable:
            raise
        metrics.count_identification("database_unavailable")
        metrics.count_database_error("unreachable")
        raise Problem(
            503,
            "database_unavailable",
            "The database cannot be reached; try again shortly.",
            headers={"Retry-After": "5"},
        ) from None
    # The Identified schema, written directly (as issuance writes its answer): FastAPI's
    # validation and serialisation of the response model cost more than the rest of the
    # answer. The same document: an ISO 8601 time in UTC with "Z", as pydantic writes it.
    metrics.count_identification(Reason.OK.value)
    identified["identified_at"] = identified["identified_at"].isoformat().replace("+00:00", "Z")
    return Response(
        json.dumps(identified, ensure_ascii=False),
        media_type="application/json",
        headers={"Cache-Control": "no-store"},  # personal data: no cache keeps it
    )


_REFUSALS = {
    identification.NO_CONSENT: "The citizen gave no consent with this code.",
    identification.OTHER_PARTY: "The citizen's consent is for another relying party.",
    identification.PURPOSE_MISMATCH: "The citizen consented to another purpose.",
    identification.CODE_USED: "This code was used for an identification before.",
    identification.REVOKED: "The card is not active.",
    identification.EXPIRED: "The code has expired.",
    identification.DEACTIVATED: "This relying party is deactivated.",
}


@router.get(
    "/links",
    operation_id="list_links",
    response_model=Links,
    summary="The subjects this relying party linked to accounts of its own",
    responses=problem_responses(401, 403),
)
async def list_links(party: RelyingPartyDep, services: ServicesDep) -> dict[str, Any]:
    """The subjects this relying party linked to accounts of its own: its terminals recognise them
    offline."""

    def work() -> dict[str, Any]:
        with services.sessions() as session:
            return {"subjects": relyingparties.linked_subjects(session, party.id)}

    return await run_in_threadpool(work)


@router.put(
    "/links/{subject}",
    operation_id="link_subject",
    status_code=204,
    summary="Link a subject disclosed to this party: its terminals recognise it offline",
    responses=problem_responses(401, 403, 409, 422),
)
async def link_subject(subject: Subject, party: RelyingPartyDep, services: ServicesDep) -> Response:
    """Link a subject disclosed to this relying party to an account of its own: its own terminals
    then recognise the holder offline (multi-code fusion, docs/identity.md). 204."""

    def work() -> None:
        with services.sessions() as session:
            try:
                relyingparties.link(session, party.id, subject)
            except RequestRefused as exc:
                status = _LINK_REFUSALS.get(exc.reason, 422)
                raise Problem(status, exc.reason, str(exc)) from None
            session.commit()

    await run_in_threadpool(work)
    return Response(status_code=204)


_LINK_REFUSALS = {"too_many_links": 409, relyingparties.DEACTIVATED: 403}


@router.delete(
    "/links/{subject}",
    operation_id="unlink_subject",
    status_code=204,
    summary="Unlink a subject (the party closed the account on its side)",
    responses=problem_responses(401, 403, 404),
)
async def unlink_subject(
    subject: Subject, party: RelyingPartyDep, services: ServicesDep
) -> Response:
    """Unlink a subject when the party closed the account on its side: its terminals stop
    recognising it at their next sync. 204."""

    def work() -> bool:
        with services.sessions() as session:
            try:
                removed = relyingparties.unlink(session, party.id, subject)
            except RequestRefused as exc:
                raise Problem(_LINK_REFUSALS.get(exc.reason, 422), exc.reason, str(exc)) from None
            session.commit()
            return removed

    if not await run_in_threadpool(work):
        raise Problem(404, "link_not_found", "This subject is not linked.")
    return Response(status_code=204)


@router.get(
    "/me/disclosures",
    operation_id="list_my_disclosures",
    response_model=list[DisclosureOut],
    summary="Every identification of the caller: who, for what, which attributes, when, where",
    responses=problem_responses(401, 403, 404),
)
async def my_disclosures(
    citizen: CitizenDep, services: ServicesDep, before: Before = None, limit: Limit = 100
) -> list[dict[str, Any]]:
    """Every identification of the caller, newest first: which relying party, for what purpose,
    which attributes, when and at which counter. Paged with before and limit."""
    assert citizen.id_number is not None
    card = await citizen_card(services, citizen.id_number, int(time.time()))

    def work() -> list[dict[str, Any]]:
        with services.sessions() as session:
            return identification.disclosures(
                session, card_id=card.card_id, before=before, limit=limit
            )

    return await run_in_threadpool(work)
