"""Two public culture venues (公共文化场馆) against a development service: a museum's two gates,
sharing one journal, admit timed-entry reservation holders in their slot's entry window and
walk-ins while the slot has room; a library's gate keeps its book club's age limits, and its
loan desk recognises a member by the library's own subject, so a loan needs no ID card. See
README.md."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # examples/, for terminal_common
from terminal_common import Example

MUSEUM, LIBRARY = "city-museum", "riverside-library"
#: The moment of scene.json's day that a run takes place at: the script moves the venues'
#: slots so that now is 10:20 there, twenty minutes into the first morning slot.
ANCHOR = datetime.fromisoformat("2026-12-05T10:20")
MEMBER_NUMBER = "L000001"


def move_to_now(venue: dict[str, Any]) -> dict[str, Any]:
    """The venue's data with every slot moved by the same amount, so that ANCHOR is now (to
    the minute) at the venue's UTC offset. A live run cannot move the clock; it moves the
    day's timetable instead."""
    zone = timezone(timedelta(minutes=venue.get("utc_offset_minutes", 480)))
    now = datetime.now(zone).replace(second=0, microsecond=0, tzinfo=None)
    shift = now - ANCHOR
    slots = [
        {
            **slot,
            "start": (datetime.fromisoformat(slot["start"]) + shift).isoformat(timespec="minutes"),
            "end": (datetime.fromisoformat(slot["end"]) + shift).isoformat(timespec="minutes"),
        }
        for slot in venue["slots"]
    ]
    return {**venue, "slots": slots}


def born(years_ago: int) -> date:
    today = date.today()
    return date(today.year - years_ago, 1, 1)


class Library:
    """The library's own loan software's records: its members' subjects (the library's, as the
    loan desk's decision lines carry them) beside its member numbers, in a file only its owner
    reads. The service never sees a member number."""

    def __init__(self, example: Example) -> None:
        self.directory = example.workdir / "library"
        shutil.rmtree(self.directory, ignore_errors=True)  # a new library each run
        self.directory.mkdir(parents=True, mode=0o700)
        self.members_file = self.directory / "members.json"
        self.members: list[dict[str, str]] = []
        self.save()

    def save(self) -> None:
        descriptor = os.open(self.members_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w", encoding="utf-8") as file:
            json.dump({"members": self.members}, file, indent=2)

    def bind(self, subject: str, member_number: str) -> None:
        """Once per member: the librarian scans the member's library card beside an admitted
        loan, and the software keeps the subject with the member number from then on."""
        self.members.append({"member_number": member_number, "subject": subject})
        self.save()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    example = Example("culture", MUSEUM, __file__, parser)

    # The operator enrols the citizens (with made-up ID numbers) and puts each venue's data.
    morning_holder = example.enrol("王芳", born(41), residency="registered")
    late_holder = example.enrol("陈静", born(29), residency="non_resident")
    member = example.enrol("刘洋", born(36), residency="registered")
    teen = example.enrol("李娜", born(14), residency="registered")
    venues = example.scene_data(
        morning_holder=morning_holder, late_holder=late_holder, member=member
    )
    example.put_scene(move_to_now(venues[MUSEUM]))
    gates = [example.provision("museum-gate-1"), example.provision("museum-gate-2")]
    # The library is another site of the scene: its own data, terminals and subjects.
    example.site = LIBRARY
    example.put_scene(move_to_now(venues[LIBRARY]))
    library_gate = example.provision("library-gate")
    loan_desk = example.provision("loan-desk")
    library = Library(example)

    # The museum's two gates share one journal: each counts the walk-ins the other admitted.
    museum_journal = ("--journal", str(example.workdir / "terminals" / "museum.sqlite3"))
    entry, loan = ("--option", "mode=entry"), ("--option", "mode=loan")
    example.scan(
        gates[0],
        [
            ("王芳, holder of the 10:00 slot", example.code(morning_holder)),
            ("王芳 again", example.code(morning_holder)),
            ("刘洋 walks in", example.code(member)),
        ],
        *museum_journal,
        *entry,
    )
    example.scan(
        gates[1],
        [
            ("陈静, holder of the 11:00 slot, early", example.code(late_holder)),
            ("李娜 walks in at the other gate", example.code(teen)),
        ],
        *museum_journal,
        *entry,
    )
    example.scan(
        library_gate,
        [
            ("李娜 (14) at the teen book club", example.code(teen)),
            ("刘洋 (36) at the teen book club", example.code(member)),
        ],
        *entry,
    )
    example.scan(
        loan_desk,
        [
            ("member 刘洋 borrows", example.code(member)),
            ("李娜, not a member, borrows", example.code(teen)),
        ],
        *loan,
    )
    # The first loan with the code: the loan software does not know the subject yet, so the
    # librarian scans 刘洋's library card once and the software keeps the two together.
    first_loan = example.decisions[-2]
    library.bind(first_loan["subject"], MEMBER_NUMBER)
    print(f"the librarian scans library card {MEMBER_NUMBER} once: bound to the loan's subject")
    example.scan(loan_desk, [("member 刘洋 borrows again, code only", example.code(member))], *loan)
    example.finish(members_file=str(library.members_file))


if __name__ == "__main__":
    main()
