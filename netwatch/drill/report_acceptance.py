"""acceptance.html: the campaign's page, towns in cutover order, each
town's primary and backup load runs, and the degradation factor per town
and transaction as a bar chart."""

from __future__ import annotations

from collections.abc import Sequence
from html import escape
from pathlib import Path

from loadprobe.report.svg import Reference, bars
from netwatch.drill.record import AcceptanceRecord, LoadSummary, TownAcceptance
from netwatch.drill.report_html import (
    BANNER,
    banner,
    cell,
    key_values,
    loads_table,
    page,
    raw_cell,
    report_link,
    seconds,
    stamp,
    table,
    verdict_cell,
)
from netwatch.messages import DrillStatus


def render(record: AcceptanceRecord, directory: Path) -> str:
    title = "netwatch acceptance campaign"
    word = BANNER.get(record.status, ("", record.status.value.upper()))[1]
    passed = sum(1 for t in record.towns if t.status is DrillStatus.PASSED)
    summary = f"{passed} of {len(record.towns)} towns passed"
    if record.reason:
        summary += f" — {record.reason}"
    resumed = (
        f" · resumed from {escape(record.resumed_from)}" if record.resumed_from is not None else ""
    )
    took = f" ({seconds(record.ended - record.started)})" if record.ended is not None else ""
    body = [
        f"<h1>{escape(title)}</h1>",
        f"<div class='muted'>campaign {escape(record.campaign_id)} · {stamp(record.started)} → "
        f"{stamp(record.ended)}{took}{resumed}</div>",
        banner(record.status, summary),
        "<h2>Towns, in cutover order</h2>",
        _towns(record.towns, directory),
        _degradation_chart(record.towns),
    ]
    for town in record.towns:
        body.append(f"<h3>{escape(town.town_name)} ({escape(town.town)})</h3>")
        body.append(loads_table(town.loads, directory))
    body += [
        "<h2>Settings</h2>",
        key_values(record.settings),
        "<h2>Versions</h2>",
        key_values(record.versions),
        "<p class='muted'>Every figure is also in acceptance.json.</p>",
    ]
    return page(f"{title} — {word}", body)


def _load(town: TownAcceptance, label: str) -> LoadSummary | None:
    return next((x for x in town.loads if x.label == label), None)


def worst_factor(town: TownAcceptance) -> tuple[float, str] | None:
    factors = [(f, name) for x in town.loads for name, f in x.degradation.items() if f is not None]
    return max(factors) if factors else None


def _towns(towns: Sequence[TownAcceptance], directory: Path) -> str:
    if not towns:
        return "<p class='muted'>No town was tested.</p>"
    rows = []
    for index, town in enumerate(towns, 1):
        cls, word = BANNER.get(town.status, ("fail", town.status.value.upper()))
        status = cell(word, {"pass": "st-pass", "fail": "st-fail"}.get(cls, "st-abort"))
        if town.skipped:
            status = cell(f"{word} (earlier run)", "st-pass")
        worst = worst_factor(town)
        links = " ".join(report_link(x.report_dir, directory, x.label) for x in town.loads)
        rows.append(
            [
                cell(index),
                cell(f"{town.town_name} ({town.town})", "l"),
                status,
                verdict_cell(_load(town, "primary")),
                verdict_cell(_load(town, "backup")),
                cell("-" if worst is None else f"{worst[0]:.2f}× ({worst[1]})"),
                cell(town.reason, "l"),
                raw_cell(links or "-", "l"),
            ]
        )
    header = ["", "town", "status", "primary", "backup", "worst factor", "reason", "reports"]
    return table(header, rows)


def _degradation_chart(towns: Sequence[TownAcceptance]) -> str:
    """Degradation factor (backup p95 / primary p95) per town and transaction."""
    measured = [t for t in towns if worst_factor(t) is not None]
    if not measured:
        return ""
    names = list(dict.fromkeys(n for t in measured for x in t.loads for n in x.degradation))
    series = [
        (
            name,
            [
                max(
                    (f for x in t.loads if (f := x.degradation.get(name)) is not None), default=None
                )
                for t in measured
            ],
        )
        for name in names
    ]
    svg = bars(
        title="Degradation factor per town and transaction (p95 against the baseline)",
        groups=[t.town for t in measured],
        series=series,
        references=[Reference(1.0, "1× = as fast as the baseline")],
        width=1000,
        height=260,
    )
    return f"<div class='charts'>{svg}</div>"
