"""Run the idcode CLI with probes in the server process, for ``bench/soak.py --probe``.

    python bench/_server_probe.py serve --port P ...    (as ``python -m idcode.cli ...``)

Records, with ``time.monotonic()`` stamps comparable with the load generator's (the same
system-wide clock), (1) every garbage collection: generation and pause; (2) the event
loop's stalls: a task sleeps 5 ms over and over, and each wake-up later than 2 ms past its
time is a stall of the loop (a long callback, a collection, or no CPU for the process);
(3) every card read from the database (a card cache miss, on a thread-pool thread) and
(4) every ID token verified rather than found in the verifier's memory. They are written
as JSON to IDCODE_BENCH_PROBE_FILE when the application shuts down. With
IDCODE_BENCH_GC_FREEZE=1 it also runs ``gc.collect(); gc.freeze()`` once the application
has started (its lifespan built the services), so that the start-up objects are never
traversed again by the collector: the fix this probe measures. The probes cost the server
a little (about 200 wake-ups a second and a callback per collection).
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

STALL_TICK = 0.005  # seconds the loop probe sleeps
STALL_MIN = 0.002  # seconds late that count as a stall
GC_KEEP_MIN = 0.0005  # collections at least this long are kept one by one

_events: dict[str, Any] = {
    "gc_totals": {},  # generation -> [count, total seconds, max seconds]
    "gc_pauses": [],  # [end (monotonic), generation, seconds, collected]
    "loop_stalls": [],  # [end (monotonic), seconds late]
    "card_loads": [],  # [end (monotonic), seconds]
    "token_checks": [],  # [end (monotonic), seconds]: ID tokens verified, not remembered
    "frozen": None,  # objects moved to the permanent generation, when frozen
    "heap": {},  # "started"/"stopping" -> objects tracked in generations 0, 1, 2, frozen
}
_gc_started = 0.0


def _on_gc(phase: str, info: dict[str, int]) -> None:
    global _gc_started
    now = time.perf_counter()
    if phase == "start":
        _gc_started = now
        return
    pause = now - _gc_started
    generation = info["generation"]
    totals = _events["gc_totals"].setdefault(str(generation), [0, 0.0, 0.0])
    totals[0] += 1
    totals[1] += pause
    totals[2] = max(totals[2], pause)
    if pause >= GC_KEEP_MIN or generation == 2:
        _events["gc_pauses"].append([time.monotonic(), generation, pause, info["collected"]])


async def _watch_loop() -> None:
    loop = asyncio.get_running_loop()
    while True:
        due = loop.time() + STALL_TICK
        await asyncio.sleep(STALL_TICK)
        late = loop.time() - due
        if late >= STALL_MIN:
            _events["loop_stalls"].append([time.monotonic(), late])


def _timed(function: Callable[..., Any], events: list[list[float]]) -> Callable[..., Any]:
    def timed(*args: Any) -> Any:
        started = time.monotonic()
        try:
            return function(*args)
        finally:
            ended = time.monotonic()
            events.append([ended, ended - started])

    return timed


def _time_card_loads_and_token_checks() -> None:
    from idcode.service.api.routes import codes
    from idcode.service.auth import TokenVerifier

    # both looked up at each call: the route's module global and the verifier's method
    codes._load_card = _timed(codes._load_card, _events["card_loads"])
    TokenVerifier._check = _timed(  # type: ignore[method-assign]
        TokenVerifier._check, _events["token_checks"]
    )


def _probed_factory(create_app: Callable[[], Any], freeze: bool) -> Callable[[], Any]:
    def create() -> Any:
        app = create_app()
        inner = app.router.lifespan_context

        @asynccontextmanager
        async def lifespan(application: Any) -> AsyncIterator[Any]:
            async with inner(application) as state:
                if freeze:
                    gc.collect()
                    gc.freeze()
                    _events["frozen"] = gc.get_freeze_count()
                _events["heap"]["started"] = _heap()
                watcher = asyncio.get_running_loop().create_task(_watch_loop())
                try:
                    yield state
                finally:
                    watcher.cancel()
                    _events["heap"]["stopping"] = _heap()
                    _write()  # not atexit: uvicorn re-raises SIGTERM once it has stopped

        app.router.lifespan_context = lifespan
        return app

    return create


def _heap() -> list[int]:
    return [len(gc.get_objects(generation)) for generation in range(3)] + [gc.get_freeze_count()]


def _write() -> None:
    path = os.environ.get("IDCODE_BENCH_PROBE_FILE")
    if path:
        with open(path, "w") as output:
            json.dump(_events, output)


def main() -> int:
    from idcode.cli import main as idcode_main
    from idcode.service.api import app as app_module

    app_module.create_app = _probed_factory(  # type: ignore[assignment]
        app_module.create_app, os.environ.get("IDCODE_BENCH_GC_FREEZE") == "1"
    )
    _time_card_loads_and_token_checks()
    gc.callbacks.append(_on_gc)
    return idcode_main()


if __name__ == "__main__":
    sys.exit(main())
