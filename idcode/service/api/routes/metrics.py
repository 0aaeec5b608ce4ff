"""``GET /metrics``: the service's Prometheus metrics (idcode.service.metrics).

On the service's own port, as Prometheus expects; a city scrapes it from its internal network.
The service's port also faces citizens (through the city's gateway), so the gateway must not
route /metrics, and ``IDCODE_METRICS_TOKEN`` makes the service itself ask for a bearer token
(Prometheus: ``authorization.credentials_file``). Left out of the OpenAPI document: it is for
Prometheus, not for API clients (docs/operations.md).
"""

from __future__ import annotations

import hmac

from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool

from idcode.service import metrics
from idcode.service.api.deps import Services, bearer_token
from idcode.service.api.problems import Problem

router = APIRouter(tags=["operations"])


@router.get("/metrics", include_in_schema=False)
async def prometheus_metrics(request: Request) -> Response:
    services: Services = request.app.state.services
    settings = services.settings
    if settings.metrics_token is not None:
        token = bearer_token(request)
        challenge = {"WWW-Authenticate": "Bearer"}
        if token is None:
            raise Problem(401, "missing_token", "A metrics token is required.", headers=challenge)
        expected = settings.metrics_token.get_secret_value().encode()
        if not hmac.compare_digest(token.encode(), expected):
            raise Problem(401, "invalid_token", "The metrics token was refused.", headers=challenge)
    fleet = metrics.FleetCollector(services.sessions, settings.metrics_terminal_series)
    body = await run_in_threadpool(metrics.exposition, fleet)
    return Response(body, media_type=metrics.CONTENT_TYPE, headers={"Cache-Control": "no-store"})
