"""The SLA verdict logic: pure functions over samples and thresholds."""

from __future__ import annotations

import itertools
import math
import random

import pytest

from loadprobe import verdict
from loadprobe.verdict import Check, Limits, Sample, TxStats

LIMITS = Limits(p95=1.0, p99=2.0, max_error_ratio=0.01, max_degradation=3.0)


def ok(*durations: float, start: float = 0.0) -> list[Sample]:
    return [Sample(start + i, d, True) for i, d in enumerate(durations)]


def bad(n: int, error: str = "HTTP 500", start: float = 0.0) -> list[Sample]:
    return [Sample(start + i, 0.5, False, error) for i in range(n)]


def by_metric(checks: list[Check]) -> dict[str, Check]:
    return {c.metric: c for c in checks}


# --- exact percentiles ------------------------------------------------------------------------


def test_percentile_of_nothing_is_none() -> None:
    assert verdict.percentile([], 95) is None


def test_percentile_of_one_value_is_that_value() -> None:
    for q in (0.1, 50, 95, 99, 100):
        assert verdict.percentile([0.25], q) == 0.25


def test_p95_of_twenty_values_is_the_nineteenth() -> None:
    # 0.95 * 20 = 19 exactly; floating point would give 19.000000000000004 and the 20th.
    values = [float(i) for i in range(1, 21)]
    assert verdict.percentile(values, 95) == 19.0
    assert verdict.percentile(values, 100) == 20.0
    assert verdict.percentile(values, 5) == 1.0


def test_p99_of_a_hundred_values_is_the_ninety_ninth() -> None:
    values = [i / 1000 for i in range(1, 101)]
    assert verdict.percentile(values, 99) == 0.099
    assert verdict.percentile(values, 50) == 0.050


def test_fractional_percentiles_are_exact() -> None:
    values = list(range(1, 1001))
    assert verdict.percentile(values, 99.9) == 999
    assert verdict.percentile(values, 99.95) == 1000
    assert verdict.percentile(values, 0.1) == 1


def test_percentile_rounds_the_rank_up_never_interpolates() -> None:
    values = [1.0, 2.0, 3.0, 4.0]
    assert verdict.percentile(values, 50) == 2.0  # rank ceil(2.0) = 2
    assert verdict.percentile(values, 51) == 3.0  # rank ceil(2.04) = 3
    assert verdict.percentile(values, 95) == 4.0  # rank ceil(3.8) = 4
    assert verdict.percentile(values, 75) == 3.0  # rank 3 exactly


@pytest.mark.parametrize("q", [0, -1, 100.5])
def test_percentile_out_of_range_is_refused(q: float) -> None:
    with pytest.raises(ValueError, match="percentile"):
        verdict.percentile([1.0], q)


def test_percentile_matches_its_definition_on_random_data() -> None:
    rng = random.Random(7)
    for _ in range(300):
        n = rng.randint(1, 300)
        values = sorted(rng.uniform(0.001, 5) for _ in range(n))
        q = rng.choice([50, 90, 95, 99, 99.9, rng.uniform(0.5, 100)])
        got = verdict.percentile(values, q)
        # Definition: the smallest sample v with at least q% of the samples <= v.
        expected = next(v for v in values if sum(1 for x in values if x <= v) * 100 >= q * n)
        assert got == expected, (n, q)


# --- one transaction's figures ----------------------------------------------------------------


def test_an_empty_transaction_has_no_figures() -> None:
    stats = verdict.summarize([])
    assert stats.count == stats.ok == stats.failed == 0
    assert stats.error_ratio is None
    assert stats.p50 is stats.p95 is stats.p99 is None
    assert stats.min is stats.max is stats.mean is None


def test_percentiles_count_only_successful_transactions() -> None:
    samples = [*ok(0.1, 0.2, 0.3, 0.4), Sample(9, 60.0, False, "timeout")]
    stats = verdict.summarize(samples)
    assert stats.count == 5
    assert stats.ok == 4
    assert stats.failed == 1
    assert stats.error_ratio == pytest.approx(0.2)
    assert stats.max == 0.4  # the failed 60 s is not a response time
    assert stats.p95 == 0.4
    assert stats.p50 == 0.2
    assert stats.mean == pytest.approx(0.25)
    assert stats.errors == {"timeout": 1}


def test_all_failed_has_an_error_ratio_but_no_percentiles() -> None:
    stats = verdict.summarize(bad(3))
    assert stats.error_ratio == 1.0
    assert stats.p95 is None
    assert stats.errors == {"HTTP 500": 3}


