#!/usr/bin/env python3
"""What the service's metrics add to one issuance request, measured in-process.

Times, interleaved in rounds, (a) a trivial ASGI app that answers 200, bare and wrapped in
``RequestMetrics`` (the latency histogram by method, route template and status), (b)
``count_code`` (the codes-issued counter) against an empty call, and (c) ``mint_code`` alone
(building and signing one code, EdDSA), a small part of an issuance request (which also
checks the citizen's ID token, asks Redis and writes JSON): the metrics' share of minting
is an upper bound of their share of issuance, measured under the same load.

    .venv/bin/python bench/metrics_overhead.py [--rounds R] [--calls N]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import time
from typing import Any

from idcode.issuer import mint_code
from idcode.service import metrics
from idcode.testing import TestIssuer, random_card


class Route:
    path = "/v1/codes"


async def answer(scope: Any, receive: Any, send: Any) -> None:
    scope["route"] = Route  # what the router leaves in the scope
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"{}"})


async def ignore(message: Any) -> None:
    return None


async def receive() -> Any:
    return {"type": "http.request", "body": b""}


async def drive(app: Any, calls: int) -> float:
    """Seconds per call."""
    started = time.perf_counter()
    for _ in range(calls):
        scope = {"type": "http", "method": "POST", "path": "/v1/codes"}
        await app(scope, receive, ignore)
    return (time.perf_counter() - started) / calls


def counting(calls: int) -> float:
    started = time.perf_counter()
    for _ in range(calls):
        metrics.count_code("code", "WH1:")
    return (time.perf_counter() - started) / calls


def empty(calls: int) -> float:
    def nothing(kind: str, prefix: str) -> None:
        return None

    started = time.perf_counter()
    for _ in range(calls):
        nothing("code", "WH1:")
    return (time.perf_counter() - started) / calls


def minting(calls: int) -> float:
    issuer = TestIssuer()
    card = random_card()
    signer = issuer.key
    started = time.perf_counter()
    for _ in range(calls):
        mint_code(card, signer, prefix="WH1:", now=issuer.now, ttl=60)
    return (time.perf_counter() - started) / calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--calls", type=int, default=50_000)
    args = parser.parse_args()
    wrapped = metrics.RequestMetrics(answer)
    bare: list[float] = []
    timed: list[float] = []
    counter: list[float] = []
    baseline: list[float] = []
    mint: list[float] = []
    gc.disable()
    for round_number in range(args.rounds):
        order = [("bare", answer, bare), ("wrapped", wrapped, timed)]
        if round_number % 2:
            order.reverse()
        for _, app, into in order:
            into.append(asyncio.run(drive(app, args.calls)))
        counter.append(counting(args.calls))
        baseline.append(empty(args.calls))
        mint.append(minting(max(1, args.calls // 20)))
    gc.enable()
    middleware = statistics.median(timed) - statistics.median(bare)
    count = statistics.median(counter) - statistics.median(baseline)
    print(f"{args.rounds} rounds of {args.calls:,} calls each (medians)")
    print(f"  bare ASGI app           {statistics.median(bare) * 1e6:7.2f} us/request")
    print(f"  with RequestMetrics     {statistics.median(timed) * 1e6:7.2f} us/request")
    print(f"  count_code              {count * 1e6:7.2f} us/call (over an empty call)")
    added = middleware + count
    print(f"  added to each issuance  {added * 1e6:7.2f} us")
    print(f"  mint_code alone         {statistics.median(mint) * 1e6:7.2f} us/code")
    print(f"  metrics / minting       {added / statistics.median(mint):7.1%} (an upper bound)")


if __name__ == "__main__":
    main()
