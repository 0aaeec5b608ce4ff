#!/usr/bin/env python3
"""Benchmark a bus validator: the decision time at the door, journal write included.

A validator on one line of an operator with 200 lines decides on a stream of distinct codes
(distinct passengers, mixed ages and programmes, every one admitted) as the terminal runtime
does per scan: ``Decider.decide`` (the offline verifier with the replay check in the
journal, the site's subject, the transport adapter reading the passenger's history in the
journal: repeat, transfer, daily cap) and then ``Journal.record`` (SQLite in WAL mode with
synchronous=FULL: an fsync per decision, before the door acts). The journal is in a scratch
directory under the working directory, so on its disk, and holds a busy day's boardings
before timing starts.

Side by side in the same rounds, on the same kind of fresh codes:

- the bare Ed25519 signature check (``cryptography``) over the codes' Sig_structure;
- the decision without the journal line: the same history reads from the journal, the replay
  check in memory, nothing written (what the fsync and the insert cost is the difference).

Each round times every variant once on fresh codes, the order rotated from round to round,
garbage collection off while timed; each decision is timed on its own (for the journaled
variant too: its p99 is the door's figure). Prints per variant the p50, p99 and max over all
rounds, the throughput (decisions a second, back to back), and the p50 ratios to the bare
check, with the target of the issue: p99 <= 20 ms with the journal, and a throughput well
above a bus door's 30 boardings a minute.

    .venv/bin/python bench/transport.py [--rounds R] [--per-round N] [--history H]
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import secrets
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

from cryptography.hazmat.backends.openssl.backend import backend as openssl_backend
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from idcode.claims import AgeBand, Programme, Residency
from idcode.codetext import decode_body
from idcode.cose import decode_sign1
from idcode.decider import Decider
from idcode.replay import ReplayCache
from idcode.terminal.journal import Journal, JournalReplay
from idcode.testing import TestIssuer, random_card
from idcode_adapters.transport import Adapter

NOW = int(time.time())
TTL = 3600  # the codes of the whole run are valid at NOW
P99_TARGET_MS = 20.0
DOOR_PER_SECOND = 30 / 60  # a bus door: 30 boardings a minute
LINES = {f"{number}": 200 + 100 * (number % 3) for number in range(1, 201)}
TARIFF = {"lines": LINES, "transfer_discount": 100, "daily_cap": 1000}
TERMINAL = "00000000-0000-4000-8000-00000000b05e"
_AGES = (AgeBand.AGE_18_59,) * 6 + (AgeBand.AGE_60_64, AgeBand.AGE_65_69, AgeBand.AGE_6_17)
_PROGRAMMES = (Programme.NONE,) * 8 + (Programme.STUDENT, Programme.DISABILITY)

BARE = "Ed25519 bare verify"
DECISION = "decision, no journal line"
JOURNALED = "decision + journal line"
VARIANTS = (BARE, DECISION, JOURNALED)


def passengers_codes(issuer: TestIssuer, n: int) -> list[str]:
    """Fresh codes of ``n`` distinct passengers (mixed ages and programmes)."""
    return [
        issuer.mint(
            random_card(
                status_index=secrets.randbelow(3_000_000),
                residency=Residency.REGISTERED,
                age_band=_AGES[secrets.randbelow(len(_AGES))],
                programmes=_PROGRAMMES[secrets.randbelow(len(_PROGRAMMES))],
            ),
            at=NOW,
            ttl=TTL,
        )
        for _ in range(n)
    ]


@dataclass
class Setup:
    issuer: TestIssuer
    scratch: Path
    journal: Journal
    journaled: Decider
    unwritten: Decider
    verify: Callable[[bytes, bytes], None]

    @classmethod
    def create(cls, history: int) -> Setup:
        issuer = TestIssuer(now=NOW)
        bundle = issuer.bundle("transport", "city-bus", TARIFF)
        scratch = Path(tempfile.mkdtemp(prefix=".bench-transport-", dir=os.getcwd()))
        scratch.chmod(0o700)
        journal = Journal(scratch / "journal.sqlite3")

        def validator(replay: JournalReplay | ReplayCache) -> Decider:
            return Decider(
                bundle, Adapter, prefix=issuer.prefix, replay=replay, options={"line": "17"}
            )

        journaled = validator(JournalReplay(journal))
        # A busy day on this bus before timing: other passengers' boardings in the journal.
        for code in passengers_codes(issuer, history):
            scan, decision = journaled.decide(code, NOW - 3600, journal)
            journal.record(TERMINAL, scan, decision)
        private = issuer.key.private_key
        assert isinstance(private, Ed25519PrivateKey)
        return cls(
            issuer,
            scratch,
            journal,
            journaled,
            validator(ReplayCache(capacity=1_000_000)),
            private.public_key().verify,
        )

    def close(self) -> None:
        self.journal.close()
        shutil.rmtree(self.scratch, ignore_errors=True)


def time_bare(
    verify: Callable[[bytes, bytes], None], codes: Sequence[str], prefix: int
) -> list[int]:
    parts = []
    for code in codes:  # parsed outside timing
        sign1 = decode_sign1(decode_body(code[prefix:]))
        parts.append((sign1.signature, sign1.to_be_signed()))
    clock, times = time.perf_counter_ns, []
    for signature, signed in parts:
        start = clock()
        verify(signature, signed)
        times.append(clock() - start)
    return times


def time_unwritten(decider: Decider, journal: Journal, codes: Sequence[str]) -> list[int]:
    clock, times = time.perf_counter_ns, []
    for code in codes:
        start = clock()
        decision = decider.decide(code, NOW, journal)[1]
        times.append(clock() - start)
        if not decision.admitted:
            raise SystemExit(f"the validator refused a fresh code: {decision.reason}")
    return times


def time_journaled(decider: Decider, journal: Journal, codes: Sequence[str]) -> list[int]:
    """What the runtime's scan does before the door acts: decide, journal durably."""
    clock, times = time.perf_counter_ns, []
    for code in codes:
        start = clock()
        scan, decision = decider.decide(code, NOW, journal)
        entry = journal.record(TERMINAL, scan, decision)
        times.append(clock() - start)
        if not entry.admitted:
            raise SystemExit(f"the journaled validator refused a fresh code: {entry.reason}")
    return times


