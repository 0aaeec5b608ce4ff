"""Car park barriers (智慧停车): pair each exit with the same subject's entry and charge the
car park's tariff (standard, resident rate or permit)."""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Annotated, ClassVar

from pydantic import Field, model_validator

from idcode.claims import Card, Residency
from idcode.errors import SceneError
from idcode.scenes import (
    SUBJECT_PATTERN,
    Decision,
    Event,
    History,
    Scan,
    SceneAdapter,
    SceneContext,
    SceneData,
)

ENTRY = "entry"
EXIT = "exit"
LANES = (ENTRY, EXIT)
ALREADY_INSIDE = "already_inside"
NO_ENTRY = "no_entry"
STALE_ENTRY = "stale_entry"
MINUTES_PER_DAY = 1440
MAX_FEE = 10_000_000  # fen (100,000 yuan): far above any car park's price, catches typos

Subject = Annotated[str, Field(pattern=SUBJECT_PATTERN)]


class Tariff(StrEnum):
    """Which price list a stay is charged by."""

    PERMIT = "permit"  # a monthly or staff permit of this car park: free
    RESIDENT = "resident"  # a registered resident of the city, where the car park has a rate
    STANDARD = "standard"


class ParkingData(SceneData):
    """One car park's tariff and permits, as its trust bundle carries them."""

    unit_fee: int = Field(
        ge=0,
        le=MAX_FEE,
        description="Fen charged per started unit of a paid stay (standard tariff). Required: "
        "a car park has no sensible default price.",
    )
    unit_minutes: int = Field(
        default=60, ge=1, le=MINUTES_PER_DAY, description="Length of a charged unit in minutes."
    )
    free_minutes: int = Field(
        default=15,
        ge=0,
        le=MINUTES_PER_DAY,
        description="A stay of at most this many whole minutes is free. A longer stay is charged "
        "from its entry: the free minutes are a grace period, not a deduction.",
    )
    daily_cap: int | None = Field(
        default=None,
        ge=0,
        le=MAX_FEE,
        description="Most fen charged for each started 24 hours of a stay, counted from the "
        "entry (not per calendar day). null: no cap.",
    )
    resident_unit_fee: int | None = Field(
        default=None,
        ge=0,
        le=MAX_FEE,
        description="Fen per started unit for card holders registered as residents of the city "
        "(the resident tariff). null: residents pay the standard tariff.",
    )
    lost_ticket_fee: int | None = Field(
        default=None,
        ge=0,
        le=MAX_FEE,
        description="Fen the attendant charges a car leaving without a usable entry record; "
        "shown on the exit lane's screen when the barrier stays shut. null: the attendant "
        "decides.",
    )
    max_stay_hours: int = Field(
        default=72,
        ge=1,
        le=90 * 24,
        description="An entry older than this is taken as abandoned (the car left through an "
        "open barrier): a new entry replaces it and an exit against it goes to the attendant.",
    )
    permits: tuple[Subject, ...] = Field(
        default=(),
        max_length=100_000,
        description="Subjects holding a permit of this car park: they park free.",
    )

    @model_validator(mode="after")
    def _tariff_is_coherent(self) -> ParkingData:
        if self.daily_cap is not None and self.daily_cap < self.unit_fee:
            raise ValueError("daily_cap must be at least unit_fee")
        if self.daily_cap is not None and MINUTES_PER_DAY % self.unit_minutes:
            # Otherwise a unit would straddle two capped 24-hour periods.
            raise ValueError("with a daily_cap, unit_minutes must divide 1440 (24 hours)")
        if self.resident_unit_fee is not None and self.resident_unit_fee > self.unit_fee:
            raise ValueError("resident_unit_fee must not exceed unit_fee")
        if self.free_minutes >= self.max_stay_hours * 60:
            raise ValueError("free_minutes must be shorter than max_stay_hours")
        return self


