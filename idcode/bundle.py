"""Trust bundles: what a terminal needs to decide offline, signed by the city root key.

A bundle is a JWS (compact, EdDSA, or ``SM2`` under the GM crypto profile (idcode.jws);
``typ: idcode-trust+jwt``) whose payload holds the issuer
keys with their signing periods, the revocation status list, the terminal's scene data, the
server time, a version and a max-age. A terminal pins the root public key when it is
provisioned and refuses a bundle signed by anything else or changed in any byte. A bundle
past its max-age still loads; the verifier then answers ``stale_trust`` (see Trust).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any

import jwt

from idcode import b64url
from idcode.cose import Algorithm
from idcode.errors import BundleError as BundleError
from idcode.errors import IdcodeError, KeyMaterialError
from idcode.jws import ROOT_ALGORITHMS, RootJWT, root_algorithm_of
from idcode.keys import PublicKey, jwks, keys_from_jwks
from idcode.keystore import RootKey
from idcode.profiles import PROFILES, STANDARD, CryptoProfile
from idcode.scenes import SCENE_KEY_BYTES, SCENE_NAME
from idcode.statuslist import (
    StatusDelta,
    StatusList,
    device_ids_from_json,
    device_ids_to_json,
)
from idcode.text import surrogate_reason
from idcode.verifier import DEFAULT_CLOCK_SKEW, Trust

BUNDLE_TYPE = "idcode-trust+jwt"
MAX_BUNDLE_BYTES = 8 * 1024 * 1024
SCENE_MEMBERS = frozenset({"scene", "site", "version", "data", "subject_key"})
#: The one optional member of a scene block: the relying party a terminal belongs to (a
#: hospital's kiosk), whose own software then receives each decision's subject.
RELYING_PARTY_MEMBER = "relying_party"
SITE = re.compile(r"[A-Za-z0-9._-]{1,64}")
RELYING_PARTY = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


@dataclass(frozen=True)
class TrustBundle:
    version: int
    issued_at: int  # the server's time when it signed the bundle
    max_age: int
    keys: tuple[PublicKey, ...]
    status: StatusList
    scene: dict[str, Any] = field(default_factory=dict)
    #: Devices their citizens removed, whose credentials have not expired (8-byte ids).
    revoked_devices: frozenset[bytes] = frozenset()
    #: The crypto profile whose root key signed it: its terminals key their subjects with
    #: the profile's hash (HMAC-SM3 under GM) as the service does.
    profile: CryptoProfile = STANDARD

    @property
    def fresh_until(self) -> int:
        return self.issued_at + self.max_age

    @property
    def relying_party(self) -> str | None:
        """The relying party whose terminal holds this bundle (a hospital's kiosk), if any."""
        party: str | None = self.scene.get(RELYING_PARTY_MEMBER)
        return party

    def trust(
        self,
        *,
        prefix: str,
        algorithms: Iterable[Algorithm] = (Algorithm.EDDSA,),
        clock_skew: int = DEFAULT_CLOCK_SKEW,
        allow_stale: bool = False,
    ) -> Trust:
        """A verifier's trust from this bundle: its keys, status list and freshness."""
        return Trust.of(
            self.keys,
            prefix=prefix,
            algorithms=algorithms,
            clock_skew=clock_skew,
            status=self.status,
            fresh_until=self.fresh_until,
            allow_stale=allow_stale,
            revoked_devices=self.revoked_devices,
        )

    def apply_delta(self, delta: StatusDelta, signed_at: int) -> TrustBundle:
        """This bundle with a status delta (already verified with verify_delta) applied.

        Only a delta from exactly this bundle's version is applied, so an old signed delta
        replayed later cannot undo a revocation. The freshness moves to the delta's
        signing time.
        """
        if delta.base != self.version or delta.target < delta.base:
            raise BundleError(
                f"the delta goes from version {delta.base}, this bundle is at {self.version}"
            )
        if signed_at < self.issued_at:
            raise BundleError("the delta is older than this bundle")
        return replace(
            self,
            version=delta.target,
            issued_at=signed_at,
            status=delta.apply(self.status),
            revoked_devices=self.revoked_devices | frozenset(delta.revoked_devices),
        )

    def superseded_by(self, newer: TrustBundle) -> bool:
        """Whether a terminal holding this bundle may switch to ``newer``: never to one signed
        earlier, so a replayed old bundle cannot bring back a removed key or a revoked card."""
        return newer.issued_at >= self.issued_at and newer.version >= self.version

    def clock_drift(self, terminal_now: int, received_at_server_time: int | None = None) -> int:
        """How far a terminal's clock is from the server's, measured when the bundle was
        fetched: ``terminal_now`` then, minus the bundle's server time (positive: ahead)."""
        return terminal_now - (received_at_server_time or self.issued_at)


def sign_bundle(
    root: RootKey,
    *,
    version: int,
    issued_at: int,
    max_age: int,
    keys: Iterable[PublicKey],
    status: StatusList,
    scene: dict[str, Any] | None = None,
    revoked_devices: Iterable[bytes] = (),
) -> str:
    claims = {
        "iss": "idcode",
        "iat": issued_at,
        "ver": version,
        "max_age": max_age,
        "keys": jwks(list(keys)),
        "status": status.to_json(),
        "scene": scene or {},
        "revoked_devices": device_ids_to_json(revoked_devices),
    }
    return root.sign_jws(claims, BUNDLE_TYPE)


def _strict_json(data: bytes) -> Any:
    """JSON as I-JSON (RFC 7493) has it: UTF-8, no member twice (json.loads keeps the last
    one, other decoders the first), no NaN or Infinity, no unpaired surrogate."""

    def members(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        document = dict(pairs)
        if len(document) != len(pairs):
            raise ValueError("a member appears twice in one object")
        return document

    def no_constant(name: str) -> Any:
        raise ValueError(f"{name} is not JSON")

    document = json.loads(
        data.decode("utf-8"), object_pairs_hook=members, parse_constant=no_constant
    )
    problem = surrogate_reason(document)
    if problem is not None:
        raise ValueError(f"the JSON {problem}")
    return document


class _NotStrictJson(jwt.DecodeError):
    """The signed payload is not strict JSON (raised after the signature verified)."""


class _StrictJWT(RootJWT):
    """pyjwt for one root algorithm, with the payload read by _strict_json (pyjwt documents
    this hook)."""

    def _decode_payload(self, decoded: dict[str, Any]) -> dict[str, Any]:
        try:
            payload = _strict_json(decoded["payload"])
        except (ValueError, RecursionError) as exc:
            raise _NotStrictJson(f"the payload is not strict JSON: {exc}") from None
        if not isinstance(payload, dict):
            raise _NotStrictJson("the payload must be a JSON object")
        return payload


_JWT = {alg: _StrictJWT(alg) for alg in ROOT_ALGORITHMS}


def _strict_header(token: str) -> dict[str, Any]:
    """The header of a compact JWS whose three parts are canonical unpadded base64url.
    pyjwt's decoder drops characters outside the alphabet, so ``sig!!`` would verify like
    ``sig``: one signed content, many accepted texts."""
    parts = token.split(".")
    if len(parts) != 3:
        raise BundleError("a compact JWS has three parts separated by '.'")
    for name, part in zip(("header", "payload", "signature"), parts, strict=True):
        try:
            b64url.decode(part)
        except b64url.Base64UrlError as exc:
            raise BundleError(f"the JWS {name}: {exc}") from None
    try:
        header = _strict_json(b64url.decode(parts[0]))
    except (ValueError, RecursionError) as exc:
        raise BundleError(f"the JWS header is not strict JSON: {exc}") from None
    if not isinstance(header, dict):
        raise BundleError("the JWS header must be a JSON object")
    return header


def _verify_root_jws(
    token: str, root_jwk: dict[str, Any], typ: str, profile: CryptoProfile
) -> dict[str, Any]:
    """The claims of a JWS of type ``typ`` that the pinned root key signed with the root
    algorithm of ``profile``, or BundleError."""
    if not isinstance(token, str) or len(token) > MAX_BUNDLE_BYTES:
        raise BundleError("expected a compact JWS of at most 8 MiB")
    header = _strict_header(token)
    if header.get("typ") != typ:
        raise BundleError(f"not a {typ} (typ is {str(header.get('typ'))[:40]!r})")
    expected = profile.root_algorithm.jose_name
    if header.get("alg") != expected:
        # Never a fallback to the other profile's algorithm (docs/crypto-profiles.md).
        raise BundleError(
            f"signed with alg {str(header.get('alg'))[:40]!r}, but the {profile.name} crypto "
            f"profile accepts {expected} only"
        )
    pinned = _pinned_algorithm(root_jwk)
    if pinned is not profile.root_algorithm:
        raise BundleError(
            f"the pinned root key is {pinned.jose_name}, but the {profile.name} crypto "
            f"profile's root key is {expected}: provision this terminal with a root key of "
            "its profile"
        )
    if header.get("kid") != root_jwk.get("kid"):
        raise BundleError("signed by another key than the pinned root key")
    try:
        claims = _JWT[profile.root_algorithm].verify(token, root_jwk)
    except _NotStrictJson as exc:
        raise BundleError(str(exc)) from None
    except (jwt.PyJWTError, ValueError, TypeError) as exc:
        raise BundleError(f"it does not verify with the pinned root key: {exc}") from None
    if type(claims["iat"]) is not int or claims["iat"] < 0:
        raise BundleError("iat must be a non-negative integer")
    return claims


def _scene_block(scene: object) -> dict[str, Any]:
    """The bundle's scene block: ``{}`` (no scene), or exactly scene, site, version, data
    and subject_key, and relying_party for a relying party's terminal, each of its type (the
    adapter then reads ``data`` strictly)."""
    if not isinstance(scene, dict):
        raise BundleError("scene must be an object")
    if not scene:
        return scene
    if scene.keys() - {RELYING_PARTY_MEMBER} != SCENE_MEMBERS:
        raise BundleError(
            f"scene must have exactly the members {', '.join(sorted(SCENE_MEMBERS))}, "
            f"and optionally {RELYING_PARTY_MEMBER}"
        )
    party = scene.get(RELYING_PARTY_MEMBER)
    if RELYING_PARTY_MEMBER in scene and not (
        isinstance(party, str) and RELYING_PARTY.fullmatch(party)
    ):
        raise BundleError("scene.relying_party must be a relying party's id (a lowercase UUID)")
    name, site, version = scene["scene"], scene["site"], scene["version"]
    if not isinstance(name, str) or not SCENE_NAME.fullmatch(name):
        raise BundleError("scene.scene must be a scene name")
    if not isinstance(site, str) or not SITE.fullmatch(site):
        raise BundleError("scene.site must be 1-64 of A-Z a-z 0-9 . _ -")
    if type(version) is not int or version < 0:
        raise BundleError("scene.version must be a non-negative integer")
    if not isinstance(scene["data"], dict):
        raise BundleError("scene.data must be an object")
    try:
        if len(b64url.decode(scene["subject_key"])) != SCENE_KEY_BYTES:
            raise BundleError(f"scene.subject_key must be {SCENE_KEY_BYTES} bytes")
    except b64url.Base64UrlError as exc:
        raise BundleError(f"scene.subject_key: {exc}") from None
    return scene


def _pinned_algorithm(root_jwk: dict[str, Any]) -> Algorithm:
    try:
        return root_algorithm_of(root_jwk)
    except KeyMaterialError as exc:
        raise BundleError(f"the pinned root key: {exc}") from None


def verify_bundle(
    token: str, root_jwk: dict[str, Any], profile: CryptoProfile = STANDARD
) -> TrustBundle:
    """Check ``token`` against the pinned root key and decode it: signed with the root
    algorithm of ``profile`` (EdDSA, or SM2 under gm) and nothing else."""
    claims = _verify_root_jws(token, root_jwk, BUNDLE_TYPE, profile)
    try:
        version, issued_at, max_age = claims["ver"], claims["iat"], claims["max_age"]
        if not all(type(v) is int and v >= 0 for v in (version, issued_at, max_age)):
            raise BundleError("ver, iat and max_age must be non-negative integers")
        scene = _scene_block(claims.get("scene", {}))
        return TrustBundle(
            version=version,
            issued_at=issued_at,
            max_age=max_age,
            keys=tuple(keys_from_jwks(claims["keys"])),
            status=StatusList.from_json(claims["status"]),
            scene=scene,
            revoked_devices=device_ids_from_json(claims.get("revoked_devices", [])),
            profile=profile,
        )
    except KeyError as exc:
        raise BundleError(f"the bundle lacks {exc}") from None
    except IdcodeError as exc:
        if isinstance(exc, BundleError):
            raise
        raise BundleError(f"the bundle's contents are not valid: {exc}") from None


def pinned_profile(root_jwk: dict[str, Any]) -> CryptoProfile:
    """The crypto profile of a pinned root key (checked against the configured profile when
    the terminal loaded it, load_root_jwk): its bundles are verified with that profile's root
    algorithm and no other."""
    alg = _pinned_algorithm(root_jwk)
    return next(p for p in PROFILES.values() if p.root_algorithm is alg)


def load_root_jwk(document: Any, profile: CryptoProfile = STANDARD) -> dict[str, Any]:
    """The root key of ``profile`` (Ed25519, or SM2 under gm) from a JWK Set (as ``idcode
    keys jwks --root`` prints) or a single JWK."""
    if isinstance(document, dict) and isinstance(document.get("keys"), list):
        keys = document["keys"]
        if len(keys) != 1:
            raise BundleError("the root key set must hold exactly one key")
        document = keys[0]
    wanted = "SM2" if profile.root_algorithm is Algorithm.SM2 else "Ed25519"
    if not isinstance(document, dict) or document.get("crv") != wanted or "d" in document:
        raise BundleError(
            f"the root key must be a public {wanted} JWK (the {profile.name} crypto profile's)"
        )
    try:
        if profile.root_algorithm is Algorithm.SM2:
            PublicKey.from_jwk({**document, "kid": "R"})  # on the curve, canonical x and y
    except KeyMaterialError as exc:
        raise BundleError(f"the root key: {exc}") from None
    return document


DELTA_TYPE = "idcode-status-delta+jwt"


def sign_delta(root: RootKey, delta: StatusDelta, signed_at: int) -> str:
    claims = {"iss": "idcode", "iat": signed_at, "delta": delta.to_json()}
    return root.sign_jws(claims, DELTA_TYPE)


def verify_delta(
    token: str, root_jwk: dict[str, Any], profile: CryptoProfile = STANDARD
) -> tuple[StatusDelta, int]:
    """(the delta, its signing time) from a signed status delta, checked against the pinned
    root key and the root algorithm of ``profile``; apply it with TrustBundle.apply_delta."""
    claims = _verify_root_jws(token, root_jwk, DELTA_TYPE, profile)
    try:
        return StatusDelta.from_json(claims.get("delta")), claims["iat"]
    except IdcodeError as exc:
        raise BundleError(f"the delta is not valid: {exc}") from None