def test_samples_need_not_be_sorted() -> None:
    rng = random.Random(1)
    durations = [rng.random() for _ in range(500)]
    stats = verdict.summarize(ok(*durations))
    assert stats.p99 == sorted(durations)[math.ceil(0.99 * 500) - 1]


def test_failure_reasons_are_kept_most_frequent_first_and_bounded() -> None:
    samples = []
    for kind in range(15):
        samples += bad(kind + 1, error=f"reason {kind}")
    stats = verdict.summarize(samples)
    assert len(stats.errors) == verdict.MAX_ERROR_KINDS
    assert next(iter(stats.errors)) == "reason 14"


def test_summarize_all_lists_unseen_transactions_as_empty() -> None:
    stats = verdict.summarize_all({"logon": ok(0.1)}, ["logon", "batch"])
    assert stats["logon"].count == 1
    assert stats["batch"].count == 0


# --- thresholds -------------------------------------------------------------------------------


def test_a_limit_is_met_at_exactly_the_limit() -> None:
    stats = verdict.summarize(ok(*([0.5] * 99), 1.0))
    checks = by_metric(verdict.check_transaction("primary", "logon", stats, LIMITS))
    assert checks["p95"].status == "pass"
    stats = verdict.summarize(ok(*([1.0] * 20)))
    assert by_metric(verdict.check_transaction("p", "logon", stats, LIMITS))["p95"].status == "pass"


def test_a_figure_above_its_limit_fails_and_says_so() -> None:
    stats = verdict.summarize(ok(*([0.5] * 90), *([1.5] * 10)))
    checks = by_metric(verdict.check_transaction("backup", "ledger_inquiry", stats, LIMITS))
    assert checks["p95"].status == "fail"
    assert checks["p95"].measured == 1.5
    assert checks["p95"].reason == "1.50 s > 1s"
    assert checks["p95"].name == "ledger_inquiry p95 <= 1s"
    assert checks["p99"].status == "pass"


def test_an_empty_transaction_fails_every_figure() -> None:
    checks = by_metric(verdict.check_transaction("primary", "batch", TxStats(), LIMITS))
    for metric in ("p95", "p99", "error_ratio"):
        assert checks[metric].status == "fail"
        assert checks[metric].reason == "no transaction recorded"
    assert checks["degradation"].status == "skip"


def test_all_failed_fails_the_percentiles_and_the_error_ratio() -> None:
    stats = verdict.summarize(bad(4, "certificate: HTTP 503"))
    checks = by_metric(verdict.check_transaction("primary", "certificate", stats, LIMITS))
    assert checks["p95"].status == "fail"
    assert "all 4 failed" in checks["p95"].reason
    assert checks["error_ratio"].status == "fail"
    assert checks["error_ratio"].measured == 1.0
    assert "certificate: HTTP 503 (x4)" in checks["error_ratio"].reason


def test_error_ratio_at_and_above_its_limit() -> None:
    one_in_hundred = verdict.summarize(ok(*([0.1] * 99)) + bad(1))
    two_in_hundred = verdict.summarize(ok(*([0.1] * 98)) + bad(2))
    first = by_metric(verdict.check_transaction("p", "logon", one_in_hundred, LIMITS))
    second = by_metric(verdict.check_transaction("p", "logon", two_in_hundred, LIMITS))
    assert first["error_ratio"].status == "pass"
    assert second["error_ratio"].status == "fail"
    assert second["error_ratio"].reason.startswith("2.00% > 1% (2 of 100 failed")


def test_degradation_factor_is_p95_over_the_baseline_p95() -> None:
    base = verdict.summarize(ok(*([0.1] * 20)))
    cur = verdict.summarize(ok(*([0.25] * 20)))
    assert verdict.degradation_factor(cur, base) == pytest.approx(2.5)
    checks = by_metric(verdict.check_transaction("backup", "logon", cur, LIMITS, base))
    assert checks["degradation"].status == "pass"
    assert checks["degradation"].measured == pytest.approx(2.5)
    worse = verdict.summarize(ok(*([0.35] * 20)))
    checks = by_metric(verdict.check_transaction("backup", "logon", worse, LIMITS, base))
    assert checks["degradation"].status == "fail"
    assert checks["degradation"].reason == "3.50x > 3x"


