"""The development identity provider's sign-in for the web wallet and the operator console:
OpenID Connect's authorization-code flow with PKCE (RFC 6749 section 4.1, RFC 7636, S256 only).

Development only (``Settings.dev_idp_serves_wallet``); production points the wallet at the
city's provider. The provider knows the demo citizens (``demodata.DEMO_CARDS``), not the card
register: like a real provider it vouches for a person, and the service then looks the card
up by the ID number in the token. For the console's redirect URI it also offers a demo
operator, whose token carries the operator role (``Settings.operator_role``) and no ID number.

Authorization codes are not stored: a code is a short HS256 token, keyed with a key derived
from the provider's own signing key (every replica has it), naming the client, the redirect
URI, the PKCE challenge, the citizen and the nonce, valid ``CODE_LIFETIME`` seconds. Single
use is the service's shared replay memory (``SharedState.seen_before``), so a code redeemed at
one replica is refused at every other. Validation is strict and every refusal names the
parameter: the error codes are RFC 6749's (sections 4.1.2.1 and 5.2), carried by
``SignInRefused`` and its two kinds in idcode.errors.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization

from idcode.errors import AuthorizationRefused, SignInRefused, UntrustedRedirect
from idcode.service.auth import dev_idp_key, dev_token
from idcode.service.cards import NewCard
from idcode.service.demodata import DEMO_CARDS
from idcode.service.settings import Settings

CODE_LIFETIME = 60  # RFC 6749 section 4.1.2 recommends at most ten minutes
ID_TOKEN_LIFETIME = 3600
CODE_AUDIENCE = "idcode/dev-idp/authorization-code"
#: What the authorization code's single use is recorded under in the shared replay memory,
#: apart from the codes citizens show (their ids are 8 bytes, these 16 after this label).
SPENT_LABEL = b"idcode/dev-idp/code/"
MAX_PARAMETER = 2000  # characters; longer values are refused, never echoed
#: RFC 7636 section 4.1: 43-128 unreserved characters.
VERIFIER = re.compile(r"[A-Za-z0-9\-._~]{43,128}")
#: BASE64URL(SHA-256(verifier)) without padding is always 43 characters (section 4.2).
CHALLENGE = re.compile(r"[A-Za-z0-9_-]{43}")
#: A state or nonce: visible ASCII (RFC 6749 appendix A.5: VSCHAR), bounded.
OPAQUE = re.compile(r"[\x20-\x7e]{1,512}")

AUTHORIZE_PARAMETERS = (
    "response_type",
    "client_id",
    "redirect_uri",
    "scope",
    "state",
    "code_challenge",
    "code_challenge_method",
    "nonce",
)
#: The subject of the demo operator's ID tokens (the console's sign-in, development only).
DEMO_OPERATOR_SUBJECT = "dev-operator"
TOKEN_PARAMETERS = ("grant_type", "code", "redirect_uri", "client_id", "code_verifier")


@dataclass(frozen=True, slots=True)
class AuthorizationRequest:
    client_id: str
    redirect_uri: str
    state: str | None
    code_challenge: str
    nonce: str | None

    def hidden_fields(self) -> dict[str, str]:
        """The request as the sign-in form carries it to the citizen's choice."""
        fields = {
            "response_type": "code",
            "client_id": self.client_id,
            "redirect_uri": self.redirect_uri,
            "scope": "openid",
            "code_challenge": self.code_challenge,
            "code_challenge_method": "S256",
        }
        if self.state is not None:
            fields["state"] = self.state
        if self.nonce is not None:
            fields["nonce"] = self.nonce
        return fields


@dataclass(frozen=True, slots=True)
class Redeemed:
    """A redeemed authorization code: the ID token, and the code's id and expiry, which the
    caller records as spent (``SPENT_LABEL + code_id`` until ``expires_at``)."""

    id_token: str
    code_id: bytes
    expires_at: int


def demo_citizen(index: int) -> NewCard:
    return DEMO_CARDS[index]


def _single(params: Mapping[str, Sequence[str]], name: str) -> str | None:
    """One parameter's value: absent and empty are the same (RFC 6749 section 3.1); more than
    one value is an error (ibid.)."""
    values = params.get(name, ())
    if len(values) > 1:
        raise SignInRefused("invalid_request", f"{name} is given more than once")
    if not values or values[0] == "":
        return None
    if len(values[0]) > MAX_PARAMETER:
        raise SignInRefused("invalid_request", f"{name} is longer than {MAX_PARAMETER} characters")
    return values[0]


