#!/usr/bin/env python3
"""Terminal cold start: from a terminal directory holding a bundle of 3 million cards (1 %
revoked) to the first verdict, against the bare cost of inflating that status list.

    .venv/bin/python bench/terminal_start.py [--cards N] [--revoked-share F] [--rounds R]

Each round starts a fresh Python process that imports the terminal runtime and then times
(1) inflating the bundle's status list alone and (2) everything a restarting terminal does
before its first decision: read and verify bundle.jwt against the pinned root key, decode
the keys and the status list, open the journal, build the adapter and decide on one code.
Interpreter start and imports are timed separately (they do not depend on the bundle).
The target is <= 200 ms for (2).
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from idcode.bundle import sign_bundle
from idcode.keystore import RootKey
from idcode.scenes import encode_scene_key, scene_subject_key
from idcode.statuslist import StatusList
from idcode.terminal import identity as identities
from idcode.testing import TestIssuer, random_card

CHILD = r"""
import json, sys, time, zlib, base64
started = time.perf_counter()
from pathlib import Path
from idcode.terminal import identity as identities
from idcode.terminal.runtime import TerminalRuntime
imported = time.perf_counter()
directory, code = Path(sys.argv[1]), sys.argv[2]
token = (directory / "bundle.jwt").read_text()
payload = token.split(".")[1]
lst = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))["status"]["lst"]
compressed = base64.urlsafe_b64decode(lst + "=" * (-len(lst) % 4))
t0 = time.perf_counter()
zlib.decompress(compressed)
t1 = time.perf_counter()
runtime = TerminalRuntime(directory, identities.load(directory), online=False)
entry = runtime.scan(code)
t2 = time.perf_counter()
runtime.stop()
print(json.dumps({"imports": imported - started, "inflate": t1 - t0, "start": t2 - t1,
                  "reason": entry.reason}))
"""


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--cards", type=int, default=3_000_000)
    parser.add_argument("--revoked-share", type=float, default=0.01)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)

    chooser = random.Random(args.seed)
    status = StatusList(args.cards)
    for index in chooser.sample(range(args.cards), int(args.cards * args.revoked_share)):
        status.set(index, True)
    issuer = TestIssuer()
    root = RootKey("R", Ed25519PrivateKey.generate())
    token = sign_bundle(
        root,
        version=1,
        issued_at=issuer.now,
        max_age=48 * 3600,
        keys=[issuer.key.public],
        status=status,
        scene={
            "scene": "tourism",
            "site": "bench",
            "version": 1,
            "data": {"prices": {"standard": 8000}},
            "subject_key": encode_scene_key(scene_subject_key(issuer.city_key, "tourism")),
        },
    )
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        directory = Path(scratch) / "terminal"
        identities.save(
            directory,
            identities.TerminalIdentity(
                "00000000-0000-4000-8000-000000000001",
                "tourism",
                "bench",
                "http://127.0.0.1:9",
                identities.new_terminal_key(),
                root.public_jwk,
            ),
        )
        (directory / "bundle.jwt").write_text(token)
        for number in range(args.rounds):
            (directory / "journal.sqlite3").unlink(missing_ok=True)
            code = issuer.mint(random_card(status_index=chooser.randrange(args.cards)))
            started = time.perf_counter()
            output = subprocess.run(
                [sys.executable, "-c", CHILD, str(directory), code],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            wall = time.perf_counter() - started
            rows.append({**json.loads(output), "wall": wall, "round": number})

    def median(name: str) -> float:
        return statistics.median(row[name] for row in rows)

    print(f"bundle: {len(token):,} bytes of JWS for {args.cards:,} cards, "
          f"{args.revoked_share:.0%} revoked; {args.rounds} fresh processes")
    print(f"{'figure':<44}{'median ms':>10}{'min-max ms':>16}")
    for name, label in (
        ("inflate", "inflate the status list alone"),
        ("start", "load, verify, open journal, first verdict"),
        ("imports", "interpreter imports of the runtime"),
        ("wall", "whole process, exec to exit"),
    ):
        values = [row[name] * 1000 for row in rows]
        print(f"{label:<44}{median(name) * 1000:>10.1f}{min(values):>8.1f}-{max(values):<7.1f}")
    ratios = [row["start"] / row["inflate"] for row in rows]
    print(f"first verdict / inflate: {statistics.median(ratios):.2f}x "
          f"(rounds {min(ratios):.2f}-{max(ratios):.2f}); target: first verdict <= 200 ms")
    print("verdicts:", sorted({row["reason"] for row in rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
