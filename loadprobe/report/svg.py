"""Small inline-SVG charts for report.html: no JavaScript, no network.

`chart` draws one plot: line, dot or step series over linear or
logarithmic axes, with optional reference lines (an SLA limit, the 95 %
mark), labelled vertical markers (a drill's fault, detection, restore)
and shaded bands along x (the spells an observer heard nothing). A point
whose y is NaN breaks a line or step series, so a silence is not drawn as
a straight line across it. `bars` draws grouped bars (one group per
category). Durations are in seconds and labelled ms or s.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from html import escape

PALETTE = ("#1f6fb2", "#e07b00", "#2e8b57", "#8e44ad", "#c0392b")
FAIL_COLOR = "#c0392b"


@dataclass
class Series:
    label: str
    points: Sequence[tuple[float, float]]
    color: str = PALETTE[0]
    kind: str = "line"  # line, dots, step
    failed: Sequence[tuple[float, float]] = field(default_factory=tuple)
    dashed: bool = False


@dataclass
class Reference:
    value: float
    label: str
    axis: str = "y"  # y: a horizontal line at value; x: a vertical one


@dataclass
class Marker:
    """A labelled vertical line at x = value; labels close together are
    stacked in rows so that none hides another."""

    value: float
    label: str
    color: str = "#555"


@dataclass
class Band:
    """A shaded spell along x, from start to end, the full height of the plot."""

    start: float
    end: float
    color: str = FAIL_COLOR
    opacity: float = 0.15


def _y_reference(ref: Reference, y: float, left: float, right: float) -> str:
    """A horizontal reference line at `y`, labelled at its right end."""
    return (
        f'<line x1="{left}" x2="{right}" y1="{y:.1f}" y2="{y:.1f}" class="r"/>'
        f'<text x="{right - 2}" y="{y - 3:.1f}" text-anchor="end" class="rl">'
        f"{escape(ref.label)}</text>"
    )


def fmt_seconds(value: float) -> str:
    if value == 0:
        return "0"
    if value >= 1:
        return f"{value:g} s" if value < 100 else f"{value:.0f} s"
    ms = value * 1000
    return f"{ms:g} ms" if ms >= 1 else f"{ms:.2g} ms"


def fmt_plain(value: float) -> str:
    return f"{value:g}"


def fmt_clock(value: float) -> str:
    whole = round(value)
    return f"{whole // 60}:{whole % 60:02d}" if whole >= 60 else f"{whole}s"


def fmt_fraction(value: float) -> str:
    return f"{value * 100:g}%"


def _nice_step(span: float, target: int) -> float:
    raw = span / max(1, target)
    magnitude = 10 ** math.floor(math.log10(raw)) if raw > 0 else 1.0
    for factor in (1, 2, 2.5, 5, 10):
        if raw <= factor * magnitude:
            return factor * magnitude
    return 10 * magnitude


def linear_ticks(lo: float, hi: float, target: int = 5) -> list[float]:
    if hi <= lo:
        hi = lo + 1
    step = _nice_step(hi - lo, target)
    first = math.ceil(lo / step) * step
    ticks = []
    value = first
    while value <= hi + step * 1e-9:
        ticks.append(round(value, 12))
        value += step
    return ticks


def log_ticks(lo: float, hi: float) -> list[float]:
    """1-2-5 ticks per decade; every integer mantissa on a narrow range, only the
    powers of ten on a wide one."""
    exponents = range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1)
    for mantissas in ((1, 2, 5), (1, 2, 3, 4, 5, 6, 7, 8, 9)):
        ticks = [
            round(m * 10.0**e, 12) for e in exponents for m in mantissas if lo <= m * 10.0**e <= hi
        ]
        if len(ticks) >= 3:
            break
    if len(ticks) > 9:
        ticks = [t for t in ticks if f"{t:e}".startswith("1")]
    return ticks


class _Axis:
    def __init__(self, lo: float, hi: float, start: float, end: float, log: bool) -> None:
        self.log = log
        if log:
            lo = max(lo, 1e-6)
            hi = max(hi, lo * 1.01)
            self.lo, self.hi = math.log10(lo), math.log10(hi)
        else:
            self.lo, self.hi = lo, hi if hi > lo else lo + 1
        self.start, self.end = start, end

    def __call__(self, value: float) -> float:
        v = math.log10(max(value, 1e-9)) if self.log else value
        return self.start + (v - self.lo) / (self.hi - self.lo) * (self.end - self.start)


def chart(
    *,
    title: str,
    series: Sequence[Series],
    x_format: str = "plain",
    y_format: str = "seconds",
    x_log: bool = False,
    y_log: bool = False,
    x_range: tuple[float, float] | None = None,
    y_range: tuple[float, float] | None = None,
    references: Sequence[Reference] = (),
    markers: Sequence[Marker] = (),
    bands: Sequence[Band] = (),
    width: int = 480,
    height: int = 230,
    note: str = "",
) -> str:
    formats = {
        "plain": fmt_plain,
        "seconds": fmt_seconds,
        "clock": fmt_clock,
        "fraction": fmt_fraction,
    }
    fx, fy = formats[x_format], formats[y_format]
    left, right, top, bottom = 62, 12, (36 if note else 26), 38
    xs = [p[0] for s in series for p in (*s.points, *s.failed) if math.isfinite(p[1])]
    ys = [p[1] for s in series for p in (*s.points, *s.failed) if math.isfinite(p[1])]
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="{escape(title)}">',
        f'<text x="{left}" y="16" class="t">{escape(title)}</text>',
    ]
    if not xs:
        parts.append(
            f'<text x="{width / 2}" y="{height / 2}" text-anchor="middle" class="n">no data</text>'
        )
        parts.append("</svg>")
        return "".join(parts)
    x_lo, x_hi = x_range or (min(xs), max(xs))
    y_lo, y_hi = y_range or (0.0 if not y_log else min(ys), max(ys))
    for ref in references:
        if ref.axis == "y" and not y_range:
            y_hi = max(y_hi, ref.value)
        if ref.axis == "x" and not x_range:
            x_hi = max(x_hi, ref.value)
    if not y_log:
        y_hi = y_hi * 1.05 if y_hi > 0 else 1.0
    if x_hi <= x_lo:
        x_hi = x_lo + (abs(x_lo) * 0.1 or 1.0)
    if y_log and y_hi <= y_lo:
        y_hi = y_lo * 10
    ax = _Axis(x_lo, x_hi, left, width - right, x_log)
    ay = _Axis(y_lo, y_hi, height - bottom, top, y_log)
    x_ticks = log_ticks(max(x_lo, 1e-6), x_hi) if x_log else linear_ticks(x_lo, x_hi)
    y_ticks = log_ticks(max(y_lo, 1e-6), y_hi) if y_log else linear_ticks(y_lo, y_hi)
    plot_bottom, plot_top = height - bottom, top
    parts.append(
        f'<rect x="{left}" y="{top}" width="{width - left - right}" '
        f'height="{height - top - bottom}" class="f"/>'
    )
    parts.extend(_bands(bands, ax, left, width - right, plot_top, plot_bottom))
    for tick in y_ticks:
        y = ay(tick)
        parts.append(
            f'<line x1="{left}" x2="{width - right}" y1="{y:.1f}" y2="{y:.1f}" class="g"/>'
        )
        parts.append(
            f'<text x="{left - 4}" y="{y + 3:.1f}" text-anchor="end" class="a">{fy(tick)}</text>'
        )
    for tick in x_ticks:
        x = ax(tick)
        parts.append(
            f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{plot_top}" y2="{plot_bottom}" class="g"/>'
        )
        parts.append(
            f'<text x="{x:.1f}" y="{plot_bottom + 14}" text-anchor="middle" class="a">'
            f"{fx(tick)}</text>"
        )
    for ref in references:
        if ref.axis == "y":
            parts.append(_y_reference(ref, ay(ref.value), left, width - right))
        else:
            x = ax(ref.value)
            near_right = x > (left + width - right) / 2
            anchor, dx = ("end", -3) if near_right else ("start", 3)
            parts.append(
                f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{plot_top}" y2="{plot_bottom}" class="r"/>'
                f'<text x="{x + dx:.1f}" y="{plot_top + 22}" text-anchor="{anchor}" class="rl">'
                f"{escape(ref.label)}</text>"
            )
    for s in series:
        if s.kind == "dots":
            pts = [(ax(x), ay(y)) for x, y in s.points if math.isfinite(y)]
            parts.append(f'<g fill="{s.color}" fill-opacity="0.55">')
            parts.extend(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="1.8"/>' for x, y in pts)
            parts.append("</g>")
        for run in _finite_runs(s.points) if s.kind != "dots" else ():
            pts = [(ax(x), ay(y)) for x, y in run]
            if s.kind == "step":
                stepped = [pts[0]]
                for (_x0, y0), (x1, y1) in itertools.pairwise(pts):
                    stepped += [(x1, y0), (x1, y1)]
                pts = stepped
            coords = " ".join(f"{x:.1f},{y:.1f}" for x, y in pts)
            dash = ' stroke-dasharray="5 3"' if s.dashed else ""
            parts.append(
                f'<polyline points="{coords}" fill="none" stroke="{s.color}" '
                f'stroke-width="1.8"{dash}/>'
            )
        if s.failed:
            parts.append(f'<g stroke="{FAIL_COLOR}" stroke-width="1.3">')
            for x, y in ((ax(x), ay(y)) for x, y in s.failed):
                parts.append(
                    f'<path d="M{x - 3:.1f},{y - 3:.1f}L{x + 3:.1f},{y + 3:.1f}'
                    f'M{x - 3:.1f},{y + 3:.1f}L{x + 3:.1f},{y - 3:.1f}"/>'
                )
            parts.append("</g>")
    parts.extend(_markers(markers, ax, left, width - right, plot_top, plot_bottom))
    legend_x = left + 4
    for s in series:
        label = escape(s.label)
        dash = ' stroke-dasharray="4 2"' if s.dashed else ""
        swatch = (
            f'<circle cx="{legend_x + 5}" cy="{height - 11}" r="3" fill="{s.color}"/>'
            if s.kind == "dots"
            else f'<line x1="{legend_x}" x2="{legend_x + 12}" y1="{height - 11}" '
            f'y2="{height - 11}" stroke="{s.color}" stroke-width="2"{dash}/>'
        )
        parts.append(f'{swatch}<text x="{legend_x + 16}" y="{height - 8}" class="a">{label}</text>')
        legend_x += 24 + 7 * len(s.label)
    if any(s.failed for s in series):
        parts.append(
            f'<text x="{legend_x}" y="{height - 8}" class="a" fill="{FAIL_COLOR}">× failed</text>'
        )
    if note:
        parts.append(
            f'<text x="{width - right}" y="29" text-anchor="end" class="n">{escape(note)}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def _finite_runs(points: Sequence[tuple[float, float]]) -> list[list[tuple[float, float]]]:
    """The stretches of a line between NaN points (each drawn as one polyline)."""
    runs: list[list[tuple[float, float]]] = [[]]
    for point in points:
        if math.isfinite(point[1]):
            runs[-1].append(point)
        elif runs[-1]:
            runs.append([])
    return [run for run in runs if run]


def _bands(
    bands: Sequence[Band], ax: _Axis, left: float, right: float, top: float, bottom: float
) -> list[str]:
    parts = []
    for band in bands:
        x0 = min(max(ax(band.start), left), right)
        x1 = min(max(ax(band.end), left), right)
        # At least one pixel wide: a short gap on a long axis must stay visible.
        w = max(x1 - x0, 1.0)
        parts.append(
            f'<rect x="{x0:.1f}" y="{top}" width="{w:.1f}" height="{bottom - top}" '
            f'fill="{band.color}" fill-opacity="{band.opacity:g}"/>'
        )
    return parts


def _markers(
    markers: Sequence[Marker], ax: _Axis, left: float, right: float, top: float, bottom: float
) -> list[str]:
    parts = []
    row_ends: list[float] = []  # per label row: where its last label ends
    for marker in sorted(markers, key=lambda m: m.value):
        x = ax(marker.value)
        if not left - 0.5 <= x <= right + 0.5:
            continue
        color = escape(marker.color)
        parts.append(
            f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{top}" y2="{bottom}" stroke="{color}" '
            'stroke-width="1.2" stroke-dasharray="3 2"/>'
        )
        if not marker.label:
            continue
        text_w = 5.6 * len(marker.label) + 6
        near_right = x + text_w > right
        lo, hi = (x - text_w, x) if near_right else (x, x + text_w)
        row = next((i for i, end in enumerate(row_ends) if lo > end), len(row_ends))
        if row == len(row_ends):
            row_ends.append(hi)
        row_ends[row] = max(row_ends[row], hi)
        anchor, dx = ("end", -3) if near_right else ("start", 3)
        parts.append(
            f'<text x="{x + dx:.1f}" y="{top + 11 + 11 * row}" text-anchor="{anchor}" '
            f'class="a" fill="{color}">{escape(marker.label)}</text>'
        )
    return parts


def bars(
    *,
    title: str,
    groups: Sequence[str],
    series: Sequence[tuple[str, Sequence[float | None]]],
    y_format: str = "plain",
    references: Sequence[Reference] = (),
    width: int = 480,
    height: int = 230,
    note: str = "",
) -> str:
    """Grouped bars: one group per category (`groups`), one bar per series in
    each; a None value leaves its bar out. Only y references are drawn."""
    formats = {"plain": fmt_plain, "seconds": fmt_seconds, "fraction": fmt_fraction}
    fy = formats[y_format]
    left, right, top, bottom = 62, 12, (36 if note else 26), 38
    values = [v for _, vs in series for v in vs if v is not None and math.isfinite(v)]
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="{escape(title)}">',
        f'<text x="{left}" y="16" class="t">{escape(title)}</text>',
    ]
    if not values or not groups:
        parts.append(
            f'<text x="{width / 2}" y="{height / 2}" text-anchor="middle" class="n">no data</text>'
        )
        parts.append("</svg>")
        return "".join(parts)
    y_hi = max([*values, *(r.value for r in references if r.axis == "y")])
    y_hi = y_hi * 1.05 if y_hi > 0 else 1.0
    ay = _Axis(0.0, y_hi, height - bottom, top, False)
    plot_bottom = height - bottom
    parts.append(
        f'<rect x="{left}" y="{top}" width="{width - left - right}" '
        f'height="{height - top - bottom}" class="f"/>'
    )
    for tick in linear_ticks(0.0, y_hi):
        y = ay(tick)
        parts.append(
            f'<line x1="{left}" x2="{width - right}" y1="{y:.1f}" y2="{y:.1f}" class="g"/>'
            f'<text x="{left - 4}" y="{y + 3:.1f}" text-anchor="end" class="a">{fy(tick)}</text>'
        )
    slot = (width - left - right) / len(groups)
    bar_w = min(slot * 0.8 / max(1, len(series)), 36.0)  # few groups: no slabs
    for g, group in enumerate(groups):
        x0 = left + (g + 0.5) * slot - bar_w * len(series) / 2
        for i, (_label, vs) in enumerate(series):
            value = vs[g] if g < len(vs) else None
            if value is None or not math.isfinite(value):
                continue
            y = ay(value)
            parts.append(
                f'<rect x="{x0 + i * bar_w:.1f}" y="{y:.1f}" width="{max(bar_w - 1, 1):.1f}" '
                f'height="{plot_bottom - y:.1f}" fill="{PALETTE[i % len(PALETTE)]}"/>'
            )
        parts.append(
            f'<text x="{left + (g + 0.5) * slot:.1f}" y="{plot_bottom + 14}" '
            f'text-anchor="middle" class="a">{escape(group)}</text>'
        )
    for ref in references:
        if ref.axis == "y":
            parts.append(_y_reference(ref, ay(ref.value), left, width - right))
    legend_x = left + 4
    for i, (label, _vs) in enumerate(series):
        parts.append(
            f'<rect x="{legend_x}" y="{height - 15}" width="9" height="8" '
            f'fill="{PALETTE[i % len(PALETTE)]}"/>'
            f'<text x="{legend_x + 13}" y="{height - 8}" class="a">{escape(label)}</text>'
        )
        legend_x += 24 + 7 * len(label)
    if note:
        parts.append(
            f'<text x="{width - right}" y="29" text-anchor="end" class="n">{escape(note)}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)
