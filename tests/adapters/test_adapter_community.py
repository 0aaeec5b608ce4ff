"""The community gate: residents by citizen code, guests by a resident's visitor pass, as an
integrator tests it with TestIssuer and TestTerminal."""

from __future__ import annotations

from typing import Any

import pytest

from idcode.claims import Card
from idcode.codetext import decode_body, encode_body
from idcode.cose import decode_sign1, encode_sign1
from idcode.errors import SceneError
from idcode.reasons import Reason
from idcode.scenes import DAY, Decision, MemoryHistory, scene_subject_key, subject_of
from idcode.testing import TestIssuer, TestTerminal, random_card
from idcode.visitorpass import MAX_PASS_WINDOW, PassClaims, sign_pass
from idcode_adapters.community import Adapter
from tests.conftest import NOW

SITE = "garden-court"
# NOW is 2026-12-01 16:00 in China (UTC+8): local midnight is eight hours later.
LOCAL_MIDNIGHT = NOW + 8 * 3600


@pytest.fixture
def resident() -> Card:
    return random_card(status_index=7)


def gate_for(
    issuer: TestIssuer,
    residents: list[Card],
    *,
    history: MemoryHistory | None = None,
    revoked: tuple[int, ...] = (),
    site: str = SITE,
    **data: Any,
) -> TestTerminal:
    subjects = [issuer.subject(card, "community") for card in residents]
    bundle = issuer.bundle("community", site, {"residents": subjects, **data}, revoked=revoked)
    return TestTerminal(bundle, history=history)


def pass_subject(issuer: TestIssuer, pass_id: bytes) -> str:
    """What the gate journals for a pass: its id keyed with the community scene's key."""
    return subject_of(scene_subject_key(issuer.city_key, "community"), pass_id)


# -- residents -------------------------------------------------------------------------------


def test_resident_with_a_valid_code_is_admitted_as_resident(
    issuer: TestIssuer, resident: Card
) -> None:
    gate = gate_for(issuer, [resident])
    decision = gate.scan(issuer.mint(resident))
    assert (decision.admitted, decision.reason, decision.action) == (True, "ok", "resident")
    assert dict(decision.result) == {}
    assert gate.history.events[-1].subject == issuer.subject(resident, "community")


def test_citizen_who_is_not_a_resident_is_denied_with_reason_not_resident(
    issuer: TestIssuer, resident: Card
) -> None:
    gate = gate_for(issuer, [resident])
    decision = gate.scan(issuer.mint(random_card()))
    assert (decision.admitted, decision.reason) == (False, "not_resident")


def test_revoked_residents_code_is_denied_with_reason_revoked(
    issuer: TestIssuer, resident: Card
) -> None:
    gate = gate_for(issuer, [resident], revoked=(resident.status_index,))
    decision = gate.scan(issuer.mint(resident))
    assert (decision.admitted, decision.reason) == (False, Reason.REVOKED.value)


def test_expired_code_is_denied_with_reason_expired(issuer: TestIssuer, resident: Card) -> None:
    gate = gate_for(issuer, [resident])
    decision = gate.scan(issuer.mint(resident, at=NOW), at=NOW + 60 + 30)
    assert (decision.admitted, decision.reason) == (False, Reason.EXPIRED.value)


def test_replayed_code_is_denied_with_reason_replayed(issuer: TestIssuer, resident: Card) -> None:
    gate = gate_for(issuer, [resident])
    code = issuer.mint(resident)
    assert gate.scan(code).admitted
    decision = gate.scan(code, at=NOW + 5)
    assert (decision.admitted, decision.reason) == (False, Reason.REPLAYED.value)


def test_forged_code_is_denied_with_reason_bad_signature(
    issuer: TestIssuer, resident: Card
) -> None:
    impostor = TestIssuer(kid=issuer.kid, now=NOW)
    gate = gate_for(issuer, [resident])
    assert gate.scan(impostor.mint(resident)).reason == Reason.BAD_SIGNATURE.value


