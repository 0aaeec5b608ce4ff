"""Elderly care (居家养老): the community canteen's meal subsidy within daily limits, and the
check-in and check-out of home-care visits that the programme pays for by the minute."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from itertools import pairwise
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from idcode.claims import AgeBand, Card, Programme
from idcode.errors import SceneError
from idcode.scenes import Decision, Event, History, Scan, SceneAdapter, SceneContext, SceneData

CANTEEN = "canteen"
HOME_CARE = "home_care"
MODES = (CANTEEN, HOME_CARE)

MEAL = "meal"
CHECK_IN = "check_in"
CHECK_OUT = "check_out"

NOT_ENROLLED = "not_enrolled"
OUTSIDE_MEAL_HOURS = "outside_meal_hours"
MEAL_ALREADY_TAKEN = "meal_already_taken"
DAILY_LIMIT_REACHED = "daily_limit_reached"
VISIT_TOO_SHORT = "visit_too_short"
VISIT_IN_PROGRESS = "visit_in_progress"

#: Age bands by their names in scene data (``AgeBand`` members, lower case); ``unknown`` is
#: not one: a card without an age band never qualifies for an age-based subsidy.
AgeBandName = Literal[
    "under_6", "age_6_17", "age_18_59", "age_60_64", "age_65_69", "age_70_79", "age_80_plus"
]
#: A local time of day, HH:MM (24 h).
TimeOfDay = Annotated[str, Field(pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$")]
#: An amount of money in fen; 100 yuan per meal is far above any programme's subsidy.
Fen = Annotated[int, Field(ge=0, le=10_000)]

DEFAULT_MEAL_SUBSIDY_FEN: dict[AgeBandName, int] = {
    "age_60_64": 300,  # 60-69: 3 yuan
    "age_70_79": 500,  # 70-79: 5 yuan
    "age_80_plus": 800,  # 80 and over: 8 yuan
}


def _seconds_of_day(time_of_day: str) -> int:
    hours, minutes = time_of_day.split(":")
    return int(hours) * 3600 + int(minutes) * 60


def _band(name: str) -> AgeBand:
    return AgeBand[name.upper()]


class MealWindow(BaseModel):
    """A meal service period of the canteen, in local time; one subsidised meal in each."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Literal["breakfast", "lunch", "dinner"] = Field(description="Which meal this is.")
    start: TimeOfDay = Field(description="Local time the window opens (inclusive), HH:MM.")
    end: TimeOfDay = Field(
        description="Local time the window closes (exclusive), HH:MM, later the same day."
    )

    @model_validator(mode="after")
    def _opens_before_it_closes(self) -> MealWindow:
        if _seconds_of_day(self.start) >= _seconds_of_day(self.end):
            raise ValueError(f"the {self.name} window must open before it closes")
        return self


DEFAULT_MEAL_WINDOWS = (
    MealWindow(name="breakfast", start="06:30", end="09:00"),
    MealWindow(name="lunch", start="10:30", end="13:30"),
    MealWindow(name="dinner", start="16:30", end="19:00"),
)


