"""A government service hall counter (亮码办事) against a development service: a citizen shows a
code with consent for the hall, the counter identifies them once, gives a queue ticket and
fills the form; codes without consent, with consent for someone else or shown twice are
refused, and the citizen reads their disclosure record. See README.md."""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from jwt.algorithms import OKPAlgorithm

from idcode.terminaltoken import relying_party_token

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # examples/, for terminal_common
from terminal_common import Example

HALL = "江汉区政务服务中心"
WINDOW = "window-3"
LOCAL = timezone(timedelta(hours=8))  # the hall's days, for its queue numbers


@dataclass(frozen=True)
class Service:
    """One of the hall's services: its purpose (as registered), its ticket letter and form."""

    purpose: str
    letter: str
    title: str
    form: tuple[str, ...]  # the attributes its form asks for, in the form's order


SERVICES = {
    service.purpose: service
    for service in (
        Service(
            "residence_certificate",
            "A",
            "户籍证明 residence certificate",
            ("name", "id_number", "residency"),
        ),
        Service(
            "social_insurance_enquiry",
            "B",
            "社保查询 social insurance enquiry",
            ("name", "id_number"),
        ),
    )
}
FIELDS = {"name": "姓名 name", "id_number": "公民身份号码 ID number", "residency": "户籍 residency"}

#: What the counter's screen tells the citizen for each refusal. Nothing here depends on who
#: the citizen is: a refusal names the code's problem, never the person.
TELL = {
    "code_used": "this code has been used: please show a new one",
    "no_consent": "this code carries no consent: in the app choose 亮码办事, this hall, and agree",
    "consented_to_another_party": "your consent is for another organisation: choose this hall",
    "purpose_mismatch": "you agreed for another service: choose this one in the app",
    "revoked": "your citizen card is not active: please go to the card desk",
    "expired": "this code has expired: please show a new one",
}
TELL_OTHERWISE = "this code cannot be read: please show a new one"


def new_party_key(path: Path) -> dict[str, Any]:
    """Generate a party's Ed25519 key into ``path`` (owner-only), as the counter software does
    when it is installed; returns the public JWK the operator registers."""
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    path.unlink(missing_ok=True)  # a new key each run: this run registers the hall anew
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as file:
        file.write(pem)
    jwk: dict[str, Any] = OKPAlgorithm.to_jwk(key.public_key(), as_dict=True)
    return jwk


def mask(id_number: str) -> str:
    """The ID number as the counter's screen shows it: the region (6) and the last 4."""
    return id_number[:6] + "*" * (len(id_number) - 10) + id_number[-4:]


