"""The floor under POST /v1/identify: what the steps it cannot skip cost, as ratios to the
same server's no-op endpoint, measured side by side in one run.

    .venv/bin/python bench/identify_floor.py [--rounds R] [--seconds S] [--connections C]

Starts ``idcode serve`` as bench/identify.py does (bench/_service.py: PostgreSQL, Redis, a
key store), but through bench/_floor_server.py, which adds routes doing one more of the
steps of an identification each, with the service's own functions: FastAPI's parsing of the
request (``body``), the relying party's token checked (``token``, its signature), the code
verified (``code``, the second signature), the token's single use spent in Redis
(``spend``), and all of that from a plain Starlette route (``raw``). It registers one
relying party, gets one code, signs one token, and sends them to every route, with ``GET
/healthz`` (the no-op of bench/identify.py) in the same rounds, the order turned around
every round. A route that answers anything but 200 stops the run.

``spend`` is everything an identification does except finding the consent, decrypting what
it discloses and recording the disclosure: its ratio is a ceiling for POST /v1/identify on
this server (bench/README.md).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path

from _service import (
    BenchError,
    cpu_model,
    http,
    interrupt_on_sigterm,
    prepare_service,
    register_relying_party,
    running_server,
)

from idcode.terminaltoken import relying_party_token

FLOOR_SERVER = Path(__file__).with_name("_floor_server.py")
NOOP = "GET /healthz"
STEPS = ("body", "token", "code", "spend", "raw")
# wrk: one request, sent again and again; response() counts the statuses (both sides).
WRK_SCRIPT = """
local method, body, token = wrk.method, nil, nil
function init(args)
  if args[1] == "post" then
    local f = io.open(args[2], "r"); body = f:read("*a"); f:close()
    token = args[3]
  end
end
counts = {}
function request()
  if body then
    return wrk.format("POST", nil, {["Content-Type"] = "application/json",
                                    ["Authorization"] = "Bearer " .. token}, body)
  end
  return wrk.format("GET")
end
function response(status, headers, body)
  counts[status] = (counts[status] or 0) + 1
end
"""


def run_wrk(
    wrk: str, url: str, script: Path, args: list[str], seconds: int, connections: int
) -> tuple[float, str]:
    """(200 answers per second, wrk's output); BenchError if anything else was answered."""
    command = [
        wrk,
        "--threads=1",
        f"--connections={connections}",
        f"--duration={seconds}s",
        "--timeout=5s",
        f"--script={script}",
        url,
        "--",
        *args,
    ]
    completed = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 60)
    out = completed.stdout
    if completed.returncode != 0 or "Requests/sec:" not in out:
        raise BenchError(f"wrk failed (exit {completed.returncode}):\n{out}{completed.stderr}")
    if "Non-2xx or 3xx responses" in out or "Socket errors" in out:
        raise BenchError(f"{url} answered other than 200 or lost connections:\n{out}")
    rate = float(out.split("Requests/sec:")[1].split()[0])
    return rate, out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=3, help="rounds (default 3)")
    parser.add_argument("--seconds", type=int, default=4, help="seconds per run (default 4)")
    parser.add_argument("--connections", type=int, default=16, help="wrk connections (default 16)")
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.seconds < 1 or args.connections < 1:
        parser.error("--rounds, --seconds and --connections must be at least 1")
    wrk = shutil.which("wrk")
    if wrk is None:
        print(
            "bench/identify_floor.py needs the load generator wrk; install it "
            "(Debian/Ubuntu: sudo apt-get install wrk) and run again",
            file=sys.stderr,
        )
        return 2
    interrupt_on_sigterm()
    started = time.monotonic()
    try:
        with ExitStack() as cleanup:
            service = prepare_service(cleanup, cards=1)
            # The one code is sent for the whole run: it must outlive it.
            service.env["IDCODE_CODE_TTL_SECONDS"] = str(args.rounds * 6 * (args.seconds + 2) + 120)
            workdir = service.workdir
            server = cleanup.enter_context(
                running_server(service.env, workdir, launcher=(str(FLOOR_SERVER),))
            )
            url = server.base_url
            party = register_relying_party(url, service.settings)
            status, answer = http(
                "POST",
                url + "/v1/codes",
                {"Authorization": f"Bearer {service.tokens[0]}", "Content-Length": "0"},
            )
            if status != 200:
                raise BenchError(f"POST /v1/codes answered {status}: {answer[:300]!r}")
            body = workdir / "floor-body.json"
            body.write_text(
                json.dumps({"code": json.loads(answer)["code"], "purpose": party.purpose})
            )
            # One token for every request (the floor routes spend a random jti instead): its
            # lifetime is at most five minutes, so a new one for each run.
            script = workdir / "floor.lua"
            script.write_text(WRK_SCRIPT)
            rates: dict[str, list[float]] = {NOOP: [], **{s: [] for s in STEPS}}
            order = [NOOP, *STEPS]
            print(
                f"machine: {cpu_model()}; one 'idcode serve' process through "
                f"bench/_floor_server.py (the service's app plus the floor routes)\n"
                f"wrk: 1 thread, {args.connections} connections, {args.seconds} s a run, "
                f"{args.rounds} rounds, the order turned around every round"
            )
            for index in range(args.rounds):
                for name in order if index % 2 == 0 else order[::-1]:
                    if name == NOOP:
                        wrk_args = ["get"]
                        target = url + "/healthz"
                    else:
                        token = relying_party_token(party.id, party.private_key)
                        wrk_args = ["post", str(body), token]
                        target = f"{url}/bench/floor/{name}"
                    # 1 s warm-up, not counted, then the run.
                    run_wrk(wrk, target, script, wrk_args, 1, args.connections)
                    rate, _ = run_wrk(wrk, target, script, wrk_args, args.seconds, args.connections)
                    rates[name].append(rate)
                print(
                    f"  round {index + 1}/{args.rounds}: "
                    + ", ".join(f"{n} {rates[n][-1]:,.0f}/s" for n in order)
                )
            noop = statistics.median(rates[NOOP])
            print(f"\n{'route':28s} {'median/s':>9s} {'x no-op':>8s} {'ms/request':>10s}")
            for name in order:
                median = statistics.median(rates[name])
                label = name if name == NOOP else f"POST /bench/floor/{name}"
                print(f"{label:28s} {median:9,.0f} {median / noop:8.3f} {1000 / median:10.3f}")
            print(
                "\nms/request = 1000 / median rate: the server's time per request when it is the "
                "bottleneck;\nthe difference between two rows is what the step added. "
                "POST /v1/identify does all of\n'spend' and more: its ratio cannot pass "
                f"spend's ({statistics.median(rates['spend']) / noop:.3f}x) on this server."
            )
    except BenchError as exc:
        print(f"bench/identify_floor.py: {exc}", file=sys.stderr)
        return 1
    print(
        f"\ncommand: .venv/bin/python bench/identify_floor.py "
        f"{' '.join(sys.argv[1:])}  ({time.monotonic() - started:.0f} s in all)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
