"""Signing and verification keys: issuer keys with one-character key ids, JWK import and export.

Issuer keys sign codes (Ed25519 by default, P-256 for ES256, SM2 under the GM profile through
``idcode.gm``). Key ids are a single ASCII
letter or digit because every byte of a code counts; the COSE ``kid`` is that byte and the
JWK ``kid`` is the same character, so generic COSE libraries can match them.
"""

from __future__ import annotations

import string
from dataclasses import dataclass
from typing import Any, Protocol

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)
from jwt.algorithms import ECAlgorithm, OKPAlgorithm

from idcode import b64url
from idcode.cose import Algorithm
from idcode.errors import KeyMaterialError
from idcode.gm import SM2PrivateKey, SM2PublicKey

KID_ALPHABET = string.ascii_uppercase + string.ascii_lowercase + string.digits

PrivateKey = Ed25519PrivateKey | ec.EllipticCurvePrivateKey | SM2PrivateKey
VerificationKey = Ed25519PublicKey | ec.EllipticCurvePublicKey | SM2PublicKey

_ECDSA_SHA256 = ec.ECDSA(hashes.SHA256())
_P256_ORDER_BYTES = 32


def check_kid(kid: str) -> str:
    if len(kid) != 1 or kid not in KID_ALPHABET:
        raise KeyMaterialError(f"key id must be one ASCII letter or digit, got {kid!r}")
    return kid


def generate_private_key(alg: Algorithm) -> PrivateKey:
    if alg is Algorithm.EDDSA:
        return Ed25519PrivateKey.generate()
    if alg is Algorithm.SM2:
        return SM2PrivateKey.generate()
    return ec.generate_private_key(ec.SECP256R1())


def _check_key_matches_alg(key: object, alg: Algorithm) -> None:
    if alg is Algorithm.EDDSA:
        ok = isinstance(key, Ed25519PublicKey | Ed25519PrivateKey)
    elif alg is Algorithm.SM2:
        ok = isinstance(key, SM2PublicKey | SM2PrivateKey)
    else:
        ok = isinstance(key, ec.EllipticCurvePublicKey | ec.EllipticCurvePrivateKey) and isinstance(
            key.curve, ec.SECP256R1
        )
    if not ok:
        raise KeyMaterialError(f"{type(key).__name__} cannot be used for {alg.jose_name}")


_COORDINATE_BYTES = 32  # an Ed25519 public key; a P-256 or SM2 coordinate


def check_jwk_coordinates(jwk: dict[str, Any], alg: Algorithm) -> bytes:
    """Refuse a public JWK whose ``x`` (and ``y`` for P-256 and SM2) is not canonical
    unpadded base64url of 32 bytes. pyjwt's decoder drops characters outside the alphabet
    and ignores unused bits, so ``x`` with junk in it would load as the same key. Returns
    the coordinates, concatenated."""
    coordinates = b""
    for member in ("x",) if alg is Algorithm.EDDSA else ("x", "y"):
        try:
            coordinate = b64url.decode(jwk.get(member))
        except b64url.Base64UrlError as exc:
            raise KeyMaterialError(f"JWK member {member}: {exc}") from None
        if len(coordinate) != _COORDINATE_BYTES:
            raise KeyMaterialError(f"JWK member {member} must be {_COORDINATE_BYTES} bytes")
        coordinates += coordinate
    return coordinates


#: An SM2 public JWK, idcode's convention (no JOSE registration exists): kty EC, crv SM2, x
#: and y of 32 bytes each, alg SM2 (docs/code-format.md section 3).
SM2_JWK_KTY, SM2_JWK_CRV = "EC", "SM2"


def sm2_key_from_jwk(jwk: dict[str, Any]) -> SM2PublicKey:
    if jwk.get("kty") != SM2_JWK_KTY or jwk.get("crv") != SM2_JWK_CRV:
        raise KeyMaterialError(
            f"unusable JWK for kid {jwk.get('kid')!r}: an SM2 key has kty "
            f"{SM2_JWK_KTY!r} and crv {SM2_JWK_CRV!r}"
        )
    point = check_jwk_coordinates(jwk, Algorithm.SM2)
    try:
        # KeyMaterialError for a point off the curve or with a coordinate not below p.
        return SM2PublicKey.from_bytes(b"\x04" + point)
    except UnsupportedAlgorithm as exc:  # no OpenSSL 3 with SM2 on this machine
        raise KeyMaterialError(f"SM2 key {jwk.get('kid')!r} cannot be used here: {exc}") from None


def sm2_jwk(key: SM2PublicKey) -> dict[str, Any]:
    point = key.to_bytes()
    return {
        "kty": SM2_JWK_KTY,
        "crv": SM2_JWK_CRV,
        "x": b64url.encode(point[1:33]),
        "y": b64url.encode(point[33:]),
    }


