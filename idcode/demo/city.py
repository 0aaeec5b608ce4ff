"""``idcode demo``: a small city on this machine, end to end.

It starts the service (SQLite, in-process state, fresh keys, all in a scratch directory),
enrols a few hundred citizens, registers one terminal per scene (the car park has an entry
and an exit lane sharing one journal) and a hospital as a relying party, whose registration
desk identifies a few citizens with their consent and links them for its kiosk, and syncs
the terminals' trust. Then the network goes away: the terminals decide offline on a few
hundred codes the citizens fetched from the service, some of them expired, revoked,
replayed, for the wrong community or over a daily limit, two shops' tills grant discounts
(idcode.demo.merchant), two buses' validators charge fares (idcode.demo.transport), a job
fair's stands check job-seekers in (idcode.demo.employment), and the hospital's kiosk tells
its software whom it recognised. Meanwhile, online, a service hall's counter identifies a few
citizens with their consent, and so does the social insurance bureau's benefits kiosk; their
checks count too. The network returns, the journals upload, and the demo prints a table per
scene and checks that the service holds exactly the events the terminals journaled, that the
merchants' and the bus operator's files agree with their journals, and that a job fair
organiser's count per stand from the events is the stands' own.
A museum's gates admit by timed-entry slot and a library's loan desk lends to its members
(idcode.demo.culture); the library's loan software must find every member it bound.
"""

from __future__ import annotations

import random
import secrets
import shutil
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, TextIO

from idcode.demo import culture, employment, merchant, transport
from idcode.errors import IdcodeError, ServiceError
from idcode.profiles import ProfileName
from idcode.reasons import Reason
from idcode.service.auth import dev_token
from idcode.service.settings import Settings
from idcode.terminal.client import request
from idcode.terminal.identity import (
    TerminalIdentity,
    TerminalKey,
    key_algorithm,
    new_terminal_key,
    public_jwk_of,
)
from idcode.terminal.journal import JournalEntry
from idcode.terminal.runtime import TerminalRuntime
from idcode.terminal.scanners import decision_line
from idcode.terminaltoken import relying_party_token
from idcode.testing import random_id_number

STARTUP_SECONDS = 30
COMMUNITY, OTHER_COMMUNITY = "garden-court", "river-view"
# The screenshot scenario: a code shown again this long after it was fetched (the gate's
# clock is moved forward for that one scan; codes live 60 s plus 30 s of clock skew).
SCREENSHOT_AGE = 150


@contextmanager
def embedded_service(settings: Settings) -> Iterator[str]:
    """The service under uvicorn in a thread on a free loopback port; yields its URL.
    Migrates the database and creates the keys first, as ``idcode serve`` does."""
    import uvicorn

    from idcode.keystore import configured_key_store, initialise
    from idcode.service.api.app import create_app
    from idcode.service.database import upgrade

    upgrade(settings.sqlalchemy_url)
    # The first issuer key signs from a day ago: the demo shows scans of the last hours
    # (cars that came in, a caregiver's round) with the codes of those moments.
    initialise(
        configured_key_store(settings),
        int(time.time()) - 86_400,
        settings.issuer_key_days,
        settings.profile.issuer_algorithm,
        settings.profile.root_algorithm,
    )
    config = uvicorn.Config(
        create_app(settings), host="127.0.0.1", port=0, log_level="warning", access_log=False
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="idcode-service", daemon=True)
    thread.start()
    deadline = time.monotonic() + STARTUP_SECONDS
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            server.should_exit = True
            raise IdcodeError("the embedded service did not start")
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=15)


@dataclass
class Citizen:
    id_number: str
    card_id: str = ""
    programmes: tuple[str, ...] = ()
    resident_of_garden_court: bool = False

    @property
    def age(self) -> int:
        return datetime.now(UTC).year - int(self.id_number[6:10])


@dataclass
class Gate:
    """One terminal of the demo, with the captions of what was scanned there."""

    label: str
    runtime: TerminalRuntime
    entries: list[JournalEntry] = field(default_factory=list)

    def scan(self, code: str, *, later: int = 0) -> JournalEntry:
        self.runtime.clock = (lambda: time.time() + later) if later else time.time
        try:
            entry = self.runtime.scan(code)
        finally:
            self.runtime.clock = time.time
        self.entries.append(entry)
        return entry


