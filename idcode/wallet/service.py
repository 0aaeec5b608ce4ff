"""The wallet's side of the devices API (docs/api.md): register a device key, renew its
credential, list and remove the citizen's devices.

Every answer goes through the core's bounded client (``idcode.httpclient``) and is checked
before the wallet keeps anything: the credential must be a credential, certify this very
key, name this device, expire within the 7 days a credential may live, and verify, as a
terminal would verify it, with the keys the service publishes (its JWK Set). Anything else
is a BadResponse saying what was wrong; a refusal is a ServiceError with the service's
reason. The citizen's ID token goes only into the Authorization header: no message, log
line or file repeats it.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from idcode import b64url
from idcode.codetext import prefix_for
from idcode.cose import Algorithm
from idcode.devicecode import (
    DEVICE_CODE_LIFETIME,
    MAX_CREDENTIAL_LIFETIME,
    Credential,
    DeviceKey,
    make_device_code,
    split_blob,
)
from idcode.errors import BadResponse, FormatError, KeyMaterialError, UsageError
from idcode.httpclient import Response, printable, request
from idcode.keys import keys_from_jwks
from idcode.terminaltoken import device_token
from idcode.verifier import Trust, verify
from idcode.wallet.store import DevicePrivateKey, WalletState

DEVICES_PATH = "/v1/devices"
JWKS_PATH = "/.well-known/jwks.json"
#: The largest answer the wallet reads: a credential is a few hundred bytes, a citizen's
#: list of devices a few KiB, a JWK Set a few keys.
MAX_ANSWER_BYTES = 256 * 1024
#: The most devices a list may hold before the wallet calls it not the service's answer.
MAX_LISTED_DEVICES = 1000
#: A server_time outside these years is not a clock the wallet corrects itself by.
_EARLIEST, _LATEST = 1_577_836_800, 0xFFFF_FFFF  # 2020-01-01, the last 32-bit second
# Slack for a credential valid "7 days from now": the service's now and the server_time it
# reports may differ by the time it took to sign.
_LIFETIME_SLACK = 60
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_DEVICE_ID = re.compile(r"[0-9a-f]{16}")
_DEVICE_PREFIX = re.compile(r"([A-Z](?:[A-Z0-9]{0,6}[A-Z])?)2:")
_ID_TOKEN = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")
MAX_ID_TOKEN_LENGTH = 16 * 1024
_LOOPBACK = ("127.0.0.1", "localhost", "::1")
_TIMEOUT = 15.0

Clock = Callable[[], float]


def service_url(text: str) -> str:
    """The service's base URL, checked: https, or http to this machine only (the citizen's ID
    token must not cross a network in clear); no user, query or fragment; no trailing /."""
    url = text.strip().rstrip("/")
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError:
        host, parts = None, None
    if parts is None or parts.scheme not in ("http", "https") or not host:
        raise UsageError(f"the service URL must be https://HOST[:PORT], got {text[:60]!r}")
    if parts.username is not None or parts.query or parts.fragment:
        raise UsageError("the service URL takes no user, query or fragment")
    if parts.scheme == "http" and host not in _LOOPBACK:
        raise UsageError(
            f"refusing plain http to {host[:60]}: the ID token and the device's requests would "
            "cross the network in clear; use https (http only to 127.0.0.1 or localhost)"
        )
    return url


def check_id_token(token: str) -> str:
    """``token`` stripped, if it has the shape of a JWT; UsageError otherwise (the message
    never repeats it)."""
    token = token.strip()
    if not token:
        raise UsageError("the ID token is empty")
    if len(token) > MAX_ID_TOKEN_LENGTH or not _ID_TOKEN.fullmatch(token):
        raise UsageError(
            "the ID token is not a JWT (three base64url parts separated by dots, at most "
            f"{MAX_ID_TOKEN_LENGTH} characters)"
        )
    return token


def check_device_uuid(text: str) -> str:
    if not _UUID.fullmatch(text):
        raise UsageError(
            f"a device's id is a UUID as 'idcode wallet devices' lists it, got {text[:40]!r}"
        )
    return text


def deployment_prefix(code_prefix: str) -> str:
    """The issuer-signed code prefix (``WH1:``) of a device-code prefix (``WH2:``)."""
    match = _DEVICE_PREFIX.fullmatch(code_prefix)
    if match is None:
        raise ValueError(f"not a device-code prefix: {code_prefix[:20]!r}")
    return prefix_for(match.group(1))


# -- registering and renewing ----------------------------------------------------------------


def register(
    server: str,
    id_token: str,
    key: DevicePrivateKey,
    label: str | None = None,
    *,
    clock: Clock = time.time,
    check: bool = True,
) -> WalletState:
    """Register ``key`` for the card of the citizen whose ID token this is; the checked
    state to keep. ``check``: also verify the credential with the service's published keys
    (check_credential); a caller that does so itself can tell which device to remove."""
    device = DeviceKey.from_public_key(key.public_key())
    body: dict[str, Any] = {"public_jwk": device.to_jwk()}
    if label is not None:
        body["label"] = label
    sent = clock()
    answer = request(
        server + DEVICES_PATH,
        method="POST",
        body=body,
        headers={"Authorization": f"Bearer {id_token}"},
        timeout=_TIMEOUT,
        max_bytes=MAX_ANSWER_BYTES,
    ).expect(201)
    state = credential_state(answer, server, device, sent, clock())
    if check:
        check_credential(server, state, key, clock)
    return state


def renew(state: WalletState, key: DevicePrivateKey, *, clock: Clock = time.time) -> WalletState:
    """A new credential for this wallet's device, asked with a token its key signs (no
    sign-in), dated by the service's time as last measured."""
    device = DeviceKey.from_public_key(key.public_key())
    token = device_token(state.device, key, device.alg.jose_name, now=state.now(int(clock())))
    sent = clock()
    answer = request(
        f"{state.server}{DEVICES_PATH}/{state.device}/credential",
        method="POST",
        headers={"Authorization": f"Bearer {token}"},
        timeout=_TIMEOUT,
        max_bytes=MAX_ANSWER_BYTES,
    ).expect(200)
    renewed = credential_state(answer, state.server, device, sent, clock())
    if renewed.device != state.device:
        raise BadResponse(answer.status, "the renewal answer names another device")
    check_credential(state.server, renewed, key, clock)
    return state.renewed(renewed)


