"""The overview's charts as geometry for inline SVG, drawn on the server: no script, no
library, nothing fetched. The templates turn these rectangles into ``<rect>`` elements (each
with a ``<title>``, which browsers show on hover); Jinja escapes every label.
"""

from __future__ import annotations

from dataclasses import dataclass

from idcode.service.console.queries import HourlyCounts

#: Distinguishable colours (Okabe-Ito), one per series in order; more series repeat them.
PALETTE = ("#0072b2", "#e69f00", "#009e73", "#cc79a7", "#56b4e9", "#d55e00", "#f0e442", "#000")
WIDTH = 720
HEIGHT = 220
LEFT = 40  # room for the axis' numbers
BOTTOM = 20  # room for the hours
TOP = 10


@dataclass(frozen=True, slots=True)
class Rect:
    x: float
    y: float
    width: float
    height: float
    colour: str
    title: str


@dataclass(frozen=True, slots=True)
class Label:
    x: float
    y: float
    text: str
    anchor: str = "end"  # SVG text-anchor: start, middle or end


@dataclass(frozen=True, slots=True)
class Chart:
    width: int
    height: int
    rects: tuple[Rect, ...]
    labels: tuple[Label, ...]
    legend: tuple[tuple[str, str], ...]  # (colour, series name)
    total: int


def stacked_hours(counts: HourlyCounts) -> Chart:
    """One column per hour, each series stacked in its colour."""
    slots = len(counts.hours)
    totals = [sum(series[i] for series in counts.series.values()) for i in range(slots)]
    peak = max(totals, default=0) or 1
    plot_height = HEIGHT - TOP - BOTTOM
    step = (WIDTH - LEFT) / max(slots, 1)
    colours = {name: PALETTE[i % len(PALETTE)] for i, name in enumerate(counts.series)}
    rects: list[Rect] = []
    for i, hour in enumerate(counts.hours):
        base = float(HEIGHT - BOTTOM)
        for name, series in counts.series.items():
            if series[i] == 0:
                continue
            height = series[i] / peak * plot_height
            base -= height
            rects.append(
                Rect(
                    x=round(LEFT + i * step + 1, 1),
                    y=round(base, 1),
                    width=round(step - 2, 1),
                    height=round(height, 1),
                    colour=colours[name],
                    title=f"{name}, {hour:%H}:00 UTC: {series[i]}",
                )
            )
    labels = [
        Label(LEFT - 4, TOP + 8, str(peak if any(totals) else 0)),
        Label(LEFT - 4, HEIGHT - BOTTOM, "0"),
    ]
    labels += [
        Label(round(LEFT + i * step + step / 2, 1), HEIGHT - 4, f"{hour:%H}:00", "middle")
        for i, hour in enumerate(counts.hours)
        if i % 6 == 0
    ]
    return Chart(
        WIDTH,
        HEIGHT,
        tuple(rects),
        tuple(labels),
        tuple((colour, name) for name, colour in colours.items()),
        sum(totals),
    )


ROW = 22


def horizontal_bars(rows: list[tuple[str, int]]) -> Chart:
    """One bar per row (a reason and its count), longest for the largest count."""
    names_width = 220
    peak = max((count for _, count in rows), default=0) or 1
    rects = []
    labels = []
    for i, (name, count) in enumerate(rows):
        y = TOP + i * ROW
        length = count / peak * (WIDTH - names_width - 60)
        rects.append(
            Rect(names_width, y, round(length, 1), ROW - 6, PALETTE[5], f"{name}: {count}")
        )
        labels.append(Label(names_width - 6, y + ROW - 10, name))
        labels.append(Label(round(names_width + length + 6, 1), y + ROW - 10, str(count), "start"))
    height = TOP + max(len(rows), 1) * ROW + 4
    return Chart(WIDTH, height, tuple(rects), tuple(labels), (), sum(c for _, c in rows))
