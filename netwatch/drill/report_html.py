"""drill.html, and the pieces acceptance.html (report_acceptance.py) shares
with it: one self-contained page each, in loadprobe's CSS with inline SVG
(no JavaScript, no network).

Verdict first, then the evidence.  Rendered from the record alone, which
may be partial: an aborted drill has missing steps and None figures, and
each is shown as such ("not run", "-"), never as a zero.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from html import escape
from pathlib import Path
from typing import Any
from urllib.parse import quote

from loadprobe.report.html import CSS as LOADPROBE_CSS
from loadprobe.verdict import format_seconds
from netwatch.drill import report_timeline
from netwatch.drill.record import (
    DRILL_STEPS,
    Check,
    DrillRecord,
    LoadSummary,
    Step,
)
from netwatch.messages import DrillStatus

CSS = (
    LOADPROBE_CSS
    + """
.aborted{background:#b26a00}.refused{background:#5b6470}.running{background:#1f6fb2}
.st-abort{color:#b26a00;font-weight:700}tr.stop td{background:#fff4e0}
.timeline svg{display:block}
"""
)

BANNER = {
    DrillStatus.PASSED: ("pass", "PASSED"),
    DrillStatus.FAILED: ("fail", "FAILED"),
    DrillStatus.ABORTED: ("aborted", "ABORTED"),
    DrillStatus.REFUSED: ("refused", "REFUSED"),
    DrillStatus.RUNNING: ("running", "UNFINISHED"),
}

# --- small pieces -----------------------------------------------------------------------------


def cell(value: Any, cls: str = "") -> str:
    attr = f' class="{cls}"' if cls else ""
    return f"<td{attr}>{escape(str(value))}</td>"


def raw_cell(html: str, cls: str = "") -> str:
    attr = f' class="{cls}"' if cls else ""
    return f"<td{attr}>{html}</td>"


def table(
    header: Sequence[str], rows: Sequence[Sequence[str]], row_classes: Sequence[str] = ()
) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = []
    for index, row in enumerate(rows):
        cls = row_classes[index] if index < len(row_classes) else ""
        attr = f" class='{escape(cls)}'" if cls else ""
        body.append(f"<tr{attr}>{''.join(row)}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def seconds(value: float | None) -> str:
    return format_seconds(value) if isinstance(value, int | float) else "-"


def clock(epoch: float | None) -> str:
    """UTC wall-clock time to the millisecond."""
    if epoch is None:
        return "-"
    return datetime.fromtimestamp(epoch, UTC).strftime("%H:%M:%S.%f")[:-3]


def stamp(epoch: float | None) -> str:
    if epoch is None:
        return "-"
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def short(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) < 300 else text[:297] + "..."


def page(title: str, body: Sequence[str]) -> str:
    head = (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>{escape(title)}</title><style>{CSS}</style></head><body>"
    )
    return "\n".join([head, *body, "</body></html>"]) + "\n"


def banner(status: DrillStatus, text: str) -> str:
    cls, word = BANNER.get(status, ("fail", status.value.upper()))
    return f"<div class='verdict {cls}'><b>{word}</b>{escape(text)}</div>"


def key_values(data: Mapping[str, Any]) -> str:
    if not data:
        return "<p class='muted'>none recorded</p>"
    return table(["", ""], [[cell(k), cell(short(v), "l")] for k, v in data.items()])


def report_link(report_dir: str, directory: Path, text: str | None = None) -> str:
    """A link to a load run's report.html, relative to the page's directory
    when there is one (so a copied report tree keeps its links)."""
    target = Path(report_dir) / "report.html"
    try:
        href = Path(os.path.relpath(target, directory)).as_posix()
    except ValueError:  # another drive (Windows): no relative path exists
        href = target.resolve().as_uri()
    else:
        href = quote(href)
    missing = "" if target.exists() else " <span class='muted'>(not written)</span>"
    shown = escape(href if text is None else text)
    return f"<a href='{escape(href)}' title='{escape(str(target))}'>{shown}</a>{missing}"


def verdict_cell(load: LoadSummary | None) -> str:
    if load is None:
        return cell("not run", "st-skip")
    if load.passed is None:
        return cell("no verdict", "st-abort")
    return cell("PASS", "st-pass") if load.passed else cell("FAIL", "st-fail")


def loads_table(loads: Sequence[LoadSummary], directory: Path) -> str:
    """Load runs side by side: one column per run."""
    if not loads:
        return "<p class='muted'>No load test ran.</p>"
    names = list(dict.fromkeys(n for load in loads for n in (*load.p95_s, *load.degradation)))
    rows = [
        [cell("path taken"), *(cell(load.path or "unknown") for load in loads)],
        [cell("verdict"), *(verdict_cell(load) for load in loads)],
        [cell("exit code"), *(cell("-" if x.exit_code is None else x.exit_code) for x in loads)],
        [cell("transactions"), *(cell(load.transactions) for load in loads)],
        [
            cell("failures"),
            *(cell(x.failures, "st-fail" if x.failures else "") for x in loads),
        ],
    ]
    for name in names:
        rows.append([cell(f"{name}: p95 (× baseline)"), *(_p95(load, name) for load in loads)])
    rows.append(
        [cell("failed checks"), *(cell(", ".join(x.failed_checks) or "-", "l") for x in loads)]
    )
    rows.append([cell("report"), *(raw_cell(report_link(x.report_dir, directory)) for x in loads)])
    return table(["", *(load.label for load in loads)], rows)


def _p95(load: LoadSummary, name: str) -> str:
    factor = load.degradation.get(name)
    text = seconds(load.p95_s.get(name))
    if factor is not None:
        text += f" ({factor:.2f}×)"
    return cell(text)


# --- drill.html -------------------------------------------------------------------------------


def drill_page(record: DrillRecord, directory: Path) -> str:
    title = f"netwatch drill: {record.town_name} ({record.town})"
    word = BANNER.get(record.status, ("", record.status.value.upper()))[1]
    took = f" ({seconds(record.ended - record.started)})" if record.ended is not None else ""
    body = [
        f"<h1>{escape(title)}</h1>",
        f"<div class='muted'>drill {escape(record.drill_id)} · fault: {escape(record.fault)} · "
        f"{stamp(record.started)} → {stamp(record.ended)}{took}</div>",
        banner(record.status, drill_summary(record)),
        "<h2>Timeline</h2>",
        _timeline(record),
        "<h2>Checks</h2>",
        _checks(record.checks),
        "<h2>Measurements</h2>",
        _measurements(record.measurements),
        "<h2>Steps</h2>",
        _steps(record),
        "<h2>Load tests</h2>",
        "<p class='muted'>p95 per transaction; in brackets, the factor against the "
        "baseline's p95.</p>",
        loads_table(record.loads, directory),
        "<h2>The agent's events</h2>",
        _events(record),
        "<h2>Settings</h2>",
        key_values(record.settings),
        "<h2>Versions</h2>",
        key_values(record.versions),
        "<p class='muted'>Every figure is also in drill.json.</p>",
    ]
    return page(f"{title} — {word}", body)


def drill_summary(record: DrillRecord) -> str:
    """The banner's line: why, and for an abort where it stopped."""
    where = record.stopped_at or _last_step(record)
    reason = record.reason or "no reason recorded"
    if record.status is DrillStatus.ABORTED:
        return f"stopped at step {where or 'unknown'}: {reason}"
    if record.status is DrillStatus.REFUSED:
        return f"refused at step {where or 'precheck'}: {reason}; nothing was touched"
    if record.status is DrillStatus.RUNNING:
        return f"the drill had not finished when this was written (last step: {where or 'none'})"
    failed = [c.name for c in record.checks if c.passed is False]
    if record.status is DrillStatus.FAILED:
        checks = f" (failed: {', '.join(failed)})" if failed else ""
        return f"{record.reason or 'a check failed'}{checks}"
    judged = sum(1 for c in record.checks if c.passed is not None)
    outage = record.measurements.get("outage_s")
    return f"{judged} checks passed; outage {seconds(outage)}" + (
        f" — {record.reason}" if record.reason else ""
    )


def _last_step(record: DrillRecord) -> str | None:
    return record.steps[-1].name if record.steps else None


def _timeline(record: DrillRecord) -> str:
    zero = report_timeline.origin(record.observer, record.marks, record.started)
    charts = report_timeline.render(record.observer, record.marks, zero)
    if not charts:
        charts = (
            "<p class='muted'>No observer data: the drill stopped before the data-plane "
            "observer recorded anything.</p>"
        )
    if not record.marks:
        return charts
    fault = next((m.at for m in record.marks if m.name == "fault"), None)
    rows = [
        [
            cell(m.name),
            cell(m.label, "l"),
            cell(clock(m.at)),
            cell(f"{m.at - zero:+.2f} s"),
            cell("-" if fault is None else f"{m.at - fault:+.2f} s"),
        ]
        for m in sorted(record.marks, key=lambda m: m.at)
    ]
    return charts + table(["mark", "label", "UTC", "on the chart", "since the fault"], rows)


_JUDGED = {True: ("PASS", "st-pass"), False: ("FAIL", "st-fail"), None: ("NOT JUDGED", "st-skip")}


def _checks(checks: Sequence[Check]) -> str:
    if not checks:
        return "<p class='muted'>No check was judged: the drill stopped before its verdict.</p>"
    rows = []
    for check in checks:
        status, cls = _JUDGED[check.passed]
        rows.append(
            [
                cell(status, cls),
                cell(check.name, "l"),
                cell(check.limit),
                cell("-" if check.value is None else check.value),
                cell(check.detail, "l"),
            ]
        )
    return table(["", "check", "limit", "measured", "detail"], rows)


_AGENT = (
    ("detection_s", "detection: fault → failover decided"),
    ("route_change_s", "route change: fault → routes applied"),
)
_OBSERVER = (
    ("outage_icmp_s", "outage, ICMP"),
    ("outage_tcp_s", "outage, TCP"),
    ("outage_s", "outage (the larger)"),
)
_FAILBACK = (
    ("failback_outage_s", "failback outage"),
    ("failback_s", "restore → traffic on the primary"),
    ("holddown_s", "hold-down (policy)"),
    ("primary_up_to_failback_s", "primary up before the failback"),
)


def _measurements(values: Mapping[str, float | None]) -> str:
    known = {k for _, group in _GROUPS for k, _ in group}
    others = tuple((k, k) for k in values if k not in known)
    rows: list[list[str]] = []
    for heading, keys in (*_GROUPS, *((("Other", others),) if others else ())):
        rows.append([f"<th colspan='2'>{escape(heading)}</th>"])
        rows += [[cell(label, "l"), cell(seconds(values.get(key)))] for key, label in keys]
    return table(["", ""], rows) + _holddown(values)


_GROUPS = (
    ("The agent's own account (its events)", _AGENT),
    ("What the observer saw (data plane)", _OBSERVER),
    ("Failback", _FAILBACK),
)


def _holddown(values: Mapping[str, float | None]) -> str:
    """The failback must wait for the hold-down: policy beside what happened."""
    holddown, up = values.get("holddown_s"), values.get("primary_up_to_failback_s")
    if holddown is None or up is None:
        return "<p class='muted'>Hold-down: not measured.</p>"
    if up >= holddown:
        return (
            f"<p class='st-pass'>Hold-down honoured: the primary was up {seconds(up)} "
            f"before the failback (policy: {seconds(holddown)}).</p>"
        )
    return (
        f"<p class='st-fail'>Hold-down NOT honoured: the primary was up only {seconds(up)} "
        f"before the failback (policy: {seconds(holddown)}).</p>"
    )


_STEP_CLASS = {"ok": "st-pass", "failed": "st-fail", "error": "st-fail", "aborted": "st-abort"}


def _steps(record: DrillRecord) -> str:
    steps: list[tuple[str, Step | None]] = [(name, record.step(name)) for name in DRILL_STEPS]
    steps += [(s.name, s) for s in record.steps if s.name not in DRILL_STEPS]
    rows, classes = [], []
    for name, step in steps:
        classes.append("stop" if name == record.stopped_at else "")
        if step is None:
            rows.append([cell(name), cell("-"), cell("-"), cell("not run", "st-skip"), cell("")])
            continue
        if step.status is None:
            status = "running" if record.ended is None else "unfinished"
        else:
            status = step.status
        took = "-" if step.ended is None else seconds(step.ended - step.started)
        rows.append(
            [
                cell(name),
                cell(clock(step.started)),
                cell(took),
                cell(status, _STEP_CLASS.get(status, "st-abort")),
                cell(step.detail, "l"),
            ]
        )
    return table(["step", "started (UTC)", "took", "status", "detail"], rows, classes)


def event_time(event: Mapping[str, Any]) -> float | None:
    """When an agent event happened: its wire `ts` (ISO-8601), or an epoch."""
    for key in ("ts", "at", "time"):
        value = event.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return datetime.fromisoformat(value).timestamp()
            except ValueError:
                continue
    return None


def _events(record: DrillRecord) -> str:
    if not record.events:
        return "<p class='muted'>No event from the agent was recorded.</p>"
    fault = next((m.at for m in record.marks if m.name == "fault"), None)
    rows = []
    for event in record.events:
        at = event_time(event)
        src, dst, path = event.get("from_path"), event.get("to_path"), event.get("path")
        where = f"{src or ''} → {dst}".strip() if dst else str(path or "-")
        duration = event.get("duration_s")
        rows.append(
            [
                cell(clock(at)),
                cell("-" if at is None or fault is None else f"{at - fault:+.2f} s"),
                cell(event.get("event", "?"), "l"),
                cell(where, "l"),
                cell(event.get("reason", ""), "l"),
                cell(seconds(duration) if isinstance(duration, int | float) else "-"),
            ]
        )
    return table(["UTC", "since the fault", "event", "path", "reason", "duration"], rows)
