#!/usr/bin/env python3
"""Benchmark issuance throughput on PostgreSQL and Redis against the same server's no-op.

Starts one ``idcode serve`` process on a database and a Redis prefix of its own, enrols
cards, and drives it with ``wrk``: ``POST /v1/codes`` (each request with another citizen's
ID token) and ``GET /healthz`` (the no-op), alternately in several rounds so both see the
same noise. Prints requests/s, latency and errors per endpoint and the ratio
issuance / no-op against the target (>= 0.3x).

    .venv/bin/python bench/issuance.py [--rounds R] [--seconds S] [--cards N]

Needs ``wrk`` (Debian/Ubuntu: ``apt-get install wrk``), PostgreSQL and Redis as for the
tests (IDCODE_TEST_POSTGRES_URL, IDCODE_TEST_REDIS_URL). The database, the Redis keys and
the server process are removed at the end, also on Ctrl-C or an error.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import secrets
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from types import FrameType
from typing import Any

import psycopg
import redis

from idcode.auth import dev_token
from idcode.cards import NewCard, enrol
from idcode.cose import Algorithm
from idcode.database import make_engine, make_session_factory
from idcode.keys import keys_from_jwks
from idcode.pii import vault_for
from idcode.settings import Settings
from idcode.testing import random_id_number
from idcode.verifier import Trust, verify

POSTGRES_ADMIN_URL = os.environ.get(
    "IDCODE_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
REDIS_URL = os.environ.get("IDCODE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
RATIO_TARGET = 0.3
STARTUP_SECONDS = 60
WARM_UP_SECONDS = 1

ISSUE = "POST /v1/codes"
NOOP = "GET /healthz"

# One Lua state per wrk thread. Requests are formatted once in init() and then only picked
# in turn, so the generator spends its time on sockets, not on building requests. done()
# prints one JSON line that this script reads (latencies in microseconds).
WRK_SCRIPT = r"""
local requests = {}
local next_index = 1
local thread_count = 0

function setup(thread)
  thread_count = thread_count + 1
  thread:set("thread_number", thread_count)
end

function init(args)
  local mode, tokens_file = args[1], args[2]
  if mode == "issue" then
    for token in io.lines(tokens_file) do
      requests[#requests + 1] = wrk.format("POST", "/v1/codes", {
        ["Authorization"] = "Bearer " .. token,
        ["Accept"] = "application/json",
        ["Content-Length"] = "0",
      })
    end
  else
    requests[1] = wrk.format("GET", "/healthz")
  end
  -- threads start at different tokens, so no two send the same citizen in step
  next_index = ((thread_number or 1) - 1) * 7919 % #requests + 1
end

function request()
  local chosen = requests[next_index]
  next_index = next_index % #requests + 1
  return chosen
end

function done(summary, latency, requests)
  local errors = summary.errors
  io.write(string.format(
    'IDCODE_BENCH {"requests": %d, "duration_us": %d, "non_2xx_3xx": %d, ' ..
    '"socket_errors": %d, "timeouts": %d, "p50_us": %d, "p99_us": %d}\n',
    summary.requests, summary.duration, errors.status,
    errors.connect + errors.read + errors.write, errors.timeout,
    latency:percentile(50.0), latency:percentile(99.0)))
