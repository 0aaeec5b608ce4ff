"""Scenic-spot turnstiles (智慧旅游): admit with the cheapest ticket class the code's attributes
give at this site, once per person per local day (or free re-entry), within capacity and hours.
"""

from __future__ import annotations

import re
from typing import Annotated, ClassVar, Literal, get_args

from pydantic import Field, StrictBool, field_validator, model_validator

from idcode.claims import AgeBand, Card, Programme, Residency
from idcode.errors import SceneError
from idcode.scenes import Decision, History, Scan, SceneAdapter, SceneContext, SceneData

TicketClass = Literal[
    "under_6",
    "child",
    "elder",
    "senior",
    "disability",
    "veteran",
    "low_income",
    "student",
    "resident",
    "standard",
]
#: Every ticket class, in the order that breaks ties between classes of the same price: the
#: narrower class first (under_6 within child, elder within senior), age before programme
#: before residency, so the ticket names the most specific reason for that price.
TICKET_CLASSES: tuple[TicketClass, ...] = get_args(TicketClass)
SeniorBand = Literal["age_60_64", "age_65_69", "age_70_79", "age_80_plus"]

#: 10,000 yuan: far above any ticket, low enough to catch a price typed with digits to spare.
MAX_PRICE = 1_000_000
MAX_DAILY_CAPACITY = 10_000_000
MINUTES_PER_DAY = 1440
_CLOCK_TIME = re.compile(r"(\d{2}):(\d{2})")
_PROGRAMME_CLASSES: dict[str, Programme] = {
    "disability": Programme.DISABILITY,
    "veteran": Programme.VETERAN,
    "low_income": Programme.LOW_INCOME,
    "student": Programme.STUDENT,
}

#: Pairs (narrow, wide) where every visitor of the narrow class also has the wide one.
_WITHIN: tuple[tuple[TicketClass, TicketClass], ...] = (
    ("under_6", "child"),
    ("elder", "senior"),
    *((ticket, "standard") for ticket in TICKET_CLASSES if ticket != "standard"),
)
#: The default tariff: admission free for everyone (many parks and museums), still counted.
_FREE_ADMISSION: dict[TicketClass, int] = {"standard": 0}

Price = Annotated[int, Field(strict=True, ge=0, le=MAX_PRICE)]
DailyCapacity = Annotated[int, Field(strict=True, ge=1, le=MAX_DAILY_CAPACITY)]
MinuteOfDay = Annotated[int, Field(strict=True, ge=0, le=MINUTES_PER_DAY)]


class TourismData(SceneData):
    """A scenic spot's tariff and rules."""

    prices: dict[TicketClass, Price] = Field(
        default_factory=lambda: _FREE_ADMISSION.copy(),
        description=(
            "Price in fen of each ticket class the site offers; 'standard' is required, a class "
            "left out is not offered. Classes: under_6 (age band under_6), child (under 18, "
            "under_6 included), senior (from senior_from), elder (from elder_from), resident "
            "(registered residency; permit holders too with resident_includes_permit), "
            "disability, veteran, low_income, student (the card's programmes), standard "
            "(everyone). A visitor gets the cheapest class that applies."
        ),
    )
    senior_from: SeniorBand = Field(
        default="age_60_64",
        description="The youngest age band of the 'senior' class.",
    )
    elder_from: SeniorBand = Field(
        default="age_65_69",
        description=(
            "The youngest age band of the 'elder' class, older than senior_from: the second "
            "senior step (e.g. 60+ half price, 65+ free)."
        ),
    )
    resident_includes_permit: StrictBool = Field(
        default=False,
        description="Residence-permit holders get the 'resident' class too, not only registered "
        "residents.",
    )
    reentry: StrictBool = Field(
        default=False,
        description="A visitor admitted today may enter again the same local day, free and "
        "outside the capacity; otherwise a second entry is denied.",
    )
    daily_capacity: DailyCapacity | None = Field(
        default=None,
        description="First entries admitted per local day (all of the site's turnstiles that "
        "share a journal); none: unlimited.",
    )
    opens_at: MinuteOfDay = Field(
        default=0,
        description="First admission, local time: minutes after midnight or 'HH:MM'.",
    )
    closes_at: MinuteOfDay = Field(
        default=MINUTES_PER_DAY,
        description="End of admission (exclusive), local time: minutes after midnight or "
        "'HH:MM' ('24:00' for midnight); after opens_at, within the same day.",
    )

    @field_validator("opens_at", "closes_at", mode="before")
    @classmethod
    def _minutes_of_clock_time(cls, value: object) -> object:
        if not isinstance(value, str):
            return value  # an integer (or junk, which the strict int check refuses)
        match = _CLOCK_TIME.fullmatch(value)
        if match is None or int(match[2]) > 59:
            raise ValueError("a time of day is minutes after midnight or 'HH:MM'")
        return int(match[1]) * 60 + int(match[2])

    @model_validator(mode="after")
    def _consistent(self) -> TourismData:
        if "standard" not in self.prices:
            raise ValueError("prices must include 'standard', the class every visitor has")
        prices = self.prices
        if (
            "elder" in prices
            and "senior" in prices
            and AgeBand[self.elder_from.upper()] <= AgeBand[self.senior_from.upper()]
        ):
            raise ValueError("elder_from must be an older age band than senior_from")
        for narrow, wide in _WITHIN:
            # Whoever has the narrow class has the wide one too, and the cheaper one wins:
            # a narrow class priced above its wide one would never be sold (swapped prices?).
            if narrow in prices and wide in prices and prices[narrow] > prices[wide]:
                raise ValueError(
                    f"prices: {narrow!r} costs more than {wide!r}, which every {narrow!r} "
                    f"visitor also has, so it would never be sold"
                )
        if self.closes_at <= self.opens_at:
            # Overnight hours would split one visit over two local days (and two tickets).
            raise ValueError("closes_at must be after opens_at on the same day")
        return self


