"""SLA verdicts: pure functions over samples and thresholds.

Nothing here does I/O or reads a clock: the inputs are transaction samples
(start time, duration, success) and the limits of topology.yaml's
`loadtest.sla`, the output a list of checks, each one `pass`, `fail` or
`skip`, with the figure measured and a one-line reason.

Definitions (the report and the README repeat them):

- **Percentiles are exact**, by the nearest-rank method over the raw
  durations of the *successful* transactions: the p-th percentile of n
  sorted values is the value at rank ceil(p/100 * n) (1-based). It is
  always a duration that really happened; no interpolation, no buckets.
- **Error ratio** = failed / all recorded transactions. A failed
  transaction (a request error, a bad status or a failed content check)
  counts here, not in the percentiles.
- **Degradation factor** = this run's p95 / the baseline run's p95, per
  transaction (the backup measured against the primary).
- **No evidence is not a pass**: a transaction with no recorded samples
  fails its p95, p99 and error-ratio checks; one whose every sample failed
  has no percentiles and fails them too. A degradation check is skipped
  (not failed) when there is no baseline or either run has no p95 for
  that transaction: the p95 checks already fail for the missing figure.
- A limit is met when the measured figure is **at most** the limit.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from fractions import Fraction
from typing import Literal

Status = Literal["pass", "fail", "skip"]
Metric = Literal["p95", "p99", "error_ratio", "degradation", "path", "complete"]

PERCENTILES: tuple[int, ...] = (50, 90, 95, 99)
MAX_ERROR_KINDS = 10  # distinct failure reasons kept per transaction, most frequent first


@dataclass(frozen=True, slots=True)
class Sample:
    """One transaction as a terminal lived it."""

    start: float  # epoch seconds
    duration: float  # seconds
    ok: bool
    error: str | None = None


@dataclass(frozen=True)
class Limits:
    """The SLA of one transaction, in base units (seconds, ratio 0..1)."""

    p95: float
    p99: float
    max_error_ratio: float
    max_degradation: float


@dataclass(frozen=True)
class TxStats:
    """Every figure of one transaction over one run."""

    count: int = 0
    ok: int = 0
    failed: int = 0
    error_ratio: float | None = None  # None: no transaction recorded
    min: float | None = None  # durations of successful transactions, seconds
    mean: float | None = None
    max: float | None = None
    percentiles: Mapping[int, float | None] = field(default_factory=dict)
    errors: Mapping[str, int] = field(default_factory=dict)

    @property
    def p50(self) -> float | None:
        return self.percentiles.get(50)

    @property
    def p95(self) -> float | None:
        return self.percentiles.get(95)

    @property
    def p99(self) -> float | None:
        return self.percentiles.get(99)


@dataclass(frozen=True)
class Check:
    """One threshold of one transaction (or the path check) and its outcome."""

    run: str  # which run it judges: "primary", "backup", or the run's label
    transaction: str  # "" for checks about the whole run (the path)
    metric: Metric
    limit: float | str
    measured: float | str | None
    status: Status
    reason: str

    @property
    def name(self) -> str:
        """A stable, readable name: 'logon p95 <= 1s'."""
        if self.metric == "path":
            return f"traffic on path {self.limit}"
        if self.metric == "complete":
            return "run completed"
        subject = {"error_ratio": "error ratio", "degradation": "degradation factor"}.get(
            self.metric, self.metric
        )
        return f"{self.transaction} {subject} <= {format_limit(self.metric, self.limit)}"


# --- figures ------------------------------------------------------------------------------


def percentile(sorted_values: Sequence[float], q: float) -> float | None:
    """The nearest-rank q-th percentile of values sorted ascending; None when empty.

    Exact: the rank is computed in rational arithmetic, so p95 of 20 values
    is the 19th value, never the 20th through a rounding error.
    """
    if not 0 < q <= 100:
        raise ValueError(f"percentile must be in (0, 100], got {q}")
    n = len(sorted_values)
    if n == 0:
        return None
    rank = math.ceil(Fraction(str(q)) * n / 100)
    return sorted_values[max(rank, 1) - 1]


def summarize(samples: Iterable[Sample], percentiles: Sequence[int] = PERCENTILES) -> TxStats:
    """Count, error ratio, failure reasons and exact percentiles of one transaction."""
    durations: list[float] = []
    failed = 0
    errors: Counter[str] = Counter()
    for sample in samples:
        if sample.ok:
            durations.append(sample.duration)
        else:
            failed += 1
            errors[sample.error or "failed"] += 1
    count = len(durations) + failed
    if count == 0:
        return TxStats(percentiles={q: None for q in percentiles})
    durations.sort()
    return TxStats(
        count=count,
        ok=len(durations),
        failed=failed,
        error_ratio=failed / count,
        min=durations[0] if durations else None,
        mean=math.fsum(durations) / len(durations) if durations else None,
        max=durations[-1] if durations else None,
        percentiles={q: percentile(durations, q) for q in percentiles},
        errors=dict(errors.most_common(MAX_ERROR_KINDS)),
    )


def summarize_all(
    samples: Mapping[str, Iterable[Sample]], transactions: Iterable[str] = ()
) -> dict[str, TxStats]:
    """Stats per transaction; every name in `transactions` appears, empty if unseen."""
    out = {name: summarize(group) for name, group in samples.items()}
    for name in transactions:
        out.setdefault(name, summarize(()))
    return out


def degradation_factor(current: TxStats, baseline: TxStats) -> float | None:
    """This run's p95 over the baseline's p95; None when either is missing or the
    baseline's is zero (a ratio to nothing says nothing)."""
    if current.p95 is None or baseline.p95 is None or baseline.p95 <= 0:
        return None
    return current.p95 / baseline.p95


