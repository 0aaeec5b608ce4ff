"""The decider keeps an adapter inside its scene's closed set of reasons, so a typo fails the
adapter's first test instead of the service refusing its uploads days later."""

from __future__ import annotations

import logging
from typing import ClassVar

import pytest

from idcode.claims import Card
from idcode.decider import ADAPTER_ERROR, UNDECLARED_REASON
from idcode.errors import SceneError
from idcode.reasons import Reason
from idcode.scenes import Decision, History, Scan, SceneAdapter
from idcode.testing import TestIssuer, TestTerminal


class Library(SceneAdapter):
    """A reading room: admits members, denies others with ``not_a_member``."""

    scene = "community"  # a bundle's scene must name the adapter's
    reasons: ClassVar[tuple[str, ...]] = ("not_a_member",)
    actions: ClassVar[tuple[str, ...]] = ("entry",)
    answer: ClassVar[Decision] = Decision.deny("not_a_member")

    def decide_valid(self, scan: Scan, card: Card, subject: str, history: History) -> Decision:
        return self.answer


def terminal(issuer: TestIssuer, answer: Decision, *, strict: bool = True) -> TestTerminal:
    adapter = type("Answering", (Library,), {"answer": answer})
    return TestTerminal(issuer.bundle("community", data={}), adapter, strict=strict)


def test_known_reasons_are_the_verifiers_the_deciders_and_the_adapters_own() -> None:
    known = Library.known_reasons()
    assert {reason.value for reason in Reason} <= known
    assert {ADAPTER_ERROR, UNDECLARED_REASON, "not_a_member"} <= known
    assert "not_a_membre" not in known


def test_declared_denial_is_returned_as_it_is(issuer: TestIssuer) -> None:
    decision = terminal(issuer, Decision.deny("not_a_member")).scan(issuer.mint())
    assert (decision.admitted, decision.reason) == (False, "not_a_member")


def test_test_terminal_raises_naming_a_reason_outside_the_scenes_set(issuer: TestIssuer) -> None:
    gate = terminal(issuer, Decision.deny("not_a_membre"))
    with pytest.raises(SceneError, match=r"'not_a_membre'.*closed set"):
        gate.scan(issuer.mint())


def test_runtime_denies_a_reason_outside_the_set_with_undeclared_reason(
    issuer: TestIssuer, caplog: pytest.LogCaptureFixture
) -> None:
    gate = terminal(issuer, Decision.deny("not_a_membre"), strict=False)
    with caplog.at_level(logging.ERROR, logger="idcode.decider"):
        decision = gate.scan(issuer.mint())
    assert (decision.admitted, decision.reason) == (False, UNDECLARED_REASON)
    assert "not_a_membre" in caplog.text


def test_an_admission_with_another_reason_than_ok_is_denied(issuer: TestIssuer) -> None:
    sloppy = Decision(True, "not_a_member", "entry")
    decision = terminal(issuer, sloppy, strict=False).scan(issuer.mint())
    assert (decision.admitted, decision.reason) == (False, UNDECLARED_REASON)
    with pytest.raises(SceneError, match="an admission"):
        terminal(issuer, sloppy).scan(issuer.mint())


def test_a_denial_with_reason_ok_is_denied_with_undeclared_reason(issuer: TestIssuer) -> None:
    decision = terminal(issuer, Decision(False, "ok"), strict=False).scan(issuer.mint())
    assert (decision.admitted, decision.reason) == (False, UNDECLARED_REASON)


def test_an_adapter_that_raises_denies_with_adapter_error_or_fails_its_test(
    issuer: TestIssuer,
) -> None:
    class Broken(Library):
        def decide_valid(
            self, scan: Scan, card: Card, subject: str, history: History
        ) -> Decision:
            raise KeyError("tariff")

    gate = TestTerminal(issuer.bundle("community", data={}), Broken, strict=False)
    assert gate.scan(issuer.mint()).reason == ADAPTER_ERROR
    strict = TestTerminal(issuer.bundle("community", data={}), Broken)
    with pytest.raises(SceneError, match="raised KeyError"):
        strict.scan(issuer.mint())


@pytest.mark.parametrize(
    "result",
    [
        {"note": "x" * 65},
        {"Bad-Name": 1},
        {f"r{i}": i for i in range(21)},
        {"fee": 1.5},
    ],
    ids=["long-text", "bad-name", "too-many", "float"],
)
def test_results_the_service_would_refuse_fail_at_the_decision(
    issuer: TestIssuer, result: dict[str, object]
) -> None:
    with pytest.raises(SceneError):
        Decision(False, "not_a_member", "", result)  # type: ignore[arg-type]


def test_a_code_the_verifier_refused_keeps_the_verifiers_reason(issuer: TestIssuer) -> None:
    decision = terminal(issuer, Decision.deny("not_a_member")).scan("WH1:garbage")
    assert decision.reason == Reason.MALFORMED.value
