#!/usr/bin/env python3
"""Compare SM2 implementations for Python with Ed25519, side by side in one run.

For every candidate that imports here, prints whether it agrees with ``idcode.gm`` (each
verifies the other's signatures and the GB/T 32918.5 Annex A example, made with the default
user id; idcode.gm itself is checked against OpenSSL's command line in tests/core/test_gm.py)
and its time per SM2-with-SM3 signature and verification, as a ratio to ``cryptography``'s
Ed25519 signature and verification measured in the same rounds. The issue's targets: SM2
verification at most 3x Ed25519's; pure Python (about 11 ms) is too slow to issue with.

Candidates other than idcode.gm are not dependencies of idcode; install them to compare:

    .venv/bin/pip install -c constraints.txt tongsuopy gmalglib gmssl-pyx gmssl-fast \
        gmssl gmalg snowland-smx gmssl-python easy-gmssl pyasn1
    .venv/bin/python bench/sm2.py [--seconds N] [--rounds R] [--clock wall|cpu]

gmssl-python and easy-gmssl bind GmSSL 3's shared library (libgmssl.so.3) with ctypes, which
Debian does not package; they are measured when ``ctypes.util.find_library("gmssl")`` (or
``LD_LIBRARY_PATH``) finds one.
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import secrets
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from cryptography.hazmat.backends.openssl.backend import backend as openssl_backend
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)

from idcode import gm

TARGET_VERIFY = 3.0
MESSAGE_LENGTH = 120  # about the Sig_structure of an issuer-signed code
POOL = 16  # distinct messages (and their signatures) per candidate, used in turn

# GB/T 32918.5-2016 Annex A (also GM/T 0003.5-2012): the recommended curve, the default id.
VECTOR_D = 0x3945208F7B2144B13F36E38AC6D39F95889393692860B51A42FB81EF4DF7C5B8
VECTOR_MESSAGE = b"message digest"
VECTOR_SIGNATURE = bytes.fromhex(
    "F5A03B0648D2C4630EEAC513E1BB81A15944DA3827D5B74143AC7EACEEE720B3"
    "B1B6AA29DF212FD8763182BC0D421CA1BB9038FD1F7F42D4840B69C485BBC1AA"
)

Sign = Callable[[bytes], bytes]  # message -> r || s
Verify = Callable[[bytes, bytes], bool]  # (r || s, message) -> valid


def raw_from_der(der: bytes) -> bytes:
    r, s = decode_dss_signature(der)
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def der_from_raw(raw: bytes) -> bytes:
    return encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big"))


def quietly(verify: Verify) -> Verify:
    """A verification that answers False where the library raises."""

    def checked(signature: bytes, message: bytes) -> bool:
        try:
            return bool(verify(signature, message))
        except Exception:
            return False

    return checked


# -- the candidates: each makes (sign, verify) for the private value d and its point -----------


def idcode_gm(d: int, point: bytes) -> tuple[Sign, Verify]:
    key = gm.SM2PrivateKey.from_private_value(d)
    public = gm.SM2PublicKey.from_bytes(point)

    def verify(signature: bytes, message: bytes) -> bool:
        public.verify(signature, message)
        return True

    return key.sign, quietly(verify)


def tongsuopy(d: int, point: bytes) -> tuple[Sign, Verify]:
    from tongsuopy.crypto import hashes
    from tongsuopy.crypto.asymciphers import ec

    key = ec.derive_private_key(d, ec.SM2())
    public = ec.EllipticCurvePublicKey.from_encoded_point(ec.SM2(), point)
    algorithm = ec.ECDSA(hashes.SM3())

    def verify(signature: bytes, message: bytes) -> bool:
        public.verify(der_from_raw(signature), message, algorithm)
        return True

    return lambda message: raw_from_der(key.sign(message, algorithm)), quietly(verify)


def gmalglib(d: int, point: bytes) -> tuple[Sign, Verify]:
    from gmalglib.sm2 import SM2

    signer = SM2(sk=d.to_bytes(32, "big"), uid=gm.SM2_DEFAULT_ID)
    verifier = SM2(pk=point, uid=gm.SM2_DEFAULT_ID)
    return signer.sign, quietly(lambda signature, message: verifier.verify(message, signature))


def gmssl_pyx(d: int, point: bytes) -> tuple[Sign, Verify]:
    import gmssl_pyx as g

    private, public = d.to_bytes(32, "big"), point[1:]

    def sign(message: bytes) -> bytes:
        return raw_from_der(g.sm2_sign(private, public, message, gm.SM2_DEFAULT_ID))

    def verify(signature: bytes, message: bytes) -> bool:
        return g.sm2_verify(public, message, der_from_raw(signature), gm.SM2_DEFAULT_ID)

    return sign, quietly(verify)


def gmssl_fast(d: int, point: bytes) -> tuple[Sign, Verify]:
    from gmssl_fast import SM2

    signer = SM2(private_key=f"{d:064x}", public_key=point.hex())
    verifier = SM2(public_key=point.hex())
    return signer.sign, quietly(lambda signature, message: verifier.verify(message, signature))


def gmssl_python(d: int, point: bytes) -> tuple[Sign, Verify]:
    # The module is gmssl.py, which the pure-Python gmssl package's directory would shadow.
    import importlib.util
    from importlib.metadata import distribution

    files = distribution("gmssl-python").files or []
    path = next(str(f.locate()) for f in files if str(f) == "gmssl.py")
    spec = importlib.util.spec_from_file_location("gmssl_python_module", path)
    assert spec is not None and spec.loader is not None
    g: Any = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(g)  # raises where libgmssl.so.3 cannot be found
    return gmssl_library(g, d, point)


def easy_gmssl(d: int, point: bytes) -> tuple[Sign, Verify]:
    from easy_gmssl import gmssl as g

    return gmssl_library(g, d, point)


def gmssl_library(g: Any, d: int, point: bytes) -> tuple[Sign, Verify]:
    """gmssl-python's API (easy-gmssl carries a copy of it). It imports keys only from PEM
    files encrypted in GmSSL's own way (PBKDF2-HMAC-SM3, SM4-CBC), so the key's fields, a
    ctypes structure that mirrors GmSSL's SM2_KEY, are filled in directly."""

    def key(private: bool) -> Any:
        sm2_key = g.Sm2Key()
        sm2_key.public_key.x[:] = point[1:33]
        sm2_key.public_key.y[:] = point[33:]
        sm2_key._has_public_key = True
        if private:
            sm2_key.private_key[:] = d.to_bytes(32, "big")
            sm2_key._has_private_key = True
        return sm2_key

    signer_key, verifier_key = key(private=True), key(private=False)
    default_id = gm.SM2_DEFAULT_ID.decode()

    def sign(message: bytes) -> bytes:
        signer = g.Sm2Signature(signer_key, default_id, g.DO_SIGN)
        signer.update(message)
        return raw_from_der(signer.sign())

    def verify(signature: bytes, message: bytes) -> bool:
        verifier = g.Sm2Signature(verifier_key, default_id, g.DO_VERIFY)
        verifier.update(message)
        return bool(verifier.verify(der_from_raw(signature)))

    return sign, quietly(verify)


