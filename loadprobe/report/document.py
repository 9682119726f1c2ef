"""The report document: report.json's content, built from finished runs.

`build` turns finished runs and their checks into one JSON-ready document
(every figure, the thresholds, the verdict, the path, the environment).
A run is read through the protocols below, what a report needs of it and
nothing more, so this module does not depend on how runs are orchestrated.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from loadprobe import __version__, verdict
from loadprobe.report.schema import SCHEMA, stats_dict
from loadprobe.scenario import Scenario
from loadprobe.verdict import Check, Limits, Sample, TxStats

TIMELINE_SLICES = 60  # about this many slices per run in the timeline
SCATTER_POINTS = 1500  # at most this many raw points per transaction in report.json


# --- what a report reads of a run -------------------------------------------------------------


class PlannedRun(Protocol):
    """The plan of a run (orchestrate.RunPlan is one)."""

    label: str
    scenario: Scenario
    requested_path: str | None
    netns: str | None
    workers: int
    remote_workers: int
    run_dir: Path


class RouteLookup(Protocol):
    """Where traffic to the target went at one moment (netpath.Lookup is one)."""

    @property
    def path(self) -> str | None: ...
    def as_dict(self) -> dict[str, Any]: ...


class FinishedRun(Protocol):
    """A run that has ended (orchestrate.RunResult is one)."""

    # Read-only where the report's type is wider than the run's own.
    @property
    def plan(self) -> PlannedRun: ...
    @property
    def lookups(self) -> Sequence[RouteLookup]: ...

    started_at: float
    ended_at: float
    tx: dict[str, list[Sample]]
    requests: dict[tuple[str, str], list[Sample]]
    terminals: list[tuple[float, int]]
    exit_codes: dict[str, int | None]
    complete: bool
    interrupted: bool
    notes: list[str]
    samples_file: Path | None
    logs: list[Path]


class TargetCheck(Protocol):
    """The target as the preflight found it (preflight.Preflight is one)."""

    @property
    def health(self) -> dict[str, Any] | None: ...
    @property
    def connect_rtt(self) -> float | None: ...


# --- the document -----------------------------------------------------------------------------


def iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds")


def check_dict(check: Check) -> dict[str, Any]:
    return {
        "name": check.name,
        "run": check.run,
        "transaction": check.transaction,
        "threshold": check.metric,
        "limit": check.limit,
        "measured": check.measured,
        "status": check.status,
        "reason": check.reason,
    }


def run_stats(result: FinishedRun, transactions: Sequence[str]) -> dict[str, TxStats]:
    return verdict.summarize_all(result.tx, transactions)


def _scatter(samples: Sequence[verdict.Sample], start: float) -> list[list[float | int]]:
    step = max(1, len(samples) // SCATTER_POINTS)
    ordered = sorted(samples, key=lambda s: s.start)
    return [[round(s.start - start, 3), round(s.duration, 6), int(s.ok)] for s in ordered[::step]]


def run_section(
    result: FinishedRun,
    stats: Mapping[str, TxStats],
    preflight: TargetCheck | None,
) -> dict[str, Any]:
    plan, sc = result.plan, result.plan.scenario
    start = result.started_at
    width = max(1.0, round(sc.duration / TIMELINE_SLICES))
    lookups = [lk.as_dict() for lk in result.lookups]
    observed = [lk.path for lk in result.lookups]
    transactions: dict[str, Any] = {}
    for name, tx in stats.items():
        samples = result.tx.get(name, [])
        transactions[name] = {
            **stats_dict(tx),
            "timeline": [asdict(b) for b in verdict.timeline(samples, start, width)],
            "distribution": [[round(d, 6), round(f, 5)] for d, f in verdict.cdf(samples)],
            "samples": _scatter(samples, start),
        }
    requests: dict[str, Any] = {}
    for (tx_name, request), samples in sorted(result.requests.items()):
        rs = verdict.summarize(samples)
        requests[request] = {
            "transaction": tx_name,
            "count": rs.count,
            "failed": rs.failed,
            "p50_seconds": rs.p50,
            "p95_seconds": rs.p95,
            "p99_seconds": rs.p99,
            "max_seconds": rs.max,
            "errors": dict(rs.errors),
        }
    return {
        "label": plan.label,
        "path": {
            "requested": plan.requested_path,
            "observed": observed[0] if observed and len(set(observed)) == 1 else None,
            "consistent": bool(observed) and len(set(observed)) == 1,
            "pinned": plan.netns is not None and plan.requested_path is not None,
            "netns": plan.netns,
            "lookups": lookups,
        },
        "started_at": iso(start),
        "ended_at": iso(result.ended_at),
        "duration_seconds": round(result.ended_at - start, 3),
        "planned_duration_seconds": sc.duration,
        "terminals": sc.terminals,
        "workers": plan.workers,
        "remote_workers": plan.remote_workers,
        "think_time_seconds": [sc.think_min, sc.think_max],
        "base_url": sc.base_url,
        "complete": result.complete and not result.interrupted,
        "interrupted": result.interrupted,
        "notes": list(result.notes),
        "locust_exit_codes": result.exit_codes,
        "target_health": preflight.health if preflight else None,
        "connect_rtt_seconds": preflight.connect_rtt if preflight else None,
        "files": {
            "samples": _relative(result.samples_file, plan.run_dir.parent),
            "logs": [_relative(p, plan.run_dir.parent) for p in result.logs],
        },
        "terminals_timeline": [[round(t - start, 3), n] for t, n in result.terminals],
        "transactions": transactions,
        "requests": requests,
    }


def _relative(path: Path | None, base: Path) -> str | None:
    if path is None:
        return None
    try:
        return str(path.relative_to(base))
    except ValueError:
        return str(path)


def degradation_section(
    stats: Mapping[str, TxStats],
    baseline: Mapping[str, TxStats],
    limits: Mapping[str, Limits],
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in limits:
        cur, base = stats.get(name), baseline.get(name)
        if cur is None or base is None:
            continue
        out[name] = {
            "baseline_p50_seconds": base.p50,
            "baseline_p95_seconds": base.p95,
            "p50_seconds": cur.p50,
            "p95_seconds": cur.p95,
            "extra_p50_seconds": _minus(cur.p50, base.p50),
            "extra_p95_seconds": _minus(cur.p95, base.p95),
            "factor": verdict.degradation_factor(cur, base),
            "max_factor": limits[name].max_degradation,
        }
    return out


def _minus(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


def build(
    *,
    kind: str,
    town: Mapping[str, Any],
    runs: Sequence[dict[str, Any]],
    checks: Sequence[Check],
    limits: Mapping[str, Limits],
    degradation: Mapping[str, Any] | None,
    baseline_source: str | None,
    environment: Mapping[str, Any],
) -> dict[str, Any]:
    ok = verdict.passed(checks)
    failed = [c for c in checks if c.status == "fail"]
    if ok:
        summary = f"PASS: all {sum(1 for c in checks if c.status == 'pass')} thresholds held"
    else:
        names = ", ".join(dict.fromkeys(f"{c.run} {c.name}" for c in failed))
        summary = f"FAIL: {len(failed)} threshold(s) failed: {names}"
    return {
        "schema": SCHEMA,
        "tool": {"name": "loadprobe", "version": __version__},
        "kind": kind,
        "town": dict(town),
        "verdict": "pass" if ok else "fail",
        "exit_code": 0 if ok else 1,
        "summary": summary,
        "failed_transactions": verdict.failed_transactions(checks),
        "percentiles": "exact, nearest rank over the successful transactions' raw durations",
        "sla": {
            name: {
                "p95_seconds": lim.p95,
                "p99_seconds": lim.p99,
                "max_error_ratio": lim.max_error_ratio,
                "max_degradation": lim.max_degradation,
            }
            for name, lim in limits.items()
        },
        "thresholds": [check_dict(c) for c in checks],
        "baseline": baseline_source,
        "degradation": dict(degradation or {}),
        "runs": list(runs),
        "environment": dict(environment),
    }
