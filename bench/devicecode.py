#!/usr/bin/env python3
"""Benchmark the whole offline decision on a device code against one bare signature check.

What a terminal does per scan of a device code (docs/code-format.md section 8), timed as
``idcode.decider.Decider.decide`` at a community gate, exactly as the terminal runtime and
``TestTerminal`` call it:

- the verifier (``idcode.verifier.verify``): prefix, base45, the device code's layout, the
  credential (its kind, kid, expiry, card, device key: an Ed25519 key is loaded, a P-256
  key decompressed from its 33 bytes), the issuer's signature over the credential (first
  sight only: the trust remembers credentials it verified), the key's signing period, the
  device's signature over the code, the clock checks, the removed devices, the status list,
  and the replay record (a ``ReplayCache``);
- the scene: the card's community subject (HMAC-SHA-256 with the scene key) and the
  community adapter's decision (a resident among 10,000 residents).

Not in it: writing the journal line (SQLite, synchronous=FULL: an fsync per decision, which
the terminal does before acting). ``--journal`` adds a row for it, for scale, without a target.

The bare check is one ``cryptography`` verification of one signature: the device's own
signature over the same codes' Sig_structure bytes, Ed25519 or P-256 (for P-256 including
the r||s to DER conversion, which checking any COSE ES256 signature with cryptography needs).

Two cases per device key:
- first sight: each code from a phone this terminal has not seen, with a credential the trust
  has not verified yet: two signature checks (the issuer's, the device's);
- repeat: codes from phones whose credentials the trust verified earlier (one code each before
  timing): one signature check.

Budget (the issue): the whole decision at most 2.2x one bare signature check. The machine is
shared and noisy, so every variant runs once per round on fresh inputs, in a rotating order,
for several rounds, and each figure is the median per-call time over those rounds.

    .venv/bin/python bench/devicecode.py [--seconds N] [--rounds R] [--issuer EdDSA|ES256]
                                         [--journal] [--clock wall|cpu]
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import secrets
import shlex
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from importlib.metadata import version
from pathlib import Path
from typing import Any

from cryptography.hazmat.backends.openssl.backend import backend as openssl_backend
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from idcode.claims import AgeBand, Programme, Residency
from idcode.codetext import decode_body
from idcode.cose import Algorithm
from idcode.decider import Decider
from idcode.devicecode import decode_device_message, device_to_be_signed
from idcode.qr import qr_version
from idcode.replay import ReplayCache
from idcode.scenes import MemoryHistory, load_adapter
from idcode.terminal.journal import Journal, JournalReplay
from idcode.testing import TestIssuer, random_card

NOW = int(time.time())
#: What the loops are timed by: the wall clock (perf_counter), or with --clock cpu this
#: thread's CPU time, which does not count the time the thread waited for a core on a
#: machine busy with other work (it still shares caches and memory bandwidth with it).
_clock = time.perf_counter_ns
BUDGET = 2.2
QR_BUDGET = 10
RESIDENTS = 10_000  # other residents of the community, besides the phones' citizens
REPEAT_PHONES = 200  # the phones a gate sees again and again
_ECDSA_SHA256 = ec.ECDSA(hashes.SHA256())
_COMMUNITY = load_adapter("community")
_OTHER_RESIDENTS = [secrets.token_hex(12) for _ in range(RESIDENTS)]

DeviceKey = Ed25519PrivateKey | ec.EllipticCurvePrivateKey


def new_device_key(alg: Algorithm) -> DeviceKey:
    if alg is Algorithm.EDDSA:
        return Ed25519PrivateKey.generate()
    return ec.generate_private_key(ec.SECP256R1())


@dataclass(frozen=True)
class Phone:
    key: DeviceKey
    blob: bytes
    subject: str


def phones(issuer: TestIssuer, alg: Algorithm, n: int) -> list[Phone]:
    """``n`` phones of distinct citizens, each with a fresh key and credential."""
    made = []
    for _ in range(n):
        key = new_device_key(alg)
        card = random_card(
            status_index=secrets.randbelow(3_000_000),
            residency=Residency.REGISTERED,
            age_band=AgeBand.AGE_65_69,
            programmes=Programme.HOME_CARE | Programme.MEAL_SUBSIDY,
        )
        made.append(Phone(key, issuer.credential(key, card), issuer.subject(card, "community")))
    return made


def gate(issuer: TestIssuer, residents: Sequence[str], replay: Any = None) -> Decider:
    """A community gate's decider over a bundle listing ``residents`` (and 10,000 others)."""
    bundle = issuer.bundle(
        "community", data={"residents": [*residents, *_OTHER_RESIDENTS], "visitors": False}
    )
    return Decider(
        bundle,
        _COMMUNITY,
        prefix=issuer.prefix,
        replay=replay if replay is not None else ReplayCache(capacity=200_000),
        algorithms=(issuer.alg,),
    )