class EldercareData(SceneData):
    """The programme rules of one site's canteen pads and caregivers' terminals (one site's
    terminals share the data; each terminal's ``mode`` option says which part applies)."""

    meal_min_age_band: AgeBandName = Field(
        default="age_60_64",
        description="The youngest age band whose enrolled cards get the meal subsidy.",
    )
    meal_subsidy_fen: dict[AgeBandName, Fen] = Field(
        default_factory=lambda: dict(DEFAULT_MEAL_SUBSIDY_FEN),
        min_length=1,
        description=(
            "Subsidy per meal in fen by age band: each entry applies from its band up to the "
            "next entry's band, so the lowest entry must be at or below meal_min_age_band."
        ),
    )
    low_income_supplement_fen: Fen = Field(
        default=200,
        description="Added to the subsidy per meal for cards in the low_income programme (低保).",
    )
    meals_per_day: int = Field(
        default=2, ge=1, le=6, description="Subsidised meals per person per local day."
    )
    meal_windows: tuple[MealWindow, ...] = Field(
        default=DEFAULT_MEAL_WINDOWS,
        max_length=3,
        description=(
            "Meal service periods; a meal outside them gets no subsidy and each gets at most "
            "one subsidised meal per person. Empty: meals at any hour, only the daily limit."
        ),
    )
    min_visit_minutes: int = Field(
        default=15,
        ge=1,
        le=240,
        description="A home-care check-out earlier than this is refused; the visit stays open.",
    )
    max_visit_minutes: int = Field(
        default=240,
        ge=1,
        le=1440,
        description="Billable minutes of one visit are capped here (a multiple of the unit).",
    )
    billing_unit_minutes: int = Field(
        default=15,
        ge=1,
        le=60,
        description=(
            "Billable minutes are the visit's minutes rounded down to this unit; at most "
            "min_visit_minutes, so every accepted visit bills at least one unit."
        ),
    )
    abandon_after_minutes: int = Field(
        default=720,
        ge=2,
        le=2880,
        description=(
            "An open visit older than this is abandoned, never billed: the elder's next scan is "
            "a new check-in. Longer than max_visit_minutes."
        ),
    )

    @model_validator(mode="after")
    def _rules_fit_together(self) -> EldercareData:
        if min(map(_band, self.meal_subsidy_fen)) > _band(self.meal_min_age_band):
            raise ValueError(
                "meal_subsidy_fen must have an entry at or below meal_min_age_band, "
                "or the youngest enrolled seniors would have no subsidy"
            )
        windows = sorted(self.meal_windows, key=lambda window: _seconds_of_day(window.start))
        if len({window.name for window in windows}) != len(windows):
            raise ValueError("meal_windows must name each meal once")
        for earlier, later in pairwise(windows):
            if _seconds_of_day(later.start) < _seconds_of_day(earlier.end):
                raise ValueError(f"the {earlier.name} and {later.name} windows overlap")
        if not self.billing_unit_minutes <= self.min_visit_minutes <= self.max_visit_minutes:
            raise ValueError(
                "billing_unit_minutes <= min_visit_minutes <= max_visit_minutes must hold"
            )
        if self.max_visit_minutes % self.billing_unit_minutes:
            raise ValueError("max_visit_minutes must be a multiple of billing_unit_minutes")
        if self.abandon_after_minutes <= self.max_visit_minutes:
            raise ValueError("abandon_after_minutes must be longer than max_visit_minutes")
        return self


@dataclass(frozen=True, slots=True)
class _Window:
    name: str
    start: int  # seconds after local midnight
    end: int


