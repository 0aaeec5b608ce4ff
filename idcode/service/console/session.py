"""The console's session and sign-in state, each in an encrypted cookie.

Nothing is stored on the server per operator: the session cookie itself is the session,
AES-256-GCM encrypted and authenticated with a key from the key store (``console-session.key``,
created on first use and shared by every replica that shares the key store), so a browser can
neither read nor forge one. It names the operator (the ID token's subject), the end of its
lifetime (the token's own, and never more than ``console_session_seconds`` after sign-in) and
the session's CSRF token, which every form carries back. A session cannot be revoked before
it ends, which is why its lifetime is bounded; signing out clears the cookie.

The sign-in state (PKCE verifier, OAuth state, OpenID nonce, where to go afterwards) lives in
a second cookie for the few minutes a sign-in takes; each kind has its own associated data, so
one cookie cannot pass for the other.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from idcode.secretfiles import read_or_create_secret

KEY_FILE = "console-session.key"
KEY_LENGTH = 32
NONCE_LENGTH = 12
SIGN_IN_SECONDS = 600  # time to sign in at the identity provider
SESSION_AAD = b"idcode/console/session/v1"
SIGN_IN_AAD = b"idcode/console/sign-in/v1"
MAX_COOKIE = 4096  # browsers keep no more per cookie


def session_key(keys_dir: Path) -> bytes:
    """The console's cookie key from the key store, created (mode 0600) on first use."""

    def new_key() -> bytes:
        return base64.b64encode(secrets.token_bytes(KEY_LENGTH))

    raw = base64.b64decode(read_or_create_secret(keys_dir / KEY_FILE, new_key), validate=True)
    if len(raw) != KEY_LENGTH:
        raise ValueError(f"{keys_dir / KEY_FILE} must hold {KEY_LENGTH} bytes, base64")
    return raw


@dataclass(frozen=True, slots=True)
class OperatorSession:
    """A signed-in operator: who (the ID token's subject), until when, and the CSRF token."""

    subject: str
    expires_at: int
    csrf: str


@dataclass(frozen=True, slots=True)
class SignIn:
    """A sign-in under way: what the callback checks the identity provider's answer against."""

    state: str
    verifier: str
    nonce: str
    expires_at: int


class CookieBox:
    """Seals and opens the console's cookies with one key."""

    def __init__(self, key: bytes) -> None:
        self._aead = AESGCM(key)

    def _seal(self, document: dict[str, Any], aad: bytes) -> str:
        nonce = secrets.token_bytes(NONCE_LENGTH)
        sealed = self._aead.encrypt(nonce, json.dumps(document).encode(), aad)
        return base64.urlsafe_b64encode(nonce + sealed).decode().rstrip("=")

    def _open(self, value: str | None, aad: bytes) -> dict[str, Any] | None:
        """The cookie's document, or None for a missing, altered or foreign cookie."""
        if not value or len(value) > MAX_COOKIE:
            return None
        try:
            raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
            plain = self._aead.decrypt(raw[:NONCE_LENGTH], raw[NONCE_LENGTH:], aad)
            document = json.loads(plain)
        except (binascii.Error, ValueError, InvalidTag):
            return None
        return document if isinstance(document, dict) else None

    def seal_session(self, session: OperatorSession) -> str:
        return self._seal(
            {"sub": session.subject, "exp": session.expires_at, "csrf": session.csrf},
            SESSION_AAD,
        )

    def open_session(self, value: str | None, now: int) -> OperatorSession | None:
        document = self._open(value, SESSION_AAD)
        if document is None:
            return None
        subject, expires_at, csrf = document.get("sub"), document.get("exp"), document.get("csrf")
        if not (isinstance(subject, str) and isinstance(expires_at, int) and isinstance(csrf, str)):
            return None
        if expires_at <= now:
            return None
        return OperatorSession(subject, expires_at, csrf)

    def seal_sign_in(self, sign_in: SignIn) -> str:
        return self._seal(
            {
                "state": sign_in.state,
                "verifier": sign_in.verifier,
                "nonce": sign_in.nonce,
                "exp": sign_in.expires_at,
            },
            SIGN_IN_AAD,
        )

    def open_sign_in(self, value: str | None, now: int) -> SignIn | None:
        document = self._open(value, SIGN_IN_AAD)
        if document is None:
            return None
        fields = [document.get(name) for name in ("state", "verifier", "nonce")]
        expires_at = document.get("exp")
        if not all(isinstance(f, str) for f in fields) or not isinstance(expires_at, int):
            return None
        if expires_at <= now:
            return None
        state, verifier, nonce = (str(f) for f in fields)
        return SignIn(state, verifier, nonce, expires_at)


def new_sign_in(now: int) -> SignIn:
    """Fresh state, PKCE verifier (RFC 7636: 43-128 unreserved characters) and nonce."""
    return SignIn(
        state=secrets.token_urlsafe(24),
        verifier=secrets.token_urlsafe(48),
        nonce=secrets.token_urlsafe(24),
        expires_at=now + SIGN_IN_SECONDS,
    )


def code_challenge(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")
