#!/usr/bin/env python3
"""Load and soak issuance: the maximum throughput of ``POST /v1/codes``, then an open-loop
load at a share of it (default 70 %) for minutes, with latency, errors and the server's
memory minute by minute.

    .venv/bin/python bench/soak.py [--minutes M] [--share F] [--cards N] [--probe]

Starts one ``idcode serve`` on a database and a Redis prefix of its own (bench/_service.py,
as bench/issuance.py does) and drives it from this process: asyncio on raw keep-alive
HTTP/1.1 connections (a pre-built request written, the status line, headers and a
Content-Length body read back). The open loop sends each request at its scheduled time,
whatever the answers, and measures latency from that time, so a server that falls behind
shows it as latency (no coordinated omission). Needs PostgreSQL and Redis as for the
tests (IDCODE_TEST_POSTGRES_URL, IDCODE_TEST_REDIS_URL); everything is removed at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import gc
import io
import json
import math
import os
import platform
import shlex
import signal
import statistics
import sys
import time
from array import array
from collections import Counter
from collections.abc import Callable, Coroutine, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from _service import (
    REDIS_URL,
    BenchError,
    Server,
    check_issuance,
    cpu_model,
    interrupt_on_sigterm,
    prepare_service,
    running_server,
    server_versions,
)

try:  # uvicorn[standard] brings uvloop; the client runs on it when it is there
    import uvloop
except ImportError:  # pragma: no cover
    uvloop = None  # type: ignore[assignment]

ISSUE = "POST /v1/codes"
NOOP = "GET /healthz"
TIMEOUT_SECONDS = 5.0
WARM_UP_SECONDS = 2.0
PROBE = Path(__file__).with_name("_server_probe.py")

# Outcomes that are not HTTP statuses, stored in the same column as the status.
TIMEOUT, CONNECTION_ERROR, PROTOCOL_ERROR, NOT_SENT = 1, 2, 3, 4
KINDS = {
    TIMEOUT: "timeout",
    CONNECTION_ERROR: "connection error",
    PROTOCOL_ERROR: "bad response",
    NOT_SENT: "not sent",
}
# An open loop the server cannot keep up with ends this long after its last slot's time:
# the slots still waiting for a connection then are counted as not sent.
DRAIN_SECONDS = 60.0
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


# --- the client: raw HTTP/1.1 keep-alive on asyncio streams -----------------------------


class ProtocolError(Exception):
    """The answer is not an HTTP/1.1 response this client can read."""


def build_requests(endpoint: str, host: str, tokens: Sequence[str]) -> list[bytes]:
    """Every request formatted once; the generator only picks them in turn."""
    if endpoint == NOOP:
        return [f"GET /healthz HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()]
    return [
        (
            f"POST /v1/codes HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n"
            "Accept: application/json\r\nContent-Length: 0\r\n\r\n"
        ).encode()
        for token in tokens
    ]


class Connection:
    """One keep-alive connection; at most one request in flight (no pipelining)."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.busy_since: float | None = None  # for the timeout watchdog
        self.timed_out = False

    async def exchange(self, request: bytes) -> int:
        """Send ``request`` and read the whole response; its status, or an outcome code."""
        self.busy_since = time.monotonic()
        try:
            if self.writer is None:
                self.reader, self.writer = await asyncio.wait_for(
                    asyncio.open_connection(self.host, self.port), TIMEOUT_SECONDS
                )
            assert self.reader is not None and self.writer is not None
            self.writer.write(request)
            head = await self.reader.readuntil(b"\r\n\r\n")
            if not head.startswith(b"HTTP/1.1 "):
                raise ProtocolError
            status = int(head[9:12])
            lowered = head.lower()
            at = lowered.find(b"\r\ncontent-length:")
            if at < 0:
                raise ProtocolError
            await self.reader.readexactly(int(lowered[at + 17 : lowered.index(b"\r\n", at + 2)]))
            if b"\r\nconnection: close" in lowered:
                self.close()
            return status
        except (ProtocolError, ValueError, asyncio.LimitOverrunError):
            self.close()
            return PROTOCOL_ERROR
        except (OSError, asyncio.IncompleteReadError):
            outcome = TIMEOUT if self.timed_out else CONNECTION_ERROR
            self.close()
            return outcome
        finally:
            self.busy_since = None
            self.timed_out = False

    def close(self) -> None:
        if self.writer is not None:
            self.writer.transport.abort()
        self.reader = self.writer = None


