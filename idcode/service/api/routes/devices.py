"""Citizens' devices for offline device codes: register a device key and get its credential
(``POST /v1/devices``), renew it with a token the device signs, list and remove devices.

See docs/devices.md for the model and docs/api.md for each route's answers.
"""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import APIRouter, Path, Request, Response
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field
from sqlalchemy import select

from idcode import b64url
from idcode.devicecode import DEVICE_CODE_LIFETIME, device_prefix
from idcode.errors import Refusal, RequestRefused
from idcode.service import devices, metrics
from idcode.service.api.deps import (
    AuthenticatedFirst,
    CitizenDep,
    Services,
    ServicesDep,
    bearer_token,
    spend_request_token,
)
from idcode.service.api.problems import Problem, problem_responses
from idcode.service.api.routes.codes import NO_CARD, citizen_card
from idcode.service.api.times import UtcTime
from idcode.service.devices import IssuedCredential, NewDevice
from idcode.service.events import as_utc
from idcode.service.models import CardRecord, DeviceRecord
from idcode.service.pii import PersonalDataVault
from idcode.service.requesttokens import PARTY_ID

router = APIRouter(prefix="/v1", tags=["devices"], route_class=AuthenticatedFirst)
DeviceId = Annotated[
    str, Path(pattern=f"^{PARTY_ID.pattern}$", description="A device's id (UUID).")
]
_NO_STORE = {"Cache-Control": "no-store"}


class DeviceCredential(BaseModel):
    """A device and its new credential: what the wallet keeps to make codes offline."""

    id: str = Field(description="The device's id (UUID): its device tokens' iss and sub.")
    device_id: str = Field(description="The device id codes carry: 16 hex characters.")
    alg: str = Field(description="EdDSA or ES256: the device key's algorithm.")
    label: str | None
    credential: str = Field(
        description="base64url (no padding) of the credential and the issuer's signature: "
        "what each device code carries (docs/code-format.md, section 8)."
    )
    credential_expires_at: int = Field(description="When the credential expires (epoch s).")
    server_time: int = Field(description="The service's time (epoch s): a wallet's clock check.")
    code_prefix: str = Field(description="The prefix of this deployment's device codes.")
    code_lifetime: int = Field(description="How long a device code lives from its iat (s).")
    created_at: UtcTime


class DeviceOut(BaseModel):
    id: str
    device_id: str
    alg: str
    label: str | None
    created_at: UtcTime
    renewed_at: UtcTime | None
    credential_expires_at: int
    removed_at: UtcTime | None


class DeviceList(BaseModel):
    devices: list[DeviceOut] = Field(description="Newest first, removed ones too.")


def _credential(services: Services, issued: IssuedCredential, now: int) -> dict[str, Any]:
    device = issued.device
    return {
        "id": device.id,
        "device_id": device.device_id.hex(),
        "alg": device.alg,
        "label": devices.label_of(device, services.vault),
        "credential": b64url.encode(issued.blob),
        "credential_expires_at": issued.expires_at,
        "server_time": now,
        "code_prefix": device_prefix(services.code_prefix),
        "code_lifetime": DEVICE_CODE_LIFETIME,
        "created_at": as_utc(device.created_at),
    }


def _view(device: DeviceRecord, vault: PersonalDataVault) -> dict[str, Any]:
    return {
        "id": device.id,
        "device_id": device.device_id.hex(),
        "alg": device.alg,
        "label": devices.label_of(device, vault),
        "created_at": as_utc(device.created_at),
        "renewed_at": None if device.renewed_at is None else as_utc(device.renewed_at),
        "credential_expires_at": int(as_utc(device.credential_expires_at).timestamp()),
        "removed_at": None if device.removed_at is None else as_utc(device.removed_at),
    }


_REFUSALS = {
    devices.CARD_NOT_ACTIVE: 403,
    devices.DEVICE_REMOVED: 409,
    devices.DEVICE_EXISTS: 409,
    devices.TOO_MANY_DEVICES: 409,
}


async def _rate_limited(services: Services, id_hash: bytes, now: float) -> None:
    """Count the request against the citizen's per-minute limit, with code requests."""
    _, wait = await services.state.admit(id_hash, services.settings.rate_limit_per_minute, now)
    if wait is not None:
        raise Problem(
            429,
            "rate_limited",
            "Too many requests; wait a moment.",
            headers={"Retry-After": str(wait)},
        )


