"""The demo's culture venues (docs/scenes/culture.md): a museum's two gates, sharing one
journal, admit the holders of a timed-entry slot and walk-ins until the slot is full, within
the exhibition's age limit; a library's loan desk lends to its members, and the library's
loan software finds each member by the library's own subject on the desk's decision lines.

``setup`` puts the venues' data and registers their terminals before the sync; ``scan`` is the
offline part; ``loan_software`` reads the desk's decision lines and checks them.
"""

from __future__ import annotations

import random
import time
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from idcode.terminal.scanners import decision_line

if TYPE_CHECKING:
    from idcode.demo.city import Citizen, Demo, Gate

MUSEUM, LIBRARY = "hubei-museum", "jianghan-library"
EAST, WEST, DESK = "museum gate east", "museum gate west", "library loan desk"
CHINA = timedelta(hours=8)  # the venues' utc_offset_minutes: the default, 480
#: Slots are laid out around the moment of the scans. "Later today" and "started today" (when
#: a holder is too early or too late) are local days, so near local midnight the gates scan as
#: if three hours ago (the codes signed for then, as a car park's arrivals are), which keeps
#: the whole timetable on one local day.
DAYTIME = (2, 22)
BACK = 3 * 3600
WALK_IN_PLACES = 15
#: Groups of ``people`` (city._scenes' returned dict) that this module fills in.
HOLDERS_NOW, HOLDERS_LATER, HOLDERS_PAST, MEMBERS = (
    "museum_now",
    "museum_later",
    "museum_past",
    "library_members",
)


def _moment() -> int:
    """Seconds to add to now for the gates' scans: 0, or -3 hours near local midnight."""
    hour = (datetime.now(UTC) + CHINA).hour
    return 0 if DAYTIME[0] <= hour < DAYTIME[1] else -BACK


def _local(at: float) -> str:
    return (datetime.fromtimestamp(at, UTC) + CHINA).strftime("%Y-%m-%dT%H:%M")


def setup(demo: Demo, citizens: list[Citizen]) -> dict[str, list[Citizen]]:
    """The museum's timetable and reservations, the library's members, and their terminals.
    Returns who holds what, as groups of the demo's people."""
    chance = demo.chance
    # Reservations are the adults' (the booking system knows the exhibition is for 12 and
    # over); children come as walk-ins, with a parent's code or their own.
    adults = [c for c in citizens if c.age >= 18]
    pool = chance.sample(adults, len(adults))
    share = max(1, len(citizens) // 20)
    holders_now, holders_later, holders_past = (
        pool[:share],
        pool[share : 2 * share],
        pool[2 * share : 3 * share],
    )
    moment = time.time() + _moment()
    minute = 60
    slots = [  # a slot that has ended, the running one, the next but one
        ("am-1", moment - 80 * minute, moment - 5 * minute, 3 * share),
        ("am-2", moment - 5 * minute, moment + 55 * minute, len(holders_now) + WALK_IN_PLACES),
        ("am-3", moment + 55 * minute, moment + 115 * minute, 3 * share),
    ]
    museum = {
        "events": [{"id": "bronze-age-warfare", "min_age": 12}],
        "slots": [
            {
                "id": slot_id,
                "event": "bronze-age-warfare",
                "start": _local(start),
                "end": _local(end),
                "capacity": capacity,
            }
            for slot_id, start, end, capacity in slots
        ],
        "reservations": {
            slot_id: [f"card:{c.card_id}" for c in holders]
            for slot_id, holders in (
                ("am-1", holders_past),
                ("am-2", holders_now),
                ("am-3", holders_later),
            )
        },
    }
    members = chance.sample(citizens, min(len(citizens), max(2, len(citizens) // 10)))
    library = {"members": [f"card:{c.card_id}" for c in members]}
    demo.city.call("PUT", f"/v1/scenes/culture/{MUSEUM}", museum)
    demo.city.call("PUT", f"/v1/scenes/culture/{LIBRARY}", library)
    for label in (EAST, WEST):
        demo.terminal(label, "culture", MUSEUM, journal="museum.sqlite3", mode="entry")
    demo.terminal(DESK, "culture", LIBRARY, mode="loan")
    return {
        HOLDERS_NOW: holders_now,
        HOLDERS_LATER: holders_later,
        HOLDERS_PAST: holders_past,
        MEMBERS: members,
    }


def scan(demo: Demo, citizens: list[Citizen], people: dict[str, list[Citizen]]) -> None:
    """Offline: the running slot's holders (some twice: already_entered), walk-ins until the
    slot is full (under-12s refused: age_limit; 6-17s sent to the staff: age_unverified), the
    next slot's holders (too_early) and the ended slot's (too_late); at the library, each
    member's first and second loan, and non-members (not_a_member)."""
    chance, gates = demo.chance, demo.gates
    later = _moment()

    def at_gate(gate: Gate, citizen: Citizen) -> None:
        code = demo.city.code_later(citizen, later) if later else demo.city.code(citizen)
        gate.scan(code, later=later)

    holders = {id(c) for group in (HOLDERS_NOW, HOLDERS_LATER, HOLDERS_PAST) for c in people[group]}
    for number, citizen in enumerate(people[HOLDERS_NOW]):
        at_gate(gates[EAST if number % 2 else WEST], citizen)
    for citizen in people[HOLDERS_NOW][:3]:
        at_gate(gates[EAST], citizen)  # through the other gate again: already_entered
    walk_ins = _sample(chance, [c for c in citizens if id(c) not in holders], 2 * WALK_IN_PLACES)
    for number, citizen in enumerate(walk_ins):
        at_gate(gates[WEST if number % 2 else EAST], citizen)  # then slot_full
    for citizen in people[HOLDERS_LATER]:
        at_gate(gates[WEST], citizen)  # too_early: their window opens in 40 minutes
    for citizen in people[HOLDERS_PAST]:
        at_gate(gates[WEST], citizen)  # too_late: their slot's window closed 50 minutes ago

    desk = gates[DESK]
    members = people[MEMBERS]
    for citizen in members + members:  # a first loan, then a second one
        desk.scan(demo.city.code(citizen))
    for citizen in _sample(chance, [c for c in citizens if c not in members], 5):
        desk.scan(demo.city.code(citizen))  # not_a_member


def loan_software(demo: Demo) -> bool:
    """The library's loan software on the desk's decision lines: a member's first loan binds
    the library's subject to a member number (the librarian scans the library card once),
    later loans find the member by the subject alone. Prints one line; True when every second
    loan found its member and no subject of the library's appears at the museum's gates."""
    desk = demo.gates[DESK]
    bound: dict[str, str] = {}
    first = found = refused = 0
    for entry in desk.entries:
        line = decision_line(entry, subject=desk.runtime.subject_in_lines)
        subject = line.get("subject") or ""
        if not line["admitted"]:
            refused += 1
        elif subject in bound:
            found += 1
        else:
            bound[subject] = f"L{len(bound) + 1:06d}"
            first += 1
    museum = {e.subject for label in (EAST, WEST) for e in demo.gates[label].entries if e.subject}
    apart = not museum & set(bound)
    agree = found == first and apart
    demo.say(
        f"{DESK}: the loan software bound {first} members' library cards at their first loan "
        f"and found {found} by the library's subject alone at the next; {refused} non-members "
        f"sent to join; the museum's subjects and the library's "
        + ("never match" if apart else "MATCH")
        + ("" if agree else "; MISMATCH in the loan software")
    )
    return agree


def _sample(chance: random.Random, people: list[Citizen], count: int) -> list[Citizen]:
    return chance.sample(people, min(count, len(people)))