class DevIdentityProvider:
    """Authorization codes and ID tokens of the development provider, for one service."""

    def __init__(self, settings: Settings) -> None:
        if not settings.dev_idp_serves_wallet:
            raise ValueError("the development identity provider is off for these settings")
        self._settings = settings
        raw = dev_idp_key(settings.keys_dir).private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )
        # A key of its own for codes, derived so that it never signs anything else.
        self._code_key = hmac.new(raw, b"idcode/dev-idp/authorization-code/v1", "sha256").digest()

    @property
    def client_id(self) -> str:
        return self._settings.wallet_client

    @property
    def clients(self) -> frozenset[str]:
        """The provider's clients: the wallet, and the operator console (often the same id)."""
        return frozenset({self._settings.wallet_client, self._settings.console_client})

    # -- the authorization endpoint --------------------------------------------------------

    def authorization_request(
        self, params: Mapping[str, Sequence[str]], redirect_uris: Mapping[str, frozenset[str]]
    ) -> AuthorizationRequest:
        """Check an authorization request; ``redirect_uris`` are each client's registered ones.
        Raises UntrustedRedirect when the client or redirect URI is not trusted,
        AuthorizationRefused (for the redirect URI) for anything else."""
        try:
            client_id = _single(params, "client_id")
            redirect_uri = _single(params, "redirect_uri")
        except SignInRefused as exc:
            raise UntrustedRedirect(str(exc)) from None
        if client_id is None:
            raise UntrustedRedirect("client_id is missing")
        if client_id not in self.clients:
            raise UntrustedRedirect("client_id is not a client of this provider")
        if redirect_uri is None:
            raise UntrustedRedirect("redirect_uri is missing")
        if redirect_uri not in redirect_uris.get(client_id, frozenset()):
            raise UntrustedRedirect("redirect_uri is not registered for this client")
        try:
            state = _single(params, "state")
        except SignInRefused as exc:
            raise AuthorizationRefused(exc.reason, str(exc), redirect_uri, None) from None
        if state is not None and not OPAQUE.fullmatch(state):
            # Sent back as it came would break the redirect: refused without it.
            raise AuthorizationRefused(
                "invalid_request",
                "state must be 1-512 visible ASCII characters",
                redirect_uri,
                None,
            )

        def refuse(error: str, description: str) -> AuthorizationRefused:
            return AuthorizationRefused(error, description, redirect_uri, state)

        try:
            values = {name: _single(params, name) for name in AUTHORIZE_PARAMETERS}
        except SignInRefused as exc:
            raise refuse(exc.reason, str(exc)) from None
        response_type = values["response_type"]
        if response_type is None:
            raise refuse("invalid_request", "response_type is missing")
        if response_type != "code":
            raise refuse("unsupported_response_type", "only response_type=code is supported")
        scope = values["scope"]
        if scope is None or "openid" not in scope.split(" "):
            raise refuse("invalid_scope", "scope must include openid")
        challenge = values["code_challenge"]
        if challenge is None:
            raise refuse("invalid_request", "code_challenge is missing (PKCE is required)")
        method = values["code_challenge_method"]
        if method is None:
            # RFC 7636 section 4.3 defaults to "plain", which this provider refuses.
            raise refuse("invalid_request", "code_challenge_method is missing (S256 is required)")
        if method != "S256":
            raise refuse("invalid_request", "code_challenge_method must be S256")
        if not CHALLENGE.fullmatch(challenge):
            raise refuse(
                "invalid_request",
                "code_challenge must be 43 base64url characters (SHA-256 of the verifier)",
            )
        nonce = values["nonce"]
        if nonce is not None and not OPAQUE.fullmatch(nonce):
            raise refuse("invalid_request", "nonce must be 1-512 visible ASCII characters")
        return AuthorizationRequest(client_id, redirect_uri, state, challenge, nonce)

    def issue_code(self, request: AuthorizationRequest, citizen: int | None, now: int) -> str:
        """An authorization code for ``citizen`` (an index of the demo citizens), or for the
        demo operator when ``citizen`` is None (the console's sign-in; routes/devidp.py offers
        it there only)."""
        if citizen is not None and not 0 <= citizen < len(DEMO_CARDS):
            raise ValueError("no such demo citizen")
        claims: dict[str, Any] = {
            "aud": CODE_AUDIENCE,
            "jti": base64.urlsafe_b64encode(secrets.token_bytes(16)).decode().rstrip("="),
            "iat": now,
            "exp": now + CODE_LIFETIME,
            "client_id": request.client_id,
            "redirect_uri": request.redirect_uri,
            "code_challenge": request.code_challenge,
        }
        if citizen is None:
            claims["operator"] = True
        else:
            claims["citizen"] = citizen
        if request.nonce is not None:
            claims["nonce"] = request.nonce
        return jwt.encode(claims, self._code_key, algorithm="HS256")

    # -- the token endpoint ----------------------------------------------------------------

    def redeem(self, form: Mapping[str, Sequence[str]], now: int) -> Redeemed:
        """Check a token request (everything but single use, which the caller records) and
        make its ID token. Raises SignInRefused."""
        values = {name: _single(form, name) for name in TOKEN_PARAMETERS}
        grant_type = values["grant_type"]
        if grant_type is None:
            raise SignInRefused("invalid_request", "grant_type is missing")
        if grant_type != "authorization_code":
            raise SignInRefused(
                "unsupported_grant_type", "only grant_type=authorization_code is supported"
            )
        for name in ("code", "redirect_uri", "client_id", "code_verifier"):
            if values[name] is None:
                raise SignInRefused("invalid_request", f"{name} is missing")
        code, verifier = values["code"], values["code_verifier"]
        assert code is not None and verifier is not None
        if values["client_id"] not in self.clients:
            raise SignInRefused("invalid_client", "client_id is not a client of this provider", 401)
        if not VERIFIER.fullmatch(verifier):
            raise SignInRefused(
                "invalid_request", "code_verifier must be 43-128 unreserved characters"
            )
        try:
            claims = jwt.decode(
                code,
                self._code_key,
                algorithms=["HS256"],
                audience=CODE_AUDIENCE,
                # The lifetime is checked below against the caller's ``now``, not pyjwt's clock.
                options={
                    "require": ["exp", "iat", "jti", "aud"],
                    "verify_exp": False,
                    "verify_iat": False,
                },
            )
        except jwt.InvalidTokenError:
            raise SignInRefused(
                "invalid_grant", "the authorization code is not one this provider issued"
            ) from None
        if not isinstance(claims.get("exp"), int) or claims["exp"] <= now:
            raise SignInRefused("invalid_grant", "the authorization code has expired")
        if claims.get("client_id") != values["client_id"]:
            raise SignInRefused(
                "invalid_grant", "the authorization code was issued to another client"
            )
        if claims.get("redirect_uri") != values["redirect_uri"]:
            raise SignInRefused(
                "invalid_grant", "redirect_uri is not the one of the authorization request"
            )
        digest = hashlib.sha256(verifier.encode("ascii")).digest()
        computed = base64.urlsafe_b64encode(digest).decode().rstrip("=")
        if not hmac.compare_digest(computed, str(claims.get("code_challenge"))):
            raise SignInRefused("invalid_grant", "code_verifier does not match the code_challenge")
        nonce = claims.get("nonce")
        citizen = claims.get("citizen")
        if claims.get("operator") is True:
            token = dev_token(
                self._settings,
                DEMO_OPERATOR_SUBJECT,
                roles=(self._settings.operator_role,),
                ttl=ID_TOKEN_LIFETIME,
                now=now,
                nonce=nonce if isinstance(nonce, str) else None,
            )
        elif isinstance(citizen, int) and 0 <= citizen < len(DEMO_CARDS):
            token = dev_token(
                self._settings,
                f"dev-citizen-{citizen + 1}",
                id_number=DEMO_CARDS[citizen].id_number,
                ttl=ID_TOKEN_LIFETIME,
                now=now,
                nonce=nonce if isinstance(nonce, str) else None,
            )
        else:
            raise SignInRefused(
                "invalid_grant", "the authorization code names no demo citizen or operator"
            )
        code_id = base64.urlsafe_b64decode(str(claims["jti"]) + "==")
        return Redeemed(token, SPENT_LABEL + code_id, int(claims["exp"]))
