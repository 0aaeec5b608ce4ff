"""Signing codes: claims in, code text out. The service and ``idcode mint`` both use this."""

from __future__ import annotations

import secrets

from idcode.claims import CODE_ID_LENGTH, Card, CodeClaims
from idcode.codetext import encode_text
from idcode.cose import encode_protected, encode_sign1, to_be_signed
from idcode.errors import ClaimsError
from idcode.keys import Signer

DEFAULT_TTL = 60  # seconds a code lives; the app asks for the next one before that
MAX_TTL = 3600


def sign_code(claims: CodeClaims, key: Signer, prefix: str) -> str:
    """Sign a claims set as a COSE_Sign1 and return the code text."""
    protected = encode_protected(int(key.alg), key.kid.encode("ascii"))
    payload = claims.to_cbor()
    signature = key.sign(to_be_signed(protected, payload))
    return encode_text(prefix, encode_sign1(protected, payload, signature))


def mint_code(
    card: Card,
    key: Signer,
    *,
    prefix: str,
    now: int,
    ttl: int = DEFAULT_TTL,
) -> tuple[str, CodeClaims]:
    """A fresh code for ``card``, valid from ``now`` for ``ttl`` seconds, with a random code id."""
    if not 1 <= ttl <= MAX_TTL:
        raise ClaimsError(f"ttl must be 1..{MAX_TTL} seconds")
    claims = CodeClaims(
        issued_at=now,
        expires_at=now + ttl,
        code_id=secrets.token_bytes(CODE_ID_LENGTH),
        card=card,
    )
    return sign_code(claims, key, prefix), claims