def test_residents_enter_at_any_hour_of_the_local_day(issuer: TestIssuer, resident: Card) -> None:
    gate = gate_for(issuer, [resident])
    for at in (LOCAL_MIDNIGHT - 60, LOCAL_MIDNIGHT + 60):
        assert gate.scan(issuer.mint(resident, at=at), at=at).action == "resident"


# -- visitor passes --------------------------------------------------------------------------


def test_pass_for_this_community_within_its_window_admits_a_visitor_under_the_pass_subject(
    issuer: TestIssuer, resident: Card
) -> None:
    gate = gate_for(issuer, [resident])
    pass_id = bytes.fromhex("0102030405060708")
    text = issuer.visitor_pass(resident, SITE, pass_id=pass_id)

    decision = gate.scan(text, at=NOW + 600)

    assert (decision.admitted, decision.reason, decision.action) == (True, "ok", "visitor")
    assert decision.subject == pass_subject(issuer, pass_id)
    assert dict(decision.result) == {"entry": 1}
    assert gate.history.events[-1].subject == pass_subject(issuer, pass_id)


def test_a_pass_opens_the_gate_again_within_its_window_and_counts_its_entries(
    issuer: TestIssuer, resident: Card
) -> None:
    gate = gate_for(issuer, [resident])
    text = issuer.visitor_pass(resident, SITE)
    entries = [gate.scan(text, at=NOW + hour * 3600).result["entry"] for hour in range(4)]
    assert entries == [1, 2, 3, 4]


@pytest.mark.parametrize(
    ("offset", "reason"),
    [(-31, "not_yet_valid"), (-30, "ok"), (DAY + 29, "ok"), (DAY + 30, "expired")],
    ids=["before-start", "start-minus-skew", "end-plus-skew-minus-1", "end-plus-skew"],
)
def test_pass_outside_its_window_is_denied_with_the_verifier_reason(
    issuer: TestIssuer, resident: Card, offset: int, reason: str
) -> None:
    gate = gate_for(issuer, [resident])
    start = NOW + 3600
    text = issuer.visitor_pass(resident, SITE, valid_from=start, valid_until=start + DAY)
    decision = gate.scan(text, at=start + offset)
    assert (decision.admitted, decision.reason) == (reason == "ok", reason)


def test_pass_ending_at_local_midnight_admits_at_2359_and_not_at_0001(
    issuer: TestIssuer, resident: Card
) -> None:
    gate = gate_for(issuer, [resident])
    text = issuer.visitor_pass(resident, SITE, valid_until=LOCAL_MIDNIGHT)
    assert gate.scan(text, at=LOCAL_MIDNIGHT - 60).admitted
    assert gate.scan(text, at=LOCAL_MIDNIGHT + 60).reason == "expired"


def test_pass_for_another_community_is_denied_with_reason_wrong_community(
    issuer: TestIssuer, resident: Card
) -> None:
    gate = gate_for(issuer, [resident])
    pass_id = bytes(8)
    decision = gate.scan(issuer.visitor_pass(resident, "river-view", pass_id=pass_id))
    assert (decision.admitted, decision.reason) == (False, "wrong_community")
    assert decision.subject == pass_subject(issuer, pass_id)


def test_pass_with_a_tampered_community_is_denied_with_reason_bad_signature(
    issuer: TestIssuer, resident: Card
) -> None:
    gate = gate_for(issuer, [resident])
    text = issuer.visitor_pass(resident, "river-view")
    message = decode_sign1(decode_body(text.removeprefix("WH1P:")))
    original = PassClaims.from_cbor(message.payload)
    moved = PassClaims(
        original.valid_from,
        original.valid_until,
        original.issued_at,
        original.pass_id,
        SITE,
        original.host,
    )
    forged = "WH1P:" + encode_body(
        encode_sign1(message.protected, moved.to_cbor(), message.signature)
    )
    decision = gate.scan(forged)
    assert (decision.admitted, decision.reason, decision.subject) == (
        False,
        "bad_signature",
        None,
    )


