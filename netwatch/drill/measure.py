"""A drill's figures and verdict: pure functions of probes, events and times.

The outage is what the data plane saw: the longest spell between two
probes that got through, over the window of a change (fault to the start
of the degraded load; restore to just after the failback).  The agent's own
account (detection, route change) comes from its events, beside it, never
instead of it.  No evidence is not a pass: a figure that could not be
measured leaves its check unjudged, and an unjudged check fails the drill.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from netwatch.drill.observer import Probe
from netwatch.drill.record import Check, LoadSummary, ObserverSeries
from netwatch.topology import DrillThresholds
from netwatch.topology.units import format_duration

HOLDDOWN_SLACK_S = 0.05  # the agent decides between rounds: a failback a few ms early is honest


@dataclass(frozen=True)
class Outage:
    seconds: float
    began: float  # send time of the last probe through before it
    ended: float | None  # of the first one through after it; None: still out at the end


def outage(probes: Sequence[Probe], start: float, end: float) -> Outage | None:
    """The longest gap between answered probes over [start, end], counting
    from the last answer before `start`.  None when nothing ever answered
    before `end` (no evidence)."""
    answered = [p.sent for p in probes if p.rtt is not None and p.sent <= end]
    before = [t for t in answered if t <= start]
    after = [t for t in answered if t > start]
    if not answered:
        return None
    times = [before[-1] if before else after[0], *after]
    best: Outage | None = None
    for a, b in itertools.pairwise(times):
        if best is None or b - a > best.seconds:
            best = Outage(b - a, a, b)
    tail = end - times[-1]
    if tail > (best.seconds if best else 0.0):
        # Nothing got through since `times[-1]`: the outage lasts at least to `end`.
        best = Outage(tail, times[-1], None)
    return best


def gaps(probes: Sequence[Probe], threshold: float) -> list[tuple[float, float]]:
    """Spells longer than `threshold` between answered probes."""
    answered = [p.sent for p in probes if p.rtt is not None]
    return [(a, b) for a, b in itertools.pairwise(answered) if b - a > threshold]


def series(
    kind: str,
    target: str,
    probes: Sequence[Probe],
    *,
    t0: float,
    t1: float,
    interval_s: float,
    bin_s: float = 0.1,
) -> ObserverSeries:
    """The probes of [t0, t1) in bins of `bin_s`, for the timeline chart."""
    count = max(1, math.ceil((t1 - t0) / bin_s))
    sent = [0] * count
    answered = [0] * count
    rtts: list[list[float]] = [[] for _ in range(count)]
    for p in probes:
        i = int((p.sent - t0) // bin_s)
        if not 0 <= i < count:
            continue
        sent[i] += 1
        if p.rtt is not None:
            answered[i] += 1
            rtts[i].append(p.rtt)
    p50: list[float | None] = []
    peak: list[float | None] = []
    for values in rtts:
        values.sort()
        p50.append(values[(len(values) - 1) // 2] if values else None)
        peak.append(values[-1] if values else None)
    threshold = max(0.1, 5 * interval_s)
    return ObserverSeries(
        kind=kind,
        target=target,
        interval_s=interval_s,
        bin_s=bin_s,
        t0=t0,
        sent=sent,
        answered=answered,
        rtt_p50_s=p50,
        rtt_max_s=peak,
        gap_threshold_s=threshold,
        gaps=[g for g in gaps(probes, threshold) if t0 <= g[0] < t1],
    )


def first_event(
    events: Sequence[Mapping[str, Any]], kind: str, after: float, **match: str
) -> Mapping[str, Any] | None:
    """The agent's first event of `kind` at or after `after` (epoch seconds)
    whose fields equal `match`."""
    for event in events:
        if event.get("event") != kind or _epoch(event) < after:
            continue
        if all(event.get(k) == v for k, v in match.items()):
            return event
    return None


def _epoch(event: Mapping[str, Any]) -> float:
    return datetime.fromisoformat(str(event["ts"])).timestamp()


def agent_account(
    events: Sequence[Mapping[str, Any]],
    *,
    fault_at: float,
    restore_at: float | None,
    primary: str,
) -> dict[str, float | None]:
    """What the agent said: fault -> failover decided (detection), fault ->
    routes applied (route change), and, after the restore, the primary's
    return (path_up) and the failback."""
    failover = first_event(events, "failover", fault_at, from_path=primary)
    applied = first_event(events, "routes_applied", fault_at)
    figures: dict[str, float | None] = {
        "detection_s": _epoch(failover) - fault_at if failover else None,
        "agent_suspect_to_decision_s": _number(failover, "duration_s"),
        "route_change_s": _epoch(applied) - fault_at if applied else None,
        "primary_up_to_failback_s": None,
        "agent_failback_at": None,
    }
    if restore_at is not None:
        up = first_event(events, "path_up", restore_at, path=primary)
        back = first_event(events, "failback", restore_at, to_path=primary)
        if back is not None:
            figures["agent_failback_at"] = _epoch(back)
            if up is not None:
                figures["primary_up_to_failback_s"] = _epoch(back) - _epoch(up)
    return figures


def _number(event: Mapping[str, Any] | None, key: str) -> float | None:
    value = event.get(key) if event else None
    return float(value) if isinstance(value, int | float) else None


def judge(
    measurements: Mapping[str, float | None],
    degraded: LoadSummary | None,
    thresholds: DrillThresholds,
    holddown_s: float,
) -> list[Check]:
    """The drill's verdict, one Check per threshold."""
    checks = [
        _limit("outage", measurements.get("outage_s"), thresholds.max_outage),
        _limit(
            "failback_outage", measurements.get("failback_outage_s"), thresholds.max_failback_outage
        ),
    ]
    held = measurements.get("primary_up_to_failback_s")
    checks.append(
        Check(
            "holddown",
            f">= {format_duration(holddown_s)}",
            None if held is None else _seconds(held),
            None if held is None else held >= holddown_s - HOLDDOWN_SLACK_S,
            "the primary up without a break before traffic returned (agent's events)",
        )
    )
    if thresholds.load_test_must_pass:
        passed = degraded.passed if degraded else None
        detail = ""
        if degraded is not None and degraded.failed_checks:
            detail = "failed: " + ", ".join(degraded.failed_checks)
        if degraded is not None and degraded.path not in (None, "backup"):
            passed, detail = False, f"the load ran on {degraded.path}, not the backup"
        checks.append(
            Check(
                "load_test",
                "SLA verdict pass on the backup",
                None if passed is None else ("pass" if passed else "fail"),
                passed,
                detail,
            )
        )
    return checks


def _limit(name: str, value: float | None, limit: float) -> Check:
    return Check(
        name,
        f"<= {format_duration(limit)}",
        None if value is None else _seconds(value),
        None if value is None else value <= limit,
        "" if value is not None else "not measured",
    )


def _seconds(value: float) -> str:
    return f"{value:.3f} s"


def passed(checks: Sequence[Check]) -> bool:
    """Every check judged and held: no evidence is not a pass."""
    return bool(checks) and all(c.passed is True for c in checks)
