"""Operators enrol, import, look up and change the status of cards. Every action is audited."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm.exc import StaleDataError

from idcode.errors import CardError
from idcode.service.api.deps import AuthenticatedFirst, OperatorDep, Services, ServicesDep
from idcode.service.api.problems import Problem, problem_responses
from idcode.service.cards import (
    CardSnapshot,
    NewCard,
    StatusReason,
    card_view,
    change_status,
    enrol,
    get_card,
    record_audit,
    snapshot,
)
from idcode.service.importer import ImportFormat, import_cards, lines_of, parse_rows
from idcode.service.models import CardStatus
from idcode.service.vocabulary import AgeBand, Programme, Residency

router = APIRouter(prefix="/v1/cards", tags=["operators"], route_class=AuthenticatedFirst)

# A card id is a UUID; anything else is refused with 422 before it reaches the database.
CardId = Annotated[uuid.UUID, Path(description="The card's public id (a UUID).")]

IMPORT_MEDIA_TYPES: dict[str, ImportFormat] = {
    "text/csv": "csv",
    "application/x-ndjson": "jsonl",
    "application/jsonl": "jsonl",
    "application/jsonlines": "jsonl",
}
_STATUS_CODES = {
    "card_not_found": 404,
    "already_enrolled": 409,
    "invalid_transition": 409,
    "status_list_full": 503,
}


class CardOut(BaseModel):
    id: str
    status: CardStatus
    status_index: int
    pseudonym: str
    residency: Residency
    age_band: AgeBand
    programmes: list[Programme]
    name_masked: str
    id_number_masked: str
    created_at: str


class StatusChangeRequest(BaseModel):
    action: Literal["suspend", "lost", "revoke", "reinstate"]
    reason: StatusReason | None = Field(
        default=None, description="Why, for the audit record (a closed set: no free text)."
    )


class RejectionOut(BaseModel):
    row: int
    field: str
    reason: str


class ImportReportOut(BaseModel):
    received: int = Field(description="Rows read (a CSV header is not a row).")
    imported: int = Field(description="Cards enrolled; 0 for a dry run.")
    unchanged: int = Field(
        description="Rows whose ID number is already enrolled with the same data; no error, "
        "so the same file can be imported again."
    )
    rejected: int = Field(
        description="Rows not enrolled, each in rejections: invalid, or an ID number "
        "enrolled with other data (the fields that differ are named)."
    )
    dry_run: bool
    would_import: int | None = Field(
        default=None,
        description="Only for a dry run: the rows an import would enrol.",
    )
    rejections: list[RejectionOut]
    rejections_truncated: bool


def _card_problem(exc: CardError) -> Problem:
    return Problem(_STATUS_CODES.get(exc.reason, 400), exc.reason, str(exc))


@router.post(
    "",
    operation_id="enrol_card",
    status_code=201,
    summary="Enrol one card",
    response_model=CardOut,
    responses=problem_responses(401, 403, 409, 422),
)
async def enrol_card(new: NewCard, operator: OperatorDep, services: ServicesDep) -> dict[str, Any]:
    """Enrol one citizen's card (operators). The name, ID number and phone are stored encrypted
    and answered masked; the card gets a random pseudonym and a status-list slot. An ID
    number already enrolled is refused with 409 already_enrolled."""

    def work() -> dict[str, Any]:
        with services.sessions() as session:
            try:
                record = enrol(session, services.vault, new, operator.subject)
                session.commit()
            except CardError as exc:
                raise _card_problem(exc) from None
            except IntegrityError:  # a concurrent enrolment of the same ID number won
                raise Problem(409, "already_enrolled", "This card is already enrolled.") from None
            return card_view(record, services.vault, datetime.now(UTC))

    return await run_in_threadpool(work)


@router.post(
    "/import",
    operation_id="import_card_file",
    summary="Enrol cards in bulk from CSV or JSON Lines",
    response_model=ImportReportOut,
    response_model_exclude_none=True,  # would_import only in a dry run's answer
    responses=problem_responses(401, 403, 413, 415),
    openapi_extra={
        "requestBody": {
            "content": {media: {"schema": {"type": "string"}} for media in IMPORT_MEDIA_TYPES},
            "required": True,
        }
    },
)
async def import_card_file(
    request: Request,
    operator: OperatorDep,
    services: ServicesDep,
    dry_run: Annotated[bool, Query(description="Validate only; enrol nothing.")] = False,
    all_or_nothing: Annotated[
        bool, Query(description="Enrol nothing unless every row is valid.")
    ] = False,
) -> dict[str, Any]:
    """Enrol many cards from CSV (header id_number,name,phone,residency,programmes; programmes
    separated by ;) or JSON Lines with the same keys, up to 64 MiB. Each bad row is
    reported by number and field; dry_run validates only, all_or_nothing enrols nothing
    unless every row is valid."""
    media_type = (request.headers.get("content-type") or "").split(";")[0].strip().lower()
    fmt = IMPORT_MEDIA_TYPES.get(media_type)
    if fmt is None:
        raise Problem(
            415,
            "unsupported_media_type",
            "Send text/csv or application/x-ndjson (JSON Lines).",
        )
    body = await request.body()  # at most BODY_LIMITS["/v1/cards/import"] (problems.py)
    try:
        lines = lines_of(body)
    except UnicodeDecodeError:
        raise Problem(400, "bad_encoding", "The file must be UTF-8.") from None

    report = await run_in_threadpool(
        import_cards,
        services.sessions,
        services.vault,
        parse_rows(lines, fmt),
        operator.subject,
        dry_run=dry_run,
        all_or_nothing=all_or_nothing,
        commit_chunks=False,  # one request, one transaction
    )
    return report.to_json()


@router.get(
    "/{card_id}",
    operation_id="read_card",
    summary="One card, personal data masked",
    response_model=CardOut,
    responses=problem_responses(401, 403, 404),
)
async def read_card(
    card_id: CardId, operator: OperatorDep, services: ServicesDep
) -> dict[str, Any]:
    """One card for an operator: status, status-list slot, pseudonym and coarse attributes, with
    the name and ID number masked. The read itself is audited (card_read)."""

    def work() -> dict[str, Any]:
        with services.sessions() as session:
            try:
                record = get_card(session, str(card_id))
            except CardError as exc:
                raise _card_problem(exc) from None
            view = card_view(record, services.vault, datetime.now(UTC))
            record_audit(session, operator.subject, "card.read", str(card_id))
            session.commit()
            return view

    return await run_in_threadpool(work)


@router.post(
    "/{card_id}/status",
    operation_id="change_card_status",
    summary="Suspend, mark lost, revoke or reinstate a card",
    response_model=CardOut,
    responses=problem_responses(401, 403, 404, 409, 422),
)
async def set_status(
    card_id: CardId, change: StatusChangeRequest, operator: OperatorDep, services: ServicesDep
) -> dict[str, Any]:
    """Suspend a card, mark it lost, revoke it or reinstate it (operators). Terminals learn it at
    their next status-list sync, online verification at once; a transition the status does
    not allow (reinstating a revoked card) answers 409 invalid_transition."""
    return await change_card_status(
        services, str(card_id), change.action, operator.subject, change.reason
    )


async def change_card_status(
    services: Services, card_id: str, action: str, actor: str, reason: str | None
) -> dict[str, Any]:
    """Change a card's status and make every replica see it; the card's view, or a problem.
    The API's route and the operator console's form both come here."""

    def work() -> tuple[dict[str, Any], bytes, CardSnapshot]:
        with services.sessions() as session:
            try:
                record = change_status(session, card_id, action, actor, reason)
                session.commit()
            except CardError as exc:
                raise _card_problem(exc) from None
            except StaleDataError:
                raise Problem(
                    409,
                    "concurrent_change",
                    "The card was changed by someone else meanwhile; read it and try again.",
                ) from None
            now = datetime.now(UTC)
            return (
                card_view(record, services.vault, now),
                record.id_hash,
                snapshot(record, services.vault, now),
            )

    view, id_hash, fresh = await run_in_threadpool(work)
    # Every replica reads cards through the shared cache: write the new version through, so
    # the next request for a code sees the new status at once, whichever replica it reaches.
    await services.state.cache_card(id_hash, fresh, int(time.time()), write_through=True)
    return view
