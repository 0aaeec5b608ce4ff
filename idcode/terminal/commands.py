"""``idcode terminal``: provision a terminal, run it, and look at its state."""

from __future__ import annotations

import argparse
import faulthandler
import json
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Any

from idcode import logs
from idcode.bundle import load_root_jwk
from idcode.cli import EXIT_OK
from idcode.config import core_settings
from idcode.cose import Algorithm
from idcode.errors import IdcodeError
from idcode.scenes import SCENES, load_adapter
from idcode.terminal import identity as identities
from idcode.terminal.client import register
from idcode.terminal.runtime import JOURNAL_FILE, TerminalRuntime
from idcode.terminal.scanners import ScanServer, reopening_serial_lines, scan_lines

log = logging.getLogger("idcode.terminal")


def _directory(args: argparse.Namespace) -> Path:
    if args.dir is not None:
        return Path(args.dir)
    if args.scene and args.site:
        return Path("terminals") / f"{args.scene}-{args.site}"
    raise IdcodeError(
        "give --dir, or --scene and --site (the directory is then terminals/SCENE-SITE)"
    )


def _provision(args: argparse.Namespace, directory: Path) -> identities.TerminalIdentity:
    missing = [
        flag
        for flag, value in (
            ("--server", args.server),
            ("--scene", args.scene),
            ("--site", args.site),
            ("--root", args.root),
        )
        if not value
    ]
    token: str = args.operator_token or os.environ.get("IDCODE_OPERATOR_TOKEN", "")
    if not token:
        missing.append("--operator-token (or IDCODE_OPERATOR_TOKEN)")
    if missing:
        raise IdcodeError(
            f"{directory} is not provisioned yet; provisioning needs {', '.join(missing)}"
        )
    profile = core_settings().profile
    try:
        root_jwk = load_root_jwk(json.loads(Path(args.root).read_text(encoding="utf-8")), profile)
    except ValueError as exc:  # not UTF-8, not JSON, or not a root key (BundleError)
        raise IdcodeError(f"{args.root} does not hold the city root key: {exc}") from None
    private_key = identities.new_terminal_key(profile.terminal_key_algorithm)
    server = args.server.rstrip("/")
    terminal_id = register(
        server,
        token,
        scene=args.scene,
        site=args.site,
        public_jwk=identities.public_jwk_of(private_key),
        relying_party=args.relying_party,
    )
    identity = identities.TerminalIdentity(
        id=terminal_id,
        scene=args.scene,
        site=args.site,
        server=server,
        private_key=private_key,
        root_jwk=root_jwk,
    )
    identities.save(directory, identity)
    print(
        f"provisioned terminal {terminal_id} ({args.scene} at {args.site}) in {directory}",
        file=sys.stderr,
    )
    return identity


def cmd_provision(args: argparse.Namespace) -> int:
    directory = _directory(args)
    if identities.is_provisioned(directory):
        raise IdcodeError(f"{directory} already holds a terminal; use another --dir")
    _provision(args, directory)
    return EXIT_OK


def _options(pairs: list[str]) -> dict[str, str]:
    options: dict[str, str] = {}
    for pair in pairs:
        name, equals, value = pair.partition("=")
        if not equals or not name:
            raise IdcodeError(f"--option takes NAME=VALUE, got {pair!r}")
        options[name] = value
    return options


def _algorithms(names: str | None) -> list[Algorithm]:
    """--algorithms, else the crypto profile's; never an algorithm of another profile."""
    profile = core_settings().profile
    if names is None:
        return list(profile.default_code_algorithms)
    try:
        algorithms = [Algorithm.from_name(name.strip()) for name in names.split(",")]
    except ValueError as exc:
        raise IdcodeError(f"--algorithms: {exc}") from None
    profile.check_code_algorithms(algorithms, "--algorithms")
    return algorithms


def _profile_algorithms(names: str | None) -> list[Algorithm]:
    algorithms = _algorithms(names)
    core_settings().profile.check_available()  # a GM terminal without SM2 stops here
    return algorithms


def _interrupt(signum: int, frame: object) -> None:
    """SIGTERM ends the input like Ctrl-C: the terminal uploads what it can and stops."""
    raise KeyboardInterrupt


