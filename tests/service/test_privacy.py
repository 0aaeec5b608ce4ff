"""Personal data stays out of logs, output, error bodies, the shared state and the database.

The ID number, name, phone and birth date exist in plaintext only in the operator's request
and, masked, in the operator's view of a card.
"""

from __future__ import annotations

import json
import logging
import secrets
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text

from idcode.service.api.app import create_app
from idcode.service.settings import Settings
from idcode.testing import random_id_number
from tests.services import Tokens

SURNAMES = "司马欧阳诸葛上官慕容端木"
GIVEN_NAMES = "皓月清风晨曦雨桐锦程"


@dataclass(frozen=True)
class Person:
    id_number: str
    name: str
    phone: str

    @classmethod
    def distinctive(cls) -> Person:
        """Someone whose every personal value is unlikely to occur anywhere by chance."""
        name = "".join(secrets.choice(SURNAMES + GIVEN_NAMES) for _ in range(4)) + "·Qiu"
        phone = f"+86 139 {secrets.randbelow(10_000):04d} {secrets.randbelow(10_000):04d}"
        return cls(random_id_number(birth=_random_birth_date()), name, phone)

    @property
    def birth_date(self) -> date:
        digits = self.id_number[6:14]
        return date(int(digits[:4]), int(digits[4:6]), int(digits[6:]))

    def enrolment(self) -> dict[str, Any]:
        return {"id_number": self.id_number, "name": self.name, "phone": self.phone}

    def traces(self) -> list[str]:
        """Every form in which this person's data could show up in text."""
        values = [self.id_number, self.name, self.phone, self.phone.replace(" ", "")]
        values += [self.phone.replace(" ", "")[3:], f"{self.birth_date:%Y%m%d}"]
        values += [self.birth_date.isoformat()]
        forms = set(values)
        for value in values:
            forms.add(json.dumps(value)[1:-1])  # \\u escapes, as in a logged JSON body
            forms.add(repr(value.encode())[2:-1])  # \\x escapes, as in logged bytes
            forms.add(urllib.parse.quote(value))
            forms.add(urllib.parse.quote_plus(value))
        return sorted(forms)


def _random_birth_date() -> date:
    return date(1930 + secrets.randbelow(70), 1 + secrets.randbelow(12), 1 + secrets.randbelow(28))


def leaks(text: str, traces: list[str]) -> list[str]:
    return [trace for trace in traces if trace in text]


def operator_post(client: TestClient, tokens: Tokens, path: str, **kwargs: Any) -> Any:
    return client.post(path, headers={**tokens.operator(), **kwargs.pop("headers", {})}, **kwargs)


# -- logs and printed output --------------------------------------------------------------


