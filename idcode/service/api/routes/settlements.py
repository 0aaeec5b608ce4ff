"""A site's daily settlement file (a bus operator's clearing, a merchant's discounts)."""

from __future__ import annotations

import time
from datetime import date
from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query, Response
from fastapi.concurrency import run_in_threadpool

from idcode.errors import RequestRefused
from idcode.scenes import SITE_PATTERN
from idcode.service.api.deps import OperatorDep, ServicesDep
from idcode.service.api.problems import Problem, problem_responses
from idcode.service.settlements import FORMATS, settle

router = APIRouter(prefix="/v1", tags=["settlements"])

_STATUS = {
    "unknown_scene": 404,
    "no_settlement": 404,
    "no_scene_data": 404,
    "events_purged": 410,
}


@router.get(
    "/settlements/{scene}/{site}/{day}",
    operation_id="read_settlement",
    # Not JSON: FastAPI would document its default JSON response too.
    response_class=Response,
    summary="One site's settlement of one local day, from its terminals' events (operators)",
    description=(
        "A row per subject (the site's own pseudonym: nothing personal) with the columns of "
        "the scene's settlement, then the day's totals. `final` (the JSON Lines file's last "
        "record, and the `Idcode-Final` header) says no terminal can upload an event of that "
        "day any more. Scenes with a settlement: transport (a bus operator's clearing file), "
        "merchant (the discounts a shop granted). docs/api.md, Settlements."
    ),
    responses={
        200: {"content": {"application/jsonl": {}, "text/csv": {}}},
        **problem_responses(401, 403, 404, 410, 422),
    },
)
async def settlement(
    scene: Annotated[str, Path(pattern=r"^[a-z][a-z0-9_]{0,31}$")],
    site: Annotated[str, Path(pattern=SITE_PATTERN)],
    day: Annotated[date, Path(description="The local day (scene data's UTC offset), YYYY-MM-DD.")],
    operator: OperatorDep,
    services: ServicesDep,
    format: Annotated[
        Literal["jsonl", "csv"], Query(description="JSON Lines (default) or CSV (RFC 4180).")
    ] = "jsonl",
) -> Response:
    """One site's settlement of one local day, computed from its terminals' events by the scene's
    adapter: a row per subject and the totals, as JSON Lines (default) or CSV. Idcode-Final
    says whether the day can still change (late uploads)."""

    def work() -> Response:
        with services.sessions() as session:
            try:
                done = settle(session, scene, site, day, time.time())
            except RequestRefused as exc:
                status = _STATUS.get(exc.reason, 422)
                raise Problem(status, exc.reason, "No settlement.", str(exc)) from None
        body = done.csv() if format == "csv" else done.jsonl()
        headers = {
            "Content-Disposition": f'attachment; filename="{done.filename(format)}"',
            "Idcode-Final": "true" if done.final else "false",
            "Cache-Control": "no-store",
        }
        return Response(body, media_type=FORMATS[format], headers=headers)

    return await run_in_threadpool(work)