class Adapter(SceneAdapter):
    """A scenic spot's entry turnstile."""

    scene: ClassVar[str] = "tourism"
    Data: ClassVar[type[SceneData]] = TourismData
    reasons: ClassVar[tuple[str, ...]] = ("closed", "already_entered_today", "capacity_reached")
    actions: ClassVar[tuple[str, ...]] = ("entry", "reentry")

    rules: TourismData

    def __init__(self, context: SceneContext) -> None:
        super().__init__(context)
        if not isinstance(context.data, TourismData):
            raise SceneError("the tourism adapter needs tourism scene data")
        self.rules = context.data
        rank = {ticket: index for index, ticket in enumerate(TICKET_CLASSES)}
        prices = self.rules.prices
        # The site's one precedence order: cheapest first, ties by TICKET_CLASSES. The first
        # class in it that applies is therefore always the cheapest that applies.
        self.precedence: tuple[TicketClass, ...] = tuple(
            sorted(prices, key=lambda ticket: (prices[ticket], rank[ticket]))
        )
        self.senior_from = AgeBand[self.rules.senior_from.upper()]
        self.elder_from = AgeBand[self.rules.elder_from.upper()]
        self.resident_statuses = frozenset(
            {Residency.REGISTERED, Residency.PERMIT}
            if self.rules.resident_includes_permit
            else {Residency.REGISTERED}
        )

    def applies(self, ticket: TicketClass, card: Card) -> bool:
        """Whether the card's attributes entitle it to ``ticket``."""
        band = card.age_band
        if ticket == "under_6":
            return band == AgeBand.UNDER_6
        if ticket == "child":
            return band in (AgeBand.UNDER_6, AgeBand.AGE_6_17)
        if ticket == "senior":
            return band >= self.senior_from  # UNKNOWN (0) is never at or above a senior band
        if ticket == "elder":
            return band >= self.elder_from
        if ticket == "resident":
            return card.residency in self.resident_statuses
        if ticket == "standard":
            return True
        return _PROGRAMME_CLASSES[ticket] in card.programmes

    def ticket_for(self, card: Card) -> TicketClass:
        """The cheapest ticket class the card is entitled to at this site."""
        # Data guarantees 'standard' is in the precedence, and it always applies.
        return next(ticket for ticket in self.precedence if self.applies(ticket, card))

    def decide_valid(self, scan: Scan, card: Card, subject: str, history: History) -> Decision:
        today = self.context.day_start(scan.at)
        minute = (scan.at - today) // 60
        if not self.rules.opens_at <= minute < self.rules.closes_at:
            return Decision.deny("closed")
        if history.last(subject=subject, action="entry", since=today) is not None:
            if not self.rules.reentry:
                return Decision.deny("already_entered_today")
            # Paid today already; re-entries are outside the capacity, which counts visitors.
            return Decision.admit("reentry", ticket=self.ticket_for(card), price=0)
        capacity = self.rules.daily_capacity
        if capacity is not None and history.count(since=today, action="entry") >= capacity:
            return Decision.deny("capacity_reached")
        ticket = self.ticket_for(card)
        return Decision.admit("entry", ticket=ticket, price=self.rules.prices[ticket])
