"""The demo's buses: an operator's tariff and two validators (lines 1 and 2) before the sync;
offline boardings with concessions, codes shown twice, phones passed back and an old
screenshot; after the upload, the operator's clearing file checked against the journals.
See docs/scenes/transport.md."""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any

from idcode.terminal.client import request

if TYPE_CHECKING:  # city imports this module: the types only, to avoid a cycle
    from idcode.demo.city import Citizen, Demo

OPERATOR = "city-bus"
LINE_1, LINE_2 = "bus validator 1", "bus validator 2"
TARIFF: dict[str, Any] = {
    "lines": {"1": 200, "2": 200, "X5": 500},
    "transfer_discount": 100,
    "daily_cap": 1000,
}
RIDERS = 40
TRANSFERS = 12
#: As in city.py: a code shown this long after it was fetched has expired (60 s plus skew).
SCREENSHOT_AGE = 150


def setup(demo: Demo) -> None:
    """The operator's tariff and its two validators (each on its own bus and journal)."""
    demo.city.call("PUT", f"/v1/scenes/transport/{OPERATOR}", TARIFF)
    demo.terminal(LINE_1, "transport", OPERATOR, line="1")
    demo.terminal(LINE_2, "transport", OPERATOR, line="2")


def scan(demo: Demo, citizens: Sequence[Citizen]) -> None:
    """Offline: riders board line 1, some codes shown twice (replayed), some phones passed
    back with a fresh code (already_boarded); some riders change to line 2, whose door cannot
    see their first boarding; a few old screenshots (expired)."""
    chance: random.Random = demo.chance
    city, one, two = demo.city, demo.gates[LINE_1], demo.gates[LINE_2]
    riders = chance.sample(list(citizens), min(RIDERS, len(citizens)))
    for number, rider in enumerate(riders):
        code = city.code(rider)
        one.scan(code)
        if number % 10 == 0:
            one.scan(code)  # shown twice: replayed
        elif number % 10 == 5:
            one.scan(city.code(rider))  # the phone passed back for a companion
    for rider in riders[:TRANSFERS]:
        two.scan(city.code(rider))  # a transfer the clearing file finds
    for rider in riders[-3:]:
        two.scan(city.code(rider), later=SCREENSHOT_AGE)  # an old screenshot: expired


def clearing(demo: Demo) -> bool:
    """After the upload: the operator's clearing file of the day(s) of the boardings, one line
    checking its totals against the journals; True when they agree."""
    boardings = [
        entry for label in (LINE_1, LINE_2) for entry in demo.gates[label].entries if entry.admitted
    ]
    door = sum(_fen(entry.result.get("fare")) for entry in boardings)
    offset = timedelta(minutes=480)  # the tariff's utc_offset_minutes (the default)
    days = sorted({(datetime.fromtimestamp(e.at, UTC) + offset).date() for e in boardings})
    totals = dict.fromkeys(
        ("subjects", "boardings", "fares", "door_fares", "transfer_discounts"), 0
    )
    for day in days:
        last = _clearing_file(demo, day).splitlines()[-1]
        for name in totals:
            totals[name] += json.loads(last)[name]
    agrees = (
        totals["boardings"] == len(boardings)
        and totals["door_fares"] == door
        and totals["fares"] <= door
    )
    demo.say(
        f"clearing file {OPERATOR} {', '.join(map(str, days)) or '-'}: {totals['boardings']} "
        f"boardings by {totals['subjects']} passengers, the doors charged {door / 100:.2f} "
        f"yuan, settled {totals['fares'] / 100:.2f} (transfers found across the buses "
        f"{totals['transfer_discounts'] / 100:.2f}); "
        + ("its totals equal the journals'" if agrees else "MISMATCH with the journals")
    )
    return agrees


def _clearing_file(demo: Demo, day: date) -> str:
    answer = request(
        f"{demo.city.url}/v1/settlements/transport/{OPERATOR}/{day.isoformat()}?format=jsonl",
        headers={"Authorization": f"Bearer {demo.city.operator}"},
        timeout=30,
    )
    return answer.body.decode()


def _fen(value: object) -> int:
    return value if isinstance(value, int) else 0
