"""Who is calling: OIDC ID tokens from the city's identity provider, verified with pyjwt.

A citizen's token carries the real-name-verified national ID number in a claim (by default
``id_number``); it is used only to compute the keyed lookup hash of the citizen's card and
is never logged or stored. Operators and online verifiers are told apart by roles.

In development a built-in identity provider (an Ed25519 key in ``keys/dev-idp.pem``) signs
tokens for ``idcode dev-token``; production refuses its issuer name.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from idcode.errors import AuthError, IdcodeError
from idcode.secretfiles import (
    check_trusted_directory,
    check_trusted_file,
    read_existing_secret,
    read_or_create_secret,
)
from idcode.service.settings import DEV_IDP_ISSUER, NOT_THE_SERVICE_KEY_STORE, Settings
from idcode.text import control_reason

DEV_IDP_KID = "idcode-dev-idp"
DEV_IDP_FILE = "dev-idp.pem"
LEEWAY_SECONDS = 30


@dataclass(frozen=True, slots=True)
class Principal:
    subject: str
    id_number: str | None = field(repr=False)  # never in a log line, even by accident
    roles: frozenset[str] = frozenset()


class _ProviderKeys(jwt.PyJWKClient):
    """pyjwt's JWKS client, with every way a fetch can fail reported as a connection error.

    pyjwt turns an unreachable provider into PyJWKClientConnectionError, but lets an answer it
    cannot read (not UTF-8, not JSON, nested too deeply, a connection reset mid-answer, a key
    that is not an object) escape as ValueError, RecursionError, OSError, AttributeError or
    PyJWKSetError, which would be a 500 for every citizen. Whatever the provider (or a proxy
    before it) answers, the token cannot be checked now: 503 idp_unavailable, and a later
    request tries again. Keys pyjwt cannot load are left out; a set with none left is unusable.
    """

    def fetch_data(self) -> Any:
        try:
            keys = super().fetch_data().get("keys")  # pyjwt checked it is an object
            if not isinstance(keys, list):
                raise ValueError("not a JWK Set")
            usable = {"keys": [jwk for jwk in keys if _loadable(jwk)]}
            if not usable["keys"]:
                raise ValueError("no key in the set can be used")
        # Any error at all: pyjwt parses the answer (and caches it, parsing each key) with
        # code that raises whatever the answer's shape provokes. Whatever it was, the set is
        # not usable now, and that is all the caller can act on.
        except Exception as exc:
            if self.jwk_set_cache is not None:
                self.jwk_set_cache.put(None)  # pyjwt cached the answer before it was checked
            raise jwt.PyJWKClientConnectionError(
                f"the identity provider's key set is unusable ({type(exc).__name__})"
            ) from None
        if self.jwk_set_cache is not None:
            self.jwk_set_cache.put(usable)
        return usable


def _loadable(jwk: Any) -> bool:
    """Whether pyjwt can load ``jwk``: it raises more than its own errors on odd members."""
    if not isinstance(jwk, dict):
        return False
    try:
        jwt.PyJWK(jwk)
    except Exception:  # TypeError, ValueError, KeyError...: any failure leaves the key out
        return False
    return True


class KeySource:
    """Verification keys by kid: a static JWK Set, or the identity provider's JWKS URL."""

    def __init__(self, jwks: dict[str, Any] | None = None, url: str | None = None) -> None:
        self._set = jwt.PyJWKSet.from_dict(jwks) if jwks is not None else None
        # The key set is cached for 5 minutes (lifespan), and nothing longer: pyjwt's
        # cache_keys would keep each key by kid with no expiry, so a key the provider
        # withdraws would stay trusted until the process restarts.
        self._client = _ProviderKeys(url, cache_keys=False, lifespan=300) if url else None
        self.needs_network = self._client is not None

    def key_for(self, token: str, kid: str | None) -> jwt.PyJWK:
        if self._client is not None:
            return self._client.get_signing_key_from_jwt(token)
        assert self._set is not None
        try:
            return self._set[kid or ""]
        except KeyError:
            raise AuthError("invalid_token", "the token's key id is not the provider's") from None


