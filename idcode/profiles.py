"""Crypto profiles: which algorithms a deployment issues and accepts (docs/crypto-profiles.md).

A deployment runs one profile, chosen by ``IDCODE_CRYPTO_PROFILE``: ``standard`` (Ed25519,
P-256; the default) or ``gm`` (the Chinese national algorithms: SM2 with SM3). Everything
that signs or verifies codes asks its profile here, and nothing accepts an algorithm of
the other profile: options may narrow a profile's list, never widen it, and a code of the
other profile is refused ``unsupported_alg``, never verified by some fallback.

The profile decides the code algorithms, and the service's personal-data vault asks it for
the AEAD of personal data at rest and the keyed hash of ID-number lookups and subject keys
(``aead``, ``keyed_hash``; idcode.service.pii), and the root key's algorithm, which signs
the JWS of trust bundles, status deltas and the key manifest (``root_algorithm``: EdDSA, or
``SM2`` under gm; idcode.jws), and the keys terminals and relying parties sign their request
tokens with (``request_token_algorithms``: EdDSA or ES256, or ``SM2`` under gm;
idcode.service.requesttokens). Device keys are to become a field in the same way
(docs/crypto-profiles.md, "What the profile does not decide yet").
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from cryptography.exceptions import UnsupportedAlgorithm

from idcode.cose import Algorithm
from idcode.errors import ConfigurationError, KeyMaterialError
from idcode.gm import sm2_backend
from idcode.jws import root_algorithm_of
from idcode.keys import PublicKey


class ProfileName(StrEnum):
    """The values of ``IDCODE_CRYPTO_PROFILE``."""

    STANDARD = "standard"
    GM = "gm"


@dataclass(frozen=True, slots=True)
class CryptoProfile:
    """What one profile allows for codes.

    ``code_algorithms`` is everything a deployment of the profile may issue or accept; a
    verifier not told otherwise accepts ``default_code_algorithms``, and a new issuer key has
    ``issuer_algorithm`` unless an operator chooses another of ``code_algorithms``.
    ``aead`` names the cipher of personal data at rest and ``keyed_hash`` the MAC of lookup
    hashes and subject keys (``mac``); both are stored or shared, so a deployment keeps its
    profile (docs/crypto-profiles.md, "Personal data under the GM profile").
    ``root_algorithm`` is the root key's, and the one JWS ``alg`` its bundles, deltas and key
    manifest carry and its terminals accept.
    ``request_token_algorithms`` are the JWS ``alg`` of the request tokens of terminals and
    relying parties, and so the kinds of key they may register; a new terminal's key has
    ``terminal_key_algorithm``.
    """

    name: ProfileName
    code_algorithms: frozenset[Algorithm]
    default_code_algorithms: tuple[Algorithm, ...]
    issuer_algorithm: Algorithm
    aead: str
    keyed_hash: str
    #: The hash of ``keyed_hash``, as ``hashlib`` names it ("sha256" or "sm3"): what a
    #: terminal keys the subjects of its scans with (idcode.scenes.SceneContext).
    hash_name: str
    root_algorithm: Algorithm
    request_token_algorithms: tuple[Algorithm, ...]
    terminal_key_algorithm: Algorithm

    def mac(self, key: bytes, data: bytes) -> bytes:
        """The profile's keyed hash, 32 bytes: HMAC-SHA256, or HMAC-SM3 under ``gm``."""
        return hmac.digest(key, data, self.hash_name)

    def check_code_algorithms(self, algorithms: Iterable[Algorithm], what: str) -> None:
        """ConfigurationError when ``what`` (an option, a setting) names an algorithm
        outside this profile."""
        foreign = [alg for alg in algorithms if alg not in self.code_algorithms]
        if foreign:
            raise ConfigurationError(
                f"{what}: {', '.join(alg.jose_name for alg in foreign)} is not an algorithm "
                f"of the {self.name} crypto profile ({self.allowed()}); "
                f"IDCODE_CRYPTO_PROFILE chooses the profile"
            )

    def check_issuer_keys(self, keys: Iterable[PublicKey], now: int) -> None:
        """ConfigurationError when an issuer key that signs at ``now`` or will sign later is
        not of this profile: a service would issue codes its own verifiers refuse. Keys whose
        signing period has ended stay published for their codes whatever their algorithm."""
        for key in keys:
            if key.not_after is not None and key.not_after <= now:
                continue
            if key.alg not in self.code_algorithms:
                raise ConfigurationError(
                    f"issuer key {key.kid!r} is {key.alg.jose_name}, but the {self.name} "
                    f"crypto profile signs codes with {self.allowed()} only: set "
                    f"IDCODE_CRYPTO_PROFILE to the key store's profile, or rotate to a key of "
                    f"this profile ('idcode keys rotate --starts-in 0') and remove this one"
                )

    def check_root_key(self, root_jwk: dict[str, Any], where: str) -> None:
        """ConfigurationError when the root key (its public JWK) in ``where`` is not of this
        profile: its terminals would refuse every bundle it signs."""
        try:
            root = root_algorithm_of(root_jwk)
        except KeyMaterialError as exc:
            raise ConfigurationError(f"the root key in {where}: {exc}") from None
        if root is not self.root_algorithm:
            raise ConfigurationError(
                f"the root key in {where} is {root.jose_name}, but the {self.name} crypto "
                f"profile's root key is {self.root_algorithm.jose_name}: set "
                f"IDCODE_CRYPTO_PROFILE to the key store's profile, or use a key store made "
                f"under this one ('idcode keys init')"
            )

    def request_token_names(self) -> tuple[str, ...]:
        """The JWS ``alg`` names of ``request_token_algorithms``."""
        return tuple(alg.jose_name for alg in self.request_token_algorithms)

    def foreign_request_key(self, alg: str) -> str | None:
        """Why a request key or token of JWS ``alg`` (one idcode knows) is refused under this
        profile, or None when the profile takes it."""
        if alg in self.request_token_names():
            return None
        return (
            f"{alg} is not a request-token algorithm of the {self.name} crypto profile "
            f"({', '.join(self.request_token_names())} only)"
        )

    def check_available(self) -> str:
        """Which library does this profile's algorithms here (``""`` for the standard one,
        all ``cryptography``); ConfigurationError, said at start, where the GM profile's SM2
        is missing (it needs the system's OpenSSL 3 libcrypto, idcode.gm)."""
        if Algorithm.SM2 not in self.code_algorithms:
            return ""
        try:
            backend = sm2_backend()
        except UnsupportedAlgorithm as exc:
            raise ConfigurationError(f"the {self.name} crypto profile needs SM2: {exc}") from None
        if self.hash_name not in hashlib.algorithms_available:
            # Keyed hashes (subjects, lookups) go through hashlib, Python's own OpenSSL binding.
            raise ConfigurationError(
                f"the {self.name} crypto profile needs {self.keyed_hash}, and this Python's "
                f"hashlib has no {self.hash_name} (its OpenSSL was built without it)"
            )
        return backend

    def allowed(self) -> str:
        return ", ".join(alg.jose_name for alg in Algorithm if alg in self.code_algorithms)


STANDARD = CryptoProfile(
    name=ProfileName.STANDARD,
    code_algorithms=frozenset({Algorithm.EDDSA, Algorithm.ES256}),
    default_code_algorithms=(Algorithm.EDDSA,),
    issuer_algorithm=Algorithm.EDDSA,
    aead="AES-256-GCM",
    keyed_hash="HMAC-SHA256",
    hash_name="sha256",
    root_algorithm=Algorithm.EDDSA,
    request_token_algorithms=(Algorithm.EDDSA, Algorithm.ES256),
    terminal_key_algorithm=Algorithm.EDDSA,
)
GM = CryptoProfile(
    name=ProfileName.GM,
    code_algorithms=frozenset({Algorithm.SM2}),
    default_code_algorithms=(Algorithm.SM2,),
    issuer_algorithm=Algorithm.SM2,
    aead="SM4-GCM",
    keyed_hash="HMAC-SM3",
    hash_name="sm3",
    root_algorithm=Algorithm.SM2,
    request_token_algorithms=(Algorithm.SM2,),
    terminal_key_algorithm=Algorithm.SM2,
)
PROFILES = {profile.name: profile for profile in (STANDARD, GM)}
