"""The smaller run on SQLite: the default database, in-process state, no Redis."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi.testclient import TestClient
from jwt.algorithms import OKPAlgorithm

from idcode.cose import Algorithm
from idcode.keys import keys_from_jwks
from idcode.service.api.app import create_app
from idcode.service.database import upgrade
from idcode.service.settings import Settings
from idcode.terminaltoken import relying_party_token
from idcode.testing import random_id_number
from idcode.verifier import Trust, verify
from tests.services import Tokens


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    settings = make_settings()  # no IDCODE_DATABASE_URL, no IDCODE_REDIS_URL
    upgrade(settings.sqlalchemy_url)
    return settings


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as test_client:
        yield test_client


@pytest.fixture
def tokens(settings: Settings) -> Tokens:
    return Tokens(settings)


def enrol(client: TestClient, tokens: Tokens, **fields: object) -> tuple[str, str]:
    body = {"id_number": random_id_number(), "name": "张秀英", **fields}
    response = client.post("/v1/cards", json=body, headers=tokens.operator())
    assert response.status_code == 201, response.text
    return response.json()["id"], str(body["id_number"])


def test_default_database_is_a_sqlite_file_in_the_data_directory(
    settings: Settings, tmp_path: Path
) -> None:
    assert settings.sqlalchemy_url == f"sqlite:///{tmp_path / 'data' / 'idcode.db'}"
    with closing(sqlite3.connect(tmp_path / "data" / "idcode.db")) as connection:
        tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master")}
    assert {"cards", "audit_records", "alembic_version"} <= tables


def test_readiness_reports_the_database_and_redis_not_configured(client: TestClient) -> None:
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.json() == {
        "status": "ready",
        "checks": {
            "database": "ok",
            "signing_key": "ok",
            "redis": "not configured (in-process state, single replica)",
        },
    }


def test_enrolled_citizen_gets_a_code_that_verifies_offline(
    client: TestClient, tokens: Tokens
) -> None:
    _, id_number = enrol(client, tokens, programmes=["home_care"])
    response = client.post("/v1/codes", headers=tokens.citizen(id_number))
    assert response.status_code == 200, response.text
    keys = keys_from_jwks(client.get("/.well-known/jwks.json").json())
    trust = Trust.of(keys, prefix="WH1:", algorithms=[Algorithm.EDDSA])
    verdict = verify(response.json()["code"], trust, int(time.time()))
    assert verdict.valid, verdict


def test_suspended_card_gets_no_code_and_reinstated_card_does(
    client: TestClient, tokens: Tokens
) -> None:
    card_id, id_number = enrol(client, tokens)
    assert client.post("/v1/codes", headers=tokens.citizen(id_number)).status_code == 200
    status = client.post(
        f"/v1/cards/{card_id}/status", json={"action": "suspend"}, headers=tokens.operator()
    )
    assert status.json()["status"] == "suspended"
    refused = client.post("/v1/codes", headers=tokens.citizen(id_number))
    assert (refused.status_code, refused.json()["reason"]) == (403, "card_suspended")
    again = client.post(
        f"/v1/cards/{card_id}/status", json={"action": "suspend"}, headers=tokens.operator()
    )
    assert (again.status_code, again.json()["reason"]) == (409, "invalid_transition")
    client.post(
        f"/v1/cards/{card_id}/status", json={"action": "reinstate"}, headers=tokens.operator()
    )
    assert client.post("/v1/codes", headers=tokens.citizen(id_number)).status_code == 200


def test_a_consent_code_identifies_once_on_sqlite(client: TestClient, tokens: Tokens) -> None:
    """SQLite returns times without a zone: spending the consent once compared them with an
    aware time in Python and answered 500 (scripts/run and idcode demo use SQLite)."""
    _, id_number = enrol(client, tokens)
    key = Ed25519PrivateKey.generate()
    party = {
        "name": "协和医院",
        "sector": "health",
        "purposes": ["registration"],
        "attributes": ["name"],
        "public_jwk": OKPAlgorithm.to_jwk(key.public_key(), as_dict=True),
    }
    party_id = client.post("/v1/relying-parties", json=party, headers=tokens.operator()).json()[
        "id"
    ]
    consent = {"disclose": {"to": party_id, "attributes": ["name"]}}
    code = client.post("/v1/codes", json=consent, headers=tokens.citizen(id_number)).json()["code"]

    def identify() -> tuple[int, dict[str, object]]:
        token = relying_party_token(party_id, key)
        response = client.post(
            "/v1/identify",
            json={"code": code, "purpose": "registration"},
            headers={"Authorization": f"Bearer {token}"},
        )
        return response.status_code, response.json()

    status, identified = identify()
    assert (status, identified["attributes"]) == (200, {"name": "张秀英"}), identified
    status, problem = identify()
    assert (status, problem["reason"]) == (409, "code_used")


def test_import_enrols_good_rows_and_reports_bad_ones(
    client: TestClient, tokens: Tokens, tmp_path: Path
) -> None:
    good = [random_id_number() for _ in range(2)]
    body = (
        "id_number,name,residency\n"
        f"{good[0]},张秀英,registered\n"
        f"{random_id_number()},李明,tourist\n"
        f"{good[1]},王小红,permit\n"
        f"{good[0]},张秀英,registered\n"
    )
    response = client.post(
        "/v1/cards/import",
        content=body.encode(),
        headers={**tokens.operator(), "Content-Type": "text/csv"},
    )
    assert response.status_code == 200, response.text
    report = response.json()
    assert (report["received"], report["imported"], report["rejected"]) == (4, 2, 2)
    assert [(r["row"], r["field"]) for r in report["rejections"]] == [
        (2, "residency"),
        (4, "id_number"),
    ]
    for id_number in good:
        assert client.post("/v1/codes", headers=tokens.citizen(id_number)).status_code == 200
    with closing(sqlite3.connect(tmp_path / "data" / "idcode.db")) as connection:
        actions = [row[0] for row in connection.execute("SELECT action FROM audit_records")]
    assert actions == ["cards.import"]


def test_reading_a_card_is_audited(client: TestClient, tokens: Tokens, tmp_path: Path) -> None:
    card_id, _ = enrol(client, tokens)
    assert client.get(f"/v1/cards/{card_id}", headers=tokens.operator()).status_code == 200
    with closing(sqlite3.connect(tmp_path / "data" / "idcode.db")) as connection:
        audit = list(
            connection.execute(
                "SELECT actor, action FROM audit_records WHERE card_id = ? ORDER BY id", (card_id,)
            )
        )
    assert audit == [("op", "card.enrol"), ("op", "card.read")]


# -- files another user could swap (outside review, issue 10 finding 2) ---------------------


@pytest.mark.parametrize("mode", [0o777, 0o775])
def test_a_database_in_a_directory_others_can_write_to_is_refused(
    make_settings: Callable[..., Settings], tmp_path: Path, mode: int
) -> None:
    from idcode.errors import UnsafeFileError
    from idcode.service.database import make_engine

    data = tmp_path / "shared-data"
    data.mkdir()
    data.chmod(mode)

    with pytest.raises(UnsafeFileError, match="writable by group or others") as excinfo:
        make_engine(make_settings(data_dir=data).sqlalchemy_url)
    assert str(data) in str(excinfo.value)


def test_a_database_that_is_a_symbolic_link_is_refused_and_its_target_left_alone(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    from idcode.errors import UnsafeFileError
    from idcode.service.database import make_engine

    settings = make_settings()
    target = tmp_path / "elsewhere.sqlite3"
    target.write_bytes(b"not a database")
    database = Path(settings.sqlalchemy_url.split("///", 1)[1])
    database.parent.mkdir(parents=True, exist_ok=True)
    database.symlink_to(target)

    with pytest.raises(UnsafeFileError, match="symbolic link"):
        make_engine(settings.sqlalchemy_url)
    assert target.read_bytes() == b"not a database"


def test_counter_identifies_a_citizen_with_consent_once_on_sqlite(
    client: TestClient, tokens: Tokens
) -> None:
    # SQLite returns its datetimes without a time zone: spending a consent loaded in the same
    # session must not compare them with aware ones (it answered 500 before).
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from jwt.algorithms import OKPAlgorithm

    from idcode.terminaltoken import relying_party_token

    key = Ed25519PrivateKey.generate()
    party = {
        "name": "江汉区政务服务中心",
        "sector": "government",
        "purposes": ["residence_certificate"],
        "attributes": ["name", "residency"],
        "public_jwk": OKPAlgorithm.to_jwk(key.public_key(), as_dict=True),
    }
    registered = client.post("/v1/relying-parties", json=party, headers=tokens.operator())
    assert registered.status_code == 201, registered.text
    hall = registered.json()["id"]
    _, id_number = enrol(client, tokens, residency="registered")
    disclose = {"to": hall, "attributes": ["name", "id_number"]}
    issued = client.post(
        "/v1/codes", json={"disclose": disclose}, headers=tokens.citizen(id_number)
    )
    assert issued.status_code == 200, issued.text
    body = {"code": issued.json()["code"], "purpose": "residence_certificate"}

    def identify() -> tuple[int, dict[str, object]]:
        token = relying_party_token(hall, key)
        answer = client.post(
            "/v1/identify", json=body, headers={"Authorization": f"Bearer {token}"}
        )
        return answer.status_code, answer.json()

    status, identified = identify()
    assert status == 200, identified
    assert identified["attributes"] == {"name": "张秀英"}
    status, refused = identify()
    assert (status, refused["reason"]) == (409, "code_used")


def test_a_device_registers_renews_and_is_revoked_in_bundles_on_sqlite(
    client: TestClient, tokens: Tokens, tmp_path: Path
) -> None:
    """The devices table on the embedded default: SQLite's partial index, its times without a
    zone (compared with aware ones in the revoked list and the renewal), the card lock."""
    from idcode import b64url
    from idcode.bundle import verify_bundle
    from idcode.devicecode import make_device_code
    from idcode.keystore import open_key_store
    from idcode.reasons import Reason
    from idcode.service.fleet import terminal_token
    from idcode.terminaltoken import device_token

    card_id, id_number = enrol(client, tokens)
    citizen = tokens.citizen(id_number)
    device_key = Ed25519PrivateKey.generate()
    jwk = OKPAlgorithm.to_jwk(device_key.public_key(), as_dict=True)
    registered = client.post(
        "/v1/devices", json={"public_jwk": jwk, "label": "手机"}, headers=citizen
    )
    assert registered.status_code == 201, registered.text
    device = registered.json()
    for _ in range(4):
        other = OKPAlgorithm.to_jwk(Ed25519PrivateKey.generate().public_key(), as_dict=True)
        assert (
            client.post("/v1/devices", json={"public_jwk": other}, headers=citizen).status_code
            == 201
        )
    sixth = OKPAlgorithm.to_jwk(Ed25519PrivateKey.generate().public_key(), as_dict=True)
    refused = client.post("/v1/devices", json={"public_jwk": sixth}, headers=citizen)
    assert (refused.status_code, refused.json()["reason"]) == (409, "too_many_devices")

    token = device_token(device["id"], device_key, "EdDSA")
    renewed = client.post(
        f"/v1/devices/{device['id']}/credential", headers={"Authorization": f"Bearer {token}"}
    )
    assert renewed.status_code == 200, renewed.text
    listed = client.get("/v1/devices", headers=citizen).json()["devices"]
    assert listed[-1]["renewed_at"].endswith("Z") and listed[-1]["label"] == "手机"

    terminal_key = Ed25519PrivateKey.generate()
    body = {
        "scene": "community",
        "site": "sqlite-1",
        "public_jwk": OKPAlgorithm.to_jwk(terminal_key.public_key(), as_dict=True),
    }
    terminal_id = client.post("/v1/terminals", json=body, headers=tokens.operator()).json()["id"]
    root = open_key_store(tmp_path / "keys").root_public_jwk()

    def trust() -> Trust:
        auth = {"Authorization": f"Bearer {terminal_token(terminal_id, terminal_key)}"}
        bundle = verify_bundle(client.get("/v1/trust-bundle", headers=auth).text, root)
        return bundle.trust(prefix="WH1:", algorithms=[Algorithm.EDDSA, Algorithm.ES256])

    now = int(time.time())
    blob = b64url.decode(renewed.json()["credential"])
    code = make_device_code(blob, device_key, prefix="WH2:", now=now)
    assert verify(code, trust(), now).valid
    assert client.delete(f"/v1/devices/{device['id']}", headers=citizen).status_code == 204
    code = make_device_code(blob, device_key, prefix="WH2:", now=now)
    assert verify(code, trust(), now).reason is Reason.REVOKED
    with closing(sqlite3.connect(tmp_path / "data" / "idcode.db")) as connection:
        actions = list(
            connection.execute(
                "SELECT actor, action FROM audit_records WHERE action LIKE 'device.%' "
                "AND card_id = ? ORDER BY id",
                (card_id,),
            )
        )
    assert actions[0] == ("citizen", "device.register")
    assert actions[-2:] == [("device", "device.renew"), ("citizen", "device.remove")]