def credential_state(
    answer: Response, server: str, device: DeviceKey, sent: float, received: float
) -> WalletState:
    """The wallet state an answer of POST /v1/devices or of a renewal gives, every member
    checked against the key the wallet holds."""
    status = answer.status
    document = answer.json_object()

    def bad(detail: str) -> BadResponse:
        return BadResponse(status, detail)

    device_uuid = document.get("id")
    if not isinstance(device_uuid, str) or not _UUID.fullmatch(device_uuid):
        raise bad("the answer has no device id (a UUID)")
    if document.get("device_id") != device.device_id.hex():
        raise bad("the answer's device_id is not this key's")
    if document.get("alg") != device.alg.jose_name:
        raise bad(f"the answer's alg is not {device.alg.jose_name}, this key's")
    label = document.get("label")
    if label is not None and (not isinstance(label, str) or printable(label, 64) != label):
        raise bad("the answer's label is not printable text of at most 64 characters")
    encoded = document.get("credential")
    if not isinstance(encoded, str):
        raise bad("the answer has no credential")
    try:
        blob = b64url.decode(encoded)
        credential = Credential.from_bytes(split_blob(blob)[0])
    except FormatError as exc:
        raise bad(f"the credential is not one: {exc}") from None
    if credential.device != device:
        raise bad("the credential certifies another key than this wallet's")
    expires_at = document.get("credential_expires_at")
    if type(expires_at) is not int or expires_at != credential.expires_at:
        raise bad("credential_expires_at is not the credential's expiry")
    server_time = document.get("server_time")
    if type(server_time) is not int or not _EARLIEST <= server_time <= _LATEST:
        raise bad("the answer has no plausible server_time")
    if expires_at <= server_time:
        raise bad("the credential has already expired by the service's own clock")
    if expires_at > server_time + MAX_CREDENTIAL_LIFETIME + _LIFETIME_SLACK:
        raise bad(
            f"the credential is valid {expires_at - server_time} s, longer than the "
            f"{MAX_CREDENTIAL_LIFETIME} s a credential may be"
        )
    code_prefix = document.get("code_prefix")
    if not isinstance(code_prefix, str) or not _DEVICE_PREFIX.fullmatch(code_prefix):
        raise bad("the answer's code_prefix is not a device-code prefix (like WH2:)")
    if document.get("code_lifetime") != DEVICE_CODE_LIFETIME:
        raise bad(
            f"the answer's code_lifetime is not {DEVICE_CODE_LIFETIME} s: the service speaks "
            "another version of the device-code format"
        )
    # The service's time against ours at the middle of the exchange, good to the round trip's
    # half: the service gives its time in whole seconds, rounded down, so on average it was
    # half a second later than it says.
    offset = round(server_time + 0.5 - (sent + received) / 2)
    return WalletState(
        server=server,
        device=device_uuid,
        device_id=device.device_id.hex(),
        alg=device.alg.jose_name,
        label=label,
        credential=b64url.encode(blob),
        credential_expires_at=expires_at,
        code_prefix=code_prefix,
        clock_offset=offset,
        synced_at=int(received),
    )