def test_pass_signed_by_an_unknown_key_is_denied_with_reason_unknown_key(
    issuer: TestIssuer, resident: Card
) -> None:
    stranger = TestIssuer(kid="U", now=NOW)
    gate = gate_for(issuer, [resident])
    host = issuer.subject(resident, "community")
    assert gate.scan(stranger.visitor_pass(host, SITE)).reason == "unknown_key"


@pytest.mark.parametrize(
    "text", ["WH1P:", "WH1P:not base45", "WH1P:" + "0" * 600], ids=["empty", "junk", "too-long"]
)
def test_malformed_pass_is_denied_with_reason_malformed(
    issuer: TestIssuer, resident: Card, text: str
) -> None:
    assert gate_for(issuer, [resident]).scan(text).reason == "malformed"


def test_pass_with_a_window_over_seven_days_is_denied_as_malformed(
    issuer: TestIssuer, resident: Card
) -> None:
    claims = PassClaims(
        valid_from=NOW,
        valid_until=NOW + MAX_PASS_WINDOW + 1,
        issued_at=NOW,
        pass_id=bytes(8),
        community=SITE,
        host=bytes.fromhex(issuer.subject(resident, "community")),
    )
    text = sign_pass(claims, issuer.key, issuer.prefix)
    assert gate_for(issuer, [resident]).scan(text).reason == "malformed"


def test_pass_of_another_deployment_is_denied_with_reason_unknown_prefix(
    issuer: TestIssuer, resident: Card
) -> None:
    elsewhere = TestIssuer(deployment="SZ", now=NOW)
    text = elsewhere.visitor_pass(issuer.subject(resident, "community"), SITE)
    assert gate_for(issuer, [resident]).scan(text).reason == "unknown_prefix"


def test_passes_are_refused_with_visitors_not_accepted_when_visitors_are_off(
    issuer: TestIssuer, resident: Card
) -> None:
    gate = gate_for(issuer, [resident], visitors=False)
    decision = gate.scan(issuer.visitor_pass(resident, SITE))
    assert (decision.admitted, decision.reason) == (False, "visitors_not_accepted")
    assert gate.scan(issuer.mint(resident)).action == "resident"


def test_pass_whose_host_no_longer_lives_here_is_denied_with_reason_host_not_resident(
    issuer: TestIssuer, resident: Card
) -> None:
    text = issuer.visitor_pass(resident, SITE)
    assert gate_for(issuer, [resident]).scan(text).admitted
    after_moving_out = gate_for(issuer, [random_card()])
    assert after_moving_out.scan(text).reason == "host_not_resident"


def test_entry_limit_per_pass_is_shared_by_gates_with_one_journal_and_counts_only_entries(
    issuer: TestIssuer, resident: Card
) -> None:
    journal = MemoryHistory()
    north = gate_for(issuer, [resident], history=journal, visitor_entries_per_pass=2)
    south = gate_for(issuer, [resident], history=journal, visitor_entries_per_pass=2)
    text = issuer.visitor_pass(resident, SITE)
    other = issuer.visitor_pass(resident, SITE)

    first = north.scan(text, at=NOW + 10)
    assert dict(first.result) == {"entry": 1, "entries_left": 1}
    second = north.scan(text, at=NOW + 15)
    assert dict(second.result) == {"entry": 2, "entries_left": 0}
    third = south.scan(text, at=NOW + 20)

    assert (third.admitted, third.reason, dict(third.result)) == (
        False,
        "pass_used_up",
        {"entries": 2},
    )
    assert south.scan(other, at=NOW + 30).admitted  # each pass has its own count


