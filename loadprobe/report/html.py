"""report.html: one page a person reads, rendered from report.json alone.

Verdict first; then the thresholds, the degradation against the baseline
(primary beside backup), and a section per transaction with its figures,
response time over the run and its latency distribution (inline SVG).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from html import escape
from typing import Any

from loadprobe.report.svg import PALETTE, Reference, Series, chart
from loadprobe.verdict import format_limit, format_seconds, format_value

CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:24px auto;
max-width:1040px;color:#1d2733;padding:0 12px}
h1{font-size:22px;margin:0 0 4px}
h2{font-size:18px;margin:28px 0 8px;border-bottom:1px solid #dde3ea}
h3{font-size:16px;margin:22px 0 6px}
.verdict{padding:14px 18px;border-radius:6px;margin:14px 0;color:#fff}
.verdict b{font-size:26px;margin-right:12px}.pass{background:#22804a}.fail{background:#b3261e}
table{border-collapse:collapse;margin:6px 0 10px}
td,th{padding:3px 10px;border-bottom:1px solid #e6eaef;text-align:right;white-space:nowrap}
th{background:#f4f6f9}td:first-child,th:first-child{text-align:left}
td.l{text-align:left;white-space:normal}
.st-pass{color:#22804a;font-weight:600}.st-fail{color:#b3261e;font-weight:700}.st-skip{color:#777}
.charts{display:flex;flex-wrap:wrap;gap:8px}.muted{color:#667}
svg{background:#fff}svg .t{font-size:12px;font-weight:600;fill:#1d2733}
svg .a{font-size:10px;fill:#556}svg .n{font-size:11px;fill:#889}svg .f{fill:none;stroke:#ccd3db}
svg .g{stroke:#eef1f4}svg .r{stroke:#b3261e;stroke-dasharray:4 3}
svg .rl{font-size:10px;fill:#b3261e}
code{background:#f4f6f9;padding:0 3px;border-radius:3px}
"""


def _cell(value: Any, cls: str = "") -> str:
    attr = f' class="{cls}"' if cls else ""
    return f"<td{attr}>{escape(str(value))}</td>"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = "".join(f"<tr>{''.join(row)}</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _seconds(value: Any) -> str:
    return format_seconds(value) if isinstance(value, int | float) else "-"


def _ratio(value: Any) -> str:
    return f"{value * 100:.2f}%" if isinstance(value, int | float) else "-"


def render(report: Mapping[str, Any]) -> str:
    town = report.get("town", {})
    runs: list[Mapping[str, Any]] = list(report.get("runs", []))
    ok = report.get("verdict") == "pass"
    title = f"loadprobe {report.get('kind', 'run')}: {town.get('name', '')} ({town.get('id', '')})"
    out = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>{escape(title)} — {'PASS' if ok else 'FAIL'}</title>",
        f"<style>{CSS}</style></head><body>",
        f"<h1>{escape(title)}</h1>",
        f"<div class='muted'>{escape(_when(runs))}</div>",
        f"<div class='verdict {'pass' if ok else 'fail'}'><b>{'PASS' if ok else 'FAIL'}</b>"
        f"{escape(str(report.get('summary', '')).removeprefix('PASS: ').removeprefix('FAIL: '))}"
        "</div>",
    ]
    out.append(_runs_table(runs))
    for run in runs:
        for note in run.get("notes", []):
            out.append(f"<p class='st-fail'>{escape(run['label'])}: {escape(note)}</p>")
    out.append("<h2>Thresholds</h2>")
    out.append(_thresholds(report.get("thresholds", [])))
    if report.get("degradation"):
        out.append("<h2>Degradation against the baseline</h2>")
        out.append(
            f"<p class='muted'>Baseline: {escape(str(report.get('baseline') or '-'))}. "
            "Factor = this run's p95 / the baseline's p95.</p>"
        )
        out.append(_degradation(report["degradation"]))
    out.append("<h2>Transactions</h2>")
    out.append(
        f"<p class='muted'>Percentiles: {escape(str(report.get('percentiles', '')))}. "
        "Charts: each dot is one transaction, × a failed one; the line is the p95 of each "
        "time slice; the distribution is the share of transactions at or below a duration.</p>"
    )
    sla = report.get("sla", {})
    names = list(sla) + [n for run in runs for n in run.get("transactions", {}) if n not in sla]
    for name in dict.fromkeys(names):
        out.append(_transaction(name, runs, sla.get(name)))
    out.append("<h2>HTTP requests</h2>")
    for run in runs:
        out.append(_requests(run))
    out.append("<h2>Environment</h2>")
    env_rows = [[_cell(k), _cell(_short(v), "l")] for k, v in report.get("environment", {}).items()]
    out.append(_table(["", ""], env_rows))
    out.append(
        "<p class='muted'>Every figure is also in report.json; raw samples in each run's "
        "samples.jsonl.</p></body></html>"
    )
    return "\n".join(out)


