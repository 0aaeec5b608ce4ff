#!/usr/bin/env python3
"""The admit round trip (``RedisState.admit``: the card cache read and the rate count, one
script) on one Redis server, on a three-master Redis Cluster and through Redis Sentinel,
measured side by side.

    .venv/bin/python bench/state_topologies.py [--calls N] [--rounds R]

Starts its own nodes from this machine's redis-server on loopback ports (tests/redisnodes.py:
three cluster masters; a master, a replica and two sentinels) plus one plain server the
same way, so the three differ only in topology. Each round runs ``--calls`` (default 2000)
sequential admits of distinct cached citizens on each topology, in an order rotated from
round to round. Prints per topology the median time per admit and its ratio to one server.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from idcode.service.cards import CardSnapshot  # noqa: E402
from idcode.service.state import RedisState  # noqa: E402
from tests.redisnodes import (  # noqa: E402
    Node,
    _free_port,
    _node,
    start_cluster,
    start_sentinels,
)


async def _per_call(url: str, calls: int, out: list[float]) -> None:
    state = RedisState(url, f"bench-{secrets.token_hex(3)}:")
    try:
        now = int(time.time())
        citizens = [secrets.token_bytes(32) for _ in range(calls)]
        card = CardSnapshot("c", b"p" * 16, 1, "active", 1, 0, 2, now + 300, 1)
        for citizen in citizens:
            await state.cache_card(citizen, card, now)
        for citizen in citizens[:100]:  # warm: connections, the script's SHA on each node
            await state.admit(citizen, 0, now)
        start = time.perf_counter()
        for citizen in citizens:
            await state.admit(citizen, 0, now)
        out.append((time.perf_counter() - start) / calls)
    finally:
        await state.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    started: list[Node] = []
    with tempfile.TemporaryDirectory(prefix="idcode-bench-redis-") as directory:
        root = Path(directory)
        try:
            binary = shutil.which("redis-server")
            if binary is None:
                print("redis-server is not installed", file=sys.stderr)
                return 1
            single = _node(binary, root, _free_port())
            started.append(single)
            single.start()
            urls = {
                "one server": f"redis://127.0.0.1:{single.port}/0",
                "cluster (3 masters)": start_cluster(binary, root, started).url,
                "sentinel": start_sentinels(binary, root, started).url,
            }
            times: dict[str, list[float]] = {name: [] for name in urls}
            names = list(urls)
            for round_ in range(args.rounds):
                order = names[round_ % 3 :] + names[: round_ % 3]
                for name in order:
                    asyncio.run(_per_call(urls[name], args.calls, times[name]))
        finally:
            for node in started:
                node.kill()
    base = statistics.median(times["one server"])
    print(f"admit round trip, {args.calls} sequential calls x {args.rounds} rounds")
    print(f"{'topology':<22}{'median us':>10}{'ratio':>8}{'round min-max us':>20}")
    for name, values in times.items():
        median = statistics.median(values)
        spread = f"{min(values) * 1e6:.0f}-{max(values) * 1e6:.0f}"
        print(f"{name:<22}{median * 1e6:>10.0f}{median / base:>7.2f}x{spread:>20}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
