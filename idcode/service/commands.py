"""The service's commands: ``serve``, ``db upgrade``, ``cards import``, ``events delete``,
``events purge`` and ``dev-token``."""

from __future__ import annotations

import argparse
import logging
import logging.config
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from idcode.cli import EXIT_INVALID, EXIT_OK
from idcode.errors import DatabaseUnavailable, IdcodeError, UsageError

if TYPE_CHECKING:
    from sqlalchemy.orm import Session, sessionmaker

    from idcode.service.importer import ImportReport
    from idcode.service.pii import PersonalDataVault
    from idcode.service.settings import Settings

# The service's modules (SQLAlchemy, Alembic, FastAPI) are imported inside each command, so
# that the terminal-side commands (verify, mint, qr) start quickly.


def cmd_serve(args: argparse.Namespace) -> int:
    settings = _settings()
    import uvicorn

    from idcode.keystore import configured_key_store, initialise
    from idcode.logs import logging_config
    from idcode.service.api.headlimits import HeadLimits, protocol_for
    from idcode.service.api.requestlog import ACCESS_LOGGER
    from idcode.service.database import make_engine, make_session_factory, upgrade
    from idcode.service.demodata import enrol_demo_cards
    from idcode.service.pii import vault_for
    from idcode.service.profilerecord import check_recorded_profile

    if args.workers > 1 and not settings.redis_url:
        raise IdcodeError(
            "--workers above 1 needs IDCODE_REDIS_URL: without Redis every worker would keep "
            "its own rate limits and replay memory"
        )
    # One configuration for this process and, through uvicorn's log_config, each worker's.
    # The access lines are the service's own (requestlog.py): uvicorn's would name the
    # caller's raw path and address, not the route and the problem's reason.
    log_config = logging_config(
        settings.log_format, quiet=(ACCESS_LOGGER,) if args.no_access_log else ()
    )
    logging.config.dictConfig(log_config)
    store = configured_key_store(settings)
    # The workers check the key store again as they start; checking here first turns a store
    # idcode cannot trust into one clear line (idcode: error: ...), not a worker traceback.
    store.issuer_keys()
    settings.profile.check_available()
    if settings.development:
        upgrade(settings.sqlalchemy_url)
        initialise(
            store,
            int(time.time()),
            settings.issuer_key_days,
            settings.profile.issuer_algorithm,
            settings.profile.root_algorithm,
        )
        engine = make_engine(settings.sqlalchemy_url)
        try:
            # One clear line for a database of the other profile, before any card is sealed.
            check_recorded_profile(engine, settings.profile)
            enrolled = (
                enrol_demo_cards(make_session_factory(engine), vault_for(settings))
                if settings.demo_data
                else 0
            )
        finally:
            engine.dispose()
        if enrolled:
            _say(settings, f"enrolled {enrolled} demo cards")
        _say(
            settings,
            f"development service on http://{args.host or settings.host}:"
            f"{args.port or settings.port} (API docs at /docs); "
            "try: idcode dev-token, then POST /v1/codes with it",
        )
    # One clear line (idcode: error: ...) for a signing key of the other profile, before the
    # workers, which check it again in build_services.
    settings.profile.check_issuer_keys(store.issuer_keys(), int(time.time()))
    if store.has_root_key():
        settings.profile.check_root_key(store.root_public_jwk(), store.location)
    metrics_dir = _share_metrics(args.workers)
    try:
        uvicorn.run(
            "idcode.service.api.app:create_app",
            factory=True,
            host=args.host or settings.host,
            port=args.port or settings.port,
            workers=args.workers,
            loop="uvloop",
            # httptools, with the bounds on request heads and connections uvicorn does not have.
            http=protocol_for(HeadLimits.from_settings(settings)),
            access_log=False,
            log_config=log_config,
        )
    finally:
        if metrics_dir is not None:
            shutil.rmtree(metrics_dir, ignore_errors=True)
    return EXIT_OK


