"""How long ``idcode terminal run`` takes to exit at the end of its input when the service
cannot be reached, with one decision journaled, and how many "unreachable" lines it logs.

    .venv/bin/python bench/terminal_shutdown.py [--drain-timeout S]

A community gate holding a bundle signed here, its service URL the discard port (nothing
answers); one scan on stdin, then the end of the input. Before issue 15 the terminal tried to
upload once a second until --drain-timeout (10 s) passed and logged each attempt.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from idcode.bundle import sign_bundle
from idcode.scenes import encode_scene_key, scene_subject_key
from idcode.statuslist import StatusList
from idcode.terminal import identity as identities
from idcode.terminal.identity import TerminalIdentity
from idcode.terminal.trust import TrustStore
from idcode.testing import TestIssuer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--drain-timeout", type=float, default=10.0)
    args = parser.parse_args()
    issuer = TestIssuer(now=int(time.time()))
    with tempfile.TemporaryDirectory() as home:
        directory = Path(home) / "gate"
        directory.mkdir(mode=0o700)
        scene = {
            "scene": "community",
            "site": "bench",
            "version": 1,
            "data": {},
            "subject_key": encode_scene_key(scene_subject_key(issuer.city_key, "community")),
        }
        token = sign_bundle(
            issuer.root,
            version=1,
            issued_at=issuer.now,
            max_age=48 * 3600,
            keys=[issuer.key.public],
            status=StatusList(1024),
            scene=scene,
        )
        TrustStore(directory, issuer.root.public_jwk).save_bundle(token, None)
        identities.save(
            directory,
            TerminalIdentity(
                str(uuid.uuid4()),
                "community",
                "bench",
                "http://127.0.0.1:9",
                identities.new_terminal_key(),
                issuer.root.public_jwk,
            ),
        )
        command = [sys.executable, "-m", "idcode.cli", "terminal", "run", "--dir", str(directory)]
        command += ["--input", "stdin", "--drain-timeout", str(args.drain_timeout)]
        started = time.monotonic()
        run = subprocess.run(
            command, input=issuer.mint() + "\n", capture_output=True, text=True, check=False
        )
        took = time.monotonic() - started
    print(
        f"exit status {run.returncode} after {took:.1f} s (Python's start-up included); "
        f"lines saying 'unreachable': {run.stderr.count('unreachable')}"
    )


if __name__ == "__main__":
    main()
