"""The culture venues example (examples/culture-venue) against a live service: a museum's two
gates sharing a journal, a library's gate and loan desk, each terminal deciding from its synced
trust bundle and uploading its journal; the README's gate controller and loan software acting
on the decision lines; and each venue's own subjects."""

from __future__ import annotations

import json
import re
import secrets
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import select

from idcode.scenes import subject_of
from idcode.service.database import make_engine, make_session_factory
from idcode.service.models import CardRecord
from idcode.service.pii import vault_for
from idcode.service.settings import Settings
from idcode.terminal import identity as identities
from tests.integration.test_examples import EXAMPLES, _example, _outcomes
from tests.services import Tokens

SUBJECT = re.compile(r"[0-9a-f]{24}")
MUSEUM, LIBRARY = "city-museum", "riverside-library"
ID_NUMBER = re.compile(r"(?<![0-9A-Za-z])\d{17}[0-9X](?![0-9A-Za-z])")


def _snippet(index: int, decisions: list[dict[str, Any]], *args: str) -> list[str]:
    """Run the README's python block ``index`` on the decision lines, as the terminal wrote
    them (and a stray line that is no decision)."""
    readme = (EXAMPLES / "culture-venue" / "README.md").read_text(encoding="utf-8")
    snippet = re.findall(r"```python\n(.*?)```", readme, flags=re.DOTALL)[index]
    lines = "".join(
        json.dumps({k: v for k, v in d.items() if k != "scan"}) + "\n" for d in decisions
    )
    completed = subprocess.run(
        [sys.executable, "-c", snippet, *args],
        input=lines + "not json: a stray line\n",
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return completed.stdout.splitlines()


def test_venues_admit_by_slot_capacity_and_age_and_the_loan_desk_finds_its_member(
    service_settings: Settings, tmp_path: Path
) -> None:
    with _example("culture-venue", service_settings, tmp_path) as (service, summary, printed):
        terminals = tmp_path / "work" / "terminals"
        uploaded = {
            event["event_id"]: event
            for terminal in terminals.iterdir()
            if terminal.is_dir()
            for event in service.events(identities.load(terminal).id)
        }
    decisions = summary["decisions"]
    # Every decision reached the service from the terminals' journals, under the subject its
    # decision line carried.
    assert set(uploaded) == {d["event_id"] for d in decisions}
    assert all(uploaded[d["event_id"]]["subject"] == d["subject"] for d in decisions)
    assert (terminals / "museum.sqlite3").exists()  # the museum gates' shared journal

    assert _outcomes(decisions) == [
        ("王芳, holder of the 10:00 slot", True, "ok", "entry"),
        ("王芳 again", False, "already_entered", "entry"),
        ("刘洋 walks in", True, "ok", "walk_in"),
        ("陈静, holder of the 11:00 slot, early", False, "too_early", "entry"),
        ("李娜 walks in at the other gate", False, "slot_full", "walk_in"),
        ("李娜 (14) at the teen book club", True, "ok", "walk_in"),
        ("刘洋 (36) at the teen book club", False, "age_limit", "walk_in"),
        ("member 刘洋 borrows", True, "ok", "loan"),
        ("李娜, not a member, borrows", False, "not_a_member", "loan"),
        ("member 刘洋 borrows again, code only", True, "ok", "loan"),
    ]
    results = [d["result"] for d in decisions]
    assert results[0] == {"slot": "am-1", "event": "bronzes", "reserved": True}
    # Capacity 2, one place reserved: one walk-in, and the other gate knows it.
    assert results[2] == {"slot": "am-1", "event": "bronzes", "reserved": False, "places_left": 0}
    assert results[3]["slot"] == "am-2" and 1 <= results[3]["opens_in_minutes"] <= 25
    assert results[4] == {"slot": "am-1", "event": "bronzes"}
    assert results[5]["slot"] == "book-club" and results[5]["places_left"] == 19
    assert results[6] == {"slot": "book-club", "event": "teen-book-club"}

    # One card, two venues: the museum's subject of 刘洋 is not the library's; the library's
    # gate and loan desk share the library's, which its loan software keeps.
    museum, library_gate, first_loan, second_loan = (decisions[i]["subject"] for i in (2, 6, 7, 9))
    assert all(SUBJECT.fullmatch(d["subject"]) for d in decisions)
    assert museum != library_gate
    assert library_gate == first_loan == second_loan
    assert decisions[4]["subject"] != decisions[5]["subject"]  # 李娜, at each venue
    # Exactly the venue's own subject: the card's pseudonym keyed with the site's key, neither
    # the other venue's nor a scene-wide one.
    card_id = re.search(r"enrolled 刘洋: card ([0-9a-f-]{36})", printed)
    assert card_id is not None, printed
    engine = make_engine(service_settings.sqlalchemy_url)
    try:
        with make_session_factory(engine)() as session:
            pseudonym = session.scalars(
                select(CardRecord.pseudonym).where(CardRecord.id == card_id[1])
            ).one()
    finally:
        engine.dispose()
    vault = vault_for(service_settings)
    assert first_loan == subject_of(vault.terminal_subject_key("culture", LIBRARY), pseudonym)
    assert museum == subject_of(vault.terminal_subject_key("culture", MUSEUM), pseudonym)
    assert first_loan != subject_of(vault.scene_subject_key("culture"), pseudonym)
    members_file = Path(summary["members_file"])
    members = json.loads(members_file.read_text(encoding="utf-8"))["members"]
    assert members == [{"member_number": "L000001", "subject": first_loan}]
    assert members_file.stat().st_mode & 0o077 == 0

    wait = results[3]["opens_in_minutes"]
    assert _snippet(0, decisions[:7]) == [
        "gate: open",
        "gate: stays shut (already_entered)",
        "gate: open",
        f"gate: stays shut (too_early): slot am-2 opens to you in {wait} min",
        "gate: stays shut (slot_full)",
        "gate: open",
        "gate: stays shut (age_limit)",
    ]
    unbound = tmp_path / "no-members-yet.json"
    unbound.write_text('{"members": []}', encoding="utf-8")
    assert _snippet(1, decisions[7:9], str(unbound)) == [
        "loan desk: a member, not yet known to the loan system: scan the library card once",
        "loan desk: not a member of this library (not_a_member): join at the desk",
    ]
    assert _snippet(1, decisions[9:], str(members_file)) == ["loan desk: lend to L000001"]
    assert not ID_NUMBER.search(printed)


def test_service_refuses_venue_data_naming_the_slot_not_the_person_and_accepts_card_references(
    client: TestClient, tokens: Tokens, enrol: Callable[..., tuple[str, str]]
) -> None:
    """PUT /v1/scenes/culture/{site}: card references are accepted (the service makes them the
    venue's subjects, which the example's test checks at the terminal), and the adapter's
    refusals reach the operator as 422 invalid_scene_data naming the slot, never a card or a
    subject (two references to one card, spelt differently, are one person twice)."""
    holder, other = enrol()[0], enrol()[0]
    venue = f"museum-{secrets.token_hex(4)}"  # new: the example's test stored city-museum
    slot = {"id": "am", "event": "e", "start": "2026-12-05T10:00", "end": "2026-12-05T11:00"}
    base = {"events": [{"id": "e"}], "slots": [{**slot, "capacity": 1}]}
    refusals = [
        ({**base, "reservations": {"am": [f"card:{holder}", f"card:{other}"]}}, "slot 'am' has 2"),
        ({**base, "reservations": {"am": [f"card:{holder}", f"card:{holder.upper()}"]}}, "twice"),
        ({**base, "slots": [{**slot, "capacity": 1, "end": "2026-12-05T09:00"}]}, "end must be"),
    ]
    for document, message in refusals:
        response = client.put(
            f"/v1/scenes/culture/{venue}", json=document, headers=tokens.operator()
        )
        assert response.status_code == 422, response.text
        problem = response.json()
        assert problem["reason"] == "invalid_scene_data" and message in problem["detail"]
        assert holder not in problem["detail"] and not SUBJECT.search(problem["detail"])
    accepted = {**base, "reservations": {"am": [f"card:{holder}"]}, "members": [f"card:{other}"]}
    response = client.put(f"/v1/scenes/culture/{venue}", json=accepted, headers=tokens.operator())
    assert response.status_code == 200, response.text
    assert response.json()["version"] == 1  # no refused document was stored
