"""The hospital scene: a self-service kiosk recognises, offline, the citizens the hospital
linked, by the hospital's own pairwise subject; and linked_subjects in every scene's data."""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest

from idcode.claims import AgeBand, Card, Programme, Residency
from idcode.errors import SceneError
from idcode.scenes import (
    MAX_LINKED_SUBJECTS,
    SCENE_KEY_BYTES,
    SCENES,
    SceneData,
    load_adapter,
    subject_of,
)
from idcode.testing import TestIssuer, TestTerminal, random_card
from idcode_adapters.hospital import Adapter
from tests.conftest import NOW

HOUR = 3600
DOCS = Path(__file__).parents[2] / "docs" / "scenes" / "hospital.md"
#: A text a hospital might wrongly send in place of a subject: its own patient number.
PATIENT_NUMBER = "MZ20261201000017"


@pytest.fixture
def rp_key() -> bytes:
    """The hospital's subject key, as the service gives it to a relying party's kiosks."""
    return secrets.token_bytes(SCENE_KEY_BYTES)


def hospital_subject(rp_key: bytes, card: Card) -> str:
    """What the desk got for ``card`` from POST /v1/identify."""
    return subject_of(rp_key, card.pseudonym)


def kiosk(
    issuer: TestIssuer,
    rp_key: bytes,
    linked: Iterable[str] = (),
    *,
    revoked: tuple[int, ...] = (),
    at: int = NOW - HOUR,
) -> TestTerminal:
    bundle = issuer.bundle(
        "hospital",
        "union-hospital",
        data={"linked_subjects": list(linked)},
        revoked=revoked,
        at=at,
        subject_key=rp_key,
    )
    return TestTerminal(bundle)


def scan(gate: TestTerminal, issuer: TestIssuer, card: Card, at: int = NOW) -> Any:
    return gate.scan(issuer.mint(card, at=at), at=at)


# -- linked and unlinked citizens ---------------------------------------------------------


def test_linked_citizen_checks_in(issuer: TestIssuer, rp_key: bytes) -> None:
    card = random_card()
    gate = kiosk(issuer, rp_key, [hospital_subject(rp_key, card)])
    decision = scan(gate, issuer, card)
    assert decision.admitted and decision.reason == "ok" and decision.action == "check_in"
    assert dict(decision.result) == {"linked": True}


def test_citizen_the_hospital_has_not_linked_is_denied_not_registered(
    issuer: TestIssuer, rp_key: bytes
) -> None:
    linked = random_card()
    gate = kiosk(issuer, rp_key, [hospital_subject(rp_key, linked)])
    decision = scan(gate, issuer, random_card())
    assert not decision.admitted
    assert (decision.reason, decision.action) == ("not_registered", "check_in")
    assert dict(decision.result) == {"linked": False}


def test_kiosk_with_no_linked_subjects_denies_everyone_not_registered(
    issuer: TestIssuer, rp_key: bytes
) -> None:
    gate = kiosk(issuer, rp_key)
    assert scan(gate, issuer, random_card()).reason == "not_registered"


def test_card_attributes_play_no_part_for_a_linked_citizen(
    issuer: TestIssuer, rp_key: bytes
) -> None:
    visitor = random_card(
        residency=Residency.NON_RESIDENT, age_band=AgeBand.UNKNOWN, programmes=Programme.NONE
    )
    gate = kiosk(issuer, rp_key, [hospital_subject(rp_key, visitor)])
    assert scan(gate, issuer, visitor).admitted


def test_second_check_in_the_same_local_day_is_admitted(issuer: TestIssuer, rp_key: bytes) -> None:
    card = random_card()
    gate = kiosk(issuer, rp_key, [hospital_subject(rp_key, card)])
    decisions = [scan(gate, issuer, card, at) for at in (NOW, NOW + 60, NOW + 2 * HOUR)]
    assert [(d.admitted, d.action) for d in decisions] == [(True, "check_in")] * 3


# -- the hospital's pairwise subject -------------------------------------------------------


def test_kiosk_journals_the_subject_the_desk_got_with_the_bundles_key(
    issuer: TestIssuer, rp_key: bytes
) -> None:
    card = random_card()
    subject = hospital_subject(rp_key, card)
    gate = kiosk(issuer, rp_key, [subject])
    assert gate.decider.context.subject_key == rp_key
    assert scan(gate, issuer, card).admitted
    assert gate.history.events[-1].subject == subject
    # Pairwise: not the citizen's subject in any scene, the hospital scene included.
    assert subject not in {issuer.subject(card, scene) for scene in SCENES}


def test_subject_of_the_scene_key_is_not_recognised_by_a_kiosk_with_the_hospitals_key(
    issuer: TestIssuer, rp_key: bytes
) -> None:
    card = random_card()
    gate = kiosk(issuer, rp_key, [issuer.subject(card, "hospital")])
    assert scan(gate, issuer, card).reason == "not_registered"