end
"""


class BenchError(Exception):
    """The benchmark cannot run; the message says why and what to do."""


@dataclass(frozen=True)
class WrkResult:
    requests: int
    seconds: float
    non_2xx: int
    socket_errors: int
    timeouts: int
    p50_ms: float
    p99_ms: float

    @property
    def per_second(self) -> float:
        return self.requests / self.seconds


@dataclass(frozen=True)
class LoadGenerator:
    wrk: str
    threads: int
    connections: int
    seconds: float
    timeout: int
    script: Path
    tokens: Path

    def command(self, base_url: str, endpoint: str, seconds: float | None = None) -> list[str]:
        mode = "issue" if endpoint == ISSUE else "noop"
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
            str(self.tokens),
        ]

    def run(self, base_url: str, endpoint: str, seconds: float | None = None) -> WrkResult:
        command = self.command(base_url, endpoint, seconds)
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
        figures: dict[str, int] = json.loads(line.removeprefix("IDCODE_BENCH "))
        return WrkResult(
            requests=figures["requests"],
            seconds=figures["duration_us"] / 1e6,
            non_2xx=figures["non_2xx_3xx"],
            socket_errors=figures["socket_errors"],
            timeouts=figures["timeouts"],
            p50_ms=figures["p50_us"] / 1e3,
            p99_ms=figures["p99_us"] / 1e3,
        )


# --- resources, each removed on the way out -------------------------------------------


def _interrupt_on_sigterm() -> None:
    """Turn SIGTERM into KeyboardInterrupt, so ``finally`` clean-up runs as on Ctrl-C."""

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)


@contextmanager
def scratch_database(admin_url: str) -> Iterator[str]:
    name = f"idcode_bench_{os.getpid()}_{secrets.token_hex(3)}"
    try:
        admin = psycopg.connect(admin_url, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        raise BenchError(
            f"PostgreSQL is not reachable at {admin_url} ({exc}); set IDCODE_TEST_POSTGRES_URL"
        ) from None
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield admin_url.rsplit("/", 1)[0] + "/" + name
        finally:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def scratch_redis_prefix(url: str) -> Iterator[str]:
    client = redis.Redis.from_url(url, socket_connect_timeout=5)
    try:
        client.ping()
    except redis.ConnectionError as exc:
        raise BenchError(
            f"Redis is not reachable at {url} ({exc}); set IDCODE_TEST_REDIS_URL"
        ) from None
    prefix = f"idcode-bench-{os.getpid()}-{secrets.token_hex(3)}:"
    try:
        yield prefix
    finally:
        for key in client.scan_iter(match=prefix + "*", count=1000):
            client.delete(key)
        client.close()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _http(method: str, url: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url, method=method, headers=headers or {})  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310 (our server)
            return int(response.status), bytes(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


@contextmanager
def running_server(env: dict[str, str], workdir: Path) -> Iterator[str]:
    port = _free_port()
    log = workdir / "server.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "idcode.cli", "serve", "--port", str(port), "--no-access-log"],
            env=env,
            cwd=workdir,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    base_url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + STARTUP_SECONDS
        while True:
            if process.poll() is not None or time.monotonic() > deadline:
                tail = "\n".join(log.read_text(errors="replace").splitlines()[-20:])
                raise BenchError(f"idcode serve did not become healthy:\n{tail}")
            try:
                if _http("GET", base_url + "/healthz")[0] == 200:
                    break
            except OSError:
                pass
            time.sleep(0.1)
        yield base_url
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


# --- preparation ----------------------------------------------------------------------


def run_cli(env: dict[str, str], workdir: Path, *args: str) -> None:
    command = [sys.executable, "-m", "idcode.cli", *args]
    completed = subprocess.run(command, env=env, cwd=workdir, capture_output=True, text=True)
    if completed.returncode != 0:
        raise BenchError(f"{shlex.join(command)} failed:\n{completed.stderr}")


def enrol_cards(settings: Settings, count: int) -> list[str]:
    """Enrol ``count`` cards directly in the database; returns their ID numbers."""
    engine = make_engine(settings.sqlalchemy_url)
    vault = vault_for(settings)
    id_numbers: list[str] = []
    try:
        with make_session_factory(engine)() as session:
            while len(id_numbers) < count:
                id_number = random_id_number()
                if id_number in id_numbers:
                    continue
                enrol(session, vault, NewCard(id_number=id_number, name="测试"), "bench")
                id_numbers.append(id_number)
            session.commit()
    finally:
        engine.dispose()
    return id_numbers


def check_issuance(base_url: str, token: str) -> None:
    """One code through the API, verified offline with the server's JWKS, before timing."""
    status, body = _http(
        "POST", base_url + "/v1/codes", {"Authorization": f"Bearer {token}", "Content-Length": "0"}
    )
    if status != 200:
        raise BenchError(f"POST /v1/codes answered {status}: {body[:300]!r}")
    jwks = json.loads(_http("GET", base_url + "/.well-known/jwks.json")[1])
    trust = Trust.of(keys_from_jwks(jwks), prefix="WH1:", algorithms=[Algorithm.EDDSA])
    verdict = verify(json.loads(body)["code"], trust, int(time.time()))
    if not verdict.valid:
        raise BenchError(f"the issued code does not verify: {verdict}")


