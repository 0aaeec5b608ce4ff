"""Personal data under the GM crypto profile: SM4-GCM at rest and HMAC-SM3 lookups and subject
keys, checked against cryptography's SM4 and SM3 directly (not idcode.gm's wrappers); a
ciphertext names its AEAD and is never opened with the other profile's; a database records
its profile and a service of the other one does not start on it (PostgreSQL, Redis)."""

from __future__ import annotations

import base64
import json
import secrets
from collections.abc import Callable

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import hmac as crypto_hmac
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from fastapi.testclient import TestClient
from sqlalchemy import select

from idcode.errors import ConfigurationError, PersonalDataError
from idcode.profiles import GM, STANDARD
from idcode.service.api.app import create_app
from idcode.service.cards import NewCard, enrol
from idcode.service.database import make_engine, make_session_factory, upgrade
from idcode.service.models import CardRecord, SceneDataRecord
from idcode.service.pii import KEY_LENGTH, PersonalDataVault
from idcode.service.profilerecord import recorded_profile
from idcode.service.settings import Settings
from idcode.testing import random_id_number
from tests.services import Tokens

CARD = "6f1c2f4e-5d0a-4c55-9d1e-1a2b3c4d5e6f"
ID_NUMBER = "11010519491231002X"


def independent_hmac_sm3(key: bytes, data: bytes) -> bytes:
    mac = crypto_hmac.HMAC(key, hashes.SM3())
    mac.update(data)
    return mac.finalize()


def independent_sm4_gcm_open(key: bytes, blob: bytes, aad: bytes) -> bytes:
    """Version byte, 12-byte nonce, ciphertext, 16-byte tag: opened with cryptography's
    SM4 cipher in GCM mode."""
    nonce, sealed = blob[1:13], blob[13:]
    decryptor = Cipher(algorithms.SM4(key), modes.GCM(nonce, sealed[-16:])).decryptor()
    decryptor.authenticate_additional_data(aad)
    return decryptor.update(sealed[:-16]) + decryptor.finalize()


@pytest.fixture
def keys() -> tuple[bytes, bytes]:
    return secrets.token_bytes(KEY_LENGTH), secrets.token_bytes(KEY_LENGTH)


@pytest.fixture
def gm_vault(keys: tuple[bytes, bytes]) -> PersonalDataVault:
    return PersonalDataVault(*keys, GM)


def test_a_gm_value_round_trips_and_is_sm4_gcm_under_the_derived_16_byte_key(
    gm_vault: PersonalDataVault, keys: tuple[bytes, bytes]
) -> None:
    sealed = gm_vault.encrypt("张秀英", card_id=CARD, field="name")
    assert sealed[0] == 2
    assert gm_vault.decrypt(sealed, card_id=CARD, field="name") == "张秀英"
    sm4_key = independent_hmac_sm3(keys[0], b"idcode/pii-sm4-key/v1")[:16]
    aad = f"idcode/v1/name/{CARD}".encode()
    assert independent_sm4_gcm_open(sm4_key, sealed, aad).decode() == "张秀英"


def test_a_standard_value_is_still_version_1_aes_256_gcm_under_the_32_byte_key(
    keys: tuple[bytes, bytes],
) -> None:
    sealed = PersonalDataVault(*keys).encrypt("13800000001", card_id=CARD, field="phone")
    assert sealed[0] == 1
    aad = f"idcode/v1/phone/{CARD}".encode()
    assert AESGCM(keys[0]).decrypt(sealed[1:13], sealed[13:], aad) == b"13800000001"


def test_gm_lookup_hash_and_subject_keys_are_hmac_sm3(
    gm_vault: PersonalDataVault, keys: tuple[bytes, bytes]
) -> None:
    hash_key = keys[1]
    assert gm_vault.lookup_hash(ID_NUMBER) == independent_hmac_sm3(hash_key, ID_NUMBER.encode())
    city = independent_hmac_sm3(hash_key, b"idcode/city-subject-key/v1")
    assert gm_vault.scene_subject_key("community") == independent_hmac_sm3(
        city, b"idcode/scene-subject/v1/community"
    )
    assert gm_vault.terminal_subject_key("merchant", "shop-1") == independent_hmac_sm3(
        city, b"idcode/site-subject/v1/merchant/shop-1"
    )
    assert gm_vault.relying_party_subject_key("hospital-1") == independent_hmac_sm3(
        city, b"idcode/relying-party-subject/v1/hospital-1"
    )
    standard = PersonalDataVault(*keys)
    assert standard.lookup_hash(ID_NUMBER) != gm_vault.lookup_hash(ID_NUMBER)
    assert standard.scene_subject_key("community") != gm_vault.scene_subject_key("community")


@pytest.mark.parametrize("position", [0, 1, 12, 13, -17, -1])
def test_a_tampered_gm_ciphertext_does_not_decrypt(
    gm_vault: PersonalDataVault, position: int
) -> None:
    sealed = bytearray(gm_vault.encrypt("张秀英", card_id=CARD, field="name"))
    sealed[position] ^= 0x01 if position else 0x03  # 2 -> 1 would be the other profile's
    with pytest.raises(PersonalDataError):
        gm_vault.decrypt(bytes(sealed), card_id=CARD, field="name")
    with pytest.raises(PersonalDataError, match=f"name of card {CARD} does not decrypt"):
        gm_vault.decrypt(
            gm_vault.encrypt("张秀英", card_id=CARD, field="name")[:-1] + b"\x00",
            card_id=CARD,
            field="name",
        )


