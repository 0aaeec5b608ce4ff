#!/usr/bin/env python3
"""What the service's metrics and request log add to one issuance request, measured in-process.

Times, interleaved in rounds, (a) a trivial ASGI app that answers 200: bare, wrapped in the
request log (``requestlog.RequestLog``: the request id, the access line, no observer) and
wrapped in the request log telling ``RequestMetrics`` (the latency histogram by method,
route template and status), (b)
``count_code`` (the codes-issued counter) against an empty call, and (c) ``mint_code`` alone
(building and signing one code, EdDSA), a small part of an issuance request (which also
checks the citizen's ID token, asks Redis and writes JSON): the metrics' share of minting
is an upper bound of their share of issuance, measured under the same load.

    .venv/bin/python bench/metrics_overhead.py [--rounds R] [--calls N]
    .venv/bin/python bench/metrics_overhead.py --issuance [--rounds R] [--calls N]

``--issuance``: whole issuance requests instead, in-process on PostgreSQL and Redis (as
bench/issuance.py prepares them): ``POST /v1/codes`` through the real app in three variants,
in alternation, ``--calls`` requests each per round: as served (request log and metrics);
without the metrics (the request log observes nothing, count_code a no-op); and without
either (the request log taken out of the middleware too). No network, no load generator:
the shares are of the service's own work for a request, the figure the 5 % budget is
about. Access lines of 2xx answers are off, as with ``idcode serve --no-access-log``.

Times are this process's CPU time (``time.process_time``), not wall time: on a shared machine
the other processes' load then barely shows, and waiting for PostgreSQL and Redis, which the
metrics do not change, is left out (which makes the share an upper bound).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import sys
import time
from contextlib import AsyncExitStack, ExitStack
from typing import Any

from idcode.issuer import mint_code
from idcode.service import metrics
from idcode.service.api import requestlog
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
    started = time.process_time()
    for _ in range(calls):
        scope = {"type": "http", "method": "POST", "path": "/v1/codes", "headers": []}
        await app(scope, receive, ignore)
    return (time.process_time() - started) / calls


def counting(calls: int) -> float:
    started = time.process_time()
    for _ in range(calls):
        metrics.count_code("code", "WH1:")
    return (time.process_time() - started) / calls


def empty(calls: int) -> float:
    def nothing(kind: str, prefix: str) -> None:
        return None

    started = time.process_time()
    for _ in range(calls):
        nothing("code", "WH1:")
    return (time.process_time() - started) / calls


def minting(calls: int) -> float:
    issuer = TestIssuer()
    card = random_card()
    signer = issuer.key
    started = time.process_time()
    for _ in range(calls):
        mint_code(card, signer, prefix="WH1:", now=issuer.now, ttl=60)
    return (time.process_time() - started) / calls


async def issue(app: Any, token: bytes, calls: int) -> float:
    """Seconds per POST /v1/codes through ``app``; every answer must be 200."""
    headers = [(b"authorization", b"Bearer " + token), (b"content-length", b"0")]
    statuses: list[int] = []

    async def keep(message: Any) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    started = time.process_time()
    for _ in range(calls):
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": "/v1/codes",
            "raw_path": b"/v1/codes",
            "query_string": b"",
            "root_path": "",
            "headers": headers,
            "client": ("127.0.0.1", 50000),
            "server": ("127.0.0.1", 8000),
            "state": {},
        }
        await app(scope, receive, keep)
    elapsed = (time.process_time() - started) / calls
    if set(statuses) != {200}:
        raise SystemExit(f"POST /v1/codes answered {sorted(set(statuses))}")
    return elapsed


def issuance(rounds: int, calls: int) -> None:
    sys.path.insert(0, str(__import__("pathlib").Path(__file__).parent))
    from _service import RATE_LIMIT_PER_MINUTE, prepare_service

    from idcode.service.api.app import create_app

    with ExitStack() as cleanup:
        service = prepare_service(cleanup, 50)
        settings = service.settings.model_copy(
            update={"rate_limit_per_minute": RATE_LIMIT_PER_MINUTE}
        )
        token = service.tokens[0].encode()
        apps = {name: create_app(settings) for name in VARIANTS}
        for middleware in apps["log only"].user_middleware:
            if getattr(middleware, "cls", None) is requestlog.RequestLog:
                middleware.kwargs["observe"] = None
        apps["neither"].user_middleware = [
            m
            for m in apps["neither"].user_middleware
            if getattr(m, "cls", None) is not requestlog.RequestLog
        ]
        counting = metrics.count_code

        async def run() -> dict[str, list[float]]:
            timed: dict[str, list[float]] = {name: [] for name in VARIANTS}
            async with AsyncExitStack() as lifespans:
                for app in apps.values():
                    await lifespans.enter_async_context(app.router.lifespan_context(app))
                for app in apps.values():
                    await issue(app, token, calls)  # warm-up: caches, connections
                for index in range(rounds):
                    order = VARIANTS[index % len(VARIANTS) :] + VARIANTS[: index % len(VARIANTS)]
                    for variant in order:
                        metrics.count_code = counting if variant == "as served" else _nothing
                        gc.disable()
                        timed[variant].append(await issue(apps[variant], token, calls))
                        gc.enable()
                    metrics.count_code = counting
            return timed

        timed = asyncio.run(run())
    bare = timed["neither"]
    print(f"{rounds} rounds of {calls:,} POST /v1/codes each, in-process (medians)")
    print(f"  neither                 {statistics.median(bare) * 1e6:8.1f} us/request")
    for variant in ("log only", "as served"):
        mine = timed[variant]
        ratios = sorted(w / b for w, b in zip(mine, bare, strict=True))
        print(
            f"  {variant + ':':<10} {statistics.median(mine) * 1e6:8.1f} us/request, cost "
            f"{statistics.median(mine) / statistics.median(bare) - 1:+.1%} (per-round ratios: "
            f"median {statistics.median(ratios) - 1:+.1%}, "
            f"range {ratios[0] - 1:+.1%} to {ratios[-1] - 1:+.1%})"
        )
    served = statistics.median(timed["as served"])
    print(f"  metrics alone           {served / statistics.median(timed['log only']) - 1:+8.1%}")


VARIANTS = ["as served", "log only", "neither"]


def _nothing(kind: str, prefix: str) -> None:
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--calls", type=int, default=50_000)
    parser.add_argument("--issuance", action="store_true")
    args = parser.parse_args()
    if args.issuance:
        issuance(args.rounds, args.calls)
        return
    logged = requestlog.RequestLog(answer)
    wrapped = requestlog.RequestLog(answer, observe=metrics.RequestMetrics())
    bare: list[float] = []
    logged_only: list[float] = []
    timed: list[float] = []
    counter: list[float] = []
    baseline: list[float] = []
    mint: list[float] = []
    gc.disable()
    for round_number in range(args.rounds):
        order = [
            ("bare", answer, bare),
            ("logged", logged, logged_only),
            ("wrapped", wrapped, timed),
        ]
        order = order[round_number % 3 :] + order[: round_number % 3]
        for _, app, into in order:
            into.append(asyncio.run(drive(app, args.calls)))
        counter.append(counting(args.calls))
        baseline.append(empty(args.calls))
        mint.append(minting(max(1, args.calls // 20)))
    gc.enable()
    middleware = statistics.median(timed) - statistics.median(logged_only)
    count = statistics.median(counter) - statistics.median(baseline)
    print(f"{args.rounds} rounds of {args.calls:,} calls each (medians)")
    print(f"  bare ASGI app           {statistics.median(bare) * 1e6:7.2f} us/request")
    print(f"  with the request log    {statistics.median(logged_only) * 1e6:7.2f} us/request")
    print(f"  ... telling the metrics {statistics.median(timed) * 1e6:7.2f} us/request")
    print(f"  count_code              {count * 1e6:7.2f} us/call (over an empty call)")
    added = middleware + count
    print(f"  metrics add to issuance {added * 1e6:7.2f} us")
    print(f"  mint_code alone         {statistics.median(mint) * 1e6:7.2f} us/code")
    print(f"  metrics / minting       {added / statistics.median(mint):7.1%} (an upper bound)")


if __name__ == "__main__":
    main()
