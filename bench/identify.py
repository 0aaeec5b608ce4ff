#!/usr/bin/env python3
"""Benchmark identification with consent on PostgreSQL and Redis against the same server's no-op.

Starts one ``idcode serve`` process on a database and a Redis prefix of its own (as
bench/issuance.py, with bench/_service.py), registers a relying party, and drives the server
with ``wrk``: ``POST /v1/identify`` (each request a fresh consent code and a fresh single-use
relying-party token, both made before the timed part) and ``GET /healthz`` (the no-op),
alternately in several rounds so both see the same noise. Only 200 answers count. Prints
answers/s, latency and refusals per endpoint and the ratio identify / no-op against the
target (>= 0.25x).

    .venv/bin/python bench/identify.py [--rounds R] [--seconds S] [--cards N]

Needs ``wrk`` (Debian/Ubuntu: ``apt-get install wrk``), PostgreSQL and Redis as for the
tests (IDCODE_TEST_POSTGRES_URL, IDCODE_TEST_REDIS_URL). The database, the Redis keys and
the server process are removed at the end, also on Ctrl-C or an error.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import math
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from urllib.parse import urlsplit

import psycopg
from _service import (
    REDIS_URL,
    BenchError,
    RelyingParty,
    check_consent_issuance,
    check_issuance,
    cpu_model,
    http,
    interrupt_on_sigterm,
    prepare_service,
    register_relying_party,
    running_server,
    server_versions,
)
from issuance import wrk_version

from idcode.terminaltoken import relying_party_token

try:  # uvicorn[standard] brings uvloop; the batch client runs on it when it is there
    import uvloop
except ImportError:  # pragma: no cover
    uvloop = None  # type: ignore[assignment]

RATIO_TARGET = 0.25
WARM_UP_SECONDS = 1
WARM_UP_BATCH = 1000
# A batch holds this many times the identifications the fastest run so far would need, so
# that a run never runs out of fresh codes (one that does is void, and done again with a
# batch twice as large).
BATCH_MARGIN = 1.5
RETRIES = 3
COUNTER_LABEL = "bench-desk-1"
ISSUE_CONNECTIONS = 16  # the batch client's connections (not timed)

IDENTIFY = "POST /v1/identify"
NOOP = "GET /healthz"

# One Lua state per wrk thread. Requests are formatted once in init(); thread k of n takes
# every n-th line of the batch, so no request is sent twice. A thread that has used its
# share sends GET /v1/bench-batch-exhausted (a 404) and counts it: that run is void.
# response() counts the answers by status for both endpoints alike (the same generator
# cost on both sides); done() sums the threads and prints one JSON line.
WRK_SCRIPT = r"""
local requests = {}
local next_index = 1
local threads = {}
local exhausted_request = nil
ok, other, exhausted, statuses = 0, 0, 0, {}

