"""``idcode wallet``: the reference device wallet, a citizen's phone on the command line.

``register`` makes a device key and has the service certify it (a citizen's ID token);
``code`` and ``qr`` make device codes with no network; ``renew`` gets a new credential with
a token the device key signs; ``devices`` and ``remove`` list and remove the citizen's
devices (a lost phone); ``status`` shows what the wallet holds. docs/wallet-cli.md.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from idcode.cli import EXIT_INVALID, EXIT_OK, parse_time
from idcode.config import core_settings
from idcode.cose import Algorithm
from idcode.devicecode import make_device_code
from idcode.errors import IdcodeError, UsageError
from idcode.wallet import service
from idcode.wallet.store import (
    DEFAULT_DIRECTORY,
    DIRECTORY_VARIABLE,
    WalletState,
    WalletStore,
    default_directory,
    new_device_key,
)

#: Where the citizen's ID token comes from when neither --token nor --token-file gives it.
TOKEN_VARIABLE = "IDCODE_ID_TOKEN"  # noqa: S105 (a variable's name, not a secret)
#: ``code`` warns (exit status 1) when the credential has less than this left.
DEFAULT_WARN_WITHIN = 86_400
_MAX_TOKEN_FILE_BYTES = service.MAX_ID_TOKEN_LENGTH + 1024
# This machine's clock reading earlier than at the last sync by more than this: it was set
# back since, and the offset measured then is no longer this clock's.
_CLOCK_SET_BACK = 60


def _store(args: argparse.Namespace) -> WalletStore:
    return WalletStore(Path(args.dir).expanduser() if args.dir else default_directory())


def _local_now(args: argparse.Namespace) -> int:
    return args.at if getattr(args, "at", None) is not None else int(time.time())


def _iso(seconds: int) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _span(seconds: int) -> str:
    seconds = abs(seconds)
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    if seconds < 2 * 86_400:
        return f"{seconds // 3600} h {seconds % 3600 // 60} min"
    return f"{seconds // 86_400} days {seconds % 86_400 // 3600} h"


def _warn(message: str) -> None:
    print(f"idcode: warning: {message}", file=sys.stderr)


def _id_token(args: argparse.Namespace) -> str:
    """The citizen's ID token: --token, --token-file (``-``: stdin), or IDCODE_ID_TOKEN."""
    if args.token is not None:
        text = args.token
    elif args.token_file is not None:
        text = _read_token_file(args.token_file)
    elif os.environ.get(TOKEN_VARIABLE):
        text = os.environ[TOKEN_VARIABLE]
    else:
        raise UsageError(
            f"this needs the citizen's ID token: set {TOKEN_VARIABLE}, or give --token-file "
            "FILE (- for stdin) or --token"
        )
    return service.check_id_token(text)


def _read_token_file(name: str) -> str:
    if name == "-":
        return sys.stdin.read(_MAX_TOKEN_FILE_BYTES)
    try:
        with open(name, "rb") as handle:
            raw = handle.read(_MAX_TOKEN_FILE_BYTES)
    except OSError as exc:
        raise UsageError(f"cannot read the ID token file {name}: {exc.strerror}") from None
    try:
        return raw.decode("ascii")
    except UnicodeDecodeError:
        raise UsageError(f"the ID token file {name} is not ASCII") from None


def _server(args: argparse.Namespace, state: WalletState | None) -> str:
    if args.server:
        return service.service_url(args.server)
    if state is None:
        raise UsageError("give --server URL (there is no wallet here to take it from)")
    return state.server


# -- register, renew ---------------------------------------------------------------------------


def cmd_register(args: argparse.Namespace) -> int:
    server = service.service_url(args.server)
    token = _id_token(args)
    store = _store(args)
    store.prepare()
    key = new_device_key(args.alg)
    state = service.register(server, token, key, args.label, check=False)
    try:
        service.check_credential(server, state, key)
    except IdcodeError:
        print(
            f"idcode: note: the service registered device {state.device}, but its credential "
            f"is not usable and the wallet kept nothing; remove the device with 'idcode "
            f"wallet remove {state.device} --server {server}'",
            file=sys.stderr,
        )
        raise
    try:
        store.create(key, state)
    except OSError as exc:
        raise UsageError(
            f"the service registered device {state.device}, but {store.directory} could not "
            f"keep its key ({exc.strerror}); remove it with 'idcode wallet remove "
            f"{state.device}' and register again"
        ) from None
    print(
        f"registered device {state.device} (device id {state.device_id}, {state.alg}) at "
        f"{server}; wallet in {store.directory}"
    )
    _print_credential(state)
    return EXIT_OK


