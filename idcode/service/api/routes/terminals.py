"""Terminals: registration (operators), trust bundles and status deltas, event upload."""

from __future__ import annotations

import hashlib
import time
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from idcode.bundle import sign_bundle, sign_delta
from idcode.errors import RequestRefused
from idcode.protocol import JOURNAL_BACKLOG_HEADER, MAX_EVENTS_PER_BATCH, MAX_JOURNAL_BACKLOG
from idcode.scenes import encode_scene_key
from idcode.service import relyingparties
from idcode.service.api.deps import (
    AuthenticatedFirst,
    OperatorDep,
    Services,
    ServicesDep,
    caller_check,
    signed_caller,
)
from idcode.service.api.problems import Problem, problem_responses
from idcode.service.api.times import UtcTime
from idcode.service.devices import revoked_device_ids
from idcode.service.events import EVENT_ID, ScanEventIn, as_utc, check_events, delete_event, ingest
from idcode.service.fleet import (
    TERMINAL_ID,
    AuthenticatedTerminal,
    NewTerminal,
    authenticate,
    decommission,
    record_seen,
    record_trust_version,
    register,
)
from idcode.service.models import ScanEvent, TerminalRecord
from idcode.service.revocation import status_delta, status_list, status_version_and_size
from idcode.service.scenedata import put_scene_data, scene_data, scene_data_version
from idcode.statuslist import StatusDelta

router = APIRouter(prefix="/v1", tags=["terminals"], route_class=AuthenticatedFirst)
# Anchored: FastAPI (pydantic) searches a pattern anywhere in the value, so an unanchored one
# let a UUID with NUL bytes around it through to the database (a 500 schemathesis found).
TERMINAL_ID_PATTERN = f"^{TERMINAL_ID.pattern}$"
EVENT_ID_PATTERN = f"^{EVENT_ID.pattern}$"
TerminalId = Annotated[str, Path(pattern=TERMINAL_ID_PATTERN, description="A terminal id (UUID).")]


class TerminalOut(BaseModel):
    id: str
    scene: str
    site: str
    active: bool
    clock_drift: int | None = None
    last_seen_at: UtcTime | None = None
    relying_party: str | None = None


class EventBatch(BaseModel):
    events: list[ScanEventIn] = Field(max_length=MAX_EVENTS_PER_BATCH)


class EventBatchResult(BaseModel):
    received: int
    stored: int
    duplicates: int


def _view(record: TerminalRecord) -> dict[str, Any]:
    return {
        "id": record.id,
        "scene": record.scene,
        "site": record.site,
        "active": record.active,
        "clock_drift": record.clock_drift,
        "last_seen_at": record.last_seen_at,
        "relying_party": record.relying_party_id,
    }


async def _terminal(request: Request) -> TerminalRecord:
    """The terminal that signed this request, or a 401/403 problem (deps.signed_caller); a
    422 problem first when its journal backlog header is not a count."""
    backlog = _journal_backlog(request)

    def seen(session: Session, accepted: AuthenticatedTerminal, now: float) -> None:
        record_seen(session, accepted.record.id, accepted.clock_drift, now, backlog)

    profile = request.app.state.services.settings.profile

    def signed_by(session: Session, token: str) -> AuthenticatedTerminal:
        return authenticate(session, token, profile=profile)

    accepted = await signed_caller(
        request, "terminal", signed_by, seen, inactive="terminal_decommissioned"
    )
    return accepted.record


def _journal_backlog(request: Request) -> int | None:
    """The backlog the terminal reports (idcode.protocol.JOURNAL_BACKLOG_HEADER), or None when
    it sends none (an older runtime, a vendor's own client). Anything but one decimal count in
    range is refused: it would otherwise reach the operators' dashboards."""
    values = request.headers.getlist(JOURNAL_BACKLOG_HEADER)
    if not values:
        return None
    value = values[0].strip()
    if (
        len(values) > 1
        or not (value.isascii() and value.isdigit() and len(value) <= 10)
        or int(value) > MAX_JOURNAL_BACKLOG
    ):
        raise Problem(
            422,
            "invalid_request",
            f"The {JOURNAL_BACKLOG_HEADER} header is not valid.",
            f"one decimal count of events, 0-{MAX_JOURNAL_BACKLOG}",
        )
    return int(value)


# For routes with a body: checked before the body is read (deps.AuthenticatedFirst), once.
TerminalDep = Annotated[TerminalRecord, Depends(caller_check(_terminal))]