# --- checks -------------------------------------------------------------------------------


def check_transaction(
    run: str,
    name: str,
    stats: TxStats,
    limits: Limits,
    baseline: TxStats | None = None,
) -> list[Check]:
    """The four checks of one transaction: p95, p99, error ratio, degradation."""
    checks: list[Check] = []
    percentile_limits: tuple[tuple[Metric, float], ...] = (
        ("p95", limits.p95),
        ("p99", limits.p99),
    )
    for metric, limit in percentile_limits:
        value = stats.percentiles.get(95 if metric == "p95" else 99)
        if stats.count == 0:
            checks.append(Check(run, name, metric, limit, None, "fail", "no transaction recorded"))
        elif value is None:
            reason = f"no successful transaction (all {stats.count} failed)"
            checks.append(Check(run, name, metric, limit, None, "fail", reason))
        else:
            checks.append(_compare(run, name, metric, limit, value))

    if stats.error_ratio is None:
        checks.append(
            Check(
                run,
                name,
                "error_ratio",
                limits.max_error_ratio,
                None,
                "fail",
                "no transaction recorded",
            )
        )
    else:
        check = _compare(run, name, "error_ratio", limits.max_error_ratio, stats.error_ratio)
        detail = f"{stats.failed} of {stats.count} failed"
        if stats.errors:
            top, times = next(iter(stats.errors.items()))
            detail += f"; most often: {top} (x{times})"
        checks.append(replace(check, reason=f"{check.reason} ({detail})"))

    if baseline is None:
        checks.append(
            Check(
                run,
                name,
                "degradation",
                limits.max_degradation,
                None,
                "skip",
                "no baseline run to compare with",
            )
        )
    else:
        factor = degradation_factor(stats, baseline)
        if factor is None:
            # Skipped, not failed: the p95 checks of this run or of the baseline
            # already fail for the missing figure; failing here would count it twice.
            why = (
                "no p95 in this run"
                if stats.p95 is None
                else "baseline has no p95 for this transaction"
            )
            checks.append(
                Check(run, name, "degradation", limits.max_degradation, None, "skip", why)
            )
        else:
            checks.append(_compare(run, name, "degradation", limits.max_degradation, factor))
    return checks


def evaluate(
    run: str,
    stats: Mapping[str, TxStats],
    limits: Mapping[str, Limits],
    baseline: Mapping[str, TxStats] | None = None,
) -> list[Check]:
    """Every check of one run, transactions in the order of `limits`.

    A transaction with limits but no stats is judged as empty (and fails);
    transactions without limits are reported elsewhere but not judged.
    """
    checks: list[Check] = []
    for name, limit in limits.items():
        tx = stats.get(name) or summarize(())
        base = None if baseline is None else (baseline.get(name) or summarize(()))
        checks.extend(check_transaction(run, name, tx, limit, base))
    return checks


