"""The drill report's timeline: what the data-plane observer saw, as two
stacked inline-SVG charts sharing one x axis (round-trip time above, loss
below), with the drill's marks (fault, detection, restore, ...) as labelled
vertical lines and the observer's gaps shaded.

A drill holds 600 to 6000 bins of 100 ms per probe kind; drawing each would
make a page of megabytes, so bins are merged into at most `MAX_POINTS`
buckets per series.  Merging takes the maximum (RTT and loss alike), so a
bucket with one silent bin still shows the silence: a gap never disappears
by being averaged away.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from loadprobe.report.svg import PALETTE, Band, Marker, Series, chart
from netwatch.drill.record import Mark, ObserverSeries

MAX_POINTS = 500
WIDTH = 1000  # both charts: the same width and left margin keep their x axes aligned

MARK_COLORS = {
    "fault": "#b3261e",
    "detection": "#e07b00",
    "route_change": "#8e44ad",
    "restore": "#2e8b57",
    "failback": "#1f6fb2",
    "abort": "#1d2733",
}


@dataclass(frozen=True)
class Bucket:
    """Consecutive bins merged for drawing; NaN where nothing was measured."""

    start: float  # seconds since the timeline's origin
    end: float
    rtt_p50_s: float
    rtt_max_s: float
    loss: float  # 0..1, the worst bin's


def origin(observer: Sequence[ObserverSeries], marks: Sequence[Mark], fallback: float) -> float:
    """Time zero of the chart: the first observer bin, else the first mark."""
    starts = [s.t0 for s in observer if s.sent]
    if starts:
        return min(starts)
    return min((m.at for m in marks), default=fallback)


def buckets(series: ObserverSeries, zero: float, max_points: int = MAX_POINTS) -> list[Bucket]:
    n = len(series.sent)
    if n == 0 or series.bin_s <= 0:
        return []
    per = max(1, math.ceil(n / max_points))
    out = []
    for first in range(0, n, per):
        idx = range(first, min(n, first + per))
        out.append(
            Bucket(
                start=series.t0 - zero + first * series.bin_s,
                end=series.t0 - zero + idx[-1] * series.bin_s + series.bin_s,
                rtt_p50_s=_worst(_at(series.rtt_p50_s, i) for i in idx),
                rtt_max_s=_worst(_at(series.rtt_max_s, i) for i in idx),
                loss=_worst(_loss(series, i) for i in idx),
            )
        )
    return out


def _at(values: Sequence[float | None], i: int) -> float | None:
    return values[i] if i < len(values) else None


def _loss(series: ObserverSeries, i: int) -> float | None:
    sent = series.sent[i]
    if sent <= 0:
        return None  # nothing sent: no evidence either way
    answered = series.answered[i] if i < len(series.answered) else 0
    return min(1.0, max(0.0, 1 - answered / sent))


def _worst(values: Iterable[float | None]) -> float:
    seen = [v for v in values if v is not None]
    return float(max(seen)) if seen else math.nan


def lighter(color: str, amount: float = 0.55) -> str:
    """`color` (#rrggbb) mixed with white: the same hue, for a secondary line."""
    rgb = [int(color[i : i + 2], 16) for i in (1, 3, 5)]
    return "#" + "".join(f"{round(c + (255 - c) * amount):02x}" for c in rgb)


def render(observer: Sequence[ObserverSeries], marks: Sequence[Mark], zero: float) -> str:
    """The two charts as HTML, or "" when the observer saw nothing to draw."""
    drawn = [(s, buckets(s, zero)) for s in observer]
    drawn = [(s, b) for s, b in drawn if b]
    if not drawn:
        return ""
    rtt: list[Series] = []
    loss: list[Series] = []
    bands: list[Band] = []
    for index, (s, bs) in enumerate(drawn):
        color = PALETTE[index % len(PALETTE)]
        name = f"{s.kind} {s.target}" if len(drawn) > len({x.kind for x, _ in drawn}) else s.kind
        mid = [(b.start + b.end) / 2 for b in bs]
        rtt.append(
            Series(
                f"{name} max",
                list(zip(mid, (b.rtt_max_s for b in bs), strict=True)),
                lighter(color),
            )
        )
        rtt.append(
            Series(f"{name} p50", list(zip(mid, (b.rtt_p50_s for b in bs), strict=True)), color)
        )
        steps = [(b.start, b.loss) for b in bs] + [(bs[-1].end, bs[-1].loss)]
        loss.append(Series(f"{name} loss", steps, color, "step"))
        bands.extend(Band(a - zero, b - zero, color, 0.18) for a, b in s.gaps)
    ends = [bs[-1].end for _, bs in drawn] + [m.at - zero for m in marks]
    starts = [0.0] + [m.at - zero for m in marks]
    x_range = (min(starts), max(ends))
    labelled = [Marker(m.at - zero, m.label or m.name, _mark_color(m)) for m in marks]
    plain = [Marker(m.at - zero, "", _mark_color(m)) for m in marks]
    thresholds = {s.gap_threshold_s for s, _ in drawn if s.gap_threshold_s > 0}
    note = (
        "shaded: no answer for more than " + " / ".join(f"{t:g} s" for t in sorted(thresholds))
        if thresholds
        else ""
    )
    top = chart(
        title="Round-trip time seen by the observer (p50; max lighter)",
        series=rtt,
        x_format="clock",
        y_format="seconds",
        x_range=x_range,
        markers=labelled,
        bands=bands,
        width=WIDTH,
        height=280,
        note=note,
    )
    bottom = chart(
        title="Probes lost (1 − answered / sent, worst bin of each point)",
        series=loss,
        x_format="clock",
        y_format="fraction",
        x_range=x_range,
        y_range=(0.0, 1.0),
        markers=plain,
        bands=bands,
        width=WIDTH,
        height=170,
    )
    return f"<div class='timeline'>{top}<br>{bottom}</div>"


def _mark_color(mark: Mark) -> str:
    return MARK_COLORS.get(mark.name, "#555")