@router.post(
    "/terminals",
    operation_id="register_terminal",
    status_code=201,
    response_model=TerminalOut,
    summary="Register a terminal with its scene, site and public key",
    responses=problem_responses(401, 403, 422),
)
async def register_terminal(
    new: NewTerminal, operator: OperatorDep, services: ServicesDep
) -> dict[str, Any]:
    """Register a terminal (operators): its scene, its site and the public key it signs its
    requests with. A terminal registered for a relying party receives that party's subject
    key and linked subjects in its trust bundle."""

    def work() -> dict[str, Any]:
        with services.sessions() as session:
            try:
                record = register(session, new, operator.subject, services.settings.profile)
            except RequestRefused as exc:
                raise Problem(422, exc.reason, str(exc)) from None
            session.commit()
            return _view(record)

    return await run_in_threadpool(work)


@router.get(
    "/terminals",
    operation_id="list_terminals",
    response_model=list[TerminalOut],
    summary="Registered terminals with their last clock drift (operators)",
    responses=problem_responses(401, 403),
)
async def list_terminals(operator: OperatorDep, services: ServicesDep) -> list[dict[str, Any]]:
    """The registered terminals (operators), each with its last clock drift and the time of its
    last request: the fleet as the service sees it."""

    def work() -> list[dict[str, Any]]:
        with services.sessions() as session:
            records = session.scalars(select(TerminalRecord).order_by(TerminalRecord.created_at))
            return [_view(record) for record in records]

    return await run_in_threadpool(work)


@router.post(
    "/terminals/{terminal_id}/decommission",
    operation_id="decommission_terminal",
    response_model=TerminalOut,
    summary="Cut a terminal off at once",
    responses=problem_responses(401, 403, 404),
)
async def decommission_terminal(
    terminal_id: TerminalId, operator: OperatorDep, services: ServicesDep
) -> dict[str, Any]:
    """Cut a terminal off at once (operators): its next request is refused, and it receives no
    trust bundle or status list again. Final: a replacement is registered anew."""

    def work() -> dict[str, Any]:
        with services.sessions() as session:
            try:
                record = decommission(session, terminal_id, operator.subject)
            except RequestRefused as exc:
                raise Problem(404, exc.reason, str(exc)) from None
            session.commit()
            return _view(record)

    return await run_in_threadpool(work)


@router.get(
    "/trust-bundle",
    operation_id="read_trust_bundle",
    # Not JSON: FastAPI would document its default JSON response too.
    response_class=Response,
    summary="The calling terminal's trust bundle (JWS signed by the city root key)",
    responses={
        200: {"content": {"application/jwt": {}}},
        304: {"description": "Unchanged"},
        **problem_responses(401, 403, 503),
    },
)
async def trust_bundle(request: Request) -> Response:
    """The calling terminal's trust bundle, a JWS signed by the city's root key: issuer keys, the
    status list, its scene's data and subject key, revoked devices. Send If-None-Match with
    the last ETag to get 304 when nothing changed."""
    terminal = await _terminal(request)
    services: Services = request.app.state.services
    # RFC 9110 section 13.1.2: weak comparison, and "*" matches any current bundle.
    offered = [
        tag.strip().removeprefix("W/")
        for tag in request.headers.get("if-none-match", "").split(",")
    ]
    etag, token = await run_in_threadpool(_bundle, services, terminal, int(time.time()), offered)
    headers = {"ETag": etag, "Cache-Control": "no-cache"}
    if token is None:
        return Response(status_code=304, headers=headers)
    return Response(token, media_type="application/jwt", headers=headers)


