"""``idcode demo``: a small city on one machine (the service, terminals and citizens).

The one package that imports both sides, as a test harness does; nothing imports it. The
command is registered here without importing the demo, which needs the service's extra.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from idcode.errors import IdcodeError, ServiceError
from idcode.scenes import SCENES


def cmd_demo(args: argparse.Namespace) -> int:
    import sys

    from idcode.demo.city import run

    try:
        return run(sys.stdout, citizens=args.citizens, seed=args.seed, workdir=args.workdir)
    except ServiceError as exc:
        raise IdcodeError(f"the demo's service refused a request: {exc}") from None


def add_commands(commands: Any) -> None:
    demo = commands.add_parser(
        "demo",
        help="run a small city on this machine: service, offline terminals, uploads",
        description="Start the service in a scratch directory (SQLite, fresh keys), enrol "
        "citizens, run one terminal per scene offline over a few hundred codes (valid, "
        "expired, revoked, replayed, wrong community, over the daily limit ...), then bring "
        "the network back, upload the journals and check that the service holds exactly the "
        "events the terminals journaled; a service hall counter and a benefits kiosk identify "
        "a few citizens online with their consent. IDCODE_CRYPTO_PROFILE chooses the crypto "
        "profile (gm: SM2-signed codes, terminals that accept SM2). Exit status 0 when every "
        "check holds. Scenes: " + ", ".join(SCENES),
    )
    demo.add_argument("--citizens", type=int, default=240, help="citizens to enrol (240)")
    demo.add_argument("--seed", type=int, help="random seed, to replay a run")
    demo.add_argument("--workdir", type=Path, help="keep the service's data and the journals here")
    demo.set_defaults(handler=cmd_demo)
