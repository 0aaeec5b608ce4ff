"""Dependencies as types: routes declare the session, the caller and its role they need."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from fastapi.concurrency import run_in_threadpool
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from idcode.api.problems import Problem
from idcode.auth import AuthError, Principal, TokenVerifier
from idcode.keystore import SigningKeyCache
from idcode.pii import PersonalDataVault
from idcode.settings import Settings
from idcode.state import SharedState


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


async def get_citizen(request: Request) -> Principal:
    principal = await authenticate(request)
    if principal.id_number is None:
        raise Problem(403, "not_a_citizen", "This token does not identify a citizen.")
    return principal


async def get_operator(request: Request) -> Principal:
    principal = await authenticate(request)
    if request.app.state.services.settings.operator_role not in principal.roles:
        raise Problem(403, "forbidden", "This needs the operator role.")
    return principal


async def get_verifier(request: Request) -> Principal:
    principal = await authenticate(request)
    settings = request.app.state.services.settings
    if not principal.roles & {settings.operator_role, settings.verifier_role}:
        raise Problem(403, "forbidden", "This needs the verifier or operator role.")
    return principal


CitizenDep = Annotated[Principal, Depends(get_citizen)]
OperatorDep = Annotated[Principal, Depends(get_operator)]
VerifierDep = Annotated[Principal, Depends(get_verifier)]
