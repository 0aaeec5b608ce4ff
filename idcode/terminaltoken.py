"""A terminal's request token: a short JWT signed with its own key (``private_key_jwt``
style, RFC 7523), checked by the service in idcode.service.fleet.authenticate.

Kept apart from the service's modules so that a terminal imports no database code.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import jwt

TERMINAL_AUDIENCE = "idcode"
MAX_TOKEN_LIFETIME = 300


def terminal_token(
    terminal_id: str,
    private_key: Any,
    alg: str = "EdDSA",
    now: int | None = None,
    lifetime: int = 120,
) -> str:
    """A request token for a terminal (what the terminal runtime sends; used by tests)."""
    issued = int(time.time()) if now is None else now
    claims = {
        "iss": terminal_id,
        "sub": terminal_id,
        "aud": TERMINAL_AUDIENCE,
        "iat": issued,
        "exp": issued + lifetime,
        "jti": uuid.uuid4().hex,
    }
    return jwt.encode(claims, private_key, algorithm=alg)
