"""Public culture venues (公共文化场馆): a library, museum or sports venue. Its entry gates admit
reservation holders within their time slot's entry window and walk-ins while the slot has
room, within each event's age limits; its library desk recognises a member by the venue's own
subject, so a loan needs no ID card. See docs/scenes/culture.md."""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from itertools import pairwise
from typing import Annotated, ClassVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictBool, model_validator

from idcode.claims import AgeBand, Card
from idcode.errors import SceneError
from idcode.scenes import (
    DAY,
    MAX_LINKED_SUBJECTS,
    SITE_SCOPE,
    SUBJECT_PATTERN,
    Decision,
    Event,
    History,
    Scan,
    SceneAdapter,
    SceneContext,
    SceneData,
)

ENTRY_MODE = "entry"
LOAN_MODE = "loan"
MODES = (ENTRY_MODE, LOAN_MODE)

#: Actions: a reservation holder through the gate, a walk-in through the gate, a loan.
ENTRY = "entry"
WALK_IN = "walk_in"
LOAN = "loan"

NO_SLOT_NOW = "no_slot_now"
TOO_EARLY = "too_early"
TOO_LATE = "too_late"
ALREADY_ENTERED = "already_entered"
RESERVATION_REQUIRED = "reservation_required"
SLOT_FULL = "slot_full"
AGE_LIMIT = "age_limit"
AGE_UNVERIFIED = "age_unverified"
NOT_A_MEMBER = "not_a_member"

MAX_EVENTS = 500
MAX_SLOTS = 5_000
MAX_CAPACITY = 100_000
MAX_SLOT_HOURS = 24
MAX_AGE = 150
MIN_YEAR, MAX_YEAR = 2000, 2099
#: Reservations and members together: every one is a subject in the trust bundle, which
#: holds some 230,000 (idcode.scenes.MAX_LINKED_SUBJECTS says why).
MAX_PEOPLE = MAX_LINKED_SUBJECTS
_MINUTE = 60

#: The years each age band covers, both ends inclusive (AgeBand.UNKNOWN covers every age).
BAND_YEARS: Mapping[AgeBand, tuple[int, int]] = {
    AgeBand.UNKNOWN: (0, MAX_AGE),
    AgeBand.UNDER_6: (0, 5),
    AgeBand.AGE_6_17: (6, 17),
    AgeBand.AGE_18_59: (18, 59),
    AgeBand.AGE_60_64: (60, 64),
    AgeBand.AGE_65_69: (65, 69),
    AgeBand.AGE_70_79: (70, 79),
    AgeBand.AGE_80_PLUS: (80, MAX_AGE),
}

#: An event's or a slot's id: short, printable, and shown in results; never a person.
Identifier = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,31}$")]
Subject = Annotated[str, Field(pattern=SUBJECT_PATTERN)]
Age = Annotated[int, Field(ge=0, le=MAX_AGE)]


def _local_minute(text: str) -> str:
    # The pattern has checked the shape; this refuses dates that do not exist (02-30), and
    # years no timetable has (a typed 0226 or 2206).
    try:
        year = datetime.fromisoformat(text).year
    except ValueError:
        raise ValueError(f"{text!r} is not a date and time that exists") from None
    if not MIN_YEAR <= year <= MAX_YEAR:
        raise ValueError(f"{text!r} is not in the years {MIN_YEAR}-{MAX_YEAR}")
    return text


#: A local date and time, minutes precision, at the scene data's utc_offset_minutes.
LocalDateTime = Annotated[
    str,
    Field(pattern=r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}$"),
    AfterValidator(_local_minute),
]