def cmd_renew(args: argparse.Namespace) -> int:
    store = _store(args)
    key, state = store.load()
    renewed = service.renew(state, key)
    store.save(renewed)
    print(f"renewed the credential of device {renewed.device}")
    _print_credential(renewed)
    return EXIT_OK


def _print_credential(state: WalletState) -> None:
    offset = state.clock_offset
    clock = (
        "this machine's clock agrees with the service's"
        if abs(offset) <= 1  # the offset is measured to a second
        else f"this machine's clock is {_span(offset)} {'behind' if offset > 0 else 'ahead of'} "
        "the service's (codes use the service's time)"
    )
    print(f"credential valid until {_iso(state.credential_expires_at)}; {clock}")


# -- code, qr ----------------------------------------------------------------------------------


def _fresh_code(args: argparse.Namespace) -> tuple[str | None, bool]:
    """(a device code made now with no network, or None when none can be made; whether a
    warning was given). Warnings and errors go to stderr."""
    key, state = _store(args).load()
    local = _local_now(args)
    now = state.now(local)
    left = state.credential_expires_at - now
    if left <= 0:
        print(
            f"idcode: error: the credential expired at {_iso(state.credential_expires_at)} "
            f"({_span(left)} ago): terminals refuse its codes; go online and run "
            "'idcode wallet renew'",
            file=sys.stderr,
        )
        return None, True
    warned = False
    if left < args.warn_within:
        _warn(
            f"the credential expires in {_span(left)} (at {_iso(state.credential_expires_at)}); "
            "go online and run 'idcode wallet renew' before then"
        )
        warned = True
    offset = state.clock_offset
    max_offset = core_settings().clock_skew_seconds if args.max_offset is None else args.max_offset
    if abs(offset) > max_offset:
        _warn(
            f"this machine's clock was {_span(offset)} {'behind' if offset > 0 else 'ahead of'} "
            f"the service's at the last sync ({_iso(state.now(state.synced_at))}); the code "
            "carries the service's time. If the clock has been set since, run 'idcode wallet "
            "renew' to measure it again"
        )
        warned = True
    if local < state.synced_at - _CLOCK_SET_BACK:
        _warn(
            f"this machine's clock reads {_span(state.synced_at - local)} earlier than at the "
            "last sync: it was set back, and the code's time may be wrong; run 'idcode wallet "
            "renew' to measure it again"
        )
        warned = True
    return make_device_code(state.blob, key, prefix=state.code_prefix, now=now), warned


def cmd_code(args: argparse.Namespace) -> int:
    code, warned = _fresh_code(args)
    if code is not None:
        print(code)
    return EXIT_INVALID if warned else EXIT_OK


def cmd_qr(args: argparse.Namespace) -> int:
    from idcode.qr import write_qr  # the [qr] extra

    code, warned = _fresh_code(args)
    if code is not None:
        version = write_qr(code, args.output)
        print(f"wrote {args.output} (QR version {version}-M, {len(code)} characters)")
    return EXIT_INVALID if warned else EXIT_OK


# -- devices, remove, status -------------------------------------------------------------------


def _own_state(args: argparse.Namespace) -> tuple[WalletStore, WalletState | None]:
    """This wallet's state, or None when the directory holds none (listing and removing
    work without one, given --server)."""
    store = _store(args)
    if not store.holds_a_wallet():
        return store, None
    return store, store.load()[1]


