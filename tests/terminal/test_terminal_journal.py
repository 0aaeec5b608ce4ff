"""The terminal's journal and trust store on their own: SQLite durability settings, the upload
states, pruning, the History adapters read, replay state over the journal, and the bundle and
status deltas a terminal keeps on disk. No service, no network: keys come from TestIssuer."""

from __future__ import annotations

import base64
import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from idcode.bundle import sign_bundle, sign_delta
from idcode.decider import Decider
from idcode.errors import BundleError
from idcode.reasons import Reason
from idcode.scenes import Decision, Scan, SceneAdapter, encode_scene_key
from idcode.statuslist import StatusDelta, StatusList
from idcode.terminal.journal import REFUSED, UPLOADED, Journal, JournalEntry, JournalReplay
from idcode.terminal.trust import BUNDLE_FILE, DELTAS_FILE, TrustStore
from idcode.testing import TestIssuer
from idcode.verifier import DEFAULT_CLOCK_SKEW, Verdict
from tests.conftest import NOW

TERMINAL = "8c1e2f0a-0000-4000-8000-000000000001"
OTHER_TERMINAL = "8c1e2f0a-0000-4000-8000-000000000002"
ALICE, BOB = "a" * 24, "b" * 24
STATUS_SIZE = 1024


class AdmitEveryCode(SceneAdapter):
    """A community gate that admits every code that verifies (to see the verifier's reasons)."""

    scene = "community"

    def decide_valid(self, scan: Scan, card: object, subject: str, history: object) -> Decision:
        return Decision.admit("entry")


@pytest.fixture
def journal(tmp_path: Path) -> Iterator[Journal]:
    journal = Journal(tmp_path / "journal.sqlite3")
    try:
        yield journal
    finally:
        journal.close()


def record(
    journal: Journal,
    *,
    at: int = NOW,
    subject: str | None = ALICE,
    action: str = "entry",
    admitted: bool = True,
    terminal: str = TERMINAL,
) -> JournalEntry:
    """Journal one decision about ``subject`` (no code behind it)."""
    decision = (
        Decision.admit(action, count=1) if admitted else Decision.deny("not_resident", action)
    )
    return journal.record(terminal, Scan("WH1:x", Verdict(Reason.OK), at, subject), decision)


def upload_state(path: Path, entry: JournalEntry) -> int:
    with sqlite3.connect(path) as db:
        row = db.execute("SELECT upload FROM events WHERE event_id = ?", (entry.event_id,))
        state: int = row.fetchone()[0]
    db.close()
    return state


# -- durability -------------------------------------------------------------------------------


def test_recorded_decision_is_visible_to_a_fresh_journal_on_the_same_file(
    journal: Journal,
) -> None:
    entry = record(journal, subject=ALICE, action="entry")

    other = Journal(journal.path)
    try:
        assert other.entries() == [entry]
    finally:
        other.close()
    assert entry.seq > 0
    assert (entry.subject, entry.action, entry.admitted, dict(entry.result)) == (
        ALICE,
        "entry",
        True,
        {"count": 1},
    )


