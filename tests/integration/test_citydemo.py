"""``idcode demo`` runs a small city end to end and proves the uploads exact."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
from pathlib import Path

from idcode.demo.city import HALL_VISITORS, run
from idcode.demo.employment import FAIR, VISITORS_PER_STAND

SCENE_DENIALS = {
    "community gate": ["not_resident", "expired", "wrong_community", "revoked", "replayed"],
    "car park entry": ["already_inside"],
    "car park exit": ["no_entry"],
    "tourism turnstile": ["capacity_reached", "already_entered_today"],
    "canteen pad": ["not_enrolled", "daily_limit_reached"],
    "caregiver phone": ["visit_too_short"],
    "supermarket till": ["not_eligible", "daily_cap_reached"],
    "pharmacy till": ["not_eligible", "daily_cap_reached"],
    "hospital kiosk": ["not_registered"],
    "job fair a-01": ["already_checked_in", "not_working_age"],
    "job fair a-02": ["already_checked_in", "not_working_age"],
    "bus validator 1": ["replayed", "already_boarded"],
    "bus validator 2": ["expired"],
    "museum gate east": ["already_entered", "slot_full", "age_limit", "age_unverified"],
    "museum gate west": ["too_early", "too_late", "slot_full", "age_limit"],
    "library loan desk": ["not_a_member"],
}


def test_demo_decides_offline_uploads_and_the_service_holds_exactly_the_journals(
    tmp_path: Path,
) -> None:
    out = io.StringIO()

    status = run(out, citizens=120, seed=7, workdir=tmp_path)

    report = out.getvalue()
    assert status == 0, report
    _assert_service_hall(report)
    rows: dict[str, str] = {}
    for line in report.splitlines():  # the table row is the first line naming the terminal
        rows.setdefault(line[:20].strip(), line)
    for terminal, reasons in SCENE_DENIALS.items():
        assert terminal in rows, report
        for reason in reasons:
            assert reason in rows[terminal], f"{terminal} shows no {reason}:\n{report}"
    assert report.count("exactly these") == len(SCENE_DENIALS), report
    assert "none uploaded" in report
    assert report.rstrip().endswith("the service holds exactly the events the terminals journaled")
    assert (tmp_path / "terminals" / "car-park.sqlite3").exists()  # the lanes' shared journal
    _assert_the_hospital_recognised_its_patients(report)
    _assert_the_merchants_settled(report)
    _assert_employment(report)
    clearing = [line for line in report.splitlines() if line.startswith("clearing file city-bus")]
    assert len(clearing) == 1 and clearing[0].endswith("its totals equal the journals'"), report
    _assert_the_library_found_its_members(report)


def _assert_the_hospital_recognised_its_patients(report: str) -> None:
    """The desk linked 8 citizens and closed one record; at the kiosk, offline, the 7 linked
    ones were admitted and found by their subject, the closed one and 4 others sent to the desk."""
    assert "the registration desk identified 8 citizens" in report, report
    assert "a consent code presented again: code_used" in report, report
    assert "hospital kiosk: the hospital's software found 7 patients" in report, report
    assert "sent 5 to the desk" in report and "MISMATCH" not in report, report


def _assert_the_library_found_its_members(report: str) -> None:
    """Each member's first loan bound a library card, the second found the member by the
    library's subject alone; no subject of the library's is the museum's."""
    lines = [line for line in report.splitlines() if line.startswith("library loan desk: ")]
    assert len(lines) == 1, report
    bound = re.search(r"bound (\d+) members' library cards .* found (\d+) by the", lines[0])
    assert bound is not None and int(bound[1]) > 0 and bound[1] == bound[2], lines[0]
    assert "5 non-members sent to join" in lines[0], lines[0]
    assert "the museum's subjects and the library's never match" in lines[0], lines[0]
    assert "MISMATCH" not in lines[0], lines[0]


def test_idcode_demo_command_exits_0_and_leaves_nothing_behind(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("IDCODE_")}
    before = set(Path(tmp_path).iterdir())
    completed = subprocess.run(
        [sys.executable, "-m", "idcode.cli", "demo", "--citizens", "40", "--seed", "3"],
        env={**env, "TMPDIR": str(tmp_path)},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert "exactly the events the terminals journaled" in completed.stdout
    assert set(Path(tmp_path).iterdir()) == before  # the scratch directory is removed


def _assert_the_merchants_settled(report: str) -> None:
    """After the upload, each merchant's settlement file matched its till's journal, and the
    15 customers who shopped at both merchants appear under no common subject."""
    lines = [line for line in report.splitlines() if line.startswith("merchants:")]
    assert len(lines) == 1, report
    assert "the settlement files agree with the tills' journals" in lines[0], lines[0]
    assert "15 customers shopped at both, and the files share no subject" in lines[0], lines[0]
    assert "CHECK FAILED" not in lines[0], lines[0]


def _assert_service_hall(report: str) -> None:
    """The service hall's line: every visitor identified with consent, a ticket each, the code
    shown twice and the code without consent refused, the records as they should be."""
    lines = [line for line in report.splitlines() if line.startswith("service hall")]
    assert len(lines) == 1, report
    line = lines[0]
    assert f"{HALL_VISITORS} of {HALL_VISITORS} identified with consent" in line, line
    assert f"tickets A001-A{HALL_VISITORS:03d}" in line, line
    assert "refused: code_used, no_consent" in line, line
    assert f"the hall's record holds {HALL_VISITORS}, the citizen's lists it" in line, line
    assert "CHECK FAILED" not in line, line


def _assert_employment(report: str) -> None:
    """The benefits kiosk's line: three citizens identified with their consent, each benefit
    shown once, the code shown twice and the code without consent refused; and the organiser's
    count per stand from the uploaded events, as the stands counted (24 visitors each; a
    stand without a terminal at 0)."""
    lines = [line for line in report.splitlines() if line.startswith("benefits kiosk")]
    assert len(lines) == 1, report
    kiosk = lines[0]
    assert "3 of 3 identified with consent (programmes and residency only" in kiosk, kiosk
    assert (
        "eligible: minimum living allowance 1, disability allowances 1, veterans' benefits 1"
        in kiosk
    ), kiosk
    assert "refused: code_used, no_consent; the bureau's record holds 3" in kiosk, kiosk
    assert "CHECK FAILED" not in kiosk, kiosk
    assert (
        f"job fair {FAIR}: the organiser counts check-ins per stand from the service's events: "
        f"a-01 {VISITORS_PER_STAND}, a-02 {VISITORS_PER_STAND}, b-07 0 (as the stands counted)"
    ) in report, report
