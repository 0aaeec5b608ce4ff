"""The employment part of ``idcode demo`` (docs/scenes/employment.md): a job fair whose stands
check citizens in offline and the organiser's count per stand from the uploaded events, and
the social insurance bureau's benefits kiosk, online, with the citizens' consent.

``idcode.demo.city`` calls these functions at its steps: ``set_up_fair`` before the terminals
sync, ``check_in`` while they are offline, ``benefits_kiosk`` online, ``count_per_stand``
after the upload.
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any

from idcode.errors import ServiceError
from idcode.terminal.identity import public_jwk_of

if TYPE_CHECKING:
    from idcode.demo.city import Citizen, Demo

FAIR = "autumn-job-fair"
FAIR_OFFSET = timedelta(hours=8)  # the fair's local days (the scene data's default UTC+8)
STANDS = {
    "a-01": "东湖高新科技有限公司",
    "a-02": "江城物流集团",
    "b-07": "长江医疗器械厂",  # no terminal in the demo: its count is 0
}
#: The stands that have a terminal in the demo, by the demo table's label.
STAND_GATES = {"a-01": "job fair a-01", "a-02": "job fair a-02"}
VISITORS_PER_STAND = 24
AGAIN = 3  # visitors who scan at a stand a second time
TOO_YOUNG_OR_OLD = 3

BUREAU = "武汉市人力资源和社会保障局"
PURPOSE = "benefit_eligibility"
ATTRIBUTES = ["programmes", "residency"]
#: The kiosk's three citizens, enrolled for it: their programmes (as the API names them).
KIOSK_CITIZENS: tuple[tuple[str, ...], ...] = (("low_income", "disability"), ("veteran",), ())
#: Each benefit the kiosk shows and the programme flag that makes a citizen eligible.
BENEFITS = {
    "minimum living allowance": "low_income",
    "disability allowances": "disability",
    "veterans' benefits": "veteran",
}


def set_up_fair(demo: Demo) -> None:
    """The fair's scene data (today and tomorrow, all day: the demo may cross midnight) and a
    terminal at two of its three stands."""
    today = (datetime.now(UTC) + FAIR_OFFSET).date()
    document = {
        "days": [today.isoformat(), (today + timedelta(days=1)).isoformat()],
        "opens_at": "00:00",
        "closes_at": "24:00",
        "stands": {stand: {"employer": employer} for stand, employer in STANDS.items()},
    }
    demo.city.call("PUT", f"/v1/scenes/employment/{FAIR}", document)
    for stand, label in STAND_GATES.items():
        demo.terminal(label, "employment", FAIR, stand=stand)


def check_in(demo: Demo, citizens: list[Citizen]) -> None:
    """Offline: working-age citizens check in at each stand, some of them twice
    (``already_checked_in``), and minors and seniors are refused (``not_working_age``)."""
    working = [c for c in citizens if 18 <= c.age < 60]
    others = [c for c in citizens if c.age < 17 or c.age > 61]  # clear of the band edges
    for label in STAND_GATES.values():
        gate = demo.gates[label]
        visitors = demo.chance.sample(working, min(VISITORS_PER_STAND, len(working)))
        for citizen in visitors:
            gate.scan(demo.city.code(citizen))
        for citizen in visitors[:AGAIN]:
            gate.scan(demo.city.code(citizen))  # already_checked_in
        for citizen in demo.chance.sample(others, min(TOO_YOUNG_OR_OLD, len(others))):
            gate.scan(demo.city.code(citizen))  # not_working_age


def count_per_stand(demo: Demo) -> bool:
    """After the upload: the organiser's count per stand, from the events the service holds
    (admitted check-ins, by the stand each names), against the stands' own journals. Prints
    one line; returns whether they agree."""
    counted: Counter[str] = Counter()
    for label in STAND_GATES.values():
        terminal_id = demo.gates[label].runtime.identity.id
        # One page: a demo stand has far fewer than 1,000 check-ins.
        events = demo.city.call("GET", f"/v1/events?terminal_id={terminal_id}&reason=ok&limit=1000")
        for event in events:
            result = event["scene_result"]
            if event["valid"] and result.get("action") == "check_in":
                counted[str(result.get("stand"))] += 1
    journaled = Counter(
        str(entry.result.get("stand"))
        for label in STAND_GATES.values()
        for entry in demo.gates[label].entries
        if entry.admitted
    )
    agree = all(counted[stand] == journaled[stand] for stand in STANDS)
    listed = ", ".join(f"{stand} {counted[stand]}" for stand in STANDS)
    demo.say(
        f"job fair {FAIR}: the organiser counts check-ins per stand from the service's events: "
        f"{listed}" + (" (as the stands counted)" if agree else "; MISMATCH with the stands")
    )
    return agree


def benefits_kiosk(demo: Demo) -> bool:
    """Online: the bureau's kiosk identifies three citizens with their consent (programmes and
    residency only) and shows their eligibility; a code shown twice and one without consent
    are refused. Prints one line; returns whether every check held."""
    # The demo's module, which imports this one.
    from idcode.demo.city import Citizen, party_key, party_token

    city = demo.city
    key = party_key(demo.city.settings)
    bureau = city.call(
        "POST",
        "/v1/relying-parties",
        {
            "name": BUREAU,
            "sector": "social_insurance",
            "purposes": [PURPOSE],
            "attributes": ATTRIBUTES,
            "public_jwk": public_jwk_of(key),
        },
    )

    def identify(code: str) -> dict[str, Any] | str:
        """The kiosk's call: the identification, or the reason it was refused."""
        body = {"code": code, "purpose": PURPOSE, "counter": "kiosk-1"}
        try:
            answer: dict[str, Any] = city.call(
                "POST", "/v1/identify", body, token=party_token(bureau["id"], key)
            )
        except ServiceError as exc:
            return exc.reason
        return answer

    failed: list[str] = []
    eligible: Counter[str] = Counter()
    subjects: set[str] = set()
    first_code = ""
    citizens: list[Citizen] = []
    for number, programmes in enumerate(KIOSK_CITIZENS):
        birth = date(datetime.now(UTC).year - 40, 6, 15)
        citizen = Citizen(city.new_id_number(birth), programmes=programmes)
        card = city.call(
            "POST",
            "/v1/cards",
            {
                "id_number": citizen.id_number,
                "name": f"居民K{number:03d}",
                "residency": "registered",
                "programmes": list(programmes),
            },
        )
        citizen.card_id = card["id"]
        citizens.append(citizen)
        disclose = {"to": bureau["id"], "attributes": ATTRIBUTES, "purpose": PURPOSE}
        token = city.citizen_token(citizen)
        code = city.call("POST", "/v1/codes", {"disclose": disclose}, token=token)["code"]
        first_code = first_code or code
        answer = identify(code)
        if not isinstance(answer, dict) or sorted(answer["attributes"]) != sorted(ATTRIBUTES):
            failed.append(f"identification {number + 1}")
            continue
        disclosed = set(answer["attributes"]["programmes"])
        if disclosed != set(programmes):
            failed.append(f"citizen {number + 1}'s programmes")
        subjects.add(answer["subject"])
        eligible.update(benefit for benefit, flag in BENEFITS.items() if flag in disclosed)
    refusals = []
    for code, expected in ((first_code, "code_used"), (city.code(citizens[-1]), "no_consent")):
        refused = identify(code)
        refusals.append(refused if isinstance(refused, str) else "identified")
        if refused != expected:
            failed.append(f"a code that should be {expected} was {refusals[-1]}")
    if len(subjects) != len(KIOSK_CITIZENS):
        failed.append("the citizens did not get a subject each")
    record = city.call("GET", f"/v1/relying-parties/{bureau['id']}/disclosures")
    if len(record) != len(subjects):
        failed.append(f"the bureau's record holds {len(record)} identifications")
    shown = ", ".join(f"{benefit} {eligible[benefit]}" for benefit in BENEFITS)
    demo.say(
        f"benefits kiosk kiosk-1: {len(subjects)} of {len(KIOSK_CITIZENS)} identified with "
        f"consent (programmes and residency only; eligible: {shown}); refused: "
        f"{', '.join(refusals)}; the bureau's record holds {len(record)}"
        + (f"; CHECK FAILED: {', '.join(failed)}" if failed else "")
    )
    return not failed