def bare_parts(codes: Sequence[str], prefix_length: int) -> list[tuple[Any, bytes, bytes]]:
    """(the device key's verify, its signature, the Sig_structure) of each code, parsed and
    loaded outside any timing."""
    keys: dict[bytes, Any] = {}
    parts = []
    for code in codes:
        message = decode_device_message(decode_body(code[prefix_length:]))
        device = message.credential.device
        if device.raw not in keys:
            keys[device.raw] = device.public_key().key.verify
        parts.append(
            (keys[device.raw], message.device_signature, device_to_be_signed(message.payload))
        )
    return parts


# --- timed loops: each runs over fresh inputs once and returns elapsed nanoseconds ---------


def time_bare_ed25519(items: Sequence[tuple[Any, bytes, bytes]]) -> int:
    start = _clock()
    for check, signature, message in items:
        check(signature, message)
    return _clock() - start


def time_bare_p256(items: Sequence[tuple[Any, bytes, bytes]]) -> int:
    algorithm, from_bytes = _ECDSA_SHA256, int.from_bytes
    start = _clock()
    for check, raw, message in items:
        der = encode_dss_signature(from_bytes(raw[:32], "big"), from_bytes(raw[32:], "big"))
        check(der, message, algorithm)
    return _clock() - start


def time_decisions(decider: Decider, codes: Sequence[str]) -> int:
    history = MemoryHistory()
    decide = decider.decide
    admitted = 0
    start = _clock()
    for code in codes:
        admitted += decide(code, NOW, history)[1].admitted
    elapsed = _clock() - start
    if admitted != len(codes):
        raise SystemExit(f"the gate admitted {admitted} of {len(codes)} device codes")
    return elapsed


def time_journaled(decider: Decider, journal: Journal, codes: Sequence[str]) -> int:
    """What the terminal runtime's scan does: decide (history and replay in the journal),
    then journal the decision durably."""
    decide, record = decider.decide, journal.record
    terminal = "bench"
    admitted = 0
    start = _clock()
    for code in codes:
        scan, decision = decide(code, NOW, journal)
        admitted += record(terminal, scan, decision).admitted
    elapsed = _clock() - start
    if admitted != len(codes):
        raise SystemExit(f"the journaled gate admitted {admitted} of {len(codes)} device codes")
    return elapsed


# --- variants and rounds -------------------------------------------------------------------


@dataclass(frozen=True)
class Variant:
    label: str
    baseline: str | None  # the bare check this variant is a ratio against
    target: float | None
    floor: tuple[str, str] | None = None  # the two bare checks a first sight cannot skip


BARE = {Algorithm.EDDSA: "Ed25519 bare verify", Algorithm.ES256: "P-256 bare verify"}
DEVICE_NAME = {Algorithm.EDDSA: "Ed25519", Algorithm.ES256: "P-256"}


def first_label(alg: Algorithm) -> str:
    return f"{DEVICE_NAME[alg]} device, first sight"


def repeat_label(alg: Algorithm) -> str:
    return f"{DEVICE_NAME[alg]} device, repeat"


JOURNALED = "Ed25519 repeat + journal line"


def variants(issuer_alg: Algorithm, journal: bool) -> list[Variant]:
    listed = [
        Variant(BARE[Algorithm.EDDSA], None, None),
        Variant(BARE[Algorithm.ES256], None, None),
    ]
    for alg in (Algorithm.EDDSA, Algorithm.ES256):
        floor = (BARE[issuer_alg], BARE[alg])
        listed.append(Variant(first_label(alg), BARE[alg], BUDGET, floor))
        listed.append(Variant(repeat_label(alg), BARE[alg], BUDGET))
    if journal:
        listed.append(Variant(JOURNALED, BARE[Algorithm.EDDSA], None))
    return listed


