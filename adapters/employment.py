"""Employment services (劳动就业): check-in at the stands of a job fair, offline, counted per
stand. Each stand's terminal admits a job-seeker of the fair's age bands (and target groups,
at a special fair) once per local day, during the fair's days and hours, and names its stand
in every decision, so the organiser counts visits per stand from the uploaded events.

The benefit-eligibility kiosk of the same scene family is online (consented identification,
docs/scenes/employment.md) and needs no adapter.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import date, timedelta
from typing import Annotated, ClassVar, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from idcode.claims import AgeBand, Card, Programme
from idcode.errors import SceneError
from idcode.scenes import (
    DAY,
    SITE_SCOPE,
    Decision,
    History,
    Scan,
    SceneAdapter,
    SceneContext,
    SceneData,
)
from idcode.text import control_reason

CHECK_IN = "check_in"

NOT_FAIR_DAY = "not_fair_day"
OUTSIDE_FAIR_HOURS = "outside_fair_hours"
NOT_WORKING_AGE = "not_working_age"
NOT_IN_TARGET_GROUP = "not_in_target_group"
ALREADY_CHECKED_IN = "already_checked_in"
JOURNAL_OF_ANOTHER_STAND = "journal_of_another_stand"

#: The adult age bands a fair may admit. ``age_6_17`` is not one: the band cannot tell a
#: 16-year-old, who may work, from a 6-year-old, so minors register at the employment office
#: in person. ``unknown`` is not one either: a card without an age band proves no working age.
AdultBand = Literal["age_18_59", "age_60_64", "age_65_69", "age_70_79", "age_80_plus"]
#: The groups a special fair (专场招聘会) may be for, by the card's programme flags.
TargetGroup = Literal["veteran", "disability", "low_income", "student"]
_TARGET_PROGRAMMES: dict[str, Programme] = {
    "veteran": Programme.VETERAN,
    "disability": Programme.DISABILITY,
    "low_income": Programme.LOW_INCOME,
    "student": Programme.STUDENT,
}
#: A stand's id as the organiser's floor plan names it (``a-12``, ``hall-2-b07``): it is in
#: every decision line and upload, so it is short and names no person.
STAND_PATTERN = r"^[a-z0-9][a-z0-9-]{0,31}$"
_STAND = re.compile(STAND_PATTERN)
StandId = Annotated[str, Field(pattern=STAND_PATTERN)]
#: A local time of day, HH:MM (24 h); a closing time may be 24:00, the end of the day.
TimeOfDay = Annotated[str, Field(pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$")]
ClosingTime = Annotated[str, Field(pattern=r"^(([01][0-9]|2[0-3]):[0-5][0-9]|24:00)$")]
MAX_STANDS = 2000  # the largest fairs in a city's exhibition centre have about 1,500
MAX_FAIR_DAYS = 31
_EPOCH = date(1970, 1, 1)


def _employer_name(text: str) -> str:
    if (problem := control_reason(text)) is not None or text != text.strip():
        # An organiser's screen and report show it on one line; the text is not repeated.
        raise ValueError(f"an employer's name holds {problem or 'spaces at an end'}")
    return text


def _seconds_of_day(time_of_day: str) -> int:
    hours, minutes = time_of_day.split(":")
    return int(hours) * 3600 + int(minutes) * 60


class Stand(BaseModel):
    """One stand of the fair."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    employer: Annotated[str, AfterValidator(_employer_name)] = Field(
        min_length=1,
        max_length=64,
        description="The employer at the stand, as the organiser's list names it (a company, "
        "never a person); for the organiser's count per stand, never in a decision line.",
    )


class EmploymentData(SceneData):
    """One job fair (the site): its days, hours, stands and who may check in."""

    days: tuple[date, ...] = Field(
        min_length=1,
        max_length=MAX_FAIR_DAYS,
        description="The local dates (YYYY-MM-DD) the fair is held; each once.",
    )
    opens_at: TimeOfDay = Field(
        default="09:00", description="First check-in of each fair day, local time, HH:MM."
    )
    closes_at: ClosingTime = Field(
        default="17:00",
        description="End of check-in (exclusive), local time, HH:MM, later the same day "
        "(24:00: midnight).",
    )
    stands: dict[StandId, Stand] = Field(
        min_length=1,
        max_length=MAX_STANDS,
        description="The fair's stands by id; each stand's terminal names its id in the "
        "option stand=<id> and refuses to start with an id not listed here.",
    )
    age_bands: tuple[AdultBand, ...] = Field(
        default=("age_18_59",),
        min_length=1,
        description="The age bands admitted (working age: age_18_59; a fair for older "
        "workers adds age_60_64 and up). Minors' and unknown bands are never admitted.",
    )
    target_groups: tuple[TargetGroup, ...] = Field(
        default=(),
        description="A special fair's groups (veteran, disability, low_income, student): a "
        "job-seeker needs the programme flag of at least one. Empty: open to every "
        "job-seeker of the admitted age bands.",
    )

    @model_validator(mode="after")
    def _consistent(self) -> EmploymentData:
        if len(set(self.days)) != len(self.days):
            raise ValueError("days must name each date once")
        if len(set(self.age_bands)) != len(self.age_bands):
            raise ValueError("age_bands must name each band once")
        if len(set(self.target_groups)) != len(self.target_groups):
            raise ValueError("target_groups must name each group once")
        if _seconds_of_day(self.closes_at) <= _seconds_of_day(self.opens_at):
            # Overnight hours would split one fair day's check-ins over two local days.
            raise ValueError("closes_at must be after opens_at on the same day")
        return self


