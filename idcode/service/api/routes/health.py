"""Liveness, readiness and the published issuer keys."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from idcode.errors import KeyStoreError
from idcode.keys import jwks
from idcode.service.api.deps import ServicesDep
from idcode.service.api.problems import problem_responses
from idcode.service.database import schema_revision

router = APIRouter(tags=["health"])


@router.get("/healthz", operation_id="check_liveness", summary="The process is alive")
async def healthz() -> dict[str, str]:
    """Answers as long as the process runs, whatever its dependencies: for a liveness probe, which
    restarts a process that stops answering. Readiness is GET /readyz."""
    return {"status": "ok"}


@router.get(
    "/readyz",
    operation_id="check_readiness",
    summary="Ready to serve: the database, schema and signing key (Redis down: 'degraded')",
    responses={
        200: {"description": "Ready, or degraded (Redis down: per-process state)"},
        503: {"description": "A dependency is down", "content": {"application/json": {}}},
    },
)
async def readyz(services: ServicesDep) -> JSONResponse:
    """For a load balancer or readiness probe: 200 while this replica can issue (the database
    answers with the current schema and an issuer key may sign), also while Redis is down
    ("degraded": per-process state, docs/data.md); 503 naming the check that failed
    otherwise."""
    checks: dict[str, str] = {}
    try:
        current, head = await run_in_threadpool(schema_revision, services.engine)
        checks["database"] = (
            "ok"
            if current == head
            else f"schema at {current}, needs {head}: run 'idcode db upgrade'"
        )
    except Exception as exc:  # any failure means not ready; the reason is the type only
        checks["database"] = f"unreachable ({type(exc).__name__})"
    try:
        services.keys.signer(int(time.time()))
        checks["signing_key"] = "ok"
    except KeyStoreError:
        checks["signing_key"] = "none may sign now: run 'idcode keys rotate --starts-in 0'"
    degraded = False
    if services.state.kind == "redis":
        try:
            await services.state.ping()
            checks["redis"] = "ok"
        except Exception as exc:
            # Not a reason to take this replica out of service: every replica sees the same
            # Redis, and issuance goes on without it (docs/data.md, "When Redis is down").
            degraded = True
            checks["redis"] = (
                f"unreachable ({type(exc).__name__}): degraded to per-process rate limits and "
                "replay memory, no card cache; online verification answers 503"
            )
    else:
        checks["redis"] = "not configured (in-process state, single replica)"
    ready = all(value == "ok" for name, value in checks.items() if name != "redis")
    status = "not ready" if not ready else "degraded" if degraded else "ready"
    return JSONResponse({"status": status, "checks": checks}, status_code=200 if ready else 503)


@router.get(
    "/.well-known/jwks.json",
    operation_id="read_issuer_keys",
    summary="Issuer public keys (JWK Set) that verify codes",
    responses=problem_responses(503),
)
async def jwks_document(services: ServicesDep) -> JSONResponse:
    """The issuer's public keys as a JWK Set, for verifiers that check codes with the issuer keys
    alone (no trust bundle): a code's kid names one of them. Cached for five minutes."""
    document: dict[str, Any] = jwks(services.keys.published(int(time.time())))
    return JSONResponse(document, headers={"Cache-Control": "public, max-age=300"})
