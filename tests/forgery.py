"""Forging helpers for the attack tests: hand-made JWS, public keys as HMAC secrets, kid
tricks and truncations (tests/core/test_attacks.py and tests/service/test_attacks.py), device
codes assembled from any parts (tests/core/test_devicecode_attacks.py)."""

from __future__ import annotations

import base64
import hmac
import json
from collections.abc import Callable
from typing import Any

import base45
from cryptography.hazmat.primitives import serialization

from idcode.bundle import DELTA_TYPE
from idcode.statuslist import StatusDelta, StatusList
from tests.conftest import NOW


def b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def compact_jws(
    header: dict[str, Any], claims: dict[str, Any], sign: Callable[[bytes], bytes]
) -> str:
    """A compact JWS assembled by hand (pyjwt rightly refuses to make most of these)."""
    signing_input = b64url(json.dumps(header).encode()) + "." + b64url(json.dumps(claims).encode())
    return signing_input + "." + b64url(sign(signing_input.encode()))


def public_key_secrets(public_jwk: dict[str, Any], public_key: Any) -> dict[str, bytes]:
    """A public key in the forms an attacker would try as an HMAC secret."""
    return {
        "jwk-json": json.dumps(public_jwk).encode(),
        "jwk-json-compact": json.dumps(public_jwk, separators=(",", ":"), sort_keys=True).encode(),
        "pem": public_key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
        "raw": public_key.public_bytes_raw(),
    }


def hmac_signer(secret: bytes, digest: str = "sha256") -> Callable[[bytes], bytes]:
    return lambda message: hmac.digest(secret, message, digest)


SECRET_FORMS = ["jwk-json", "jwk-json-compact", "pem", "raw"]


def root_claims(typ: str) -> dict[str, Any]:
    """Valid claims of a trust bundle or a status delta."""
    if typ == DELTA_TYPE:
        return {"iss": "idcode", "iat": NOW, "delta": StatusDelta(0, 1, 8, (1,), ()).to_json()}
    return {
        "iss": "idcode",
        "iat": NOW,
        "ver": 1,
        "max_age": 3600,
        "keys": {"keys": []},
        "status": StatusList(8).to_json(),
        "scene": {},
    }


JWS_KIDS = {
    "empty": "",
    "path-traversal": "../../keys/dev-idp.pem",
    "absolute-path": "/etc/passwd",
    "url": "https://attacker.example/jwks.json",
    "non-ascii": "密钥",
    "long": "k" * 4096,
    "not-a-string": 7,
}


def truncated(token: str, keep: int) -> str:
    """``token`` with its signature cut to its first ``keep`` bytes."""
    signing_input, _, signature = token.rpartition(".")
    raw = base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4))
    return signing_input + "." + b64url(raw[:keep])


# -- device codes (docs/code-format.md section 8), assembled by hand ---------------------------


def device_payload(iat: int, cti: bytes, credential: bytes, issuer_signature: bytes) -> bytes:
    """The payload ``[iat, cti, credential, issuer signature]`` in the section 8 layout, with
    whatever values are given (idcode's encode_payload refuses most of the interesting ones)."""
    return (
        b"\x84\x1a"
        + iat.to_bytes(4, "big")
        + b"\x48"
        + cti
        + bytes([0x58, len(credential)])
        + credential
        + b"\x58\x40"
        + issuer_signature
    )


def device_message(payload: bytes, device_signature: bytes) -> bytes:
    """The device code's COSE_Sign1 around ``payload``: ``[h'', {}, payload, signature]``."""
    return b"\x84\x40\xa0\x58" + bytes([len(payload)]) + payload + b"\x58\x40" + device_signature


def device_text(prefix: str, message: bytes) -> str:
    """``message`` as code text, in base45 by the reference package (not idcode's encoder)."""
    encoded: bytes = base45.b45encode(message)
    return prefix + encoded.decode()
