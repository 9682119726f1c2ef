"""The health state machine of one path (exabgp healthcheck style: rise/fall
counts, faster probing while a state is changing).

                first round good      window >= degraded, `fall` rounds
    UNKNOWN ───────────────────► UP ─────────────────────────────► DEGRADED
       │                        ▲  │ ◄───────────────────────────────  │
       │ first round bad        │  │  window < degraded, `rise` rounds │
       │ or link down           │  │                                   │
       │                        │  │ `fall` bad rounds or link down    │
       │     `rise` good rounds │  ▼                                   │
       └──────────────────────► DOWN ◄─────────────────────────────────┘

Round verdicts, per state:

- UP / DEGRADED: a round is *bad* when fewer than `reliability` probe kinds
  answered (a *silent* round; a round that probed fewer kinds needs them
  all), or (once the window holds `min_samples`) the window's loss
  >= fail.loss (with `false_alarm` set: its lower 95 % Wilson bound, so a
  small window's chance run of losses is no failure) or its RTT p50
  >= fail.latency.  `fall` bad rounds in a row
  take the path DOWN; a good round resets the count.  A run of silent
  rounds is, with `false_alarm` set, also told from random loss and from
  latency:
  - it must be long enough that random loss at the fail line would produce
    it by chance in at most `false_alarm` of the rounds:
    ceil(log(false_alarm) / log(fail.loss)) rounds, never fewer than
    `fall`.  The bar is the fail line, not the loss the window saw: loss
    that has just begun (a line starting to degrade) is not in the window
    yet, and noise under the fail line must never pass for a cut.  Loss
    over the line fails the path by the window's own rule;
  - it must have lasted fail.latency from the first silent round's send
    time: an echo slower than that is a failure by the policy's own words,
    one faster may still arrive, and a late answer (`late_answer`) ends
    the run, because the path is slow, not gone.  Only good rounds move
  the path between UP and DEGRADED (a suspect path is left to `fall`): the
  window must show loss >= degraded.loss or p50 >= degraded.latency for
  `fall` good rounds in a row to degrade it, both below for `rise` rounds
  to clear it, so that a window hovering at a threshold does not make an
  event of every round.
- DOWN: a round is *good* when the link is up, at least `reliability`
  kinds answered, each answered RTT <= recover.latency, and the loss over
  the rounds of the current rising streak (this one included, so at most
  `rise` rounds) <= recover.loss.  The long window cannot judge a recovery:
  it is still full of the outage's losses.  `rise` good rounds in a row
  bring the path UP, and the window is cleared then, for the same reason:
  a recovered path is judged on what it did since it came back.
- UNKNOWN: the first round decides at once (UP if at least `reliability`
  kinds answered under fail.latency, DOWN otherwise), so that a restarted
  agent knows its paths within one round.

A sample whose RTT exceeds the policy's timeout counts as lost, as the
prober would have given up on it.  A round holds the kinds probed in it
(slow kinds are probed every few rounds only); a round's `t` is when its
probes were sent, so rounds reach the core in time order.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from netwatch.health.damping import Damping
from netwatch.health.state import PathState
from netwatch.health.window import Sample, SampleWindow, WindowStats
from netwatch.topology.model import PolicyProfile
from netwatch.topology.units import format_duration

__all__ = ["PathHealth", "PathSnapshot", "PathState", "Transition"]

MIN_SAMPLES = 10  # the window judges a path only once it holds this many samples
LATE_MATCH_S = 0.002  # a late answer's send time, as the agent knows it, is this close
LOSS_Z = 1.64  # one-sided 95 %: a window's loss must be over fail.loss beyond chance


@dataclass(frozen=True, slots=True)
class Transition:
    """A state change of one path.  `suspected_at` is when the sequence that
    led to it began (first bad round, first good round, link event): the
    agent measures "fault suspected -> routes applied" from it."""

    t: float
    path: str
    old: PathState
    new: PathState
    reason: str
    suspected_at: float

    @property
    def confirm_s(self) -> float:
        """How long the change took to confirm, from first suspicion."""
        return self.t - self.suspected_at


@dataclass(frozen=True, slots=True)
class PathSnapshot:
    """One path at one moment, for metrics and the MQTT `state` topic."""

    name: str
    state: PathState
    since: float | None  # last state change (None: never changed)
    up_since: float | None  # carrying traffic without a break since (None: not up)
    reason: str  # why the last state change happened
    verdict: str  # what the last round found ("ok" or why it was bad)
    stats: WindowStats
    rounds: int  # probe rounds seen
    bad_rounds: int  # bad rounds in a row so far (UP / DEGRADED)
    good_rounds: int  # good rounds in a row so far (DOWN)
    failed_rounds: int  # bad rounds in total
    transitions: int
    flaps: int  # times a working path went DOWN
    carrier: bool  # the link is up (no link_down pending)
    damped: bool
    penalty: float
    interval: float


def silent_rounds_needed(policy: PolicyProfile) -> int:
    """How many silent rounds in a row tell a cut from random loss under the
    fail line (see the module docstring); `fall` without `false_alarm`."""
    if policy.false_alarm is None:
        return policy.fall
    rounds = math.ceil(math.log(policy.false_alarm) / math.log(policy.fail.loss) - 1e-9)
    return max(policy.fall, rounds)


def _percent(ratio: float) -> str:
    return f"{ratio * 100:.1f}".rstrip("0").rstrip(".") + "%"


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f}ms" if seconds < 10 else f"{seconds:.1f}s"


class PathHealth:
    """Health of one path, fed with probe rounds and link events.

    Not thread-safe and never blocking: every method returns at once, with
    the transition it caused, if any."""

    def __init__(
        self,
        name: str,
        policy: PolicyProfile,
        kinds: Sequence[str] | None = None,
        *,
        min_samples: int | None = None,
    ) -> None:
        self.name = name
        self.policy = policy
        self.kinds: tuple[str, ...] = tuple(kinds if kinds is not None else policy.probes)
        if not self.kinds:
            raise ValueError(f"path {name!r}: at least one probe kind is needed")
        if len(set(self.kinds)) != len(self.kinds):
            raise ValueError(f"path {name!r}: probe kinds repeat: {self.kinds}")
        if policy.reliability > len(self.kinds):
            # such a path could never come UP
            raise ValueError(
                f"path {name!r}: reliability {policy.reliability} exceeds "
                f"the {len(self.kinds)} probe kinds {self.kinds}"
            )
        if min_samples is None:
            # ~10 samples, but no more than a full window can hold at the
            # stable interval (mwan3's one probe per 10 s in 50 s gives 5).
            per_window = len(self.kinds) * max(1, int(policy.window / policy.interval))
            min_samples = min(MIN_SAMPLES, per_window)
        self.min_samples = max(1, min_samples)
        self.window = SampleWindow(policy.window)
        self.damping = Damping(policy.damping)

        self.state = PathState.UNKNOWN
        self.since: float | None = None
        self.up_since: float | None = None
        self.reason = "not probed yet"
        self.verdict = "not probed yet"
        self.carrier = True  # False between link_down and link_up
        self.link_since: float | None = None  # last link event
        self.rounds = 0
        self.failed_rounds = 0
        self.transitions = 0
        self.flaps = 0
        self.clean_since: float | None = None  # UP (not DEGRADED) without a break since
        self._bad = 0
        self._good = 0
        self._suspected_at = 0.0
        # the current run of silent rounds: how many, since when (send time)
        self._silent = 0
        self._silent_since = 0.0
        self.silent_rounds_needed = silent_rounds_needed(policy)
        self._shift = 0  # rounds in a row whose window disagrees with UP / DEGRADED
        self._shift_at = 0.0
        # rounds of the current rising streak: (lost, count)
        self._streak: deque[tuple[int, int]] = deque()
        self._window_name = format_duration(policy.window)

    # --- queries -------------------------------------------------------------

    @property
    def is_up(self) -> bool:
        """UP or DEGRADED: the path carries traffic."""
        return self.state.carries_traffic

    @property
    def bad_rounds(self) -> int:
        return self._bad

    @property
    def good_rounds(self) -> int:
        return self._good

    def damped(self, t: float) -> bool:
        return self.damping.suppressed(t)

    def suspect(self) -> bool:
        """Whether the state is changing: a fall or a rise under way.  An
        UNKNOWN path is not suspect: its first round decides on its own, and
        a burst of rounds at start-up would only crowd the probes."""
        if self.state is PathState.UNKNOWN:
            return False
        if self.state is PathState.DOWN:
            return 0 < self._good < self.policy.rise
        return self._bad > 0

    def interval(self) -> float:
        """Seconds until the next probe round should start."""
        return self.policy.suspect_interval if self.suspect() else self.policy.interval

    def stats(self, t: float) -> WindowStats:
        return self.window.stats(t)

    def snapshot(self, t: float) -> PathSnapshot:
        return PathSnapshot(
            name=self.name,
            state=self.state,
            since=self.since,
            up_since=self.up_since,
            reason=self.reason,
            verdict=self.verdict,
            stats=self.window.stats(t),
            rounds=self.rounds,
            bad_rounds=self._bad,
            good_rounds=self._good,
            failed_rounds=self.failed_rounds,
            transitions=self.transitions,
            flaps=self.flaps,
            carrier=self.carrier,
            damped=self.damping.suppressed(t),
            penalty=self.damping.penalty(t),
            interval=self.interval(),
        )

    # --- events --------------------------------------------------------------

    def round(
        self, t: float, results: Mapping[str, Sample], *, done: float | None = None
    ) -> Transition | None:
        """One probe round: its probes were sent at `t`, and the last of them
        answered or timed out at `done` (default `t`).  `results` holds the
        kinds probed in this round.  Returns the transition it caused, if any."""
        unknown = set(results) - set(self.kinds)
        if unknown:
            raise ValueError(f"path {self.name!r}: unexpected probe kinds {sorted(unknown)}")
        if not results:
            raise ValueError(f"path {self.name!r}: a round needs at least one probe")
        done = t if done is None else done
        samples = [
            (kind, self._normalize(t, results[kind])) for kind in self.kinds if kind in results
        ]
        for kind, sample in sorted(samples, key=lambda item: item[1].t):
            self.window.add(sample, kind)
        stats = self.window.stats(t)
        self.rounds += 1

        total = len(samples)
        answered = [s for _, s in samples if s.ok]
        silent = total - len(answered)
        needed = min(self.policy.reliability, total)
        enough = len(answered) >= needed
        silent_reason = f"loss {_percent(silent / total)} ({silent}/{total} kinds silent)"
        if not enough and answered:
            silent_reason += f", {needed} must answer"

        # Transitions happen when the round is judged (`done`); suspicion
        # dates from when the first failed probe was sent (`t`).
        if self.state is PathState.UNKNOWN:
            return self._first_round(done, answered, enough, silent_reason)
        if self.state is PathState.DOWN:
            return self._down_round(t, done, answered, silent, total, enough, silent_reason)
        return self._up_round(t, done, stats, enough, silent_reason)

    def late_answer(self, t: float, kind: str, rtt_s: float) -> None:
        """A probe sent at `t` answered after its deadline: counted as lost by
        its round, but the path carried it.  Under fail.latency it ends a run
        of silent rounds: the path is slow, not gone."""
        if not self.state.carries_traffic:
            return
        if rtt_s >= self.policy.fail.latency:
            return  # slower than the policy allows: the silence stands
        if rtt_s <= self.policy.timeout:
            self.window.answer_late(t, kind, rtt_s, LATE_MATCH_S)  # latency, not loss
        if self._silent == 0:
            return
        self._silent = self._bad = 0
        self.verdict = f"late answer ({kind} {_ms(rtt_s)}): slow, not silent"

    def link_down(self, t: float, reason: str = "carrier lost") -> Transition | None:
        """The interface lost its carrier or went down: DOWN at once."""
        self.carrier = False
        self.link_since = t
        self._good = 0
        self._streak.clear()
        self.verdict = f"link down: {reason}"
        if self.state is PathState.DOWN:
            return None
        self._bad = self._silent = 0
        return self._change(t, PathState.DOWN, f"link down: {reason}", suspected_at=t)

    def link_up(self, t: float) -> None:
        """The interface is back: rounds may rise again (nothing else changes;
        the path still has to prove itself with `rise` good rounds)."""
        self.carrier = True
        self.link_since = t

    # --- per-state round handling -------------------------------------------

    def _normalize(self, t: float, sample: Sample | None) -> Sample:
        if sample is None:
            return Sample(t, False, None)  # a kind missing from a round was lost
        if sample.ok and sample.rtt_s is not None and sample.rtt_s > self.policy.timeout:
            return Sample(sample.t, False, None)  # too late: the prober gave up on it
        return sample

    def _first_round(
        self, t: float, answered: list[Sample], enough: bool, silent_reason: str
    ) -> Transition:
        if not self.carrier:
            self.verdict = "link down"
            return self._change(t, PathState.DOWN, "first round: link down", suspected_at=t)
        if not enough:
            self.verdict = silent_reason
            self.failed_rounds += 1
            return self._change(t, PathState.DOWN, f"first round: {silent_reason}", suspected_at=t)
        rtts = sorted(s.rtt_s for s in answered if s.rtt_s is not None)
        if rtts:
            median = rtts[(len(rtts) - 1) // 2]
            limit = self.policy.fail.latency
            if median >= limit:
                reason = f"rtt {_ms(median)} >= {format_duration(limit)}"
                self.verdict = reason
                self.failed_rounds += 1
                return self._change(t, PathState.DOWN, f"first round: {reason}", suspected_at=t)
        self.verdict = "ok"
        n = len(self.kinds)
        return self._change(
            t, PathState.UP, f"first round: {len(answered)}/{n} kinds answered", suspected_at=t
        )

    def _up_round(
        self,
        t: float,
        done: float,
        stats: WindowStats,
        enough: bool,
        silent_reason: str,
    ) -> Transition | None:
        policy = self.policy
        judged = stats.count >= self.min_samples
        window_bad: str | None = None
        if judged and self._loss_exceeds(stats, policy.fail.loss):
            window_bad = self._loss_reason(stats, ">=", policy.fail.loss)
        elif judged and stats.rtt_p50 is not None and stats.rtt_p50 >= policy.fail.latency:
            window_bad = self._rtt_reason(stats.rtt_p50, ">=", policy.fail.latency)
        bad = silent_reason if not enough else window_bad

        if bad is not None:
            self.verdict = bad
            self.failed_rounds += 1
            self._shift = 0
            self._bad += 1
            if self._bad == 1:
                self._suspected_at = t
            if enough:
                self._silent = 0
            else:
                self._silent += 1
                if self._silent == 1:
                    self._silent_since = t
            if self._bad < policy.fall:
                return None
            if window_bad is None and policy.false_alarm is not None:
                # a silent run alone: a cut, or noise, or latency?
                if self._silent < self.silent_rounds_needed:
                    return None
                if done - self._silent_since < policy.fail.latency - 1e-9:
                    return None  # an answer slower than this may still come
            rounds = f"{self._bad} failed round" + ("s" if self._bad > 1 else "")
            suspected = self._suspected_at
            self._bad = self._silent = 0
            return self._change(done, PathState.DOWN, f"{rounds}: {bad}", suspected_at=suspected)

        self.verdict = "ok"
        self._bad = self._silent = 0
        if not judged:
            return None
        degraded = policy.degraded
        if self._loss_exceeds(stats, degraded.loss):
            why = self._loss_reason(stats, ">=", degraded.loss)
        elif stats.rtt_p50 is not None and stats.rtt_p50 >= degraded.latency:
            why = self._rtt_reason(stats.rtt_p50, ">=", degraded.latency)
        else:
            why = None
        is_degraded = self.state is PathState.DEGRADED
        if (why is not None) == is_degraded:
            self._shift = 0  # the window agrees with the state
            return None
        # The window disagrees: confirm over `fall` rounds to degrade, `rise`
        # rounds to clear, so that a window hovering at a threshold does not
        # turn every round into an event.
        self._shift += 1
        if self._shift == 1:
            self._shift_at = t
        if self._shift < (policy.rise if is_degraded else policy.fall):
            return None
        self._shift = 0
        if why is not None:
            return self._change(done, PathState.DEGRADED, why, suspected_at=self._shift_at)
        rtt = "no rtt" if stats.rtt_p50 is None else f"rtt p50 {_ms(stats.rtt_p50)}"
        reason = (
            f"loss {_percent(stats.loss_ratio)} < {_percent(degraded.loss)} and "
            f"{rtt} < {format_duration(degraded.latency)} over {self._window_name} window"
        )
        return self._change(done, PathState.UP, reason, suspected_at=self._shift_at)

    def _down_round(
        self,
        t: float,
        done: float,
        answered: list[Sample],
        silent: int,
        total: int,
        enough: bool,
        silent_reason: str,
    ) -> Transition | None:
        policy = self.policy
        recover = policy.recover
        bad: str | None = None
        if not self.carrier:
            bad = "link down"
        elif not enough:
            bad = silent_reason
        else:
            slow = [s.rtt_s for s in answered if s.rtt_s is not None and s.rtt_s > recover.latency]
            if slow:
                bad = self._rtt_reason(max(slow), ">", recover.latency, window=False)
            else:
                lost = silent + sum(lost for lost, _ in self._streak)
                count = total + sum(count for _, count in self._streak)
                if lost / count > recover.loss:
                    n = len(self._streak) + 1
                    bad = (
                        f"loss {_percent(lost / count)} > {_percent(recover.loss)} "
                        f"over the last {n} round" + ("s" if n > 1 else "")
                    )
        if bad is not None:
            self.verdict = bad
            self._good = 0
            self._streak.clear()
            return None

        self.verdict = "ok"
        self._good += 1
        self._streak.append((silent, total))
        if self._good == 1:
            self._suspected_at = t
        if self._good < policy.rise:
            return None
        reason = f"{policy.rise} good round" + ("s" if policy.rise > 1 else "")
        suspected = self._suspected_at
        self._good = 0
        self._streak.clear()
        self.window.clear()
        return self._change(done, PathState.UP, reason, suspected_at=suspected)

    # --- helpers -------------------------------------------------------------

    def _loss_exceeds(self, stats: WindowStats, limit: float) -> bool:
        """Whether the window's loss is at or over `limit`; with `false_alarm`
        set, by the lower Wilson bound (z = LOSS_Z) rather than the raw
        ratio, so that a small window's chance run of losses is no failure."""
        if stats.loss_ratio < limit:
            return False
        if self.policy.false_alarm is None:
            return True
        n, p, z = stats.count, stats.loss_ratio, LOSS_Z
        low = (p + z * z / (2 * n) - z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))) / (
            1 + z * z / n
        )
        return low >= limit

    def _loss_reason(self, stats: WindowStats, op: str, limit: float) -> str:
        return (
            f"loss {_percent(stats.loss_ratio)} {op} {_percent(limit)} "
            f"over {self._window_name} window"
        )

    def _rtt_reason(self, rtt: float, op: str, limit: float, *, window: bool = True) -> str:
        text = f"{_ms(rtt)} {op} {format_duration(limit)}"
        return f"rtt p50 {text} over {self._window_name} window" if window else f"rtt {text}"

    def _change(self, t: float, new: PathState, reason: str, *, suspected_at: float) -> Transition:
        old = self.state
        self._shift = 0
        if new is PathState.DOWN and old.carries_traffic:
            self.flaps += 1
            self.damping.penalize(t)
        elif new is PathState.DEGRADED and self.policy.degraded_failover is not None:
            self.damping.penalize(t)  # a degraded primary moves traffic: damp it as a flap
        if new.carries_traffic and not old.carries_traffic:
            self.up_since = t
        elif not new.carries_traffic:
            self.up_since = None
        if new is PathState.UP:
            if old is not PathState.UP:
                self.clean_since = t
        else:
            self.clean_since = None
        self.state = new
        self.since = t
        self.reason = reason
        self.transitions += 1
        return Transition(t, self.name, old, new, reason, suspected_at)
