"""SampleWindow: loss, nearest-rank percentiles and per-stream jitter, kept
incrementally; checked against a naive recomputation on random streams."""

from __future__ import annotations

import itertools
import math
import random

import pytest

from netwatch.health.window import Sample, SampleWindow, WindowStats, nearest_rank


def test_empty_window() -> None:
    stats = SampleWindow(5.0).stats(100.0)
    assert stats == WindowStats(0, 0, 0.0, None, None, None, None)
    assert stats.answered == 0


@pytest.mark.parametrize("span", [0.0, -1.0, math.nan])
def test_span_must_be_positive(span: float) -> None:
    with pytest.raises(ValueError, match="above zero"):
        SampleWindow(span)


@pytest.mark.parametrize(
    ("values", "p50", "p95"),
    [
        ([7.0], 7.0, 7.0),
        ([1.0, 2.0], 1.0, 2.0),  # rank ceil(0.5*2)=1, ceil(0.95*2)=2
        ([1.0, 2.0, 3.0], 2.0, 3.0),
        ([1.0, 2.0, 3.0, 4.0], 2.0, 4.0),
        ([float(i) for i in range(1, 21)], 10.0, 19.0),  # rank 10 and 19 of 20
        ([float(i) for i in range(1, 101)], 50.0, 95.0),
        ([float(i) for i in range(1, 102)], 51.0, 96.0),  # ceil(50.5)=51, ceil(95.95)=96
    ],
)
def test_nearest_rank(values: list[float], p50: float, p95: float) -> None:
    assert nearest_rank(values, 50) == p50
    assert nearest_rank(values, 95) == p95
    assert nearest_rank(values, 100) == values[-1]
    assert nearest_rank(values, 0) == values[0]


def test_loss_and_percentiles() -> None:
    window = SampleWindow(10.0)
    for i, rtt in enumerate([0.030, 0.010, None, 0.020, None]):
        window.add(Sample(float(i), rtt is not None, rtt))
    stats = window.stats(4.0)
    assert (stats.count, stats.lost, stats.answered) == (5, 2, 3)
    assert stats.loss_ratio == pytest.approx(0.4)
    assert stats.rtt_p50 == 0.020
    assert stats.rtt_p95 == 0.030
    assert stats.last_t == 4.0


def test_lost_sample_rtt_is_ignored_and_answered_without_rtt_counts() -> None:
    window = SampleWindow(10.0)
    window.add(Sample(0.0, False, 9.0))  # a lost probe's RTT means nothing
    window.add(Sample(1.0, True, None))  # answered, RTT unknown
    stats = window.stats(1.0)
    assert (stats.count, stats.lost, stats.loss_ratio) == (2, 1, 0.5)
    assert stats.rtt_p50 is None
    assert stats.rtt_p95 is None
    assert stats.jitter is None


@pytest.mark.parametrize("rtt", [-0.001, math.nan])
def test_bad_rtt_is_refused(rtt: float) -> None:
    with pytest.raises(ValueError, match="RTT"):
        SampleWindow(1.0).add(Sample(0.0, True, rtt))


@pytest.mark.parametrize(
    ("now", "kept"),
    [
        (10.0, 11),  # t = 0..10 all within [0, 10]
        (14.0, 7),  # t >= 4 kept: the sample at exactly now - span stays
        (14.5, 6),
        (20.0, 1),
        (20.5, 0),
    ],
)
def test_pruning_boundary(now: float, kept: int) -> None:
    window = SampleWindow(10.0)
    for i in range(11):
        window.add(Sample(float(i), i % 2 == 0, 0.01 * (i + 1) if i % 2 == 0 else None))
    stats = window.stats(now)
    assert stats.count == kept == len(window)
    if kept == 0:
        assert stats == WindowStats(0, 0, 0.0, None, None, None, None)