def cmd_devices(args: argparse.Namespace) -> int:
    _, state = _own_state(args)
    server = _server(args, state)
    devices = service.list_devices(server, _id_token(args))
    own = state.device if state is not None else None
    if args.json:
        print(
            json.dumps({"devices": [{**d.to_json(), "this_wallet": d.id == own} for d in devices]})
        )
        return EXIT_OK
    print(f"{'id':<37}{'device id':<17}{'alg':<6}{'credential until':<21}{'state':<9}label")
    for device in devices:
        state_text = "removed" if device.removed_at is not None else "active"
        mark = " (this wallet)" if device.id == own else ""
        print(
            f"{device.id:<37}{device.device_id:<17}{device.alg:<6}"
            f"{_iso(device.credential_expires_at):<21}{state_text:<9}"
            f"{device.label or '-'}{mark}"
        )
    return EXIT_OK


def cmd_remove(args: argparse.Namespace) -> int:
    store, state = _own_state(args)
    server = _server(args, state)
    device = service.check_device_uuid(args.device)
    service.remove_device(server, _id_token(args), device)
    print(
        f"removed device {device}: terminals refuse its codes from their next sync on "
        "(a trust bundle or status delta)"
    )
    if state is not None and state.device == device and server == state.server:
        # Its key can never be certified again (the service keeps each key's device id
        # unique): the wallet forgets it rather than keep a key that is no use.
        store.delete()
        where = store.directory
        print(f"that was this wallet's own device: its key and credential are gone from {where}")
    return EXIT_OK


def cmd_status(args: argparse.Namespace) -> int:
    store = _store(args)
    _, state = store.load()
    local = _local_now(args)
    now = state.now(local)
    card = state.parsed.card.to_json()
    del card["pseudonym"]  # not needed to read a status, and no one else's business
    status: dict[str, Any] = {
        "directory": str(store.directory),
        "server": state.server,
        "device": state.device,
        "device_id": state.device_id,
        "alg": state.alg,
        "label": state.label,
        "code_prefix": state.code_prefix,
        "credential_expires_at": _iso(state.credential_expires_at),
        "credential_seconds_left": state.credential_expires_at - now,
        "clock_offset": state.clock_offset,
        "synced_at": _iso(state.synced_at),
        "card": card,
    }
    print(json.dumps(status, indent=2))
    return EXIT_OK


# -- parser ------------------------------------------------------------------------------------


def _seconds(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}")
    return value