def _bundle(
    services: Services, terminal: TerminalRecord, now: int, offered: list[str]
) -> tuple[str, str | None]:
    """(ETag, the signed bundle) as of now, or (ETag, None) when ``offered`` holds the ETag
    (or "*"): the terminal has this bundle. Read in one transaction, which also notes the
    version the terminal then holds.

    The ETag comes from cheap reads only (versions, sizes, key ids, revoked devices): a
    terminal checking its bundle every 15 minutes does not make the service read the status
    list, the scene data or the linked subjects when nothing changed.

    A relying party's terminal sees that party's pairwise subjects, not its scene's, the
    subjects the party linked (docs/identity.md, multi-code fusion), and the party's id."""
    max_age = services.settings.bundle_max_age_seconds
    keys = services.keys.published(now)
    with services.sessions() as session:
        version, size = status_version_and_size(session)
        revoked_devices = revoked_device_ids(session, now)
        scene_version = scene_data_version(session, terminal.scene, terminal.site)
        party = None
        if terminal.relying_party_id is None:
            subject_key = services.vault.terminal_subject_key(terminal.scene, terminal.site)
        else:
            party = relyingparties.get(session, terminal.relying_party_id)
            subject_key = services.vault.relying_party_subject_key(party.id)
        encoded_subject_key = encode_scene_key(subject_key)
        links_version = 0 if party is None else party.links_version
        # The tag changes with the content, and at least every quarter max-age, so a terminal
        # that keeps getting 304 still receives a fresh (re-dated) bundle long before it is
        # stale. The size stands for the list: its bits change only with its version.
        fingerprint = hashlib.sha256(
            repr(
                (
                    version,
                    size,
                    [key.to_jwk() for key in keys],
                    terminal.scene,
                    terminal.site,
                    scene_version,
                    links_version,
                    # Not only the version: a device leaves the list when its credential expires.
                    revoked_devices,
                    encoded_subject_key,
                    terminal.relying_party_id,
                    max_age,
                    now // max(1, max_age // 4),
                )
            ).encode()
        ).hexdigest()[:32]
        etag = f'"{fingerprint}"'
        contents = None
        if etag not in offered and "*" not in offered:
            status = status_list(session, size)
            record = scene_data(session, terminal.scene, terminal.site)
            data = dict(record.document) if record else {}
            if party is not None:
                data["linked_subjects"] = relyingparties.linked_subjects(session, party.id)
            scene = {
                "scene": terminal.scene,
                "site": terminal.site,
                # Its own version: data replaced since the read above only makes the ETag name
                # an older bundle, so that the next check fetches it again, never a 304.
                "version": record.version if record else 0,
                "data": data,
                "subject_key": encoded_subject_key,
            }
            if party is not None:
                # Tells the terminal its controller is the party's own software, which may
                # learn each decision's subject: the party's pairwise subject (docs/terminal.md).
                scene["relying_party"] = party.id
            contents = (status, scene)
        if terminal.trust_version != version:
            # Written only when it changed: most checks find the terminal already at it.
            record_trust_version(session, terminal.id, version)
            session.commit()
    if contents is None:
        return etag, None
    # Signed once the transaction ended: status changes wait behind its lock (revocation.py).
    status, scene = contents
    return etag, sign_bundle(
        services.keys.root(),
        version=version,
        issued_at=now,
        max_age=max_age,
        keys=keys,
        status=status,
        scene=scene,
        revoked_devices=revoked_devices,
    )


class SceneDataOut(BaseModel):
    scene: str
    site: str
    version: int


@router.put(
    "/scenes/{scene}/{site}",
    operation_id="replace_scene_data",
    response_model=SceneDataOut,
    summary="Replace the scene data the terminals of a scene at a site receive (operators)",
    responses=problem_responses(401, 403, 404, 413, 422),
)
async def replace_scene_data(
    scene: str,
    site: Annotated[str, Path(pattern=r"^[A-Za-z0-9._-]{1,64}$")],
    document: dict[str, Any],
    operator: OperatorDep,
    services: ServicesDep,
) -> dict[str, Any]:
    """Replace the data the terminals of one scene at one site decide with (operators): residents,
    permits, tariffs, rules, as the scene's adapter defines it (docs/scenes). The document
    is validated by the adapter; 'card:<id>' subjects are turned into the scene's
    pseudonymous subjects."""

    def work() -> dict[str, Any]:
        with services.sessions() as session:
            try:
                record = put_scene_data(
                    session, scene, site, document, operator.subject, services.vault
                )
            except RequestRefused as exc:
                status = 404 if exc.reason == "unknown_scene" else 422
                raise Problem(status, exc.reason, "The scene data was refused.", str(exc)) from None
            session.commit()
            return {"scene": record.scene, "site": record.site, "version": record.version}

    return await run_in_threadpool(work)


@router.get(
    "/trust-bundle/status-delta",
    operation_id="read_status_list_delta",
    # Not JSON: FastAPI would document its default JSON response too.
    response_class=Response,
    summary="What changed in the status list since a version (JWS signed by the root key)",
    responses={200: {"content": {"application/jwt": {}}}, **problem_responses(401, 403, 409)},
)
async def status_list_delta(
    request: Request,
    since: Annotated[int, Query(ge=0, le=2**31 - 1, description="The version held.")],
) -> Response:
    """What changed in the status list since the version the terminal holds, signed by the root
    key: cheaper than a whole trust bundle between two. 409 unknown_version when the
    terminal holds a version newer than the service's (a restored database): it fetches the
    bundle."""
    terminal = await _terminal(request)
    services: Services = request.app.state.services

    def work() -> StatusDelta:
        with services.sessions() as session:
            delta = status_delta(session, since, int(time.time()))
            if since > delta.target:
                raise Problem(
                    409,
                    "unknown_version",
                    "The terminal's status version is newer than the service's.",
                    f"Version {since} is newer than the service's {delta.target}; "
                    "fetch the bundle.",
                )
            if terminal.trust_version != delta.target:
                # Written only when it changed: most syncs find the terminal already at it.
                record_trust_version(session, terminal.id, delta.target)
                session.commit()
        return delta

    delta = await run_in_threadpool(work)
    token = sign_delta(services.keys.root(), delta, int(time.time()))
    return Response(token, media_type="application/jwt", headers={"Cache-Control": "no-cache"})


