"""Bus validators (公共交通): board at the door, offline, with the fare of the bus's line after
the concession the code's attributes give, a transfer discount and a daily cap; settle the
operator's day authoritatively from every validator's uploaded journal (the clearing file).

The door knows only its own journal, so it charges a provisional fare from what it has seen;
the settlement recomputes the transfers and the cap across the operator's validators and
never charges more than the door did. See docs/scenes/transport.md.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from enum import StrEnum
from typing import Annotated, ClassVar

from pydantic import Field, model_validator

from idcode.claims import AgeBand, Card, Programme
from idcode.errors import SceneError
from idcode.scenes import (
    MAX_RESULT_INTEGER,
    SITE_SCOPE,
    Decision,
    Event,
    History,
    ResultValue,
    Scan,
    SceneAdapter,
    SceneContext,
    SceneData,
)

BOARD = "board"
ALREADY_BOARDED = "already_boarded"
#: 1,000 yuan: far above any bus fare, low enough to catch a fare typed in yuan * 10,000.
MAX_FARE = 100_000
MAX_LINES = 2_000
LINE_PATTERN = r"^[A-Za-z0-9._-]{1,32}$"
_LINE = re.compile(LINE_PATTERN)
_ELDER_BANDS = frozenset({AgeBand.AGE_65_69, AgeBand.AGE_70_79, AgeBand.AGE_80_PLUS})

LineId = Annotated[str, Field(pattern=LINE_PATTERN)]
Fare = Annotated[int, Field(strict=True, ge=0, le=MAX_FARE)]
Percent = Annotated[int, Field(strict=True, ge=0, le=100)]


class Concession(StrEnum):
    """Why a passenger pays less than the line's fare (``concession_of`` takes the cheapest;
    of the same price the first here, age before programme, and ``none`` over a 100 % one)."""

    ELDER = "elder"  # 65 and over
    DISABILITY = "disability"
    SENIOR = "senior"  # 60-64
    STUDENT = "student"
    NONE = "none"


class TransportData(SceneData):
    """One bus operator's tariff, as its validators' trust bundle carries it."""

    lines: dict[LineId, Fare] = Field(
        min_length=1,
        max_length=MAX_LINES,
        description="The operator's lines and the full fare of each in fen (line id: 1-32 of "
        "A-Z, a-z, 0-9, '.', '_' and '-'). A validator runs on one of them (option line=).",
    )
    elder_percent: Percent = Field(
        default=0,
        description="Percent of the full fare paid by card holders aged 65 and over (0: free).",
    )
    senior_percent: Percent = Field(
        default=50,
        description="Percent of the full fare paid by card holders aged 60-64 (50: half fare).",
    )
    disability_percent: Percent = Field(
        default=0,
        description="Percent of the full fare paid by holders of the disability programme.",
    )
    student_percent: Percent = Field(
        default=50,
        description="Percent of the full fare paid by holders of the student programme.",
    )
    transfer_minutes: int = Field(
        default=60,
        ge=1,
        le=240,
        description="A boarding within this many minutes of the passenger's previous boarding, "
        "on another line, is a transfer (the minutes counted from that boarding, inclusive).",
    )
    transfer_discount: Fare = Field(
        default=100,
        description="Fen off a transfer's fare (after the concession, never below 0). 0: no "
        "transfer discount.",
    )
    daily_cap: Fare | None = Field(
        default=None,
        description="Most fen a passenger pays the operator in one local day; null: no cap.",
    )
    repeat_minutes: int = Field(
        default=5,
        ge=0,
        le=60,
        description="A passenger boarding the same line again within this many minutes, with "
        "a fresh code, is refused as already_boarded (a phone shown again for a companion). "
        "0: only the same code is refused (replayed).",
    )

    @model_validator(mode="after")
    def _tariff_is_coherent(self) -> TransportData:
        if self.daily_cap is not None and self.daily_cap < max(self.lines.values()):
            raise ValueError("daily_cap must be at least the highest line fare")
        return self


def concession_of(data: TransportData, card: Card) -> tuple[Concession, int]:
    """The passenger's concession and the percent of the full fare they pay: the cheapest
    that applies (ties as ``Concession`` orders them)."""
    applies = [(Concession.NONE, 100)]
    if card.age_band in _ELDER_BANDS:
        applies.append((Concession.ELDER, data.elder_percent))
    if Programme.DISABILITY in card.programmes:
        applies.append((Concession.DISABILITY, data.disability_percent))
    if card.age_band is AgeBand.AGE_60_64:
        applies.append((Concession.SENIOR, data.senior_percent))
    if Programme.STUDENT in card.programmes:
        applies.append((Concession.STUDENT, data.student_percent))
    # Stable: of the same price, the first listed wins, and "none" (listed first) wins over a
    # concession of 100 %, which is none.
    return min(applies, key=lambda item: item[1])


def _amount(result: Mapping[str, ResultValue], name: str, most: int) -> int:
    """An amount in fen from a journaled result, within 0..most; 0 where it is missing or not
    an integer (an event the settlement must still read, never raise on)."""
    value = result.get(name)
    if type(value) is not int:
        return 0
    return min(max(value, 0), most)


def _full_fare(data: TransportData, line: ResultValue) -> int:
    """The most a boarding journaled on ``line`` is settled for: the line's fare, or the
    tariff's highest where the tariff does not list the line (withdrawn since, or not a line
    id at all), which any validator could have charged by naming the dearest line."""
    if isinstance(line, str) and line in data.lines:
        return data.lines[line]
    return max(data.lines.values())


def _percents(data: TransportData) -> dict[ResultValue, int]:
    """The percent of the full fare each concession pays, by its name in a journaled result;
    a name not here (``none``, or anything that is not a concession) pays 100."""
    return {
        Concession.ELDER.value: data.elder_percent,
        Concession.DISABILITY.value: data.disability_percent,
        Concession.SENIOR.value: data.senior_percent,
        Concession.STUDENT.value: data.student_percent,
    }


def transfer_applies(data: TransportData, previous: Event | None, line: str, at: int) -> bool:
    """Whether a boarding of ``line`` at ``at`` is a transfer from ``previous``, the
    passenger's previous boarding: on another line, at most ``transfer_minutes`` before."""
    return (
        previous is not None
        and previous.result.get("line") != line
        and 0 <= at - previous.at <= data.transfer_minutes * 60
    )