def gmssl_pure(d: int, point: bytes) -> tuple[Sign, Verify]:
    from gmssl.sm2 import CryptSM2

    crypt = CryptSM2(private_key=f"{d:064x}", public_key=point[1:].hex())
    return (
        lambda message: bytes.fromhex(crypt.sign_with_sm3(message)),
        quietly(lambda signature, message: crypt.verify_with_sm3(signature.hex(), message)),
    )


def gmalg(d: int, point: bytes) -> tuple[Sign, Verify]:
    from gmalg import SM2

    sm2 = SM2(sk=d.to_bytes(32, "big"), uid=gm.SM2_DEFAULT_ID, pk=point)

    def sign(message: bytes) -> bytes:
        r, s = sm2.sign(message)
        return r.rjust(32, b"\0") + s.rjust(32, b"\0")

    def verify(signature: bytes, message: bytes) -> bool:
        return sm2.verify(message, signature[:32], signature[32:])

    return sign, quietly(verify)


def pysmx(d: int, point: bytes) -> tuple[Sign, Verify]:
    from pysmx.SM2 import Sign as smx_sign
    from pysmx.SM2 import Verify as smx_verify

    private, public = f"{d:064x}", point[1:]

    def sign(message: bytes) -> bytes:
        k = f"{secrets.randbelow(gm.N - 1) + 1:064x}"
        signature = smx_sign(message, private, k, 64, uid=gm.SM2_DEFAULT_ID)
        return signature if isinstance(signature, bytes) else bytes.fromhex(signature)

    def verify(signature: bytes, message: bytes) -> bool:
        return smx_verify(signature.hex(), message, public, 64, uid=gm.SM2_DEFAULT_ID)

    return sign, quietly(verify)


