"""The FastAPI application: ``create_app(settings)`` wires storage, state, keys and routes."""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI
from sqlalchemy.exc import OperationalError, ProgrammingError

from idcode import __version__
from idcode.keystore import SigningKeyCache, configured_key_store, initialise
from idcode.service import metrics as service_metrics
from idcode.service.api import accesslog, examples, problems, requestlog
from idcode.service.api.deps import BEARER_SCHEME, Services
from idcode.service.api.routes import (
    apidocs,
    cards,
    codes,
    devices,
    devidp,
    health,
    identity,
    metrics,
    passes,
    settlements,
    terminals,
    verify,
    wallet,
)
from idcode.service.auth import token_verifier
from idcode.service.console import pages as console
from idcode.service.database import make_engine, make_session_factory
from idcode.service.devidp import DevIdentityProvider
from idcode.service.partycache import PartyCache
from idcode.service.pii import vault_for
from idcode.service.profilerecord import check_recorded_profile
from idcode.service.recorder import IdentificationRecorder
from idcode.service.settings import Settings, get_settings
from idcode.service.state import make_state

log = logging.getLogger("idcode.service.api")

DESCRIPTION = """
The idcode issuance service: citizens get short-lived signed codes (`POST /v1/codes`),
operators enrol and manage cards, connected terminals verify online. Errors are
`application/problem+json` (RFC 9457) with a machine-readable `reason`.
"""


def build_services(settings: Settings) -> Services:
    """Everything the routes need; fails early and clearly on bad configuration."""
    store = configured_key_store(settings)
    profile = settings.profile
    profile.check_available()
    if settings.development:
        for created in initialise(
            store,
            _now(),
            settings.issuer_key_days,
            profile.issuer_algorithm,
            profile.root_algorithm,
        ):
            log.info("created development %s in %s", created, store.location)
    # Read the keys now, not at the first request: a key store others could have written to,
    # or whose manifest does not verify with the root key, stops the service here; so does
    # a key that signs (now or later) with an algorithm outside the crypto profile.
    keys = SigningKeyCache(store)
    keys.load(_now())
    profile.check_issuer_keys(keys.published(_now()), _now())
    if store.has_root_key():  # a root key of the other profile signs bundles nobody accepts
        profile.check_root_key(store.root_public_jwk(), store.location)
    vault = vault_for(settings)
    engine = make_engine(settings.sqlalchemy_url)
    # The database's lookup hashes, ciphertexts and subject keys are of one profile: another
    # stops the service here. A database not reachable (or not migrated) yet does not: the
    # service starts and reports not ready, as before (routes/health.py).
    try:
        check_recorded_profile(engine, profile)
    except (OperationalError, ProgrammingError) as exc:
        log.warning("crypto profile not checked against the database: %s", type(exc).__name__)
    except BaseException:
        engine.dispose()
        raise
    sessions = make_session_factory(engine)
    return Services(
        settings=settings,
        engine=engine,
        sessions=sessions,
        state=make_state(settings.redis_url, settings.redis_prefix),
        keys=keys,
        tokens=token_verifier(settings),
        vault=vault,
        code_prefix=settings.code_prefix,
        parties=PartyCache(sessions),
        recorder=IdentificationRecorder(engine, vault),
    )