async def watchdog(connections: Sequence[Connection], timeout: float) -> None:
    """Abort a connection whose request has waited ``timeout`` seconds (one timer for all
    connections rather than a wait_for per request)."""
    while True:
        await asyncio.sleep(0.25)
        now = time.monotonic()
        for connection in connections:
            since = connection.busy_since
            if since is not None and now - since > timeout and connection.writer is not None:
                connection.timed_out = True
                connection.writer.transport.abort()


@dataclass
class Record:
    """Every request of a run: when it was due (seconds from the start), when it was written
    (ms after due: it waited for a free connection, or the generator's timer woke late),
    its latency (ms from when it was due to the last byte; in a closed loop, due is when it
    was written) and its status or outcome code."""

    due: array[float] = field(default_factory=lambda: array("d"))
    lag_ms: array[float] = field(default_factory=lambda: array("f"))
    latency_ms: array[float] = field(default_factory=lambda: array("d"))
    status: array[int] = field(default_factory=lambda: array("H"))

    def __len__(self) -> int:
        return len(self.due)

    def ok(self) -> int:
        return sum(1 for s in self.status if 200 <= s < 300)


@dataclass
class LoopResult:
    record: Record
    start: float  # monotonic
    seconds: float  # from the start to the last answer
    generator_cpu: float  # seconds of CPU the generator used
    timer_late_ms: array[float]  # open loop: how late the generator woke for a slot
    queued: int = 0  # open loop: slots that found every connection busy


async def closed_loop(
    base_url: str, requests: Sequence[bytes], connections: int, seconds: float
) -> LoopResult:
    """Each connection sends its next request as soon as the previous answer is in."""
    host, port = _address(base_url)
    pool = [Connection(host, port) for _ in range(connections)]
    record = Record()
    turn = 0
    cpu = time.process_time()
    start = time.monotonic()
    end = start + seconds

    async def run(connection: Connection) -> None:
        nonlocal turn
        while (sent := time.monotonic()) < end:
            request = requests[turn % len(requests)]
            turn += 1
            status = await connection.exchange(request)
            record.due.append(sent - start)
            record.lag_ms.append(0.0)
            record.latency_ms.append((time.monotonic() - sent) * 1e3)
            record.status.append(status)
            if status == CONNECTION_ERROR:
                await asyncio.sleep(0.01)  # the server is gone: do not spin

    await _run_with_watchdog(pool, [run(c) for c in pool])
    elapsed = time.monotonic() - start
    return LoopResult(record, start, elapsed, time.process_time() - cpu, array("f"))


async def open_loop(
    base_url: str,
    requests: Sequence[bytes],
    connections: int,
    rate: float,
    seconds: float,
    on_start: Callable[[float], None],
) -> LoopResult:
    """Request i is due at start + i / rate, sent then by whichever connection is free
    (or, when none is, by the first that frees up), and timed from when it was due."""
    host, port = _address(base_url)
    pool = [Connection(host, port) for _ in range(connections)]
    record = Record()
    timer_late = array("f")
    total = int(rate * seconds)
    next_slot = 0
    queued = 0
    cpu = time.process_time()
    start = time.monotonic() + 0.1  # every worker is waiting for a slot by then
    on_start(start)
    give_up = start + seconds + DRAIN_SECONDS

    async def run(connection: Connection) -> None:
        nonlocal next_slot, queued
        while next_slot < total:
            slot = next_slot
            next_slot += 1
            due = start + slot / rate
            wait = due - time.monotonic()
            if wait < 0 and time.monotonic() > give_up:
                record.due.append(due - start)
                record.lag_ms.append(-wait * 1e3)
                record.latency_ms.append(-wait * 1e3)  # a lower bound
                record.status.append(NOT_SENT)
                continue
            if wait > 0:
                await asyncio.sleep(wait)
                sent = time.monotonic()
                timer_late.append((sent - due) * 1e3)
            else:
                sent = time.monotonic()
                queued += 1
            status = await connection.exchange(requests[slot % len(requests)])
            record.due.append(due - start)
            record.lag_ms.append((sent - due) * 1e3)
            # From when it was due, however late it was sent; but uvloop's timers have a
            # millisecond's resolution and may wake a little early: such a request is timed
            # from when it was sent, so that its latency is never shortened.
            record.latency_ms.append((time.monotonic() - min(due, sent)) * 1e3)
            record.status.append(status)

    await _run_with_watchdog(pool, [run(c) for c in pool])
    elapsed = time.monotonic() - start
    result = LoopResult(record, start, elapsed, time.process_time() - cpu, timer_late)
    result.queued = queued
    return result