class City:
    """The demo's service client: operators' and citizens' requests over HTTP."""

    def __init__(self, url: str, settings: Settings) -> None:
        self.url = url
        self.settings = settings
        self.operator = dev_token(settings, "demo-operator", roles=(settings.operator_role,))
        self.id_numbers: set[str] = set()

    def new_id_number(self, birth: date) -> str:
        """A made-up ID number for ``birth`` that no citizen of the demo has yet: a birth date
        leaves only 1,000 sequence numbers, and two citizens drawing the same one would make
        the second enrolment a 409 already_enrolled."""
        while (id_number := random_id_number(birth)) in self.id_numbers:
            pass
        self.id_numbers.add(id_number)
        return id_number

    def call(self, method: str, path: str, body: Any = None, token: str | None = None) -> Any:
        answer = request(
            self.url + path,
            method=method,
            body=body,
            headers={"Authorization": f"Bearer {token or self.operator}"},
            timeout=30,
        )
        return answer.json() if answer.body else None

    def citizen_token(self, citizen: Citizen) -> str:
        return dev_token(
            self.settings, f"citizen-{citizen.card_id[:8]}", id_number=citizen.id_number
        )

    def code(self, citizen: Citizen) -> str:
        code: str = self.call("POST", "/v1/codes", token=self.citizen_token(citizen))["code"]
        return code

    def code_later(self, citizen: Citizen, later: int) -> str:
        """The code the citizen's app would get ``later`` seconds from now (before now when
        negative). A demo cannot wait two hours for a car to leave, so this signs it as the
        service would then: the same card snapshot, the service's signing key for that
        moment, the same lifetime."""
        from sqlalchemy import select

        from idcode.issuer import mint_code
        from idcode.keystore import configured_key_store
        from idcode.service.cards import snapshot
        from idcode.service.database import make_engine, make_session_factory
        from idcode.service.models import CardRecord
        from idcode.service.pii import vault_for

        at = int(time.time()) + later
        engine = make_engine(self.settings.sqlalchemy_url)
        try:
            with make_session_factory(engine)() as session:
                record = session.scalars(
                    select(CardRecord).where(CardRecord.id == citizen.card_id)
                ).one()
                card = snapshot(
                    record, vault_for(self.settings), datetime.fromtimestamp(at, UTC)
                ).card()
        finally:
            engine.dispose()
        key = configured_key_store(self.settings).signing_key(at)
        code, _ = mint_code(
            card, key, prefix=self.settings.code_prefix, now=at, ttl=self.settings.code_ttl_seconds
        )
        return code


def _birth(chance: random.Random, age: int) -> date:
    today = datetime.now(UTC).date()
    return date(today.year - age, 1 + chance.randrange(12), 1 + chance.randrange(28))


def _enrol(city: City, chance: random.Random, count: int) -> list[Citizen]:
    """Enrol ``count`` citizens: a mix of ages, residencies and programmes."""
    citizens = []
    for number in range(count):
        age = chance.choice([4, 10, 15, 25, 34, 47, 58, 62, 66, 72, 81])
        programmes = []
        if age >= 60 and chance.random() < 0.7:
            programmes.append("meal_subsidy")
        if age >= 65 and chance.random() < 0.4:
            programmes.append("home_care")
        if 6 <= age < 23 and chance.random() < 0.5:
            programmes.append("student")
        citizen = Citizen(city.new_id_number(_birth(chance, age)), programmes=tuple(programmes))
        card = city.call(
            "POST",
            "/v1/cards",
            {
                "id_number": citizen.id_number,
                "name": f"居民{number:04d}",
                "residency": chance.choice(["registered"] * 3 + ["permit", "non_resident"]),
                "programmes": programmes,
            },
        )
        citizen.card_id = card["id"]
        citizens.append(citizen)
    return citizens


