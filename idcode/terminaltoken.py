"""The request tokens of terminals and relying parties: short JWTs each signs with its own key
(``private_key_jwt`` style, RFC 7523), checked by the service (idcode.service.requesttokens).

Kept apart from the service's modules so that a terminal or a counter imports no database code.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import jwt

from idcode.jws import sm2_jwt

TERMINAL_AUDIENCE = "idcode"
#: A relying party's tokens name another audience: a token one kind of caller signed is never
#: accepted as the other's, whatever ids the two tables hold.
RELYING_PARTY_AUDIENCE = "idcode/relying-party"
#: A citizen's device renewing its credential (POST /v1/devices/{id}/credential).
DEVICE_AUDIENCE = "idcode/device"
MAX_TOKEN_LIFETIME = 300
#: Signs ``alg`` ``SM2`` (an SM2 key, the GM crypto profile); pyjwt's global instance knows
#: no SM2 and stays so (idcode.jws).
_SM2_JWT = sm2_jwt()


def terminal_token(
    terminal_id: str,
    private_key: Any,
    alg: str = "EdDSA",
    now: int | None = None,
    lifetime: int = 120,
) -> str:
    """A request token for a terminal (what the terminal runtime sends; used by tests)."""
    return request_token(terminal_id, private_key, TERMINAL_AUDIENCE, alg, now, lifetime)


def relying_party_token(
    relying_party_id: str,
    private_key: Any,
    alg: str = "EdDSA",
    now: int | None = None,
    lifetime: int = 120,
) -> str:
    """A request token for a relying party's counter (``POST /v1/identify``, its links)."""
    return request_token(relying_party_id, private_key, RELYING_PARTY_AUDIENCE, alg, now, lifetime)


def device_token(
    device_id: str,
    private_key: Any,
    alg: str = "ES256",
    now: int | None = None,
    lifetime: int = 120,
) -> str:
    """A request token for a citizen's device (``device_id``: its uuid at the service), signed
    with the device key: what a wallet sends to renew its credential without a sign-in."""
    return request_token(device_id, private_key, DEVICE_AUDIENCE, alg, now, lifetime)


def request_token(
    party_id: str,
    private_key: Any,
    audience: str,
    alg: str = "EdDSA",
    now: int | None = None,
    lifetime: int = 120,
) -> str:
    """A single-use request token: ``iss`` and ``sub`` the caller's id, a fresh ``jti``;
    ``alg`` ``SM2`` (idcode.jws) with an SM2 private key (idcode.gm) under the GM profile."""
    issued = int(time.time()) if now is None else now
    claims = {
        "iss": party_id,
        "sub": party_id,
        "aud": audience,
        "iat": issued,
        "exp": issued + lifetime,
        "jti": uuid.uuid4().hex,
    }
    if alg == "SM2":
        return _SM2_JWT.encode(claims, private_key, algorithm=alg)
    return jwt.encode(claims, private_key, algorithm=alg)