async def _run_with_watchdog(
    pool: Sequence[Connection], workers: list[Coroutine[Any, Any, None]]
) -> None:
    guard = asyncio.get_running_loop().create_task(watchdog(pool, TIMEOUT_SECONDS))
    try:
        await asyncio.gather(*workers)
    finally:
        guard.cancel()
        for connection in pool:
            connection.close()


def _address(base_url: str) -> tuple[str, int]:
    parts = urlsplit(base_url)
    assert parts.hostname is not None and parts.port is not None
    return parts.hostname, parts.port


class CollectorWatch:
    """The generator's own garbage collections: how many and the longest pause, so that a
    pause of the generator is not taken for one of the server."""

    def __init__(self) -> None:
        self.count = 0
        self.longest = 0.0
        self._started = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        now = time.perf_counter()
        if phase == "start":
            self._started = now
        else:
            self.count += 1
            self.longest = max(self.longest, now - self._started)


GENERATOR_GC = CollectorWatch()


# --- the server process and the machine, from /proc ------------------------------------


@dataclass(frozen=True)
class Sample:
    at: float  # monotonic
    rss_kb: int  # the server process and its children
    processes: int
    threads: int
    server_cpu: float  # seconds, the process tree
    server_wait: float  # seconds the server's main thread waited for a CPU (schedstat)
    generator_cpu: float
    machine_busy: float  # seconds of CPU used on the machine, all cores
    load: float


def _process_tree(pid: int) -> list[int]:
    """``pid`` and its descendants (with --workers N uvicorn runs its workers as child
    processes; with one worker there are none)."""
    parents: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                stat = Path(entry.path, "stat").read_text()
            except OSError:
                continue
            parent = int(stat.rsplit(")", 1)[1].split()[1])
            parents.setdefault(parent, []).append(int(entry.name))
    tree, pending = [], [pid]
    while pending:
        current = pending.pop()
        tree.append(current)
        pending.extend(parents.get(current, []))
    return tree


def sample(server_pid: int) -> Sample:
    rss = threads = 0
    cpu_ticks = 0
    tree = _process_tree(server_pid)
    for pid in tree:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    rss += int(line.split()[1])
                elif line.startswith("Threads:"):
                    threads += int(line.split()[1])
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            cpu_ticks += int(fields[11]) + int(fields[12])  # utime, stime
        except OSError:
            continue
    try:
        wait_ns = int(Path(f"/proc/{server_pid}/schedstat").read_text().split()[1])
    except OSError:
        wait_ns = 0
    cpu_line = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    ticks = [int(x) for x in cpu_line]
    busy = sum(ticks[:8]) - ticks[3] - ticks[4]  # all but idle and iowait
    return Sample(
        at=time.monotonic(),
        rss_kb=rss,
        processes=len(tree),
        threads=threads,
        server_cpu=cpu_ticks / CLOCK_TICKS,
        server_wait=wait_ns / 1e9,
        generator_cpu=time.process_time(),
        machine_busy=busy / CLOCK_TICKS,
        load=os.getloadavg()[0],
    )


async def sample_every_minute(
    server_pid: int, starts: list[float], minutes: int, samples: list[Sample]
) -> None:
    """A sample when the open loop starts and at each full minute after, with a progress
    line on stderr; nothing heavier runs during the load."""
    while not starts:
        await asyncio.sleep(0.01)
    start = starts[0]
    for minute in range(minutes + 1):
        await asyncio.sleep(max(0.0, start + 60 * minute - time.monotonic()))
        samples.append(sample(server_pid))
        if minute:
            previous, current = samples[-2], samples[-1]
            print(
                f"  minute {minute}/{minutes}: server RSS {current.rss_kb / 1024:.1f} MiB, "
                f"server CPU {_cores(previous, current, 'server_cpu'):.2f} cores, "
                f"load average {current.load:.2f}",
                file=sys.stderr,
                flush=True,
            )


def _cores(before: Sample, after: Sample, name: str) -> float:
    elapsed = after.at - before.at
    return (getattr(after, name) - getattr(before, name)) / elapsed if elapsed > 0 else 0.0


# --- figures ------------------------------------------------------------------------------


