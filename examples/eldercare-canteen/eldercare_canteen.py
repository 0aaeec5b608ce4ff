"""Elderly care against a development service: a community canteen's pad (mode=canteen) grants
the meal subsidy to enrolled seniors within its limits, and a caregiver's phone
(mode=home_care) checks a home visit in and out. See README.md."""

from __future__ import annotations

import argparse
import sys
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # examples/, for terminal_common
from terminal_common import Example


def minutes(time_of_day: str) -> int:
    hours, _, mins = time_of_day.partition(":")
    return int(hours) * 60 + int(mins)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--keep-hours",
        action="store_true",
        help="keep the meal windows of scene.json even when no meal is being served now",
    )
    parser.add_argument(
        "--visit-minutes",
        type=float,
        default=0,
        help="wait this long between check-in and check-out (15: a billable visit)",
    )
    example = Example("eldercare", "jianghan-sunshine", __file__, parser)
    year = date.today().year  # ages are whole years; 15 June keeps each in its band all year

    # The operator enrols the elders with their programmes; the scene lists nobody: the age
    # band (from the ID number's birth date) and the programme flags travel in the code.
    meals = example.enrol("周秀英", birth=date(year - 72, 6, 15), programmes=["meal_subsidy"])
    allowance = ["meal_subsidy", "low_income"]
    poorer = example.enrol("孙建国", birth=date(year - 82, 6, 15), programmes=allowance)
    not_enrolled = example.enrol("吴桂兰", birth=date(year - 68, 6, 15))
    visited = example.enrol("郑淑华", birth=date(year - 78, 6, 15), programmes=["home_care"])
    waiting = example.enrol("黄德明", birth=date(year - 85, 6, 15), programmes=["home_care"])
    data = example.scene_data()
    local = datetime.now(UTC) + timedelta(minutes=data["utc_offset_minutes"])
    minute = local.hour * 60 + local.minute
    # The scans take a few seconds; five minutes' margin keeps them all in one window.
    windows = data["meal_windows"]
    serving = any(minutes(w["start"]) <= minute < minutes(w["end"]) - 5 for w in windows)
    if not serving and not example.args.keep_hours:
        meal = "breakfast" if local.hour < 10 else "lunch" if local.hour < 16 else "dinner"
        print(
            f"note: it is {local:%H:%M} at the canteen, outside its meal windows; this run "
            f"serves one all-day {meal} so that the scans show the subsidy rules (with "
            "--keep-hours every meal is denied 'outside_meal_hours')"
        )
        data["meal_windows"] = [{"name": meal, "start": "00:00", "end": "23:59"}]
    example.put_scene(data)

    pad = example.provision("canteen-pad")
    example.scan(
        pad,
        [
            ("72-year-old, meal subsidy", example.code(meals)),
            ("82-year-old, meal subsidy and 低保", example.code(poorer)),
            ("68-year-old, not enrolled", example.code(not_enrolled)),
            ("the 72-year-old again, same meal", example.code(meals)),
        ],
        "--option",
        "mode=canteen",
    )

    # A caregiver's phone: its own terminal and journal (one caregiver, one journal).
    phone = example.provision("caregiver-phone")
    home_care = ("--option", "mode=home_care")
    example.scan(
        phone,
        [
            ("arrives at 郑淑华's home", example.code(visited)),
            ("scans 黄德明 before checking out", example.code(waiting)),
        ],
        *home_care,
    )
    if example.args.visit_minutes:
        print(f"(the visit lasts {example.args.visit_minutes} minutes)")
        time.sleep(example.args.visit_minutes * 60)
    else:
        print("(a live run cannot move the clock: the check-out follows within seconds)")
    example.scan(phone, [("leaves 郑淑华's home", example.code(visited))], *home_care)
    example.finish()


if __name__ == "__main__":
    main()