def _started(amount: int, unit: int) -> int:
    return -(-amount // unit)


class Adapter(SceneAdapter):
    """One lane of a car park: ``lane=entry`` or ``lane=exit``. The lanes of a car park share
    one journal, so an exit lane sees the entries the entry lanes admitted."""

    scene: ClassVar[str] = "parking"
    Data: ClassVar[type[SceneData]] = ParkingData
    reasons: ClassVar[tuple[str, ...]] = (ALREADY_INSIDE, NO_ENTRY, STALE_ENTRY)
    actions: ClassVar[tuple[str, ...]] = (ENTRY, EXIT)

    @classmethod
    def check_options(cls, options: Mapping[str, str]) -> None:
        lane = options.get("lane")
        if lane not in LANES:
            got = "none" if lane is None else repr(lane[:20])
            raise SceneError(
                f"a parking terminal needs the option lane=entry or lane=exit (got {got})"
            )

    def __init__(self, context: SceneContext) -> None:
        super().__init__(context)
        self.check_options(context.options)
        lane = context.options["lane"]
        if not isinstance(context.data, ParkingData):
            raise SceneError("parking scene data must be ParkingData")
        self.lane = lane
        self.car_park = context.data
        self.permits = frozenset(context.data.permits)
        self.max_stay = context.data.max_stay_hours * 3600

    def decide_valid(self, scan: Scan, card: Card, subject: str, history: History) -> Decision:
        tariff = self.tariff(card, subject)
        # Only entries and exits are ever admitted here, so the subject's newest admitted
        # event alone says whether the car is inside; denials never open or close a stay.
        last = history.last(subject=subject)
        open_entry = last if last is not None and last.action == ENTRY else None
        if self.lane == ENTRY:
            return self._entry(scan, open_entry, tariff)
        return self._exit(scan, open_entry, tariff)

    def tariff(self, card: Card, subject: str) -> Tariff:
        """The tariff a card holder parks under, with this bundle's permits and rates."""
        if subject in self.permits:
            return Tariff.PERMIT
        if card.residency is Residency.REGISTERED and self.car_park.resident_unit_fee is not None:
            return Tariff.RESIDENT
        return Tariff.STANDARD

    def fee(self, minutes: int, tariff: Tariff) -> int:
        """Fen owed for a stay of ``minutes`` whole minutes under ``tariff``."""
        car_park = self.car_park
        if tariff is Tariff.PERMIT or minutes <= car_park.free_minutes:
            return 0
        unit_fee = car_park.unit_fee
        if tariff is Tariff.RESIDENT and car_park.resident_unit_fee is not None:
            unit_fee = car_park.resident_unit_fee
        unit = car_park.unit_minutes
        if car_park.daily_cap is None:
            return _started(minutes, unit) * unit_fee
        whole_days, rest = divmod(minutes, MINUTES_PER_DAY)
        full_day = min(car_park.daily_cap, MINUTES_PER_DAY // unit * unit_fee)
        return whole_days * full_day + min(car_park.daily_cap, _started(rest, unit) * unit_fee)

    def _entry(self, scan: Scan, open_entry: Event | None, tariff: Tariff) -> Decision:
        if open_entry is None:
            return Decision.admit(ENTRY, tariff=tariff.value, replaced_stale_entry=False)
        if scan.at - open_entry.at > self.max_stay:
            return Decision.admit(ENTRY, tariff=tariff.value, replaced_stale_entry=True)
        return Decision.deny(
            ALREADY_INSIDE,
            ENTRY,
            tariff=tariff.value,
            duration_minutes=max(0, scan.at - open_entry.at) // 60,
        )

    def _exit(self, scan: Scan, open_entry: Event | None, tariff: Tariff) -> Decision:
        if open_entry is None:
            # The barrier stays shut: admitting with a lost-ticket fee would let a car whose
            # entry went through an open barrier, a dead lane or another car park leave at a
            # price nobody checked. The attendant sees the fee and decides.
            return Decision.deny(
                NO_ENTRY, EXIT, tariff=tariff.value, lost_ticket_fee=self.car_park.lost_ticket_fee
            )
        stay = max(0, scan.at - open_entry.at)  # a clock stepped back: never a negative fee
        minutes = stay // 60
        fee = self.fee(minutes, tariff)
        if stay > self.max_stay:
            # Either a genuine long stay or a car that left and came back unrecorded: the
            # journal cannot tell, so the attendant chooses between this fee and a lost ticket.
            return Decision.deny(
                STALE_ENTRY,
                EXIT,
                tariff=tariff.value,
                duration_minutes=minutes,
                fee=fee,
                lost_ticket_fee=self.car_park.lost_ticket_fee,
            )
        return Decision.admit(EXIT, tariff=tariff.value, duration_minutes=minutes, fee=fee)
