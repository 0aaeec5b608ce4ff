"""Merchants (商业应用): a shop's till grants the resident, senior or programme discounts the
shop takes part in, within a per-citizen daily cap, and the city reimburses the discounts it
funds from the uploaded journal (the site's daily settlement file)."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Annotated, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from idcode.claims import AgeBand, Card, Programme, Residency
from idcode.errors import SceneError
from idcode.reasons import Reason
from idcode.scenes import (
    Decision,
    Event,
    History,
    ResultValue,
    Scan,
    SceneAdapter,
    SceneContext,
    SceneData,
)

DISCOUNT = "discount"

NOT_ELIGIBLE = "not_eligible"
DAILY_CAP_REACHED = "daily_cap_reached"
DISCOUNT_NOT_OFFERED = "discount_not_offered"

CITY = "city"  # a discount's funded_by: the city reimburses it (the other: "merchant")

#: Most discounts one merchant takes part in. Each answer a till gets is one coarse yes/no; a
#: few discounts keep what a till can learn about a customer from them as coarse as the rules.
MAX_DISCOUNTS = 4
#: 1,000 yuan: far above any discount on one purchase; catches an amount in the wrong unit.
MAX_FEN = 100_000
DISCOUNT_NAME = r"^[a-z][a-z0-9_]{0,31}$"
_DISCOUNT_NAME = re.compile(DISCOUNT_NAME)

#: The senior age bands by their names in scene data (``AgeBand`` members, lower case).
SeniorBand = Literal["age_60_64", "age_65_69", "age_70_79", "age_80_plus"]
#: Programme flags by their names in scene data (``Programme`` members, lower case).
ProgrammeName = Literal[
    "home_care", "meal_subsidy", "disability", "low_income", "veteran", "student"
]
Fen = Annotated[int, Field(ge=1, le=MAX_FEN)]


class Discount(BaseModel):
    """One discount the merchant takes part in: who gets it (every condition given must hold),
    how much, and who pays for it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(
        pattern=DISCOUNT_NAME,
        description="The discount's name on the till and in the journal (senior, resident ...): "
        "1-32 of a-z, 0-9 and _, starting with a letter.",
    )
    age_from: SeniorBand | None = Field(
        default=None,
        description="The youngest age band that gets it (age_60_64 for 60+, age_65_69 for 65+); "
        "a card without an age band never does. null: no age condition.",
    )
    residency: Literal["registered", "registered_or_permit"] | None = Field(
        default=None,
        description="registered: registered residents of the city (户籍) only; "
        "registered_or_permit: also holders of the city's residence permit (居住证). "
        "null: no residency condition.",
    )
    programmes: tuple[ProgrammeName, ...] = Field(
        default=(),
        max_length=6,
        description="The card must be in at least one of these programmes (low_income, "
        "disability ...). Empty: no programme condition.",
    )
    percent: int | None = Field(
        default=None,
        ge=1,
        le=100,
        description="A percentage off the purchase (10: 10 % off). Merchant-funded only: the "
        "city cannot reimburse an amount the journal does not hold.",
    )
    max_fen: Fen | None = Field(
        default=None, description="With percent: the most fen the discount takes off a purchase."
    )
    amount_fen: Fen | None = Field(
        default=None, description="A fixed amount off the purchase, in fen."
    )
    funded_by: Literal["city", "merchant"] = Field(
        description="Who pays for it: the city reimburses the merchant through the daily "
        "settlement (fixed amounts only), or the merchant grants it at its own cost."
    )

    @model_validator(mode="after")
    def _coherent(self) -> Discount:
        if self.age_from is None and self.residency is None and not self.programmes:
            raise ValueError(
                f"discount {self.name}: give at least one condition (age_from, residency or "
                "programmes); a discount for everyone is a price, not a discount"
            )
        if len(set(self.programmes)) != len(self.programmes):
            raise ValueError(f"discount {self.name}: a programme is listed twice")
        if (self.percent is None) == (self.amount_fen is None):
            raise ValueError(f"discount {self.name}: give exactly one of percent and amount_fen")
        if self.max_fen is not None and self.percent is None:
            raise ValueError(f"discount {self.name}: max_fen caps a percent discount only")
        if self.funded_by == CITY and self.amount_fen is None:
            raise ValueError(
                f"discount {self.name}: a city-funded discount must be a fixed amount_fen "
                "(the settlement reimburses per use; the purchase's amount is never journaled)"
            )
        return self

    def applies_to(self, card: Card) -> bool:
        """Whether the card holder gets this discount, from the code's coarse attributes."""
        # AgeBand.UNKNOWN is below every band: a card without an age band never qualifies.
        if self.age_from is not None and card.age_band < AgeBand[self.age_from.upper()]:
            return False
        if self.residency is not None:
            allowed = (
                (Residency.REGISTERED,)
                if self.residency == "registered"
                else (Residency.REGISTERED, Residency.PERMIT)
            )
            if card.residency not in allowed:
                return False
        if self.programmes:
            flags = Programme.NONE
            for name in self.programmes:
                flags |= Programme[name.upper()]
            if not card.programmes & flags:
                return False
        return True

    def size(self) -> dict[str, ResultValue]:
        """The discount's size and funding as the decision line carries them."""
        if self.percent is not None:
            return {"percent": self.percent, "max_fen": self.max_fen, "funded_by": self.funded_by}
        return {"amount_fen": self.amount_fen, "funded_by": self.funded_by}