class Collector(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def every_log_record(caplog: pytest.LogCaptureFixture) -> Iterator[list[logging.LogRecord]]:
    """All records at DEBUG from every logger, including ones that set their own level
    (SQLAlchemy's) or do not propagate to the root logger."""
    caplog.set_level(logging.DEBUG)  # the root logger; caplog restores every level after
    collector = Collector()
    listened: list[logging.Logger] = [logging.root]
    for name, logger in list(logging.root.manager.loggerDict.items()):
        if isinstance(logger, logging.Logger):
            caplog.set_level(logging.DEBUG, logger=name)
            if not logger.propagate:
                listened.append(logger)
    for logger in listened:
        logger.addHandler(collector)
    yield collector.records
    for logger in listened:
        logger.removeHandler(collector)


def rendered(records: list[logging.LogRecord]) -> str:
    """Records as any handler could write them: message, exception, stack and extras."""
    formatter = logging.Formatter("%(name)s %(levelname)s %(pathname)s:%(lineno)d %(message)s")
    return "\n".join(formatter.format(record) + "\n" + repr(vars(record)) for record in records)


def test_an_enrol_and_issue_flow_logs_and_prints_no_personal_data_or_token(
    every_log_record: list[logging.LogRecord],
    capsys: pytest.CaptureFixture[str],
    service_settings: Settings,
    tokens: Tokens,
) -> None:
    person, imported, stranger = Person.distinctive(), Person.distinctive(), Person.distinctive()
    citizen = tokens.citizen(person.id_number)
    with TestClient(create_app(service_settings)) as client:
        enrolled = operator_post(client, tokens, "/v1/cards", json=person.enrolment())
        card_id = enrolled.json()["id"]
        code = client.post("/v1/codes", headers=citizen).json()["code"]
        client.post("/v1/codes", headers={**citizen, "Accept": "image/png"})
        client.get("/v1/me", headers=citizen)
        client.get(f"/v1/cards/{card_id}", headers=tokens.operator())
        client.post("/v1/verify", json={"code": code}, headers=tokens.verifier())
        operator_post(client, tokens, f"/v1/cards/{card_id}/status", json={"action": "suspend"})
        refused = client.post("/v1/codes", headers=citizen)
        twice = operator_post(client, tokens, "/v1/cards", json=person.enrolment())
        invalid = operator_post(
            client,
            tokens,
            "/v1/cards",
            json={**person.enrolment(), "id_number": person.id_number[:17] + "Y"},
        )
        report = operator_post(
            client,
            tokens,
            "/v1/cards/import",
            content=(
                "id_number,name,phone\n"
                f"{imported.id_number},{imported.name},{imported.phone}\n"
                f"{person.id_number[:-1]},{person.name},{person.phone}\n"
                f"{imported.id_number},{imported.name},call {imported.phone}!\n"
            ).encode(),
            headers={"Content-Type": "text/csv"},
        )
        not_enrolled = client.post("/v1/codes", headers=tokens.citizen(stranger.id_number))
    printed = capsys.readouterr()

    assert enrolled.status_code == 201, enrolled.text
    assert (refused.status_code, twice.status_code, invalid.status_code) == (403, 409, 422)
    assert leaks(invalid.text + twice.text + report.text, person.traces()) == []
    assert report.json()["rejected"] == 2, report.text
    assert not_enrolled.status_code == 404
    assert len(every_log_record) > 10, "the capture missed the service's logs"
    traces = person.traces() + imported.traces() + stranger.traces()
    traces.append(citizen["Authorization"].removeprefix("Bearer "))
    assert leaks(rendered(every_log_record), traces) == []
    assert leaks(printed.out + printed.err, traces) == []


def test_a_device_flow_logs_no_personal_data_token_credential_or_label(
    every_log_record: list[logging.LogRecord],
    capsys: pytest.CaptureFixture[str],
    service_settings: Settings,
    tokens: Tokens,
) -> None:
    from cryptography.hazmat.primitives.asymmetric import ec
    from jwt.algorithms import ECAlgorithm

    from idcode.terminaltoken import device_token

    person = Person.distinctive()
    citizen = tokens.citizen(person.id_number)
    key = ec.generate_private_key(ec.SECP256R1())
    label = person.name + "的手机"
    with TestClient(create_app(service_settings)) as client:
        operator_post(client, tokens, "/v1/cards", json=person.enrolment())
        body = {"public_jwk": ECAlgorithm.to_jwk(key.public_key(), as_dict=True), "label": label}
        registered = client.post("/v1/devices", json=body, headers=citizen)
        device = registered.json()
        token = device_token(device["id"], key, "ES256")
        renewed = client.post(
            f"/v1/devices/{device['id']}/credential", headers={"Authorization": f"Bearer {token}"}
        )
        replayed = client.post(
            f"/v1/devices/{device['id']}/credential", headers={"Authorization": f"Bearer {token}"}
        )
        too_long = client.post("/v1/devices", json={**body, "label": label * 20}, headers=citizen)
        listed = client.get("/v1/devices", headers=citizen)
        removed = client.delete(f"/v1/devices/{device['id']}", headers=citizen)
    printed = capsys.readouterr()

    assert (registered.status_code, renewed.status_code, replayed.status_code) == (201, 200, 401)
    assert (too_long.status_code, listed.status_code, removed.status_code) == (422, 200, 204)
    assert label not in too_long.text
    secrets_ = [
        *person.traces(),
        citizen["Authorization"].removeprefix("Bearer "),
        token,
        device["credential"],
        renewed.json()["credential"],
        label,
        json.dumps(label)[1:-1],
    ]
    assert len(every_log_record) > 5, "the capture missed the service's logs"
    assert leaks(rendered(every_log_record), secrets_) == []
    assert leaks(printed.out + printed.err, secrets_) == []


# -- error bodies -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "defect",
    ["bad-check-digit", "too-short", "name-too-long", "bad-phone", "unknown-field"],
)
def test_a_rejected_enrolment_names_the_field_but_never_echoes_the_values(
    client: TestClient, tokens: Tokens, defect: str
) -> None:
    person = Person.distinctive()
    body = person.enrolment()
    if defect == "bad-check-digit":
        body["id_number"] = person.id_number[:17] + ("0" if person.id_number[17] != "0" else "1")
    elif defect == "too-short":
        body["id_number"] = person.id_number[:-1]
    elif defect == "name-too-long":
        body["name"] = person.name * 20
    elif defect == "bad-phone":
        body["phone"] = f"ring {person.phone} after six"
    else:
        body["notes"] = f"{person.name} {person.id_number}"

    response = operator_post(client, tokens, "/v1/cards", json=body)

    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["reason"] == "invalid_request"
    assert problem["errors"] and all(error["loc"][0] == "body" for error in problem["errors"])
    assert leaks(response.text, person.traces()) == []


