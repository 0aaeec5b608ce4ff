"""A supermarket's two tills against a development service: each asks whether the customer
gets a resident, senior or programme discount (yes or no, and how much), within one
discounted purchase per customer per day; after the tills upload their journals, the city's
settlement file for the shop and day is fetched and printed. See README.md."""

from __future__ import annotations

import argparse
import json
import sys
import time
import urllib.request
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.error import HTTPError, URLError

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # examples/, for terminal_common
from terminal_common import MAX_ANSWER_BYTES, Example

SITE = "riverside-market"
CHINA = timedelta(hours=8)  # scene.json keeps the default utc_offset_minutes, 480


def born(years_ago: int) -> date:
    """A birth date that makes the customer ``years_ago`` (or one less) years old today."""
    today = datetime.now(UTC).date()
    return date(today.year - years_ago, 6, 15)


def settlement(example: Example, day: date, fmt: str) -> str:
    """The shop's settlement file of ``day`` (GET /v1/settlements/merchant/<site>/<day>)."""
    path = f"/v1/settlements/merchant/{SITE}/{day.isoformat()}?format={fmt}"
    # The URL is the --server the user gave, checked to be http(s) by Example.
    request = urllib.request.Request(  # noqa: S310
        example.server + path, headers={"Authorization": f"Bearer {example.operator}"}
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
            text: str = response.read(MAX_ANSWER_BYTES).decode("utf-8")
            return text
    except HTTPError as exc:
        sys.exit(f"GET {path}: {exc.code} {exc.read(2000).decode(errors='replace')}")
    except (URLError, OSError, UnicodeDecodeError) as exc:
        sys.exit(f"GET {path}: no settlement file ({type(exc).__name__})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    example = Example("merchant", SITE, __file__, parser)

    # The operator enrols the customers and records which discounts the shop takes part in.
    senior = example.enrol("王秀英", born(72), residency="registered")
    visitor = example.enrol("李建国", born(67), residency="non_resident")
    low_income = example.enrol("刘芳", born(36), residency="registered", programmes=["low_income"])
    permit = example.enrol("陈晨", born(29), residency="permit")
    example.put_scene(example.scene_data())

    # Two tills with their own journals: till-1 grants the best discount that applies,
    # till-2 has a "resident discount" key (discount=resident).
    till_1 = example.provision("till-1")
    till_2 = example.provision("till-2")
    example.scan(
        till_1,
        [
            ("72-year-old registered resident", example.code(senior)),
            ("67-year-old from another city", example.code(visitor)),
            ("36-year-old resident on 低保", example.code(low_income)),
            ("29-year-old with a residence permit", example.code(permit)),
            ("the 72-year-old again, same till", example.code(senior)),
        ],
        "--journal",
        str(example.workdir / "terminals" / "till-1.sqlite3"),
    )
    # The settlement takes a customer's discounts in the order of their times, which
    # journals keep to the second (a tie goes by event id): the 72-year-old reaches the
    # other till at least a second after the first discount, as any real customer would.
    time.sleep(1.0 - time.time() % 1.0)
    example.scan(
        till_2,
        [
            ("the 72-year-old at the other till", example.code(senior)),
            ("29-year-old with a residence permit", example.code(permit)),
        ],
        "--journal",
        str(example.workdir / "terminals" / "till-2.sqlite3"),
        "--option",
        "discount=resident",
    )

    # The tills uploaded before they exited: the city's settlement with the shop for today.
    today = (datetime.now(UTC) + CHINA).date()
    as_csv = settlement(example, today, "csv")
    print(f"settlement merchant-{SITE}-{today.isoformat()}.csv:")
    print("    " + as_csv.rstrip("\r\n").replace("\r\n", "\n    "))
    records: list[dict[str, Any]] = [
        json.loads(line) for line in settlement(example, today, "jsonl").splitlines()
    ]
    total = records[-1]
    print(
        f"the city reimburses {total['reimbursed_fen'] / 100:.2f} yuan for "
        f"{total['reimbursed_uses']} discounts; {total['over_cap']} over the daily cap "
        "(granted by a till that could not see the other's journal) is the shop's"
    )
    example.finish(settlement=records, settlement_csv=as_csv)


if __name__ == "__main__":
    main()