def _now() -> int:
    return int(time.time())


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        services = build_services(settings)
        app.state.services = services
        if settings.dev_idp_serves_wallet:
            app.state.dev_idp = DevIdentityProvider(settings)
        log.info(
            "idcode %s serving: %s, %s state, prefix %s",
            __version__,
            services.engine.dialect.name,
            services.state.kind,
            settings.code_prefix,
        )
        # Everything loaded so far (modules, routes, schemas: ~150,000 objects) lives as long
        # as the process: move it out of the collector's sight. Otherwise every full
        # collection walks it, 85-100 ms with requests stalled (bench/README.md, soak.py:
        # p99 51-80 ms before, 5-8 ms after, at 70 % of the maximum rate).
        gc.collect()
        gc.freeze()
        services.recorder.start()
        flushing = asyncio.create_task(services.issued.flush_every(services.state))
        try:
            yield
        finally:
            flushing.cancel()
            await services.issued.flush(services.state)  # what this process counted last
            # Before the engine goes: it records what is pending, with the engine.
            await asyncio.to_thread(services.recorder.stop)
            await services.state.close()
            services.engine.dispose()
            gc.unfreeze()  # a process that goes on (tests, an embedding app) collects again

    app = FastAPI(
        title="idcode",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        # Served by apidocs from the package: FastAPI's own pages load from a CDN.
        docs_url=None,
        redoc_url=None,
    )
    problems.install(app)
    service_metrics.initialise(settings.code_prefix)
    # Outermost: every request, refused ones included, has its id and its access line, and
    # every answer is timed and counted, the 413s and 500s too.
    app.add_middleware(requestlog.RequestLog, observe=service_metrics.RequestMetrics())
    accesslog.install()
    app.include_router(health.router)
    app.include_router(codes.router)
    app.include_router(passes.router)
    app.include_router(cards.router)
    app.include_router(verify.router)
    app.include_router(terminals.router)
    app.include_router(identity.router)
    app.include_router(devices.router)
    app.include_router(settlements.router)
    app.include_router(metrics.router)
    app.state.wallet_files = wallet.load_wallet_files()
    app.include_router(wallet.router)
    if settings.dev_idp_serves_wallet:
        app.include_router(devidp.router)
    app.include_router(console.router)  # the operator console, /console/ (docs/console.md)
    apidocs.install(app)
    _complete_openapi(app)
    return app


def _complete_openapi(app: FastAPI) -> None:
    """Add to the OpenAPI document what the routes' own declarations cannot say: the bearer
    scheme, the problems every route shares and the examples (examples.py)."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = build()
            _declare_bearer_auth(schema)
            _declare_problems(schema)
            examples.add_examples(schema)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def _declare_bearer_auth(schema: dict[str, Any]) -> None:
    """Every /v1 route takes an ID token as a bearer token (deps.py reads it itself instead of
    through fastapi.security)."""
    schema.setdefault("components", {}).setdefault("securitySchemes", {})[BEARER_SCHEME] = {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT",
        "description": "An OIDC ID token from the city's identity provider.",
    }
    for path, operations in schema["paths"].items():
        if path.startswith("/v1/"):
            for operation in operations.values():
                operation["security"] = [{BEARER_SCHEME: []}]


UNAVAILABLE = (
    "A dependency cannot be reached now (database_unavailable, state_unavailable, "
    "idp_unavailable, no_signing_key); Retry-After says when to try again."
)


def _declare_problems(schema: dict[str, Any]) -> None:
    """Document errors as the service sends them: every one as application/problem+json with
    the ProblemBody schema (problems.install), FastAPI's own 422 too, which it would document
    as application/json; and wherever a route takes a body, 400 for one FastAPI cannot read
    (not UTF-8), 413 for one over the route's limit (problems.BodyLimit) and 415 for one of
    another media type (mediatypes.py)."""
    schemas = schema.setdefault("components", {}).setdefault("schemas", {})
    schemas.setdefault("ProblemBody", problems.ProblemBody.model_json_schema())
    # FastAPI's validation error models, which no response of this service has.
    schemas.pop("HTTPValidationError", None)
    schemas.pop("ValidationError", None)
    fastapi_422 = {"$ref": "#/components/schemas/HTTPValidationError"}
    problem = {problems.PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/ProblemBody"}}}
    for path, operations in schema["paths"].items():
        for operation in operations.values():
            responses: dict[str, Any] = operation["responses"]
            if "requestBody" in operation:
                for status in (
                    HTTPStatus.BAD_REQUEST,
                    HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                    HTTPStatus.UNSUPPORTED_MEDIA_TYPE,  # mediatypes.py, or the route's own types
                ):
                    responses.setdefault(str(status.value), {"description": status.phrase})
            if path.startswith("/v1/"):
                # Any /v1 route may find the database, the shared state, the identity
                # provider or the signing key away (docs/data.md, "When ... is down").
                responses.setdefault("503", {"description": UNAVAILABLE})
            for code, response in responses.items():
                content = response.get("content", {})
                if (
                    problems.PROBLEM_JSON in content
                    or content.get("application/json", {}).get("schema") == fastapi_422
                    or (code[0] in "45" and not content)
                ):
                    response["content"] = problem
