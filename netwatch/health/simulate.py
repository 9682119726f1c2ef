"""Simulated time for the health core: what a policy implies, without sockets.

A `Simulation` drives `PathHealth` instances (and optionally a
`PathSelector`) the way the agent does, on a virtual clock:

- a round starts on each path, sent at the start time, with the kinds and
  deadlines the path's `RoundPlanner` gives (the agent's own planner: slow
  kinds every few rounds, deadlines learned from the RTT, doubled on
  expiry);
- a probe answered within its deadline completes at `start + rtt`, a lost
  or late one at `start + deadline` (when the prober gives up); a late one
  is also reported to the core as a late answer at `start + rtt`;
- the round is reported, in start order, once its last probe completes;
- after each report or link event the selector, if any, decides.

When the next round starts is the agent's choice; two schedules are modelled:

- "cadence" (the default, and the recommended one): rounds start every
  `health.interval()` start-to-start, whatever the previous round became
  (rounds may overlap: `fast` probes every 50 ms, each waiting up to 250 ms).
  Each report re-reads `interval()`, so a path turning suspect is probed
  at `suspect_interval` from that moment.  The probe rate does not depend
  on the outcome, so the window's loss ratio is an unbiased estimate.
  Rounds are reported in the order they were started (a quick round waits
  for an earlier one still timing out), or a stale lost round would count
  against a path already back: the planner sees to it.
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
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from netwatch.health.path import PathHealth, PathState, Transition
from netwatch.health.rounds import RoundPlanner
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
        self.planners: dict[str, RoundPlanner] = {}
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
        self.planners[health.name] = RoundPlanner(health.policy, health.kinds)
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
        planner = self.planners[health.name]
        planned = planner.start(start)
        for kind, deadline in planned.deadlines.items():
            rtt = prober(start, kind)
            if rtt is not None and rtt <= deadline:
                self._at(start + rtt, self._finisher(health, planned.seq, kind, True, rtt))
                continue
            self._at(start + deadline, self._finisher(health, planned.seq, kind, False, None))
            if rtt is not None:  # it comes, but after the prober gave up

                def late(now: float, kind: str = kind, rtt: float = rtt) -> None:
                    planner.late(kind, rtt)
                    health.late_answer(start, kind, rtt)

                self._at(start + rtt, late)

    def _finisher(
        self, health: PathHealth, seq: int, kind: str, ok: bool, rtt: float | None
    ) -> Callable[[float], None]:
        def finish(now: float) -> None:
            for done in self.planners[health.name].finish(seq, kind, ok, rtt, now):
                self._report(health, done.t, done.done, done.samples)

        return finish

    def _report(
        self, health: PathHealth, t: float, done: float, results: dict[str, Sample]
    ) -> None:
        self._record(health.round(t, results, done=done), done)
        if self.schedule == "sequential":
            self._schedule_start(health, done + health.interval())
        else:  # the interval may have changed: re-plan the next start from the last one
            self._schedule_start(
                health, max(done, self._last_start[health.name] + health.interval())
            )

    def _record(self, transition: Transition | None, t: float) -> None:
        if transition is not None:
            self.log.transitions.append(transition)
        if self.selector is not None:
            decision = self.selector.decide(t, self.health)
            if decision is not None:
                self.log.decisions.append(decision)