def _metrics_textfile(name: str | None) -> Path | None:
    """The metrics file, checked before the terminal starts: node_exporter's textfile
    collector reads only ``*.prom`` files, in a directory that must exist."""
    if name is None:
        return None
    path = Path(name)
    if path.suffix != ".prom":
        raise IdcodeError(f"--metrics-textfile {name!r}: node_exporter reads only *.prom files")
    if not path.parent.is_dir():
        raise IdcodeError(f"--metrics-textfile {name!r}: no directory {str(path.parent)!r}")
    return path


def cmd_run(args: argparse.Namespace) -> int:
    logs.configure(core_settings().log_format)
    directory = _directory(args)
    if identities.is_provisioned(directory):
        identity = identities.load(directory)
        identity.check(scene=args.scene, site=args.site, server=args.server)
    else:
        identity = _provision(args, directory)
    adapter = load_adapter(args.adapter) if args.adapter else load_adapter(identity.scene)
    options = _options(args.option)
    # Options no bundle can make right stop the terminal here, not at its first sync, when it
    # would deny every scan as stale_trust and say why only in its log.
    adapter.check_options(options)
    runtime = TerminalRuntime(
        directory,
        identity,
        journal_path=Path(args.journal) if args.journal else None,
        options=options,
        deployment=core_settings().deployment,
        algorithms=_profile_algorithms(args.algorithms),
        sync_interval=args.sync_interval,
        bundle_interval=args.bundle_interval,
        upload_interval=args.upload_interval,
        batch_size=args.batch_size,
        online=not args.offline,
        adapter=adapter,
        metrics_textfile=_metrics_textfile(args.metrics_textfile),
        metrics_interval=args.metrics_interval,
    )
    signal.signal(signal.SIGTERM, _interrupt)
    # SIGUSR1 prints every thread's stack to stderr: how to see where a stuck gate hangs.
    faulthandler.register(signal.SIGUSR1)
    runtime.start()
    log.info(
        "terminal %s (%s at %s) is deciding; input %s",
        identity.id,
        identity.scene,
        identity.site,
        args.input,
    )
    try:
        if args.input == "stdin":
            scan_lines(runtime, sys.stdin, sys.stdout)
        elif args.input.startswith("serial:"):
            port, _, baud = args.input.removeprefix("serial:").partition("@")
            scan_lines(runtime, reopening_serial_lines(port, int(baud or 9600)), sys.stdout)
        elif args.input.startswith("http:"):
            host, _, port = args.input.removeprefix("http:").rpartition(":")
            server = ScanServer(runtime, (host or "127.0.0.1", int(port)))
            log.info("scan endpoint on http://%s:%s/scan", *server.server_address[:2])
            try:
                server.serve_forever()
            finally:
                server.server_close()
        else:
            raise IdcodeError(f"unknown --input {args.input!r}")
    except (KeyboardInterrupt, ValueError):
        pass
    finally:
        # The input ended: send what is journaled while the network is there, then stop.
        try:
            done = runtime.drain(args.drain_timeout)
        except KeyboardInterrupt:  # a second Ctrl-C or SIGTERM: stop now
            done = False
        pending = runtime.journal.pending_count(identity.id)
        runtime.stop()
        if not done:
            log.info("%d events stay journaled for the next run to upload", pending)
    return EXIT_OK


def cmd_status(args: argparse.Namespace) -> int:
    directory = _directory(args)
    identity = identities.load(directory)
    runtime = TerminalRuntime(
        directory,
        identity,
        journal_path=Path(args.journal) if args.journal else None,
        online=False,
    )
    try:
        status: dict[str, Any] = runtime.status()
        status["journal"] = str(runtime.journal.path)
        status["journaled"] = len(runtime.journal.entries(identity.id))
        print(json.dumps(status, indent=2))
    finally:
        runtime.stop()
    return EXIT_OK