def test_jitter_is_mean_absolute_difference_per_stream() -> None:
    window = SampleWindow(60.0)
    # icmp 10, 12, 11 ms: diffs 2, 1 -> mean 1.5 ms; http 30, 30 ms: diff 0.
    for t, stream, rtt in [
        (0.0, "icmp", 0.010),
        (0.1, "http", 0.030),
        (1.0, "icmp", 0.012),
        (1.1, "http", 0.030),
        (2.0, "icmp", 0.011),
    ]:
        window.add(Sample(t, True, rtt), stream)
    # three differences: 2 ms, 0 ms, 1 ms (the icmp-http gap is not jitter)
    assert window.stats(2.0).jitter == pytest.approx(0.001)
    # after the first icmp and http leave: icmp 12->11, nothing for http
    assert window.stats(60.5).jitter == pytest.approx(0.001)
    # one sample per stream left: no difference to take
    assert window.stats(61.05).jitter is None


def test_jitter_skips_lost_samples_between_answers() -> None:
    window = SampleWindow(60.0)
    window.add(Sample(0.0, True, 0.010))
    window.add(Sample(1.0, False, None))
    window.add(Sample(2.0, True, 0.016))
    assert window.stats(2.0).jitter == pytest.approx(0.006)


def test_clear() -> None:
    window = SampleWindow(5.0)
    for i in range(10):
        window.add(Sample(i * 0.1, i % 3 != 0, 0.01 + i * 0.001), "icmp")
    window.clear()
    assert window.stats(1.0) == WindowStats(0, 0, 0.0, None, None, None, None)
    window.add(Sample(1.0, True, 0.02), "icmp")
    window.add(Sample(1.1, True, 0.03), "icmp")
    stats = window.stats(1.1)
    assert stats.count == 2
    assert stats.jitter == pytest.approx(0.01)


def _naive(samples: list[tuple[Sample, str]], now: float, span: float) -> WindowStats:
    kept = [(s, k) for s, k in samples if s.t >= now - span]
    if not kept:
        return WindowStats(0, 0, 0.0, None, None, None, None)
    lost = sum(1 for s, _ in kept if not s.ok)
    rtts = sorted(s.rtt_s for s, _ in kept if s.ok and s.rtt_s is not None)
    diffs: list[float] = []
    for stream in {k for _, k in kept}:
        seq = [s.rtt_s for s, k in kept if k == stream and s.ok and s.rtt_s is not None]
        diffs += [abs(b - a) for a, b in itertools.pairwise(seq)]

    def rank(p: int) -> float:
        return rtts[max(1, math.ceil(len(rtts) * p / 100)) - 1]

    return WindowStats(
        count=len(kept),
        lost=lost,
        loss_ratio=lost / len(kept),
        rtt_p50=rank(50) if rtts else None,
        rtt_p95=rank(95) if rtts else None,
        jitter=sum(diffs) / len(diffs) if diffs else None,
        last_t=kept[-1][0].t,
    )


@pytest.mark.parametrize("seed", range(8))
def test_matches_naive_recomputation(seed: int) -> None:
    rng = random.Random(seed)
    span = rng.choice([0.5, 2.0, 5.0])
    window = SampleWindow(span)
    samples: list[tuple[Sample, str]] = []
    t = 0.0
    for step in range(600):
        t += rng.expovariate(40.0)
        kind = rng.choice(["icmp", "tcp", "http"])
        ok = rng.random() > 0.2
        # repeated RTT values exercise removal of duplicates from the sorted list
        rtt = rng.choice([0.01, 0.02, round(rng.uniform(0.001, 0.2), 6)]) if ok else None
        if ok and rng.random() < 0.05:
            rtt = None
        sample = Sample(t, ok, rtt)
        window.add(sample, kind)
        samples.append((sample, kind))
        if step % 7 == 0:
            got, want = window.stats(t), _naive(samples, t, span)
            assert got.count == want.count
            assert got.lost == want.lost
            assert got.loss_ratio == pytest.approx(want.loss_ratio)
            assert (got.rtt_p50, got.rtt_p95, got.last_t) == (
                want.rtt_p50,
                want.rtt_p95,
                want.last_t,
            )
            if want.jitter is None:
                assert got.jitter is None
            else:
                assert got.jitter == pytest.approx(want.jitter, abs=1e-9)