class Adapter(SceneAdapter):
    """A canteen pad (``mode=canteen``) grants the meal subsidy; a caregiver's terminal
    (``mode=home_care``) checks visits in and out at the elder's door."""

    scene = "eldercare"
    Data = EldercareData
    reasons = (
        NOT_ENROLLED,
        OUTSIDE_MEAL_HOURS,
        MEAL_ALREADY_TAKEN,
        DAILY_LIMIT_REACHED,
        VISIT_TOO_SHORT,
        VISIT_IN_PROGRESS,
    )
    actions = (MEAL, CHECK_IN, CHECK_OUT)

    @classmethod
    def check_options(cls, options: Mapping[str, str]) -> None:
        mode = options.get("mode")
        # No default: a canteen pad and a caregiver's terminal spend different budgets, so a
        # terminal installed without saying which it is must not start granting either.
        if mode is None:
            raise SceneError("an eldercare terminal needs the option mode: canteen or home_care")
        if mode not in MODES:
            raise SceneError(f"eldercare mode must be canteen or home_care, not {mode[:20]!r}")

    def __init__(self, context: SceneContext) -> None:
        super().__init__(context)
        data = context.data
        if not isinstance(data, EldercareData):
            raise SceneError("the eldercare adapter needs eldercare scene data")
        self.rules = data
        self.check_options(context.options)
        self.mode = context.options["mode"]
        self._subsidy_by_band = self._subsidy_table(data)
        self._windows = tuple(
            sorted(
                (
                    _Window(window.name, _seconds_of_day(window.start), _seconds_of_day(window.end))
                    for window in data.meal_windows
                ),
                key=lambda window: window.start,
            )
        )

    @staticmethod
    def _subsidy_table(data: EldercareData) -> dict[AgeBand, int]:
        """The subsidy of every eligible age band, from the tiers of the scene data."""
        tiers = sorted((_band(name), fen) for name, fen in data.meal_subsidy_fen.items())
        youngest = _band(data.meal_min_age_band)
        table: dict[AgeBand, int] = {}
        for band in AgeBand:
            if band >= youngest:
                table[band] = [fen for tier, fen in tiers if tier <= band][-1]
        return table

    def decide_valid(self, scan: Scan, card: Card, subject: str, history: History) -> Decision:
        if self.mode == CANTEEN:
            return self._meal(scan, card, subject, history)
        return self._visit(scan, card, subject, history)

    # -- canteen ---------------------------------------------------------------------------

    def _meal(self, scan: Scan, card: Card, subject: str, history: History) -> Decision:
        subsidy = self._subsidy_by_band.get(card.age_band)
        if subsidy is None or Programme.MEAL_SUBSIDY not in card.programmes:
            return Decision.deny(NOT_ENROLLED, MEAL)
        day_start = self.context.day_start(scan.at)
        window_name: str | None = None
        if self._windows:
            seconds = scan.at - day_start
            window = next((w for w in self._windows if w.start <= seconds < w.end), None)
            if window is None:
                return Decision.deny(OUTSIDE_MEAL_HOURS, MEAL)
            window_start = day_start + window.start
            if history.last(subject=subject, action=MEAL, since=window_start) is not None:
                return Decision.deny(MEAL_ALREADY_TAKEN, MEAL, meal_window=window.name)
            window_name = window.name
        meals = history.count(since=day_start, subject=subject, action=MEAL)
        if meals >= self.rules.meals_per_day:
            return Decision.deny(DAILY_LIMIT_REACHED, MEAL, meals_today=meals)
        if Programme.LOW_INCOME in card.programmes:
            subsidy += self.rules.low_income_supplement_fen
        return Decision.admit(MEAL, subsidy=subsidy, meals_today=meals + 1, meal_window=window_name)

    # -- home care -------------------------------------------------------------------------

    @staticmethod
    def _unclosed_visit(history: History) -> Event | None:
        """This terminal's newest check-in if no check-out followed it.

        Only the newest check-in can be open: a check-in is refused while another visit is
        open, and a check-out closes the visit that is open. A check-out comes at least
        ``min_visit_minutes`` after its check-in, so one at the very second of the newest
        check-in closed an earlier visit.
        """
        check_in = history.last(action=CHECK_IN)
        if check_in is None:
            return None
        check_out = history.last(action=CHECK_OUT, since=check_in.at)
        return check_in if check_out is None or check_out.at == check_in.at else None

    def _visit(self, scan: Scan, card: Card, subject: str, history: History) -> Decision:
        rules = self.rules
        visit = self._unclosed_visit(history)
        abandoned = False
        elsewhere = False
        if visit is not None:
            age = scan.at - visit.at
            if age >= rules.abandon_after_minutes * 60:
                abandoned = True  # a check-out the next morning cannot end the same visit
            elif visit.subject != subject:
                # The caregiver is at one home at a time, but only while that visit could
                # still be billed: past the cap, a forgotten check-out must not block the
                # rest of the day's round, and the next elder's check-in abandons it.
                if age < rules.max_visit_minutes * 60:
                    elsewhere = True
                else:
                    abandoned = True
        open_here = visit is not None and not abandoned and not elsewhere
        if Programme.HOME_CARE not in card.programmes:
            return Decision.deny(NOT_ENROLLED, CHECK_OUT if open_here else CHECK_IN)
        if elsewhere:
            return Decision.deny(VISIT_IN_PROGRESS, CHECK_IN)
        if visit is None or not open_here:
            return Decision.admit(CHECK_IN, abandoned_visit=abandoned)
        minutes = (scan.at - visit.at) // 60
        if minutes < rules.min_visit_minutes:
            return Decision.deny(VISIT_TOO_SHORT, CHECK_OUT, visit_minutes=minutes)
        # Rounded down: the programme never pays for minutes nobody was at the door.
        capped = min(minutes, rules.max_visit_minutes)
        billable = capped // rules.billing_unit_minutes * rules.billing_unit_minutes
        return Decision.admit(
            CHECK_OUT,
            visit_minutes=minutes,
            billable_minutes=billable,
            capped=minutes > rules.max_visit_minutes,
        )