@dataclass(frozen=True, slots=True)
class PublicKey:
    """A trusted verification key, with the period in which it may have signed codes.

    ``not_before`` / ``not_after`` bound the key's signing period in seconds since the epoch
    (None: unbounded). A code whose ``iat`` lies outside it was not signed by this key as
    intended, and the verifier refuses it with ``unknown_key``.
    """

    kid: str
    alg: Algorithm
    key: VerificationKey
    not_before: int | None = None
    not_after: int | None = None

    def __post_init__(self) -> None:
        check_kid(self.kid)
        _check_key_matches_alg(self.key, self.alg)

    def verify(self, signature: bytes, message: bytes) -> bool:
        """True when ``signature`` (64 raw bytes) is valid for ``message``."""
        try:
            if self.alg is Algorithm.EDDSA or self.alg is Algorithm.SM2:
                self.key.verify(signature, message)  # type: ignore[call-arg]
            else:
                der = encode_dss_signature(
                    int.from_bytes(signature[:_P256_ORDER_BYTES], "big"),
                    int.from_bytes(signature[_P256_ORDER_BYTES:], "big"),
                )
                self.key.verify(der, message, _ECDSA_SHA256)  # type: ignore[call-arg]
        except InvalidSignature:
            return False
        return True

    def signs_at(self, issued_at: int) -> bool:
        """Whether a code issued at ``issued_at`` falls in this key's signing period."""
        if self.not_before is not None and issued_at < self.not_before:
            return False
        return not (self.not_after is not None and issued_at >= self.not_after)

    def to_jwk(self) -> dict[str, Any]:
        """The public JWK (RFC 7517), with the signing period as ``nbf``/``exp`` members."""
        if isinstance(self.key, Ed25519PublicKey):
            jwk: dict[str, Any] = OKPAlgorithm.to_jwk(self.key, as_dict=True)
        elif isinstance(self.key, SM2PublicKey):
            jwk = sm2_jwk(self.key)
        else:
            jwk = ECAlgorithm.to_jwk(self.key, as_dict=True)
        jwk.update(kid=self.kid, alg=self.alg.jose_name, use="sig")
        if self.not_before is not None:
            jwk["nbf"] = self.not_before
        if self.not_after is not None:
            jwk["exp"] = self.not_after
        return jwk

    @classmethod
    def from_jwk(cls, jwk: dict[str, Any]) -> PublicKey:
        """Load a public JWK; private members (``d``) are refused rather than ignored."""
        if not isinstance(jwk, dict):
            raise KeyMaterialError("a JWK must be a JSON object")
        if "d" in jwk:
            raise KeyMaterialError("refusing a private JWK where a public key is expected")
        try:
            alg = Algorithm.from_name(str(jwk.get("alg", "")), exact=True)
        except ValueError as exc:
            raise KeyMaterialError(str(exc)) from None
        try:
            if alg is Algorithm.EDDSA:
                key: Any = OKPAlgorithm.from_jwk(jwk)
            elif alg is Algorithm.SM2:
                key = sm2_key_from_jwk(jwk)
            else:
                key = ECAlgorithm.from_jwk(jwk)
        except KeyMaterialError:
            raise
        except Exception as exc:  # pyjwt raises InvalidKeyError and others on bad members
            raise KeyMaterialError(f"unusable JWK for kid {jwk.get('kid')!r}: {exc}") from None
        check_jwk_coordinates(jwk, alg)
        validity = {}
        for member in ("nbf", "exp"):
            value = jwk.get(member)
            if value is not None and type(value) is not int:
                raise KeyMaterialError(f"JWK member {member} must be an integer")
            validity[member] = value
        not_before, not_after = validity["nbf"], validity["exp"]
        if not_before is not None and not_after is not None and not_before > not_after:
            raise KeyMaterialError("JWK signing period ends before it starts (nbf > exp)")
        if jwk.get("use", "sig") != "sig":
            raise KeyMaterialError("a code-signing JWK must have use 'sig'")
        kid = jwk.get("kid")
        if not isinstance(kid, str):
            raise KeyMaterialError("a JWK needs a kid string")
        return cls(
            kid=check_kid(kid),
            alg=alg,
            key=key,
            not_before=not_before,
            not_after=not_after,
        )


class Signer(Protocol):
    """What signing a code needs. File keys implement it; an HSM backend would too."""

    @property
    def kid(self) -> str: ...

    @property
    def alg(self) -> Algorithm: ...

    @property
    def public(self) -> PublicKey: ...

    def sign(self, message: bytes) -> bytes:
        """A 64-byte raw signature over ``message``."""
        ...


@dataclass(frozen=True, slots=True)
class IssuerKey:
    """A private issuer key that signs codes, with its signing period."""

    kid: str
    alg: Algorithm
    private_key: PrivateKey
    not_before: int | None = None
    not_after: int | None = None

    def __post_init__(self) -> None:
        check_kid(self.kid)
        _check_key_matches_alg(self.private_key, self.alg)

    @classmethod
    def generate(
        cls,
        kid: str,
        alg: Algorithm = Algorithm.EDDSA,
        not_before: int | None = None,
        not_after: int | None = None,
    ) -> IssuerKey:
        return cls(kid, alg, generate_private_key(alg), not_before, not_after)

    def sign(self, message: bytes) -> bytes:
        """A 64-byte signature: Ed25519; ES256 as r || s per RFC 9053 section 2.1; SM2 as
        r || s, over SM3 with the default user id (idcode.gm)."""
        if isinstance(self.private_key, Ed25519PrivateKey | SM2PrivateKey):
            return self.private_key.sign(message)
        r, s = decode_dss_signature(self.private_key.sign(message, _ECDSA_SHA256))
        return r.to_bytes(_P256_ORDER_BYTES, "big") + s.to_bytes(_P256_ORDER_BYTES, "big")

    @property
    def public(self) -> PublicKey:
        return PublicKey(
            kid=self.kid,
            alg=self.alg,
            key=self.private_key.public_key(),
            not_before=self.not_before,
            not_after=self.not_after,
        )


def jwks(keys: list[PublicKey]) -> dict[str, Any]:
    """A JWK Set (RFC 7517 section 5) of public keys."""
    return {"keys": [key.to_jwk() for key in keys]}


def keys_from_jwks(document: Any) -> list[PublicKey]:
    """Public keys from a JWK Set document; a duplicate kid is an error, not a silent override."""
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise KeyMaterialError('a JWK Set must be an object with a "keys" array')
    keys = [PublicKey.from_jwk(jwk) for jwk in document["keys"]]
    kids = [key.kid for key in keys]
    if len(set(kids)) != len(kids):
        raise KeyMaterialError("the JWK Set names the same kid twice")
    return keys
