"""The JWS the city root key signs (trust bundles, status deltas, the key manifest): EdDSA
under the standard crypto profile, ``SM2`` under the GM profile, as are the request tokens of
terminals and relying parties under it (``sm2_jwt``) (docs/crypto-profiles.md,
"JWS under the GM profile").

JOSE registers no SM2 algorithm; ``SM2`` is idcode's name, as in its JWKs: a 64-byte r || s
signature (idcode.gm: SM3 with the default user id) over the JWS signing input. The algorithm
is registered only on the pyjwt instances built here for it, never in pyjwt's global
registry, so code of the standard profile (and any other user of pyjwt in the process) never
accepts ``SM2``.
"""

from __future__ import annotations

import json
from typing import Any, Literal, overload

import jwt
from cryptography.exceptions import InvalidSignature
from jwt.algorithms import Algorithm as JWSAlgorithm

from idcode.cose import Algorithm
from idcode.errors import KeyMaterialError
from idcode.gm import SM2PrivateKey, SM2PublicKey
from idcode.keys import sm2_jwk, sm2_key_from_jwk

#: The root key's algorithms, one per profile (``CryptoProfile.root_algorithm``).
ROOT_ALGORITHMS = (Algorithm.EDDSA, Algorithm.SM2)


class SM2Algorithm(JWSAlgorithm):
    """pyjwt's algorithm interface for idcode's JWS ``alg`` ``SM2``."""

    def prepare_key(self, key: Any) -> SM2PrivateKey | SM2PublicKey:
        if isinstance(key, SM2PrivateKey | SM2PublicKey):
            return key
        raise jwt.InvalidKeyError(f"alg SM2 needs an SM2 key, not a {type(key).__name__}")

    def sign(self, msg: bytes, key: Any) -> bytes:
        if not isinstance(key, SM2PrivateKey):
            raise jwt.InvalidKeyError("signing with alg SM2 needs an SM2 private key")
        return key.sign(msg)

    def verify(self, msg: bytes, key: Any, sig: bytes) -> bool:
        public = key.public_key() if isinstance(key, SM2PrivateKey) else key
        if not isinstance(public, SM2PublicKey):
            return False
        try:
            public.verify(sig, msg)
        except InvalidSignature:
            return False
        return True

    @overload
    @staticmethod
    def to_jwk(key_obj: Any, as_dict: Literal[True]) -> dict[str, Any]: ...

    @overload
    @staticmethod
    def to_jwk(key_obj: Any, as_dict: Literal[False] = False) -> str: ...

    @staticmethod
    def to_jwk(key_obj: Any, as_dict: bool = False) -> dict[str, Any] | str:
        public = key_obj.public_key() if isinstance(key_obj, SM2PrivateKey) else key_obj
        if not isinstance(public, SM2PublicKey):
            raise jwt.InvalidKeyError("not an SM2 key")
        jwk = {**sm2_jwk(public), "alg": Algorithm.SM2.jose_name}
        return jwk if as_dict else json.dumps(jwk)

    @staticmethod
    def from_jwk(jwk: str | dict[str, Any]) -> SM2PublicKey:
        try:
            document = json.loads(jwk) if isinstance(jwk, str) else jwk
        except ValueError:
            raise jwt.InvalidKeyError("the JWK is not JSON") from None
        if not isinstance(document, dict) or "d" in document:
            raise jwt.InvalidKeyError("expected a public SM2 JWK")
        try:
            return sm2_key_from_jwk(document)
        except KeyMaterialError as exc:
            raise jwt.InvalidKeyError(str(exc)) from None


def sm2_jwt() -> jwt.PyJWT:
    """A pyjwt instance of its own that knows ``SM2`` besides pyjwt's algorithms (request
    tokens under the GM profile, idcode.terminaltoken); callers name the algorithms they
    accept, as with pyjwt's global instance."""
    instance = jwt.PyJWT()
    instance._jws.register_algorithm(Algorithm.SM2.jose_name, SM2Algorithm())
    return instance


class RootJWT(jwt.PyJWT):
    """pyjwt for one root algorithm: signs with it and verifies only it.

    Its own PyJWS gets ``SM2`` registered under the GM profile (pyjwt 2.15 keeps that
    instance in ``_jws``; ``tests/core/test_jws.py`` fails if a pyjwt release moves it)."""

    def __init__(self, algorithm: Algorithm) -> None:
        if algorithm not in ROOT_ALGORITHMS:
            raise ValueError(f"{algorithm.jose_name} is not a root key algorithm")
        super().__init__()
        self.algorithm = algorithm
        if algorithm is Algorithm.SM2:
            self._jws.register_algorithm(Algorithm.SM2.jose_name, SM2Algorithm())

    def sign(self, claims: dict[str, Any], private_key: Any, kid: str, typ: str) -> str:
        return self.encode(
            claims,
            private_key,
            algorithm=self.algorithm.jose_name,
            headers={"kid": kid, "typ": typ},
        )

    def verify(self, token: str, root_jwk: dict[str, Any]) -> dict[str, Any]:
        """The claims of ``token`` (issuer ``idcode``, with ``iat``), signed by ``root_jwk``
        with this algorithm; pyjwt's errors, or ValueError for an unusable key."""
        if self.algorithm is Algorithm.SM2:
            key: Any = SM2Algorithm.from_jwk(root_jwk)
        else:
            key = jwt.PyJWK(root_jwk, algorithm=self.algorithm.jose_name).key
        claims: dict[str, Any] = self.decode(
            token,
            key,
            algorithms=[self.algorithm.jose_name],
            options={"require": ["iat"], "verify_iat": False},
            issuer="idcode",
        )
        return claims


def root_algorithm_of(jwk: dict[str, Any]) -> Algorithm:
    """The algorithm of a root public JWK: EdDSA (kty OKP, crv Ed25519) or SM2 (kty EC, crv
    SM2, alg SM2); KeyMaterialError for anything else."""
    if (
        jwk.get("kty") == "OKP"
        and jwk.get("crv") == "Ed25519"
        and jwk.get("alg", "EdDSA") == (Algorithm.EDDSA.jose_name)
    ):
        return Algorithm.EDDSA
    if jwk.get("kty") == "EC" and jwk.get("crv") == "SM2" and jwk.get("alg") == "SM2":
        return Algorithm.SM2
    raise KeyMaterialError("a root key is a public Ed25519 (EdDSA) or SM2 JWK")
