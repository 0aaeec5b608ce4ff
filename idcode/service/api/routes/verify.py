"""Online verification for connected terminals and partner platforms: ``POST /v1/verify``.

The same verifier as offline terminals, with the live card status (and a device code's live
device) instead of a status list and replay detection in the shared state, so a code accepted
by one replica is refused as ``replayed`` by every other.
"""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field
from sqlalchemy import select

from idcode.codetext import MAX_CODE_LENGTH
from idcode.reasons import Reason
from idcode.service import metrics
from idcode.service.api.deps import AuthenticatedFirst, Services, ServicesDep, VerifierDep
from idcode.service.api.problems import problem_responses
from idcode.service.models import CardRecord, CardStatus, DeviceRecord
from idcode.verifier import Verdict, verify

router = APIRouter(prefix="/v1", tags=["verification"], route_class=AuthenticatedFirst)


class CodeToVerify(BaseModel):
    code: str = Field(max_length=MAX_CODE_LENGTH * 2)


class VerdictOut(BaseModel):
    valid: bool
    reason: Reason
    kid: str | None = None
    claims: dict[str, Any] | None = None
    device: str | None = Field(default=None, description="A device code's device id (hex).")
    detail: str | None = None


def _card_status(services: Services, status_index: int, device: bytes | None) -> str | None:
    """The card's status, or ``device removed`` when the code's device was removed (a device
    code: terminals learn of that at their next sync, online verification at once)."""
    with services.sessions() as session:
        if (
            device is not None
            and session.scalars(
                select(DeviceRecord.id).where(
                    DeviceRecord.device_id == device, DeviceRecord.removed_at.is_(None)
                )
            ).first()
            is None
        ):
            return "device removed"
        return session.scalars(
            select(CardRecord.status).where(CardRecord.status_index == status_index)
        ).first()


@router.post(
    "/verify",
    operation_id="verify_online",
    summary="Verify a code online (live card status, replay across replicas)",
    response_model=VerdictOut,
    responses=problem_responses(401, 403, 422),
)
async def verify_online(
    request: CodeToVerify, caller: VerifierDep, services: ServicesDep
) -> dict[str, Any]:
    """Verify a code as a connected terminal or partner platform: the same checks as an offline
    terminal, with the card's live status (and a device code's live device) and replay
    detection shared by every replica. The answer is the verdict idcode verify prints; its
    reason is one of the closed Reason set."""
    now = int(time.time())
    settings = services.settings
    verdict = verify(request.code, services.online_trust(now), now)
    if verdict.valid and verdict.claims is not None:
        claims = verdict.claims
        status = await run_in_threadpool(
            _card_status, services, claims.card.status_index, verdict.device
        )
        if status == "device removed":
            verdict = Verdict(Reason.REVOKED, claims, verdict.kid, status, device=verdict.device)
        elif status != CardStatus.ACTIVE.value:
            verdict = Verdict(
                Reason.REVOKED,
                claims,
                verdict.kid,
                f"card is {status or 'unknown'}",
                device=verdict.device,
            )
        elif await services.state.seen_before(
            claims.code_id,
            claims.expires_at + settings.clock_skew_seconds,
            now,
            # Online verification exists for its replay check across replicas: never answer
            # it from one process's memory (503 state_unavailable while Redis is down).
            shared_only=True,
        ):
            verdict = Verdict(Reason.REPLAYED, claims, verdict.kid, device=verdict.device)
    metrics.count_verification(verdict.reason.value)
    return verdict.to_json()
