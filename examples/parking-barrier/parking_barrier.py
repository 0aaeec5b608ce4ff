"""A car park with an entry lane and an exit lane sharing one journal, against a development
service: cars enter, leave and pay by tariff (standard, registered resident, monthly permit);
a second entry and an exit without an entry are refused. See README.md."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # examples/, for terminal_common
from terminal_common import Example


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--stay-minutes",
        type=float,
        default=0,
        help="wait this long between the entries and the exits (16: past the free minutes)",
    )
    example = Example("parking", "riverside-p1", __file__, parser)

    # The operator enrols the drivers and uploads the tariff and the permit list (scene.json).
    visitor = example.enrol("张伟", residency="non_resident")
    resident = example.enrol("刘洋", residency="registered")
    permit_holder = example.enrol("陈静", residency="permit")
    stranger = example.enrol("赵磊", residency="registered")
    example.put_scene(example.scene_data(permit_holder=permit_holder))

    # Two lanes, two terminals, one journal: the exit lane pairs exits with the entry lane's
    # entries through it.
    entry_lane = example.provision("entry-lane")
    exit_lane = example.provision("exit-lane")
    journal = ("--journal", str(example.workdir / "terminals" / "journal.sqlite3"))

    example.scan(
        entry_lane,
        [
            ("visitor's car enters", example.code(visitor)),
            ("resident's car enters", example.code(resident)),
            ("permit holder's car enters", example.code(permit_holder)),
            ("visitor scans at the entry again", example.code(visitor)),
        ],
        *journal,
        "--option",
        "lane=entry",
    )
    if example.args.stay_minutes:
        print(f"(parked for {example.args.stay_minutes} minutes)")
        time.sleep(example.args.stay_minutes * 60)
    else:
        print("(a live run cannot move the clock: the cars leave within the free minutes)")
    example.scan(
        exit_lane,
        [
            ("visitor's car leaves", example.code(visitor)),
            ("resident's car leaves", example.code(resident)),
            ("permit holder's car leaves", example.code(permit_holder)),
            ("a car that never entered", example.code(stranger)),
        ],
        *journal,
        "--option",
        "lane=exit",
    )
    example.finish()


if __name__ == "__main__":
    main()
