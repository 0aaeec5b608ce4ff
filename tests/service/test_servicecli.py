"""The service's commands as a new user runs them: real processes, SQLite in a data dir.

``db upgrade``, ``cards import`` (progress, rejected rows, re-runs), ``dev-token`` and the
README tour against a real ``idcode serve``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import httpx2
import pytest

from idcode.service.auth import dev_idp_key
from idcode.testing import random_id_number
from tests.live import free_port

STARTUP_SECONDS = 20
CSV_HEADER = "id_number,name,phone,residency,programmes\n"


@dataclass
class Idcode:
    """Runs ``python -m idcode.cli`` in a directory of its own, with no IDCODE_* settings
    from the environment except the key store and data directory under that directory."""

    cwd: Path

    @property
    def env(self) -> dict[str, str]:
        environment = {k: v for k, v in os.environ.items() if not k.startswith("IDCODE_")}
        environment["PYTHONIOENCODING"] = "utf-8"
        environment["IDCODE_KEYS_DIR"] = str(self.cwd / "keys")
        environment["IDCODE_DATA_DIR"] = str(self.cwd / "data")
        return environment

    @property
    def database(self) -> Path:
        return self.cwd / "data" / "idcode.db"

    def __call__(self, *args: str) -> subprocess.CompletedProcess[str]:
        completed = subprocess.run(
            [sys.executable, "-m", "idcode.cli", *args],
            capture_output=True,
            cwd=self.cwd,
            env=self.env,
            timeout=120,
            check=False,
        )
        # Decoded by hand: text mode would turn the progress bar's carriage returns into
        # line breaks.
        return subprocess.CompletedProcess(
            completed.args,
            completed.returncode,
            completed.stdout.decode("utf-8"),
            completed.stderr.decode("utf-8"),
        )

    def ok(self, *args: str) -> str:
        result = self(*args)
        assert result.returncode == 0, result.stderr
        return result.stdout

    def card_count(self) -> int:
        with closing(sqlite3.connect(self.database)) as connection:
            (count,) = connection.execute("SELECT count(*) FROM cards").fetchone()
        return int(count)


@pytest.fixture
def idcode(tmp_path: Path) -> Idcode:
    return Idcode(tmp_path)


@pytest.fixture(scope="module")
def upgraded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory as ``idcode db upgrade`` leaves a fresh one, made once for the module:
    each test's ``migrated`` starts from a copy of it rather than a process start and every
    migration of its own (test_db_upgrade_... runs the upgrade itself)."""
    idcode = Idcode(tmp_path_factory.mktemp("upgraded"))
    idcode.ok("db", "upgrade")
    return idcode.cwd


@pytest.fixture
def migrated(idcode: Idcode, upgraded: Path) -> Idcode:
    shutil.copytree(upgraded, idcode.cwd, dirs_exist_ok=True)  # modes too (copy2, copystat)
    return idcode


def write_csv(path: Path, rows: list[str], *, final_newline: bool = True) -> Path:
    path.write_text(CSV_HEADER + "\n".join(rows) + ("\n" if final_newline else ""), "utf-8")
    return path


def good_rows(count: int) -> list[str]:
    return [f"{random_id_number()},张秀英,13800000001,registered,home_care" for _ in range(count)]


def assert_clean_error(result: subprocess.CompletedProcess[str], message: str) -> None:
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert f"idcode: error: {message}" in result.stderr


# -- db upgrade -------------------------------------------------------------------------------