def test_a_standard_ciphertext_is_refused_under_gm_and_the_other_way_round(
    keys: tuple[bytes, bytes],
) -> None:
    standard, gm = PersonalDataVault(*keys), PersonalDataVault(*keys, GM)
    with pytest.raises(PersonalDataError) as caught:
        gm.decrypt(
            standard.encrypt("张秀英", card_id=CARD, field="name"), card_id=CARD, field="name"
        )
    assert str(caught.value) == (
        f"name of card {CARD} is AES-256-GCM, written under the standard crypto profile; this "
        "deployment runs gm and reads SM4-GCM only (docs/crypto-profiles.md)"
    )
    with pytest.raises(PersonalDataError, match="is SM4-GCM, written under the gm crypto"):
        standard.decrypt(
            gm.encrypt("张秀英", card_id=CARD, field="name"), card_id=CARD, field="name"
        )


# -- the service under gm, on PostgreSQL -----------------------------------------------------


def test_a_gm_service_enrols_a_card_sealed_with_sm4_and_finds_it_by_id_number(
    make_settings: Callable[..., Settings],
    fresh_postgres_url: Callable[..., str],
    redis_url: str,
) -> None:
    settings = make_settings(
        database_url=fresh_postgres_url(), redis_url=redis_url, crypto_profile="gm"
    )
    tokens = Tokens(settings)
    id_number = random_id_number()
    with TestClient(create_app(settings)) as client:
        enrolled = client.post(
            "/v1/cards", json={"id_number": id_number, "name": "张秀英"}, headers=tokens.operator()
        )
        assert enrolled.status_code == 201, enrolled.text
        card_id = enrolled.json()["id"]
        again = client.post(
            "/v1/cards", json={"id_number": id_number, "name": "张秀英"}, headers=tokens.operator()
        )
        assert (again.status_code, again.json()["reason"]) == (409, "already_enrolled")
        code = client.post("/v1/codes", headers=tokens.citizen(id_number))
        assert code.status_code == 200, code.text
        read = client.get(f"/v1/cards/{card_id}", headers=tokens.operator())
        assert read.status_code == 200, read.text
        assert read.json()["id_number_masked"].endswith(id_number[-4:])
        # The service keys the subjects it lists (a resident named by card) with HMAC-SM3, as
        # a GM terminal keys the subject of each scan (tests/core/test_gm_jws.py).
        scene = client.put(
            "/v1/scenes/community/hall-1",
            json={"residents": [f"card:{card_id}"]},
            headers=tokens.operator(),
        )
        assert scene.status_code == 200, scene.text

    engine = make_engine(settings.sqlalchemy_url)
    try:
        assert recorded_profile(engine) == "gm"
        with make_session_factory(engine)() as session:
            record = session.scalars(select(CardRecord).where(CardRecord.id == card_id)).one()
            stored = session.get(SceneDataRecord, ("community", "hall-1"))
            assert stored is not None
            residents = stored.document["residents"]
    finally:
        engine.dispose()
    document = json.loads((settings.keys_dir / "pii-keys.json").read_bytes())
    encryption_key = base64.b64decode(document["encryption_key"])
    hash_key = base64.b64decode(document["hash_key"])
    assert record.id_hash == independent_hmac_sm3(hash_key, id_number.encode())
    sm4_key = independent_hmac_sm3(encryption_key, b"idcode/pii-sm4-key/v1")[:16]
    aad = f"idcode/v1/name/{card_id}".encode()
    assert independent_sm4_gcm_open(sm4_key, record.name_enc, aad).decode() == "张秀英"
    city = independent_hmac_sm3(hash_key, b"idcode/city-subject-key/v1")
    scene_key = independent_hmac_sm3(city, b"idcode/scene-subject/v1/community")
    assert residents == [independent_hmac_sm3(scene_key, record.pseudonym)[:12].hex()]


def test_a_service_does_not_start_on_a_database_of_the_other_profile(
    make_settings: Callable[..., Settings],
    fresh_postgres_url: Callable[..., str],
    redis_url: str,
) -> None:
    url = fresh_postgres_url()
    standard = make_settings(database_url=url, redis_url=redis_url)
    with TestClient(create_app(standard)):
        pass
    gm = make_settings(
        database_url=url,
        redis_url=redis_url,
        crypto_profile="gm",
        keys_dir=standard.keys_dir.parent / "gm-keys",
    )
    with pytest.raises(ConfigurationError) as caught:
        TestClient(create_app(gm)).__enter__()
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(
        "the database was written under the standard crypto profile, but "
        "IDCODE_CRYPTO_PROFILE is gm"
    )


def test_the_migration_records_standard_for_a_database_that_already_holds_cards(
    make_settings: Callable[..., Settings],
    fresh_postgres_url: Callable[..., str],
    redis_url: str,
) -> None:
    url = fresh_postgres_url("0008")
    settings = make_settings(database_url=url, redis_url=redis_url)
    engine = make_engine(settings.sqlalchemy_url)
    try:
        encryption_key, hash_key = secrets.token_bytes(KEY_LENGTH), secrets.token_bytes(KEY_LENGTH)
        vault = PersonalDataVault(encryption_key, hash_key, STANDARD)
        with make_session_factory(engine)() as session:
            enrol(session, vault, NewCard(id_number=random_id_number(), name="测试"), "test")
            session.commit()
        upgrade(settings.sqlalchemy_url)
        assert recorded_profile(engine) == "standard"
    finally:
        engine.dispose()
    empty = fresh_postgres_url()
    engine = make_engine(Settings(database_url=empty).sqlalchemy_url)
    try:
        assert recorded_profile(engine) is None  # the first service to start records its own
    finally:
        engine.dispose()