class CultureEvent(BaseModel):
    """What a slot is for (an exhibition, a match, story time), with its age limits."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: Identifier = Field(description="The event's id, shown in decisions' results.")
    min_age: Age | None = Field(
        default=None,
        description="Youngest age in years admitted (inclusive); null: no lower limit. A card "
        "is admitted only when its whole age band is within the limits.",
    )
    max_age: Age | None = Field(
        default=None,
        description="Oldest age in years admitted (inclusive); null: no upper limit.",
    )

    @model_validator(mode="after")
    def _limits_in_order(self) -> CultureEvent:
        if self.min_age is not None and self.max_age is not None and self.min_age > self.max_age:
            raise ValueError(f"event {self.id!r}: min_age is above max_age")
        return self


class Slot(BaseModel):
    """One timed-entry slot of the venue: when, for which event, how many people."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: Identifier = Field(description="The slot's id, which reservations name.")
    event: Identifier = Field(description="The id of the event the slot admits to.")
    start: LocalDateTime = Field(description="Local start, 'YYYY-MM-DDTHH:MM' (inclusive).")
    end: LocalDateTime = Field(
        description="Local end, 'YYYY-MM-DDTHH:MM' (exclusive), after start, at most 24 hours "
        "later; nobody is admitted to the slot from then on."
    )
    capacity: int = Field(
        ge=1, le=MAX_CAPACITY, description="People admitted to the slot: reservations included."
    )
    walk_ins: StrictBool = Field(
        default=True,
        description="Admit people without a reservation while the slot has room; false: "
        "reservation holders only (a sold-out match).",
    )

    @model_validator(mode="after")
    def _starts_before_it_ends(self) -> Slot:
        start, end = datetime.fromisoformat(self.start), datetime.fromisoformat(self.end)
        if end <= start:
            raise ValueError(f"slot {self.id!r}: end must be after start")
        if end - start > timedelta(hours=MAX_SLOT_HOURS):
            raise ValueError(f"slot {self.id!r} is longer than {MAX_SLOT_HOURS} hours")
        return self


class CultureData(SceneData):
    """One venue's timed-entry slots and reservations, and its library's members. Every
    terminal of the venue (its gates and its loan desk) gets the same document."""

    events: tuple[CultureEvent, ...] = Field(
        default=(), max_length=MAX_EVENTS, description="The events the slots admit to."
    )
    slots: tuple[Slot, ...] = Field(
        default=(),
        max_length=MAX_SLOTS,
        description="The venue's timed-entry slots; they may not overlap (one timeline per "
        "venue: a hall with a timed entry of its own is a site of its own).",
    )
    reservations: dict[Identifier, tuple[Subject, ...]] = Field(
        default_factory=dict,
        description="Reservation holders of each slot, by slot id: subjects, or 'card:<id>' "
        "references the service turns into the venue's subjects. At most the slot's capacity.",
    )
    early_minutes: int = Field(
        default=15,
        ge=0,
        le=240,
        description="A reservation holder may enter this many minutes before the slot starts.",
    )
    late_minutes: int = Field(
        default=30,
        ge=0,
        le=MAX_SLOT_HOURS * 60,
        description="A reservation holder may enter until this many minutes after the slot "
        "starts (never after its end); later, only as a walk-in while there is room.",
    )
    members: tuple[Subject, ...] = Field(
        default=(),
        max_length=MAX_PEOPLE,
        description="The library's members, whom its loan desk lends to: subjects, or "
        "'card:<id>' references; the same person twice counts once.",
    )

    @model_validator(mode="after")
    def _coherent(self) -> CultureData:
        events = [event.id for event in self.events]
        if len(set(events)) != len(events):
            raise ValueError("two events have the same id")
        ids = [slot.id for slot in self.slots]
        if len(set(ids)) != len(ids):
            raise ValueError("two slots have the same id")
        known = set(events)
        slots = {slot.id: slot for slot in self.slots}
        for slot in self.slots:
            if slot.event not in known:
                raise ValueError(f"slot {slot.id!r} names the unknown event {slot.event!r}")
        ordered = sorted(self.slots, key=lambda slot: slot.start)
        for earlier, later in pairwise(ordered):
            # The same local offset throughout, so the texts compare as the times do.
            if later.start < earlier.end:
                raise ValueError(f"slots {earlier.id!r} and {later.id!r} overlap")
        if self.early_minutes == 0 and self.late_minutes == 0:
            raise ValueError(
                "early_minutes and late_minutes are both 0: a reservation holder would have no "
                "moment to enter"
            )
        people = len(set(self.members))
        for slot_id, holders in self.reservations.items():
            reserved = slots.get(slot_id)
            if reserved is None:
                raise ValueError(f"reservations name the unknown slot {slot_id!r}")
            if len(set(holders)) != len(holders):
                # The text is left out: a subject is the venue's, not for an operator's log.
                raise ValueError(f"reservations of slot {slot_id!r} hold a person twice")
            if len(holders) > reserved.capacity:
                raise ValueError(
                    f"slot {slot_id!r} has {len(holders)} reservations for a capacity of "
                    f"{reserved.capacity}"
                )
            people += len(holders)
        if people > MAX_PEOPLE:
            raise ValueError(f"reservations and members together are over {MAX_PEOPLE}")
        return self

    def epoch(self, local: str) -> int:
        """A local 'YYYY-MM-DDTHH:MM' of this data as Unix time."""
        zone = timezone(timedelta(minutes=self.utc_offset_minutes))
        return int(datetime.fromisoformat(local).replace(tzinfo=zone).timestamp())


