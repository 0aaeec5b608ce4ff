#!/usr/bin/env python3
"""Benchmark idcode code size and offline verification against bare signature checks.

Prints, for one machine and one run:

1. code size: an issuer-signed code with realistic claims, for EdDSA and ES256, against
   the budget (QR version <= 7 at level M, base45 part <= 170 characters);
2. offline verification: the whole decision ``idcode.verifier.verify`` per code against
   the bare ``cryptography`` signature check of the same algorithm over the same
   Sig_structure bytes, as a ratio (target <= 1.3x);
3. the same claims as a pyjwt EdDSA JWT and as a ``cwt`` package CWT: sizes, and verify
   time as a ratio against the same bare Ed25519 check.

The machine is assumed shared and noisy, so only ratios measured side by side mean
anything: every variant runs once per round, in a rotating order, for several rounds,
and each figure is the median per-call time over those rounds.

    .venv/bin/python bench/verify.py [--seconds N] [--rounds R]
"""

from __future__ import annotations

import argparse
import base64
import gc
import os
import platform
import secrets
import shlex
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib.metadata import version
from typing import Any

import base45
import cwt
import jwt
import qrcode
import qrcode.constants
import qrcode.util
from cryptography.hazmat.backends.openssl.backend import backend as openssl_backend
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from idcode.claims import (
    CLAIM_CARD,
    CLAIM_CTI,
    CLAIM_EXP,
    CLAIM_IAT,
    CODE_ID_LENGTH,
    AgeBand,
    Card,
    Programme,
    Residency,
)
from idcode.codetext import decode_body
from idcode.cose import Algorithm, decode_sign1
from idcode.qr import qr_version
from idcode.replay import ReplayCache
from idcode.testing import TestIssuer, random_card
from idcode.verifier import Trust, verify

# Every token in this run is issued at NOW and lives TTL seconds. idcode is verified at
# NOW; pyjwt and cwt check the wall clock, so TTL is long enough to outlast the run. It
# changes no size: exp is a 10-digit number in JSON and a uint32 in CBOR either way.
NOW = int(time.time())
TTL = 600

QR_VERSION_BUDGET = 7
BASE45_BUDGET = 170
RATIO_TARGET = 1.3

CARD = random_card(
    status_index=3_456_789,
    residency=Residency.REGISTERED,
    age_band=AgeBand.AGE_65_69,
    programmes=Programme.HOME_CARE | Programme.MEAL_SUBSIDY,
)

_ECDSA_SHA256 = ec.ECDSA(hashes.SHA256())
_QR_MODE_NAMES = {
    qrcode.util.MODE_NUMBER: "numeric",
    qrcode.util.MODE_ALPHA_NUM: "alnum",
    qrcode.util.MODE_8BIT_BYTE: "byte",
}


# --- token formats -------------------------------------------------------------------


def qr_version_m(data: str | bytes) -> tuple[int, str]:
    """Smallest QR version at level M for ``data`` as one segment, and that segment's mode."""
    segment = qrcode.util.QRData(data)  # alnum if every character allows it, else byte
    qr = qrcode.QRCode(error_correction=qrcode.constants.ERROR_CORRECT_M)
    qr.add_data(segment)
    qr.make(fit=True)
    return int(qr.version), _QR_MODE_NAMES[segment.mode]


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def jwt_claims(card: Card) -> dict[str, Any]:
    """The idcode claims as a JWT would carry them: registered claims plus short private ones."""
    return {
        "exp": NOW + TTL,
        "iat": NOW,
        "jti": b64url(secrets.token_bytes(CODE_ID_LENGTH)),
        "sub": card.pseudonym.hex(),
        "si": card.status_index,
        "res": int(card.residency),
        "age": int(card.age_band),
        "prg": int(card.programmes),
    }


def cwt_claims(card: Card) -> dict[int, Any]:
    """The idcode claims map itself; the cwt package adds nbf (5) on its own."""
    return {
        CLAIM_EXP: NOW + TTL,
        CLAIM_IAT: NOW,
        CLAIM_CTI: secrets.token_bytes(CODE_ID_LENGTH),
        CLAIM_CARD: card.to_bytes(),
    }