def _runs(
    setup: Setup, codes: dict[str, list[str]], prefix: int
) -> dict[str, Callable[[], list[int]]]:
    """One round's timed loops over its fresh codes."""
    return {
        BARE: lambda: time_bare(setup.verify, codes[BARE], prefix),
        DECISION: lambda: time_unwritten(setup.unwritten, setup.journal, codes[DECISION]),
        JOURNALED: lambda: time_journaled(setup.journaled, setup.journal, codes[JOURNALED]),
    }


def measure(setup: Setup, rounds: int, per_round: int) -> dict[str, list[list[int]]]:
    """Per variant, per round, the nanoseconds of each decision."""
    timed: dict[str, list[list[int]]] = {variant: [] for variant in VARIANTS}
    prefix = len(setup.issuer.prefix)
    for index in range(rounds):
        codes = {variant: passengers_codes(setup.issuer, per_round) for variant in VARIANTS}
        runs = _runs(setup, codes, prefix)
        order = VARIANTS[index % 3 :] + VARIANTS[: index % 3]
        gc.collect()
        gc.disable()
        try:
            for variant in order:
                timed[variant].append(runs[variant]())
        finally:
            gc.enable()
    return timed


def percentile(values: Sequence[int], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def report(timed: dict[str, list[list[int]]], rounds: int, per_round: int, history: int) -> None:
    print(
        f"machine: Python {platform.python_version()}, cryptography {version('cryptography')} "
        f"({openssl_backend.openssl_version_text()}); os.cpu_count()={os.cpu_count()}; "
        f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}"
    )
    print(
        f"a validator on line 17 of 200; {rounds} rounds x {per_round} distinct passengers per "
        f"variant, order rotated; the journal held {history} boardings before timing"
    )
    print(
        f"{'variant':<26}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}{'per s':>9}"
        f"{'p50 x bare':>12}{'round p50 x bare':>19}"
    )
    bare_p50 = statistics.median(t for run in timed[BARE] for t in run)
    for variant in VARIANTS:
        every = [t for run in timed[variant] for t in run]
        p50, p99 = statistics.median(every), percentile(every, 0.99)
        per_second = len(every) / (sum(every) / 1e9)
        spread = [
            statistics.median(run) / statistics.median(bare)
            for run, bare in zip(timed[variant], timed[BARE], strict=True)
        ]
        print(
            f"{variant:<26}{p50 / 1e6:>9.3f}{p99 / 1e6:>9.3f}{max(every) / 1e6:>9.3f}"
            f"{per_second:>9.0f}{p50 / bare_p50:>11.2f}x"
            f"{min(spread):>11.2f}-{max(spread):.2f}x"
        )
    journaled = [t for run in timed[JOURNALED] for t in run]
    p99_ms = percentile(journaled, 0.99) / 1e6
    per_second = len(journaled) / (sum(journaled) / 1e9)
    print(
        f"target: p99 with the journal {p99_ms:.2f} ms <= {P99_TARGET_MS:.0f} ms: "
        f"{'ok' if p99_ms <= P99_TARGET_MS else 'MISSED'}; {per_second:.0f} decisions/s = "
        f"{per_second / DOOR_PER_SECOND:.0f}x a bus door's 30 a minute"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--per-round", type=int, default=300, help="decisions per variant")
    parser.add_argument("--history", type=int, default=2000, help="boardings journaled before")
    args = parser.parse_args()
    if args.rounds < 1 or args.per_round < 10 or args.history < 0:
        parser.error("--rounds >= 1, --per-round >= 10, --history >= 0")
    setup = Setup.create(args.history)
    try:
        timed = measure(setup, args.rounds, args.per_round)
    finally:
        setup.close()
    report(timed, args.rounds, args.per_round, args.history)


if __name__ == "__main__":
    main()