@dataclass
class Setup:
    issuer: TestIssuer
    journal_dir: Path | None
    #: Per device algorithm: the phones a gate sees again, and a gate that verified each
    #: phone's credential once already.
    regulars: dict[Algorithm, list[Phone]]
    regular_gates: dict[Algorithm, Decider]
    journal: Journal | None = None
    journaled_gate: Decider | None = None

    @classmethod
    def create(cls, issuer_alg: Algorithm, journal: bool) -> Setup:
        issuer = TestIssuer(alg=issuer_alg, kid="T", now=NOW)
        regulars = {alg: phones(issuer, alg, REPEAT_PHONES) for alg in Algorithm}
        gates = {}
        for alg, seen in regulars.items():
            gates[alg] = gate(issuer, [phone.subject for phone in seen])
        setup = cls(issuer, None, regulars, gates)
        setup.remind()  # each phone shown once before: its credential is remembered
        if journal:
            # On the disk under the working directory, not /tmp (often RAM): an fsync there
            # is what a terminal pays.
            setup.journal_dir = Path(tempfile.mkdtemp(prefix=".bench-journal-", dir=os.getcwd()))
            setup.journal_dir.chmod(0o700)
            setup.journal = Journal(setup.journal_dir / "journal.sqlite3")
            seen = regulars[Algorithm.EDDSA]
            setup.journaled_gate = gate(
                issuer, [phone.subject for phone in seen], JournalReplay(setup.journal)
            )
            for phone in seen:
                code = issuer.device_code(phone.key, phone.blob)
                setup.journaled_gate.decide(code, NOW, setup.journal)
        return setup

    def remind(self) -> None:
        """Show each regular phone once more, outside timing: whatever the last round's new
        phones pushed out of the verifier's bounded memories is remembered again."""
        for alg, seen in self.regulars.items():
            for phone in seen:
                code = self.issuer.device_code(phone.key, phone.blob)
                self.regular_gates[alg].decide(code, NOW, MemoryHistory())

    def close(self) -> None:
        if self.journal is not None:
            self.journal.close()
        if self.journal_dir is not None:
            shutil.rmtree(self.journal_dir, ignore_errors=True)

    def codes(self, regulars: Sequence[Phone], n: int) -> list[str]:
        """``n`` fresh codes from ``regulars`` in turn."""
        return [
            self.issuer.device_code(phone.key, phone.blob)
            for phone in (regulars[i % len(regulars)] for i in range(n))
        ]

    def round(self, n: int, journal_n: int) -> dict[str, Callable[[], int]]:
        """Fresh inputs for one round (n per variant), each bound to its timed loop."""
        issuer, prefix_length = self.issuer, len(self.issuer.prefix)
        loops: dict[str, Callable[[], int]] = {}
        self.remind()
        for alg in (Algorithm.EDDSA, Algorithm.ES256):
            new = phones(issuer, alg, n)  # never seen: first sight of phone and credential
            first_codes = [issuer.device_code(phone.key, phone.blob) for phone in new]
            first_gate = gate(issuer, [phone.subject for phone in new])
            repeat_codes = self.codes(self.regulars[alg], n)
            # The bare check: the device signatures of the very codes the repeat variant
            # decides (checking a signature consumes nothing).
            parts = bare_parts(repeat_codes, prefix_length)
            bare = time_bare_ed25519 if alg is Algorithm.EDDSA else time_bare_p256
            loops[BARE[alg]] = partial(bare, parts)
            loops[first_label(alg)] = partial(time_decisions, first_gate, first_codes)
            loops[repeat_label(alg)] = partial(
                time_decisions, self.regular_gates[alg], repeat_codes
            )
        if self.journal is not None and self.journaled_gate is not None:
            codes = self.codes(self.regulars[Algorithm.EDDSA], journal_n)
            loops[JOURNALED] = partial(time_journaled, self.journaled_gate, self.journal, codes)
        return loops


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
    journal_calls_per_round: int
    rounds: list[dict[str, float]]  # per round: label -> ns per call

    def per_call(self, label: str) -> list[float]:
        return [r[label] for r in self.rounds]

    def median(self, label: str) -> float:
        return statistics.median(self.per_call(label))

    def round_ratios(self, label: str, baseline: str) -> list[float]:
        return [r[label] / r[baseline] for r in self.rounds]

    def round_floor_ratios(self, label: str, floor: tuple[str, str]) -> list[float]:
        return [r[label] / (r[floor[0]] + r[floor[1]]) for r in self.rounds]


def measure(setup: Setup, seconds: float, rounds: int, journal: bool) -> Timing:
    probe = 30
    warm = run_round(setup.round(probe, probe if journal else 0), 0)
    timed = {label: ns for label, ns in warm.items() if label != JOURNALED}
    n = int(seconds * 1e9 / rounds / (sum(timed.values()) / probe))
    # At most 1,500: a round makes 2n new phones, and the verifier's memories (verified
    # credentials, device keys) hold 4,096 each before they are cleared, which would turn
    # the regular phones' codes into first sights.
    n = max(50, min(n, 1_500))
    # The journal's fsyncs cost milliseconds: a tenth as many calls, so it does not take the
    # run's whole budget (its figure is for scale only).
    journal_n = max(20, n // 10) if journal else 0
    results = []
    for index in range(rounds):
        elapsed = run_round(setup.round(n, journal_n), index)
        results.append(
            {label: ns / (journal_n if label == JOURNALED else n) for label, ns in elapsed.items()}
        )
    return Timing(n, journal_n, results)


# --- report ----------------------------------------------------------------------------------


def print_header(issuer_alg: Algorithm, clock: str) -> None:
    print(
        f"machine: Python {platform.python_version()} ({platform.python_implementation()}), "
        f"cryptography {version('cryptography')} ({openssl_backend.openssl_version_text()}); "
        f"os.cpu_count()={os.cpu_count()}; {platform.system()} {platform.machine()}; "
        f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}"
    )
    print(f"issuer key: {issuer_alg.jose_name} (signs the credentials); clock: {clock}")