@dataclass(frozen=True)
class Formats:
    """Everything that mints and checks tokens, from one Ed25519 key and one P-256 key."""

    eddsa: TestIssuer
    es256: TestIssuer
    eddsa_trust: Trust
    es256_trust: Trust
    ed_private: Ed25519PrivateKey
    ed_public: Ed25519PublicKey
    es_public: ec.EllipticCurvePublicKey
    cwt_signing_key: Any  # cwt.COSEKeyInterface (cwt's stubs export it as an ABC)
    cwt_verifying_key: Any

    @classmethod
    def create(cls) -> Formats:
        eddsa = TestIssuer(alg=Algorithm.EDDSA, kid="T", now=NOW)
        es256 = TestIssuer(alg=Algorithm.ES256, kid="E", now=NOW)
        ed_private = eddsa.key.private_key
        es_private = es256.key.private_key
        assert isinstance(ed_private, Ed25519PrivateKey)
        assert isinstance(es_private, ec.EllipticCurvePrivateKey)
        ed_public = ed_private.public_key()
        private_pem = ed_private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        public_pem = ed_public.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return cls(
            eddsa=eddsa,
            es256=es256,
            eddsa_trust=eddsa.trust(),
            es256_trust=es256.trust(),
            ed_private=ed_private,
            ed_public=ed_public,
            es_public=es_private.public_key(),
            cwt_signing_key=cwt.COSEKey.from_pem(private_pem, kid=eddsa.kid),
            cwt_verifying_key=cwt.COSEKey.from_pem(public_pem, kid=eddsa.kid),
        )

    def codes(self, alg: Algorithm, n: int) -> list[str]:
        issuer = self.eddsa if alg is Algorithm.EDDSA else self.es256
        return [issuer.mint(CARD, ttl=TTL) for _ in range(n)]

    def jwts(self, n: int) -> list[str]:
        return [
            jwt.encode(jwt_claims(CARD), self.ed_private, "EdDSA", {"kid": self.eddsa.kid})
            for _ in range(n)
        ]

    def cwts(self, n: int) -> list[bytes]:
        return [cwt.encode(cwt_claims(CARD), self.cwt_signing_key) for _ in range(n)]


def signed_parts(codes: Sequence[str], prefix: str) -> list[tuple[bytes, bytes]]:
    """(raw signature, Sig_structure) of each code, parsed outside any timing."""
    parts = []
    for code in codes:
        message = decode_sign1(decode_body(code[len(prefix) :]))
        parts.append((message.signature, message.to_be_signed()))
    return parts


# --- timed loops: each runs over fresh inputs once and returns elapsed nanoseconds ------


def time_bare_ed25519(key: Ed25519PublicKey, items: Sequence[tuple[bytes, bytes]]) -> int:
    check = key.verify
    start = time.perf_counter_ns()
    for signature, message in items:
        check(signature, message)
    return time.perf_counter_ns() - start


def time_bare_es256(key: ec.EllipticCurvePublicKey, items: Sequence[tuple[bytes, bytes]]) -> int:
    """COSE carries ES256 signatures as r || s and cryptography verifies DER, so the bare
    check of a COSE ES256 signature is the conversion plus the verification."""
    check, algorithm, from_bytes = key.verify, _ECDSA_SHA256, int.from_bytes
    start = time.perf_counter_ns()
    for raw, message in items:
        der = encode_dss_signature(from_bytes(raw[:32], "big"), from_bytes(raw[32:], "big"))
        check(der, message, algorithm)
    return time.perf_counter_ns() - start


def time_idcode(trust: Trust, codes: Sequence[str]) -> int:
    replay = ReplayCache(capacity=len(codes))
    start = time.perf_counter_ns()
    for code in codes:
        verify(code, trust, NOW, replay)
    elapsed = time.perf_counter_ns() - start
    # Only a code that passed every check is recorded, so this proves each verdict was ok.
    if len(replay) != len(codes) or replay.evictions:
        raise SystemExit(f"idcode verify refused {len(codes) - len(replay)} of {len(codes)} codes")
    return elapsed


def time_jwt(key: Ed25519PublicKey, tokens: Sequence[str]) -> int:
    start = time.perf_counter_ns()
    for token in tokens:
        jwt.decode(token, key, algorithms=["EdDSA"])  # raises on any failure
    return time.perf_counter_ns() - start


def time_cwt(key: Any, tokens: Sequence[bytes]) -> int:
    start = time.perf_counter_ns()
    for token in tokens:
        cwt.decode(token, key)  # raises on any failure
    return time.perf_counter_ns() - start


# --- side-by-side rounds --------------------------------------------------------------


@dataclass(frozen=True)
class Variant:
    label: str
    baseline: str | None  # label of the bare check this variant is a ratio against
    target: float | None