def percentile(ordered: Sequence[float], share: float) -> float:
    """Nearest-rank percentile of sorted values (``share`` 0-100); nan when empty."""
    if not ordered:
        return math.nan
    return ordered[min(len(ordered) - 1, max(0, math.ceil(share / 100 * len(ordered)) - 1))]


def latency_row(latencies: Sequence[float]) -> str:
    ordered = sorted(latencies)
    cells = [percentile(ordered, p) for p in (50, 90, 99, 99.9)] + [
        ordered[-1] if ordered else math.nan
    ]
    return "".join(f"{x:>9.2f}" for x in cells)


def outcomes(statuses: Sequence[int]) -> Counter[str]:
    counted: Counter[str] = Counter()
    for status, count in Counter(statuses).items():
        if not 200 <= status < 300:
            counted[KINDS.get(status, f"HTTP {status}")] += count
    return counted


def describe_outcomes(counted: Counter[str]) -> str:
    return ", ".join(f"{kind} {n:,}" for kind, n in sorted(counted.items())) or "none"


@dataclass
class Probe:
    """What bench/_server_probe.py recorded in the server (monotonic stamps)."""

    gc_totals: dict[str, list[float]]
    gc_pauses: list[list[float]]
    loop_stalls: list[list[float]]
    card_loads: list[list[float]]
    token_checks: list[list[float]]
    frozen: int | None
    heap: dict[str, list[int]]

    @classmethod
    def read(cls, path: Path) -> Probe | None:
        try:
            return cls(**json.loads(path.read_text()))
        except (OSError, ValueError, TypeError):
            return None


# --- the report ---------------------------------------------------------------------------


def print_closed_loop(name: str, result: LoopResult) -> float:
    record = result.record
    rate = record.ok() / result.seconds
    cpu_us = result.generator_cpu / max(1, len(record)) * 1e6
    print(
        f"{name:<16}{rate:>10,.0f}/s{len(record):>10,}{latency_row(record.latency_ms)}"
        f"{cpu_us:>11.0f} us  {describe_outcomes(outcomes(record.status))}"
    )
    return rate