def add_commands(commands: Any) -> None:
    terminal = commands.add_parser(
        "terminal",
        help="run a scene terminal (gate, barrier, turnstile, canteen pad)",
        description="Provision and run an offline terminal: it verifies codes with the trust "
        "bundle it syncs, applies its scene's adapter, journals each decision and uploads the "
        "journal when the network is there. See docs/terminal.md.",
    )
    actions = terminal.add_subparsers(dest="terminal_command", required=True, metavar="ACTION")

    def common(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--dir", help="the terminal's directory (default terminals/SCENE-SITE)")
        parser.add_argument("--scene", help=f"{', '.join(SCENES)}, or a plugin's scene")
        parser.add_argument("--site", help="the site (community, car park, scenic spot, canteen)")
        parser.add_argument("--server", help="the service's base URL, e.g. http://127.0.0.1:8000")
        parser.add_argument(
            "--root", help="file with the city root key (idcode keys jwks --root > root.json)"
        )
        parser.add_argument(
            "--operator-token",
            help="an operator's token to register the terminal (default IDCODE_OPERATOR_TOKEN)",
        )
        parser.add_argument(
            "--relying-party",
            metavar="ID",
            help="register it as a terminal of this relying party (a hospital's kiosk): it then "
            "recognises the party's linked citizens and writes their subject in its decisions",
        )

    provision = actions.add_parser(
        "provision",
        help="create the terminal's key, register it and pin the root key",
        description="Create the terminal's own key in its directory, register its public key "
        "with the service (an operator's token is needed once) and pin the city root key.",
    )
    common(provision)
    provision.set_defaults(handler=cmd_provision)

    run = actions.add_parser(
        "run",
        help="decide on scans, journal them, sync trust and upload (provisions if needed)",
        description="Run the terminal. Scans come from --input; each decision is journaled, "
        "then written to stdout as one JSON line (the gate acts on 'admitted'). It decides "
        "offline from the held trust bundle and uploads the journal whenever the service is "
        "reachable. At the end of the input it uploads what it can within --drain-timeout.",
    )
    common(run)
    run.add_argument(
        "--input",
        default="stdin",
        help="stdin (keyboard-wedge scanners), serial:PORT[@BAUD], or http:[HOST]:PORT "
        "(a local endpoint for kiosk screens: POST /scan, GET /status). Default stdin",
    )
    run.add_argument(
        "--option",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a setting of the scene adapter, e.g. lane=entry (parking) or mode=canteen",
    )
    run.add_argument(
        "--journal", help=f"journal file (default DIR/{JOURNAL_FILE}; lanes may share one)"
    )
    run.add_argument(
        "--algorithms",
        help="accepted code algorithms, comma-separated, of the crypto profile "
        "(IDCODE_CRYPTO_PROFILE); default: the profile's, EdDSA (standard) or SM2 (gm)",
    )
    run.add_argument(
        "--adapter",
        metavar="MODULE:CLASS",
        help="an adapter of your own for the terminal's scene (default: the scene's adapter)",
    )
    run.add_argument("--offline", action="store_true", help="do not contact the service")
    run.add_argument(
        "--sync-interval", type=float, default=60.0, help="seconds between status deltas (60)"
    )
    run.add_argument(
        "--bundle-interval", type=float, default=900.0, help="seconds between bundle checks (900)"
    )
    run.add_argument(
        "--upload-interval", type=float, default=5.0, help="seconds between upload checks (5)"
    )
    run.add_argument(
        "--batch-size", type=int, default=500, help="events per upload request, 1-1000 (500)"
    )
    run.add_argument(
        "--drain-timeout", type=float, default=10.0, help="seconds to upload at the end (10)"
    )
    run.add_argument(
        "--metrics-textfile",
        metavar="PATH.prom",
        help="write the terminal's metrics (decisions by reason, journal backlog, last sync, "
        "trust age) to this file for node_exporter's textfile collector (docs/operations.md)",
    )
    run.add_argument(
        "--metrics-interval",
        type=float,
        default=15.0,
        help="seconds between rewrites of the metrics file (15)",
    )
    run.set_defaults(handler=cmd_run)

    status = actions.add_parser("status", help="print the terminal's trust and journal state")
    status.add_argument("--dir")
    status.add_argument("--scene")
    status.add_argument("--site")
    status.add_argument("--journal")
    status.set_defaults(handler=cmd_status)