# --- measuring and reporting ----------------------------------------------------------


def measure(generator: LoadGenerator, base_url: str, rounds: int) -> dict[str, list[WrkResult]]:
    # The warm-up fills the card cache, as in a service that has been running a while.
    for endpoint in (NOOP, ISSUE):
        generator.run(base_url, endpoint, WARM_UP_SECONDS)
    results: dict[str, list[WrkResult]] = {NOOP: [], ISSUE: []}
    for index in range(rounds):
        order = (NOOP, ISSUE) if index % 2 == 0 else (ISSUE, NOOP)
        for endpoint in order:
            results[endpoint].append(generator.run(base_url, endpoint))
        print(
            f"  round {index + 1}/{rounds}: "
            + ", ".join(f"{e} {results[e][-1].per_second:,.0f}/s" for e in order),
            file=sys.stderr,
            flush=True,
        )
    return results


def server_versions(database_url: str, redis_url: str) -> str:
    with psycopg.connect(database_url, connect_timeout=5) as connection:
        row = connection.execute("SHOW server_version").fetchone()
    postgres = row[0] if row else "?"
    client = redis.Redis.from_url(redis_url, socket_connect_timeout=5)
    try:
        info: dict[str, Any] = client.info("server")
    finally:
        client.close()
    return f"PostgreSQL {postgres}, Redis {info.get('redis_version', '?')}"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def wrk_version(wrk: str) -> str:
    completed = subprocess.run([wrk, "-v"], capture_output=True, text=True, check=False)
    first = (completed.stdout or completed.stderr).splitlines()
    return first[0].split(" Copyright")[0] if first else "wrk"


def print_header(generator: LoadGenerator, base_url: str, services: str, cards: int) -> None:
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(
        f"machine: {cpu_model()}, os.cpu_count()={os.cpu_count()}, "
        f"{platform.system()} {platform.machine()}, load average {load} at start"
    )
    print(
        f"server: one 'idcode serve' process (uvicorn {version('uvicorn')}, 1 worker, uvloop, "
        f"httptools, no access log), Python {platform.python_version()}; {services}; "
        f"rate limit raised to 1,000,000 a minute (still counted); {cards} cards enrolled"
    )
    print(
        f"load generator: {wrk_version(generator.wrk)}, {generator.threads} thread(s), "
        f"{generator.connections} connections, {generator.seconds:g} s per run, "
        f"timeout {generator.timeout} s, on the same machine"
    )
    print(f"  {NOOP:<15} {shlex.join(generator.command(base_url, NOOP))}")
    print(f"  {ISSUE:<15} {shlex.join(generator.command(base_url, ISSUE))}")
    print(
        f"  (issuance rotates over {cards} pre-minted citizen ID tokens, one per card; "
        f"warm-up {WARM_UP_SECONDS} s per endpoint first, not counted)"
    )