BARE_ED25519 = "Ed25519 bare verify"
IDCODE_EDDSA = "idcode verify() EdDSA"
BARE_ES256 = "ES256 bare verify"
IDCODE_ES256 = "idcode verify() ES256"
JWT_EDDSA = "JWT EdDSA (pyjwt decode)"
CWT_EDDSA = "CWT EdDSA (cwt decode)"

VARIANTS = [
    Variant(BARE_ED25519, None, None),
    Variant(IDCODE_EDDSA, BARE_ED25519, RATIO_TARGET),
    Variant(BARE_ES256, None, None),
    Variant(IDCODE_ES256, BARE_ES256, RATIO_TARGET),
    Variant(JWT_EDDSA, BARE_ED25519, None),
    Variant(CWT_EDDSA, BARE_ED25519, None),
]


def make_round(formats: Formats, n: int) -> dict[str, Callable[[], int]]:
    """Fresh inputs for one round (n per variant), each bound to its timed loop.

    The bare checks run over the Sig_structures of the very codes idcode verifies.
    """
    ed_codes = formats.codes(Algorithm.EDDSA, n)
    es_codes = formats.codes(Algorithm.ES256, n)
    ed_parts = signed_parts(ed_codes, formats.eddsa.prefix)
    es_parts = signed_parts(es_codes, formats.es256.prefix)
    jwts = formats.jwts(n)
    cwts = formats.cwts(n)
    return {
        BARE_ED25519: lambda: time_bare_ed25519(formats.ed_public, ed_parts),
        IDCODE_EDDSA: lambda: time_idcode(formats.eddsa_trust, ed_codes),
        BARE_ES256: lambda: time_bare_es256(formats.es_public, es_parts),
        IDCODE_ES256: lambda: time_idcode(formats.es256_trust, es_codes),
        JWT_EDDSA: lambda: time_jwt(formats.ed_public, jwts),
        CWT_EDDSA: lambda: time_cwt(formats.cwt_verifying_key, cwts),
    }


def run_round(loops: dict[str, Callable[[], int]], rotation: int) -> dict[str, int]:
    """Run every loop once, starting at a different variant each round; GC off while timed."""
    labels = list(loops)
    order = labels[rotation % len(labels) :] + labels[: rotation % len(labels)]
    elapsed: dict[str, int] = {}
    gc.collect()
    gc.disable()
    try:
        for label in order:
            elapsed[label] = loops[label]()
    finally:
        gc.enable()
    return elapsed


@dataclass(frozen=True)
class Timing:
    calls_per_round: int
    rounds: list[dict[str, float]]  # per round: label -> ns per call

    def per_call(self, label: str) -> list[float]:
        return [r[label] for r in self.rounds]

    def median(self, label: str) -> float:
        return statistics.median(self.per_call(label))

    def round_ratios(self, label: str, baseline: str) -> list[float]:
        return [r[label] / r[baseline] for r in self.rounds]


def measure(formats: Formats, seconds: float, rounds: int) -> Timing:
    # Calibrate: one warm-up round, then size the rounds so the timed part takes ~seconds.
    probe = 40
    warm = run_round(make_round(formats, probe), 0)
    cost_per_call_set = sum(warm.values()) / probe
    n = int(seconds * 1e9 / rounds / cost_per_call_set)
    n = max(50, min(n, 20_000))
    results = []
    for index in range(rounds):
        elapsed = run_round(make_round(formats, n), index)
        results.append({label: ns / n for label, ns in elapsed.items()})
    return Timing(n, results)


# --- report ---------------------------------------------------------------------------


def verdict(ok: bool) -> str:
    return "ok" if ok else "MISS"


def print_header() -> None:
    impl = platform.python_implementation()
    print(
        f"machine: Python {platform.python_version()} ({impl}), "
        f"cryptography {version('cryptography')} ({openssl_backend.openssl_version_text()}), "
        f"cbor2 {version('cbor2')}, pyjwt {version('pyjwt')}, cwt {version('cwt')}; "
        f"os.cpu_count()={os.cpu_count()}; {platform.system()} {platform.machine()}"
    )