def per_minute(record: Record, minutes: int) -> list[dict[str, Any]]:
    """Requests grouped by the minute they were due in."""
    rows: list[dict[str, Any]] = [
        {"latencies": [], "statuses": [], "done": 0} for _ in range(minutes)
    ]
    last = minutes - 1
    for due, latency, status in zip(record.due, record.latency_ms, record.status, strict=True):
        row = rows[min(last, int(due // 60))]
        row["latencies"].append(latency)
        row["statuses"].append(status)
        done_minute = int((due + latency / 1e3) // 60)
        if done_minute <= last and 200 <= status < 300:
            rows[done_minute]["done"] += 1
    return rows


def worst_seconds(record: Record, count: int) -> list[tuple[int, int, float, float]]:
    """The seconds (by due time) with the highest p99: (second, requests, p99, max)."""
    by_second: dict[int, list[float]] = {}
    for due, latency in zip(record.due, record.latency_ms, strict=True):
        by_second.setdefault(int(due), []).append(latency)
    rows = []
    for second, latencies in by_second.items():
        latencies.sort()
        rows.append((second, len(latencies), percentile(latencies, 99), latencies[-1]))
    return sorted(rows, key=lambda row: row[2], reverse=True)[:count]


def overlapping(
    events: list[tuple[float, float]], spans: list[tuple[float, float]], min_seconds: float
) -> int:
    """How many ``spans`` (start, end) overlap an event (start, end) of at least
    ``min_seconds``; events sorted by start."""
    chosen = [e for e in events if e[1] - e[0] >= min_seconds]
    starts = [e[0] for e in chosen]
    longest = max((e[1] - e[0] for e in chosen), default=0.0)
    hits = 0
    for begin, end in spans:
        # candidates start before the span ends and no earlier than the longest event
        low = bisect.bisect_left(starts, begin - longest)
        high = bisect.bisect_right(starts, end)
        if any(chosen[i][1] > begin for i in range(low, high)):
            hits += 1
    return hits


def print_probe(probe: Probe, phases: Sequence[tuple[str, LoopResult]]) -> None:
    print()
    print("server probe (bench/_server_probe.py; its stamps are on the generator's clock)")
    if probe.frozen is not None:
        print(f"  gc.freeze() after start-up: {probe.frozen:,} objects frozen")
    for moment, counts in probe.heap.items():
        print(
            f"  objects the collector tracks, {moment}: generations 0/1/2 "
            + "/".join(f"{n:,}" for n in counts[:3])
            + f", frozen {counts[3]:,}"
        )
    for generation, (count, total, longest) in sorted(probe.gc_totals.items()):
        print(
            f"  gc generation {generation}: {int(count):,} collections over the whole run, "
            f"{total * 1e3:,.0f} ms in all, longest {longest * 1e3:.1f} ms"
        )
    for name, result in phases:
        print(f"  {name}:")
        _print_phase_probe(probe, result)


def _print_phase_probe(probe: Probe, result: LoopResult) -> None:
    start, end = result.start, result.start + result.seconds
    record = result.record
    gen2 = [p for p in probe.gc_pauses if p[1] == 2 and start <= p[0] <= end]
    durations = sorted(p[2] * 1e3 for p in gen2)
    print(
        f"    generation-2 collections: {len(gen2)}"
        + (
            f", median {statistics.median(durations):.1f} ms, longest {durations[-1]:.1f} ms, "
            f"{sum(durations) / result.seconds / 10:.1f} % of the time"
            if durations
            else ""
        )
    )
    if result.seconds > 90:
        by_minute = Counter(int((p[0] - start) // 60) + 1 for p in gen2)
        minutes = range(1, math.ceil(result.seconds / 60) + 1)
        print("      by minute: " + " ".join(str(by_minute.get(m, 0)) for m in minutes))
    stalls = [s for s in probe.loop_stalls if start <= s[0] <= end]
    buckets = [(2, 5), (5, 10), (10, 20), (20, 50), (50, math.inf)]
    counts = [sum(1 for s in stalls if lo <= s[1] * 1e3 < hi) for lo, hi in buckets]
    print(
        "    event-loop stalls (its 5 ms tick woke late by): "
        + ", ".join(
            f"{lo}-{hi if hi != math.inf else ''} ms {n:,}"
            for (lo, hi), n in zip(buckets, counts, strict=True)
        )
    )
    loads = [c for c in probe.card_loads if start <= c[0] <= end]
    checks = [c for c in probe.token_checks if start <= c[0] <= end]
    for label, timed in (
        ("card reads from PostgreSQL (card cache misses, on the thread pool)", loads),
        ("ID tokens verified (not found in the verifier's memory)", checks),
    ):
        if timed:
            by_second = Counter(int(c[0] - start) for c in timed)
            busiest = ", ".join(f"{n:,} at {t} s" for t, n in by_second.most_common(3))
            took = sorted(c[1] * 1e3 for c in timed)
            print(
                f"    {label}: {len(timed):,}, median {statistics.median(took):.2f} ms, "
                f"longest {took[-1]:.1f} ms; busiest seconds (from the start): {busiest}"
            )
    # Were the slowest requests in flight while the server's loop stood still, more often
    # than requests in general (every 20th, as a baseline)?
    p99 = percentile(sorted(record.latency_ms), 99)
    spans = [
        (start + due, start + due + latency / 1e3)
        for due, latency in zip(record.due, record.latency_ms, strict=True)
    ]
    tail = [span for span, latency in zip(spans, record.latency_ms, strict=True) if latency > p99]
    everyone = spans[::20]
    if not tail:
        return
    pauses = sorted((p[0] - p[2], p[0]) for p in probe.gc_pauses if start - 1 <= p[0] <= end + 1)
    stall_events = sorted((s[0] - s[1] - 0.005, s[0]) for s in stalls)
    load_events = sorted((c[0] - c[1], c[0]) for c in loads)
    print(
        f"    in flight during ...                 of the {len(tail):,} above the p99 "
        f"({p99:.1f} ms)   of all requests"
    )
    for label, events, minimum in (
        ("a gc pause >= 2 ms", pauses, 0.002),
        ("a generation-2 collection", sorted((p[0] - p[2], p[0]) for p in gen2), 0.0),
        ("a loop stall >= 5 ms", stall_events, 0.005 + 0.005),
        ("a loop stall >= 20 ms", stall_events, 0.020 + 0.005),
        ("a card read from the database", load_events, 0.0),
    ):
        hits = overlapping(events, tail, minimum) / len(tail)
        base = overlapping(events, everyone, minimum) / max(1, len(everyone))
        print(f"      {label:<34}{hits:>12.0%}{base:>28.0%}")


def print_report(
    args: argparse.Namespace,
    maximum: float,
    healthz: LoopResult,
    measured: LoopResult,
    result: LoopResult,
    samples: list[Sample],
    fresh: Sample,
    rate: float,
    probe: Probe | None,
) -> None:
    record = result.record
    minutes = args.minutes
    seconds = minutes * 60
    print()
    print(
        f"open loop: {rate:,.0f} requests/s scheduled ({args.share:.0%} of {maximum:,.0f}/s) "
        f"for {minutes} min on {args.connections} connections"
    )
    header = (
        f"{'minute':<8}{'done/s':>8}{'p50 ms':>9}{'p90 ms':>9}{'p99 ms':>9}{'p99.9':>9}"
        f"{'max ms':>9}{'errors':>8}{'RSS MiB':>9}{'server':>8}{'wait':>7}{'gen':>6}"
        f"{'machine':>9}"
    )
    print(header)
    rows = per_minute(record, minutes)
    for index, row in enumerate(rows):
        before, after = samples[index], samples[index + 1] if index + 1 < len(samples) else None
        cells = (
            ""
            if after is None
            else (
                f"{after.rss_kb / 1024:>9.1f}{_cores(before, after, 'server_cpu'):>8.2f}"
                f"{_cores(before, after, 'server_wait'):>7.2f}"
                f"{_cores(before, after, 'generator_cpu'):>6.2f}"
                f"{_cores(before, after, 'machine_busy'):>9.2f}"
            )
        )
        errors = sum(outcomes(row["statuses"]).values())
        print(
            f"{index + 1:<8}{row['done'] / 60:>8,.0f}{latency_row(row['latencies'])}"
            f"{errors:>8,}{cells}"
        )
    print(
        "   by the minute requests were due in; latency from when each was due to its last\n"
        "   byte. server/gen/machine: CPU used in cores (of "
        f"{os.cpu_count()}) by the server process tree, this\n"
        "   generator and the whole machine; wait: cores' worth of time the server's main\n"
        "   thread was runnable but waited for a CPU (/proc/PID/schedstat)."
    )
    first, last = samples[0], samples[-1]
    growth = last.rss_kb - first.rss_kb
    print()
    print(
        "server memory, MiB (VmRSS of the server process"
        + (f" and its {first.processes - 1} children" if first.processes > 1 else "; no children")
        + f"): after start-up {fresh.rss_kb / 1024:.1f}, at the open loop's start "
        f"{first.rss_kb / 1024:.1f}, after each minute "
        + " ".join(f"{s.rss_kb / 1024:.1f}" for s in samples[1:-1])
        + f", at the end {last.rss_kb / 1024:.1f}"
    )
    print(
        f"  growth over the open loop {growth / 1024:+.1f} MiB "
        f"({growth / max(1, first.rss_kb):+.1%}); since start-up "
        f"{(last.rss_kb - fresh.rss_kb) / 1024:+.1f} MiB; threads "
        f"{first.threads} -> {last.threads}"
    )
    for second, count, p99, longest in worst_seconds(record, 5):
        print(
            f"  worst second {second:>4} s: {count:,} requests due, p99 {p99:.1f} ms, "
            f"max {longest:.1f} ms"
        )
    lag = sorted(record.lag_ms)
    late = sorted(result.timer_late_ms)
    overrun = result.seconds - seconds
    if overrun > 1:
        print(
            f"  the open loop ran {overrun:.1f} s past its schedule: requests waited for a free "
            "connection after the last slot's time"
        )
    print(
        f"generator: {result.generator_cpu / seconds:.2f} cores on average; woke for a slot "
        f"late by p50 {percentile(late, 50):.2f} / p99 {percentile(late, 99):.2f} / max "
        f"{late[-1] if late else math.nan:.2f} ms; {result.queued:,} slots found every "
        f"connection busy; send lag (all slots) p99 {percentile(lag, 99):.2f} ms"
    )
    print(
        f"  its own garbage collections: {GENERATOR_GC.count:,} during the load, longest "
        f"{GENERATOR_GC.longest * 1e3:.1f} ms"
    )
    if probe is not None:
        print_probe(
            probe,
            [
                (f"closed loop, {NOOP}", healthz),
                (f"closed loop, {ISSUE}", measured),
                (f"open loop, {ISSUE}", result),
            ],
        )

    # the final summary
    ok = record.ok()
    failures = outcomes(record.status)
    ordered = sorted(record.latency_ms)
    print()
    print("summary")
    rows_out = [
        ("maximum throughput (closed loop)", f"{maximum:,.0f} codes/s"),
        ("target (open loop)", f"{rate:,.0f} requests/s for {minutes} min"),
        ("achieved", f"{ok / result.seconds:,.0f} codes/s ({ok:,} of {len(record):,})"),
        (
            "latency p50 / p90 / p99",
            " / ".join(f"{percentile(ordered, p):.2f}" for p in (50, 90, 99)) + " ms",
        ),
        ("latency p99.9 / max", f"{percentile(ordered, 99.9):.2f} / {ordered[-1]:.2f} ms"),
        ("errors", describe_outcomes(failures)),
        (
            "server RSS start -> end",
            f"{first.rss_kb / 1024:.1f} -> {last.rss_kb / 1024:.1f} MiB "
            f"({growth / 1024:+.1f} MiB, {growth / max(1, first.rss_kb):+.1%})",
        ),
    ]
    for label, value in rows_out:
        print(f"  {label:<34}{value}")


def print_header(args: argparse.Namespace, server: Server, versions: str, cards: int) -> None:
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(
        f"machine: {cpu_model()}, os.cpu_count()={os.cpu_count()}, "
        f"{platform.system()} {platform.machine()}, load average {load} at start"
    )
    probe = " with bench/_server_probe.py" if args.probe else ""
    freeze = " and gc.freeze() after start-up" if args.gc_freeze else ""
    print(
        f"server: one 'idcode serve' process{probe}{freeze} (uvicorn {version('uvicorn')}, "
        f"1 worker, uvloop, httptools, no access log), Python {platform.python_version()}; "
        f"{versions}; rate limit raised to 1,000,000 a minute (still counted); "
        f"{cards:,} cards enrolled, pid {server.pid}, {server.base_url}"
    )
    loop = "uvloop" if uvloop is not None else "asyncio's default loop"
    print(
        f"load generator: this process, asyncio on {loop}, raw HTTP/1.1 keep-alive, "
        f"{args.connections} connections, timeout {TIMEOUT_SECONDS:g} s, rotating over "
        f"{cards:,} citizens' ID tokens"
    )


async def soak(args: argparse.Namespace, server: Server, tokens: list[str]) -> dict[str, Any]:
    """The phases, stopped cleanly by SIGTERM as by Ctrl-C (the task is cancelled rather than
    interrupted inside a transport's callback)."""
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    loop.add_signal_handler(signal.SIGTERM, task.cancel)
    try:
        return await run_phases(args, server, tokens)
    finally:
        loop.remove_signal_handler(signal.SIGTERM)
        interrupt_on_sigterm()


async def run_phases(args: argparse.Namespace, server: Server, tokens: list[str]) -> dict[str, Any]:
    fresh = sample(server.pid)  # the server's memory before any load
    host = urlsplit(server.base_url).netloc
    issue = build_requests(ISSUE, host, tokens)
    noop = build_requests(NOOP, host, tokens)
    print(
        f"  warm-up: {WARM_UP_SECONDS:g} s of {ISSUE} (every token once at least)",
        file=sys.stderr,
        flush=True,
    )
    await closed_loop(server.base_url, issue, args.connections, WARM_UP_SECONDS)
    print()
    print(
        f"closed loop on {args.connections} connections: {NOOP} for "
        f"{args.ceiling_seconds:g} s, "
        f"then {ISSUE} for {args.max_seconds:g} s (latency from each request's write)"
    )
    print(
        f"{'endpoint':<16}{'2xx/s':>12}{'requests':>10}{'p50 ms':>9}{'p90 ms':>9}"
        f"{'p99 ms':>9}{'p99.9':>9}{'max ms':>9}{'gen CPU/req':>14}  failures"
    )
    connections = args.connections
    healthz = await closed_loop(server.base_url, noop, connections, args.ceiling_seconds)
    print_closed_loop(NOOP, healthz)
    measured = await closed_loop(server.base_url, issue, connections, args.max_seconds)
    maximum = print_closed_loop(ISSUE, measured)
    generator_us = healthz.generator_cpu / max(1, len(healthz.record)) * 1e6
    print(
        f"   the generator's own ceiling: about {1e6 / generator_us:,.0f} requests/s on one core"
        f" at {generator_us:.0f} us of its CPU per request (measured on {NOOP})"
    )
    rate = args.rate or maximum * args.share
    print(f"  open loop: {rate:,.0f}/s for {args.minutes} min ...", file=sys.stderr, flush=True)
    samples: list[Sample] = []
    starts: list[float] = []
    sampler = asyncio.get_running_loop().create_task(
        sample_every_minute(server.pid, starts, args.minutes, samples)
    )
    result = await open_loop(
        server.base_url, issue, args.connections, rate, args.minutes * 60, starts.append
    )
    await sampler
    samples.append(sample(server.pid))  # at the end, after the last answers
    return {
        "maximum": maximum,
        "healthz": healthz,
        "measured": measured,
        "result": result,
        "samples": samples,
        "fresh": fresh,
        "rate": rate,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--minutes", type=int, default=10, help="open-loop minutes (default 10)")
    parser.add_argument(
        "--share", type=float, default=0.7, help="open-loop rate as a share of the maximum (0.7)"
    )
    parser.add_argument(
        "--rate", type=float, help="open-loop requests/s, instead of --share of the maximum"
    )
    parser.add_argument("--cards", type=int, default=1000, help="cards enrolled (default 1000)")
    parser.add_argument(
        "--connections",
        type=int,
        default=16,
        help="keep-alive connections, closed and open loop (default 16)",
    )
    parser.add_argument(
        "--max-seconds", type=float, default=25, help="closed-loop maximum run (default 25 s)"
    )
    parser.add_argument(
        "--ceiling-seconds", type=float, default=5, help=f"closed loop on {NOOP} (default 5 s)"
    )
    parser.add_argument(
        "--probe",
        action="store_true",
        help="run the server under bench/_server_probe.py: gc pauses, loop stalls, card reads",
    )
    parser.add_argument(
        "--gc-freeze",
        action="store_true",
        help="with --probe: gc.collect() and gc.freeze() in the server once it has started",
    )
    args = parser.parse_args(argv)
    if min(args.minutes, args.cards, args.connections) < 1:
        parser.error("--minutes, --cards and --connections must be at least 1")
    if not 0 < args.share <= 1:
        parser.error("--share must be in (0, 1]")
    if args.gc_freeze and not args.probe:
        parser.error("--gc-freeze needs --probe")

    interrupt_on_sigterm()
    if isinstance(sys.stdout, io.TextIOWrapper):
        sys.stdout.reconfigure(line_buffering=True)
    started = time.monotonic()
    runner = asyncio.Runner(loop_factory=uvloop.new_event_loop if uvloop else None)
    try:
        with ExitStack() as cleanup:
            cleanup.callback(runner.close)
            # Tokens outlive the run: set-up, the closed loops and the open loop.
            ttl = 3600 + args.minutes * 60
            service = prepare_service(cleanup, args.cards, token_ttl=ttl)
            launcher: Sequence[str] = ("-m", "idcode.cli")
            probe_file = service.workdir / "probe.json"
            probes: list[Probe | None] = []
            if args.probe:
                launcher = (str(PROBE),)
                service.env["IDCODE_BENCH_PROBE_FILE"] = str(probe_file)
                if args.gc_freeze:
                    service.env["IDCODE_BENCH_GC_FREEZE"] = "1"
                # runs once the server has stopped (and written the file), before the
                # working directory is removed
                cleanup.callback(lambda: probes.append(Probe.read(probe_file)))
            server = cleanup.enter_context(running_server(service.env, service.workdir, launcher))
            check_issuance(server.base_url, service.tokens[0])
            print_header(args, server, server_versions(service.database_url, REDIS_URL), args.cards)
            # The generator's own start-up objects are never collected again; its
            # collections then only look at what the load allocates.
            gc.collect()
            gc.freeze()
            gc.callbacks.append(GENERATOR_GC)
            outcome = runner.run(soak(args, server, service.tokens))
            gc.callbacks.remove(GENERATOR_GC)  # counted while the load runs, not the report
        print_report(args, probe=probes[0] if probes else None, **outcome)
    except BenchError as exc:
        print(f"bench/soak.py: {exc}", file=sys.stderr)
        return 1
    except (KeyboardInterrupt, asyncio.CancelledError):
        print(
            "bench/soak.py: interrupted; server stopped, database and keys removed",
            file=sys.stderr,
        )
        return 130
    print()
    print(
        f"command: {shlex.join(sys.orig_argv)}  (cwd {os.getcwd()}; "
        f"{time.monotonic() - started:.1f} s in all, setup and clean-up included)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
