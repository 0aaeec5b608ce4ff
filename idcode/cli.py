"""The ``idcode`` command line: keys, minting, offline verification and QR rendering, and
the commands each installed side adds (``idcode.commands`` entry points: the service's
``serve``, ``db``, ``cards``, ``events``, ``dev-token``; the terminal's ``terminal``;
``demo``).

Exit status: 0 done (every code valid), 1 a negative verdict (a code refused, a row
rejected), 2 unusable input or settings, 3 something needed is away (the service, the
database), 141 the reader of the output went away (``| head``). docs/cli.md has the table.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from idcode import __version__
from idcode.claims import (
    ALL_PROGRAMMES,
    PSEUDONYM_LENGTH,
    AgeBand,
    Programme,
    Residency,
    programme_names,
)
from idcode.config import core_settings
from idcode.cose import Algorithm
from idcode.errors import IdcodeError, UnavailableError, UsageError
from idcode.issuer import MAX_TTL, mint_code
from idcode.keys import PublicKey, jwks, keys_from_jwks
from idcode.keystore import (
    FileKeyStore,
    ManagedKeyStore,
    configured_key_store,
    initialise,
    rotate,
)
from idcode.protocol import MAX_BUNDLE_MAX_AGE
from idcode.replay import ReplayCache
from idcode.testing import random_card
from idcode.verifier import Trust, verify

EXIT_OK, EXIT_INVALID, EXIT_USAGE, EXIT_UNAVAILABLE = 0, 1, 2, 3
#: As a filter killed by SIGPIPE would end (128 + 13): the reader went away, nothing failed.
EXIT_BROKEN_PIPE = 141
COMMANDS_GROUP = "idcode.commands"


def parse_time(text: str) -> int:
    """ISO 8601 (``2026-11-29T08:00:00Z``; no zone means UTC) or seconds since the epoch."""
    if text.isdigit():
        return int(text)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 time: {text!r}") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp())


def _iso(seconds: int | None) -> str:
    if seconds is None:
        return "-"
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _choice_of(enum: type[Residency] | type[AgeBand]) -> list[str]:
    return [member.name.lower() for member in enum]


def _enum_name(value: str) -> str:
    """An attribute name as every output spells it (``non_resident``, ``age_18_59``); the
    hyphens earlier versions took (``non-resident``) are still accepted."""
    return value.lower().replace("-", "_")


def _key_store(args: argparse.Namespace) -> ManagedKeyStore:
    """The key directory (--keys-dir, IDCODE_KEYS_DIR), or the PKCS#11 token when
    IDCODE_PKCS11_MODULE is set (docs/keys.md)."""
    return configured_key_store(core_settings(), args.keys_dir)


def _now(args: argparse.Namespace) -> int:
    return args.at if getattr(args, "at", None) is not None else int(time.time())


# -- keys ------------------------------------------------------------------------------


def _issuer_alg(args: argparse.Namespace) -> Algorithm:
    """--alg, else the profile's issuer algorithm; never an algorithm of another profile."""
    profile = core_settings().profile
    alg: Algorithm = profile.issuer_algorithm if args.alg is None else args.alg
    profile.check_code_algorithms([alg], "--alg")
    return alg


def cmd_keys_init(args: argparse.Namespace) -> int:
    settings = core_settings()
    alg = _issuer_alg(args)
    store = _key_store(args)
    created = initialise(
        store,
        _now(args),
        settings.issuer_key_days if args.days is None else args.days,
        alg,
        settings.profile.root_algorithm,
    )
    for line in created:
        print(f"created {line} in {store.location}")
    # Key files of earlier releases (PBKDF2) move to Argon2id here without a rotation.
    upgraded = store.upgrade_key_files() if isinstance(store, FileKeyStore) else []
    for path in upgraded:
        print(f"re-encrypted {path.absolute()} with Argon2id (it was PBKDF2 PKCS#8)")
    if not created and not upgraded:
        print(f"{store.location} already holds a root key and a signing issuer key")
    return EXIT_OK