class Adapter(SceneAdapter):
    """A validator at the door of a bus of one line: ``line=<id>``, one of the operator's
    lines. The validators of one bus (front and back door) may share a journal."""

    scene: ClassVar[str] = "transport"
    Data: ClassVar[type[SceneData]] = TransportData
    reasons: ClassVar[tuple[str, ...]] = (ALREADY_BOARDED,)
    actions: ClassVar[tuple[str, ...]] = (BOARD,)
    #: Each bus operator is a site with its own subject key: two operators' validators and
    #: clearing files cannot be joined.
    subject_scope: ClassVar[str] = SITE_SCOPE
    settlement_columns: ClassVar[tuple[str, ...]] = (
        "boardings",
        "full_fares",
        "concession_discounts",
        "transfer_discounts",
        "cap_discounts",
        "fares",
        "door_fares",
    )

    @classmethod
    def check_options(cls, options: Mapping[str, str]) -> None:
        # Which lines there are is the operator's data's to say (__init__); a text that is no
        # line id ("line 1", "") is in no operator's data.
        line = options.get("line")
        if line is None:
            raise SceneError("a bus validator needs the option line=<one of the operator's lines>")
        if not _LINE.fullmatch(line):
            raise SceneError(
                "a bus validator's option line must be a line id (1-32 of A-Z, a-z, 0-9, '.', "
                f"'_' and '-'), got {line[:40]!r}"
            )

    def __init__(self, context: SceneContext) -> None:
        super().__init__(context)
        if not isinstance(context.data, TransportData):
            raise SceneError("transport scene data must be TransportData")
        line = context.options.get("line")
        if line is not None:
            self.check_options(context.options)  # a text that is no line id, said as such
        if line is None or line not in context.data.lines:
            got = "none" if line is None else repr(line[:32])
            known = ", ".join(sorted(context.data.lines)[:10])
            raise SceneError(
                f"a bus validator needs the option line=<one of the operator's lines: {known}"
                f"{', ...' if len(context.data.lines) > 10 else ''}> (got {got})"
            )
        self.tariff = context.data
        self.line = line
        self.full_fare = context.data.lines[line]

    def decide_valid(self, scan: Scan, card: Card, subject: str, history: History) -> Decision:
        tariff, line, at = self.tariff, self.line, scan.at
        today = self.context.day_start(at)
        # One look into the journal: the passenger's newest boarding that can matter to any
        # rule (a repeat, a transfer over midnight too, today's total).
        since = min(today, at - tariff.transfer_minutes * 60, at - tariff.repeat_minutes * 60)
        previous = history.last(subject=subject, action=BOARD, since=since)
        if (
            previous is not None
            and tariff.repeat_minutes
            and previous.at >= at - tariff.repeat_minutes * 60
            and previous.result.get("line") == line
        ):
            return Decision.deny(ALREADY_BOARDED, BOARD, line=line)
        concession, percent = concession_of(tariff, card)
        full = self.full_fare
        after_concession = full * percent // 100  # fen rounded down: in the passenger's favour
        transfer = (
            min(tariff.transfer_discount, after_concession)
            if transfer_applies(tariff, previous, line, at)
            else 0
        )
        due = after_concession - transfer
        paid_today = 0
        if previous is not None and previous.at >= today:
            paid_today = _amount(previous.result, "day_total", MAX_RESULT_INTEGER)
        capped = due
        if tariff.daily_cap is not None:
            capped = min(due, max(0, tariff.daily_cap - paid_today))
        return Decision.admit(
            BOARD,
            line=line,
            concession=concession.value,
            full_fare=full,
            concession_discount=full - after_concession,
            transfer_discount=transfer,
            cap_discount=due - capped,
            fare=capped,
            day_total=paid_today + capped,
        )

    @classmethod
    def settle(cls, data: SceneData, events: Sequence[Event]) -> Mapping[str, int]:
        """One passenger's day at one operator, recomputed across all its validators: each
        boarding's transfer from the passenger's previous boarding anywhere in the operator's
        network, and the daily cap over every fare of the day. A boarding is never settled
        above what its door charged (the door may have seen a transfer or a cap the whole
        day does not confirm; the passenger was shown that fare), nor above the tariff: the
        line's fare, and the concession's percent of it. The concession is the door's: it
        depends on the code alone."""
        if not isinstance(data, TransportData):
            raise SceneError("transport scene data must be TransportData")
        row = dict.fromkeys(cls.settlement_columns, 0)
        percents = _percents(data)
        previous: Event | None = None
        paid = 0
        for event in events:
            if not event.admitted or event.action != BOARD:
                continue
            result = event.result
            line = result.get("line")
            # Never above the tariff: the line's fare, and the door's concession's percent of
            # it, as the operator's data says now. A door that journaled more (a damaged or
            # foreign validator, or a fare lowered since) is cut down to them.
            full = _amount(result, "full_fare", _full_fare(data, line))
            after_concession = min(
                full - _amount(result, "concession_discount", full),
                full * percents.get(result.get("concession"), 100) // 100,
            )
            door = _amount(result, "fare", after_concession)
            transfer = (
                min(data.transfer_discount, after_concession)
                if isinstance(line, str) and transfer_applies(data, previous, line, event.at)
                else 0
            )
            due = after_concession - transfer
            capped = due if data.daily_cap is None else min(due, max(0, data.daily_cap - paid))
            fare = min(capped, door)
            # What the door let off beyond the day's own reckoning is counted as the door's
            # discount was: a transfer, else the cap.
            kept = capped - fare
            door_transfer = _amount(result, "transfer_discount", after_concession) > 0
            row["boardings"] += 1
            row["full_fares"] += full
            row["concession_discounts"] += full - after_concession
            row["transfer_discounts"] += transfer + (kept if door_transfer else 0)
            row["cap_discounts"] += due - capped + (0 if door_transfer else kept)
            row["fares"] += fare
            row["door_fares"] += door
            paid += fare
            previous = event
        return row