@pytest.mark.parametrize("command", [["db", "upgrade"], ["cards", "import", "rows.csv"]])
def test_a_database_that_cannot_be_reached_is_exit_status_3(
    tmp_path: Path, command: list[str]
) -> None:
    """docs/cli.md: 3 when something needed is away, so a deploy script can retry."""
    (tmp_path / "rows.csv").write_text(good_rows(1)[0] + "\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("IDCODE_")}
    env |= {
        "IDCODE_KEYS_DIR": str(tmp_path / "keys"),
        "IDCODE_DATABASE_URL": "postgresql://postgres@127.0.0.1:9/nothing",  # nothing listens
    }
    result = subprocess.run(
        [sys.executable, "-m", "idcode.cli", *command],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=120,
        check=False,
    )
    assert result.returncode == 3, result.stderr
    assert "idcode: error: cannot reach the database" in result.stderr
    assert "Traceback" not in result.stderr


def test_db_upgrade_creates_the_sqlite_database_in_the_data_dir(idcode: Idcode) -> None:
    assert idcode.ok("db", "upgrade") == "database is at the newest revision\n"
    with closing(sqlite3.connect(idcode.database)) as connection:
        tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master")}
    assert {"cards", "audit_records", "alembic_version"} <= tables
    assert idcode.ok("db", "upgrade") == "database is at the newest revision\n"


# -- cards import -----------------------------------------------------------------------------


def test_import_lists_rejected_rows_by_number_and_reason_and_exits_1(
    migrated: Idcode, tmp_path: Path
) -> None:
    good = good_rows(3)
    bad_id = random_id_number()[:17] + "Y"
    rows = [
        good[0],  # 1
        f"{bad_id},李明,,,",  # 2
        good[1],  # 3
        f"{random_id_number()},王小红,,tourist,",  # 4
        good[0],  # 5: a second time
        good[2],  # 6
    ]
    result = migrated("cards", "import", str(write_csv(tmp_path / "cards.csv", rows)))

    assert result.returncode == 1, result.stderr
    lines = result.stdout.splitlines()
    assert lines[:3] == [
        "row 2: id_number: the last character of an ID number must be a digit or X",
        lines[1],
        "row 5: id_number: duplicate of an earlier row",
    ]
    assert lines[1].startswith("row 4: residency: residency must be one of ")
    assert lines[3:] == ["6 rows read, 3 enrolled, 0 unchanged, 3 rejected"]
    for secret in ("张秀英", "13800000001", bad_id, good[0].split(",")[0]):
        assert secret not in result.stdout + result.stderr
    assert migrated.card_count() == 3


def test_import_shows_a_progress_bar_on_stderr(migrated: Idcode, tmp_path: Path) -> None:
    path = write_csv(tmp_path / "cards.csv", good_rows(5))
    result = migrated("cards", "import", "--chunk-size", "2", str(path))
    assert result.returncode == 0, result.stderr
    # The first import in a fresh directory first says where it created development keys.
    created, progress = result.stderr.split("\n", 1)
    assert created.startswith("idcode: created development personal-data keys ")
    updates = [line for line in progress.rstrip("\n").split("\r") if line]
    assert len(updates) == 3  # after each full chunk of 2, and at the end
    assert re.fullmatch(
        r"\[#{24}\] 100\.0% 5/5 rows, 5 enrolled, 0 unchanged, 0 rejected, [\d,]+ rows/s",
        updates[-1],
    )
    assert re.match(r"\[#{9}\.{15}\]  40\.0% 2/5 rows, 2 enrolled", updates[0])
    assert re.match(r"\[#{19}\.{5}\]  80\.0% 4/5 rows, 4 enrolled", updates[1])


def test_progress_reaches_100_percent_when_the_file_has_no_final_line_break(
    migrated: Idcode, tmp_path: Path
) -> None:
    path = write_csv(tmp_path / "cards.csv", good_rows(3), final_newline=False)
    result = migrated("cards", "import", str(path))
    assert result.returncode == 0, result.stderr
    assert " 100.0% 3/3 rows, 3 enrolled" in result.stderr.split("\r")[-1]


def test_import_of_only_good_rows_exits_0_and_later_ones_need_the_same_keys(
    migrated: Idcode, tmp_path: Path
) -> None:
    result = migrated("cards", "import", str(write_csv(tmp_path / "cards.csv", good_rows(4))))
    assert result.returncode == 0, result.stderr
    assert result.stdout == "4 rows read, 4 enrolled, 0 unchanged, 0 rejected\n"
    assert "idcode: created development personal-data keys " in result.stderr
    assert migrated.card_count() == 4

    # Cards sealed with keys made in the wrong directory would be cards the service can
    # neither find nor open: with cards enrolled, the service's keys must be found.
    (migrated.cwd / "keys" / "pii-keys.json").rename(tmp_path / "elsewhere.json")
    refused = migrated("cards", "import", str(write_csv(tmp_path / "two.csv", good_rows(1))))
    assert_clean_error(refused, f"no pii-keys.json in {migrated.cwd / 'keys'}: IDCODE_KEYS_DIR")
    assert not (migrated.cwd / "keys" / "pii-keys.json").exists()
    assert migrated.card_count() == 4


def test_interrupted_import_can_be_run_again_and_enrols_each_card_once_unless_data_differs(
    migrated: Idcode, tmp_path: Path
) -> None:
    rows = good_rows(6)
    # The first three rows stand for the chunks an interrupted run had committed.
    partial = write_csv(tmp_path / "partial.csv", rows[:3])
    assert migrated("cards", "import", str(partial)).returncode == 0
    whole = write_csv(tmp_path / "cards.csv", rows)

    rerun = migrated("cards", "import", "--chunk-size", "2", str(whole))

    assert rerun.returncode == 0, rerun.stdout
    assert rerun.stdout.splitlines() == ["6 rows read, 3 enrolled, 3 unchanged, 0 rejected"]
    assert migrated.card_count() == 6

    again = migrated("cards", "import", str(whole))
    assert again.returncode == 0, again.stdout
    assert again.stdout.splitlines() == ["6 rows read, 0 enrolled, 6 unchanged, 0 rejected"]
    assert migrated.card_count() == 6

    # An enrolled ID number with other data is no "unchanged" row: rejected, naming the
    # fields that differ, never their values.
    changed = [rows[0], rows[1].replace("张秀英", "李明").replace(",home_care", ",")]
    conflict = migrated("cards", "import", str(write_csv(tmp_path / "changed.csv", changed)))
    assert conflict.returncode == 1
    assert conflict.stdout.splitlines() == [
        "row 2: id_number: already enrolled with a different name, programmes; an import "
        "does not change an enrolled card",
        "2 rows read, 0 enrolled, 1 unchanged, 1 rejected",
    ]
    assert "李明" not in conflict.stdout + conflict.stderr


def test_dry_run_enrols_nothing(migrated: Idcode, tmp_path: Path) -> None:
    path = write_csv(tmp_path / "cards.csv", [*good_rows(2), "110105194912310021,李明,,,"])
    result = migrated("cards", "import", "--dry-run", str(path))
    assert result.returncode == 1
    assert result.stdout.splitlines() == [
        "row 3: id_number: the ID number's check digit does not match (GB 11643)",
        "3 rows read, 2 would be enrolled, 0 unchanged, 1 rejected (dry run: nothing enrolled)",
    ]
    assert migrated.card_count() == 0
    assert migrated("cards", "import", str(path)).stdout.endswith(
        "2 enrolled, 0 unchanged, 1 rejected\n"
    )
    assert migrated.card_count() == 2
    rerun = migrated("cards", "import", "--dry-run", str(path))
    assert rerun.stdout.splitlines()[-1] == (
        "3 rows read, 0 would be enrolled, 2 unchanged, 1 rejected (dry run: nothing enrolled)"
    )


def test_all_or_nothing_import_with_a_bad_row_enrols_nothing(
    migrated: Idcode, tmp_path: Path
) -> None:
    path = write_csv(tmp_path / "cards.csv", [*good_rows(2), f"{random_id_number()},,,,"])
    result = migrated("cards", "import", "--all-or-nothing", str(path))
    assert result.returncode == 1
    assert result.stdout.splitlines() == [
        "row 3: name: Field required",
        "3 rows read, 0 enrolled, 0 unchanged, 1 rejected",
    ]
    assert migrated.card_count() == 0


def test_json_lines_file_is_imported_by_its_suffix(migrated: Idcode, tmp_path: Path) -> None:
    path = tmp_path / "cards.jsonl"
    lines = [
        json.dumps({"id_number": random_id_number(), "name": "张秀英"}),
        "",
        "not json",
        json.dumps({"id_number": random_id_number(), "name": "李明", "programmes": ["veteran"]}),
    ]
    path.write_text("\n".join(lines) + "\n", "utf-8")
    result = migrated("cards", "import", str(path))
    assert result.returncode == 1
    assert result.stdout.splitlines() == [
        "row 3: row: not a JSON object",
        "3 rows read, 2 enrolled, 0 unchanged, 1 rejected",
    ]


def test_csv_with_a_bad_header_enrols_nothing(migrated: Idcode, tmp_path: Path) -> None:
    path = tmp_path / "cards.csv"
    path.write_text(f"id,name\n{random_id_number()},张秀英\n", "utf-8")
    result = migrated("cards", "import", str(path))
    assert result.returncode == 1
    assert result.stdout.splitlines()[0].startswith("row 0: header: CSV header must name")
    assert migrated.card_count() == 0


def test_import_of_a_missing_file_is_a_clear_error(migrated: Idcode, tmp_path: Path) -> None:
    result = migrated("cards", "import", str(tmp_path / "nowhere.csv"))
    assert_clean_error(result, f"cannot read {tmp_path / 'nowhere.csv'}")


def test_import_of_a_file_that_is_not_utf_8_is_a_clear_error(
    migrated: Idcode, tmp_path: Path
) -> None:
    path = tmp_path / "cards.csv"
    path.write_bytes(f"id_number,name\n{random_id_number()},".encode() + "张秀英\n".encode("gbk"))
    assert_clean_error(migrated("cards", "import", str(path)), f"{path} is not UTF-8")
    assert migrated.card_count() == 0


def test_import_before_db_upgrade_says_to_run_it(idcode: Idcode, tmp_path: Path) -> None:
    path = write_csv(tmp_path / "cards.csv", good_rows(1))
    result = idcode("cards", "import", str(path))
    assert_clean_error(result, "cannot use the database")
    assert "'idcode db upgrade'" in result.stderr


# -- dev-token --------------------------------------------------------------------------------


def test_dev_token_without_cards_says_how_to_get_some(migrated: Idcode) -> None:
    result = migrated("dev-token")
    assert_clean_error(result, "no card enrolled; run 'idcode serve' once")
    assert result.stdout == ""


def test_dev_token_before_db_upgrade_says_to_run_it(idcode: Idcode) -> None:
    result = idcode("dev-token")
    assert_clean_error(result, "cannot use the database")
    assert "'idcode db upgrade'" in result.stderr


def test_dev_token_for_an_unknown_card_is_a_clear_error(migrated: Idcode, tmp_path: Path) -> None:
    migrated.ok("cards", "import", str(write_csv(tmp_path / "cards.csv", good_rows(1))))
    result = migrated("dev-token", "00000000-0000-0000-0000-000000000000")
    assert_clean_error(result, "no card 00000000-0000-0000-0000-000000000000")


def test_dev_token_names_the_first_card(migrated: Idcode, tmp_path: Path) -> None:
    migrated.ok("cards", "import", str(write_csv(tmp_path / "cards.csv", good_rows(2))))
    dev_idp_key(migrated.cwd / "keys")  # as the service creates it on its first start
    token = migrated.ok("dev-token").strip()
    assert token.count(".") == 2
    assert "张秀英" not in token


# -- idcode serve: the README tour ------------------------------------------------------------


@dataclass
class Server:
    url: str
    idcode: Idcode
    process: subprocess.Popen[bytes]
    log: Path


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=15)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """``idcode serve`` with its embedded defaults, in a fresh directory, on a free port."""
    idcode = Idcode(tmp_path_factory.mktemp("serve"))
    port = free_port()
    log = idcode.cwd / "serve.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "idcode.cli", "serve", "--port", str(port)],
            cwd=idcode.cwd,
            env=idcode.env,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + STARTUP_SECONDS
        while True:
            if process.poll() is not None:
                pytest.fail(f"idcode serve exited ({process.returncode}):\n{log.read_text()}")
            try:
                if httpx2.get(url + "/healthz", timeout=1.0).status_code == 200:
                    break
            except httpx2.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"idcode serve did not answer /healthz:\n{log.read_text()}")
            time.sleep(0.1)
        yield Server(url, idcode, process, log)
    finally:
        _stop(process)