@dataclass(frozen=True, slots=True)
class _Slot:
    """A slot as the gate decides with it: Unix times, its event's limits, its reservations."""

    id: str
    event: CultureEvent
    start: int
    end: int
    capacity: int
    walk_ins: bool
    reserved: int
    opens: int  # a holder's entry window: [opens, closes)
    closes: int


class Adapter(SceneAdapter):
    """A venue's entry gate (``mode=entry``) or its library's loan desk (``mode=loan``). The
    gates of a venue share one journal, so each counts the walk-ins the others admitted."""

    scene: ClassVar[str] = "culture"
    Data: ClassVar[type[SceneData]] = CultureData
    reasons: ClassVar[tuple[str, ...]] = (
        NO_SLOT_NOW,
        TOO_EARLY,
        TOO_LATE,
        ALREADY_ENTERED,
        RESERVATION_REQUIRED,
        SLOT_FULL,
        AGE_LIMIT,
        AGE_UNVERIFIED,
        NOT_A_MEMBER,
    )
    actions: ClassVar[tuple[str, ...]] = (ENTRY, WALK_IN, LOAN)
    # Each venue is its own business: a library cannot join its members' subjects with a
    # museum's visitors, and its loan software finds its member by the subject on the line.
    subject_scope: ClassVar[str] = SITE_SCOPE
    subject_in_decision_line: ClassVar[bool] = True

    @classmethod
    def check_options(cls, options: Mapping[str, str]) -> None:
        mode = options.get("mode")
        # No default: a gate and a loan desk grant different things, so a terminal installed
        # without saying which it is must not start granting either.
        if mode not in MODES:
            got = "none" if mode is None else repr(mode[:20])
            raise SceneError(f"a culture terminal needs the option mode=entry or mode=loan ({got})")

    def __init__(self, context: SceneContext) -> None:
        super().__init__(context)
        data = context.data
        if not isinstance(data, CultureData):
            raise SceneError("the culture adapter needs culture scene data")
        self.check_options(context.options)
        self.mode = context.options["mode"]
        self.venue = data
        events = {event.id: event for event in data.events}
        early, late = data.early_minutes * _MINUTE, data.late_minutes * _MINUTE
        slots = []
        for slot in sorted(data.slots, key=lambda slot: slot.start):
            start, end = data.epoch(slot.start), data.epoch(slot.end)
            slots.append(
                _Slot(
                    slot.id,
                    events[slot.event],
                    start,
                    end,
                    slot.capacity,
                    slot.walk_ins,
                    len(data.reservations.get(slot.id, ())),
                    start - early,
                    min(start + late, end),
                )
            )
        self.slots = tuple(slots)
        self._starts = [slot.start for slot in self.slots]
        by_id = {slot.id: slot for slot in self.slots}
        held: dict[str, list[_Slot]] = {}
        for slot_id, holders in data.reservations.items():
            for subject in holders:
                held.setdefault(subject, []).append(by_id[slot_id])
        # Each holder's slots in time order.
        self.reservations = {
            subject: tuple(sorted(slots, key=lambda slot: slot.start))
            for subject, slots in held.items()
        }
        self.members = frozenset(data.members)

    def decide_valid(self, scan: Scan, card: Card, subject: str, history: History) -> Decision:
        if self.mode == LOAN_MODE:
            if subject not in self.members:
                return Decision.deny(NOT_A_MEMBER, LOAN)
            # How many books, which ones, fines: the library's loan system, which finds its
            # member by the subject on the decision line.
            return Decision.admit(LOAN)
        return self._entry(scan.at, card, subject, history)

    def running(self, at: int) -> _Slot | None:
        """The slot running at ``at`` (slots do not overlap)."""
        index = bisect_right(self._starts, at) - 1
        if index >= 0 and at < self.slots[index].end:
            return self.slots[index]
        return None

    def _entry(self, at: int, card: Card, subject: str, history: History) -> Decision:
        reserved = self.reservations.get(subject, ())
        # The latest-starting reservation whose window is open: as time goes on it never
        # goes back to an earlier slot, so a holder of two slots enters each once.
        holding = next((s for s in reversed(reserved) if s.opens <= at < s.closes), None)
        if holding is not None:
            if _entered(history, subject, holding):
                return Decision.deny(ALREADY_ENTERED, ENTRY, slot=holding.id)
            refused = self._age(card, holding, ENTRY)
            if refused is not None:
                return refused
            return Decision.admit(ENTRY, slot=holding.id, event=holding.event.id, reserved=True)
        walk_in = self._walk_in(at, card, subject, history)
        if walk_in.admitted or walk_in.reason not in (NO_SLOT_NOW, RESERVATION_REQUIRED, SLOT_FULL):
            return walk_in
        # Not admitted for want of a slot or of room: a holder early or late for their own
        # slot today hears that, which the staff can act on, rather than "full".
        today = self.context.day_start(at)
        upcoming = next((s for s in reserved if at < s.opens < today + DAY), None)
        if upcoming is not None:
            minutes = -(-(upcoming.opens - at) // _MINUTE)
            return Decision.deny(TOO_EARLY, ENTRY, slot=upcoming.id, opens_in_minutes=minutes)
        missed = next((s for s in reversed(reserved) if today <= s.start and s.closes <= at), None)
        if missed is not None:
            return Decision.deny(TOO_LATE, ENTRY, slot=missed.id)
        return walk_in

    def _walk_in(self, at: int, card: Card, subject: str, history: History) -> Decision:
        slot = self.running(at)
        if slot is None:
            return Decision.deny(NO_SLOT_NOW, WALK_IN)
        if _entered(history, subject, slot):
            return Decision.deny(ALREADY_ENTERED, WALK_IN, slot=slot.id)
        if not slot.walk_ins:
            return Decision.deny(RESERVATION_REQUIRED, WALK_IN, slot=slot.id)
        refused = self._age(card, slot, WALK_IN)
        if refused is not None:
            return refused
        # Reserved places are held for the whole slot, whether their holders came or not.
        walked_in = history.count(since=slot.start, action=WALK_IN)
        room = slot.capacity - slot.reserved - walked_in
        if room <= 0:
            return Decision.deny(SLOT_FULL, WALK_IN, slot=slot.id, event=slot.event.id)
        return Decision.admit(
            WALK_IN, slot=slot.id, event=slot.event.id, reserved=False, places_left=room - 1
        )

    @staticmethod
    def _age(card: Card, slot: _Slot, action: str) -> Decision | None:
        """The denial for a card outside the slot's event's age limits, or None. Conservative:
        admitted only when every age of the card's band is within the limits; a band wholly
        outside is ``age_limit``, a band across a limit (or no band) ``age_unverified``."""
        event = slot.event
        youngest, oldest = BAND_YEARS[card.age_band]
        low = 0 if event.min_age is None else event.min_age
        high = MAX_AGE if event.max_age is None else event.max_age
        if low <= youngest and oldest <= high:
            return None
        # No band (UNKNOWN) covers every age, so it is always across a limit: unverified.
        reason = AGE_LIMIT if oldest < low or youngest > high else AGE_UNVERIFIED
        return Decision.deny(reason, action, slot=slot.id, event=event.id)


def _entered(history: History, subject: str, slot: _Slot) -> bool:
    """Whether ``subject`` was admitted to ``slot`` already, as a holder or a walk-in. Nobody
    enters a slot before its window opens, and only the newest of each action since then can
    be for it: an admission to a later slot moves the holder on for good (the slot a holder
    enters is the latest whose window is open, and a walk-in's is the running one)."""
    for action in (ENTRY, WALK_IN):
        last: Event | None = history.last(subject=subject, action=action, since=slot.opens)
        if last is not None and last.result.get("slot") == slot.id:
            return True
    return False