class TokenVerifier:
    """Checks ID tokens, remembering the ones it accepted.

    The city app sends the same ID token with every code request until the token expires, so
    an accepted token is remembered (by its SHA-256) until its ``exp``, but for at most
    ``CACHE_SECONDS``, the same time the provider's keys are cached: a key the provider
    withdraws stops being trusted as quickly either way. Refused tokens are not remembered.
    """

    CACHE_SECONDS = 300
    CACHE_ENTRIES = 20_000

    def __init__(self, settings: Settings, keys: KeySource) -> None:
        self._settings = settings
        self._keys = keys
        self.needs_network = keys.needs_network
        self._accepted: OrderedDict[bytes, tuple[Principal, float]] = OrderedDict()

    def verify(self, token: str, now: float | None = None) -> Principal:
        now = time.time() if now is None else now
        digest = hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()
        remembered = self._accepted.get(digest)
        if remembered is not None and remembered[1] > now:
            return remembered[0]
        principal, expires = self._check(token)
        self._accepted[digest] = (principal, min(expires, now + self.CACHE_SECONDS))
        if len(self._accepted) > self.CACHE_ENTRIES:
            self._accepted.popitem(last=False)
        return principal

    def _check(self, token: str) -> tuple[Principal, float]:
        settings = self._settings
        try:
            header = jwt.get_unverified_header(token)
            alg = header.get("alg")
            if alg not in settings.oidc_algorithms:
                raise AuthError(
                    "invalid_token", f"tokens signed with {str(alg)[:16]!r} are not accepted"
                )
            signing_key = self._keys.key_for(token, header.get("kid"))
            if signing_key.algorithm_name not in (None, alg):
                raise AuthError("invalid_token", "the token's algorithm does not fit its key")
            claims = jwt.decode(
                token,
                signing_key.key,
                algorithms=[alg],
                audience=settings.oidc_audience,
                issuer=settings.oidc_issuer,
                leeway=LEEWAY_SECONDS,
                options={"require": ["exp", "iat", "iss", "aud", "sub"]},
            )
        except jwt.ExpiredSignatureError:
            raise AuthError("token_expired", "the ID token has expired") from None
        except jwt.PyJWKClientConnectionError:
            raise AuthError(
                "idp_unavailable", "the identity provider's keys cannot be fetched"
            ) from None
        except jwt.PyJWKClientError:
            raise AuthError("invalid_token", "the token's key is not the provider's") from None
        except jwt.InvalidTokenError as exc:
            raise AuthError("invalid_token", f"the ID token is not valid: {exc}") from None
        subject = claims["sub"]
        if not isinstance(subject, str) or not subject:
            raise AuthError("invalid_token", "the ID token's sub must be a non-empty string")
        problem = control_reason(subject)
        if problem is not None:
            # The subject names the actor in audit records: a NUL or an unpaired surrogate
            # cannot be stored (a 500 when the record is written), and no provider's real
            # subject has a control character (OIDC: at most 255 ASCII characters).
            raise AuthError("invalid_token", f"the ID token's sub {problem}")
        roles = claims.get(settings.oidc_roles_claim, [])
        id_number = claims.get(settings.oidc_id_number_claim)
        principal = Principal(
            subject=subject,
            id_number=id_number if isinstance(id_number, str) else None,
            roles=frozenset(r for r in roles if isinstance(r, str))
            if isinstance(roles, list)
            else frozenset(),
        )
        return principal, float(claims["exp"])


def token_verifier(settings: Settings) -> TokenVerifier:
    if settings.oidc_jwks_url:
        return TokenVerifier(settings, KeySource(url=settings.oidc_jwks_url))
    if settings.oidc_jwks_file:
        # The identity provider's keys decide who is an operator: a file another user could
        # rewrite is refused. Its target is checked, so a mounted config map's links work.
        target = settings.oidc_jwks_file.resolve()
        check_trusted_directory(target.parent)
        try:
            check_trusted_file(target)
            jwks = json.loads(target.read_text())
        except (OSError, ValueError) as exc:
            raise IdcodeError(f"cannot read IDCODE_OIDC_JWKS_FILE: {exc}") from None
        return TokenVerifier(settings, KeySource(jwks=jwks))
    if settings.development and settings.oidc_issuer == DEV_IDP_ISSUER:
        return TokenVerifier(settings, KeySource(jwks=dev_idp_jwks(settings.keys_dir)))
    raise IdcodeError("set IDCODE_OIDC_JWKS_URL or IDCODE_OIDC_JWKS_FILE")


# -- the development identity provider ---------------------------------------------------


def dev_idp_key(keys_dir: Path, *, create: bool = True) -> Ed25519PrivateKey:
    """The development identity provider's key; created on first use only by the service
    (``create``), never by a command that merely signs with it."""

    def new_key() -> bytes:
        return Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    path = keys_dir / DEV_IDP_FILE
    pem = (
        read_or_create_secret(path, new_key)
        if create
        else read_existing_secret(path, NOT_THE_SERVICE_KEY_STORE)
    )
    loaded = serialization.load_pem_private_key(pem, None)
    if not isinstance(loaded, Ed25519PrivateKey):
        raise IdcodeError(f"{path} is not an Ed25519 key")
    return loaded


def dev_idp_jwks(keys_dir: Path) -> dict[str, Any]:
    jwk = jwt.algorithms.OKPAlgorithm.to_jwk(dev_idp_key(keys_dir).public_key(), as_dict=True)
    jwk.update(kid=DEV_IDP_KID, alg="EdDSA", use="sig")
    return {"keys": [jwk]}


def dev_token(
    settings: Settings,
    subject: str,
    *,
    id_number: str | None = None,
    roles: tuple[str, ...] = (),
    ttl: int = 3600,
    now: int | None = None,
    nonce: str | None = None,
    create_key: bool = True,
) -> str:
    """An ID token from the development identity provider (development only); ``nonce`` is
    the one of an OpenID Connect authorization request (idcode.service.devidp). Without
    ``create_key`` (the ``dev-token`` command) the provider's key must already exist."""
    if not settings.development:
        raise IdcodeError("the development identity provider is off outside development")
    issued = int(time.time()) if now is None else now
    claims: dict[str, Any] = {
        "iss": DEV_IDP_ISSUER,
        "aud": settings.oidc_audience,
        "sub": subject,
        "iat": issued,
        "exp": issued + ttl,
    }
    if id_number is not None:
        claims[settings.oidc_id_number_claim] = id_number
    if roles:
        claims[settings.oidc_roles_claim] = list(roles)
    if nonce is not None:
        claims["nonce"] = nonce
    return jwt.encode(
        claims,
        dev_idp_key(settings.keys_dir, create=create_key),
        algorithm="EdDSA",
        headers={"kid": DEV_IDP_KID},
    )
