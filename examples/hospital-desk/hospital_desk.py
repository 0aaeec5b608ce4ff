"""A hospital (居民健康) against a development service: the registration desk identifies citizens
with their consent, opens patient records in the hospital's own system and links them; the
hospital's self-service kiosk then recognises the linked citizens offline and its software
finds their patient numbers. See README.md."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import urllib.request
from datetime import date
from pathlib import Path
from typing import Any
from urllib.error import HTTPError, URLError

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
)
from jwt.algorithms import OKPAlgorithm

from idcode.terminaltoken import relying_party_token

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # examples/, for terminal_common
from terminal_common import MAX_ANSWER_BYTES, Example, idcode

HOSPITAL = "协和医院"
SITE = "union-hospital"
COUNTER = "desk-1"
PURPOSE = "registration"
ATTRIBUTES = ["name", "id_number", "sex", "birth_date"]
NEW_CODE = "please show a new code"
GO_TO_THE_DESK = "please go to the registration desk"


def write_private(path: Path, data: bytes) -> None:
    """Write a file only its owner may read: the desk's key, the patient records."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "wb") as file:
        file.write(data)


class Hospital:
    """The hospital's own side: its desk key, its id as a relying party, and its HIS (the
    hospital information system; here a JSON file of patient records in the work directory)."""

    def __init__(self, example: Example) -> None:
        self.example = example
        self.directory = example.workdir / "hospital"
        # A new hospital each run: the service it was registered with may be another one now.
        shutil.rmtree(self.directory, ignore_errors=True)
        self.directory.mkdir(parents=True, mode=0o700)
        self.key = Ed25519PrivateKey.generate()
        self.key_file = self.directory / "desk-key.pem"
        pem = self.key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
        write_private(self.key_file, pem)
        self.his = self.directory / "his.json"
        self.save({"patients": []})
        self.id = ""

    def register(self) -> None:
        """The operator registers the hospital with the public half of its desk key."""
        body = {
            "name": HOSPITAL,
            "sector": "health",
            "purposes": [PURPOSE],
            "attributes": ATTRIBUTES,
            "public_jwk": OKPAlgorithm.to_jwk(self.key.public_key(), as_dict=True),
        }
        self.id = self.example.call("POST", "/v1/relying-parties", self.example.operator, body)[
            "id"
        ]
        print(
            f"registered {HOSPITAL} as relying party {self.id} (sector health, purpose "
            f"{PURPOSE}, may ask for {', '.join(ATTRIBUTES)}); desk key in {self.key_file}"
        )

    def ask(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        """One request of the hospital's desk, with a new single-use token signed by its key:
        (status, the answer's JSON, or None when it has none)."""
        token = relying_party_token(self.id, self.key, "EdDSA")
        # The URL is the --server the user gave, checked to be http(s) by Example.
        request = urllib.request.Request(  # noqa: S310
            self.example.server + path,
            method=method,
            data=None if body is None else json.dumps(body).encode(),
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
                raw = response.read(MAX_ANSWER_BYTES)
                return response.status, json.loads(raw) if raw else None
        except HTTPError as exc:
            raw = exc.read(MAX_ANSWER_BYTES)
            try:
                return exc.code, json.loads(raw)  # a problem+json document
            except ValueError:
                sys.exit(f"{method} {path}: {exc.code}, not an answer from the idcode service")
        except URLError as exc:
            sys.exit(f"cannot reach {self.example.server} ({exc.reason}); is scripts/run running?")

    def expect(self, status: int, method: str, path: str, body: Any = None) -> Any:
        answer_status, answer = self.ask(method, path, body)
        if answer_status != status:
            sys.exit(f"{method} {path}: {answer_status} {answer}")
        return answer

    def identify(self, code: str) -> tuple[int, Any]:
        return self.ask(
            "POST", "/v1/identify", {"code": code, "purpose": PURPOSE, "counter": COUNTER}
        )

    def patients(self) -> list[dict[str, Any]]:
        records: list[dict[str, Any]] = json.loads(self.his.read_text(encoding="utf-8"))["patients"]
        return records

    def save(self, his: dict[str, Any]) -> None:
        write_private(self.his, json.dumps(his, ensure_ascii=False, indent=2).encode())

    def open_record(self, subject: str, attributes: dict[str, Any]) -> dict[str, Any]:
        """The patient record of ``subject`` in the HIS, created with a new patient number if
        there is none. The subject is stable at this hospital, so a citizen who registers again
        finds their old record."""
        patients = self.patients()
        for record in patients:
            if record["subject"] == subject:
                return record
        record = {"patient_number": f"P{len(patients) + 1:06d}", "subject": subject, **attributes}
        self.save({"patients": [*patients, record]})
        return record


def age(birth_date: str, today: date) -> int:
    born = date.fromisoformat(birth_date)
    return today.year - born.year - ((today.month, today.day) < (born.month, born.day))


def slip(record: dict[str, Any]) -> dict[str, Any]:
    """What the registration slip shows: the patient number, the name masked after its first
    character, sex and age; never the ID number or the birth date."""
    name: str = record["name"]
    return {
        "patient_number": record["patient_number"],
        "name": name[0] + "*" * (len(name) - 1),
        "sex": record["sex"],
        "age": age(record["birth_date"], date.today()),
    }


def kiosk_screen(decision: dict[str, Any], patients: dict[str, str]) -> str:
    """What the kiosk's own software shows for a decision line: the patient number of the
    decision's subject from the HIS (``patients``: subject -> patient number)."""
    patient = patients.get(decision.get("subject") or "")
    if decision.get("admitted") is True and patient is not None:
        return f"patient {patient} checked in"
    if decision.get("reason") == "not_registered" or decision.get("admitted") is True:
        return GO_TO_THE_DESK  # linked at the service but unknown here: the desk sorts it out
    return f"{NEW_CODE} ({decision.get('reason')})"


def main() -> None:
    example = Example("hospital", SITE, __file__, argparse.ArgumentParser(description=__doc__))
    hospital = Hospital(example)
    hospital.register()
    year = date.today().year
    citizens = {
        "citizen A": example.enrol("王芳", birth=date(year - 38, 3, 8)),
        "citizen B": example.enrol("张伟", birth=date(year - 67, 11, 20)),
        "citizen C": example.enrol("李强", birth=date(year - 45, 7, 1)),  # never at the desk
    }
    desk: list[dict[str, Any]] = []

    # At the desk: the citizen's app asks for a code that carries consent for this hospital,
    # the desk scans it and presents it once; the HIS opens a record, the slip is printed,
    # and the hospital links the subject for its kiosks.
    consent_codes = {}
    for caption in ("citizen A", "citizen B"):
        consent = {"to": hospital.id, "attributes": ATTRIBUTES, "purpose": PURPOSE}
        token = example.citizen_token(citizens[caption])
        issued = example.call("POST", "/v1/codes", token, {"disclose": consent})
        consent_codes[caption] = issued["code"]
        what = issued["disclose"]
        print(
            f"{caption}'s app: a code with consent for {what['name']} (discloses "
            f"{', '.join(what['attributes'])}; purpose {what['purpose']})"
        )
        status, identified = hospital.identify(issued["code"])
        if status != 200:
            sys.exit(f"POST /v1/identify: {status} {identified}")
        subject = identified["subject"]
        print(
            f"{COUNTER} identified {caption}: subject {subject}, "
            f"disclosure {identified['disclosure']}"
        )
        record = hospital.open_record(subject, identified["attributes"])
        shown = slip(record)
        print(
            f"  registration slip: patient {shown['patient_number']} | {shown['name']} | "
            f"{shown['sex']} | {shown['age']} years"
        )
        hospital.expect(204, "PUT", f"/v1/links/{subject}")
        print(f"  linked subject {subject} for the hospital's kiosks (PUT /v1/links/{{subject}})")
        desk.append(
            {
                "citizen": caption,
                "subject": subject,
                "attributes": sorted(identified["attributes"]),
                "slip": shown,
                "linked": True,
            }
        )
    links = hospital.expect(200, "GET", "/v1/links")["subjects"]
    print(f"the service holds {len(links)} links for {HOSPITAL} (GET /v1/links)")

    # What the desk cannot do: present a consent code twice, or identify without consent.
    refusals = []
    for caption, code in (
        ("citizen A's consent code, presented again", consent_codes["citizen A"]),
        ("citizen C's ordinary code, no consent", example.code(citizens["citizen C"])),
    ):
        status, problem = hospital.identify(code)
        print(f"{COUNTER}, {caption} → {status} {problem.get('reason')}")
        refusals.append({"case": caption, "status": status, "reason": problem.get("reason")})

    # The kiosk: a terminal of the hospital's relying party. It syncs its trust bundle once
    # (the hospital's subject key and its links), then decides with the network off.
    kiosk = example.provision("kiosk-1", relying_party=hospital.id)
    idcode("terminal", "run", "--dir", str(kiosk), "--input", "stdin", stdin="")
    trust = json.loads(idcode("terminal", "status", "--dir", str(kiosk)))["trust"]
    hours = (trust["fresh_until"] - trust["signed_at"]) // 3600
    print(
        f"kiosk-1 synced its trust bundle (the hospital's subject key, {len(links)} linked "
        f"subjects; fresh for {hours} h); its network goes off"
    )
    scanned = len(example.decisions)
    example.scan(
        kiosk,
        [
            ("citizen A at the kiosk", example.code(citizens["citizen A"])),
            ("citizen B at the kiosk", example.code(citizens["citizen B"])),
            ("citizen C at the kiosk", example.code(citizens["citizen C"])),
        ],
        "--offline",
    )
    patients = {record["subject"]: record["patient_number"] for record in hospital.patients()}
    print("the kiosk's software, reading those decision lines with the HIS:")
    for decision in example.decisions[scanned:]:
        decision["screen"] = kiosk_screen(decision, patients)
        print(f"  {decision['scan']}: {decision['screen']}")

    # The network is back: the kiosk uploads its journal (an empty input: nothing to scan).
    idcode("terminal", "run", "--dir", str(kiosk), "--input", "stdin", stdin="")
    pending = json.loads(idcode("terminal", "status", "--dir", str(kiosk)))["pending_uploads"]
    print(f"kiosk-1 is online again and uploaded its journal ({pending} events pending)")

    example.finish(desk=desk, refusals=refusals)


if __name__ == "__main__":
    main()
