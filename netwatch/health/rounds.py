"""Probe rounds of one path: which kinds each round probes, how long each
probe waits, and the order in which finished rounds reach the core.

Pure and clock-free, like the rest of `netwatch.health`: the agent's runner
and the simulator (`simulate.Simulation`) both drive a `RoundPlanner`, so
what the simulator predicts is what the agent does.

    planner = RoundPlanner(policy, kinds)
    planned = planner.start(t)                   # PlannedRound(seq, t, {kind: deadline})
    ...                                          # send the probes
    for done in planner.finish(seq, kind, ok, rtt_s, at):
        health.round(done.t, done.samples, done=done.done)
    planner.late(kind, rtt_s)                    # an answer after its deadline

- Every kind is probed in a round when its own interval
  (`policy.probe_interval(kind)`) has passed since it was last sent, so the
  cheap kind probes every round and slow kinds every few.
- Each probe waits what its kind's `ProbeTimer` says on this path: learned
  from the RTT (down to `policy.min_timeout`; without it, always the whole
  timeout), doubled on expiry, relearned from the next answer.
- Rounds are released in the order they started, each stamped with its
  send time: a lost probe that times out late never counts after a newer
  good round, and the core never sees time go backwards.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from netwatch.health.rto import ProbeTimer
from netwatch.health.window import Sample
from netwatch.topology.model import PolicyProfile

__all__ = ["DoneRound", "PlannedRound", "RoundPlanner"]

DEADLINE_SLACK_S = 0.01  # scheduling allowance on a busy 2-core box


@dataclass(frozen=True, slots=True)
class PlannedRound:
    seq: int
    t: float  # when its probes are sent
    deadlines: dict[str, float]  # kind -> seconds to wait


@dataclass(frozen=True, slots=True)
class DoneRound:
    seq: int
    t: float  # send time: the round's place in time
    done: float  # when its last probe answered or gave up
    samples: dict[str, Sample]


@dataclass
class _Open:
    planned: PlannedRound
    samples: dict[str, Sample] = field(default_factory=dict)
    done: float = float("-inf")

    @property
    def complete(self) -> bool:
        return len(self.samples) == len(self.planned.deadlines)


class RoundPlanner:
    def __init__(
        self,
        policy: PolicyProfile,
        kinds: Sequence[str],
        *,
        slack_s: float = DEADLINE_SLACK_S,
    ) -> None:
        self.policy = policy
        self.kinds = tuple(kinds)
        # Without min_timeout every probe waits the whole timeout.
        floor = min(policy.min_timeout or policy.timeout, policy.timeout)
        self.timers = {k: ProbeTimer(floor, policy.timeout, slack_s=slack_s) for k in self.kinds}
        self._every = {k: policy.probe_interval(k) for k in self.kinds}
        self._last_sent = dict.fromkeys(self.kinds, float("-inf"))
        self._seq = 0
        self._open: dict[int, _Open] = {}
        self._released = 0  # highest seq handed to the core
        self._floor_seq = 0  # rounds up to here are dropped, not released
        self._last_done = float("-inf")  # a round is judged once those before it are

    @property
    def in_flight(self) -> int:
        return len(self._open)

    def due(self, t: float) -> list[str]:
        """The kinds a round starting at `t` probes: each whose interval has
        passed (half a round early is on time: round starts drift)."""
        slack = self.policy.interval / 2
        return [k for k in self.kinds if t - self._last_sent[k] >= self._every[k] - slack]

    def start(self, t: float, kinds: Sequence[str] | None = None) -> PlannedRound:
        """Plan the round sent at `t`: the kinds due (or `kinds`), each with
        its deadline."""
        chosen = self.due(t) if kinds is None else list(kinds)
        if not chosen:
            chosen = [self.kinds[0]]  # a round probes at least the cheapest kind
        self._seq += 1
        for kind in chosen:
            self._last_sent[kind] = t
        planned = PlannedRound(self._seq, t, {k: self.timers[k].timeout() for k in chosen})
        self._open[planned.seq] = _Open(planned)
        return planned

    def finish(
        self, seq: int, kind: str, ok: bool, rtt_s: float | None, at: float
    ) -> list[DoneRound]:
        """One probe of round `seq` answered (`ok`, `rtt_s`) or gave up at
        `at`.  Returns the rounds that can now go to the core, in order."""
        entry = self._open.get(seq)
        if entry is None or kind not in entry.planned.deadlines or kind in entry.samples:
            return []  # dropped round, or a kind reported twice
        timer = self.timers[kind]
        if ok and rtt_s is not None:
            timer.observe(rtt_s)
        elif not ok:
            timer.expired()
        entry.samples[kind] = Sample(entry.planned.t, ok, rtt_s if ok else None)
        entry.done = max(entry.done, at)
        return self._release()

    def late(self, kind: str, rtt_s: float) -> None:
        """An answer that came after its deadline is still an RTT sample."""
        if kind in self.timers:
            self.timers[kind].observe(rtt_s)

    def drop_before(self, t: float) -> list[DoneRound]:
        """Forget the rounds sent before `t` (their link changed under them);
        returns rounds that were only waiting for those."""
        for seq, entry in list(self._open.items()):
            if entry.planned.t < t:
                del self._open[seq]
                self._floor_seq = max(self._floor_seq, seq)
        return self._release()

    def _release(self) -> list[DoneRound]:
        out: list[DoneRound] = []
        while True:
            nxt = self._released + 1
            if nxt <= self._floor_seq and nxt not in self._open:
                self._released = nxt  # dropped
                continue
            entry = self._open.get(nxt)
            if entry is None or not entry.complete:
                return out
            del self._open[nxt]
            self._released = nxt
            planned = entry.planned
            self._last_done = done = max(entry.done, self._last_done)
            out.append(DoneRound(planned.seq, planned.t, done, dict(entry.samples)))