def test_the_same_citizens_subject_at_another_hospital_is_not_linked_here(
    issuer: TestIssuer, rp_key: bytes
) -> None:
    card = random_card()
    other_hospital = secrets.token_bytes(SCENE_KEY_BYTES)
    gate = kiosk(issuer, rp_key, [hospital_subject(other_hospital, card)])
    assert scan(gate, issuer, card).reason == "not_registered"


# -- codes the verifier refuses ------------------------------------------------------------


def test_expired_code_of_a_linked_citizen_is_denied_expired(
    issuer: TestIssuer, rp_key: bytes
) -> None:
    card = random_card()
    gate = kiosk(issuer, rp_key, [hospital_subject(rp_key, card)])
    decision = gate.scan(issuer.mint(card, at=NOW - 600, ttl=60), at=NOW)
    assert (decision.admitted, decision.reason, decision.action) == (False, "expired", "")
    assert dict(decision.result) == {}


def test_revoked_card_of_a_linked_citizen_is_denied_revoked(
    issuer: TestIssuer, rp_key: bytes
) -> None:
    card = random_card(status_index=17)
    gate = kiosk(issuer, rp_key, [hospital_subject(rp_key, card)], revoked=(17,))
    decision = scan(gate, issuer, card)
    assert (decision.admitted, decision.reason) == (False, "revoked")


def test_replayed_code_of_a_linked_citizen_is_denied_replayed(
    issuer: TestIssuer, rp_key: bytes
) -> None:
    card = random_card()
    gate = kiosk(issuer, rp_key, [hospital_subject(rp_key, card)])
    code = issuer.mint(card, at=NOW)
    assert gate.scan(code, at=NOW).admitted
    replay = gate.scan(code, at=NOW + 20)
    assert (replay.admitted, replay.reason) == (False, "replayed")


def test_code_signed_by_another_issuer_is_denied_bad_signature(
    issuer: TestIssuer, rp_key: bytes
) -> None:
    card = random_card()
    gate = kiosk(issuer, rp_key, [hospital_subject(rp_key, card)])
    forger = TestIssuer(now=NOW)  # same key id, another key
    decision = gate.scan(forger.mint(card, at=NOW), at=NOW)
    assert (decision.admitted, decision.reason) == (False, "bad_signature")


@pytest.mark.parametrize(
    ("text", "reason"), [("WH1:NOT-A-CODE", "malformed"), ("MZ20261201000017", "unknown_prefix")]
)
def test_text_that_is_no_code_is_denied_with_the_verifiers_reason(
    issuer: TestIssuer, rp_key: bytes, text: str, reason: str
) -> None:
    decision = kiosk(issuer, rp_key).scan(text, at=NOW)
    assert (decision.admitted, decision.reason, decision.action) == (False, reason, "")


def test_kiosk_past_its_bundles_max_age_denies_linked_citizens_stale_trust(
    issuer: TestIssuer, rp_key: bytes
) -> None:
    card = random_card()
    gate = kiosk(issuer, rp_key, [hospital_subject(rp_key, card)], at=NOW - 49 * HOUR)
    assert scan(gate, issuer, card).reason == "stale_trust"


# -- scene data ------------------------------------------------------------------------------


BAD_LINKED_SUBJECTS: list[Any] = [
    [PATIENT_NUMBER],
    ["4C1D0E9A7B3F2A6D5E8C9B01"],  # upper-case hex
    ["4c1d0e9a7b3f"],  # a 12-hex card pseudonym's length
    ["4c1d0e9a7b3f2a6d5e8c9b0g"],
    ["4c1d0e9a7b3f2a6d5e8c9b01\n"],
    [" 4c1d0e9a7b3f2a6d5e8c9b01"],
    ["card:0b7c6f1e-2d1a-4c7e-9d47-5a9f1c1d2e3f"],
    ["4c1d0e9a7b3f2a6d5e8c9b01", 42],
    [None],
    "4c1d0e9a7b3f2a6d5e8c9b01",
    {"4c1d0e9a7b3f2a6d5e8c9b01": True},
    None,
]


@pytest.mark.parametrize("linked", BAD_LINKED_SUBJECTS, ids=repr)
def test_linked_subjects_that_are_not_subjects_are_refused(linked: Any) -> None:
    with pytest.raises(SceneError, match="hospital scene data is not valid: linked_subjects"):
        Adapter.parse_data({"linked_subjects": linked})


def test_refusal_of_a_patient_number_does_not_repeat_it() -> None:
    with pytest.raises(SceneError, match="24 lowercase hex") as refused:
        Adapter.parse_data({"linked_subjects": ["4c1d0e9a7b3f2a6d5e8c9b01", PATIENT_NUMBER]})
    assert PATIENT_NUMBER not in str(refused.value)
    assert "linked_subjects.1" in str(refused.value)