def print_sizes(formats: Formats) -> None:
    print()
    print("1. Code size (status index 3456789, age band 65-69, home care + meal subsidy)")
    print(
        f"{'format':<26}{'binary B':>9}{'text':>12}{'text chars':>11}"
        f"{'QR mode':>9}{'QR ver M':>9}  budget"
    )
    for alg in (Algorithm.EDDSA, Algorithm.ES256):
        issuer = formats.eddsa if alg is Algorithm.EDDSA else formats.es256
        code = formats.codes(alg, 1)[0]
        body = code[len(issuer.prefix) :]
        cose_bytes = len(decode_body(body))
        version_m = qr_version(code)
        ok = version_m <= QR_VERSION_BUDGET and len(body) <= BASE45_BUDGET
        label = f"idcode {alg.jose_name}"
        print(
            f"{label:<26}{cose_bytes:>9}{'code':>12}{len(code):>11}{'alnum':>9}{version_m:>9}"
            f"  {verdict(ok)} (QR <= {QR_VERSION_BUDGET}, base45 <= {BASE45_BUDGET})"
        )
        print(f"{'':<26}{'':>9}{'base45 part':>12}{len(body):>11}")
    token = formats.jwts(1)[0]
    jwt_version, jwt_mode = qr_version_m(token)
    print(
        f"{'JWT EdDSA (pyjwt)':<26}{len(token):>9}{'base64url':>12}{len(token):>11}"
        f"{jwt_mode:>9}{jwt_version:>9}"
    )
    raw = formats.cwts(1)[0]
    raw_version, raw_mode = qr_version_m(raw)
    text45 = base45.b45encode(raw).decode("ascii")
    v45, mode45 = qr_version_m(text45)
    text64 = b64url(raw)
    v64, mode64 = qr_version_m(text64)
    print(
        f"{'CWT EdDSA (cwt, tag 18)':<26}{len(raw):>9}{'raw bytes':>12}{'':>11}"
        f"{raw_mode:>9}{raw_version:>9}"
    )
    print(f"{'':<26}{'':>9}{'base45':>12}{len(text45):>11}{mode45:>9}{v45:>9}")
    print(f"{'':<26}{'':>9}{'base64url':>12}{len(text64):>11}{mode64:>9}{v64:>9}")
    print(
        "   idcode code = prefix + base45(COSE); binary B = COSE_Sign1 bytes (for the JWT: its"
        " text).\n   CWT: cwt's own encoding (tag 18, kid unprotected, nbf added); no prefix."
    )


def print_timing(timing: Timing) -> None:
    print()
    print(
        f"2./3. Verify time per token: {len(timing.rounds)} rounds x {timing.calls_per_round}"
        " fresh tokens per variant,\n      variants interleaved in every round, order rotated"
        " from round to round"
    )
    print(
        f"{'variant':<27}{'median us':>10}{'min us':>8}{'max us':>8}"
        f"{'ratio':>8}{'round ratios':>16}  target"
    )
    for variant in VARIANTS:
        per_call = timing.per_call(variant.label)
        row = (
            f"{variant.label:<27}{timing.median(variant.label) / 1e3:>10.1f}"
            f"{min(per_call) / 1e3:>8.1f}{max(per_call) / 1e3:>8.1f}"
        )
        if variant.baseline is not None:
            ratio = timing.median(variant.label) / timing.median(variant.baseline)
            spread = timing.round_ratios(variant.label, variant.baseline)
            row += f"{ratio:>7.2f}x{min(spread):>8.2f}-{max(spread):.2f}x"
            if variant.target is not None:
                row += f"  <= {variant.target}x {verdict(ratio <= variant.target)}"
        print(row)
    print(
        "   ratio = median(variant) / median(its bare check): idcode EdDSA, JWT and CWT against\n"
        "   Ed25519 bare, idcode ES256 against ES256 bare. Bare = cryptography verify() of the\n"
        "   same codes' Sig_structure bytes; for ES256 including the r||s -> DER conversion\n"
        "   that checking any COSE ES256 signature with cryptography needs. idcode verify() is\n"
        "   the whole decision: base45, COSE parse, key, signature, claims, clock, replay record\n"
        "   (fresh ReplayCache per round). round ratios = min-max of the same-round ratios."
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument(
        "--seconds", type=float, default=3.0, help="timed seconds in total (default 3)"
    )
    parser.add_argument("--rounds", type=int, default=9, help="interleaved rounds (default 9)")
    args = parser.parse_args(argv)
    if args.seconds <= 0 or args.rounds < 1:
        parser.error("--seconds must be positive and --rounds at least 1")

    formats = Formats.create()
    print_header()
    print_sizes(formats)
    started = time.perf_counter()
    timing = measure(formats, args.seconds, args.rounds)
    print_timing(timing)
    print()
    print(
        f"command: {shlex.join(sys.orig_argv)}  (cwd {os.getcwd()}; "
        f"{time.perf_counter() - started:.1f} s minting and timing)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