def cmd_keys_list(args: argparse.Namespace) -> int:
    store = _key_store(args)
    now = _now(args)
    published = {key.kid for key in store.published_keys(now)}
    print(f"{'kid':<18} {'alg':<6} {'signs from':<21} {'signs until':<21} state")
    root_kid = store.root_kid()
    if root_kid is not None:
        print(f"{root_kid:<18} {'EdDSA':<6} {'-':<21} {'-':<21} root")
    signing = next((key.kid for key in store.issuer_keys() if key.signs_at(now)), None)
    for key in store.issuer_keys():
        if key.kid == signing:
            state = "signing"
        elif key.not_before is not None and now < key.not_before:
            state = "next (published, not signing yet)"
        elif key.kid in published:
            state = "retiring (published for its codes)"
        else:
            state = "retired"
        print(
            f"{key.kid:<18} {key.alg.jose_name:<6} {_iso(key.not_before):<21} "
            f"{_iso(key.not_after):<21} {state}"
        )
    return EXIT_OK


def cmd_keys_rotate(args: argparse.Namespace) -> int:
    settings = core_settings()
    alg = _issuer_alg(args)
    store = _key_store(args)
    key = rotate(
        store,
        _now(args),
        settings.issuer_key_days if args.days is None else args.days,
        alg,
        args.starts_in,
    )
    print(
        f"issuer key {key.kid} ({key.alg.jose_name}) signs from {_iso(key.not_before)} "
        f"until {_iso(key.not_after)}; earlier keys stop signing then"
    )
    return EXIT_OK


def cmd_keys_remove(args: argparse.Namespace) -> int:
    store = _key_store(args)
    store.remove_issuer_key(args.kid, _now(args))
    print(
        f"issuer key {args.kid} removed: it is no longer published and the next trust bundle "
        "leaves it out; run 'idcode keys rotate --starts-in 0' if no other key signs now"
    )
    return EXIT_OK


def cmd_keys_jwks(args: argparse.Namespace) -> int:
    store = _key_store(args)
    document = (
        {"keys": [store.root_public_jwk()]} if args.root else jwks(store.published_keys(_now(args)))
    )
    print(json.dumps(document, indent=2))
    return EXIT_OK


# -- mint, verify, qr --------------------------------------------------------------------


def cmd_mint(args: argparse.Namespace) -> int:
    settings = core_settings()
    store = _key_store(args)
    now = _now(args)
    # First use creates development keys; a store that has keys is never added to here,
    # so minting at a time no key covers is an error rather than a surprise key.
    created = (
        []
        if store.issuer_keys()
        else initialise(
            store,
            now,
            settings.issuer_key_days,
            settings.profile.issuer_algorithm,
            settings.profile.root_algorithm,
        )
    )
    for line in created:
        print(f"idcode: created development {line} in {store.location}", file=sys.stderr)
    programmes = Programme.NONE
    for name in args.programme:
        programmes |= Programme[name.upper()]
    card = random_card(
        status_index=args.status_index,
        residency=Residency[args.residency.upper()],
        age_band=AgeBand[args.age_band.upper().replace("-", "_")],
        programmes=programmes,
        pseudonym=args.pseudonym,
    )
    signer = store.signing_key(now)
    settings.profile.check_code_algorithms([signer.alg], f"issuer key {signer.kid!r}")
    code, _ = mint_code(
        card,
        signer,
        prefix=settings.code_prefix,
        now=now,
        ttl=settings.code_ttl_seconds if args.ttl is None else args.ttl,
    )
    print(code)
    return EXIT_OK


def _codes(arguments: Sequence[str]) -> Iterator[str]:
    """Codes from the arguments; ``-`` reads one per line from stdin, as a wedge scanner types."""
    for argument in arguments:
        if argument != "-":
            yield argument
            continue
        if isinstance(sys.stdin, io.TextIOWrapper):
            # A scanner can type bytes that are not UTF-8: a malformed code, not a crash.
            sys.stdin.reconfigure(errors="replace")
        for line in sys.stdin:
            line = line.strip()
            if line:
                yield line


