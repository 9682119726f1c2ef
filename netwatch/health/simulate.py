"""Simulated time for the health core: what a policy implies, without sockets.

A `Simulation` drives `PathHealth` instances (and optionally a
`PathSelector`) the way the agent does, on a virtual clock:

- a round starts on each path, one probe per kind, sent at the start time;
- a probe answered within the policy's timeout becomes a sample at
  `start + rtt`, a lost one at `start + timeout` (when the prober gives up);
- the round is reported when its last probe completes;
- after each report or link event the selector, if any, decides.

When the next round starts is the agent's choice; two schedules are modelled:

- "cadence" (the default, and the recommended one): rounds start every
  `health.interval()` start-to-start, whatever the previous round became
  (rounds may overlap: `fast` probes every 100 ms with a 150 ms timeout).
  Each report re-reads `interval()`, so a path turning suspect is probed
  at `suspect_interval` from that moment.  The probe rate does not depend
  on the outcome, so the window's loss ratio is an unbiased estimate.
  Rounds are reported in the order they were started (a quick round waits
  for an earlier one still timing out), or a stale lost round would count
  against a path already back.
- "sequential" (exabgp's loop: check, then sleep): the next round starts
  `interval()` after the previous one was reported.  A lossy round lasts
  a whole timeout, so during a brownout the window fills more slowly with
  the new, lossy samples than it held the old, good ones: the loss ratio
  lags, and detection with it.

The network is a `Prober`: a function of (send time, probe kind) giving an
RTT, or None for a lost probe, e.g. a seeded random model in a test.
"""

from __future__ import annotations

import heapq
import itertools
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from netwatch.health.path import PathHealth, PathState, Transition
from netwatch.health.selector import Decision, PathSelector
from netwatch.health.window import Sample

__all__ = ["Prober", "Schedule", "Simulation", "StateLog"]

Prober = Callable[[float, str], float | None]
Schedule = Literal["cadence", "sequential"]


@dataclass
class StateLog:
    """Where each path's state was, over simulated time."""

    transitions: list[Transition] = field(default_factory=list)
    decisions: list[Decision] = field(default_factory=list)
    round_starts: dict[str, list[float]] = field(default_factory=dict)

    def of(self, path: str) -> list[Transition]:
        return [tr for tr in self.transitions if tr.path == path]

    def first(self, path: str, new: PathState, after: float = float("-inf")) -> Transition | None:
        """The first transition of `path` into `new` at or after `after`."""
        for tr in self.transitions:
            if tr.path == path and tr.new is new and tr.t >= after:
                return tr
        return None


@dataclass
class _Round:
    results: dict[str, Sample]
    complete: bool = False


class Simulation:
    def __init__(
        self, selector: PathSelector | None = None, *, schedule: Schedule = "cadence"
    ) -> None:
        self.selector = selector
        self.schedule = schedule
        self.health: dict[str, PathHealth] = {}
        self._probers: dict[str, Prober] = {}
        self._last_start: dict[str, float] = {}
        self._generation: dict[str, int] = {}  # invalidates a rescheduled start
        self._pending: dict[str, deque[_Round]] = {}  # rounds in flight, by start
        self._events: list[tuple[float, int, Callable[[float], None]]] = []
        self._seq = itertools.count()
        self.now = 0.0
        self.log = StateLog()

    def add_path(self, health: PathHealth, prober: Prober, *, start: float = 0.0) -> None:
        """Probe `health`'s path through `prober`, first round at `start`."""
        self.health[health.name] = health
        self._probers[health.name] = prober
        self.log.round_starts[health.name] = []
        self._generation[health.name] = 0
        self._pending[health.name] = deque()
        self._schedule_start(health, start)

    def link_down(self, t: float, path: str, reason: str = "carrier lost") -> None:
        self._at(t, lambda now: self._record(self.health[path].link_down(now, reason), now))

    def link_up(self, t: float, path: str) -> None:
        self._at(t, lambda now: self.health[path].link_up(now))

    def run(self, until: float) -> StateLog:
        """Process every event up to `until` (inclusive)."""
        events = self._events
        while events and events[0][0] <= until:
            t, _, action = heapq.heappop(events)
            self.now = t
            action(t)
        self.now = max(self.now, until)
        return self.log

    # --- internals -----------------------------------------------------------

    def _at(self, t: float, action: Callable[[float], None]) -> None:
        heapq.heappush(self._events, (t, next(self._seq), action))

    def _schedule_start(self, health: PathHealth, t: float) -> None:
        generation = self._generation[health.name] = self._generation[health.name] + 1

        def start(now: float) -> None:
            if self._generation[health.name] == generation:
                self._start_round(health, now)

        self._at(t, start)

    def _start_round(self, health: PathHealth, start: float) -> None:
        self.log.round_starts[health.name].append(start)
        self._last_start[health.name] = start
        if self.schedule == "cadence":
            self._schedule_start(health, start + health.interval())
        prober = self._probers[health.name]
        timeout = health.policy.timeout
        results: dict[str, Sample] = {}
        for kind in health.kinds:
            rtt = prober(start, kind)
            if rtt is None or rtt > timeout:
                results[kind] = Sample(start + timeout, False, None)
            else:
                results[kind] = Sample(start + rtt, True, rtt)
        pending = _Round(results)
        self._pending[health.name].append(pending)
        self._at(max(s.t for s in results.values()), lambda t: self._complete(health, t, pending))

    def _complete(self, health: PathHealth, t: float, done: _Round) -> None:
        # Report in the order the rounds were started: a quick round waits for
        # an earlier one still timing out, so "rounds in a row" means in time.
        done.complete = True
        queue = self._pending[health.name]
        while queue and queue[0].complete:
            self._report(health, t, queue.popleft().results)

    def _report(self, health: PathHealth, t: float, results: dict[str, Sample]) -> None:
        self._record(health.round(t, results), t)
        if self.schedule == "sequential":
            self._schedule_start(health, t + health.interval())
        else:  # the interval may have changed: re-plan the next start from the last one
            self._schedule_start(health, max(t, self._last_start[health.name] + health.interval()))

    def _record(self, transition: Transition | None, t: float) -> None:
        if transition is not None:
            self.log.transitions.append(transition)
        if self.selector is not None:
            decision = self.selector.decide(t, self.health)
            if decision is not None:
                self.log.decisions.append(decision)