def check_credential(
    server: str, state: WalletState, key: DevicePrivateKey, clock: Clock = time.time
) -> None:
    """Make a code from the new credential and verify it as a terminal does, with the keys
    the service publishes (GET /.well-known/jwks.json): a credential signed by a key no
    terminal trusts, or not signed at all, is found here and not at the gate. (This checks
    the service's consistency, not the service: both come from it.)"""
    answer = request(server + JWKS_PATH, timeout=_TIMEOUT, max_bytes=MAX_ANSWER_BYTES).expect(200)
    try:
        keys = keys_from_jwks(answer.json_object())
    except KeyMaterialError as exc:
        raise BadResponse(answer.status, f"the service's JWK Set is unusable: {exc}") from None
    trust = Trust.of(
        keys,
        prefix=deployment_prefix(state.code_prefix),
        algorithms={key.alg for key in keys},
    )
    now = state.now(int(clock()))
    code = make_device_code(state.blob, key, prefix=state.code_prefix, now=now)
    verdict = verify(code, trust, now)
    if not verdict.valid:
        detail = f": {verdict.detail}" if verdict.detail else ""
        raise BadResponse(
            answer.status,
            "the credential does not verify with the service's published keys "
            f"({verdict.reason.value}{detail})",
        )


# -- the citizen's devices -------------------------------------------------------------------


@dataclass(frozen=True)
class ListedDevice:
    """One of the citizen's devices as GET /v1/devices lists it."""

    id: str
    device_id: str
    alg: str
    label: str | None
    created_at: str
    renewed_at: str | None
    credential_expires_at: int
    removed_at: str | None

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


def list_devices(server: str, id_token: str) -> list[ListedDevice]:
    """The citizen's devices, newest first, removed ones too."""
    answer = request(
        server + DEVICES_PATH,
        headers={"Authorization": f"Bearer {id_token}"},
        timeout=_TIMEOUT,
        max_bytes=MAX_ANSWER_BYTES,
    ).expect(200)
    listed = answer.json_object().get("devices")
    if not isinstance(listed, list) or len(listed) > MAX_LISTED_DEVICES:
        raise BadResponse(answer.status, "the answer has no list of devices")
    return [_listed(answer.status, entry) for entry in listed]


def _listed(status: int, entry: object) -> ListedDevice:
    def bad(member: str) -> BadResponse:
        return BadResponse(status, f"a listed device has no usable {member!r}")

    if not isinstance(entry, dict):
        raise BadResponse(status, "a listed device is not a JSON object")
    device_uuid, device_id = entry.get("id"), entry.get("device_id")
    if not isinstance(device_uuid, str) or not _UUID.fullmatch(device_uuid):
        raise bad("id")
    if not isinstance(device_id, str) or not _DEVICE_ID.fullmatch(device_id):
        raise bad("device_id")
    alg = entry.get("alg")
    if alg not in (Algorithm.EDDSA.jose_name, Algorithm.ES256.jose_name):
        raise bad("alg")
    label = entry.get("label")
    if label is not None and (not isinstance(label, str) or printable(label, 64) != label):
        raise bad("label")
    expires_at = entry.get("credential_expires_at")
    if type(expires_at) is not int or not 0 <= expires_at <= _LATEST:
        raise bad("credential_expires_at")
    times: dict[str, str | None] = {}
    for member in ("created_at", "renewed_at", "removed_at"):
        value = entry.get(member)
        if value is None and member != "created_at":
            times[member] = None
            continue
        if not isinstance(value, str) or len(value) > 40 or not _is_time(value):
            raise bad(member)
        times[member] = value
    created_at = times["created_at"]
    assert created_at is not None
    return ListedDevice(
        id=device_uuid,
        device_id=device_id,
        alg=str(alg),
        label=label,
        created_at=created_at,
        renewed_at=times["renewed_at"],
        credential_expires_at=expires_at,
        removed_at=times["removed_at"],
    )


def _is_time(text: str) -> bool:
    try:
        datetime.fromisoformat(text)
    except ValueError:
        return False
    return True


def remove_device(server: str, id_token: str, device_uuid: str) -> None:
    """Remove one of the citizen's devices: its codes are refused at terminals from their
    next sync on."""
    request(
        f"{server}{DEVICES_PATH}/{check_device_uuid(device_uuid)}",
        method="DELETE",
        headers={"Authorization": f"Bearer {id_token}"},
        timeout=_TIMEOUT,
        max_bytes=MAX_ANSWER_BYTES,
    ).expect(204)