SCENE_DATA: dict[tuple[str, str], dict[str, Any]] = {
    ("parking", "east-lake-car-park"): {
        "unit_fee": 500,  # 5 yuan per started hour
        "unit_minutes": 60,
        "free_minutes": 0,
        "resident_unit_fee": 300,
        "daily_cap": 4000,
        "lost_ticket_fee": 4000,
    },
    ("tourism", "yellow-crane-tower"): {
        "prices": {
            "standard": 7000,
            "resident": 3500,
            "student": 3500,
            "child": 3500,
            "senior": 3500,
            "under_6": 0,
            "elder": 0,
        },
        "reentry": False,
        # daily_capacity: set per run, so that the last sixth of the day's visitors find it full
    },
    ("eldercare", "jianghan-street"): {"meals_per_day": 1, "meal_windows": []},
}


@dataclass
class Demo:
    city: City
    workdir: Path
    chance: random.Random
    out: TextIO
    root_jwk: dict[str, Any]
    gates: dict[str, Gate] = field(default_factory=dict)

    def say(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    def terminal(
        self,
        label: str,
        scene: str,
        site: str,
        *,
        journal: str | None = None,
        relying_party: str | None = None,
        **options: str,
    ) -> Gate:
        private_key = new_terminal_key(self.city.settings.profile.terminal_key_algorithm)
        body = {"scene": scene, "site": site, "public_jwk": public_jwk_of(private_key)}
        if relying_party is not None:
            body["relying_party"] = relying_party
        registered = self.city.call("POST", "/v1/terminals", body)
        identity = TerminalIdentity(
            registered["id"], scene, site, self.city.url, private_key, self.root_jwk
        )
        directory = self.workdir / "terminals" / label
        directory.mkdir(parents=True)
        runtime = TerminalRuntime(
            directory,
            identity,
            journal_path=self.workdir / "terminals" / journal if journal else None,
            options=options,
            # A deployment's terminals accept its crypto profile's code algorithms, as
            # 'idcode terminal run' does without --algorithms.
            algorithms=self.city.settings.profile.default_code_algorithms,
        )
        gate = Gate(label, runtime)
        self.gates[label] = gate
        return gate

    def visitor_pass(self, host: Citizen, community: str) -> str:
        until = datetime.now(UTC) + timedelta(hours=6)
        answer = self.city.call(
            "POST",
            "/v1/visitor-passes",
            {"community": community, "valid_until": until.isoformat()},
            token=self.city.citizen_token(host),
        )
        text: str = answer["pass"]
        return text


def _scenes(demo: Demo, citizens: list[Citizen]) -> dict[str, list[Citizen]]:
    """Scene data for every site, and the terminals; returns who is where."""
    chance, city = demo.chance, demo.city
    residents = citizens[: len(citizens) * 2 // 5]
    river_view = citizens[len(citizens) * 2 // 5 : len(citizens) // 2]
    for citizen in residents:
        citizen.resident_of_garden_court = True
    permit_holders = _some(chance, citizens, 10)
    for (scene, site), document in {
        ("community", COMMUNITY): {"residents": [f"card:{c.card_id}" for c in residents]},
        ("community", OTHER_COMMUNITY): {"residents": [f"card:{c.card_id}" for c in river_view]},
        **SCENE_DATA,
    }.items():
        if scene == "parking":
            document = {**document, "permits": [f"card:{c.card_id}" for c in permit_holders]}
        if scene == "tourism":
            document = {**document, "daily_capacity": max(1, _tourists(citizens) * 5 // 6)}
        city.call("PUT", f"/v1/scenes/{scene}/{site}", document)
    demo.terminal("community gate", "community", COMMUNITY)
    demo.terminal(
        "car park entry", "parking", "east-lake-car-park", journal="car-park.sqlite3", lane="entry"
    )
    demo.terminal(
        "car park exit", "parking", "east-lake-car-park", journal="car-park.sqlite3", lane="exit"
    )
    demo.terminal("tourism turnstile", "tourism", "yellow-crane-tower")
    demo.terminal("canteen pad", "eldercare", "jianghan-street", mode="canteen")
    demo.terminal("caregiver phone", "eldercare", "jianghan-street", mode="home_care")
    merchant.setup(demo)  # a supermarket's and a pharmacy's tills, each its own site
    employment.set_up_fair(demo)
    transport.setup(demo)
    return {"residents": residents, "river_view": river_view, **culture.setup(demo, citizens)}


def _scan_the_city(demo: Demo, citizens: list[Citizen], people: dict[str, list[Citizen]]) -> None:
    """The offline day: a few hundred scans across the scenes, with every kind of denial."""
    chance, city, gates = demo.chance, demo.city, demo.gates
    residents = people["residents"]
    others = [c for c in citizens if not c.resident_of_garden_court]

    community = gates["community gate"]
    for number, citizen in enumerate(residents):
        code = city.code(citizen)
        community.scan(code)
        if number % 12 == 0:
            community.scan(code)  # shown twice: replayed
    for citizen in _some(chance, others, 30):
        community.scan(city.code(citizen))  # not_resident
    for citizen in _some(chance, residents, 8):
        community.scan(city.code(citizen), later=SCREENSHOT_AGE)  # an old screenshot: expired
    for host in _some(chance, residents, 10):
        community.scan(demo.visitor_pass(host, COMMUNITY))  # a guest's pass: visitor
    for host in _some(chance, people["river_view"], 5):
        community.scan(demo.visitor_pass(host, OTHER_COMMUNITY))  # wrong_community

    entry, exit_ = gates["car park entry"], gates["car park exit"]
    drivers = _some(chance, citizens, 70)
    # The cars that leave now came in earlier: the service takes no event from its future,
    # so a demo that cannot wait for them moves their arrival back, not their departure on.
    leaving = drivers[10:60]
    stays = [chance.randrange(10, 300) * 60 for _ in leaving]
    for citizen, stay in zip(leaving, stays, strict=True):
        entry.scan(city.code_later(citizen, -stay), later=-stay)
    for citizen in drivers[:10] + drivers[60:]:
        entry.scan(city.code(citizen))
    for citizen in drivers[:5]:
        entry.scan(city.code(citizen))  # the barrier behind them was open: already_inside
    for citizen in leaving:
        exit_.scan(city.code(citizen))  # paid by the hour
    for citizen in _some(chance, [c for c in citizens if c not in drivers], 6):
        exit_.scan(city.code(citizen))  # tailgated in: no_entry

    turnstile = gates["tourism turnstile"]
    visitors = _some(chance, citizens, _tourists(citizens))
    for citizen in visitors:
        turnstile.scan(city.code(citizen))  # ticket classes, then capacity_reached
    for citizen in visitors[:10]:
        turnstile.scan(city.code(citizen))  # already_entered_today

    canteen, caregiver = gates["canteen pad"], gates["caregiver phone"]
    seniors = [c for c in citizens if c.age >= 60]
    for citizen in seniors:
        canteen.scan(city.code(citizen))  # a subsidised meal, or not_enrolled
    for citizen in [c for c in seniors if "meal_subsidy" in c.programmes][:10]:
        canteen.scan(city.code(citizen))  # a second meal: daily_limit_reached
    # A caregiver's round: one home at a time, with the way to the next home in between.
    # The round ended just now (the service takes no event from its future).
    visits, at = [], 0
    for citizen in [c for c in seniors if "home_care" in c.programmes][:4]:
        arrived = at
        at += chance.randrange(30, 120) * 60
        visits.append((citizen, arrived, at))
        at += 20 * 60
    for citizen, arrived, left in visits:
        arrived, left = arrived - at, left - at
        caregiver.scan(city.code_later(citizen, arrived), later=arrived)  # check_in at the door
        too_soon = arrived + 60
        caregiver.scan(city.code_later(citizen, too_soon), later=too_soon)  # visit_too_short
        caregiver.scan(city.code_later(citizen, left), later=left)  # check_out, billed
    for citizen in [c for c in seniors if "home_care" not in c.programmes][:3]:
        caregiver.scan(city.code(citizen))  # not_enrolled
    merchant.scan(demo, citizens)  # discounts, not_eligible, daily_cap_reached
    employment.check_in(demo, citizens)
    culture.scan(demo, citizens, people)


HOSPITAL = "协和医院"
KIOSK = "hospital kiosk"
DESK_PATIENTS = 8  # citizens the hospital's desk registers; the last one's record is closed
DESK_ATTRIBUTES = ["name", "id_number", "sex", "birth_date"]


@dataclass
class Hospital:
    """The demo's hospital: a relying party with its desk key, and its own records (subject ->
    patient number), which only its software holds; the service knows the links alone."""

    id: str
    key: TerminalKey
    patients: dict[str, str] = field(default_factory=dict)
    registered: list[Citizen] = field(default_factory=list)
    refusal: str = ""

    def token(self) -> str:
        """A new single-use token for one request of the desk."""
        return party_token(self.id, self.key)


def _hospital(demo: Demo) -> Hospital:
    """Register the hospital as a relying party, and its kiosk as the party's terminal."""
    key = party_key(demo.city.settings)
    party = demo.city.call(
        "POST",
        "/v1/relying-parties",
        {
            "name": HOSPITAL,
            "sector": "health",
            "purposes": ["registration"],
            "attributes": DESK_ATTRIBUTES,
            "public_jwk": public_jwk_of(key),
        },
    )
    demo.terminal(KIOSK, "hospital", "union-hospital", relying_party=party["id"])
    return Hospital(party["id"], key)


def _registration_desk(demo: Demo, hospital: Hospital, citizens: list[Citizen]) -> None:
    """Online, before the kiosk syncs: the desk identifies each citizen from a code with their
    consent, opens a patient record under the subject and links it. A consent code presented
    again is refused; the last record is closed again, and its link removed."""
    if not citizens:
        return
    city = demo.city
    identify: dict[str, Any] = {"purpose": "registration", "counter": "desk-1"}
    code = subject = ""
    for citizen in citizens:
        consent = {"to": hospital.id, "attributes": DESK_ATTRIBUTES, "purpose": "registration"}
        asked = city.call("POST", "/v1/codes", {"disclose": consent}, city.citizen_token(citizen))
        code = asked["code"]
        identified = city.call("POST", "/v1/identify", {**identify, "code": code}, hospital.token())
        subject = identified["subject"]
        hospital.patients[subject] = f"P{len(hospital.patients) + 1:06d}"
        city.call("PUT", f"/v1/links/{subject}", token=hospital.token())
        hospital.registered.append(citizen)
    try:
        city.call("POST", "/v1/identify", {**identify, "code": code}, hospital.token())
    except ServiceError as exc:
        hospital.refusal = exc.reason  # code_used: a consent code identifies once
    closed = subject
    city.call("DELETE", f"/v1/links/{closed}", token=hospital.token())
    del hospital.patients[closed]


def _hospital_kiosk(demo: Demo, hospital: Hospital, others: list[Citizen]) -> None:
    """Offline: the registered citizens at the kiosk (the closed record's holder among them),
    then citizens who never came to the desk."""
    kiosk = demo.gates[KIOSK]
    for citizen in hospital.registered + others:
        kiosk.scan(demo.city.code(citizen))


def _kiosk_software(demo: Demo, hospital: Hospital) -> bool:
    """The hospital's kiosk software on the kiosk's decision lines: each carries the
    hospital's subject, which its records map to a patient number. True when the kiosk
    admitted exactly the citizens with an open record."""
    kiosk = demo.gates[KIOSK]
    found, to_desk, agree = [], 0, True
    for entry in kiosk.entries:
        line = decision_line(entry, subject=kiosk.runtime.subject_in_lines)
        patient = hospital.patients.get(line.get("subject") or "")
        if line["admitted"] and patient is not None:
            found.append(patient)
        else:
            to_desk += 1
        agree &= line["admitted"] == (patient is not None)
    demo.say(
        f"{KIOSK}: the hospital's software found {len(found)} patients by the subject in the "
        f"kiosk's decisions ({', '.join(found[:3])}, ...) and sent {to_desk} to the desk"
        + ("" if agree else "; MISMATCH between the kiosk and the hospital's records")
    )
    return agree


def _some(chance: random.Random, people: list[Citizen], count: int) -> list[Citizen]:
    """``count`` of ``people`` at random (all of them when there are fewer)."""
    return chance.sample(people, min(count, len(people)))


def _tourists(citizens: list[Citizen]) -> int:
    return min(120, len(citizens) // 2)


def _table(demo: Demo) -> None:
    demo.say("")
    demo.say(f"{'terminal':<20}{'scans':>6}{'admitted':>10}  denied, by reason")
    for gate in demo.gates.values():
        admitted = sum(1 for e in gate.entries if e.admitted)
        actions = Counter(e.action for e in gate.entries if e.admitted and e.action)
        denied = Counter(e.reason for e in gate.entries if not e.admitted)
        reasons = ", ".join(f"{reason} {n}" for reason, n in denied.most_common()) or "-"
        demo.say(f"{gate.label:<20}{len(gate.entries):>6}{admitted:>10}  {reasons}")
        if actions:
            how = ", ".join(f"{action} {n}" for action, n in sorted(actions.items()))
            demo.say(f"{'':<36}admitted as: {how}")
        results = [e.result for e in gate.entries if e.admitted]
        for name in ("ticket", "tariff", "discount", "concession"):
            kinds = Counter(str(r[name]) for r in results if r.get(name) is not None)
            if kinds:
                listed = ", ".join(f"{kind} {n}" for kind, n in kinds.most_common())
                demo.say(f"{'':<36}{name}s: {listed}")
        for name in ("price", "fee", "fare", "subsidy", "amount_fen", "billable_minutes"):
            values = [v for r in results if isinstance(v := r.get(name), int)]
            if values:
                total = (
                    f"{sum(values) / 100:.2f} yuan" if name != "billable_minutes" else sum(values)
                )
                demo.say(f"{'':<36}{name}: {len(values)} totalling {total}")


def _algorithms_agree(demo: Demo) -> bool:
    """No terminal refused a code for its algorithm: the service and the terminals run one
    crypto profile (every code of the demo is the service's own)."""
    foreign = [
        gate.label
        for gate in demo.gates.values()
        if any(e.reason == Reason.UNSUPPORTED_ALG.value for e in gate.entries)
    ]
    if foreign:
        demo.say(f"CHECK FAILED: unsupported_alg at {', '.join(foreign)}")
    return not foreign


HALL_PURPOSE = "residence_certificate"
HALL_ATTRIBUTES = ["name", "id_number", "residency"]
# What the hall's visitors consent to: less than the hall may ask for, exactly that, and more
# (a birth date, which the hall may not ask for and so is never disclosed).
HALL_CONSENTS = (
    ["name", "id_number"],
    ["name", "id_number", "residency"],
    ["name", "id_number", "residency", "birth_date"],
)
HALL_VISITORS = 6


def party_key(settings: Settings) -> TerminalKey:
    """A relying party's counter key, of the deployment's crypto profile (SM2 under gm)."""
    return new_terminal_key(settings.profile.terminal_key_algorithm)


def party_token(party_id: str, key: TerminalKey) -> str:
    """A single-use request token of a relying party's counter, signed with its key's alg."""
    return relying_party_token(party_id, key, key_algorithm(key).jose_name)


def _service_hall(demo: Demo, citizens: list[Citizen]) -> bool:
    """A service hall's counter identifies a few citizens online, with their consent, and
    meets a code shown twice and one without consent (docs/scenes/servicehall.md). Prints
    one line; returns whether every check held."""
    city = demo.city
    key = party_key(city.settings)
    hall = city.call(
        "POST",
        "/v1/relying-parties",
        {
            "name": "江汉区政务服务中心",
            "sector": "government",
            "purposes": [HALL_PURPOSE],
            "attributes": HALL_ATTRIBUTES,
            "public_jwk": public_jwk_of(key),
        },
    )

    def identify(code: str) -> dict[str, Any] | str:
        """The counter's call: the identification, or the reason it was refused."""
        body = {"code": code, "purpose": HALL_PURPOSE, "counter": "window-3"}
        try:
            answer: dict[str, Any] = city.call(
                "POST", "/v1/identify", body, token=party_token(hall["id"], key)
            )
        except ServiceError as exc:
            return exc.reason
        return answer

    visitors = _some(demo.chance, citizens, HALL_VISITORS)
    if not visitors:
        demo.say("service hall window-3: no citizens to identify")
        return True
    failed: list[str] = []
    refusals: list[str] = []
    subjects: set[str] = set()
    tickets: list[str] = []
    for number, citizen in enumerate(visitors):
        consented = HALL_CONSENTS[number % len(HALL_CONSENTS)]
        disclose = {"to": hall["id"], "attributes": consented, "purpose": HALL_PURPOSE}
        token = city.citizen_token(citizen)
        issued = city.call("POST", "/v1/codes", {"disclose": disclose}, token=token)
        allowed = [name for name in HALL_ATTRIBUTES if name in consented]
        answer = identify(issued["code"])
        if (
            not isinstance(answer, dict)
            or issued["disclose"]["attributes"] != allowed
            or sorted(answer["attributes"]) != sorted(allowed)
            or answer["attributes"]["id_number"] != citizen.id_number
        ):
            failed.append(f"identification {number + 1}")
            continue
        subjects.add(answer["subject"])
        tickets.append(f"A{len(tickets) + 1:03d}")  # the counter's queue: per service and day
        if number == 0:
            again = identify(issued["code"])  # the same code again
            refusals.append(again if isinstance(again, str) else "identified")
            if again != "code_used":
                failed.append(f"a code shown twice was {refusals[-1]}")
    plain = identify(city.code(visitors[0]))
    refusals.append(plain if isinstance(plain, str) else "identified")
    if plain != "no_consent":
        failed.append(f"a code without consent was {refusals[-1]}")
    if len(subjects) != len(tickets):
        failed.append("two citizens got the same subject")
    record = city.call("GET", f"/v1/relying-parties/{hall['id']}/disclosures")
    if len(record) != len(tickets):
        failed.append(f"the hall's record holds {len(record)} identifications")
    own = city.call("GET", "/v1/me/disclosures", token=city.citizen_token(visitors[0]))
    if not own or own[0]["relying_party"]["id"] != hall["id"] or own[0]["counter"] != "window-3":
        failed.append("the citizen's own record does not list the hall")
    span = f"tickets {tickets[0]}-{tickets[-1]}" if tickets else "no tickets"
    demo.say(
        f"service hall window-3: {len(tickets)} of {len(visitors)} identified with consent "
        f"({span}, only consented and allowed attributes); refused: {', '.join(refusals)}; "
        f"the hall's record holds {len(record)}, the citizen's lists it"
        + (f"; CHECK FAILED: {', '.join(failed)}" if failed else "")
    )
    return not failed


def _server_events(city: City, terminal_id: str) -> list[str]:
    ids: list[str] = []
    since = ""
    while True:
        query = f"/v1/events?terminal_id={terminal_id}&limit=1000"
        page = city.call("GET", query + (f"&since={since}" if since else ""))
        fresh = [e["event_id"] for e in page if e["event_id"] not in set(ids)]
        ids += fresh
        if len(page) < 1000 or not fresh:
            return ids
        since = page[-1]["occurred_at"].replace("+", "%2B")


def run(
    out: TextIO,
    *,
    citizens: int,
    seed: int | None,
    workdir: Path | None,
    profile: ProfileName | None = None,
) -> int:
    """Run the demo; returns 0 when the service holds exactly the journaled events.
    ``profile``: the crypto profile, else IDCODE_CRYPTO_PROFILE's (standard by default)."""
    seed = secrets.randbelow(2**31) if seed is None else seed
    chance = random.Random(seed)
    scratch = workdir or Path(tempfile.mkdtemp(prefix="idcode-demo-"))
    settings = Settings(
        environment="development",
        keys_dir=scratch / "keys",
        data_dir=scratch / "data",
        database_url=None,
        redis_url=None,
        demo_data=False,
        rate_limit_per_minute=10_000,
    )
    if profile is not None:
        settings = settings.model_copy(update={"crypto_profile": profile})
    try:
        with embedded_service(settings) as url:
            return _run(url, settings, scratch, chance, out, citizens, seed, workdir is not None)
    finally:
        if workdir is None:
            shutil.rmtree(scratch, ignore_errors=True)


def _run(
    url: str,
    settings: Settings,
    scratch: Path,
    chance: random.Random,
    out: TextIO,
    count: int,
    seed: int,
    kept: bool,
) -> int:
    from idcode.keystore import configured_key_store

    city = City(url, settings)
    root = configured_key_store(settings).root_public_jwk()
    demo = Demo(city, scratch, chance, out, root)
    demo.say(f"idcode demo (seed {seed}): the service is up at {url}, data in {scratch}")
    if not kept:
        demo.say("(a scratch directory, removed at the end: --workdir keeps it)")
    code_algorithms = settings.profile.default_code_algorithms
    demo.say(
        f"crypto profile {settings.profile.name}: codes signed with "
        f"{settings.profile.issuer_algorithm.jose_name}, the terminals accept "
        f"{', '.join(alg.jose_name for alg in code_algorithms)}; trust bundles, status deltas "
        f"and terminal tokens signed with the root key (EdDSA)"
    )
    citizens = _enrol(city, chance, count)
    demo.say(f"enrolled {len(citizens)} citizens")
    people = _scenes(demo, citizens)
    hospital = _hospital(demo)

    # Codes fetched before their cards are revoked: held on phones, shown at the gates later.
    revoked = _some(chance, citizens, 12)
    held = [(citizen, city.code(citizen)) for citizen in revoked]
    for citizen in revoked:
        city.call("POST", f"/v1/cards/{citizen.card_id}/status", {"action": "revoke"})
    active = [c for c in citizens if c not in revoked]
    _registration_desk(demo, hospital, active[-DESK_PATIENTS:])
    demo.say(
        f"{HOSPITAL}: the registration desk identified {len(hospital.registered)} citizens "
        f"with their consent and linked their patient records (a consent code presented "
        f"again: {hospital.refusal}; one record closed and unlinked)"
    )
    for gate in demo.gates.values():
        gate.runtime.sync_once()
    demo.say(f"{len(demo.gates)} terminals registered and synced; {len(revoked)} cards revoked")

    for gate in demo.gates.values():
        gate.runtime.network.clear()
    demo.say("the terminals' network is down: they decide offline and journal")
    for citizen, code in held:
        gate = demo.gates[
            "community gate" if citizen.resident_of_garden_court else "tourism turnstile"
        ]
        gate.scan(code)  # revoked
    _scan_the_city(
        demo,
        active,
        {group: [c for c in members if c in active] for group, members in people.items()},
    )
    _hospital_kiosk(demo, hospital, active[: DESK_PATIENTS // 2])
    transport.scan(demo, active)
    pending = sum(
        g.runtime.journal.pending_count(g.runtime.identity.id) for g in demo.gates.values()
    )
    demo.say(f"offline: {pending} decisions journaled, none uploaded")
    _table(demo)
    algorithms_agree = _algorithms_agree(demo)
    hospital_agrees = _kiosk_software(demo, hospital)
    library_agrees = culture.loan_software(demo)
    demo.say("")
    hall_checked = _service_hall(demo, active)  # online, while the terminals are not
    kiosk_checked = employment.benefits_kiosk(demo)

    demo.say("")
    demo.say("the network is back: the terminals upload their journals")
    exact = True
    for gate in demo.gates.values():
        runtime = gate.runtime
        runtime.network.set()
        if not runtime.drain(120):
            raise IdcodeError(f"{gate.label} could not upload its journal")
        journaled = [e.event_id for e in runtime.journal.entries(runtime.identity.id)]
        stored = _server_events(city, runtime.identity.id)
        same = sorted(journaled) == sorted(stored) and len(set(stored)) == len(stored)
        exact &= same
        demo.say(
            f"  {gate.label:<20} journaled {len(journaled):>4}, the service holds {len(stored):>4}"
            f"  {'exactly these' if same else 'DIFFERENT'}"
        )
        runtime.stop()
    merchants_checked = merchant.settle(demo, active)  # their settlement files
    stands_agree = employment.count_per_stand(demo)
    cleared = transport.clearing(demo)
    total = sum(len(g.entries) for g in demo.gates.values())
    demo.say(
        f"{total} scans; the service holds exactly the events the terminals journaled"
        if exact
        else "MISMATCH between the journals and the service"
    )
    checks = (
        exact,
        hospital_agrees,
        hall_checked,
        merchants_checked,
        kiosk_checked,
        stands_agree,
        cleared,
        library_agrees,
        algorithms_agree,
    )
    return 0 if all(checks) else 1