def _trusted_keys(args: argparse.Namespace, now: int) -> list[PublicKey]:
    if args.jwks is None:
        return _key_store(args).published_keys(now)
    try:
        document = json.loads(args.jwks.read_text())
    except (OSError, ValueError, RecursionError) as exc:
        raise UsageError(f"cannot read JWK Set {args.jwks}: {exc}") from None
    return keys_from_jwks(document)


def _read_json(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError, RecursionError) as exc:
        raise UsageError(f"cannot read {what} {path}: {exc}") from None


def _root_jwk(args: argparse.Namespace) -> dict[str, Any]:
    """The pinned root key: --root FILE, else the local key store's root."""
    from idcode.bundle import load_root_jwk

    if args.root is not None:
        return load_root_jwk(_read_json(args.root, "root key"), core_settings().profile)
    return _key_store(args).root_public_jwk()


def cmd_verify(args: argparse.Namespace) -> int:
    settings = core_settings()
    algorithms = args.alg or list(settings.profile.default_code_algorithms)
    settings.profile.check_code_algorithms(algorithms, "--alg")
    skew = settings.clock_skew_seconds if args.skew is None else args.skew
    if args.bundle is not None:
        from idcode.bundle import verify_bundle

        try:
            token = args.bundle.read_text().strip()
        except OSError as exc:
            raise UsageError(f"cannot read bundle {args.bundle}: {exc.strerror}") from None
        bundle = verify_bundle(token, _root_jwk(args), settings.profile)
        trust = bundle.trust(
            prefix=settings.code_prefix,
            algorithms=algorithms,
            clock_skew=skew,
            allow_stale=args.allow_stale,
        )
    else:
        trust = Trust.of(
            _trusted_keys(args, _now(args)),
            prefix=settings.code_prefix,
            algorithms=algorithms,
            clock_skew=skew,
        )
    replay = None if args.no_replay_check else ReplayCache()
    seen = all_valid = 0
    for code in _codes(args.codes or ["-"]):
        verdict = verify(code, trust, _now(args), replay)
        print(json.dumps(verdict.to_json(), separators=(",", ":")), flush=True)
        seen += 1
        all_valid += verdict.valid
    if seen == 0:
        raise UsageError("no code to verify")
    return EXIT_OK if all_valid == seen else EXIT_INVALID


def cmd_bundle(args: argparse.Namespace) -> int:
    from idcode.bundle import sign_bundle
    from idcode.statuslist import StatusList

    store = _key_store(args)
    now = _now(args)
    status = StatusList(args.size)
    for index in args.revoked:
        status.set(index, True)
    token = sign_bundle(
        store.root_key(),
        version=now,
        issued_at=now,
        max_age=args.max_age,
        keys=store.published_keys(now),
        status=status,
    )
    args.output.write_text(token + "\n")
    print(
        f"wrote {args.output}: {len(store.published_keys(now))} issuer keys, "
        f"{len(args.revoked)} revoked of {args.size}, fresh for {args.max_age} s"
    )
    return EXIT_OK


def cmd_qr(args: argparse.Namespace) -> int:
    from idcode.qr import write_qr  # the [qr] extra

    version = write_qr(args.code, args.output)
    print(f"wrote {args.output} (QR version {version}-M, {len(args.code)} characters)")
    return EXIT_OK


# -- parser ----------------------------------------------------------------------------


def _pseudonym(text: str) -> bytes:
    try:
        value = bytes.fromhex(text)
    except ValueError:
        value = b""
    if len(value) != PSEUDONYM_LENGTH:
        raise argparse.ArgumentTypeError(f"a pseudonym is {PSEUDONYM_LENGTH * 2} hex digits")
    return value