@router.post(
    "/devices",
    operation_id="register_device",
    status_code=201,
    response_model=DeviceCredential,
    summary="Register a device key for the caller's card and get its first credential",
    responses=problem_responses(401, 403, 404, 409, 422, 429),
)
async def register_device(
    new: NewDevice, citizen: CitizenDep, services: ServicesDep, response: Response
) -> dict[str, Any]:
    """Register a device key (a phone's) for the caller's card and get its first credential: the
    device can then make its own codes offline (docs/devices.md). Rate-limited; 409 for a
    key already registered or removed, or too many devices."""
    now = int(time.time())
    assert citizen.id_number is not None
    id_hash = services.vault.citizen_key(citizen.id_number)
    if id_hash is None:  # enrolment refuses such a number, so no card can have it
        raise Problem(404, "card_not_found", NO_CARD)
    await _rate_limited(services, id_hash, now)

    def work() -> dict[str, Any]:
        with services.sessions() as session:
            # The card as it is now, locked: a credential lives for days.
            card = devices.card_for_update(session, id_hash)
            if card is None:
                raise Problem(404, "card_not_found", NO_CARD)
            try:
                issued = devices.register(
                    session,
                    services.vault,
                    services.keys.signer(now),
                    card,
                    new,
                    now,
                    max_devices=services.settings.max_devices_per_card,
                    lifetime=services.settings.device_credential_seconds,
                )
            except RequestRefused as exc:
                raise Problem(
                    _REFUSALS.get(exc.reason, 422), exc.reason, "The device was refused.", str(exc)
                ) from None
            session.commit()
            return _credential(services, issued, now)

    answer = await run_in_threadpool(work)
    metrics.count_code("device_credential", services.code_prefix)
    response.headers.update(_NO_STORE)
    return answer


async def _device(request: Request, device_uuid: str) -> tuple[DeviceRecord, bytes]:
    """The device that signed this request for ``device_uuid`` and its card's lookup hash, or
    a 401/403 problem: every check of the token, then its single use (as deps.signed_caller)."""
    services: Services = request.app.state.services
    token = bearer_token(request)
    if token is None:
        raise Problem(
            401,
            "missing_token",
            "A device token is required.",
            headers={"WWW-Authenticate": "Bearer"},
        )

    def check() -> tuple[DeviceRecord, str, bytes]:
        with services.sessions() as session:
            try:
                accepted = devices.authenticate(session, token, device_uuid, time.time())
            except Refusal as exc:
                status = 403 if exc.reason == devices.DEVICE_REMOVED else 401
                raise Problem(
                    status, exc.reason, "The device token was refused.", str(exc)
                ) from None
            id_hash = session.scalars(
                select(CardRecord.id_hash).where(CardRecord.id == accepted.record.card_id)
            ).one()
            return accepted.record, accepted.jti, id_hash

    record, jti, id_hash = await run_in_threadpool(check)
    await spend_request_token(services, "device", record.id, jti)
    return record, id_hash


@router.post(
    "/devices/{device_id}/credential",
    operation_id="renew_credential",
    response_model=DeviceCredential,
    summary="Renew a device's credential (a token the device's key signs, no body)",
    responses=problem_responses(401, 403, 422, 429),
)
async def renew_credential(
    device_id: DeviceId, request: Request, response: Response
) -> dict[str, Any]:
    """Renew a device's credential before it expires. The caller is the device itself, with a
    token its key signs (no body); a removed device is refused with 403."""
    device, id_hash = await _device(request, device_id)
    services: Services = request.app.state.services
    now = int(time.time())
    await _rate_limited(services, id_hash, now)

    def work() -> dict[str, Any]:
        with services.sessions() as session:
            try:
                issued = devices.renew(
                    session,
                    services.vault,
                    services.keys.signer(now),
                    device.id,
                    now,
                    lifetime=services.settings.device_credential_seconds,
                )
            except RequestRefused as exc:
                raise Problem(403, exc.reason, "No credential was issued.", str(exc)) from None
            session.commit()
            return _credential(services, issued, now)

    answer = await run_in_threadpool(work)
    metrics.count_code("device_credential", services.code_prefix)
    response.headers.update(_NO_STORE)
    return answer


@router.get(
    "/devices",
    operation_id="list_devices",
    response_model=DeviceList,
    summary="The caller's devices, newest first, removed ones too",
    responses=problem_responses(401, 403, 404),
)
async def list_devices(citizen: CitizenDep, services: ServicesDep) -> dict[str, Any]:
    """The caller's devices, newest first, removed ones too, so a citizen can tell which phone to
    remove."""
    assert citizen.id_number is not None
    card = await citizen_card(services, citizen.id_number, time.time())

    def work() -> dict[str, Any]:
        with services.sessions() as session:
            found = devices.devices_of(session, card.card_id)
            return {"devices": [_view(device, services.vault) for device in found]}

    return await run_in_threadpool(work)


@router.delete(
    "/devices/{device_id}",
    operation_id="remove_device",
    status_code=204,
    summary="Remove one of the caller's devices (a lost phone): its codes are refused at "
    "every terminal after its next bundle fetch",
    responses=problem_responses(401, 403, 404, 422),
)
async def remove_device(
    device_id: DeviceId, citizen: CitizenDep, services: ServicesDep
) -> Response:
    """Remove one of the caller's devices, a lost phone: online verification refuses its codes at
    once, terminals at their next sync. 204."""
    assert citizen.id_number is not None
    card = await citizen_card(services, citizen.id_number, time.time())
    now = int(time.time())

    def work() -> None:
        with services.sessions() as session:
            try:
                devices.remove(session, card.card_id, device_id, now)
            except RequestRefused as exc:
                raise Problem(404, exc.reason, "No such device.", str(exc)) from None
            session.commit()

    await run_in_threadpool(work)
    return Response(status_code=204)
