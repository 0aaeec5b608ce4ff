"""Dependencies as types: routes declare the session, the caller and its role they need."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Annotated, Any, Protocol, TypeVar

from fastapi import Depends, Request, Response
from fastapi.concurrency import run_in_threadpool
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from idcode.errors import AuthError, Refusal
from idcode.keystore import SigningKeyCache
from idcode.protocol import MAX_CLOCK_DRIFT
from idcode.service.api.mediatypes import JsonBodyRoute
from idcode.service.api.problems import Problem
from idcode.service.auth import Principal, TokenVerifier
from idcode.service.issuedtally import IssuedTally
from idcode.service.partycache import PartyCache
from idcode.service.pii import PersonalDataVault
from idcode.service.recorder import IdentificationRecorder
from idcode.service.settings import Settings
from idcode.service.state import SharedState
from idcode.terminaltoken import MAX_TOKEN_LIFETIME
from idcode.verifier import Trust


@dataclass
class Services:
    """Everything a request may use, built once when the application starts."""

    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    state: SharedState
    keys: SigningKeyCache
    tokens: TokenVerifier
    vault: PersonalDataVault
    code_prefix: str  # settings.code_prefix, computed once
    parties: PartyCache  # relying parties, read at most once a second (partycache.py)
    recorder: IdentificationRecorder  # group commit of identifications (recorder.py)
    issued: IssuedTally = field(default_factory=IssuedTally)  # codes issued (issuedtally.py)

    def online_trust(self, now: int) -> Trust:
        """What online verification (``/v1/verify``, ``/v1/identify``) trusts at ``now``: the
        published issuer keys, the deployment's prefix, every code algorithm of its crypto
        profile (EdDSA and ES256, or SM2), the skew setting."""
        return Trust.of(
            self.keys.published(now),
            prefix=self.code_prefix,
            algorithms=self.settings.profile.code_algorithms,
            clock_skew=self.settings.clock_skew_seconds,
        )


async def get_services(request: Request) -> Services:  # async: no thread hop per request
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]

# The bearer scheme is parsed here rather than by fastapi.security.HTTPBearer: one
# dependency level less on the issuance path. app.py declares the scheme in OpenAPI.
BEARER_SCHEME = "bearerAuth"


def bearer_token(request: Request) -> str | None:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


async def authenticate(request: Request) -> Principal:
    """The caller's verified identity, or a 401 problem. A plain function rather than a
    dependency of the role checks below: every nesting level costs on the issuance path."""
    token = bearer_token(request)
    if token is None:
        raise Problem(
            401,
            "missing_token",
            "An ID token is required.",
            headers={"WWW-Authenticate": "Bearer"},
        )
    tokens: TokenVerifier = request.app.state.services.tokens
    try:
        if tokens.needs_network:
            principal: Principal = await run_in_threadpool(tokens.verify, token)
            return principal
        return tokens.verify(token)
    except AuthError as exc:
        if exc.reason == "idp_unavailable":
            raise Problem(
                503,
                exc.reason,
                "The identity provider cannot be reached; try again shortly.",
                headers={"Retry-After": "10"},
            ) from None
        raise Problem(
            401,
            exc.reason,
            "The ID token was refused.",
            str(exc),
            headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
        ) from None


Caller = TypeVar("Caller")
# The dependencies that say who the caller is. AuthenticatedFirst runs them before FastAPI
# reads a request's body; each runs once per request (caller_check).
CALLER_CHECKS: set[Callable[[Request], Awaitable[Any]]] = set()


def caller_check(
    check: Callable[[Request], Awaitable[Caller]],
) -> Callable[[Request], Awaitable[Caller]]:
    """Make ``check`` a caller check: run at most once per request, whether first by
    AuthenticatedFirst or by FastAPI as a dependency (a terminal token is spent when checked)."""

    async def once(request: Request) -> Caller:
        done: dict[object, Any] = request.scope.setdefault("idcode.callers", {})
        if check not in done:
            done[check] = await check(request)
        result: Caller = done[check]
        return result

    once.__name__ = once.__qualname__ = check.__name__
    once.__doc__ = check.__doc__
    CALLER_CHECKS.add(once)
    return once


class AuthenticatedFirst(JsonBodyRoute):
    """A route that checks its caller before FastAPI reads and parses the request's body.

    FastAPI reads the body and parses its JSON before it solves any dependency, so without
    this a request with no token or a bad one cost a 1 MiB parse before its 401, and a
    broken body got 422, telling a stranger about the route. Here the route's caller checks
    (CALLER_CHECKS among its dependencies) run first; the body of a refused request is never
    read (the HTTP protocol drains and discards it, for a bounded time). A body that is not
    JSON is refused next, 415 (mediatypes.py).
    """

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        checks = [d.call for d in self.dependant.dependencies if d.call in CALLER_CHECKS]
        if not checks:
            return handler

        async def checked_handler(request: Request) -> Response:
            for check in checks:
                await check(request)
            return await handler(request)

        return checked_handler


@caller_check
async def get_citizen(request: Request) -> Principal:
    principal = await authenticate(request)
    if principal.id_number is None:
        raise Problem(403, "not_a_citizen", "This token does not identify a citizen.")
    return principal


@caller_check
async def get_operator(request: Request) -> Principal:
    principal = await authenticate(request)
    if request.app.state.services.settings.operator_role not in principal.roles:
        raise Problem(403, "forbidden", "This needs the operator role.")
    return principal


@caller_check
async def get_verifier(request: Request) -> Principal:
    principal = await authenticate(request)
    settings = request.app.state.services.settings
    if not principal.roles & {settings.operator_role, settings.verifier_role}:
        raise Problem(403, "forbidden", "This needs the verifier or operator role.")
    return principal


@caller_check
async def get_citizen_or_operator(request: Request) -> Principal:
    principal = await authenticate(request)
    operator = request.app.state.services.settings.operator_role in principal.roles
    if principal.id_number is None and not operator:
        raise Problem(403, "forbidden", "This needs a citizen's token or the operator role.")
    return principal


def is_operator(request: Request, principal: Principal) -> bool:
    return request.app.state.services.settings.operator_role in principal.roles


async def spend_request_token(services: Services, kind: str, party_id: str, jti: str) -> None:
    """Record a terminal's or relying party's request token as used, or a 401 problem if it
    was used before: a captured token cannot be replayed (on any replica)."""
    now = int(time.time())
    if await services.state.seen_before(
        hashlib.sha256(f"{kind}-jti:{party_id}:{jti}".encode()).digest(),
        now + 2 * MAX_CLOCK_DRIFT + MAX_TOKEN_LIFETIME + 60,  # past any time it could pass
        now,
    ):
        raise Problem(401, "token_replayed", f"This {kind} token was used before.")


class SignedCaller(Protocol):
    """A terminal or relying party whose request token passed every check but its single use."""

    @property
    def record(self) -> Any: ...  # its database record, with an ``id``

    @property
    def jti(self) -> str: ...


Signed = TypeVar("Signed", bound=SignedCaller)


async def signed_caller(
    request: Request,
    kind: str,
    authenticate: Callable[[Session, str], Signed],
    seen: Callable[[Session, Signed, float], None],
    *,
    inactive: str,
) -> Signed:
    """The terminal or relying party (``kind``) that signed this request, or a 401/403
    problem (403 for the ``inactive`` reason).

    In this order: every check of the token (signature, times, still active), then its single
    use, and only then ``seen`` (last-seen time, clock drift): a replayed or otherwise refused
    token changes nothing operators read about the caller."""
    services: Services = request.app.state.services
    token = bearer_token(request)
    if token is None:
        raise Problem(
            401,
            "missing_token",
            f"A {kind} token is required.",
            headers={"WWW-Authenticate": "Bearer"},
        )

    def check() -> Signed:
        with services.sessions() as session:
            try:
                return authenticate(session, token)
            except Refusal as exc:
                status = 403 if exc.reason == inactive else 401
                raise Problem(
                    status, exc.reason, f"The {kind} token was refused.", str(exc)
                ) from None

    accepted = await run_in_threadpool(check)
    await spend_request_token(services, kind, accepted.record.id, accepted.jti)
    now = time.time()

    def record_seen() -> None:
        with services.sessions() as session:
            seen(session, accepted, now)
            session.commit()

    await run_in_threadpool(record_seen)
    return accepted


CitizenDep = Annotated[Principal, Depends(get_citizen)]
CitizenOrOperatorDep = Annotated[Principal, Depends(get_citizen_or_operator)]
OperatorDep = Annotated[Principal, Depends(get_operator)]
VerifierDep = Annotated[Principal, Depends(get_verifier)]