class Adapter(SceneAdapter):
    """A job-fair stand's check-in terminal (option ``stand=<id>``)."""

    scene: ClassVar[str] = "employment"
    Data: ClassVar[type[SceneData]] = EmploymentData
    reasons: ClassVar[tuple[str, ...]] = (
        NOT_FAIR_DAY,
        OUTSIDE_FAIR_HOURS,
        NOT_WORKING_AGE,
        NOT_IN_TARGET_GROUP,
        ALREADY_CHECKED_IN,
        JOURNAL_OF_ANOTHER_STAND,
    )
    actions: ClassVar[tuple[str, ...]] = (CHECK_IN,)
    #: Each fair is its own site with its own subject key: a job-seeker's visits at one fair
    #: cannot be joined with another fair's. The subject is never on a stand's decision line
    #: (``subject_in_decision_line`` stays False): the employer at the stand learns a count.
    subject_scope: ClassVar[str] = SITE_SCOPE

    @classmethod
    def check_options(cls, options: Mapping[str, str]) -> None:
        # No default: a terminal that counted for no stand, or for another's, would put its
        # visits in the wrong stand's count. Whether the fair has the stand is the scene
        # data's to say (__init__).
        stand = options.get("stand")
        if stand is None:
            raise SceneError("a job-fair terminal needs the option stand=<id> of a fair's stand")
        if not _STAND.fullmatch(stand):
            # "A-01" or "a 01" is no fair's stand id: no bundle can make it right.
            raise SceneError(
                "a job-fair terminal's option stand must be a stand id (1-32 of a-z, 0-9 and "
                f"'-', starting with a letter or digit), got {stand[:40]!r}"
            )

    def __init__(self, context: SceneContext) -> None:
        super().__init__(context)
        data = context.data
        if not isinstance(data, EmploymentData):
            raise SceneError("the employment adapter needs employment scene data")
        self.rules = data
        self.check_options(context.options)
        stand = context.options["stand"]
        if stand not in data.stands:
            raise SceneError(
                f"stand {stand[:32]!r} is not a stand of the fair {context.site}: the scene "
                "data lists "
                + ", ".join(sorted(data.stands)[:10])
                + (" ..." if len(data.stands) > 10 else "")
            )
        self.stand = stand
        self.days = frozenset(data.days)
        self.opens = _seconds_of_day(data.opens_at)
        self.closes = _seconds_of_day(data.closes_at)
        self.bands = frozenset(AgeBand[band.upper()] for band in data.age_bands)
        targets = Programme.NONE
        for group in data.target_groups:
            targets |= _TARGET_PROGRAMMES[group]
        self.targets = targets

    def decide_valid(self, scan: Scan, card: Card, subject: str, history: History) -> Decision:
        stand = self.stand
        today = self.context.day_start(scan.at)
        offset = self.rules.utc_offset_minutes * 60
        if _EPOCH + timedelta(days=(today + offset) // DAY) not in self.days:
            return Decision.deny(NOT_FAIR_DAY, CHECK_IN, stand=stand)
        if not self.opens <= scan.at - today < self.closes:
            return Decision.deny(OUTSIDE_FAIR_HOURS, CHECK_IN, stand=stand)
        # The once-a-day rule and the count read this terminal's journal, so the journal must
        # be this stand's alone (two tablets of one stand may share one). A check-in of
        # another stand in it today means it is shared across stands, or the terminal was
        # moved mid-day: its counts would mix two stands, so it refuses until tomorrow.
        newest = history.last(action=CHECK_IN, since=today)
        if newest is not None and newest.result.get("stand") != stand:
            return Decision.deny(JOURNAL_OF_ANOTHER_STAND, CHECK_IN, stand=stand)
        if card.age_band not in self.bands:
            return Decision.deny(NOT_WORKING_AGE, CHECK_IN, stand=stand)
        if self.targets and not card.programmes & self.targets:
            return Decision.deny(NOT_IN_TARGET_GROUP, CHECK_IN, stand=stand)
        if history.last(subject=subject, action=CHECK_IN, since=today) is not None:
            # Counted once: the stand's count is of job-seekers, not of scans.
            return Decision.deny(ALREADY_CHECKED_IN, CHECK_IN, stand=stand)
        visits = history.count(since=today, action=CHECK_IN) + 1
        return Decision.admit(CHECK_IN, stand=stand, check_ins=visits)
