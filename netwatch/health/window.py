"""A sliding time window of probe samples: loss, RTT percentiles, jitter.

Every statistic is maintained incrementally, because the agent may feed
hundreds of samples per second and ask for the statistics after each
probe round:

- loss: a running count of lost samples;
- percentiles: the answered RTTs kept sorted (`bisect`), so a percentile is
  one index away; exact **nearest-rank** percentiles (the value at rank
  ceil(p/100 * n) of the n sorted RTTs), so a reported p95 is always an
  RTT that was really measured;
- jitter: the mean absolute difference between consecutive answered RTTs
  of the same stream (RFC 3550's idea without its 1/16 smoothing, so the
  window forgets the past exactly).  Differences are taken per stream (the
  agent uses one per probe kind): an HTTP probe costs more round trips
  than an ICMP echo, and that constant gap is not jitter.  The running sum
  is kept in integer nanoseconds so that adding and removing differences
  never drifts.

Samples are expected in time order (per window); pruning pops from the
oldest end.
"""

from __future__ import annotations

import bisect
import math
from collections import deque
from dataclasses import dataclass

__all__ = ["Sample", "SampleWindow", "WindowStats"]


@dataclass(frozen=True, slots=True)
class Sample:
    """One probe: sent or completed at `t` (seconds, monotonic), answered
    (`ok`) with round-trip time `rtt_s`, or lost (`ok` false, RTT ignored)."""

    t: float
    ok: bool
    rtt_s: float | None = None


@dataclass(frozen=True, slots=True)
class WindowStats:
    """What the window holds at one moment.

    `loss_ratio` is 0..1 (0 for an empty window, where `count` says that
    nothing is known); RTT figures are seconds, None when no sample of the
    window carried an RTT (jitter: when no stream has two)."""

    count: int
    lost: int
    loss_ratio: float
    rtt_p50: float | None
    rtt_p95: float | None
    jitter: float | None
    last_t: float | None

    @property
    def answered(self) -> int:
        return self.count - self.lost


EMPTY_STATS = WindowStats(0, 0, 0.0, None, None, None, None)


def nearest_rank(sorted_values: list[float], percent: int) -> float:
    """The nearest-rank percentile of an ascending, non-empty list."""
    n = len(sorted_values)
    rank = max(1, -(-n * percent // 100))  # ceil(n * percent / 100), at least 1
    return sorted_values[rank - 1]


def _ns(seconds: float) -> int:
    return round(seconds * 1e9)


class SampleWindow:
    """Probe samples of the last `span_s` seconds.

    A sample is kept while `t >= now - span_s`.  `stats(now)` prunes, so
    `now` must not go backwards between calls (samples once pruned are
    gone)."""

    __slots__ = (
        "_jitter_diffs",
        "_jitter_sum_ns",
        "_lost",
        "_samples",
        "_sorted",
        "_streams",
        "span_s",
    )

    def __init__(self, span_s: float) -> None:
        if not span_s > 0:
            raise ValueError(f"a window span must be above zero, got {span_s!r}")
        self.span_s = span_s
        # (sample, stream) in arrival order
        self._samples: deque[tuple[Sample, str]] = deque()
        self._sorted: list[float] = []  # RTTs of the answered samples, ascending
        self._lost = 0
        self._streams: dict[str, deque[int]] = {}  # answered RTTs (ns) per stream
        self._jitter_sum_ns = 0  # sum of |consecutive difference| over all streams
        self._jitter_diffs = 0  # how many differences that sum holds

    def __len__(self) -> int:
        return len(self._samples)

    def add(self, sample: Sample, stream: str = "") -> None:
        """Add one sample; `stream` names the probe kind it came from (jitter
        only compares RTTs of the same stream)."""
        self._samples.append((sample, stream))
        if not sample.ok:
            self._lost += 1
            return
        rtt = sample.rtt_s
        if rtt is None:
            return  # answered without a measured RTT: counts for loss only
        if rtt < 0 or math.isnan(rtt):
            raise ValueError(f"an RTT must be a number >= 0, got {rtt!r}")
        bisect.insort(self._sorted, rtt)
        rtts = self._streams.setdefault(stream, deque())
        ns = _ns(rtt)
        if rtts:
            self._jitter_sum_ns += abs(ns - rtts[-1])
            self._jitter_diffs += 1
        rtts.append(ns)

    def answer_late(self, t: float, stream: str, rtt_s: float, tolerance: float = 0.0) -> bool:
        """A sample of `stream` sent at `t` (give or take `tolerance`), counted
        lost, was answered after all: make it an answered sample with `rtt_s`.
        Late answers are recent, so the search runs from the newest end.
        False if no such lost sample is (still) in the window."""
        samples = self._samples
        for index in range(len(samples) - 1, -1, -1):
            sample, name = samples[index]
            if sample.t < t - tolerance:
                return False
            if abs(sample.t - t) <= tolerance and name == stream and not sample.ok:
                answered = Sample(sample.t, True, rtt_s)
                samples[index] = (answered, name)
                self._lost -= 1
                bisect.insort(self._sorted, rtt_s)
                # jitter: only the stream's order of RTTs matters; a late
                # answer is rare, so it joins the stream at its end.
                rtts = self._streams.setdefault(stream, deque())
                ns = _ns(rtt_s)
                if rtts:
                    self._jitter_sum_ns += abs(ns - rtts[-1])
                    self._jitter_diffs += 1
                rtts.append(ns)
                return True
        return False

    def prune(self, now: float) -> None:
        """Forget the samples older than `now - span_s`."""
        cutoff = now - self.span_s
        samples = self._samples
        while samples and samples[0][0].t < cutoff:
            sample, stream = samples.popleft()
            if not sample.ok:
                self._lost -= 1
                continue
            rtt = sample.rtt_s
            if rtt is None:
                continue
            del self._sorted[bisect.bisect_left(self._sorted, rtt)]
            rtts = self._streams[stream]
            oldest = rtts.popleft()
            if rtts:
                self._jitter_sum_ns -= abs(rtts[0] - oldest)
                self._jitter_diffs -= 1

    def clear(self) -> None:
        """Forget everything (a recovered path is judged on what it did since)."""
        self._samples.clear()
        self._sorted.clear()
        self._streams.clear()
        self._lost = 0
        self._jitter_sum_ns = 0
        self._jitter_diffs = 0

    def stats(self, now: float) -> WindowStats:
        """Prune to `now`, then summarise what is left."""
        self.prune(now)
        count = len(self._samples)
        if count == 0:
            return EMPTY_STATS
        rtts = self._sorted
        return WindowStats(
            count=count,
            lost=self._lost,
            loss_ratio=self._lost / count,
            rtt_p50=nearest_rank(rtts, 50) if rtts else None,
            rtt_p95=nearest_rank(rtts, 95) if rtts else None,
            jitter=self._jitter_sum_ns / self._jitter_diffs / 1e9 if self._jitter_diffs else None,
            last_t=self._samples[-1][0].t,
        )
