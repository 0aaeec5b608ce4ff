"""The terminal examples (examples/<example>/<example>.py) run against a live service and show the
decisions their READMEs describe; each README's controller snippet acts on those decisions.

Each example runs as a user runs it, in a subprocess, with the live service's key store and
database in its environment (its `idcode dev-token` and `idcode keys jwks --root` read
them), its terminals under tmp_path, and --json for a summary to check.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date
from pathlib import Path
from typing import Any

from idcode.idnumber import sex
from idcode.service.settings import Settings
from idcode.terminal import identity as identities
from tests.live import LiveService, live_service

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
RUN_SECONDS = 300  # a cold start of each idcode subprocess on a busy machine
DAY = 86_400
CHINA_OFFSET = 8 * 3600  # the examples' scene data: local days are UTC+8
MIDNIGHT_MARGIN = 300  # seconds: a run takes well under this


def _clear_of_local_midnight() -> None:
    """Tourism days and meal counts are local days: keep the run on one of them."""
    left = DAY - (time.time() + CHINA_OFFSET) % DAY
    if left < MIDNIGHT_MARGIN:
        time.sleep(left + 1)


@contextmanager
def _example(
    name: str, settings: Settings, tmp_path: Path
) -> Iterator[tuple[LiveService, dict[str, Any], str]]:
    """Run examples/<name>/<name>.py against a live service, as a user runs it (its work
    directory tmp_path/work); yield the service, still running, the example's --json summary
    and everything it printed."""
    assert settings.database_url is not None  # the example's dev-token reads the same cards
    with live_service(settings) as service:
        operator = service.tokens.operator()["Authorization"].removeprefix("Bearer ")
        env = {k: v for k, v in os.environ.items() if not k.startswith("IDCODE_")}
        env.update(
            PYTHONUNBUFFERED="1",
            IDCODE_ENVIRONMENT="development",
            IDCODE_KEYS_DIR=str(settings.keys_dir),
            IDCODE_DATA_DIR=str(settings.data_dir),
            IDCODE_DATABASE_URL=settings.database_url,
            IDCODE_OPERATOR_TOKEN=operator,
        )
        script = EXAMPLES / name / (name.replace("-", "_") + ".py")
        workdir = tmp_path / "work"
        completed = subprocess.run(
            [sys.executable, script, "--server", service.url, "--workdir", workdir, "--json"],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=RUN_SECONDS,
            check=False,
        )
        assert completed.returncode == 0, completed.stdout + completed.stderr
        summary: dict[str, Any] = json.loads(completed.stdout.splitlines()[-1])
        assert summary["example"] == name
        yield service, summary, completed.stdout


def _run_example_summary(
    name: str, settings: Settings, tmp_path: Path
) -> tuple[dict[str, Any], str]:
    """Run a terminal example (_example); its summary and output, after checking that the
    service received every decision from the terminals' journals."""
    with _example(name, settings, tmp_path) as (service, summary, stdout):
        uploaded = {
            event["event_id"]
            for terminal in (tmp_path / "work" / "terminals").iterdir()
            if terminal.is_dir()
            for event in service.events(identities.load(terminal).id)
        }
    assert uploaded == {decision["event_id"] for decision in summary["decisions"]}
    return summary, stdout


def _run_example(name: str, settings: Settings, tmp_path: Path) -> list[dict[str, Any]]:
    """A terminal example's decisions (_run_example_summary)."""
    decisions: list[dict[str, Any]] = _run_example_summary(name, settings, tmp_path)[0]["decisions"]
    return decisions


def _outcomes(decisions: list[dict[str, Any]]) -> list[tuple[str, bool, str, str]]:
    return [(d["scan"], d["admitted"], d["reason"], d["action"]) for d in decisions]


