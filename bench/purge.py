#!/usr/bin/env python3
"""Removing a month of scan events on the real PostgreSQL: ``idcode events purge`` (count,
roll-up into scan_hours, drop the month's partition) against a row DELETE of a month as large
(and the VACUUM it then needs) and a bare DROP of a third one, in one fresh database of its
own.

    .venv/bin/python bench/purge.py [--rows N] [--terminals T] [--postgres URL]

The three months are filled alike (N events each, spread over the month's hours and T
terminals of 10 sites); times are wall-clock seconds of one run each, printed side by side,
and the drop and the purge as ratios to the DELETE plus its VACUUM.
"""

from __future__ import annotations

import argparse
import secrets
import shlex
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import psycopg
from sqlalchemy import text

from idcode.service.database import make_engine, make_session_factory, upgrade
from idcode.service.retention import ensure_partitions, month_start, next_month, purge
from idcode.service.settings import Settings


def fill(connection: psycopg.Connection[tuple[object, ...]], month: datetime, rows: int) -> None:
    seconds = int((next_month(month) - month).total_seconds())
    connection.execute(
        "INSERT INTO scan_events (terminal_id, event_id, occurred_at, valid, reason,"
        " scene_result, received_at)"
        " SELECT t.id, 'e-' || n, %(start)s + ((n * 7919) %% %(seconds)s) * interval '1 second',"
        " n %% 10 <> 0, CASE WHEN n %% 10 = 0 THEN 'expired' ELSE 'ok' END, '{}',"
        " %(start)s + interval '1 hour'"
        " FROM generate_series(1::bigint, %(rows)s) n"
        " JOIN (SELECT id, row_number() OVER (ORDER BY id) - 1 AS k FROM terminals) t"
        " ON t.k = n %% (SELECT count(*) FROM terminals)",
        {"start": month, "seconds": seconds, "rows": rows},
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--rows", type=int, default=300_000, help="events per month")
    parser.add_argument("--terminals", type=int, default=200)
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432/postgres")
    args = parser.parse_args(argv)

    name = f"idcode_bench_purge_{secrets.token_hex(3)}"
    database = args.postgres.rsplit("/", 1)[0] + "/" + name
    now = datetime.now(UTC)
    # Three months older than any retention: purged (A), deleted row by row (B), dropped (C).
    a = month_start(now - timedelta(days=400))
    b, c = next_month(a), next_month(next_month(a))
    with psycopg.connect(args.postgres, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        try:
            url = Settings(database_url=database).sqlalchemy_url
            upgrade(url)
            engine = make_engine(url)
            with engine.begin() as connection:
                for month in (a, b, c):
                    ensure_partitions(connection, month + timedelta(days=40))
            with psycopg.connect(database, autocommit=True) as db:
                db.execute(
                    "INSERT INTO terminals (id, scene, site, public_jwk, active, created_at)"
                    " SELECT gen_random_uuid()::text, 'transport', 'line-' || (n %% 10), '{}',"
                    " true, now() FROM generate_series(1, %s) n",
                    (args.terminals,),
                )
                for month in (a, b, c):
                    fill(db, month, args.rows)
                db.execute("VACUUM ANALYZE scan_events")

                started = time.perf_counter()
                with db.transaction():
                    db.execute(
                        "DELETE FROM scan_events WHERE occurred_at >= %s AND occurred_at < %s",
                        (b, next_month(b)),
                    )
                delete_seconds = time.perf_counter() - started
                # The deleted rows stay in the table as dead tuples until a vacuum.
                started = time.perf_counter()
                db.execute(f"VACUUM scan_events_{b:%Y_%m}")
                vacuum_seconds = time.perf_counter() - started

                started = time.perf_counter()
                with db.transaction():
                    db.execute(f"DROP TABLE scan_events_{c:%Y_%m}")
                drop_seconds = time.perf_counter() - started

            with make_session_factory(engine)() as session:
                days = (now - next_month(a)).days
                started = time.perf_counter()
                done = purge(session, days, now, "bench")
                session.commit()
                purge_seconds = time.perf_counter() - started
                kept = session.scalar(text("SELECT sum(count) FROM scan_hours"))
            engine.dispose()
        finally:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    print("$ " + shlex.join([sys.executable, *sys.argv]))
    print(f"events per month: {args.rows}, terminals: {args.terminals}")
    # Ratios to the DELETE and its VACUUM, the removal a table without partitions needs.
    baseline = delete_seconds + vacuum_seconds
    print(f"DELETE of a month's rows            {delete_seconds:8.3f} s")
    print(f"VACUUM of that month after it       {vacuum_seconds:8.3f} s")
    print(
        f"DROP of a month's partition         {drop_seconds:8.3f} s  "
        f"{drop_seconds / baseline:.2f}x DELETE + VACUUM"
    )
    print(
        f"idcode events purge of a month      {purge_seconds:8.3f} s  "
        f"{purge_seconds / baseline:.2f}x DELETE + VACUUM "
        f"({done.events} events, partitions {', '.join(done.partitions)}, "
        f"{done.hour_counts} counts per hour kept, summing to {kept})"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
