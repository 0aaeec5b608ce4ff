#!/usr/bin/env python3
"""Status list sizes: 3 million cards with 1 % revoked, and a delta of 100 changes.

Sizes are deterministic for a given seed, so they are printed as they are; the build and
load times are printed as a ratio to decompressing the list in the same run.

    .venv/bin/python bench/statuslist.py [--cards N] [--revoked-share F] [--changes N]
"""

from __future__ import annotations

import argparse
import base64
import json
import random
import shlex
import statistics
import sys
import time
import zlib
from collections.abc import Callable, Sequence

from idcode.statuslist import StatusDelta, StatusList


def median_seconds(action: Callable[[], object], rounds: int = 5) -> float:
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        action()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--cards", type=int, default=3_000_000)
    parser.add_argument("--revoked-share", type=float, default=0.01)
    parser.add_argument("--changes", type=int, default=100)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)

    chooser = random.Random(args.seed)
    status = StatusList(args.cards)
    for index in chooser.sample(range(args.cards), int(args.cards * args.revoked_share)):
        status.set(index, True)
    document = status.to_json()
    lst = document["lst"]
    compressed = base64.urlsafe_b64decode(lst + "=" * (-len(lst) % 4))
    in_json = len(json.dumps(document))

    changed = status.copy()
    for index in chooser.sample(range(args.cards), args.changes):
        changed.set(index, not changed.is_invalid(index))
    delta = json.dumps(StatusDelta.between(status, changed, 1, 2).to_json())

    inflate = median_seconds(lambda: zlib.decompress(compressed))
    load = median_seconds(lambda: StatusList.from_json(document))
    build = median_seconds(lambda: status.to_json(), rounds=3)

    print(f"status list: {args.cards:,} cards, {args.revoked_share:.1%} revoked, seed {args.seed}")
    print(f"{'figure':<44} {'value':>12}  target")
    print(f"{'raw bit array':<44} {(args.cards + 7) // 8:>10,} B")
    verdict = "ok" if len(compressed) <= 45_000 else "MISS"
    print(f"{'ZLIB-compressed list (level 9)':<44} {len(compressed):>10,} B  <= 45,000 B {verdict}")
    print(f"{'the same as base64url JSON in a bundle':<44} {in_json:>10,} B")
    verdict = "ok" if len(delta) <= 1024 else "MISS"
    print(
        f"{f'delta of {args.changes} changes, JSON':<44} {len(delta):>10,} B  <= 1,024 B {verdict}"
    )
    print(f"{'load (base64 + inflate + checks) / inflate':<44} {load / inflate:>11.2f}x")
    print(f"{'build (compress + base64) / inflate':<44} {build / inflate:>11.2f}x")
    print()
    print(f"command: {shlex.join(sys.orig_argv)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
