"""Two buses of one operator against a development service: passengers board with their fare
(full, free at 65+ and with a disability, half at 60-64, student), a code shown twice and a
passenger boarding again are refused, also after a validator restart; the buses upload their
journals and the operator fetches the day's clearing file, where the transfer between the two
buses, which neither door could see, is settled. See README.md."""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
import urllib.request
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.error import HTTPError, URLError

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # examples/, for terminal_common
from terminal_common import MAX_ANSWER_BYTES, Example


def clearing_file(example: Example, day: date, fmt: str) -> str:
    """The operator's clearing file of ``day`` (GET /v1/settlements/...), as text."""
    path = f"/v1/settlements/{example.scene}/{example.site}/{day.isoformat()}?format={fmt}"
    request = urllib.request.Request(  # noqa: S310 (the --server URL, checked to be http(s))
        example.server + path, headers={"Authorization": f"Bearer {example.operator}"}
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
            text: str = response.read(MAX_ANSWER_BYTES).decode()
            return text
    except HTTPError as exc:
        sys.exit(f"GET {path}: {exc.code} {exc.read(2000).decode(errors='replace')}")
    except (URLError, OSError, UnicodeDecodeError) as exc:
        sys.exit(f"GET {path}: {exc}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    example = Example("transport", "city-bus", __file__, parser)
    year = date.today().year  # ages are whole years; 15 June keeps each in its band all year

    # The city enrols the passengers (the ID number holds the birth date, hence the age band;
    # the programmes are the card's); the operator uploads its tariff (scene.json).
    commuter = example.enrol("王芳", birth=date(year - 34, 6, 15))
    elder = example.enrol("李秀英", birth=date(year - 68, 6, 15))
    senior = example.enrol("张建国", birth=date(year - 62, 6, 15))
    student = example.enrol("刘小明", birth=date(year - 15, 6, 15), programmes=["student"])
    disabled = example.enrol("陈刚", birth=date(year - 45, 6, 15), programmes=["disability"])
    data = example.scene_data()
    example.put_scene(data)
    offset = timedelta(minutes=data.get("utc_offset_minutes", 480))
    day = (datetime.now(UTC) + offset).date()
    # The day's file may already hold earlier runs' boardings: this run checks what it adds.
    before = json.loads(clearing_file(example, day, "jsonl").splitlines()[-1])

    # Two buses, each with its validator and its own journal: bus 1001 runs line 1, bus 2002
    # line 2. A validator on another line, or none, refuses to start.
    bus_1001 = example.provision("bus-1001")
    bus_2002 = example.provision("bus-2002")

    first_code = example.code(commuter)
    example.scan(
        bus_1001,
        [
            ("commuter boards line 1", first_code),
            ("the same code again", first_code),
            ("commuter again, a fresh code (for a companion)", example.code(commuter)),
            ("68-year-old", example.code(elder)),
            ("62-year-old", example.code(senior)),
            ("student", example.code(student)),
            ("passenger with a disability", example.code(disabled)),
        ],
        "--option",
        "line=1",
    )
    example.scan(
        bus_2002,
        [
            ("commuter changes to line 2", example.code(commuter)),
            ("student changes to line 2", example.code(student)),
        ],
        "--option",
        "line=2",
    )
    print("(bus 1001's validator restarts, as after a power cut)")
    example.scan(
        bus_1001, [("the commuter's first code once more", first_code)], "--option", "line=1"
    )

    # Each validator uploaded its journal before it stopped: the day's clearing file is there.
    as_csv = clearing_file(example, day, "csv")
    print(f"clearing file {example.scene}-{example.site}-{day}.csv:")
    print(as_csv, end="")
    records = [json.loads(line) for line in clearing_file(example, day, "jsonl").splitlines()]
    rows = list(csv.reader(io.StringIO(as_csv)))
    same = rows[-1][2:] == [str(records[-1][column]) for column in rows[0][2:]]  # CSV = JSON Lines
    added = {name: records[-1][name] - before[name] for name in ["subjects", *rows[0][2:]]}
    boardings = [d for d in example.decisions if d["admitted"]]
    door = sum(d["result"]["fare"] for d in boardings)
    agrees = same and added["boardings"] == len(boardings) and added["door_fares"] == door
    print(
        f"this run: {added['boardings']} boardings by {added['subjects']} passengers: the doors "
        f"charged {door / 100:.2f} yuan, the operator is owed {added['fares'] / 100:.2f} yuan "
        f"(transfer discounts {added['transfer_discounts'] / 100:.2f}); "
        + ("the file agrees with the journals" if agrees else "MISMATCH with the journals")
    )
    clearing: dict[str, Any] = {"day": day.isoformat(), "records": records, "added": added}
    example.finish(clearing=clearing)
    if not agrees:
        sys.exit(1)


if __name__ == "__main__":
    main()
