"""Dependencies as types: routes declare the session, the caller and its role they need."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
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


def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]


def get_session(services: ServicesDep) -> Iterator[Session]:
    with services.sessions() as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session)]

_bearer = HTTPBearer(auto_error=False, description="An OIDC ID token from the city's IdP.")


async def get_principal(
    services: ServicesDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise Problem(
            401,
            "missing_token",
            "An ID token is required.",
            headers={"WWW-Authenticate": "Bearer"},
        )
    try:
        if services.tokens.needs_network:
            return await run_in_threadpool(services.tokens.verify, credentials.credentials)
        return services.tokens.verify(credentials.credentials)
    except AuthError as exc:
        raise Problem(
            401,
            exc.reason,
            "The ID token was refused.",
            str(exc),
            headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
        ) from None


PrincipalDep = Annotated[Principal, Depends(get_principal)]


async def get_citizen(principal: PrincipalDep) -> Principal:
    if principal.id_number is None:
        raise Problem(403, "not_a_citizen", "This token does not identify a citizen.")
    return principal


async def get_operator(principal: PrincipalDep, services: ServicesDep) -> Principal:
    if services.settings.operator_role not in principal.roles:
        raise Problem(403, "forbidden", "This needs the operator role.")
    return principal


async def get_verifier(principal: PrincipalDep, services: ServicesDep) -> Principal:
    settings = services.settings
    if not principal.roles & {settings.operator_role, settings.verifier_role}:
        raise Problem(403, "forbidden", "This needs the verifier or operator role.")
    return principal


CitizenDep = Annotated[Principal, Depends(get_citizen)]
OperatorDep = Annotated[Principal, Depends(get_operator)]
VerifierDep = Annotated[Principal, Depends(get_verifier)]
