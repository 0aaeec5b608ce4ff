"""Residents invite guests: ``POST /v1/visitor-passes`` issues a signed visitor pass for one
community and a time window (idcode.visitorpass), which its gates verify offline."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Response
from fastapi.concurrency import run_in_threadpool
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from idcode.scenes import subject_of
from idcode.service import metrics
from idcode.service.api.deps import AuthenticatedFirst, CitizenDep, ServicesDep
from idcode.service.api.problems import Problem, problem_responses
from idcode.service.api.routes.codes import NO_CARD
from idcode.service.api.times import UtcTime
from idcode.service.cards import find_by_id_hash, record_audit
from idcode.service.models import CardStatus
from idcode.service.scenedata import scene_data
from idcode.visitorpass import COMMUNITY_PATTERN, issue_pass, window_problem

router = APIRouter(prefix="/v1", tags=["citizens"], route_class=AuthenticatedFirst)

SCENE = "community"


class PassRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    community: Annotated[str, Field(pattern=f"^{COMMUNITY_PATTERN.pattern}$")] = Field(
        description="The community's site, as its gates are registered."
    )
    valid_from: AwareDatetime | None = Field(
        default=None, description="When the pass starts (default: now)."
    )
    valid_until: AwareDatetime = Field(
        description="When it ends: at most 7 days after it starts, which is at most 30 days ahead."
    )


class IssuedPass(BaseModel):
    pass_text: str = Field(alias="pass", description="The pass text, for a QR code (WH1P:...).")
    community: str
    valid_from: UtcTime
    valid_until: UtcTime


@router.post(
    "/visitor-passes",
    operation_id="issue_visitor_pass",
    summary="Issue a visitor pass for a guest of the caller, at the caller's community",
    response_model=IssuedPass,
    responses=problem_responses(401, 403, 404, 422, 429, 503),
)
async def issue_visitor_pass(
    request: PassRequest, citizen: CitizenDep, services: ServicesDep, response: Response
) -> dict[str, Any]:
    """A resident issues a signed pass that lets a guest through the gates of the resident's own
    community within a window (at most 7 days, starting within 30). The pass names no
    person; the gate checks that its host is still a resident."""
    response.headers["Cache-Control"] = "no-store"
    now = int(time.time())
    valid_from = now if request.valid_from is None else int(request.valid_from.timestamp())
    valid_until = int(request.valid_until.timestamp())
    problem = window_problem(valid_from, valid_until, now)
    if problem is not None:
        raise Problem(422, problem.reason, "The pass window is not allowed.", str(problem))
    assert citizen.id_number is not None
    id_hash = services.vault.citizen_key(citizen.id_number)
    if id_hash is None:  # enrolment refuses such a number, so no card can have it
        raise Problem(404, "card_not_found", NO_CARD)
    _, wait = await services.state.admit(id_hash, services.settings.rate_limit_per_minute, now)
    if wait is not None:
        raise Problem(
            429,
            "rate_limited",
            "Too many requests; wait a moment.",
            headers={"Retry-After": str(wait)},
        )

    def work() -> str:
        with services.sessions() as session:
            # The card as it is now, not a cached snapshot: a pass lives for days and cannot
            # be revoked offline, so a card suspended a moment ago must not issue one.
            card = find_by_id_hash(session, id_hash)
            if card is None:
                raise Problem(404, "card_not_found", NO_CARD)
            if card.status != CardStatus.ACTIVE.value:
                raise Problem(
                    403, f"card_{card.status}", f"The card is {card.status}; no pass can be issued."
                )
            community = scene_data(session, SCENE, request.community)
            if community is None:
                raise Problem(404, "unknown_community", "No community has this site.")
            vault = services.vault
            host = subject_of(
                vault.scene_subject_key(SCENE), card.pseudonym, vault.profile.hash_name
            )
            residents = community.document.get("residents")
            if not isinstance(residents, list) or host not in residents:
                raise Problem(
                    403, "not_resident", "Only a resident of the community can invite guests."
                )
            if community.document.get("visitors", True) is not True:
                raise Problem(
                    403, "visitors_not_accepted", "This community does not admit visitor passes."
                )
            text, _ = issue_pass(
                services.keys.signer(now),
                code_prefix=services.code_prefix,
                community=request.community,
                host=bytes.fromhex(host),
                valid_from=valid_from,
                valid_until=valid_until,
                now=now,
            )
            # Who invited whom is nobody's business: the card and the community, not the
            # pass (its id would link the gates' journal to the host) nor the window.
            record_audit(
                session, "citizen", "pass.issue", card.id, {"community": request.community}
            )
            session.commit()
            return text

    text = await run_in_threadpool(work)
    metrics.count_code("visitor_pass", services.code_prefix)
    return {
        "pass": text,
        "community": request.community,
        "valid_from": datetime.fromtimestamp(valid_from, UTC),
        "valid_until": datetime.fromtimestamp(valid_until, UTC),
    }