def check_path(run: str, requested: str, observed: Sequence[str | None]) -> Check:
    """Did every route lookup of the run find the requested path?"""
    if not observed:
        return Check(run, "", "path", requested, None, "fail", "no route lookup recorded")
    wrong = [p for p in observed if p != requested]
    seen = ", ".join(sorted({p or "unknown" for p in observed}))
    if wrong:
        reason = (
            f"{len(wrong)} of {len(observed)} route lookups found another path ({seen}): "
            f"this traffic did not (only) take {requested}"
        )
        return Check(run, "", "path", requested, seen, "fail", reason)
    return Check(
        run, "", "path", requested, seen, "pass", f"all {len(observed)} route lookups: {requested}"
    )


def check_complete(run: str, complete: bool, interrupted: bool, notes: Sequence[str]) -> Check:
    """Did the run go to its end with every sample accounted for?"""
    if complete and not interrupted:
        return Check(run, "", "complete", "complete", "complete", "pass", "the run went to its end")
    reason = "; ".join(notes) or ("interrupted" if interrupted else "incomplete sample stream")
    return Check(run, "", "complete", "complete", "incomplete", "fail", reason)


def passed(checks: Iterable[Check]) -> bool:
    """The verdict: True when no check failed (skips do not fail a run)."""
    return all(c.status != "fail" for c in checks)


def failed_transactions(checks: Iterable[Check]) -> list[str]:
    """Names of the transactions with a failed check, in order, once each."""
    out: list[str] = []
    for check in checks:
        if check.status == "fail":
            name = check.transaction or check.metric
            if name not in out:
                out.append(name)
    return out


def _compare(run: str, name: str, metric: Metric, limit: float, value: float) -> Check:
    ok = value <= limit
    shown, bound = format_value(metric, value), format_limit(metric, limit)
    reason = f"{shown} {'<=' if ok else '>'} {bound}"
    return Check(run, name, metric, limit, value, "pass" if ok else "fail", reason)


# --- time series (for the charts) ---------------------------------------------------------


@dataclass(frozen=True)
class Bucket:
    """One slice of a run's timeline for one transaction."""

    offset: float  # seconds from the run's start to the slice's start
    count: int
    failed: int
    p50: float | None
    p95: float | None
    max: float | None


def timeline(samples: Iterable[Sample], start: float, width: float) -> list[Bucket]:
    """Samples grouped by the time they started, in slices of `width` seconds
    from `start`; slices without samples are left out."""
    if width <= 0:
        raise ValueError("bucket width must be > 0")
    slices: dict[int, list[Sample]] = {}
    for sample in samples:
        index = max(0, math.floor((sample.start - start) / width))
        slices.setdefault(index, []).append(sample)
    buckets = []
    for index in sorted(slices):
        group = slices[index]
        durations = sorted(s.duration for s in group if s.ok)
        buckets.append(
            Bucket(
                offset=index * width,
                count=len(group),
                failed=sum(1 for s in group if not s.ok),
                p50=percentile(durations, 50),
                p95=percentile(durations, 95),
                max=durations[-1] if durations else None,
            )
        )
    return buckets


def cdf(samples: Iterable[Sample], points: int = 200) -> list[tuple[float, float]]:
    """The latency distribution of the successful samples as (duration, fraction
    at or below it), thinned to about `points` points (the extremes kept)."""
    durations = sorted(s.duration for s in samples if s.ok)
    n = len(durations)
    if n == 0:
        return []
    step = max(1, n // points)
    indices = list(range(0, n, step))
    if indices[-1] != n - 1:
        indices.append(n - 1)
    return [(durations[i], (i + 1) / n) for i in indices]


# --- formatting ---------------------------------------------------------------------------


def format_seconds(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds >= 10:
        return f"{seconds:.1f} s"
    if seconds >= 1:
        return f"{seconds:.2f} s"
    return f"{seconds * 1000:.1f} ms"


def format_value(metric: str, value: float | str | None) -> str:
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    if metric in ("p95", "p99"):
        return format_seconds(value)
    if metric == "error_ratio":
        return f"{value * 100:.2f}%"
    if metric == "degradation":
        return f"{value:.2f}x"
    return f"{value:g}"


def format_limit(metric: str, limit: float | str) -> str:
    if isinstance(limit, str):
        return limit
    if metric in ("p95", "p99"):
        return f"{limit:g}s" if limit >= 1 else f"{limit * 1000:g}ms"
    if metric == "error_ratio":
        return f"{limit * 100:g}%"
    if metric == "degradation":
        return f"{limit:g}x"
    return f"{limit:g}"
