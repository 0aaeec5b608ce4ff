"""A reading-room gate for the city library (智慧图书馆): a new scene on the idcode SDK.

Card holders who live in the city enter free; visitors only where the library admits them;
one entry per person a day, within the room's daily capacity.
"""

from __future__ import annotations

from pydantic import Field

from idcode.claims import Card, Residency
from idcode.scenes import Decision, History, Scan, SceneAdapter, SceneData


class LibraryData(SceneData):
    daily_capacity: int | None = Field(default=None, ge=1, description="Entries a day.")
    visitors: bool = Field(default=True, description="Admit non-residents too.")


class Adapter(SceneAdapter):
    scene = "library"
    Data = LibraryData
    reasons = ("visitors_not_admitted", "already_entered_today", "capacity_reached")
    actions = ("entry",)

    def decide_valid(self, scan: Scan, card: Card, subject: str, history: History) -> Decision:
        data = self.data
        assert isinstance(data, LibraryData)
        resident = card.residency in (Residency.REGISTERED, Residency.PERMIT)
        if not resident and not data.visitors:
            return Decision.deny("visitors_not_admitted")
        today = self.context.day_start(scan.at)
        if history.count(since=today, subject=subject, action="entry"):
            return Decision.deny("already_entered_today")
        if data.daily_capacity is not None and (
            history.count(since=today, action="entry") >= data.daily_capacity
        ):
            return Decision.deny("capacity_reached")
        return Decision.admit("entry", visitor=not resident)