def print_sizes(setup: Setup) -> None:
    print()
    print("1. Device code size (card with status index < 3,000,000, two programme flags)")
    for alg in (Algorithm.EDDSA, Algorithm.ES256):
        code = setup.codes(setup.regulars[alg], 1)[0]
        cose = len(decode_body(code[len(setup.issuer.prefix) :]))
        version_m = qr_version(code)
        ok = "ok" if version_m <= QR_BUDGET else "MISS"
        print(
            f"   {DEVICE_NAME[alg]:<8} device key: {cose} bytes of COSE, {len(code)} characters,"
            f" QR version {version_m}-M  (budget <= {QR_BUDGET}-M: {ok})"
        )


def print_timing(timing: Timing, listed: list[Variant]) -> None:
    journaled = timing.journal_calls_per_round
    print()
    print(
        f"2. The whole decision per device code: {len(timing.rounds)} rounds x "
        f"{timing.calls_per_round} fresh codes per variant"
        + (f" ({journaled} with the journal)" if journaled else "")
        + ",\n   variants interleaved in every round, order rotated from round to round"
    )
    print(
        f"{'variant':<32}{'median us':>10}{'min us':>8}{'max us':>8}{'x bare':>8}"
        f"{'round x bare':>16}{'x floor':>9}  budget"
    )
    for variant in listed:
        per_call = timing.per_call(variant.label)
        row = (
            f"{variant.label:<32}{timing.median(variant.label) / 1e3:>10.1f}"
            f"{min(per_call) / 1e3:>8.1f}{max(per_call) / 1e3:>8.1f}"
        )
        if variant.baseline is not None:
            ratio = timing.median(variant.label) / timing.median(variant.baseline)
            spread = timing.round_ratios(variant.label, variant.baseline)
            row += f"{ratio:>7.2f}x{min(spread):>8.2f}-{max(spread):.2f}x"
            if variant.floor is not None:
                floor = timing.median(variant.floor[0]) + timing.median(variant.floor[1])
                row += f"{timing.median(variant.label) / floor:>8.2f}x"
            else:
                row += f"{'':>9}"
            if variant.target is not None:
                row += f"  <= {variant.target}x {'ok' if ratio <= variant.target else 'MISS'}"
        print(row)
    print(
        "   x bare = median(variant) / median(one bare check of the device key's algorithm):\n"
        "   cryptography's verify() of the device signature over the same codes' Sig_structure\n"
        "   (P-256 with the r||s -> DER conversion). x floor (first sight) = median(variant) /\n"
        "   (median bare check of the issuer's algorithm + median bare check of the device's):\n"
        "   the two checks a first sight cannot skip. round x bare = min-max of the same ratio\n"
        "   within each round. The decision = Decider.decide at a community gate: verify()\n"
        "   with replay record, the scene subject and the adapter; no journal line"
        + (
            " (its row:\n   decide with the journal's history and replay, then Journal.record,"
            " SQLite\n   WAL synchronous=FULL on the working directory's disk)."
            if journaled
            else "."
        )
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=6.0, help="timed seconds (default 6)")
    parser.add_argument("--rounds", type=int, default=9, help="interleaved rounds (default 9)")
    parser.add_argument(
        "--issuer",
        default="EdDSA",
        choices=["EdDSA", "ES256"],
        help="the issuer key's algorithm, which signs the credentials (default EdDSA)",
    )
    parser.add_argument(
        "--journal", action="store_true", help="add a row with the journal line (for scale)"
    )
    parser.add_argument(
        "--clock",
        default="wall",
        choices=["wall", "cpu"],
        help="time by the wall clock (default) or by this thread's CPU time (a busy machine)",
    )
    args = parser.parse_args(argv)
    if args.seconds <= 0 or args.rounds < 1:
        parser.error("--seconds must be positive and --rounds at least 1")
    issuer_alg = Algorithm.from_name(args.issuer)
    global _clock
    _clock = time.thread_time_ns if args.clock == "cpu" else time.perf_counter_ns
    started = time.perf_counter()
    setup = Setup.create(issuer_alg, args.journal)
    try:
        print_header(
            issuer_alg, "this thread's CPU time" if args.clock == "cpu" else "wall (perf_counter)"
        )
        print_sizes(setup)
        timing = measure(setup, args.seconds, args.rounds, args.journal)
        print_timing(timing, variants(issuer_alg, args.journal))
    finally:
        setup.close()
    print()
    print(
        f"command: {shlex.join(sys.orig_argv)}  (cwd {os.getcwd()}; "
        f"{time.perf_counter() - started:.1f} s in all)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