def test_an_import_report_names_rows_and_fields_but_never_values(
    client: TestClient, tokens: Tokens
) -> None:
    good, bad = Person.distinctive(), Person.distinctive()
    rows = [
        json.dumps(good.enrolment(), ensure_ascii=False),
        json.dumps({**bad.enrolment(), "id_number": bad.id_number[:-1]}, ensure_ascii=False),
        json.dumps({**bad.enrolment(), "phone": f"tel:{bad.phone}?"}, ensure_ascii=False),
        json.dumps({**good.enrolment()}, ensure_ascii=False),
        f"{bad.name},{bad.id_number}",
    ]
    response = operator_post(
        client,
        tokens,
        "/v1/cards/import",
        content="\n".join(rows).encode(),
        headers={"Content-Type": "application/x-ndjson"},
    )

    assert response.status_code == 200, response.text
    report = response.json()
    assert (report["imported"], report["rejected"]) == (1, 4)
    assert [(r["row"], r["field"]) for r in report["rejections"]] == [
        (2, "id_number"),
        (3, "phone"),
        (4, "id_number"),
        (5, "row"),
    ]
    assert leaks(response.text, good.traces() + bad.traces()) == []


def test_the_operators_view_of_a_card_masks_the_name_and_id_number(
    client: TestClient, tokens: Tokens
) -> None:
    person = Person.distinctive()
    card_id = operator_post(client, tokens, "/v1/cards", json=person.enrolment()).json()["id"]

    response = client.get(f"/v1/cards/{card_id}", headers=tokens.operator())

    card = response.json()
    assert card["name_masked"] == person.name[0] + "*" * (len(person.name) - 1)
    assert card["id_number_masked"] == person.id_number[:4] + "*" * 10 + person.id_number[-4:]
    assert leaks(response.text, person.traces()) == []


# -- at rest ------------------------------------------------------------------------------


def _as_bytes(value: object) -> bytes:
    if isinstance(value, bytes | memoryview):
        return bytes(value)
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False).encode()
    return str(value).encode()


def test_the_database_stores_no_personal_data_in_plaintext(
    client: TestClient, tokens: Tokens, postgres_url: str
) -> None:
    person = Person.distinctive()
    card_id = operator_post(client, tokens, "/v1/cards", json=person.enrolment()).json()["id"]
    operator_post(client, tokens, f"/v1/cards/{card_id}/status", json={"action": "lost"})
    client.get(f"/v1/cards/{card_id}", headers=tokens.operator())

    engine = create_engine(Settings(database_url=postgres_url).sqlalchemy_url)
    try:
        with engine.connect() as connection:
            card_rows = connection.execute(
                text("SELECT * FROM cards WHERE id = :id"), {"id": card_id}
            ).all()
            audit_rows = connection.execute(
                text("SELECT * FROM audit_records WHERE card_id = :id"), {"id": card_id}
            ).all()
    finally:
        engine.dispose()

    assert len(card_rows) == 1 and len(audit_rows) == 3  # enrol, lost, read
    stored = [_as_bytes(value) for row in [*card_rows, *audit_rows] for value in row]
    for trace in person.traces():
        assert not any(trace.encode() in value for value in stored), trace


def test_the_shared_redis_state_holds_no_personal_data(
    client: TestClient, tokens: Tokens, service_settings: Settings, redis_url: str
) -> None:
    person = Person.distinctive()
    operator_post(client, tokens, "/v1/cards", json=person.enrolment())
    code = client.post("/v1/codes", headers=tokens.citizen(person.id_number)).json()["code"]
    client.post("/v1/verify", json={"code": code}, headers=tokens.verifier())

    shared = redis.Redis.from_url(redis_url)
    try:
        keys = list(shared.scan_iter(match=f"{service_settings.redis_prefix}*"))
        stored = [key + b" " + (shared.get(key) or b"") for key in keys]
    finally:
        shared.close()

    kinds = {key.decode().removeprefix(service_settings.redis_prefix).split(":")[0] for key in keys}
    assert kinds == {"card", "rate", "seen"}
    for trace in person.traces():
        assert not any(trace.encode() in value for value in stored), trace