@router.post(
    "/events",
    operation_id="upload_events",
    response_model=EventBatchResult,
    summary="Upload a batch of scan events; each event is stored once",
    responses=problem_responses(401, 403, 413, 422),
)
async def upload_events(
    batch: EventBatch, terminal: TerminalDep, request: Request
) -> dict[str, int]:
    """A terminal uploads the scan events of its journal, in batches. Each event is stored once,
    by terminal and event id: re-sending a batch after a lost answer is safe and counted as
    duplicates."""
    services: Services = request.app.state.services
    try:
        check_events(terminal.scene, batch.events, time.time())
    except RequestRefused as exc:
        # The whole batch is refused; the runtime then splits it to find the event, keeps
        # that one marked refused and uploads the others.
        raise Problem(
            422, exc.reason, "An event cannot come from this terminal.", str(exc)
        ) from None

    def work() -> int:
        for attempt in range(2):
            with services.sessions() as session:
                try:
                    stored = ingest(session, terminal, batch.events)
                    session.commit()
                    return stored
                except IntegrityError:
                    # An overlapping upload committed some of these meanwhile: the retry sees
                    # them as known and stores only the rest.
                    session.rollback()
                    if attempt:
                        raise
        raise AssertionError("unreachable")

    stored = await run_in_threadpool(work)
    unique = len({event.event_id for event in batch.events})
    return {"received": len(batch.events), "stored": stored, "duplicates": unique - stored}


class EventOut(BaseModel):
    terminal_id: str
    event_id: str
    occurred_at: UtcTime
    valid: bool
    reason: str
    scene_result: dict[str, Any]
    subject: str | None


@router.get(
    "/events",
    operation_id="read_events",
    response_model=list[EventOut],
    summary="Read scan events (operators)",
    responses=problem_responses(401, 403, 422),
)
async def read_events(
    operator: OperatorDep,
    services: ServicesDep,
    terminal_id: Annotated[str | None, Query(pattern=TERMINAL_ID_PATTERN)] = None,
    reason: Annotated[str | None, Query(max_length=48, pattern=r"^[a-z0-9_]+$")] = None,
    since: Annotated[
        datetime | None, Query(description="From this time on (without an offset: UTC).")
    ] = None,
    until: Annotated[
        datetime | None, Query(description="Before this time (without an offset: UTC).")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[dict[str, Any]]:
    """Scan events for operators, oldest first, filtered by terminal, reason and time. Times are
    UTC; each event carries the scene's subject, never a card pseudonym or a person."""

    def work() -> list[dict[str, Any]]:
        query = select(ScanEvent).order_by(ScanEvent.occurred_at, ScanEvent.event_id)
        if terminal_id is not None:
            query = query.where(ScanEvent.terminal_id == terminal_id)
        if reason is not None:
            query = query.where(ScanEvent.reason == reason)
        if since is not None:
            query = query.where(ScanEvent.occurred_at >= _filter_time(since))
        if until is not None:
            query = query.where(ScanEvent.occurred_at < _filter_time(until))
        with services.sessions() as session:
            return [
                {
                    "terminal_id": e.terminal_id,
                    "event_id": e.event_id,
                    "occurred_at": as_utc(e.occurred_at),
                    "valid": e.valid,
                    "reason": e.reason,
                    "scene_result": e.scene_result,
                    "subject": e.subject,
                }
                for e in session.scalars(query.limit(limit))
            ]

    return await run_in_threadpool(work)


def _filter_time(at: datetime) -> datetime:
    """A filter time in UTC, as events are stored. One outside years 1-9999 in UTC (year 1 at
    +14:00, say) becomes the nearest end of that range, which selects the same events."""
    try:
        return as_utc(at)
    except OverflowError:
        end = datetime.min if at.year == 1 else datetime.max
        return end.replace(tzinfo=UTC)


@router.delete(
    "/events/{terminal_id}/{event_id}",
    operation_id="delete_event",
    status_code=204,
    summary="Remove one stored event, with an audit record of what it was (operators)",
    responses=problem_responses(401, 403, 404, 422),
)
async def remove_event(
    terminal_id: TerminalId,
    event_id: Annotated[
        str, Path(pattern=EVENT_ID_PATTERN, description="The event id the terminal gave it.")
    ],
    operator: OperatorDep,
    services: ServicesDep,
) -> Response:
    """Remove one stored event (operators), one that must not stay in the record or in a
    settlement. An audit record keeps what it was; 404 event_not_found when there is none."""

    def work() -> None:
        with services.sessions() as session:
            try:
                delete_event(session, terminal_id, event_id, operator.subject)
            except RequestRefused as exc:
                raise Problem(404, exc.reason, "No such event.", str(exc)) from None
            session.commit()

    await run_in_threadpool(work)
    return Response(status_code=204)