def _controller_output(name: str, decisions: list[dict[str, Any]]) -> list[str]:
    """Run the README's controller snippet on the decision lines, as the terminal wrote them."""
    readme = (EXAMPLES / name / "README.md").read_text(encoding="utf-8")
    snippet = re.findall(r"```python\n(.*?)```", readme, flags=re.DOTALL)[-1]
    lines = "".join(
        json.dumps({k: v for k, v in d.items() if k != "scan"}) + "\n" for d in decisions
    )
    completed = subprocess.run(
        [sys.executable, "-c", snippet],
        input=lines + "not json: a stray line\n",
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return completed.stdout.splitlines()


def test_community_gate_admits_residents_and_guests_and_refuses_others(
    service_settings: Settings, tmp_path: Path
) -> None:
    decisions = _run_example("community-gate", service_settings, tmp_path)
    assert _outcomes(decisions) == [
        ("resident", True, "ok", "resident"),
        ("same code again", False, "replayed", ""),
        ("non-resident", False, "not_resident", ""),
        ("guest with a visitor pass", True, "ok", "visitor"),
        ("the guest again, same pass", True, "ok", "visitor"),
    ]
    assert [d["result"] for d in decisions[3:]] == [
        {"entry": 1, "entries_left": 9},
        {"entry": 2, "entries_left": 8},
    ]
    assert _controller_output("community-gate", decisions) == [
        "gate: open",
        "gate: stays shut (replayed)",
        "gate: stays shut (not_resident)",
        "gate: open",
        "gate: open",
    ]


def test_parking_lanes_share_a_journal_pair_exits_with_entries_and_price_by_tariff(
    service_settings: Settings, tmp_path: Path
) -> None:
    decisions = _run_example("parking-barrier", service_settings, tmp_path)
    assert _outcomes(decisions) == [
        ("visitor's car enters", True, "ok", "entry"),
        ("resident's car enters", True, "ok", "entry"),
        ("permit holder's car enters", True, "ok", "entry"),
        ("visitor scans at the entry again", False, "already_inside", "entry"),
        ("visitor's car leaves", True, "ok", "exit"),
        ("resident's car leaves", True, "ok", "exit"),
        ("permit holder's car leaves", True, "ok", "exit"),
        ("a car that never entered", False, "no_entry", "exit"),
    ]
    # Entries, then exits; the driver who never entered is a registered resident.
    assert [d["result"]["tariff"] for d in decisions] == [
        *("standard", "resident", "permit", "standard"),
        *("standard", "resident", "permit", "resident"),
    ]
    # A live run cannot move the clock: every stay is within the free minutes.
    assert [d["result"]["fee"] for d in decisions[4:7]] == [0, 0, 0]
    assert decisions[7]["result"]["lost_ticket_fee"] == 5000
    assert _controller_output("parking-barrier", decisions) == [
        "barrier: up",
        "barrier: up",
        "barrier: up",
        "barrier: down (already_inside)",
        "barrier: up",
        "barrier: up",
        "barrier: up",
        "barrier: down (no_entry): lost ticket 50.00 yuan at the booth",
    ]


def test_tourism_turnstile_sells_the_cheapest_ticket_once_a_day(
    service_settings: Settings, tmp_path: Path
) -> None:
    _clear_of_local_midnight()
    decisions = _run_example("tourism-turnstile", service_settings, tmp_path)
    assert _outcomes(decisions) == [
        ("62-year-old registered resident", True, "ok", "entry"),
        ("71-year-old from another city", True, "ok", "entry"),
        ("40-year-old registered resident", True, "ok", "entry"),
        ("35-year-old from another city", True, "ok", "entry"),
        ("the 62-year-old again, same day", False, "already_entered_today", ""),
    ]
    assert [d["result"] for d in decisions[:4]] == [
        {"ticket": "senior", "price": 4000},
        {"ticket": "elder", "price": 0},
        {"ticket": "resident", "price": 6000},
        {"ticket": "standard", "price": 8000},
    ]
    assert _controller_output("tourism-turnstile", decisions) == [
        "ticket senior: 40.00 yuan",
        "turnstile: open",
        "ticket elder: 0.00 yuan",
        "turnstile: open",
        "ticket resident: 60.00 yuan",
        "turnstile: open",
        "ticket standard: 80.00 yuan",
        "turnstile: open",
        "turnstile: locked (already_entered_today)",
    ]


def test_eldercare_canteen_subsidises_enrolled_seniors_and_home_care_refuses_a_short_visit(
    service_settings: Settings, tmp_path: Path
) -> None:
    _clear_of_local_midnight()
    decisions = _run_example("eldercare-canteen", service_settings, tmp_path)
    assert _outcomes(decisions) == [
        ("72-year-old, meal subsidy", True, "ok", "meal"),
        ("82-year-old, meal subsidy and 低保", True, "ok", "meal"),
        ("68-year-old, not enrolled", False, "not_enrolled", "meal"),
        ("the 72-year-old again, same meal", False, "meal_already_taken", "meal"),
        ("arrives at 郑淑华's home", True, "ok", "check_in"),
        ("scans 黄德明 before checking out", False, "visit_in_progress", "check_in"),
        ("leaves 郑淑华's home", False, "visit_too_short", "check_out"),
    ]
    assert [d["result"]["subsidy"] for d in decisions[:2]] == [500, 1000]
    assert decisions[6]["result"] == {"visit_minutes": 0}
    meals = [d for d in decisions if d["action"] == "meal"]
    assert _controller_output("eldercare-canteen", meals) == [
        "till: charge 10.00 yuan",
        "till: charge 5.00 yuan",
        "till: no subsidy (not_enrolled), full price",
        "till: charge 15.00 yuan",
        "till: no subsidy (meal_already_taken), full price",
        "till: charge 15.00 yuan",
    ]


def _kiosk_software_output(decisions: list[dict[str, Any]], his: Path) -> list[str]:
    """Run the hospital README's kiosk software on the decision lines, with the HIS file."""
    readme = (EXAMPLES / "hospital-desk" / "README.md").read_text(encoding="utf-8")
    snippet = re.findall(r"```python\n(.*?)```", readme, flags=re.DOTALL)[-1]
    keep = ("event_id", "at", "admitted", "reason", "action", "result", "subject")
    lines = "".join(json.dumps({k: d[k] for k in keep}) + "\n" for d in decisions)
    completed = subprocess.run(
        [sys.executable, "-c", snippet, str(his)],
        input=lines + "not json: a stray line\n",
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return completed.stdout.splitlines()


def test_hospital_desk_identifies_with_consent_links_and_the_kiosk_finds_the_patient_offline(
    service_settings: Settings, tmp_path: Path
) -> None:
    summary, printed = _run_example_summary("hospital-desk", service_settings, tmp_path)
    his_file = tmp_path / "work" / "hospital" / "his.json"
    his = json.loads(his_file.read_text(encoding="utf-8"))["patients"]
    desk = summary["desk"]

    # The desk identified citizens A and B with their consent, opened their records in the
    # HIS under their hospital subjects, printed their slips and linked them.
    assert [(d["citizen"], d["linked"]) for d in desk] == [("citizen A", True), ("citizen B", True)]
    assert all(d["attributes"] == ["birth_date", "id_number", "name", "sex"] for d in desk)
    assert [(p["patient_number"], p["subject"], p["name"]) for p in his] == [
        ("P000001", desk[0]["subject"], "王芳"),
        ("P000002", desk[1]["subject"], "张伟"),
    ]
    today = date.today()
    for record, at_desk in zip(his, desk, strict=True):
        years = today.year - date.fromisoformat(record["birth_date"]).year
        assert at_desk["slip"] == {
            "patient_number": record["patient_number"],
            "name": record["name"][0] + "*",
            "sex": sex(record["id_number"]),
            "age": at_desk["slip"]["age"],
        }
        assert at_desk["slip"]["age"] in (years - 1, years)
    assert [(r["status"], r["reason"]) for r in summary["refusals"]] == [
        (409, "code_used"),
        (403, "no_consent"),
    ]

    # The kiosk, offline, admits the linked citizens under the desk's subjects, and its
    # software finds each one's patient number; citizen C was never at the desk.
    decisions = summary["decisions"]
    assert _outcomes(decisions) == [
        ("citizen A at the kiosk", True, "ok", "check_in"),
        ("citizen B at the kiosk", True, "ok", "check_in"),
        ("citizen C at the kiosk", False, "not_registered", "check_in"),
    ]
    assert [d["subject"] for d in decisions[:2]] == [d["subject"] for d in desk]
    assert re.fullmatch(r"[0-9a-f]{24}", decisions[2]["subject"])
    assert decisions[2]["subject"] not in {d["subject"] for d in desk}
    assert [d["screen"] for d in decisions] == [
        "patient P000001 checked in",
        "patient P000002 checked in",
        "please go to the registration desk",
    ]
    assert _kiosk_software_output(decisions, his_file) == [
        "kiosk: patient P000001 checked in",
        "kiosk: patient P000002 checked in",
        "kiosk: please go to the registration desk",
    ]

    # Nothing printed holds an ID number or a birth date; the HIS file only its owner reads.
    assert not re.search(r"\d{17}[\dXx]", printed)
    for record in his:
        assert record["id_number"] not in printed and record["birth_date"] not in printed
    assert his_file.stat().st_mode & 0o077 == 0
    assert (tmp_path / "work" / "hospital" / "desk-key.pem").stat().st_mode & 0o077 == 0


# The service-hall counter (examples/service-hall) has no terminal: it identifies online, and
# its summary lists identifications instead of decisions.
ID_NUMBER = re.compile(r"(?<![0-9A-Za-z])\d{17}[0-9X](?![0-9A-Za-z])")
MASKED_ID_NUMBER = re.compile(r"(?<![0-9A-Za-z])\d{6}\*{8}\d{3}[0-9X](?![0-9A-Za-z])")


def test_service_hall_counter_identifies_with_consent_gives_tickets_and_refuses_other_codes(
    service_settings: Settings, tmp_path: Path
) -> None:
    with _example("service-hall", service_settings, tmp_path) as (service, summary, stdout):
        operator = service.tokens.operator()
        audit = service.client.get(
            f"/v1/relying-parties/{summary['relying_party']}/disclosures", headers=operator
        )
    assert summary["example"] == "service-hall"
    identifications = summary["identifications"]
    assert [(i["scan"], i["purpose"], i["status"], i["outcome"]) for i in identifications] == [
        ("citizen A, consent for the hall", "residence_certificate", 200, "identified"),
        ("the same code again", "residence_certificate", 409, "code_used"),
        ("citizen B, a code without consent", "social_insurance_enquiry", 403, "no_consent"),
        (
            "citizen B, consent for the library",
            "social_insurance_enquiry",
            403,
            "consented_to_another_party",
        ),
        ("citizen B, consent for the hall", "social_insurance_enquiry", 200, "identified"),
    ]
    # A ticket per service and day from 001; only what was consented and allowed is filled
    # in (citizen B's birth date, which the hall may not ask for, was never disclosed).
    assert [(i["ticket"], i["filled"], i["blank"]) for i in identifications if "ticket" in i] == [
        ("A001", ["name", "id_number", "residency"], []),
        ("B001", ["name", "id_number"], []),
    ]
    assert summary["disclosures"] == [
        {
            "relying_party": "江汉区政务服务中心",
            "purpose": "residence_certificate",
            "attributes": ["name", "id_number", "residency"],
            "counter": "window-3",
        }
    ]
    # The refusals disclosed nothing: the hall's record holds the two identifications only.
    assert audit.status_code == 200, audit.text
    assert [(d["purpose"], d["attributes"]) for d in audit.json()] == [
        ("social_insurance_enquiry", ["name", "id_number"]),
        ("residence_certificate", ["name", "id_number", "residency"]),
    ]
    # The screen shows each form's ID number masked, never in full; the summary names nobody.
    assert ID_NUMBER.findall(stdout) == []
    assert len(MASKED_ID_NUMBER.findall(stdout)) == 2
    assert "王芳" not in stdout.splitlines()[-1]
    assert "李强" not in stdout.splitlines()[-1]
    # The counter keeps its key to itself and its queue file holds counts, nobody's data.
    assert (tmp_path / "work" / "service-hall.key").stat().st_mode & 0o077 == 0
    queue = json.loads((tmp_path / "work" / "queue.json").read_text())
    assert queue["issued"] == {"residence_certificate": 1, "social_insurance_enquiry": 1}
