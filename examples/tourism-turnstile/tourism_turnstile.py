"""A scenic spot's entry turnstile against a development service: each visitor is admitted
with the cheapest ticket class their code gives (senior, resident, standard, ...) and its
price, once a day; a second entry the same day is refused. See README.md."""

from __future__ import annotations

import argparse
import sys
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
        help="keep the admission hours of scene.json even when the site is closed now",
    )
    example = Example("tourism", "yellow-crane-tower", __file__, parser)
    year = date.today().year  # ages are whole years; 15 June keeps each in its band all year

    # The operator enrols the visitors (the ID number holds the birth date, hence the age
    # band) and uploads the tariff (scene.json). The scene lists nobody.
    senior = example.enrol("何玉兰", birth=date(year - 62, 6, 15), residency="registered")
    elder = example.enrol("高志明", birth=date(year - 71, 6, 15), residency="non_resident")
    resident = example.enrol("林晓", birth=date(year - 40, 6, 15), residency="registered")
    tourist = example.enrol("马骏", birth=date(year - 35, 6, 15), residency="non_resident")
    data = example.scene_data()
    local = datetime.now(UTC) + timedelta(minutes=data["utc_offset_minutes"])
    minute = local.hour * 60 + local.minute
    # The scans take a few seconds; five minutes' margin keeps them all on one side.
    open_now = minutes(data["opens_at"]) <= minute < minutes(data["closes_at"]) - 5
    if not open_now and not example.args.keep_hours:
        print(
            f"note: it is {local:%H:%M} at the site, outside its admission hours "
            f"{data['opens_at']}-{data['closes_at']}; this run admits all day so that the "
            "scans show the ticket rules (with --keep-hours every scan is denied 'closed')"
        )
        data.update(opens_at="00:00", closes_at="24:00")
    example.put_scene(data)
    turnstile = example.provision("east-gate-1")

    example.scan(
        turnstile,
        [
            ("62-year-old registered resident", example.code(senior)),
            ("71-year-old from another city", example.code(elder)),
            ("40-year-old registered resident", example.code(resident)),
            ("35-year-old from another city", example.code(tourist)),
            ("the 62-year-old again, same day", example.code(senior)),
        ],
    )
    example.finish()


if __name__ == "__main__":
    main()
