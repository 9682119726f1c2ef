"""Route-flap damping (RFC 2439) for one path.

Each flap (a working path going DOWN) adds `penalty` to a figure of merit
that halves every `half_life` seconds.  The path is *suppressed* once the
figure exceeds `suppress`, and stays so until it has decayed below
`reuse`.  The figure is capped at

    ceiling = reuse * 2 ** (max_suppress / half_life)

so that, whatever happened before, a suppression ends at most
`max_suppress` seconds after the last flap.

The whole state is (figure, time of the last flap, suppressed-at-that-time),
so `penalty(t)` and `suppressed(t)` are pure functions of `t`: the end of
a suppression is computed, not polled.  A `penalty` of 0 disables damping.
"""

from __future__ import annotations

import math

from netwatch.topology.model import Damping as DampingParams

__all__ = ["Damping"]


class Damping:
    __slots__ = ("_at", "_figure", "_suppressed", "ceiling", "flaps", "params")

    def __init__(self, params: DampingParams) -> None:
        self.params = params
        try:
            self.ceiling = params.reuse * math.pow(2.0, params.max_suppress / params.half_life)
        except OverflowError:  # max_suppress of thousands of half-lives: no cap
            self.ceiling = math.inf
        self._figure = 0.0  # the figure of merit right after the last flap
        self._at = -math.inf  # time of the last flap
        self._suppressed = False  # whether the last flap started/extended a suppression
        self.flaps = 0

    @property
    def enabled(self) -> bool:
        return self.params.penalty > 0

    def penalize(self, t: float) -> None:
        """Record one flap at `t` (calls must come in time order)."""
        self.flaps += 1
        if not self.enabled:
            return
        figure = min(self.penalty(t) + self.params.penalty, self.ceiling)
        # Hysteresis: a suppression still running carries on, whatever the figure;
        # a new one needs the figure above `suppress`.
        self._suppressed = self.suppressed(t) or figure > self.params.suppress
        self._figure = figure
        self._at = t

    def penalty(self, t: float) -> float:
        """The figure of merit at `t`, decayed since the last flap."""
        if self._figure == 0.0:
            return 0.0
        elapsed = max(0.0, t - self._at)
        return self._figure * math.pow(2.0, -elapsed / self.params.half_life)

    def reuse_at(self) -> float | None:
        """When the current suppression ends (the figure reaches `reuse`),
        or None if the last flap left the path unsuppressed."""
        if not self._suppressed:
            return None
        if self._figure <= self.params.reuse:
            return self._at
        return self._at + self.params.half_life * math.log2(self._figure / self.params.reuse)

    def suppressed(self, t: float) -> bool:
        """Whether the path is suppressed at `t` (not before the last flap)."""
        end = self.reuse_at()
        return end is not None and t < end