def _algorithm(text: str) -> Algorithm:
    try:
        alg = Algorithm.from_name(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if alg not in (Algorithm.EDDSA, Algorithm.ES256):
        # Device credentials of the GM profile are not defined yet (docs/crypto-profiles.md).
        raise argparse.ArgumentTypeError(f"a device key is EdDSA or ES256, not {alg.jose_name}")
    return alg


def add_commands(commands: Any) -> None:
    wallet = commands.add_parser(
        "wallet",
        help="a citizen's device wallet: offline device codes (reference)",
        description="The reference device wallet: a device key the service certifies for the "
        "citizen's card, and device codes made from it with no network (docs/wallet-cli.md). "
        f"The wallet lives in --dir, else {DIRECTORY_VARIABLE}, else {DEFAULT_DIRECTORY} "
        "(owner-only: a 0700 directory, 0600 files).",
    )
    actions = wallet.add_subparsers(dest="wallet_command", required=True, metavar="ACTION")

    def directory(parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--dir",
            help=f"the wallet's directory (default: {DIRECTORY_VARIABLE} or {DEFAULT_DIRECTORY})",
        )

    def id_token(parser: argparse.ArgumentParser) -> None:
        source = parser.add_mutually_exclusive_group()
        source.add_argument(
            "--token-file",
            metavar="FILE",
            help="read the citizen's ID token from FILE (- for stdin)",
        )
        source.add_argument(
            "--token",
            help=f"the citizen's ID token (others on this machine can see a command line: "
            f"prefer {TOKEN_VARIABLE} or --token-file). Default: {TOKEN_VARIABLE}",
        )

    register = actions.add_parser(
        "register",
        help="make a device key and have the service certify it (needs an ID token)",
        description="Make a device key, register it for the citizen's card (POST /v1/devices "
        "with the citizen's ID token) and keep the key and its credential in the wallet's "
        "directory. The credential is checked before it is kept: for this key, at most 7 "
        "days, and verifying with the keys the service publishes. The token is not stored.",
    )
    directory(register)
    register.add_argument(
        "--server", required=True, help="the service's base URL, e.g. https://idcode.city.example"
    )
    id_token(register)
    register.add_argument(
        "--alg",
        type=_algorithm,
        default=Algorithm.EDDSA,
        help="the device key: EdDSA (Ed25519, default) or ES256 (P-256)",
    )
    register.add_argument("--label", help="a name for the device in the list, 1-64 characters")
    register.set_defaults(handler=cmd_register)

    def code_options(parser: argparse.ArgumentParser) -> None:
        directory(parser)
        parser.add_argument(
            "--at",
            type=parse_time,
            help="act as if this machine's clock read AT (ISO 8601 or epoch seconds)",
        )
        parser.add_argument(
            "--warn-within",
            type=_seconds,
            default=DEFAULT_WARN_WITHIN,
            metavar="SECONDS",
            help="warn (exit status 1) when the credential has less than this left "
            f"(default {DEFAULT_WARN_WITHIN}, a day)",
        )
        parser.add_argument(
            "--max-offset",
            type=_seconds,
            metavar="SECONDS",
            help="warn (exit status 1) when this machine's clock was off the service's by "
            "more than this at the last sync (default: IDCODE_CLOCK_SKEW_SECONDS or 30)",
        )

    code = actions.add_parser(
        "code",
        help="print a fresh device code, with no network",
        description="Print a device code made now by the device key, valid 60 s, with no "
        "network: its time is this machine's clock corrected by the offset to the service's "
        "clock measured at the last register or renew. Exit status 0: a code; 1: no code (the "
        "credential expired) or a code with a warning on stderr (the credential expires "
        "within --warn-within, or the clock was off by more than --max-offset or set back "
        "since the last sync); 2: no usable wallet.",
    )
    code_options(code)
    code.set_defaults(handler=cmd_code)

    qr = actions.add_parser(
        "qr",
        help="write a fresh device code as a QR image (PNG or SVG), with no network",
        description="As 'idcode wallet code', written as a QR image (level M, version 10 or "
        "less). Needs idcode[qr].",
    )
    code_options(qr)
    qr.add_argument(
        "-o", "--output", type=Path, required=True, metavar="FILE", help="FILE.png or FILE.svg"
    )
    qr.set_defaults(handler=cmd_qr)

    renew = actions.add_parser(
        "renew",
        help="get a new credential (7 days) with a token the device key signs",
        description="Renew the credential (POST /v1/devices/ID/credential with a request "
        "token signed by the device key: no sign-in needed) and measure the clock offset "
        "again. Do it whenever online.",
    )
    directory(renew)
    renew.set_defaults(handler=cmd_renew)

    devices = actions.add_parser(
        "devices",
        help="list the citizen's devices (needs an ID token)",
        description="List the citizen's devices, newest first, removed ones too "
        "(GET /v1/devices with the citizen's ID token).",
    )
    directory(devices)
    devices.add_argument("--server", help="the service's base URL (default: the wallet's)")
    id_token(devices)
    devices.add_argument("--json", action="store_true", help="print JSON instead of a table")
    devices.set_defaults(handler=cmd_devices)

    remove = actions.add_parser(
        "remove",
        help="remove one of the citizen's devices, e.g. a lost phone (needs an ID token)",
        description="Remove a device (DELETE /v1/devices/ID with the citizen's ID token): "
        "terminals refuse its codes from their next sync on, without touching the card. "
        "Removing this wallet's own device deletes its key and credential here.",
    )
    remove.add_argument("device", metavar="ID", help="the device's id, as 'devices' lists it")
    directory(remove)
    remove.add_argument("--server", help="the service's base URL (default: the wallet's)")
    id_token(remove)
    remove.set_defaults(handler=cmd_remove)

    status = actions.add_parser(
        "status",
        help="show the wallet's device, credential expiry, clock offset and card attributes",
    )
    directory(status)
    status.add_argument("--at", type=parse_time, help="act as if this machine's clock read AT")
    status.set_defaults(handler=cmd_status)