class Queue:
    """The hall's queue numbers: per service and local day, A001, A002 ... in the order given.
    Kept in a file so that a restart of the counter software never gives a number twice; it
    holds counts only, nobody's name or subject."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def ticket(self, service: Service, now: datetime) -> str:
        day = now.astimezone(LOCAL).date().isoformat()
        state = json.loads(self.path.read_text()) if self.path.exists() else {}
        if state.get("day") != day:
            state = {"day": day, "issued": {}}
        number = state["issued"].get(service.purpose, 0) + 1
        state["issued"][service.purpose] = number
        written = self.path.with_suffix(".tmp")
        written.write_text(json.dumps(state))
        written.replace(self.path)  # whole or not at all, even on a power cut
        return f"{service.letter}{number:03d}"


class Counter:
    """The counter software at one window of the hall: it signs each request with the hall's
    key, identifies the citizen once, gives the ticket and fills the form."""

    def __init__(self, example: Example, party_id: str, key_file: Path, window: str) -> None:
        self.example, self.party_id, self.window = example, party_id, window
        key = serialization.load_pem_private_key(key_file.read_bytes(), password=None)
        assert isinstance(key, Ed25519PrivateKey)
        self.key = key
        self.queue = Queue(example.workdir / "queue.json")
        self.outcomes: list[dict[str, Any]] = []

    def scan(self, caption: str, code: str, purpose: str) -> None:
        """The clerk chose the service, the citizen's code was scanned: identify, then either
        a ticket and the form, or what to tell the citizen."""
        service = SERVICES[purpose]
        token = relying_party_token(self.party_id, self.key)  # single-use: one per request
        body = {"code": code, "purpose": purpose, "counter": self.window}
        status, answer = self.example.ask("POST", "/v1/identify", token, body)
        outcome: dict[str, Any] = {"scan": caption, "purpose": purpose, "status": status}
        if status != 200:
            reason = answer.get("reason", "")
            print(f"{caption} → {status} {reason}\n    counter: {TELL.get(reason, TELL_OTHERWISE)}")
            self.outcomes.append({**outcome, "outcome": reason})
            return
        disclosed: dict[str, Any] = answer["attributes"]
        ticket = self.queue.ticket(service, datetime.now(UTC))
        filled = [name for name in service.form if name in disclosed]
        blank = [name for name in service.form if name not in disclosed]
        print(f"{caption} → identified (subject {answer['subject'][:8]}…), ticket {ticket}")
        print(f"    form {service.title}, ticket {ticket}, {self.window}")
        for name in service.form:
            value = disclosed.get(name)
            shown = "(ask the citizen)" if value is None else str(value)
            if name == "id_number" and value is not None:
                shown = mask(str(value))  # the screen faces the queue too
            print(f"      {FIELDS[name]}: {shown}")
        # The form goes to the hall's case system; the counter keeps no copy of it, and the
        # answer (with the full ID number) ends with this function.
        self.outcomes.append(
            {**outcome, "outcome": "identified", "ticket": ticket, "filled": filled, "blank": blank}
        )


def main() -> None:
    example = Example(
        "servicehall",
        "jianghan",
        __file__,
        argparse.ArgumentParser(description=__doc__),
        terminals=False,
    )

    # The operator registers the hall, with the public half of the key its counters sign
    # with, and a library, another relying party a citizen may consent to.
    key_file = example.workdir / "service-hall.key"
    hall: dict[str, Any] = example.call(
        "POST",
        "/v1/relying-parties",
        example.operator,
        {
            "name": HALL,
            "sector": "government",
            "purposes": list(SERVICES),
            "attributes": ["name", "id_number", "residency"],
            "public_jwk": new_party_key(key_file),
        },
    )
    print(f"registered {HALL}: relying party {hall['id']}, key in {key_file}")
    library_key = Ed25519PrivateKey.generate()  # it never identifies anyone here
    library: dict[str, Any] = example.call(
        "POST",
        "/v1/relying-parties",
        example.operator,
        {
            "name": "武汉图书馆",
            "sector": "culture_tourism",
            "purposes": ["library_card"],
            "attributes": ["name", "residency"],
            "public_jwk": OKPAlgorithm.to_jwk(library_key.public_key(), as_dict=True),
        },
    )
    print(f"registered 武汉图书馆: relying party {library['id']}")

    citizen_a = example.enrol("王芳", residency="registered")
    citizen_b = example.enrol("李强", residency="permit")
    token_a, token_b = example.citizen_token(citizen_a), example.citizen_token(citizen_b)

    # 王芳's app lists who may identify her, and asks for a code with consent for the hall.
    print("王芳's app lists the relying parties:")
    for party in example.call("GET", "/v1/relying-parties", token_a):
        print(
            f"    {party['name']} ({party['sector']}): may ask for "
            f"{', '.join(party['attributes'])}; for {', '.join(party['purposes'])}"
        )
    consent = {
        "to": hall["id"],
        "attributes": ["name", "id_number", "residency"],
        "purpose": "residence_certificate",
    }
    issued = example.call("POST", "/v1/codes", token_a, {"disclose": consent})
    _consented("王芳", issued["disclose"])
    code_a = issued["code"]

    counter = Counter(example, hall["id"], key_file, WINDOW)
    counter.scan("citizen A, consent for the hall", code_a, "residence_certificate")
    counter.scan("the same code again", code_a, "residence_certificate")
    plain = example.call("POST", "/v1/codes", token_b)["code"]
    counter.scan("citizen B, a code without consent", plain, "social_insurance_enquiry")
    to_library = {"to": library["id"], "attributes": ["name"], "purpose": "library_card"}
    issued = example.call("POST", "/v1/codes", token_b, {"disclose": to_library})
    _consented("李强", issued["disclose"])  # then shows it at the hall by mistake
    counter.scan("citizen B, consent for the library", issued["code"], "social_insurance_enquiry")
    # 李强 also agrees to his birth date, which the hall may not ask for: it is not disclosed.
    consent = {
        "to": hall["id"],
        "attributes": ["name", "id_number", "birth_date"],
        "purpose": "social_insurance_enquiry",
    }
    issued = example.call("POST", "/v1/codes", token_b, {"disclose": consent})
    _consented("李强", issued["disclose"])
    counter.scan("citizen B, consent for the hall", issued["code"], "social_insurance_enquiry")

    # 王芳 reads, in her app, who was told what about her.
    record = example.call("GET", "/v1/me/disclosures", token_a)
    print("王芳's disclosure record:")
    for entry in record:
        print(
            f"    {entry['at']} {entry['relying_party']['name']} ({entry['counter']}): "
            f"{', '.join(entry['attributes'])} for {entry['purpose']}"
        )

    # Registered anew each run: deactivated, the app stops listing this run's parties.
    for party in (hall, library):
        example.call("POST", f"/v1/relying-parties/{party['id']}/deactivate", example.operator)
    print(f"deactivated this run's relying parties ({HALL}, 武汉图书馆)")

    if example.args.json:
        disclosures = [
            {
                "relying_party": e["relying_party"]["name"],
                "purpose": e["purpose"],
                "attributes": e["attributes"],
                "counter": e["counter"],
            }
            for e in record
        ]
        summary = {
            "example": example.here.name,
            "relying_party": hall["id"],
            "identifications": counter.outcomes,
            "disclosures": disclosures,
        }
        print(json.dumps(summary, ensure_ascii=False))


def _consented(citizen: str, disclose: dict[str, Any]) -> None:
    """What the app shows once the service holds the consent: what will be disclosed."""
    print(
        f"{citizen}'s app: a code that shows {disclose['name']} "
        f"{', '.join(disclose['attributes'])}, once, for {disclose['purpose']}"
    )


if __name__ == "__main__":
    main()