def test_kiosk_with_malformed_linked_subjects_in_its_bundle_is_refused(
    issuer: TestIssuer, rp_key: bytes
) -> None:
    with pytest.raises(SceneError, match="linked_subjects"):
        kiosk(issuer, rp_key, [PATIENT_NUMBER])


def test_a_million_linked_subjects_are_accepted_and_one_more_is_refused() -> None:
    subjects = [f"{n:024x}" for n in range(MAX_LINKED_SUBJECTS + 1)]
    data = Adapter.parse_data({"linked_subjects": subjects[:-1]})
    assert len(data.linked_subjects) == MAX_LINKED_SUBJECTS
    with pytest.raises(SceneError, match="linked_subjects"):
        Adapter.parse_data({"linked_subjects": subjects})


def test_scene_data_read_back_as_dumped_is_the_same_data() -> None:
    subjects = ["9e2a41d07c6b5f3e8a1d2c40", "4c1d0e9a7b3f2a6d5e8c9b01"]
    data = Adapter.parse_data({"linked_subjects": [*subjects, subjects[0]]})
    assert data.linked_subjects == frozenset(subjects)
    dumped = data.model_dump()
    assert dumped["linked_subjects"] == sorted(subjects)
    assert Adapter.parse_data(dumped) == data


def test_the_documented_scene_data_example_is_valid_and_complete() -> None:
    example = re.search(r"```json\n(.*?)```", DOCS.read_text(), re.DOTALL)
    assert example is not None
    document = json.loads(example.group(1))
    assert set(document) == set(Adapter.Data.model_fields)
    assert len(Adapter.parse_data(document).linked_subjects) == 2


def test_every_scene_data_field_reason_and_action_is_documented() -> None:
    text = DOCS.read_text()
    for name, info in Adapter.Data.model_fields.items():
        assert info.description, name
        assert f"`{name}`" in text, name
    for name in Adapter.reasons + Adapter.actions:
        assert f"`{name}`" in text, name
    assert "## Registration desk" in text


def test_terminal_without_an_adapter_class_uses_the_hospital_adapter(
    issuer: TestIssuer, rp_key: bytes
) -> None:
    gate = kiosk(issuer, rp_key)
    assert type(gate.decider.adapter) is Adapter
    assert "not_registered" in Adapter.known_reasons()


# -- linked_subjects in every shipped scene ------------------------------------------------


#: The least valid scene data of each shipped scene (a car park has no default price, a job
#: fair no default days or stands).
LEAST_DATA: dict[str, dict[str, Any]] = {
    "parking": {"unit_fee": 500},
    "merchant": {
        "discounts": [
            {"name": "senior", "age_from": "age_60_64", "percent": 5, "funded_by": "merchant"}
        ]
    },
    "employment": {"days": ["2026-12-05"], "stands": {"a-1": {"employer": "东湖科技"}}},
    "transport": {"lines": {"1": 200}},
}


@pytest.mark.parametrize("scene", SCENES)
def test_every_shipped_scene_takes_linked_subjects_and_defaults_to_none(scene: str) -> None:
    adapter = load_adapter(scene)
    least = LEAST_DATA.get(scene, {})
    assert adapter.parse_data(least).linked_subjects == frozenset()
    subject = "4c1d0e9a7b3f2a6d5e8c9b01"
    data = adapter.parse_data({**least, "linked_subjects": [subject]})
    assert data.linked_subjects == {subject}


@pytest.mark.parametrize("scene", SCENES)
@pytest.mark.parametrize("linked", BAD_LINKED_SUBJECTS[:4], ids=repr)
def test_every_shipped_scene_refuses_malformed_linked_subjects(scene: str, linked: Any) -> None:
    adapter = load_adapter(scene)
    assert issubclass(adapter.Data, SceneData)
    with pytest.raises(SceneError, match=f"{scene} scene data is not valid: linked_subjects"):
        adapter.parse_data({**LEAST_DATA.get(scene, {}), "linked_subjects": linked})


# -- privacy -------------------------------------------------------------------------------


def test_results_carry_no_personal_data(issuer: TestIssuer, rp_key: bytes) -> None:
    patient = random_card(status_index=4242, age_band=AgeBand.AGE_80_PLUS)
    subject = hospital_subject(rp_key, patient)
    gate = kiosk(issuer, rp_key, [subject])
    decisions = [
        scan(gate, issuer, patient, NOW),
        scan(gate, issuer, random_card(), NOW),
        gate.scan(issuer.mint(patient, at=NOW - 600), at=NOW),
    ]
    assert [d.reason for d in decisions] == ["ok", "not_registered", "expired"]
    secrets_of_the_card = {patient.pseudonym.hex(), subject, str(patient.status_index)}
    for decision in decisions:
        assert decision.subject is None  # the journal records the scan's own subject
        assert set(decision.result) <= {"linked"}
        assert all(type(value) is bool for value in decision.result.values())
        assert not secrets_of_the_card & {str(value) for value in decision.result.values()}