def test_serve_starts_with_demo_cards_in_a_sqlite_file(server: Server) -> None:
    assert server.idcode.card_count() == 4
    log = server.log.read_text()
    assert "idcode: enrolled 4 demo cards" in log
    assert "try: idcode dev-token, then POST /v1/codes with it" in log
    ready = httpx2.get(server.url + "/readyz", timeout=5).json()
    assert ready["checks"] == {
        "database": "ok",
        "signing_key": "ok",
        "redis": "not configured (in-process state, single replica)",
    }


def test_readme_tour_dev_token_code_and_offline_verification(server: Server) -> None:
    token = server.idcode.ok("dev-token").strip()
    bearer = {"Authorization": f"Bearer {token}"}
    issued = httpx2.post(server.url + "/v1/codes", headers=bearer, timeout=10)
    assert issued.status_code == 200, issued.text
    code = issued.json()["code"]
    assert code.startswith("WH1:")

    png = httpx2.post(
        server.url + "/v1/codes", headers={**bearer, "Accept": "image/png"}, timeout=10
    )
    assert png.headers["content-type"] == "image/png"
    assert png.content.startswith(b"\x89PNG\r\n\x1a\n")

    jwks = server.idcode.cwd / "jwks.json"
    jwks.write_bytes(httpx2.get(server.url + "/.well-known/jwks.json", timeout=5).content)
    verified = server.idcode("verify", "--jwks", str(jwks), code)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    verdict = json.loads(verified.stdout)
    assert (verdict["valid"], verdict["reason"]) == (True, "ok")

    twice = server.idcode("verify", "--jwks", str(jwks), code, code)
    assert twice.returncode == 1
    assert [json.loads(line)["reason"] for line in twice.stdout.splitlines()] == [
        "ok",
        "replayed",
    ]