function setup(thread)
  threads[#threads + 1] = thread
  thread:set("thread_number", #threads)
end

function init(args)
  local mode, batch_file, thread_count = args[1], args[2], tonumber(args[3])
  if mode == "identify" then
    local line_number = 0
    for line in io.lines(batch_file) do
      if line_number % thread_count == thread_number - 1 then
        local tab = string.find(line, "\t", 1, true)
        requests[#requests + 1] = wrk.format("POST", "/v1/identify", {
          ["Authorization"] = "Bearer " .. string.sub(line, 1, tab - 1),
          ["Content-Type"] = "application/json",
          ["Accept"] = "application/json",
        }, string.sub(line, tab + 1))
      end
      line_number = line_number + 1
    end
    exhausted_request = wrk.format("GET", "/v1/bench-batch-exhausted")
  else
    requests[1] = wrk.format("GET", "/healthz")
    next_index = 0  -- the no-op is sent over and over
  end
end

function request()
  if next_index == 0 then
    return requests[1]
  end
  if next_index > #requests then
    exhausted = exhausted + 1
    return exhausted_request
  end
  local chosen = requests[next_index]
  next_index = next_index + 1
  return chosen
end

function response(status, headers, body)
  if status == 200 then
    ok = ok + 1
  else
    other = other + 1
    statuses[status] = (statuses[status] or 0) + 1
  end
end

function done(summary, latency, requests)
  local ok_total, other_total, exhausted_total, by_status = 0, 0, 0, {}
  for _, thread in ipairs(threads) do
    ok_total = ok_total + thread:get("ok")
    other_total = other_total + thread:get("other")
    exhausted_total = exhausted_total + thread:get("exhausted")
    for status, count in pairs(thread:get("statuses")) do
      by_status[status] = (by_status[status] or 0) + count
    end
  end
  local parts = {}
  for status, count in pairs(by_status) do
    parts[#parts + 1] = string.format('"%d": %d', status, count)
  end
  local errors = summary.errors
  io.write(string.format(
    'IDCODE_BENCH {"requests": %d, "duration_us": %d, "ok": %d, "other": %d, ' ..
    '"exhausted": %d, "statuses": {%s}, "socket_errors": %d, "timeouts": %d, ' ..
    '"p50_us": %d, "p99_us": %d}\n',
    summary.requests, summary.duration, ok_total, other_total, exhausted_total,
    table.concat(parts, ", "), errors.connect + errors.read + errors.write, errors.timeout,
    latency:percentile(50.0), latency:percentile(99.0)))
end
"""


@dataclass(frozen=True)
class WrkResult:
    requests: int  # answers read, whatever their status
    seconds: float
    ok: int  # 200 answers: the only ones that count
    other: int  # answers with any other status
    exhausted: int  # requests sent after the batch ran out (the run is void)
    statuses: dict[int, int]  # the other answers by status
    socket_errors: int
    timeouts: int
    p50_ms: float
    p99_ms: float

    @property
    def per_second(self) -> float:
        """200 answers a second: a refused identification does not count."""
        return self.ok / self.seconds


@dataclass(frozen=True)
class LoadGenerator:
    wrk: str
    threads: int
    connections: int
    seconds: float
    timeout: int
    script: Path

    def command(
        self, base_url: str, endpoint: str, batch: Path | str, seconds: float | None = None
    ) -> list[str]:
        mode = "identify" if endpoint == IDENTIFY else "noop"
        return [
            self.wrk,
            f"--threads={self.threads}",
            f"--connections={self.connections}",
            f"--duration={round(seconds or self.seconds)}s",
            f"--timeout={self.timeout}s",
            f"--script={self.script}",
            base_url,
            "--",
            mode,
            str(batch),
            str(self.threads),
        ]

    def run(
        self, base_url: str, endpoint: str, batch: Path | str = "-", seconds: float | None = None
    ) -> WrkResult:
        command = self.command(base_url, endpoint, batch, seconds)
        completed = subprocess.run(
            command, capture_output=True, text=True, timeout=(seconds or self.seconds) + 60
        )
        line = next(
            (x for x in completed.stdout.splitlines() if x.startswith("IDCODE_BENCH ")), None
        )
        if completed.returncode != 0 or line is None:
            raise BenchError(
                f"wrk failed (exit {completed.returncode}): {shlex.join(command)}\n"
                f"{completed.stdout}{completed.stderr}"
            )
        figures = json.loads(line.removeprefix("IDCODE_BENCH "))
        return WrkResult(
            requests=figures["requests"],
            seconds=figures["duration_us"] / 1e6,
            ok=figures["ok"],
            other=figures["other"],
            exhausted=figures["exhausted"],
            statuses={int(k): v for k, v in figures["statuses"].items()},
            socket_errors=figures["socket_errors"],
            timeouts=figures["timeouts"],
            p50_ms=figures["p50_us"] / 1e3,
            p99_ms=figures["p99_us"] / 1e3,
        )


# --- the batches: fresh consent codes and relying-party tokens, made before timing ------


@dataclass(frozen=True)
class Batch:
    path: Path
    size: int
    first_code_at: float  # time.time() when the batch's first code was asked for
    issue_seconds: float  # how long the consent codes took (for scale only)
    sign_seconds: float  # how long the relying-party tokens took (for scale only)


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    lowered = head.lower()
    at = lowered.find(b"\r\ncontent-length:")
    if at < 0:
        raise BenchError(f"an answer without Content-Length: {head[:200]!r}")
    length = int(lowered[at + 17 : lowered.index(b"\r\n", at + 2)])
    return status, await reader.readexactly(length)


async def _consent_codes(
    base_url: str, citizen_tokens: Sequence[str], body: bytes, count: int
) -> list[str]:
    """``count`` consent codes through ``POST /v1/codes``, citizens in turn, on keep-alive
    connections; BenchError unless every answer is a 200 with a code."""
    parts = urlsplit(base_url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    requests = [
        (
            f"POST /v1/codes HTTP/1.1\r\nHost: {host}:{port}\r\nAuthorization: Bearer {token}\r\n"
            f"Content-Type: application/json\r\nAccept: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        + body
        for token in citizen_tokens
    ]
    codes: list[str] = [""] * count
    taken = iter(range(count))

    async def issue() -> None:
        reader, writer = await asyncio.open_connection(host, port)
        try:
            for index in taken:
                writer.write(requests[index % len(requests)])
                status, payload = await _read_response(reader)
                if status != 200:
                    raise BenchError(f"POST /v1/codes with consent answered {status}: {payload!r}")
                codes[index] = json.loads(payload)["code"]
        finally:
            writer.close()

    await asyncio.gather(*(issue() for _ in range(min(ISSUE_CONNECTIONS, count))))
    return codes


def prepare_batch(
    base_url: str, citizen_tokens: Sequence[str], party: RelyingParty, size: int, path: Path
) -> Batch:
    """``size`` identification requests, each a fresh consent code and a fresh token, written
    one a line (token, tab, JSON body) for the wrk script."""
    started_at, started = time.time(), time.monotonic()
    runner = uvloop.run if uvloop is not None else asyncio.run
    codes = runner(_consent_codes(base_url, citizen_tokens, party.consent_body(), size))
    issued = time.monotonic()
    lines = []
    for code in codes:
        token = relying_party_token(party.id, party.private_key, "EdDSA")
        body = json.dumps(
            {"code": code, "purpose": party.purpose, "counter": COUNTER_LABEL},
            separators=(",", ":"),
        )
        lines.append(f"{token}\t{body}\n")
    path.write_text("".join(lines))
    signed = time.monotonic()
    return Batch(path, size, started_at, issued - started, signed - issued)


def check_identification(
    base_url: str, citizen_token: str, party: RelyingParty, workdir: Path
) -> None:
    """One identification end to end before timing: 200, a subject and the attributes."""
    batch = prepare_batch(base_url, [citizen_token], party, 1, workdir / "check.txt")
    token, body = batch.path.read_text().rstrip("\n").split("\t", 1)
    status, answer = http(
        "POST",
        base_url + "/v1/identify",
        {"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        body.encode(),
    )
    if status != 200:
        raise BenchError(f"POST /v1/identify answered {status}: {answer[:300]!r}")
    identified = json.loads(answer)
    if len(identified.get("subject", "")) != 24 or set(identified["attributes"]) != set(
        party.attributes
    ):
        raise BenchError(f"POST /v1/identify answered unexpectedly: {sorted(identified)}")
    batch.path.unlink()


def disclosures_recorded(database_url: str) -> int:
    with psycopg.connect(database_url, connect_timeout=5) as connection:
        row = connection.execute("SELECT count(*) FROM disclosures").fetchone()
    return int(row[0]) if row else 0


# --- measuring and reporting ----------------------------------------------------------


@dataclass
class Measured:
    results: dict[str, list[WrkResult]]
    batches: list[Batch]
    oldest_code_seconds: float  # the oldest code's age when its run ended
    disclosures: int  # disclosures the identify runs recorded (wrk's in-flight ones too)
    voided: int  # runs done again because their batch ran out


def batch_size(rate: float, seconds: float, connections: int) -> int:
    return math.ceil(rate * seconds * BATCH_MARGIN) + 4 * connections


def measure(
    generator: LoadGenerator,
    base_url: str,
    rounds: int,
    citizen_tokens: Sequence[str],
    party: RelyingParty,
    workdir: Path,
    database_url: str,
) -> Measured:
    # The warm-up fills the card cache and the connection pools, and estimates the rate the
    # batches are sized for.
    generator.run(base_url, NOOP, seconds=WARM_UP_SECONDS)
    batch = prepare_batch(
        base_url, citizen_tokens, party, WARM_UP_BATCH, workdir / "batch-warm-up.txt"
    )
    warm = generator.run(base_url, IDENTIFY, batch.path, WARM_UP_SECONDS)
    batch.path.unlink()
    rate = warm.per_second
    results: dict[str, list[WrkResult]] = {NOOP: [], IDENTIFY: []}
    measured = Measured(results, [], 0.0, 0, 0)
    for index in range(rounds):
        order = (NOOP, IDENTIFY) if index % 2 == 0 else (IDENTIFY, NOOP)
        size = 0
        for _attempt in range(RETRIES):
            # Made at the start of the round, so that whichever endpoint follows it (the
            # order swaps every round) sees the after-effects of making it.
            size = max(2 * size, batch_size(rate, generator.seconds, generator.connections))
            batch = prepare_batch(
                base_url, citizen_tokens, party, size, workdir / f"batch-{index + 1}.txt"
            )
            before = disclosures_recorded(database_url)
            runs = {e: generator.run(base_url, e, batch.path) for e in order}
            identified = runs[IDENTIFY]
            rate = max(rate, identified.per_second)
            batch.path.unlink()
            if identified.exhausted == 0:
                break
            measured.voided += 1
            print(
                f"  round {index + 1}: the batch of {size:,} ran out; again with a larger one",
                file=sys.stderr,
                flush=True,
            )
        else:
            raise BenchError(f"round {index + 1} ran out of fresh codes {RETRIES} times")
        measured.oldest_code_seconds = max(
            measured.oldest_code_seconds, time.time() - batch.first_code_at
        )
        measured.disclosures += disclosures_recorded(database_url) - before
        measured.batches.append(batch)
        for endpoint in order:
            results[endpoint].append(runs[endpoint])
        print(
            f"  round {index + 1}/{rounds}: batch of {size:,} made in "
            f"{batch.issue_seconds + batch.sign_seconds:.1f} s; "
            + ", ".join(f"{e} {results[e][-1].per_second:,.0f}/s" for e in order),
            file=sys.stderr,
            flush=True,
        )
    return measured


def print_header(
    generator: LoadGenerator,
    base_url: str,
    services: str,
    cards: int,
    party: RelyingParty,
    code_ttl: int,
) -> None:
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(
        f"machine: {cpu_model()}, os.cpu_count()={os.cpu_count()}, "
        f"{platform.system()} {platform.machine()}, load average {load} at start"
    )
    print(
        f"server: one 'idcode serve' process (uvicorn {version('uvicorn')}, 1 worker, uvloop, "
        f"httptools, no access log), Python {platform.python_version()}; {services}; "
        f"code TTL {code_ttl} s; {cards} cards enrolled; one relying party (Ed25519 key) "
        f"allowed {', '.join(party.attributes)}"
    )
    print(
        f"load generator: {wrk_version(generator.wrk)}, {generator.threads} thread(s), "
        f"{generator.connections} connections, {generator.seconds:g} s per run, "
        f"timeout {generator.timeout} s, on the same machine"
    )
    print(f"  {NOOP:<17} {shlex.join(generator.command(base_url, NOOP, '-'))}")
    batch = Path(generator.script.parent, "batch-N.txt")
    print(f"  {IDENTIFY:<17} {shlex.join(generator.command(base_url, IDENTIFY, batch))}")
    print(
        "  (each round first makes a batch of fresh identifications, not timed: consent codes\n"
        f"   through POST /v1/codes with {{disclose: to the party, {', '.join(party.attributes)}"
        f", purpose {party.purpose}}},\n"
        f"   citizens in turn, on {ISSUE_CONNECTIONS} connections, and one single-use "
        "relying-party token per code;\n"
        "   each identify request spends one code and one token, once; warm-up "
        f"{WARM_UP_SECONDS} s per endpoint first, not counted)"
    )


def print_results(measured: Measured, connections: int, code_ttl: int) -> None:
    results = measured.results
    rounds = len(results[NOOP])
    print()
    print(f"{rounds} rounds, the two endpoints alternating (order swapped every round)")
    print(
        f"{'endpoint':<18}{'median 200/s':>13}{'min-max 200/s':>18}{'p50 ms':>8}{'p99 ms':>8}"
        f"{'200s':>9}{'non-200':>9}{'sock err':>9}"
    )
    for endpoint in (NOOP, IDENTIFY):
        runs = results[endpoint]
        rates = [run.per_second for run in runs]
        print(
            f"{endpoint:<18}{statistics.median(rates):>13,.0f}"
            f"{f'{min(rates):,.0f}-{max(rates):,.0f}':>18}"
            f"{statistics.median(r.p50_ms for r in runs):>8.2f}"
            f"{statistics.median(r.p99_ms for r in runs):>8.2f}"
            f"{sum(r.ok for r in runs):>9,}"
            f"{sum(r.other for r in runs):>9,}"
            f"{sum(r.socket_errors + r.timeouts for r in runs):>9,}"
        )
    identify = [run.per_second for run in results[IDENTIFY]]
    noop = [run.per_second for run in results[NOOP]]
    ratio = statistics.median(identify) / statistics.median(noop)
    per_round = [i / n for i, n in zip(identify, noop, strict=True)]
    verdict = "ok" if ratio >= RATIO_TARGET else "MISS"
    print()
    print(
        f"identify / no-op: {ratio:.3f}x (round ratios {min(per_round):.3f}-"
        f"{max(per_round):.3f}x)  target >= {RATIO_TARGET}x {verdict}"
    )
    print(
        "   ratio = median 200 answers/s of POST /v1/identify over those of GET /healthz, same\n"
        "   server, same run; any other answer is not counted. p50/p99 = medians over the\n"
        "   rounds of wrk's per-run latency percentiles (all answers). sock err = connect/read/\n"
        "   write errors and timeouts."
    )
    counted = sum(r.ok for r in results[IDENTIFY])
    sizes = [b.size for b in measured.batches]
    issued = sum(sizes) / sum(b.issue_seconds for b in measured.batches)
    print(
        f"   disclosures recorded in the database by the timed runs: {measured.disclosures:,} "
        f"for {counted:,} 200s counted\n"
        f"   (more by at most {connections} a run: answers still in flight when wrk stopped)."
        f"\n   batches {min(sizes):,}-{max(sizes):,} identifications, consent codes made at "
        f"{issued:,.0f}/s (batch client, for scale);\n"
        f"   oldest code {measured.oldest_code_seconds:.0f} s old at the end of its run "
        f"(code TTL {code_ttl} s)"
    )
    if measured.voided:
        print(f"   {measured.voided} run(s) ran out of fresh codes and were done again.")
    if measured.oldest_code_seconds > code_ttl:
        print(
            "   WARNING: codes outlived their TTL before they were used (only the clock-skew\n"
            "   allowance kept them valid): run with fewer --seconds."
        )
    statuses: Counter[int] = Counter()
    for run in results[IDENTIFY] + results[NOOP]:
        statuses.update(run.statuses)
    failed = sum(statuses.values()) + sum(
        r.socket_errors + r.timeouts for r in results[IDENTIFY] + results[NOOP]
    )
    if failed:
        shown = ", ".join(f"{count:,} x {status}" for status, count in sorted(statuses.items()))
        print(f"   WARNING: {failed:,} requests failed ({shown or 'socket errors'}); not counted.")
    if not counted <= measured.disclosures <= counted + connections * rounds:
        print("   WARNING: the disclosures recorded do not match the 200s counted.")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (default 5)")
    parser.add_argument(
        "--seconds", type=int, default=4, help="seconds per endpoint per round (default 4)"
    )
    parser.add_argument("--cards", type=int, default=300, help="cards enrolled (default 300)")
    parser.add_argument("--threads", type=int, default=1, help="wrk threads (default 1)")
    parser.add_argument("--connections", type=int, default=16, help="wrk connections (default 16)")
    parser.add_argument(
        "--attributes",
        default="name,id_number,residency",
        help="attributes the party may ask for and the citizens consent to "
        "(default name,id_number,residency)",
    )
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.seconds < 1 or args.cards < 1 or args.threads < 1:
        parser.error("--rounds, --seconds, --cards and --threads must be at least 1")
    if args.connections < args.threads:
        parser.error("--connections must be at least --threads")
    attributes = tuple(a for a in args.attributes.split(",") if a)

    wrk = shutil.which("wrk")
    if wrk is None:
        print(
            "bench/identify.py needs the load generator wrk; install it "
            "(Debian/Ubuntu: sudo apt-get install wrk) and run again",
            file=sys.stderr,
        )
        return 2

    interrupt_on_sigterm()
    if isinstance(sys.stdout, io.TextIOWrapper):
        sys.stdout.reconfigure(line_buffering=True)
    started = time.monotonic()
    # A batch is made at the start of its round and spent by the end of its second run:
    # the default lifetime of 60 s is enough unless the runs are long.
    code_ttl = max(60, 4 * args.seconds + 30)
    try:
        with ExitStack() as cleanup:
            service = prepare_service(cleanup, args.cards)
            service.env["IDCODE_CODE_TTL_SECONDS"] = str(code_ttl)
            workdir, tokens = service.workdir, service.tokens
            script = workdir / "identify.lua"
            script.write_text(WRK_SCRIPT)
            generator = LoadGenerator(wrk, args.threads, args.connections, args.seconds, 5, script)

            base_url = cleanup.enter_context(running_server(service.env, workdir)).base_url
            check_issuance(base_url, tokens[0])
            party = register_relying_party(base_url, service.settings, attributes)
            check_consent_issuance(base_url, tokens[0], party)
            check_identification(base_url, tokens[0], party, workdir)
            versions = server_versions(service.database_url, REDIS_URL)
            print_header(generator, base_url, versions, len(tokens), party, code_ttl)
            measured = measure(
                generator, base_url, args.rounds, tokens, party, workdir, service.database_url
            )
            print_results(measured, args.connections, code_ttl)
    except BenchError as exc:
        print(f"bench/identify.py: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(
            "bench/identify.py: interrupted; server stopped, database and keys removed",
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
