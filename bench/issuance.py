#!/usr/bin/env python3
"""Benchmark issuance throughput on PostgreSQL and Redis against the same server's no-op.

Starts one ``idcode serve`` process on a database and a Redis prefix of its own, enrols
cards, and drives it with ``wrk``: ``POST /v1/codes`` (each request with another citizen's
ID token) and ``GET /healthz`` (the no-op), alternately in several rounds so both see the
same noise. Prints requests/s, latency and errors per endpoint and the ratio
issuance / no-op against the target (>= 0.3x). With ``--consent`` a third endpoint joins the
rounds: ``POST /v1/codes`` with a consent body (identification, issue 12), which also writes the
consent to the database.

    .venv/bin/python bench/issuance.py [--rounds R] [--seconds S] [--cards N] [--consent]
                                       [--profiles standard,gm]

``--profiles gm`` runs the server under the GM crypto profile (SM2-signed codes; target
>= 0.2x). ``--profiles standard,gm`` runs one server per profile side by side and times all
four runs (each server's issuance and no-op) in every round, the order rotated, and prints
each issuance against its no-op and SM2 issuance against EdDSA issuance.

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
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass, replace
from importlib.metadata import version
from pathlib import Path

from _service import (
    REDIS_URL,
    BenchError,
    check_consent_issuance,
    check_issuance,
    cpu_model,
    interrupt_on_sigterm,
    prepare_service,
    register_relying_party,
    running_server,
    server_versions,
)

from idcode.profiles import ProfileName

RATIO_TARGET = 0.3
# Issuance against the no-op per crypto profile: SM2 signs slower than Ed25519 (issue 16).
PROFILE_TARGETS = {ProfileName.STANDARD: RATIO_TARGET, ProfileName.GM: 0.2}
PROFILE_SIGNATURES = {ProfileName.STANDARD: "EdDSA", ProfileName.GM: "SM2"}
WARM_UP_SECONDS = 1

ISSUE = "POST /v1/codes"
CONSENT = "POST /v1/codes+consent"  # the same route with a consent body
NOOP = "GET /healthz"
MODES = {ISSUE: "issue", CONSENT: "consent", NOOP: "noop"}

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
  local mode, tokens_file, body_file = args[1], args[2], args[3]
  if mode == "issue" then
    for token in io.lines(tokens_file) do
      requests[#requests + 1] = wrk.format("POST", "/v1/codes", {
        ["Authorization"] = "Bearer " .. token,
        ["Accept"] = "application/json",
        ["Content-Length"] = "0",
      })
    end
  elseif mode == "consent" then
    local file = io.open(body_file, "rb")
    local body = file:read("*a")
    file:close()
    for token in io.lines(tokens_file) do
      requests[#requests + 1] = wrk.format("POST", "/v1/codes", {
        ["Authorization"] = "Bearer " .. token,
        ["Accept"] = "application/json",
        ["Content-Type"] = "application/json",
      }, body)
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
    consent_body: Path

    def command(self, base_url: str, endpoint: str, seconds: float | None = None) -> list[str]:
        return [
            self.wrk,
            f"--threads={self.threads}",
            f"--connections={self.connections}",
            f"--duration={round(seconds or self.seconds)}s",
            f"--timeout={self.timeout}s",
            f"--script={self.script}",
            base_url,
            "--",
            MODES[endpoint],
            str(self.tokens),
            *([str(self.consent_body)] if endpoint == CONSENT else []),
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


# --- measuring and reporting ----------------------------------------------------------


def measure(
    generator: LoadGenerator, base_url: str, rounds: int, endpoints: Sequence[str]
) -> dict[str, list[WrkResult]]:
    # The warm-up fills the card cache, as in a service that has been running a while.
    for endpoint in endpoints:
        generator.run(base_url, endpoint, WARM_UP_SECONDS)
    results: dict[str, list[WrkResult]] = {endpoint: [] for endpoint in endpoints}
    for index in range(rounds):
        # Two endpoints swap every round; three take turns at each place.
        shift = index % len(endpoints)
        order = (
            tuple(endpoints[shift:]) + tuple(endpoints[:shift])
            if len(endpoints) > 2
            else tuple(endpoints)
            if index % 2 == 0
            else tuple(reversed(endpoints))
        )
        for endpoint in order:
            results[endpoint].append(generator.run(base_url, endpoint))
        print(
            f"  round {index + 1}/{rounds}: "
            + ", ".join(f"{e} {results[e][-1].per_second:,.0f}/s" for e in order),
            file=sys.stderr,
            flush=True,
        )
    return results


def wrk_version(wrk: str) -> str:
    completed = subprocess.run([wrk, "-v"], capture_output=True, text=True, check=False)
    first = (completed.stdout or completed.stderr).splitlines()
    return first[0].split(" Copyright")[0] if first else "wrk"


def print_header(
    generator: LoadGenerator, base_url: str, services: str, cards: int, endpoints: Sequence[str]
) -> None:
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
    for endpoint in endpoints:
        print(f"  {endpoint:<15} {shlex.join(generator.command(base_url, endpoint))}")
    print(
        f"  (issuance rotates over {cards} pre-minted citizen ID tokens, one per card; "
        f"warm-up {WARM_UP_SECONDS} s per endpoint first, not counted)"
    )
    if CONSENT in endpoints:
        print(f"  (consent body, the same for every citizen: {generator.consent_body.read_text()})")


def print_results(results: dict[str, list[WrkResult]], target: float = RATIO_TARGET) -> None:
    rounds = len(results[NOOP])
    print()
    if len(results) > 2:
        print(f"{rounds} rounds, the {len(results)} endpoints in turn (order rotated every round)")
    else:
        print(f"{rounds} rounds, the two endpoints alternating (order swapped every round)")
    print(
        f"{'endpoint':<23}{'median req/s':>13}{'min-max req/s':>18}{'p50 ms':>8}{'p99 ms':>8}"
        f"{'requests':>10}{'non-2xx':>9}{'sock err':>9}"
    )
    for endpoint, runs in results.items():
        rates = [run.per_second for run in runs]
        print(
            f"{endpoint:<23}{statistics.median(rates):>13,.0f}"
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
    verdict = "ok" if ratio >= target else "MISS"
    print()
    print(
        f"issuance / no-op: {ratio:.2f}x (round ratios {min(per_round):.2f}-"
        f"{max(per_round):.2f}x)  target >= {target}x {verdict}"
    )
    if CONSENT in results:
        consent = [run.per_second for run in results[CONSENT]]
        for base, label in ((noop, "no-op"), (issue, "issuance")):
            ratio = statistics.median(consent) / statistics.median(base)
            per_round = [c / b for c, b in zip(consent, base, strict=True)]
            print(
                f"issuance with consent / {label}: {ratio:.2f}x (round ratios "
                f"{min(per_round):.2f}-{max(per_round):.2f}x)"
            )
    print(
        "   ratio = median req/s of POST /v1/codes over median req/s of GET /healthz, same\n"
        "   server, same run. p50/p99 = medians over the rounds of wrk's per-run latency\n"
        "   percentiles. non-2xx counts HTTP errors (a 4xx/5xx fails the run's figures);\n"
        "   sock err = connect/read/write errors and timeouts."
    )
    failed = sum(
        r.non_2xx + r.socket_errors + r.timeouts for runs in results.values() for r in runs
    )
    if failed:
        print(f"   WARNING: {failed} requests failed; the figures above count them as served.")


def compare(
    cleanup: ExitStack,
    generator: LoadGenerator,
    base_url: str,
    source: Path,
    args: argparse.Namespace,
) -> None:
    """This checkout's issuance against a baseline checkout's, both servers up at once and
    timed in alternation (the order swapped every round), so both see the same noise."""
    if not (source / "idcode" / "__init__.py").is_file():
        raise BenchError(f"--baseline {source}: not an idcode checkout (no idcode/__init__.py)")
    baseline = prepare_service(cleanup, args.cards, source=source, profile=args.profiles[0])
    tokens_file = baseline.workdir / "tokens.txt"
    tokens_file.write_text("\n".join(baseline.tokens) + "\n")
    baseline_generator = replace(generator, tokens=tokens_file)
    baseline_url = cleanup.enter_context(running_server(baseline.env, baseline.workdir)).base_url
    check_issuance(baseline_url, baseline.tokens[0], args.profiles[0])
    versions = server_versions(baseline.database_url, REDIS_URL)
    print_header(generator, base_url, versions, args.cards, (ISSUE,))
    print(f"baseline: {source} (PYTHONPATH), its own database, key store and Redis prefix")
    sides = {"this checkout": (generator, base_url), "baseline": (baseline_generator, baseline_url)}
    for side_generator, url in sides.values():
        side_generator.run(url, ISSUE, WARM_UP_SECONDS)
    results: dict[str, list[WrkResult]] = {side: [] for side in sides}
    for index in range(args.rounds):
        order = list(sides) if index % 2 == 0 else list(reversed(sides))
        for side in order:
            side_generator, url = sides[side]
            results[side].append(side_generator.run(url, ISSUE))
        print(
            f"  round {index + 1}/{args.rounds}: "
            + ", ".join(f"{side} {results[side][-1].per_second:,.0f}/s" for side in order),
            file=sys.stderr,
            flush=True,
        )
    print()
    print(
        f"{'POST /v1/codes':<23}{'median req/s':>13}{'min-max req/s':>18}{'p50 ms':>8}"
        f"{'p99 ms':>8}{'requests':>10}{'non-2xx':>9}{'sock err':>9}"
    )
    for side, runs in results.items():
        rates = [run.per_second for run in runs]
        print(
            f"{side:<23}{statistics.median(rates):>13,.0f}"
            f"{f'{min(rates):,.0f}-{max(rates):,.0f}':>18}"
            f"{statistics.median(r.p50_ms for r in runs):>8.2f}"
            f"{statistics.median(r.p99_ms for r in runs):>8.2f}"
            f"{sum(r.requests for r in runs):>10,}"
            f"{sum(r.non_2xx for r in runs):>9,}"
            f"{sum(r.socket_errors + r.timeouts for r in runs):>9,}"
        )
    mine = [run.per_second for run in results["this checkout"]]
    base = [run.per_second for run in results["baseline"]]
    per_round = sorted(m / b for m, b in zip(mine, base, strict=True))
    print()
    print(
        f"this checkout / baseline: {statistics.median(mine) / statistics.median(base):.3f}x "
        f"(median of the round ratios {statistics.median(per_round):.3f}x, "
        f"range {per_round[0]:.3f}-{per_round[-1]:.3f}x)"
    )
    print(f"\ncommand: {shlex.join(sys.orig_argv)}  (cwd {os.getcwd()})")


def compare_profiles(
    cleanup: ExitStack,
    generator: LoadGenerator,
    base_url: str,
    profiles: Sequence[ProfileName],
    args: argparse.Namespace,
) -> None:
    """One server per crypto profile (``base_url`` runs the first), all up at once; each
    round times every server's no-op and issuance, the order of the runs rotated every
    round, so that all see the same noise."""
    servers = {profiles[0]: (generator, base_url)}
    versions = ""
    for profile in profiles[1:]:
        service = prepare_service(cleanup, args.cards, profile=profile)
        tokens_file = service.workdir / "tokens.txt"
        tokens_file.write_text("\n".join(service.tokens) + "\n")
        url = cleanup.enter_context(running_server(service.env, service.workdir)).base_url
        check_issuance(url, service.tokens[0], profile)
        servers[profile] = (replace(generator, tokens=tokens_file), url)
        versions = server_versions(service.database_url, REDIS_URL)
    print_header(generator, base_url, versions, args.cards, (NOOP, ISSUE))
    print(
        f"profiles: {', '.join(f'{p} ({PROFILE_SIGNATURES[p]} codes)' for p in profiles)}, "
        f"one server each (IDCODE_CRYPTO_PROFILE), each with its own database, key store and "
        f"Redis prefix; the same commands against each server's URL: "
        + ", ".join(f"{p} {url}" for p, (_, url) in servers.items())
    )
    runs = [(profile, endpoint) for profile in profiles for endpoint in (NOOP, ISSUE)]
    for profile, endpoint in runs:
        side_generator, url = servers[profile]
        side_generator.run(url, endpoint, WARM_UP_SECONDS)
    results: dict[tuple[ProfileName, str], list[WrkResult]] = {run: [] for run in runs}
    for index in range(args.rounds):
        shift = index % len(runs)
        order = runs[shift:] + runs[:shift]
        if index // len(runs) % 2:  # every other cycle backwards: each pair in both orders
            order.reverse()
        for profile, endpoint in order:
            side_generator, url = servers[profile]
            results[profile, endpoint].append(side_generator.run(url, endpoint))
        print(
            f"  round {index + 1}/{args.rounds}: "
            + ", ".join(f"{p} {e} {results[p, e][-1].per_second:,.0f}/s" for p, e in order),
            file=sys.stderr,
            flush=True,
        )
    print()
    print(f"{args.rounds} rounds, the {len(runs)} runs in turn (order rotated every round)")
    print(
        f"{'profile, endpoint':<27}{'median req/s':>13}{'min-max req/s':>18}{'p50 ms':>8}"
        f"{'p99 ms':>8}{'requests':>10}{'non-2xx':>9}{'sock err':>9}"
    )
    for (profile, endpoint), side_runs in results.items():
        rates = [run.per_second for run in side_runs]
        print(
            f"{f'{profile} {endpoint}':<27}{statistics.median(rates):>13,.0f}"
            f"{f'{min(rates):,.0f}-{max(rates):,.0f}':>18}"
            f"{statistics.median(r.p50_ms for r in side_runs):>8.2f}"
            f"{statistics.median(r.p99_ms for r in side_runs):>8.2f}"
            f"{sum(r.requests for r in side_runs):>10,}"
            f"{sum(r.non_2xx for r in side_runs):>9,}"
            f"{sum(r.socket_errors + r.timeouts for r in side_runs):>9,}"
        )
    print()

    def ratio_line(label: str, top: list[WrkResult], bottom: list[WrkResult]) -> str:
        tops = [run.per_second for run in top]
        bottoms = [run.per_second for run in bottom]
        per_round = [t / b for t, b in zip(tops, bottoms, strict=True)]
        return (
            f"{label}: {statistics.median(tops) / statistics.median(bottoms):.2f}x "
            f"(round ratios {min(per_round):.2f}-{max(per_round):.2f}x)"
        )

    for profile in profiles:
        target = PROFILE_TARGETS[profile]
        issue, noop = results[profile, ISSUE], results[profile, NOOP]
        ratio = statistics.median(r.per_second for r in issue) / statistics.median(
            r.per_second for r in noop
        )
        print(
            ratio_line(
                f"{PROFILE_SIGNATURES[profile]} issuance / its no-op ({profile})", issue, noop
            )
            + f"  target >= {target}x {'ok' if ratio >= target else 'MISS'}"
        )
    first, *others = profiles
    for other in others:
        for endpoint, what in ((ISSUE, "issuance"), (NOOP, "no-op")):
            print(
                ratio_line(
                    f"{PROFILE_SIGNATURES[other]} {what} / {PROFILE_SIGNATURES[first]} {what}",
                    results[other, endpoint],
                    results[first, endpoint],
                )
            )
    print(
        "   ratios = medians of req/s over the rounds; round ratios = the same ratio within\n"
        "   each round (runs of one round are seconds apart, not simultaneous). The no-op\n"
        "   ratio between the servers shows how evenly the machine's noise fell on them."
    )
    failed = sum(
        r.non_2xx + r.socket_errors + r.timeouts for runs in results.values() for r in runs
    )
    if failed:
        print(f"   WARNING: {failed} requests failed; the figures above count them as served.")
    print(f"\ncommand: {shlex.join(sys.orig_argv)}  (cwd {os.getcwd()})")


def profile_list(text: str) -> list[ProfileName]:
    try:
        profiles = [ProfileName(name.strip()) for name in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r}: one or two of {', '.join(ProfileName)}, comma-separated"
        ) from None
    if len(set(profiles)) != len(profiles):
        raise argparse.ArgumentTypeError(f"{text!r}: a profile named twice")
    return profiles


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
        "--baseline",
        metavar="DIR",
        help="another checkout of idcode (e.g. git worktree add /tmp/base main): run its "
        "server beside this one, on a database of its own, and time POST /v1/codes on both "
        "in alternation instead of against the no-op",
    )
    parser.add_argument(
        "--consent",
        action="store_true",
        help="also POST /v1/codes with a consent body for a registered relying party",
    )
    parser.add_argument(
        "--profiles",
        type=profile_list,
        default=[ProfileName.STANDARD],
        metavar="standard,gm",
        help="the crypto profile of the server (IDCODE_CRYPTO_PROFILE; default standard); "
        "two, comma-separated, run one server per profile side by side and compare them",
    )
    args = parser.parse_args(argv)
    if len(args.profiles) > 1 and (args.baseline or args.consent):
        parser.error("--profiles with two profiles goes without --baseline and --consent")
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

    interrupt_on_sigterm()
    # The round-by-round progress goes to stderr; keep the report on stdout in order with it.
    if isinstance(sys.stdout, io.TextIOWrapper):
        sys.stdout.reconfigure(line_buffering=True)
    started = time.monotonic()
    try:
        with ExitStack() as cleanup:
            profile = args.profiles[0]
            service = prepare_service(cleanup, args.cards, profile=profile)
            workdir, tokens = service.workdir, service.tokens
            tokens_file = workdir / "tokens.txt"
            tokens_file.write_text("\n".join(tokens) + "\n")
            script = workdir / "idcode.lua"
            script.write_text(WRK_SCRIPT)
            consent_body = workdir / "consent.json"
            generator = LoadGenerator(
                wrk,
                args.threads,
                args.connections,
                args.seconds,
                5,
                script,
                tokens_file,
                consent_body,
            )
            endpoints = (NOOP, ISSUE, CONSENT) if args.consent else (NOOP, ISSUE)

            base_url = cleanup.enter_context(running_server(service.env, workdir)).base_url
            check_issuance(base_url, tokens[0], profile)
            if len(args.profiles) > 1:
                compare_profiles(cleanup, generator, base_url, args.profiles, args)
                return 0
            if args.baseline:
                compare(cleanup, generator, base_url, Path(args.baseline).resolve(), args)
                return 0
            if args.consent:
                party = register_relying_party(base_url, service.settings)
                consent_body.write_bytes(party.consent_body())
                check_consent_issuance(base_url, tokens[0], party)
            versions = server_versions(service.database_url, REDIS_URL)
            print_header(generator, base_url, versions, len(tokens), endpoints)
            print(f"crypto profile: {profile} ({PROFILE_SIGNATURES[profile]} codes)")
            results = measure(generator, base_url, args.rounds, endpoints)
            print_results(results, PROFILE_TARGETS[profile])
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