@dataclass
class Candidate:
    name: str
    distribution: str
    kind: str
    make: Callable[[int, bytes], tuple[Sign, Verify]]
    version: str = ""
    missing: str = ""
    agrees: str = ""
    sign: Sign | None = None
    verify: Verify | None = None
    messages: list[bytes] = field(default_factory=list)
    signatures: list[bytes] = field(default_factory=list)


CANDIDATES = [
    Candidate("idcode.gm", "", "system OpenSSL 3 libcrypto, ctypes", idcode_gm),
    Candidate("tongsuopy", "tongsuopy", "Tongsuo (OpenSSL fork) in the wheel", tongsuopy),
    Candidate("gmalglib", "gmalglib", "C extension (own code)", gmalglib),
    Candidate("gmssl-pyx", "gmssl-pyx", "GmSSL 3, static in the wheel", gmssl_pyx),
    Candidate("gmssl-fast", "gmssl-fast", "GmSSL, static in the wheel", gmssl_fast),
    Candidate("gmssl-python", "gmssl-python", "GmSSL 3 libgmssl, ctypes", gmssl_python),
    Candidate("easy-gmssl", "easy-gmssl", "GmSSL 3 libgmssl, ctypes", easy_gmssl),
    Candidate("gmssl", "gmssl", "pure Python", gmssl_pure),
    Candidate("gmalg", "gmalg", "pure Python", gmalg),
    Candidate("snowland-smx", "snowland-smx", "pure Python (pysmx)", pysmx),
]


def prepare(candidate: Candidate, d: int, point: bytes) -> None:
    try:
        candidate.version = (
            version(candidate.distribution) if candidate.distribution else gm.sm2_backend()
        )
    except PackageNotFoundError:
        candidate.missing = "not installed"
        return
    try:
        candidate.sign, candidate.verify = candidate.make(d, point)
        _, vector_verify = candidate.make(VECTOR_D, vector_point())
    except Exception as exc:  # a library that cannot load here (e.g. no libgmssl.so.3)
        candidate.missing = f"unusable: {type(exc).__name__}: {str(exc)[:60]}"
        return
    reference = gm.SM2PrivateKey.from_private_value(d)
    reference_public = reference.public_key()
    message = secrets.token_bytes(MESSAGE_LENGTH)
    problems = []
    own = candidate.sign(message)
    try:
        reference_public.verify(own, message)
    except Exception:
        problems.append("its signature fails idcode.gm")
    if not candidate.verify(reference.sign(message), message):
        problems.append("refuses idcode.gm's signature")
    if not vector_verify(VECTOR_SIGNATURE, VECTOR_MESSAGE):
        problems.append("refuses the GB/T 32918.5 example")
    if candidate.verify(own, message + b"!"):
        problems.append("accepts another message")
    candidate.agrees = "yes" if not problems else "NO: " + "; ".join(problems)
    candidate.messages = [secrets.token_bytes(MESSAGE_LENGTH) for _ in range(POOL)]
    candidate.signatures = [candidate.sign(m) for m in candidate.messages]


def vector_point() -> bytes:
    return gm.SM2PrivateKey.from_private_value(VECTOR_D).public_key().to_bytes()


@dataclass
class Variant:
    name: str
    call: Callable[[int], None]  # call(i): one operation on the i-th input
    per_call: list[float] = field(default_factory=list)  # seconds, one figure per round
    batch: int = 1


def calibrate(variant: Variant, budget: float, clock: Callable[[], float]) -> None:
    start = clock()
    count = 0
    while clock() - start < 0.02 or count < 2:
        variant.call(count)
        count += 1
    per_call = (clock() - start) / count
    variant.batch = max(2, int(budget / per_call))


