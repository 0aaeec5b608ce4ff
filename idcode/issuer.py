"""Signing codes: claims in, code text out. The service and ``idcode mint`` both use this."""

from __future__ import annotations

import os
import threading

from idcode.claims import CODE_ID_LENGTH, Card, CodeClaims
from idcode.codetext import encode_text
from idcode.cose import encode_protected, encode_sign1, to_be_signed
from idcode.errors import ClaimsError
from idcode.keys import Signer

DEFAULT_TTL = 60  # seconds a code lives; the app asks for the next one before that
MAX_TTL = 3600


class _RandomPool:
    """Bytes from the operating system's CSPRNG, fetched 4 KiB at a time: one system call per
    512 codes instead of one per code. Emptied in a forked child, so no two processes ever
    hand out the same bytes."""

    def __init__(self, block: int = 4096) -> None:
        self._block = block
        self._buffer = b""
        self._position = 0
        self._lock = threading.Lock()
        os.register_at_fork(after_in_child=self.empty)

    def empty(self) -> None:
        self._buffer, self._position = b"", 0

    def take(self, count: int) -> bytes:
        with self._lock:
            if self._position + count > len(self._buffer):
                self._buffer, self._position = os.urandom(max(self._block, count)), 0
            start = self._position
            self._position += count
            return self._buffer[start : start + count]


_code_ids = _RandomPool()


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
        code_id=_code_ids.take(CODE_ID_LENGTH),
        card=card,
    )
    return sign_code(claims, key, prefix), claims