def _when(runs: Sequence[Mapping[str, Any]]) -> str:
    if not runs:
        return ""
    return f"{runs[0].get('started_at', '')} → {runs[-1].get('ended_at', '')} (UTC)"


def _short(value: Any) -> str:
    text = str(value)
    return text if len(text) < 300 else text[:297] + "..."


def _runs_table(runs: Sequence[Mapping[str, Any]]) -> str:
    rows = []
    for run in runs:
        path = run.get("path", {})
        lookups = path.get("lookups", [])
        first = lookups[0] if lookups else {}
        route = f"{first.get('dev') or '?'} via {first.get('gateway') or 'direct'}"
        consistent = path.get("consistent")
        rows.append(
            [
                _cell(run.get("label")),
                _cell(path.get("requested") or "-"),
                _cell(
                    f"{path.get('observed') or 'mixed/unknown'}"
                    f"{'' if consistent else ' (not consistent!)'}",
                    "st-pass" if consistent else "st-fail",
                ),
                _cell(f"{route}; {len(lookups)} lookups", "l"),
                _cell(_seconds(run.get("connect_rtt_seconds"))),
                _cell(f"{run.get('terminals')} × {_think(run)}"),
                _cell(f"{run.get('duration_seconds', 0):.0f} s"),
                _cell(
                    "yes" if run.get("complete") else "NO", "" if run.get("complete") else "st-fail"
                ),
            ]
        )
    header = [
        "run",
        "path asked",
        "path taken",
        "route",
        "TCP connect",
        "terminals × think",
        "ran",
        "complete",
    ]
    return _table(header, rows)


def _think(run: Mapping[str, Any]) -> str:
    low, high = run.get("think_time_seconds", [0, 0])
    return f"{format_seconds(low)}–{format_seconds(high)}" if low != high else format_seconds(low)


def _thresholds(checks: Sequence[Mapping[str, Any]]) -> str:
    order = {"fail": 0, "pass": 1, "skip": 2}
    rows = []
    for check in sorted(checks, key=lambda c: order.get(str(c["status"]), 3)):
        status = str(check["status"])
        rows.append(
            [
                _cell(status.upper(), f"st-{status}"),
                _cell(check["run"]),
                _cell(check["name"], "l"),
                _cell(format_value(str(check["threshold"]), check["measured"])),
                _cell(format_limit(str(check["threshold"]), check["limit"])),
                _cell(check["reason"], "l"),
            ]
        )
    return _table(["", "run", "threshold", "measured", "limit", "why"], rows)


def _degradation(data: Mapping[str, Mapping[str, Any]]) -> str:
    rows = []
    for name, d in data.items():
        factor, limit = d.get("factor"), d.get("max_factor")
        ok = factor is not None and limit is not None and factor <= limit
        rows.append(
            [
                _cell(name),
                _cell(_seconds(d.get("baseline_p50_seconds"))),
                _cell(_seconds(d.get("p50_seconds"))),
                _cell(_seconds(d.get("baseline_p95_seconds"))),
                _cell(_seconds(d.get("p95_seconds"))),
                _cell(_signed(d.get("extra_p95_seconds"))),
                _cell("-" if factor is None else f"{factor:.2f}×", "st-pass" if ok else "st-fail"),
                _cell("-" if limit is None else f"{limit:g}×"),
            ]
        )
    header = [
        "transaction",
        "baseline p50",
        "p50",
        "baseline p95",
        "p95",
        "extra p95",
        "factor",
        "max",
    ]
    return _table(header, rows)


def _signed(value: Any) -> str:
    if not isinstance(value, int | float):
        return "-"
    return ("+" if value >= 0 else "−") + format_seconds(abs(value))


_ROWS = (
    ("transactions", "count", str),
    ("failed", "failed", str),
    ("error ratio", "error_ratio", _ratio),
    ("p50", "p50_seconds", _seconds),
    ("p90", "p90_seconds", _seconds),
    ("p95", "p95_seconds", _seconds),
    ("p99", "p99_seconds", _seconds),
    ("max", "max_seconds", _seconds),
)