class MerchantData(SceneData):
    """One merchant's discounts and daily cap, as the trust bundles of its tills carry them."""

    discounts: tuple[Discount, ...] = Field(
        min_length=1,
        max_length=MAX_DISCOUNTS,
        description="The discounts the merchant takes part in, best first: a till that asks "
        "for no discount in particular grants the first one that applies.",
    )
    daily_uses: int = Field(
        default=1,
        ge=1,
        le=20,
        description="Discounted purchases per citizen per local day at this merchant, all "
        "discounts together (the per-citizen daily cap).",
    )

    @model_validator(mode="after")
    def _names_are_unique(self) -> MerchantData:
        names = [discount.name for discount in self.discounts]
        if len(set(names)) != len(names):
            raise ValueError("two discounts have the same name")
        return self

    def discount(self, name: str) -> Discount | None:
        return next((d for d in self.discounts if d.name == name), None)


class Adapter(SceneAdapter):
    """A shop's till. Option ``discount=<name>``: the till asks for that discount only (a
    till's "senior discount" key); without it, the first of the merchant's discounts that
    applies. The decision says only whether the customer gets it and how much: never the age
    band, residency or programmes behind it, and no subject (each merchant has its own)."""

    scene: ClassVar[str] = "merchant"
    Data: ClassVar[type[SceneData]] = MerchantData
    reasons: ClassVar[tuple[str, ...]] = (NOT_ELIGIBLE, DAILY_CAP_REACHED, DISCOUNT_NOT_OFFERED)
    actions: ClassVar[tuple[str, ...]] = (DISCOUNT,)
    subject_scope: ClassVar[str] = "site"
    settlement_columns: ClassVar[tuple[str, ...]] = (
        "uses",
        "over_cap",
        "reimbursed_uses",
        "reimbursed_fen",
    )

    @classmethod
    def check_options(cls, options: Mapping[str, str]) -> None:
        asked = options.get(DISCOUNT)
        if asked is not None and not _DISCOUNT_NAME.fullmatch(asked):
            raise SceneError(
                "a merchant till's option discount must name a discount (1-32 of a-z, 0-9 "
                f"and _), got {asked[:40]!r}"
            )

    def __init__(self, context: SceneContext) -> None:
        super().__init__(context)
        if not isinstance(context.data, MerchantData):
            raise SceneError("merchant scene data must be MerchantData")
        self.check_options(context.options)
        self.merchant = context.data
        self.asked = context.options.get(DISCOUNT)

    def decide_valid(self, scan: Scan, card: Card, subject: str, history: History) -> Decision:
        merchant = self.merchant
        if self.asked is not None:
            asked = merchant.discount(self.asked)
            if asked is None:
                # The merchant no longer takes part in it (a new bundle): every customer hears
                # the same, so it says nothing about them.
                return Decision.deny(DISCOUNT_NOT_OFFERED, DISCOUNT, discount=self.asked)
            if not asked.applies_to(card):
                return Decision.deny(NOT_ELIGIBLE, DISCOUNT, discount=asked.name)
            granted = asked
        else:
            found = next((d for d in merchant.discounts if d.applies_to(card)), None)
            if found is None:
                return Decision.deny(NOT_ELIGIBLE, DISCOUNT)
            granted = found
        today = self.context.day_start(scan.at)
        used = history.count(since=today, subject=subject, action=DISCOUNT)
        if used >= merchant.daily_uses:
            return Decision.deny(
                DAILY_CAP_REACHED, DISCOUNT, discount=granted.name, daily_uses=merchant.daily_uses
            )
        result: dict[str, ResultValue] = {
            "discount": granted.name,
            **granted.size(),
            "use": used + 1,
            "uses_left": merchant.daily_uses - used - 1,
        }
        return Decision(True, Reason.OK.value, DISCOUNT, MappingProxyType(result))

    @classmethod
    def settle(cls, data: SceneData, events: Sequence[Event]) -> Mapping[str, int]:
        """One customer's day at the merchant, across all its tills: the discounts granted
        (``uses``), those beyond the daily cap (``over_cap``: tills with separate journals
        cannot see each other's uses offline), and what the city reimburses for the first
        ``daily_uses`` of them: the amount of each city-funded discount, as the merchant's
        data says now and never more than the till recorded."""
        if not isinstance(data, MerchantData):
            raise SceneError("merchant scene data must be MerchantData")
        granted = [e for e in events if e.admitted and e.action == DISCOUNT]
        reimbursed_uses = reimbursed_fen = 0
        for event in granted[: data.daily_uses]:
            name = event.result.get("discount")
            discount = data.discount(name) if isinstance(name, str) else None
            recorded = event.result.get("amount_fen")
            if (
                discount is None
                or discount.funded_by != CITY
                or discount.amount_fen is None
                or type(recorded) is not int
                or recorded <= 0
            ):
                continue
            reimbursed_uses += 1
            reimbursed_fen += min(recorded, discount.amount_fen)
        return {
            "uses": len(granted),
            "over_cap": max(0, len(granted) - data.daily_uses),
            "reimbursed_uses": reimbursed_uses,
            "reimbursed_fen": reimbursed_fen,
        }