def test_denied_scans_do_not_count_against_the_entry_limit(
    issuer: TestIssuer, resident: Card
) -> None:
    gate = gate_for(issuer, [resident], visitor_entries_per_pass=1)
    start = NOW + 3600
    text = issuer.visitor_pass(resident, SITE, valid_from=start, valid_until=start + DAY)
    assert gate.scan(text, at=NOW).reason == "not_yet_valid"
    decision = gate.scan(text, at=start)
    assert decision.admitted
    assert dict(decision.result) == {"entry": 1, "entries_left": 0}
    assert gate.scan(text, at=start + 60).reason == "pass_used_up"


def test_stale_trust_denies_codes_and_passes_unless_the_scene_allows_it(
    issuer: TestIssuer, resident: Card
) -> None:
    late = NOW + 48 * 3600  # the test bundle's max-age
    text = issuer.visitor_pass(resident, SITE, valid_until=NOW + 3 * DAY)
    strict = gate_for(issuer, [resident])
    assert strict.scan(issuer.mint(resident, at=late), at=late).reason == "stale_trust"
    assert strict.scan(text, at=late).reason == "stale_trust"
    lenient = gate_for(issuer, [resident], allow_stale=True)
    assert lenient.scan(issuer.mint(resident, at=late), at=late).action == "resident"
    assert lenient.scan(text, at=late).action == "visitor"


def test_results_and_subjects_carry_no_personal_data(issuer: TestIssuer, resident: Card) -> None:
    gate = gate_for(issuer, [resident], visitor_entries_per_pass=3)
    host = issuer.subject(resident, "community")
    decisions: list[Decision] = [
        gate.scan(issuer.mint(resident)),
        gate.scan(issuer.mint(random_card())),
        gate.scan(issuer.visitor_pass(resident, SITE), at=NOW + 1),
        gate.scan(issuer.visitor_pass(resident, "river-view"), at=NOW + 2),
    ]
    for decision in decisions:
        assert decision.reason in (*Adapter.reasons, *(reason.value for reason in Reason))
        assert decision.action in ("", *Adapter.actions)
        for value in decision.result.values():
            assert value is None or type(value) in (int, bool)
    # A guest's entries are journaled under the pass, never under the host who invited them.
    journaled = [event.subject for event in gate.history.events[2:]]
    assert host not in journaled
    assert resident.pseudonym.hex() not in repr(gate.history.events)


# -- scene data ------------------------------------------------------------------------------


def test_scene_data_defaults_accept_visitors_without_an_entry_limit() -> None:
    data = Adapter.parse_data({})
    assert data.model_dump() == {
        "utc_offset_minutes": 480,
        "allow_stale": False,
        "linked_subjects": [],
        "residents": [],
        "visitors": True,
        "visitor_entries_per_pass": None,
    }


@pytest.mark.parametrize(
    "document",
    [
        {"residents": ["a3f09c41d27e"]},
        {"residents": ["A3F09C41D27E5E1F0C2A9B3D"]},
        {"residents": ["card:0b0e8a5e-5c8a-4f7e-9d1a-2f4c6b8e0a1c"]},
        {"residents": "a3f09c41d27e5e1f0c2a9b3d"},
        {"visitors": "sometimes"},
        {"visitor_entries_per_pass": 0},
        {"visitor_entries_per_pass": 1001},
        {"resident": []},
    ],
    ids=[
        "pseudonym-not-subject",
        "upper-case",
        "card-reference",
        "not-a-list",
        "visitors-not-bool",
        "zero-entries",
        "too-many-entries",
        "typo",
    ],
)
def test_invalid_scene_data_is_refused_with_scene_error(document: dict[str, Any]) -> None:
    with pytest.raises(SceneError, match="community scene data is not valid"):
        Adapter.parse_data(document)


def test_a_bundle_with_invalid_scene_data_cannot_make_a_terminal(issuer: TestIssuer) -> None:
    bundle = issuer.bundle("community", SITE, {"residents": ["a3f09c41d27e"]})
    with pytest.raises(SceneError):
        TestTerminal(bundle)