def _algorithm(text: str) -> Algorithm:
    try:
        return Algorithm.from_name(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _bounded_int(low: int, high: int, unit: str) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = low - 1
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"expected {low}..{high} {unit}, got {text!r}")
        return value

    return parse


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="idcode",
        description="Unified citizen identity e-code: keys, codes and offline verification.",
    )
    parser.add_argument(
        "--keys-dir", type=Path, help="key store directory (default: IDCODE_KEYS_DIR or keys/)"
    )
    parser.add_argument("--version", action="version", version=f"idcode {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    at_help = "act as if the time were AT (ISO 8601 or epoch seconds; default: now)"

    keys = commands.add_parser("keys", help="manage issuer keys and the city root key")
    key_commands = keys.add_subparsers(dest="keys_command", required=True, metavar="ACTION")
    init = key_commands.add_parser("init", help="create the root key and a first issuer key")
    init.set_defaults(handler=cmd_keys_init)
    rot = key_commands.add_parser("rotate", help="add the next issuer key; older keys stop signing")
    rot.add_argument(
        "--starts-in",
        type=_bounded_int(0, 30 * 86_400, "seconds"),
        default=86_400,
        metavar="SECONDS",
        help="publish the key now but let it sign only after SECONDS, so that terminals "
        "trust it first (default 86400, a day; 0 switches at once)",
    )
    rot.set_defaults(handler=cmd_keys_rotate)
    for sub in (init, rot):
        sub.add_argument(
            "--alg",
            type=_algorithm,
            help="the issuer key's algorithm, one of the crypto profile's (IDCODE_CRYPTO_PROFILE): "
            "EdDSA (the standard profile's default) or ES256; SM2 (the gm profile's)",
        )
        sub.add_argument(
            "--days",
            type=_bounded_int(1, 3650, "days"),
            help="signing period in days (default: IDCODE_ISSUER_KEY_DAYS or 90)",
        )
    removal = key_commands.add_parser(
        "remove", help="emergency removal of a compromised issuer key (out of the next bundle)"
    )
    removal.add_argument("kid", metavar="KID")
    removal.set_defaults(handler=cmd_keys_remove)
    listing = key_commands.add_parser("list", help="list keys with their signing periods")
    listing.set_defaults(handler=cmd_keys_list)
    export = key_commands.add_parser("jwks", help="print the published issuer keys as a JWK Set")
    export.add_argument(
        "--root",
        action="store_true",
        help="print the city root public key instead (for terminal provisioning)",
    )
    export.set_defaults(handler=cmd_keys_jwks)
    for sub in (init, rot, listing, export, removal):
        sub.add_argument("--at", type=parse_time, help=at_help)

    mint = commands.add_parser(
        "mint", help="print a code signed with the local issuer key (development and tests)"
    )
    mint.add_argument(
        "--ttl", type=_bounded_int(1, MAX_TTL, "seconds"), help="lifetime in seconds (default 60)"
    )
    mint.add_argument("--at", type=parse_time, help="issue time; " + at_help)
    mint.add_argument(
        "--pseudonym", type=_pseudonym, help="card pseudonym, 12 hex digits (default: random)"
    )
    mint.add_argument("--status-index", type=int, default=0, help="status-list index (default 0)")
    mint.add_argument(
        "--residency", type=_enum_name, choices=_choice_of(Residency), default="registered"
    )
    mint.add_argument(
        "--age-band", type=_enum_name, choices=_choice_of(AgeBand), default="age_18_59"
    )
    mint.add_argument(
        "--programme",
        action="append",
        default=[],
        type=_enum_name,
        choices=programme_names(ALL_PROGRAMMES),
        help="programme enrolment flag (repeat for several)",
    )
    mint.set_defaults(handler=cmd_mint)

    check = commands.add_parser(
        "verify",
        help="verify codes offline; one JSON verdict per line",
        description="Verify codes given as arguments, or one per line on stdin with '-' "
        "(the default), and print one JSON verdict per line. Exit status: 0 when every code "
        "is valid, 1 when any is not, 2 on usage errors.",
    )
    check.add_argument("codes", nargs="*", metavar="CODE", help="code text, or - for stdin")
    check.add_argument(
        "--jwks",
        type=Path,
        help="trust the keys of this JWK Set file (default: the local key store's published keys)",
    )
    check.add_argument("--at", type=parse_time, help="validation time; " + at_help)
    check.add_argument(
        "--alg",
        type=_algorithm,
        action="append",
        help="accept this algorithm (repeat for several), one of the crypto profile's "
        "(IDCODE_CRYPTO_PROFILE); default: the profile's, EdDSA (standard) or SM2 (gm)",
    )
    check.add_argument(
        "--skew",
        type=_bounded_int(0, 300, "seconds"),
        help="clock-skew allowance in seconds (default: IDCODE_CLOCK_SKEW_SECONDS or 30)",
    )
    check.add_argument(
        "--bundle",
        type=Path,
        help="trust a signed trust bundle (keys, status list, max-age) instead of a JWK Set",
    )
    check.add_argument(
        "--root",
        type=Path,
        help="with --bundle: the pinned root key, a JWK Set file as 'idcode keys jwks --root' "
        "prints (default: the local key store's root key)",
    )
    check.add_argument(
        "--allow-stale",
        action="store_true",
        help="with --bundle: accept codes (with a warning) when the bundle is past its max-age",
    )
    check.add_argument(
        "--no-replay-check",
        action="store_true",
        help="do not refuse a code seen earlier in this run",
    )
    check.set_defaults(handler=cmd_verify)

    qr = commands.add_parser("qr", help="render a code as a QR image (PNG or SVG)")
    qr.add_argument("code", metavar="CODE")
    qr.add_argument(
        "-o", "--output", type=Path, required=True, metavar="FILE", help="FILE.png or FILE.svg"
    )
    qr.set_defaults(handler=cmd_qr)

    bundle = commands.add_parser(
        "bundle",
        help="make a signed trust bundle from the local key store (development, tests)",
        description="Sign a trust bundle with the local root key: the published issuer keys, "
        "a status list with the given indices revoked, and a max-age. The service serves "
        "bundles to terminals; this makes one offline.",
    )
    bundle.add_argument("-o", "--output", type=Path, required=True, metavar="FILE")
    bundle.add_argument(
        "--max-age",
        type=_bounded_int(60, MAX_BUNDLE_MAX_AGE, "seconds"),
        default=86_400,
        help="seconds the bundle stays fresh (default 86400)",
    )
    bundle.add_argument(
        "--size",
        type=_bounded_int(1, 1 << 24, "entries"),
        default=1 << 16,
        help="status list entries (default 65536)",
    )
    bundle.add_argument(
        "--revoked",
        type=int,
        action="append",
        default=[],
        metavar="INDEX",
        help="mark this status index revoked (repeat for several)",
    )
    bundle.add_argument("--at", type=parse_time, help=at_help)
    bundle.set_defaults(handler=cmd_bundle)
    for point in sorted(entry_points(group=COMMANDS_GROUP), key=lambda point: point.name):
        # The sides register their commands here; their modules import nothing heavy until a
        # command runs, so this works on an install without the service's extra.
        point.load()(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args))
    except UnavailableError as exc:
        print(f"idcode: error: {exc}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    except IdcodeError as exc:
        print(f"idcode: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except ModuleNotFoundError as exc:
        extra = _extra_for(exc.name or "")
        if extra is None:
            raise
        print(
            f"idcode: error: 'idcode {args.command}' needs idcode[{extra}] "
            f"(no module {exc.name!r}): pip install 'idcode[{extra}]'",
            file=sys.stderr,
        )
        return EXIT_USAGE
    except BrokenPipeError:
        # The reader is gone (idcode verify ... | head -1): end quietly, and keep Python from
        # complaining again when it flushes stdout at exit.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
    except OSError as exc:
        where = f": {exc.filename}" if exc.filename else ""
        print(f"idcode: error: {exc.strerror or exc}{where}", file=sys.stderr)
        return EXIT_USAGE


#: Which extra brings the libraries a command may miss.
EXTRAS = {
    "fastapi": "service",
    "starlette": "service",
    "uvicorn": "service",
    "sqlalchemy": "service",
    "alembic": "service",
    "psycopg": "service",
    "redis": "service",
    "pydantic_settings": "service",
    "serial": "terminal",
    "qrcode": "qr",
    "PIL": "qr",
}


def _extra_for(module: str) -> str | None:
    return EXTRAS.get(module.split(".")[0])


if __name__ == "__main__":
    sys.exit(main())