def test_dev_token_outside_the_service_directory_fails_clearly_and_creates_no_key(
    server: Server, tmp_path: Path
) -> None:
    """Regression (issue 15, 6a): run from another directory with the default, relative
    IDCODE_KEYS_DIR, dev-token created a new identity-provider key there and printed a token
    the service refused ("Signature verification failed")."""
    elsewhere = Idcode(tmp_path)
    env = {**server.idcode.env, "IDCODE_DATA_DIR": str(server.idcode.cwd / "data")}
    del env["IDCODE_KEYS_DIR"]
    result = subprocess.run(
        [sys.executable, "-m", "idcode.cli", "dev-token", "--admin"],
        capture_output=True,
        text=True,
        cwd=elsewhere.cwd,
        env=env,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    assert (
        f"idcode: error: no dev-idp.pem in {tmp_path / 'keys'}: IDCODE_KEYS_DIR must name "
        "the key store of the running service"
    ) in result.stderr
    assert not (tmp_path / "keys").exists()

    # From the same directory, with IDCODE_KEYS_DIR naming the service's store, it works.
    env["IDCODE_KEYS_DIR"] = str(server.idcode.cwd / "keys")
    token = subprocess.run(
        [sys.executable, "-m", "idcode.cli", "dev-token"],
        capture_output=True,
        text=True,
        cwd=elsewhere.cwd,
        env=env,
        timeout=60,
        check=True,
    ).stdout.strip()
    issued = httpx2.post(
        server.url + "/v1/codes", headers={"Authorization": f"Bearer {token}"}, timeout=10
    )
    assert issued.status_code == 200, issued.text


def test_readme_tour_admin_token_enrols_a_card(server: Server) -> None:
    admin = server.idcode.ok("dev-token", "--admin").strip()
    response = httpx2.post(
        server.url + "/v1/cards",
        json={"id_number": "11010119900307010X", "name": "测试", "residency": "permit"},
        headers={"Authorization": f"Bearer {admin}"},
        timeout=10,
    )
    assert response.status_code == 201, response.text
    card = response.json()
    assert (card["status"], card["residency"], card["name_masked"]) == ("active", "permit", "测*")

    citizen = server.idcode.ok("dev-token", card["id"]).strip()
    issued = httpx2.post(
        server.url + "/v1/codes", headers={"Authorization": f"Bearer {citizen}"}, timeout=10
    )
    assert issued.status_code == 200, issued.text


def test_citizen_dev_token_is_refused_where_an_operator_is_needed(server: Server) -> None:
    token = server.idcode.ok("dev-token").strip()
    response = httpx2.post(
        server.url + "/v1/cards",
        json={"id_number": random_id_number(), "name": "测试"},
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )
    assert response.status_code == 403


# -- events delete ----------------------------------------------------------------------------

TERMINAL = "22222222-2222-4222-8222-222222222222"


def store_event(idcode: Idcode, event_id: str) -> None:
    """An event as the service stores one, written straight into the database."""
    with closing(sqlite3.connect(idcode.database)) as connection, connection:
        connection.execute(
            "INSERT OR IGNORE INTO terminals (id, scene, site, public_jwk, active, created_at)"
            " VALUES (?, 'community', 'hall-1', '{}', 1, '2026-12-01 08:00:00.000000')",
            (TERMINAL,),
        )
        connection.execute(
            "INSERT INTO scan_events (terminal_id, event_id, occurred_at, valid, reason,"
            " scene_result, received_at) VALUES (?, ?, '2026-12-01 08:00:00.000000', 0,"
            " 'revoked', '{}', '2026-12-01 08:00:01.000000')",
            (TERMINAL, event_id),
        )


def event_ids(idcode: Idcode) -> list[str]:
    with closing(sqlite3.connect(idcode.database)) as connection:
        return [row[0] for row in connection.execute("SELECT event_id FROM scan_events")]


def test_events_delete_removes_one_event_and_records_it_in_the_audit_trail(
    migrated: Idcode,
) -> None:
    store_event(migrated, "evt-1")
    store_event(migrated, "evt-2")

    out = migrated.ok("events", "delete", TERMINAL, "evt-1")

    assert "removed event evt-1" in out
    assert event_ids(migrated) == ["evt-2"]
    with closing(sqlite3.connect(migrated.database)) as connection:
        [(actor, detail)] = connection.execute(
            "SELECT actor, detail FROM audit_records WHERE action = 'event.delete'"
        ).fetchall()
    assert actor.startswith("cli:")
    assert json.loads(detail) == {
        "terminal": TERMINAL,
        "event": "evt-1",
        "occurred_at": "2026-12-01 08:00:00.000000",
        "reason": "revoked",
    }


@pytest.mark.parametrize(
    ("terminal", "event", "message"),
    [
        (TERMINAL, "evt-9", f"terminal {TERMINAL} has no event evt-9"),
        ("not-a-terminal", "evt-1", "TERMINAL must be a terminal id"),
        (TERMINAL, "evt 1", "EVENT must be an event id"),
    ],
    ids=["unknown-event", "bad-terminal-id", "bad-event-id"],
)
def test_events_delete_of_what_is_not_there_is_a_clear_error_and_removes_nothing(
    migrated: Idcode, terminal: str, event: str, message: str
) -> None:
    store_event(migrated, "evt-1")

    assert_clean_error(migrated("events", "delete", terminal, event), message)
    assert event_ids(migrated) == ["evt-1"]


def test_serve_refuses_a_key_directory_others_can_write_to_in_one_line(idcode: Idcode) -> None:
    idcode.ok("keys", "init")
    (idcode.cwd / "keys").chmod(0o777)
    try:
        result = idcode("serve", "--port", "1")
    except subprocess.TimeoutExpired:
        pytest.fail("idcode serve started on a key directory others can write to")

    assert_clean_error(result, str(idcode.cwd / "keys"))
    assert "writable by group or others" in result.stderr


# -- events purge -----------------------------------------------------------------------------


def store_event_at(idcode: Idcode, event_id: str, at: str) -> None:
    with closing(sqlite3.connect(idcode.database)) as connection, connection:
        connection.execute(
            "INSERT INTO scan_events (terminal_id, event_id, occurred_at, valid, reason,"
            " scene_result, received_at) VALUES (?, ?, ?, 0, 'revoked', '{}', ?)",
            (TERMINAL, event_id, at, at),
        )


def test_events_purge_removes_old_months_keeps_their_counts_and_is_audited(
    migrated: Idcode,
) -> None:
    store_event(migrated, "recent")  # 2026-12-01, the terminal too
    store_event_at(migrated, "old-1", "2020-01-05 08:10:00.000000")
    store_event_at(migrated, "old-2", "2020-01-05 08:50:00.000000")

    dry = migrated.ok("events", "purge", "--older-than", "400", "--dry-run")
    assert "would remove 2 events before" in dry and "nothing was changed" in dry
    assert sorted(event_ids(migrated)) == ["old-1", "old-2", "recent"]

    out = migrated.ok("events", "purge", "--older-than", "400")

    assert "removed 2 events before" in out and "1 counts per hour kept" in out
    assert event_ids(migrated) == ["recent"]
    with closing(sqlite3.connect(migrated.database)) as connection:
        assert connection.execute(
            "SELECT hour, scene, reason, count FROM scan_hours"
        ).fetchall() == [("2020-01-05 08:00:00.000000", "community", "revoked", 2)]
        [(actor, detail)] = connection.execute(
            "SELECT actor, detail FROM audit_records WHERE action = 'events.purge'"
        ).fetchall()
    assert actor.startswith("cli:")
    assert json.loads(detail)["events"] == 2


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--older-than", "34"], "--older-than 34: events are kept at least 35 days"),
        (["--older-than", "-5"], "argument --older-than: a whole number of days"),
        (["--older-than", "soon"], "argument --older-than: a whole number of days"),
    ],
)
def test_events_purge_refuses_a_bad_retention_and_removes_nothing(
    migrated: Idcode, arguments: list[str], message: str
) -> None:
    store_event(migrated, "evt-1")

    result = migrated("events", "purge", *arguments)

    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert message in result.stderr
    assert event_ids(migrated) == ["evt-1"]


def test_events_purge_takes_its_default_retention_from_the_settings(migrated: Idcode) -> None:
    assert "IDCODE_EVENTS_RETENTION_DAYS" in migrated.ok("events", "purge", "--help")
    store_event(migrated, "recent")
    store_event_at(migrated, "old", "2020-01-05 08:10:00.000000")

    def purge(days: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "idcode.cli", "events", "purge"],
            capture_output=True,
            text=True,
            cwd=migrated.cwd,
            env={**migrated.env, "IDCODE_EVENTS_RETENTION_DAYS": days},
            timeout=120,
            check=False,
        )

    refused = purge("20")
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert "IDCODE_EVENTS_RETENTION_DAYS" in refused.stderr
    assert purge("400").returncode == 0
    assert event_ids(migrated) == ["recent"]