def _transaction(
    name: str, runs: Sequence[Mapping[str, Any]], sla: Mapping[str, Any] | None
) -> str:
    limits = {
        "error_ratio": _ratio(sla.get("max_error_ratio")) if sla else "",
        "p95_seconds": _seconds(sla.get("p95_seconds")) if sla else "",
        "p99_seconds": _seconds(sla.get("p99_seconds")) if sla else "",
    }
    rows = []
    for label, key, fmt in _ROWS:
        row = [_cell(label)]
        for run in runs:
            tx = run.get("transactions", {}).get(name, {})
            value = tx.get(key)
            row.append(_cell(fmt(value) if value is not None else "-"))
        if sla is not None:
            row.append(_cell(limits.get(key, "")))
        rows.append(row)
    header = ["", *[str(r.get("label")) for r in runs], *(["SLA"] if sla is not None else [])]
    errors = []
    for run in runs:
        for reason, count in run.get("transactions", {}).get(name, {}).get("errors", {}).items():
            errors.append(f"<li>{escape(str(run.get('label')))}: {escape(reason)} × {count}</li>")
    parts = [f"<h3>{escape(name)}</h3>", _table(header, rows)]
    if errors:
        parts.append(f"<ul class='st-fail'>{''.join(errors)}</ul>")
    parts.append("<div class='charts'>")
    parts.append(_over_time(name, runs, sla))
    parts.append(_distribution(name, runs, sla))
    parts.append("</div>")
    return "\n".join(parts)


def _over_time(name: str, runs: Sequence[Mapping[str, Any]], sla: Mapping[str, Any] | None) -> str:
    series = []
    highest = 0.0
    for index, run in enumerate(runs):
        tx = run.get("transactions", {}).get(name, {})
        color = PALETTE[index % len(PALETTE)]
        samples = tx.get("samples", [])
        ok = [(float(s[0]), float(s[1])) for s in samples if s[2]]
        bad = [(float(s[0]), float(s[1])) for s in samples if not s[2]]
        highest = max([highest, *(y for _, y in ok)])
        series.append(Series(f"{run.get('label')}", ok, color, "dots", bad))
        line = [
            (float(b["offset"]), float(b["p95"]))
            for b in tx.get("timeline", [])
            if b.get("p95") is not None
        ]
        if len(line) > 1:
            series.append(Series(f"{run.get('label')} p95", line, color, "line", dashed=True))
    refs, note = _limit_ref(sla, highest, "y")
    return chart(
        title=f"{name}: response time over the run",
        x_range=(0.0, max([1.0, *(float(r.get("duration_seconds") or 0) for r in runs)])),
        series=series,
        x_format="clock",
        y_format="seconds",
        references=refs,
        note=note,
    )


def _distribution(
    name: str, runs: Sequence[Mapping[str, Any]], sla: Mapping[str, Any] | None
) -> str:
    series = []
    highest = 0.0
    for index, run in enumerate(runs):
        points = [
            (float(d), float(f))
            for d, f in run.get("transactions", {}).get(name, {}).get("distribution", [])
        ]
        if points:
            points.insert(0, (points[0][0], 0.0))
            highest = max(highest, points[-1][0])
            series.append(
                Series(str(run.get("label")), points, PALETTE[index % len(PALETTE)], "step")
            )
    refs, note = _limit_ref(sla, highest, "x")
    refs.append(Reference(0.95, "95%", "y"))
    return chart(
        title=f"{name}: latency distribution",
        series=series,
        x_format="seconds",
        y_format="fraction",
        x_log=True,
        y_range=(0.0, 1.0),
        references=refs,
        note=note,
    )


def _limit_ref(
    sla: Mapping[str, Any] | None, highest: float, axis: str
) -> tuple[list[Reference], str]:
    if not sla or not isinstance(sla.get("p95_seconds"), int | float):
        return [], ""
    limit = float(sla["p95_seconds"])
    label = f"p95 limit {format_seconds(limit)}"
    if highest and limit > highest * 3:
        return [], f"{label}: far above"
    return [Reference(limit, label, axis)], ""


def _requests(run: Mapping[str, Any]) -> str:
    rows = []
    for name, r in run.get("requests", {}).items():
        rows.append(
            [
                _cell(name),
                _cell(r.get("count")),
                _cell(r.get("failed"), "st-fail" if r.get("failed") else ""),
                _cell(_seconds(r.get("p50_seconds"))),
                _cell(_seconds(r.get("p95_seconds"))),
                _cell(_seconds(r.get("p99_seconds"))),
                _cell(_seconds(r.get("max_seconds"))),
            ]
        )
    table = _table(["request", "count", "failed", "p50", "p95", "p99", "max"], rows)
    return f"<details><summary>{escape(str(run.get('label')))}</summary>{table}</details>"
