"""Residential community gates (智慧住宅小区): residents enter with their citizen code, guests
with a resident's visitor pass (idcode.visitorpass), both verified offline."""

from __future__ import annotations

from typing import Annotated, ClassVar

from pydantic import Field

from idcode.claims import Card
from idcode.errors import SceneError
from idcode.scenes import (
    SUBJECT_PATTERN,
    Decision,
    History,
    Scan,
    SceneAdapter,
    SceneContext,
    SceneData,
)
from idcode.visitorpass import pass_prefix, verify_pass

Subject = Annotated[str, Field(pattern=SUBJECT_PATTERN)]

# The largest estates (万人小区) house tens of thousands of people; the bound keeps a
# mistaken upload from growing every gate's bundle without limit.
MAX_RESIDENTS = 100_000


class CommunityData(SceneData):
    """The scene data of one community (its site), as its gates receive it."""

    residents: list[Subject] = Field(
        default_factory=list,
        max_length=MAX_RESIDENTS,
        description=(
            "Community subjects of the residents (the service turns 'card:<id>' into them). "
            "Only they enter with their citizen code, and only they can host visitors."
        ),
    )
    visitors: bool = Field(
        default=True, description="Admit guests with a visitor pass issued for this community."
    )
    visitor_entries_per_pass: int | None = Field(
        default=None,
        ge=1,
        le=1000,
        description=(
            "How often one pass may open the gate within its window (counted in the journal "
            "the community's gates share); none: as often as the window allows."
        ),
    )


class Adapter(SceneAdapter):
    """Residents by citizen code; guests by a visitor pass for this community."""

    scene: ClassVar[str] = "community"
    Data: ClassVar[type[SceneData]] = CommunityData
    reasons: ClassVar[tuple[str, ...]] = (
        "not_resident",
        "visitors_not_accepted",
        "wrong_community",
        "host_not_resident",
        "pass_used_up",
    )
    actions: ClassVar[tuple[str, ...]] = ("resident", "visitor")

    def __init__(self, context: SceneContext) -> None:
        super().__init__(context)
        data = context.data
        if not isinstance(data, CommunityData):
            raise SceneError("community scene data must come from Adapter.parse_data")
        self.community = data
        self.residents = frozenset(data.residents)
        self.pass_prefix = pass_prefix(context.trust.prefix)

    def decide(self, scan: Scan, history: History) -> Decision:
        # A pass is not a code: the code verifier calls it unknown_prefix. Route it to the
        # pass check before the base class would deny it with that verdict.
        if scan.text.startswith(self.pass_prefix):
            return self.decide_pass(scan, history)
        return super().decide(scan, history)

    def decide_valid(self, scan: Scan, card: Card, subject: str, history: History) -> Decision:
        if subject not in self.residents:
            return Decision.deny("not_resident")
        return Decision.admit("resident")

    def decide_pass(self, scan: Scan, history: History) -> Decision:
        if not self.community.visitors:
            # First: whatever the pass, this gate does not take passes, and the guest should
            # hear that rather than a verdict on the pass.
            return Decision.deny("visitors_not_accepted")
        verdict = verify_pass(scan.text, self.context.trust, scan.at)
        claims = verdict.claims
        if not verdict.valid or claims is None:
            return Decision.deny(verdict.reason.value)
        # The journal knows a pass only by its id keyed for this scene: it can count the
        # pass's entries, but learns neither the guest nor (from the subject) the host.
        subject = self.context.subject(claims.pass_id)
        if claims.community != self.context.site:
            return Decision.deny("wrong_community", subject=subject)
        if claims.host_subject not in self.residents:
            # A host who moved out (or was removed) no longer lets guests in: the one way to
            # stop a pass before its window ends, effective at the gates' next sync.
            return Decision.deny("host_not_resident", subject=subject)
        since = min(claims.valid_from, claims.issued_at) - self.context.trust.clock_skew
        entries = history.count(since=since, subject=subject, action="visitor")
        limit = self.community.visitor_entries_per_pass
        if limit is not None and entries >= limit:
            return Decision.deny("pass_used_up", subject=subject, entries=entries)
        if limit is None:
            return Decision.admit("visitor", subject=subject, entry=entries + 1)
        return Decision.admit(
            "visitor", subject=subject, entry=entries + 1, entries_left=limit - entries - 1
        )