def print_results(results: dict[str, list[WrkResult]]) -> None:
    rounds = len(results[NOOP])
    print()
    print(f"{rounds} rounds, the two endpoints alternating (order swapped every round)")
    print(
        f"{'endpoint':<16}{'median req/s':>13}{'min-max req/s':>18}{'p50 ms':>8}{'p99 ms':>8}"
        f"{'requests':>10}{'non-2xx':>9}{'sock err':>9}"
    )
    for endpoint in (NOOP, ISSUE):
        runs = results[endpoint]
        rates = [run.per_second for run in runs]
        print(
            f"{endpoint:<16}{statistics.median(rates):>13,.0f}"
            f"{f'{min(rates):,.0f}-{max(rates):,.0f}':>18}"
            f"{statistics.median(r.p50_ms for r in runs):>8.2f}"
            f"{statistics.median(r.p99_ms for r in runs):>8.2f}"
            f"{sum(r.requests for r in runs):>10,}"
            f"{sum(r.non_2xx for r in runs):>9,}"
            f"{sum(r.socket_errors + r.timeouts for r in runs):>9,}"
        )
    issue = [run.per_second for run in results[ISSUE]]
    noop = [run.per_second for run in results[NOOP]]
    ratio = statistics.median(issue) / statistics.median(noop)
    per_round = [i / n for i, n in zip(issue, noop, strict=True)]
    verdict = "ok" if ratio >= RATIO_TARGET else "MISS"
    print()
    print(
        f"issuance / no-op: {ratio:.2f}x (round ratios {min(per_round):.2f}-"
        f"{max(per_round):.2f}x)  target >= {RATIO_TARGET}x {verdict}"
    )
    print(
        "   ratio = median req/s of POST /v1/codes over median req/s of GET /healthz, same\n"
        "   server, same run. p50/p99 = medians over the rounds of wrk's per-run latency\n"
        "   percentiles. non-2xx counts HTTP errors (a 4xx/5xx fails the run's figures);\n"
        "   sock err = connect/read/write errors and timeouts."
    )
    failed = sum(r.non_2xx + r.socket_errors + r.timeouts for r in results[ISSUE] + results[NOOP])
    if failed:
        print(f"   WARNING: {failed} requests failed; the figures above count them as served.")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (default 5)")
    parser.add_argument(
        "--seconds", type=int, default=4, help="seconds per endpoint per round (default 4)"
    )
    parser.add_argument("--cards", type=int, default=300, help="cards enrolled (default 300)")
    parser.add_argument("--threads", type=int, default=1, help="wrk threads (default 1)")
    parser.add_argument("--connections", type=int, default=16, help="wrk connections (default 16)")
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.seconds < 1 or args.cards < 1 or args.threads < 1:
        parser.error("--rounds, --seconds, --cards and --threads must be at least 1")
    if args.connections < args.threads:
        parser.error("--connections must be at least --threads")

    wrk = shutil.which("wrk")
    if wrk is None:
        print(
            "bench/issuance.py needs the load generator wrk; install it "
            "(Debian/Ubuntu: sudo apt-get install wrk) and run again",
            file=sys.stderr,
        )
        return 2

    _interrupt_on_sigterm()
    # The round-by-round progress goes to stderr; keep the report on stdout in order with it.
    if isinstance(sys.stdout, io.TextIOWrapper):
        sys.stdout.reconfigure(line_buffering=True)
    started = time.monotonic()
    try:
        with ExitStack() as cleanup:
            workdir = Path(cleanup.enter_context(tempfile.TemporaryDirectory(prefix="idcode-")))
            database_url = cleanup.enter_context(scratch_database(POSTGRES_ADMIN_URL))
            prefix = cleanup.enter_context(scratch_redis_prefix(REDIS_URL))
            env = {k: v for k, v in os.environ.items() if not k.startswith("IDCODE_")}
            env.update(
                IDCODE_ENVIRONMENT="development",
                IDCODE_DATABASE_URL=database_url,
                IDCODE_REDIS_URL=REDIS_URL,
                IDCODE_REDIS_PREFIX=prefix,
                IDCODE_KEYS_DIR=str(workdir / "keys"),
                IDCODE_DATA_DIR=str(workdir / "data"),
                IDCODE_DEMO_DATA="false",
                # Raised, not lifted: the per-citizen counter stays on the measured path.
                IDCODE_RATE_LIMIT_PER_MINUTE="1000000",
            )
            for command in (["db", "upgrade"], ["keys", "init"]):
                run_cli(env, workdir, *command)
            settings = Settings(
                environment="development",
                keys_dir=workdir / "keys",
                database_url=database_url,
                redis_url=REDIS_URL,
                redis_prefix=prefix,
                demo_data=False,
            )
            id_numbers = enrol_cards(settings, args.cards)
            tokens = [
                dev_token(settings, f"citizen-{n}", id_number=id_number, ttl=3600)
                for n, id_number in enumerate(id_numbers)
            ]
            tokens_file = workdir / "tokens.txt"
            tokens_file.write_text("\n".join(tokens) + "\n")
            script = workdir / "idcode.lua"
            script.write_text(WRK_SCRIPT)
            generator = LoadGenerator(
                wrk, args.threads, args.connections, args.seconds, 5, script, tokens_file
            )

            base_url = cleanup.enter_context(running_server(env, workdir))
            check_issuance(base_url, tokens[0])
            print_header(generator, base_url, server_versions(database_url, REDIS_URL), len(tokens))
            results = measure(generator, base_url, args.rounds)
            print_results(results)
    except BenchError as exc:
        print(f"bench/issuance.py: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(
            "bench/issuance.py: interrupted; server stopped, database and keys removed",
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