def _share_metrics(workers: int) -> str | None:
    """With several workers, a fresh directory where each writes its metrics
    (prometheus-client's multiprocess mode), so that a scrape, whichever worker answers it,
    counts them all; set before the workers start, which read it as they import. Returns the
    directory to remove at the end, None for one worker or a directory the operator named
    (PROMETHEUS_MULTIPROC_DIR: theirs to empty between runs)."""
    if workers <= 1 or os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return None
    directory = tempfile.mkdtemp(prefix="idcode-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory
    return directory


def _say(settings: Settings, message: str) -> None:
    """A note for whoever started the service: ``idcode: ...`` on stderr, or a log line when
    the lines are JSON (a log collector reads every line of stderr as one object)."""
    if settings.log_format == "json":
        logging.getLogger("idcode.service").info("%s", message)
    else:
        print(f"idcode: {message}", file=sys.stderr)


def cmd_db_upgrade(args: argparse.Namespace) -> int:
    settings = _settings()
    from sqlalchemy.exc import InterfaceError, OperationalError

    from idcode.service.database import upgrade

    try:
        upgrade(settings.sqlalchemy_url)
    except (OperationalError, InterfaceError) as exc:
        raise _database_problem(exc) from None
    print("database is at the newest revision")
    return EXIT_OK


def cmd_cards_import(args: argparse.Namespace) -> int:
    settings = _settings()
    from sqlalchemy.exc import OperationalError, ProgrammingError

    from idcode.service.database import make_engine, make_session_factory
    from idcode.service.importer import ImportFormat, import_cards, parse_rows
    from idcode.service.profilerecord import check_recorded_profile

    fmt: ImportFormat = args.format or (
        "jsonl" if args.file.suffix in (".jsonl", ".ndjson") else "csv"
    )
    engine = make_engine(settings.sqlalchemy_url)
    total = _count_lines(args.file) - (1 if fmt == "csv" else 0)
    started = time.monotonic()

    def progress(report: ImportReport) -> None:
        done = report.received
        share = f"{100 * done / total:5.1f}%" if total > 0 else "   - "
        rate = done / max(time.monotonic() - started, 1e-6)
        enrolled = "valid" if args.dry_run else "enrolled"
        print(
            f"\r{_bar(done, total)} {share} {done:,}/{max(total, 0):,} rows, "
            f"{report.imported:,} {enrolled}, {report.unchanged:,} unchanged, "
            f"{report.rejected:,} rejected, {rate:,.0f} rows/s",
            end="",
            file=sys.stderr,
            flush=True,
        )

    try:
        check_recorded_profile(engine, settings.profile)  # never cards of two profiles
        vault = _import_vault(settings, make_session_factory(engine))
        with args.file.open(encoding="utf-8-sig", newline="") as handle:
            report = import_cards(
                make_session_factory(engine),
                vault,
                parse_rows(handle, fmt),
                "cli:" + _operator_name(),
                chunk_size=args.chunk_size,
                dry_run=args.dry_run,
                all_or_nothing=args.all_or_nothing,
                progress=progress,
            )
    except OSError as exc:
        raise IdcodeError(f"cannot read {args.file}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise IdcodeError(f"{args.file} is not UTF-8") from None
    except (OperationalError, ProgrammingError) as exc:  # unreachable or not migrated
        raise _database_problem(exc) from None
    finally:
        engine.dispose()
    print(file=sys.stderr)
    for rejection in report.rejections:
        print(f"row {rejection.row}: {rejection.field}: {rejection.reason}")
    enrolled = (
        f"{report.would_import:,} would be enrolled"
        if args.dry_run
        else f"{report.imported:,} enrolled"
    )
    print(
        f"{report.received:,} rows read, {enrolled}, {report.unchanged:,} unchanged, "
        f"{report.rejected:,} rejected" + (" (dry run: nothing enrolled)" if args.dry_run else "")
    )
    return EXIT_OK if report.rejected == 0 else EXIT_INVALID


def _import_vault(settings: Settings, sessions: sessionmaker[Session]) -> PersonalDataVault:
    """The service's personal-data keys. Development keys are created here only for a
    database that holds no card yet (nothing is sealed with other keys), saying where; with
    cards enrolled they must be found, since cards sealed with keys made in another directory
    (a relative IDCODE_KEYS_DIR read elsewhere) are cards the service can neither find nor
    open."""
    from sqlalchemy import select

    from idcode.service.models import CardRecord
    from idcode.service.pii import DEV_KEYS_FILE, vault_for

    with sessions() as session:
        has_cards = session.scalars(select(CardRecord.id).limit(1)).first() is not None
    uses_dev_keys = not (settings.pii_encryption_key and settings.pii_hash_key)
    path = settings.keys_dir / DEV_KEYS_FILE
    new = uses_dev_keys and settings.development and not has_cards and not path.exists()
    vault = vault_for(settings, create=not has_cards)
    if new:
        print(f"idcode: created development personal-data keys {path.absolute()}", file=sys.stderr)
    return vault


def _count_lines(path: Path) -> int:
    try:
        with path.open("rb") as handle:
            count, last = 0, b"\n"
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                count += chunk.count(b"\n")
                last = chunk[-1:]
            return count + (last != b"\n")  # a last line without a line break counts too
    except OSError:
        return 0


def _settings() -> Settings:
    from idcode.service.settings import get_settings

    return get_settings()


def _database_problem(exc: Exception) -> IdcodeError:
    """A database that is unreachable or not migrated, said in one line without a traceback:
    DatabaseUnavailable (exit status 3) when it cannot be reached, a usage error otherwise."""
    from sqlalchemy.exc import InterfaceError, OperationalError

    cause = getattr(exc, "orig", None) or exc
    first_line = (str(cause).splitlines() or [type(cause).__name__])[0]
    if isinstance(exc, OperationalError | InterfaceError) and "no such table" not in first_line:
        return DatabaseUnavailable(
            f"cannot reach the database ({first_line}); check IDCODE_DATABASE_URL"
        )
    return UsageError(
        f"cannot use the database ({first_line}); check IDCODE_DATABASE_URL and run "
        "'idcode db upgrade'"
    )


def _bar(done: int, total: int, width: int = 24) -> str:
    filled = width if total <= 0 else min(width, width * done // total)
    return "[" + "#" * filled + "." * (width - filled) + "]"


def _operator_name() -> str:
    import getpass

    from idcode.text import printable

    try:
        # The audit record's actor: an account name from undecodable bytes in the
        # environment would hold surrogates, which no UTF-8 column stores.
        return printable(getpass.getuser())
    except (KeyError, OSError):
        return "unknown"


def cmd_events_delete(args: argparse.Namespace) -> int:
    settings = _settings()
    from sqlalchemy.exc import OperationalError, ProgrammingError

    from idcode.errors import RequestRefused
    from idcode.service.database import make_engine, make_session_factory
    from idcode.service.events import EVENT_ID, delete_event
    from idcode.service.fleet import TERMINAL_ID

    if not TERMINAL_ID.fullmatch(args.terminal):
        raise IdcodeError("TERMINAL must be a terminal id (a lower-case UUID)")
    if not EVENT_ID.fullmatch(args.event):
        raise IdcodeError("EVENT must be an event id: 1-64 of A-Z a-z 0-9 . _ : -")
    engine = make_engine(settings.sqlalchemy_url)
    try:
        with make_session_factory(engine)() as session:
            detail = delete_event(session, args.terminal, args.event, "cli:" + _operator_name())
            session.commit()
    except RequestRefused as exc:
        raise IdcodeError(f"terminal {args.terminal} has no event {args.event}") from exc
    except (OperationalError, ProgrammingError) as exc:  # unreachable or not migrated
        raise _database_problem(exc) from None
    finally:
        engine.dispose()
    print(
        f"removed event {args.event} of terminal {args.terminal} (occurred_at "
        f"{detail['occurred_at']}, reason {detail['reason']}); the audit trail records it"
    )
    return EXIT_OK


def cmd_events_purge(args: argparse.Namespace) -> int:
    settings = _settings()
    from datetime import UTC, datetime

    from sqlalchemy.exc import OperationalError, ProgrammingError

    from idcode.errors import RequestRefused
    from idcode.service.database import make_engine, make_session_factory
    from idcode.service.retention import ensure_partitions, purge

    days = settings.events_retention_days if args.older_than is None else args.older_than
    now = datetime.now(UTC)
    engine = make_engine(settings.sqlalchemy_url)
    try:
        with make_session_factory(engine)() as session:
            done = purge(session, days, now, "cli:" + _operator_name(), dry_run=args.dry_run)
            if not args.dry_run:
                made = ensure_partitions(session.connection(), now)
                session.commit()
    except RequestRefused as exc:
        raise IdcodeError(f"--older-than {days}: {exc}") from None
    except (OperationalError, ProgrammingError) as exc:  # unreachable or not migrated
        raise _database_problem(exc) from None
    finally:
        engine.dispose()
    removed = (
        f"{done.events} events before {done.before:%Y-%m-%d} (UTC)"
        + (f", partitions {', '.join(done.partitions)}" if done.partitions else "")
        + f"; {done.hour_counts} counts per hour kept for the console"
    )
    if args.dry_run:
        print(f"would remove {removed}; nothing was changed (--dry-run)")
    else:
        print(f"removed {removed}; the audit trail records it")
        if made:
            print(f"made partitions {', '.join(made)}")
    return EXIT_OK


def _days(text: str) -> int:
    if not text.isdigit() or int(text) > 36_500:
        raise argparse.ArgumentTypeError("a whole number of days, at most 36500")
    return int(text)


def cmd_dev_token(args: argparse.Namespace) -> int:
    settings = _settings()
    from sqlalchemy import select
    from sqlalchemy.exc import OperationalError, ProgrammingError

    from idcode.service.auth import dev_token
    from idcode.service.database import make_engine, make_session_factory
    from idcode.service.models import CardRecord
    from idcode.service.pii import vault_for

    # The service's own keys or a clear error, never new ones here: a token signed with a key
    # made in the wrong directory is one the service refuses ("Signature verification failed").
    if args.admin or args.verifier:
        role = settings.operator_role if args.admin else settings.verifier_role
        print(dev_token(settings, f"dev-{role}", roles=(role,), ttl=args.ttl, create_key=False))
        return EXIT_OK
    engine = make_engine(settings.sqlalchemy_url)
    try:
        with make_session_factory(engine)() as session:
            query = select(CardRecord).order_by(CardRecord.status_index)
            if args.card:
                query = query.where(CardRecord.id == args.card)
            record = session.scalars(query).first()
    except (OperationalError, ProgrammingError) as exc:  # unreachable or not migrated
        raise _database_problem(exc) from None
    finally:
        engine.dispose()
    if record is None:
        raise IdcodeError(
            f"no card {args.card}" if args.card else "no card enrolled; run 'idcode serve' once"
        )
    vault = vault_for(settings, create=False)
    id_number = vault.decrypt(record.id_number_enc, card_id=record.id, field="id_number")
    token = dev_token(
        settings, f"citizen-{record.id}", id_number=id_number, ttl=args.ttl, create_key=False
    )
    print(token)
    return EXIT_OK


def _lifetime(text: str) -> int:
    if not text.isdigit() or not 60 <= int(text) <= 86_400:
        raise argparse.ArgumentTypeError("a token lives 60 to 86400 seconds")
    return int(text)


def add_commands(commands: Any) -> None:
    serve = commands.add_parser(
        "serve",
        help="run the issuance service",
        description="Run the issuance service. In development it first migrates the "
        "database, creates keys and enrols demo cards into an empty database.",
    )
    serve.add_argument("--host", help="address to bind (default: IDCODE_HOST or 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (default: IDCODE_PORT or 8000)")
    serve.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    serve.add_argument(
        "--no-access-log",
        action="store_true",
        help="log only the requests refused or failed (4xx, 5xx)",
    )
    serve.set_defaults(handler=cmd_serve)

    db = commands.add_parser("db", help="database maintenance")
    db_commands = db.add_subparsers(dest="db_command", required=True, metavar="ACTION")
    db_commands.add_parser(
        "upgrade", help="apply the database migrations (IDCODE_DATABASE_URL)"
    ).set_defaults(handler=cmd_db_upgrade)

    cards = commands.add_parser("cards", help="card administration")
    card_commands = cards.add_subparsers(dest="cards_command", required=True, metavar="ACTION")
    importing = card_commands.add_parser(
        "import",
        help="enrol cards from a CSV or JSON Lines file, with progress",
        description="Enrol cards from FILE. CSV needs a header with id_number and name, "
        "optionally phone, residency and programmes (separated by ';'). Rows are validated "
        "one by one; rejected rows are listed by number and reason, never by content. Valid "
        "rows are committed in chunks, and rows already enrolled with the same data are "
        "counted as unchanged, so an interrupted import, or the same file, can be run again; "
        "a row whose ID number is enrolled with other data is rejected, naming the fields "
        "that differ (an import never changes a card). Exit status 1 when any row was "
        "rejected.",
    )
    importing.add_argument("file", type=Path, metavar="FILE")
    importing.add_argument(
        "--format",
        choices=["csv", "jsonl"],
        help="default: by suffix (.jsonl/.ndjson = JSON Lines, else CSV)",
    )
    importing.add_argument("--dry-run", action="store_true", help="validate only")
    importing.add_argument(
        "--all-or-nothing", action="store_true", help="enrol nothing unless every row is valid"
    )
    importing.add_argument("--chunk-size", type=int, default=1000, help=argparse.SUPPRESS)
    importing.set_defaults(handler=cmd_cards_import)

    events = commands.add_parser("events", help="scan event administration")
    event_commands = events.add_subparsers(dest="events_command", required=True, metavar="ACTION")
    deleting = event_commands.add_parser(
        "delete",
        help="remove one stored scan event, with an audit record of what it was",
        description="Remove the event EVENT that terminal TERMINAL uploaded, with an audit "
        "record of its time and reason (actor cli:<user>). Works on the database directly, "
        "so also for an event the API cannot read.",
    )
    deleting.add_argument("terminal", metavar="TERMINAL")
    deleting.add_argument("event", metavar="EVENT")
    deleting.set_defaults(handler=cmd_events_delete)
    purging = event_commands.add_parser(
        "purge",
        help="remove scan events older than the retention, keeping their counts per hour",
        description="Remove the scan events of every calendar month (UTC) that ended more "
        "than DAYS days ago, after adding their counts per hour, scene, site and reason to "
        "the table the console's overview reads (scan_hours). Whole months: on PostgreSQL "
        "the months' partitions are dropped; the month that DAYS days ago falls in is kept "
        "whole, so an event is kept between DAYS days and a month more. Writes an "
        "events.purge audit record (actor cli:<user>) and makes the coming months' "
        "partitions. DAYS is at least 35: terminals may still upload events that old.",
    )
    purging.add_argument(
        "--older-than",
        type=_days,
        metavar="DAYS",
        help="the retention in days (default: IDCODE_EVENTS_RETENTION_DAYS, 184)",
    )
    purging.add_argument(
        "--dry-run", action="store_true", help="count what would be removed; change nothing"
    )
    purging.set_defaults(handler=cmd_events_purge)

    token = commands.add_parser(
        "dev-token",
        help="print an ID token from the development identity provider",
        description="Print an ID token signed by the development identity provider: a "
        "citizen token for CARD (a card id; default: the first enrolled card), or with "
        "--admin an operator token. Development mode only.",
    )
    token.add_argument("card", nargs="?", metavar="CARD")
    roles = token.add_mutually_exclusive_group()
    roles.add_argument("--admin", action="store_true", help="an operator token")
    roles.add_argument("--verifier", action="store_true", help="an online-verifier token")
    token.add_argument(
        "--ttl", type=_lifetime, default=3600, help="lifetime in seconds, 60-86400 (3600)"
    )
    token.set_defaults(handler=cmd_dev_token)