def run_round(variants: list[Variant], clock: Callable[[], float]) -> None:
    for variant in variants:
        gc.disable()
        try:
            start = clock()
            for i in range(variant.batch):
                variant.call(i)
            elapsed = clock() - start
        finally:
            gc.enable()
        variant.per_call.append(elapsed / variant.batch)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=12.0, help="timed budget in all")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--clock", choices=["wall", "cpu"], default="wall")
    args = parser.parse_args(argv)
    clock = time.perf_counter if args.clock == "wall" else time.thread_time

    d = secrets.randbelow(gm.N - 2) + 1
    point = gm.SM2PrivateKey.from_private_value(d).public_key().to_bytes()
    for candidate in CANDIDATES:
        prepare(candidate, d, point)
    usable = [c for c in CANDIDATES if c.sign is not None and c.verify is not None]

    ed_key = Ed25519PrivateKey.generate()
    ed_public = ed_key.public_key()
    ed_messages = [secrets.token_bytes(MESSAGE_LENGTH) for _ in range(POOL)]
    ed_signatures = [ed_key.sign(m) for m in ed_messages]
    variants = [
        Variant("Ed25519 sign", lambda i: ed_key.sign(ed_messages[i % POOL]) and None),
        Variant(
            "Ed25519 verify",
            lambda i: ed_public.verify(ed_signatures[i % POOL], ed_messages[i % POOL]),
        ),
    ]
    for c in usable:
        sign, verify, messages, signatures = c.sign, c.verify, c.messages, c.signatures
        assert sign is not None and verify is not None
        variants.append(
            Variant(f"{c.name} sign", lambda i, s=sign, m=messages: s(m[i % POOL]) and None)
        )

        def verify_one(
            i: int, v: Verify = verify, m: list[bytes] = messages, s: list[bytes] = signatures
        ) -> None:
            if not v(s[i % POOL], m[i % POOL]):
                raise SystemExit("a signature that verified before failed")

        variants.append(Variant(f"{c.name} verify", verify_one))

    budget = args.seconds / args.rounds / len(variants)
    for variant in variants:
        calibrate(variant, budget, clock)
    for round_number in range(args.rounds):
        shift = round_number % len(variants)
        run_round(variants[shift:] + variants[:shift], clock)

    print_header(args)
    by_name = {v.name: v for v in variants}
    ed_sign, ed_verify = by_name["Ed25519 sign"], by_name["Ed25519 verify"]
    print(
        f"Ed25519 (cryptography): sign {median_us(ed_sign):.1f} us, "
        f"verify {median_us(ed_verify):.1f} us (medians; the ratios below divide by these)\n"
    )
    header = (
        "| candidate | what it is | version | agrees | sign us | sign x Ed25519 | verify us "
        f"| verify x Ed25519 (target <= {TARGET_VERIFY:g}x) | verify round ratios |"
    )
    print(header)
    print("|" + " --- |" * 9)
    for c in CANDIDATES:
        if c.sign is None:
            print(f"| {c.name} | {c.kind} | {c.version or '-'} | {c.missing} | | | | | |")
            continue
        sign_variant, verify_variant = by_name[f"{c.name} sign"], by_name[f"{c.name} verify"]
        low, high = round_ratio_range(verify_variant, ed_verify)
        print(
            f"| {c.name} | {c.kind} | {c.version} | {c.agrees} "
            f"| {median_us(sign_variant):.0f} | {ratio(sign_variant, ed_sign):.2f}x "
            f"| {median_us(verify_variant):.0f} | {ratio(verify_variant, ed_verify):.2f}x "
            f"| {low:.2f}-{high:.2f}x |"
        )
    return 0


def median_us(variant: Variant) -> float:
    return statistics.median(variant.per_call) * 1e6


def ratio(variant: Variant, base: Variant) -> float:
    return statistics.median(variant.per_call) / statistics.median(base.per_call)


def round_ratio_range(variant: Variant, base: Variant) -> tuple[float, float]:
    ratios = [a / b for a, b in zip(variant.per_call, base.per_call, strict=True)]
    return min(ratios), max(ratios)


def print_header(args: argparse.Namespace) -> None:
    load = os.getloadavg() if hasattr(os, "getloadavg") else (0.0, 0.0, 0.0)
    print(
        f"# SM2 against Ed25519: {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cores, load {load[0]:.2f}; Python {platform.python_version()}, "
        f"cryptography {version('cryptography')} ({openssl_backend.openssl_version_text()}); "
        f"{args.rounds} rounds, {args.seconds:g} s timed, clock {args.clock}, "
        f"{MESSAGE_LENGTH}-byte messages\n"
    )
    sys.stdout.flush()


if __name__ == "__main__":
    raise SystemExit(main())