def test_journal_is_in_wal_mode_with_synchronous_full(journal: Journal) -> None:
    record(journal)
    # synchronous is a per-connection setting: it can only be read on the journal's own one.
    assert journal._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    with sqlite3.connect(journal.path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"  # kept in the file
    db.close()


# -- upload states ----------------------------------------------------------------------------


def test_pending_is_the_terminals_unsent_events_oldest_first_up_to_the_limit(
    journal: Journal,
) -> None:
    mine = [record(journal, at=NOW + i) for i in range(5)]
    record(journal, terminal=OTHER_TERMINAL)

    assert journal.pending(TERMINAL, 3) == mine[:3]
    assert journal.pending(TERMINAL, 100) == mine
    assert journal.pending_count(TERMINAL) == 5
    assert journal.pending_count() == 6


def test_uploaded_and_refused_events_are_no_longer_pending_and_are_kept(
    journal: Journal,
) -> None:
    first, second, third = (record(journal, at=NOW + i) for i in range(3))

    journal.mark_uploaded([first])
    journal.mark_refused([second])

    assert journal.pending(TERMINAL, 10) == [third]
    assert journal.pending_count(TERMINAL) == 1
    assert journal.entries(TERMINAL) == [first, second, third]
    assert upload_state(journal.path, first) == UPLOADED
    assert upload_state(journal.path, second) == REFUSED


def test_prune_deletes_only_uploaded_events_older_than_the_cutoff(journal: Journal) -> None:
    old_uploaded = record(journal, at=NOW - 100)
    old_pending = record(journal, at=NOW - 100)
    old_refused = record(journal, at=NOW - 100)
    new_uploaded = record(journal, at=NOW)
    journal.mark_uploaded([old_uploaded, new_uploaded])
    journal.mark_refused([old_refused])

    assert journal.prune(before=NOW) == 1

    assert journal.entries() == [old_pending, old_refused, new_uploaded]
    assert journal.pending(TERMINAL, 10) == [old_pending]
    assert journal.prune(before=NOW + 1000) == 1  # now new_uploaded too, still not the others
    assert journal.entries() == [old_pending, old_refused]


def test_upload_form_holds_the_subject_and_coarse_result_but_no_code(
    journal: Journal, tmp_path: Path
) -> None:
    issuer = TestIssuer(now=NOW)
    code = issuer.mint()
    decider = Decider(
        issuer.bundle("community"),
        AdmitEveryCode,
        prefix=issuer.prefix,
        replay=JournalReplay(journal),
    )
    scan, decision = decider.decide(code, NOW, journal)
    entry = journal.record(TERMINAL, scan, decision)

    upload = entry.to_upload()

    assert upload == {
        "event_id": entry.event_id,
        "occurred_at": "2026-12-01T08:00:00+00:00",
        "valid": True,
        "reason": "ok",
        "scene_result": {"action": "entry"},
        "subject": scan.subject,
    }
    assert scan.subject is not None and len(scan.subject) == 24
    assert code not in json.dumps(upload)


# -- History ------------------------------------------------------------------------------------


def test_history_last_is_the_newest_matching_admitted_event(journal: Journal) -> None:
    early = record(journal, at=NOW, subject=ALICE, action="entry")
    late = record(journal, at=NOW + 60, subject=ALICE, action="exit")
    denied = record(journal, at=NOW + 120, subject=ALICE, action="entry", admitted=False)
    record(journal, at=NOW + 180, subject=BOB, action="entry")

    assert journal.last(subject=ALICE) == late.to_event()
    assert journal.last(subject=ALICE, action="entry") == early.to_event()
    assert journal.last(subject=ALICE, admitted=False) == denied.to_event()
    assert journal.last(subject=ALICE, admitted=None) == denied.to_event()
    assert journal.last(subject=ALICE, since=NOW + 61) is None
    assert journal.last(subject="c" * 24) is None


def test_history_last_is_the_event_journaled_last_even_if_its_clock_was_behind(
    journal: Journal,
) -> None:
    # Two lanes share the journal; the exit lane's clock is a few seconds behind the entry's.
    record(journal, at=NOW + 5, action="entry")
    exit_event = record(journal, at=NOW, action="exit")
    record(journal, at=NOW, action="entry", terminal=OTHER_TERMINAL, subject=BOB)

    assert journal.last(subject=ALICE) == exit_event.to_event()


def test_history_count_filters_by_subject_action_since_and_admission(journal: Journal) -> None:
    record(journal, at=NOW - 10, subject=ALICE, action="meal")
    record(journal, at=NOW, subject=ALICE, action="meal")
    record(journal, at=NOW + 10, subject=ALICE, action="visit")
    record(journal, at=NOW + 20, subject=ALICE, action="meal", admitted=False)
    record(journal, at=NOW + 30, subject=BOB, action="meal")

    assert journal.count(since=NOW) == 3  # admitted only, by default
    assert journal.count(since=NOW, admitted=None) == 4
    assert journal.count(since=NOW, admitted=False) == 1
    assert journal.count(since=NOW - 10, subject=ALICE) == 3
    assert journal.count(since=NOW - 10, subject=ALICE, action="meal") == 2
    assert journal.count(since=NOW + 1, subject=ALICE, action="meal") == 0
    assert journal.count(since=NOW, action="meal", admitted=None) == 3
    assert journal.count(since=NOW + 31) == 0


# -- replay over the journal ------------------------------------------------------------------


def test_code_journaled_through_one_journal_is_replayed_through_another_on_the_same_file(
    journal: Journal,
) -> None:
    issuer = TestIssuer(now=NOW)
    bundle = issuer.bundle("community")
    code = issuer.mint()
    lane = Journal(journal.path)
    try:
        entry_lane = Decider(
            bundle, AdmitEveryCode, prefix=issuer.prefix, replay=JournalReplay(journal)
        )
        exit_lane = Decider(
            bundle, AdmitEveryCode, prefix=issuer.prefix, replay=JournalReplay(lane)
        )
        scan, decision = entry_lane.decide(code, NOW, journal)
        journal.record(TERMINAL, scan, decision)

        _, again = exit_lane.decide(code, NOW + 1, lane)
        _, fresh = exit_lane.decide(issuer.mint(), NOW + 1, lane)
    finally:
        lane.close()

    assert decision.reason == "ok"
    assert again.reason == "replayed"
    assert fresh.reason == "ok"


def test_code_both_lanes_admit_at_the_same_moment_is_journaled_once_and_replayed_once(
    journal: Journal,
) -> None:
    """Two lanes check "journaled?" before either has written: the journal's unique code id
    turns the second write into a replay, so the code is used once."""
    issuer = TestIssuer(now=NOW)
    bundle = issuer.bundle("community")
    code = issuer.mint()
    lane = Journal(journal.path)
    try:
        entry_lane = Decider(
            bundle, AdmitEveryCode, prefix=issuer.prefix, replay=JournalReplay(journal)
        )
        exit_lane = Decider(
            bundle, AdmitEveryCode, prefix=issuer.prefix, replay=JournalReplay(lane)
        )
        first = entry_lane.decide(code, NOW, journal)
        second = exit_lane.decide(code, NOW, lane)  # before the first is journaled
        assert first[1].admitted and second[1].admitted

        kept = journal.record(TERMINAL, *first)
        raced = lane.record(TERMINAL, *second)
    finally:
        lane.close()

    assert (kept.admitted, kept.reason) == (True, "ok")
    assert (raced.admitted, raced.reason) == (False, "replayed")
    assert [e.reason for e in journal.entries()] == ["ok", "replayed"]


def test_code_denied_not_yet_valid_is_admitted_once_it_is_valid(journal: Journal) -> None:
    # A code only counts as used once the verifier accepted it, as in the service's replay
    # state: a scan the verifier refused (here: the gate's clock is behind) does not use it up.
    issuer = TestIssuer(now=NOW)
    early = NOW - DEFAULT_CLOCK_SKEW - 10
    decider = Decider(
        issuer.bundle("community", at=early - 60),
        AdmitEveryCode,
        prefix=issuer.prefix,
        replay=JournalReplay(journal),
    )
    code = issuer.mint(at=NOW)

    first_scan, first = decider.decide(code, early, journal)
    journal.record(TERMINAL, first_scan, first)
    second_scan, second = decider.decide(code, NOW, journal)
    journal.record(TERMINAL, second_scan, second)
    _, third = decider.decide(code, NOW + 1, journal)

    assert (first.reason, second.reason, third.reason) == ("not_yet_valid", "ok", "replayed")


# -- the trust store --------------------------------------------------------------------------


def bundle_token(
    issuer: TestIssuer, *, version: int, at: int, revoked: tuple[int, ...] = ()
) -> str:
    status = StatusList(STATUS_SIZE)
    for index in revoked:
        status.set(index, True)
    return sign_bundle(
        issuer.root,
        version=version,
        issued_at=at,
        max_age=48 * 3600,
        keys=[issuer.key.public],
        status=status,
        scene={
            "scene": "community",
            "site": "test-site",
            "version": 1,
            "data": {},
            "subject_key": encode_scene_key(bytes(32)),
        },
    )


def delta_token(issuer: TestIssuer, base: int, target: int, revoked: int, at: int) -> str:
    return sign_delta(issuer.root, StatusDelta(base, target, STATUS_SIZE, (revoked,), ()), at)


def test_trust_store_holds_nothing_before_the_first_sync(
    issuer: TestIssuer, tmp_path: Path
) -> None:
    store = TrustStore(tmp_path, issuer.root.public_jwk)

    assert store.load() is None
    assert store.etag is None


def test_trust_store_reloads_the_bundle_with_its_deltas_applied(
    issuer: TestIssuer, tmp_path: Path
) -> None:
    store = TrustStore(tmp_path, issuer.root.public_jwk)
    store.save_bundle(bundle_token(issuer, version=3, at=NOW), '"tag-1"')
    store.save_delta(delta_token(issuer, 3, 4, revoked=7, at=NOW + 60))
    store.save_delta(delta_token(issuer, 4, 6, revoked=9, at=NOW + 120))

    held = TrustStore(tmp_path, issuer.root.public_jwk).load()

    assert held is not None
    assert (held.version, held.issued_at) == (6, NOW + 120)
    assert [held.status.is_invalid(i) for i in (6, 7, 8, 9)] == [False, True, False, True]
    assert store.etag == '"tag-1"'


def test_torn_last_delta_line_is_dropped_and_the_earlier_deltas_kept(
    issuer: TestIssuer, tmp_path: Path
) -> None:
    store = TrustStore(tmp_path, issuer.root.public_jwk)
    store.save_bundle(bundle_token(issuer, version=3, at=NOW), None)
    first = delta_token(issuer, 3, 4, revoked=7, at=NOW + 60)
    second = delta_token(issuer, 4, 5, revoked=9, at=NOW + 120)
    store.save_delta(first)
    with open(tmp_path / DELTAS_FILE, "a", encoding="ascii") as deltas:
        deltas.write(second[: len(second) // 2])  # the power went while it was written

    held = store.load()

    assert held is not None
    assert held.version == 4
    assert (held.status.is_invalid(7), held.status.is_invalid(9)) == (True, False)
    assert (tmp_path / DELTAS_FILE).read_text(encoding="ascii") == first + "\n"
    # The delta it now lacks can be applied on top, as the next sync will.
    store.save_delta(second)
    again = store.load()
    assert again is not None and again.version == 5 and again.status.is_invalid(9)


def test_tampered_bundle_file_is_a_bundle_error(issuer: TestIssuer, tmp_path: Path) -> None:
    store = TrustStore(tmp_path, issuer.root.public_jwk)
    store.save_bundle(bundle_token(issuer, version=3, at=NOW), None)
    header, payload, signature = (tmp_path / BUNDLE_FILE).read_text(encoding="ascii").split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["max_age"] = 365 * 86_400  # stay "fresh" for a year
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    (tmp_path / BUNDLE_FILE).write_text(f"{header}.{forged}.{signature}", encoding="ascii")

    with pytest.raises(BundleError):
        store.load()


def test_bundle_signed_by_another_root_is_a_bundle_error(
    issuer: TestIssuer, tmp_path: Path
) -> None:
    TrustStore(tmp_path, issuer.root.public_jwk).save_bundle(
        bundle_token(TestIssuer(now=NOW), version=3, at=NOW), None
    )

    with pytest.raises(BundleError):
        TrustStore(tmp_path, issuer.root.public_jwk).load()


def test_saving_a_new_bundle_discards_the_deltas_of_the_old_one(
    issuer: TestIssuer, tmp_path: Path
) -> None:
    store = TrustStore(tmp_path, issuer.root.public_jwk)
    store.save_bundle(bundle_token(issuer, version=3, at=NOW), '"old"')
    store.save_delta(delta_token(issuer, 3, 4, revoked=7, at=NOW + 60))

    store.save_bundle(bundle_token(issuer, version=4, at=NOW + 120, revoked=(7,)), '"new"')

    held = store.load()
    assert held is not None and (held.version, held.issued_at) == (4, NOW + 120)
    assert not (tmp_path / DELTAS_FILE).exists()
    assert store.etag == '"new"'


def test_terminal_reads_no_answer_larger_than_a_bundle_can_be() -> None:
    """A hostile or broken service cannot make a terminal read gigabytes into memory."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from idcode.terminal.client import MAX_RESPONSE_BYTES, ServiceError, request

    class Endless(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", str(MAX_RESPONSE_BYTES + 1))
            self.end_headers()
            chunk = b"x" * 65536
            try:
                for _ in range(MAX_RESPONSE_BYTES // len(chunk) + 1):
                    self.wfile.write(chunk)
            except OSError:
                pass  # the terminal stopped reading

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Endless)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with pytest.raises(ServiceError, match="response_too_large"):
            request(f"http://127.0.0.1:{server.server_address[1]}/v1/trust-bundle")
    finally:
        server.shutdown()
        server.server_close()


def test_plain_http_to_another_host_is_logged_as_a_warning(
    caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    from idcode.terminal import identity as identities
    from idcode.terminal.client import TerminalClient

    def client_for(server: str) -> None:
        TerminalClient(
            identities.TerminalIdentity(
                TERMINAL, "community", "x", server, identities.new_terminal_key(), {}
            )
        )

    with caplog.at_level("WARNING", logger="idcode.terminal"):
        client_for("http://127.0.0.1:8000")
        client_for("https://idcode.city.example")
        assert not caplog.records
        client_for("http://idcode.city.example")
    assert "plain HTTP" in caplog.text
