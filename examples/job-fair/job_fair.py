"""A job fair's stand check-in against a development service: each stand's terminal checks a
job-seeker of working age in once a day, offline, and names its stand; the organiser then
counts the check-ins per stand from the events the terminals uploaded. See README.md."""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # examples/, for terminal_common
from terminal_common import Example

FAIR = "spring-job-fair"


def minutes(time_of_day: str) -> int:
    hours, _, mins = time_of_day.partition(":")
    return int(hours) * 60 + int(mins)


def organisers_count(example: Example, terminals: list[Path]) -> Counter[str]:
    """The organiser's count per stand: the admitted check-ins among the events the fair's
    terminals uploaded (GET /v1/events, by terminal), counted by the stand each names."""
    counted: Counter[str] = Counter()
    for terminal in terminals:
        terminal_id = json.loads((terminal / "terminal.json").read_text())["id"]
        events = example.call(
            "GET", f"/v1/events?terminal_id={terminal_id}&reason=ok&limit=1000", example.operator
        )
        for event in events:
            result = event["scene_result"]
            if event["valid"] and result.get("action") == "check_in":
                counted[result["stand"]] += 1
    return counted


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--keep-hours",
        action="store_true",
        help="keep the days and hours of scene.json even when the fair is not open now",
    )
    example = Example("employment", FAIR, __file__, parser)
    year = date.today().year  # ages are whole years; 15 June keeps each in its band all year

    # The operator enrols the job-seekers (the ID number holds the birth date, hence the age
    # band) and puts the fair's days, hours and stands (scene.json). The scene lists nobody.
    liu = example.enrol("刘洋", birth=date(year - 30, 6, 15), residency="permit")
    chen = example.enrol("陈静", birth=date(year - 45, 6, 15), residency="registered")
    zhao = example.enrol("赵磊", birth=date(year - 17, 6, 15), residency="registered")
    data = example.scene_data()
    local = datetime.now(UTC) + timedelta(minutes=data["utc_offset_minutes"])
    minute = local.hour * 60 + local.minute
    # The scans take a few seconds; five minutes' margin keeps them all on one side.
    open_now = (
        local.date().isoformat() in data["days"]
        and minutes(data["opens_at"]) <= minute < minutes(data["closes_at"]) - 5
    )
    if not open_now and not example.args.keep_hours:
        print(
            f"note: it is {local:%Y-%m-%d %H:%M} at the fair, not one of its days and hours; "
            "this run holds the fair today, all day, so that the scans show the check-in rules "
            "(with --keep-hours every scan is denied 'not_fair_day' or 'outside_fair_hours')"
        )
        data.update(days=[local.date().isoformat()], opens_at="00:00", closes_at="24:00")
    example.put_scene(data)
    stand_a01 = example.provision("stand-a-01")
    stand_a02 = example.provision("stand-a-02")

    example.scan(
        stand_a01,
        [
            ("30-year-old at stand a-01", example.code(liu)),
            ("45-year-old at stand a-01", example.code(chen)),
            ("the 30-year-old again at a-01", example.code(liu)),
            ("17-year-old at stand a-01", example.code(zhao)),
        ],
        *("--option", "stand=a-01"),
    )
    example.scan(
        stand_a02, [("the 30-year-old at stand a-02", example.code(liu))], "--option", "stand=a-02"
    )

    # The terminals uploaded their journals before they exited: the organiser counts.
    counted = organisers_count(example, [stand_a01, stand_a02])
    own: dict[str, int] = {}
    for decision in example.decisions:
        if decision["admitted"]:
            own[decision["result"]["stand"]] = decision["result"]["check_ins"]
    counts: dict[str, Any] = {stand: counted[stand] for stand in data["stands"]}
    print("the organiser's count per stand, from the service's events:")
    for stand, count in counts.items():
        agrees = (
            "as the stand counted" if own.get(stand, 0) == count else "NOT as the stand counted"
        )
        print(f"    {stand} {data['stands'][stand]['employer']}: {count} ({agrees})")
    example.finish(counts=counts)


if __name__ == "__main__":
    main()
