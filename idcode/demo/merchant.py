"""The demo's merchants (商业应用): a supermarket and a pharmacy, each its own site with its own
subjects. Their tills grant discounts offline, with denials of their own (``not_eligible``,
``daily_cap_reached``); after the upload the demo fetches each merchant's settlement file and
checks it against the tills' journals, and that the two files share no customer."""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any

from idcode.terminal.client import request

if TYPE_CHECKING:
    from idcode.demo.city import Citizen, Demo, Gate

SUPERMARKET, PHARMACY = "zhongshan-supermarket", "hanzheng-pharmacy"
SUPERMARKET_TILL, PHARMACY_TILL = "supermarket till", "pharmacy till"
SITES = {SUPERMARKET_TILL: SUPERMARKET, PHARMACY_TILL: PHARMACY}
UTC_OFFSET = timedelta(minutes=480)  # the scene data's default

SCENE_DATA: dict[str, dict[str, Any]] = {
    SUPERMARKET: {
        "discounts": [
            {"name": "senior", "age_from": "age_60_64", "amount_fen": 300, "funded_by": "city"},
            {"name": "student", "programmes": ["student"], "amount_fen": 200, "funded_by": "city"},
            {"name": "resident", "residency": "registered", "percent": 5, "funded_by": "merchant"},
        ],
        "daily_uses": 1,
    },
    PHARMACY: {
        "discounts": [
            {"name": "senior", "age_from": "age_65_69", "amount_fen": 500, "funded_by": "city"}
        ],
        "daily_uses": 2,
    },
}


def setup(demo: Demo) -> None:
    """Each merchant's discounts, and a till at each: the supermarket's grants the first
    discount that applies, the pharmacy's asks for its senior discount."""
    for site, document in SCENE_DATA.items():
        demo.city.call("PUT", f"/v1/scenes/merchant/{site}", document)
    demo.terminal(SUPERMARKET_TILL, "merchant", SUPERMARKET)
    demo.terminal(PHARMACY_TILL, "merchant", PHARMACY, discount="senior")


def scan(demo: Demo, citizens: list[Citizen]) -> None:
    """Offline: shoppers at both merchants, some of them at both, some back for a second
    discount the same day (over the supermarket's cap of 1, the pharmacy's of 2)."""
    supermarket, pharmacy = demo.gates[SUPERMARKET_TILL], demo.gates[PHARMACY_TILL]
    shoppers = demo.chance.sample(citizens, min(40, len(citizens)))
    for citizen in shoppers:
        supermarket.scan(demo.city.code(citizen))  # a discount, or not_eligible
    granted = [c for c, e in zip(shoppers, supermarket.entries, strict=True) if e.admitted]
    for citizen in granted[:6]:
        supermarket.scan(demo.city.code(citizen))  # daily_cap_reached
    both = shoppers[:15]  # the same customers at the pharmacy
    others = [c for c in citizens if c not in shoppers]
    for citizen in both + demo.chance.sample(others, min(10, len(others))):
        pharmacy.scan(demo.city.code(citizen))  # senior, or not_eligible
    seniors = [c for c in both if c.age >= 65][:3]
    for _ in range(2):
        for citizen in seniors:
            pharmacy.scan(demo.city.code(citizen))  # a second discount, then daily_cap_reached


def _local_day(at: int) -> date:
    return (datetime.fromtimestamp(at, UTC) + UTC_OFFSET).date()


def _settlement(demo: Demo, site: str, day: date) -> list[dict[str, Any]]:
    answer = request(
        f"{demo.city.url}/v1/settlements/merchant/{site}/{day.isoformat()}",
        headers={"Authorization": f"Bearer {demo.city.operator}"},
        timeout=30,
    )
    return [json.loads(line) for line in answer.body.decode().splitlines()]


def _agrees(demo: Demo, gate: Gate) -> tuple[bool, set[str], Counter[str]]:
    """Whether the site's settlement files agree with its till's journal: a row for every
    subject it saw, its discounts counted, none over the cap (one till, one journal), the
    city-funded amounts reimbursed. Also the files' subjects and totals."""
    site = SITES[gate.label]
    subjects: set[str] = set()
    totals: Counter[str] = Counter()
    expected: Counter[str] = Counter()
    seen: set[str] = set()
    for entry in gate.entries:
        if entry.subject is not None:
            seen.add(entry.subject)
        if entry.admitted:
            expected["uses"] += 1
            if entry.result.get("funded_by") == "city":
                amount = entry.result.get("amount_fen")
                expected["reimbursed_uses"] += 1
                expected["reimbursed_fen"] += amount if isinstance(amount, int) else 0
    for day in sorted({_local_day(entry.at) for entry in gate.entries}):
        records = _settlement(demo, site, day)
        subjects |= {r["subject"] for r in records if r["record"] == "subject"}
        total = records[-1]
        for column in ("uses", "over_cap", "reimbursed_uses", "reimbursed_fen"):
            totals[column] += total[column]
    agrees = subjects == seen and all(
        totals[c] == expected[c] for c in ("uses", "over_cap", "reimbursed_uses", "reimbursed_fen")
    )
    return agrees, subjects, totals


def settle(demo: Demo, citizens: list[Citizen]) -> bool:
    """After the upload: each merchant's settlement file against its till's journal, and no
    subject in both merchants' files. Prints one line; True when every check holds."""
    supermarket, pharmacy = demo.gates[SUPERMARKET_TILL], demo.gates[PHARMACY_TILL]
    market_ok, market_subjects, market_totals = _agrees(demo, supermarket)
    pharmacy_ok, pharmacy_subjects, pharmacy_totals = _agrees(demo, pharmacy)
    shared = market_subjects & pharmacy_subjects
    both = min(15, len(citizens))
    fen = market_totals["reimbursed_fen"] + pharmacy_totals["reimbursed_fen"]
    failed = [
        what
        for what, bad in (
            (f"{SUPERMARKET}'s file differs from its journal", not market_ok),
            (f"{PHARMACY}'s file differs from its journal", not pharmacy_ok),
            (f"{len(shared)} subjects in both merchants' files", bool(shared)),
        )
        if bad
    ]
    uses = (market_totals["uses"], pharmacy_totals["uses"])
    reimbursed = market_totals["reimbursed_uses"] + pharmacy_totals["reimbursed_uses"]
    demo.say(
        f"merchants: the settlement files agree with the tills' journals ({SUPERMARKET} "
        f"{uses[0]} discounts, {PHARMACY} {uses[1]}; the city reimburses {reimbursed} of them, "
        f"{fen / 100:.2f} yuan); {both} customers shopped at both, and the files share no subject"
        if not failed
        else f"merchants: CHECK FAILED: {', '.join(failed)}"
    )
    return not failed