def test_degradation_without_figures_is_skipped_not_failed() -> None:
    base_empty, cur = TxStats(), verdict.summarize(ok(0.2))
    assert verdict.degradation_factor(cur, base_empty) is None
    checks = by_metric(verdict.check_transaction("backup", "logon", cur, LIMITS, base_empty))
    assert checks["degradation"].status == "skip"
    assert "baseline" in checks["degradation"].reason
    zero = verdict.summarize(ok(0.0))
    assert verdict.degradation_factor(cur, zero) is None
    checks = by_metric(
        verdict.check_transaction("backup", "logon", TxStats(), LIMITS, verdict.summarize(ok(1)))
    )
    assert checks["degradation"].status == "skip"
    assert checks["p95"].status == "fail"  # the missing figure fails once, here


def test_evaluate_judges_every_transaction_with_limits_in_their_order() -> None:
    limits = {"app_start": LIMITS, "logon": LIMITS}
    stats = {"logon": verdict.summarize(ok(0.1)), "logoff": verdict.summarize(bad(5))}
    checks = verdict.evaluate("primary", stats, limits)
    assert [c.transaction for c in checks] == ["app_start"] * 4 + ["logon"] * 4
    assert not verdict.passed(checks)  # app_start has no sample at all
    assert verdict.failed_transactions(checks) == ["app_start"]


def test_evaluate_with_a_baseline_checks_degradation() -> None:
    limits = {"logon": LIMITS}
    base = {"logon": verdict.summarize(ok(0.1))}
    checks = verdict.evaluate("backup", {"logon": verdict.summarize(ok(0.5))}, limits, base)
    assert by_metric(checks)["degradation"].status == "fail"
    assert verdict.failed_transactions(checks) == ["logon"]


def test_skips_do_not_fail_a_run() -> None:
    stats = {"logon": verdict.summarize(ok(0.1))}
    checks = verdict.evaluate("primary", stats, {"logon": LIMITS})
    assert {c.status for c in checks} == {"pass", "skip"}
    assert verdict.passed(checks)
    assert verdict.passed([])


def test_path_check() -> None:
    good = verdict.check_path("backup", "backup", ["backup", "backup", "backup"])
    assert good.status == "pass"
    assert good.name == "traffic on path backup"
    wrong = verdict.check_path("backup", "backup", ["backup", "primary", None])
    assert wrong.status == "fail"
    assert "2 of 3" in wrong.reason
    assert "primary" in wrong.reason
    assert verdict.check_path("backup", "backup", []).status == "fail"
    assert verdict.failed_transactions([wrong]) == ["path"]


def test_complete_check() -> None:
    assert verdict.check_complete("run", True, False, []).status == "pass"
    interrupted = verdict.check_complete("run", True, True, ["interrupted (KeyboardInterrupt)"])
    assert interrupted.status == "fail"
    assert "KeyboardInterrupt" in interrupted.reason
    assert verdict.check_complete("run", False, False, []).reason == "incomplete sample stream"


# --- time series ------------------------------------------------------------------------------


def test_timeline_groups_samples_by_start_time() -> None:
    samples = [
        Sample(100.0, 0.1, True),
        Sample(100.5, 0.3, True),
        Sample(101.2, 0.2, False, "x"),
        Sample(103.9, 0.4, True),
    ]
    buckets = verdict.timeline(samples, start=100.0, width=1.0)
    assert [b.offset for b in buckets] == [0.0, 1.0, 3.0]
    assert (buckets[0].count, buckets[0].p50, buckets[0].p95, buckets[0].max) == (2, 0.1, 0.3, 0.3)
    assert (buckets[1].count, buckets[1].failed, buckets[1].p95) == (1, 1, None)
    with pytest.raises(ValueError, match="width"):
        verdict.timeline(samples, start=0, width=0)


def test_cdf_is_monotonic_and_keeps_the_extremes() -> None:
    rng = random.Random(3)
    samples = ok(*(rng.random() for _ in range(1000)))
    points = verdict.cdf(samples, points=50)
    assert 50 <= len(points) <= 52
    assert points[-1] == (max(s.duration for s in samples), 1.0)
    assert points[0][0] == min(s.duration for s in samples)
    assert all(a[0] <= b[0] and a[1] < b[1] for a, b in itertools.pairwise(points))
    assert verdict.cdf(bad(3)) == []


def test_formatting() -> None:
    assert verdict.format_seconds(None) == "-"
    assert verdict.format_seconds(0.0123) == "12.3 ms"
    assert verdict.format_seconds(2.5) == "2.50 s"
    assert verdict.format_seconds(31.27) == "31.3 s"
    assert verdict.format_limit("p95", 0.5) == "500ms"
    assert verdict.format_limit("error_ratio", 0.01) == "1%"
    assert verdict.format_value("error_ratio", 0.125) == "12.50%"
    assert verdict.format_value("degradation", 2.0) == "2.00x"
