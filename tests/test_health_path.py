"""PathHealth: the per-path state machine, round by round, then as scenarios
over simulated time with the real profiles of topology.yaml."""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pytest

from netwatch.health import PathHealth, PathState, Sample, Transition
from netwatch.health.path import silent_rounds_needed
from netwatch.health.simulate import Prober, Schedule, Simulation
from netwatch.topology import PolicyProfile, load

ROOT = Path(__file__).resolve().parent.parent
POLICY = load(ROOT / "topology.yaml").policy
REAL_FAST = POLICY.profile("fast")
# The round-by-round tests spell out figures (150 ms timeout, 300 ms fail
# latency, 20 % fail loss, every kind in every round, a plain `fall`): they
# test the state machine's mechanics on these numbers.  The scenarios further
# down run the real profiles of topology.yaml by name.
FAST = REAL_FAST.model_copy(
    update={
        "suspect_interval": 0.01,
        "timeout": 0.15,
        "fail": REAL_FAST.fail.model_copy(update={"loss": 0.2, "latency": 0.3}),
        "recover": REAL_FAST.recover.model_copy(update={"latency": 0.15}),
        "probe_intervals": {},
        "false_alarm": None,
    }
)
MWAN3 = POLICY.profile("mwan3-default")
PFSENSE = POLICY.profile("pfsense-default")
PROFILES = ["fast", "mwan3-default", "pfsense-default"]
KINDS = ("icmp", "tcp", "http")
RTT = {"icmp": 0.010, "tcp": 0.011, "http": 0.014}  # an LGWAN path, per probe kind

UP, DOWN, DEGRADED, UNKNOWN = PathState.UP, PathState.DOWN, PathState.DEGRADED, PathState.UNKNOWN


def policy(base: PolicyProfile = FAST, **changes: object) -> PolicyProfile:
    return base.model_copy(update=changes)


def results(
    t: float,
    answered: Iterable[str] = KINDS,
    rtt: float = 0.010,
    kinds: Iterable[str] = KINDS,
) -> dict[str, Sample]:
    ok = set(answered)
    return {k: Sample(t, k in ok, rtt if k in ok else None) for k in kinds}


class Feeder:
    """Rounds every `step` seconds (0.125: exact in binary floating point)."""

    def __init__(self, health: PathHealth, step: float = 0.125, t: float = 0.0) -> None:
        self.health, self.step, self.t = health, step, t

    def round(self, answered: Iterable[str] = KINDS, rtt: float = 0.010) -> Transition | None:
        self.t += self.step
        return self.health.round(self.t, results(self.t, answered, rtt, self.health.kinds))

    def rounds(
        self, n: int, answered: Iterable[str] = KINDS, rtt: float = 0.010
    ) -> list[Transition]:
        found = [self.round(answered, rtt) for _ in range(n)]
        return [tr for tr in found if tr is not None]


def up_path(p: PolicyProfile = FAST, *, warm: int = 10) -> tuple[PathHealth, Feeder]:
    health = PathHealth("primary", p)
    feeder = Feeder(health)
    feeder.rounds(warm)
    assert health.state is UP
    return health, feeder


# --- construction ---------------------------------------------------------------


def test_kinds_default_to_policy_probes() -> None:
    assert PathHealth("p", FAST).kinds == ("icmp", "tcp", "http")
    assert PathHealth("p", MWAN3).kinds == ("icmp",)
    assert PathHealth("p", FAST, ["icmp"]).kinds == ("icmp",)


@pytest.mark.parametrize(
    ("kinds", "message"),
    [
        ((), "at least one"),
        (("icmp", "icmp"), "repeat"),
        (("icmp",), "reliability 2 exceeds the 1 probe kinds"),
    ],
)
def test_bad_kinds(kinds: tuple[str, ...], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        PathHealth("p", policy(reliability=2), kinds)


@pytest.mark.parametrize(
    ("profile", "min_samples"),
    [("fast", 10), ("pfsense-default", 10), ("mwan3-default", 5)],  # mwan3: 50 s / 10 s * 1 kind
)
def test_min_samples_fit_the_window(profile: str, min_samples: int) -> None:
    assert PathHealth("p", POLICY.profile(profile)).min_samples == min_samples


def test_unexpected_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="unexpected probe kinds"):
        PathHealth("p", MWAN3).round(1.0, results(1.0))


# --- UNKNOWN: the first round decides ---------------------------------------------


def test_initial_state() -> None:
    health = PathHealth("primary", FAST)
    assert health.state is UNKNOWN
    assert not health.is_up
    assert health.since is None
    assert health.up_since is None
    assert health.interval() == FAST.interval  # the first round decides alone: no burst


@pytest.mark.parametrize(
    ("answered", "rtt", "state", "reason"),
    [
        (KINDS, 0.010, UP, "first round: 3/3 kinds answered"),
        (("http",), 0.010, UP, "first round: 1/3 kinds answered"),
        ((), 0.010, DOWN, "first round: loss 100% (3/3 kinds silent)"),
        (KINDS, 0.140, UP, "first round: 3/3 kinds answered"),
    ],
)
def test_first_round_decides(
    answered: tuple[str, ...], rtt: float, state: PathState, reason: str
) -> None:
    health = PathHealth("primary", FAST)
    tr = health.round(5.0, results(5.0, answered, rtt))
    assert tr == Transition(5.0, "primary", UNKNOWN, state, reason, 5.0)
    assert health.since == 5.0
    assert health.up_since == (5.0 if state is UP else None)
    assert health.flaps == 0  # an initial DOWN is not a flap
    assert health.damping.penalty(5.0) == 0.0


def test_first_round_too_slow_for_fail_latency() -> None:
    health = PathHealth("primary", policy(timeout=2.0))
    tr = health.round(1.0, results(1.0, rtt=0.5))
    assert tr is not None
    assert tr.new is DOWN
    assert tr.reason == "first round: rtt 500ms >= 300ms"


def test_first_round_counts_late_answers_as_lost() -> None:
    # 200 ms is past the 150 ms timeout: the prober would have given up
    tr = PathHealth("primary", FAST).round(1.0, results(1.0, rtt=0.2))
    assert tr is not None
    assert tr.new is DOWN
    assert tr.reason == "first round: loss 100% (3/3 kinds silent)"


def test_a_kind_absent_from_a_round_was_not_probed() -> None:
    # slow kinds are probed every few rounds: a round without them is judged
    # on the kinds it holds, and nothing is counted lost for the others
    health = PathHealth("primary", policy(reliability=3))
    tr = health.round(1.0, {"icmp": Sample(1.0, True, 0.01), "tcp": Sample(1.0, True, 0.01)})
    assert tr is not None
    assert tr.new is UP
    assert health.stats(1.0).lost == 0
    assert health.stats(1.0).count == 2
    with pytest.raises(ValueError, match="at least one probe"):
        health.round(2.0, {})


# --- UP: fall -----------------------------------------------------------------------


def test_fall_after_consecutive_bad_rounds() -> None:
    health, feed = up_path()
    assert feed.round(()) is None
    first_bad = feed.t
    assert health.bad_rounds == 1
    assert health.interval() == FAST.suspect_interval
    assert feed.round(()) is None
    tr = feed.round(())
    assert tr == Transition(
        feed.t, "primary", UP, DOWN, "3 failed rounds: loss 100% (3/3 kinds silent)", first_bad
    )
    assert tr.confirm_s == pytest.approx(2 * feed.step)
    assert health.bad_rounds == 0
    assert health.flaps == 1
    assert health.up_since is None
    assert health.since == feed.t
    assert health.interval() == FAST.interval  # DOWN and not rising: stable


def test_good_round_resets_fall_count() -> None:
    health, feed = up_path()
    feed.rounds(2, ())
    assert feed.round() is None
    assert health.bad_rounds == 0
    assert health.interval() == FAST.interval
    feed.round(())
    suspected = feed.t
    feed.round(())
    tr = feed.round(())
    assert tr is not None
    assert tr.new is DOWN
    assert tr.suspected_at == suspected


@pytest.mark.parametrize(
    ("reliability", "answered", "bad", "reason"),
    [
        (1, ("icmp",), False, ""),
        (2, ("icmp",), True, "loss 66.7% (2/3 kinds silent), 2 must answer"),
        (2, ("icmp", "tcp"), False, ""),
        (3, ("icmp", "tcp"), True, "loss 33.3% (1/3 kinds silent), 3 must answer"),
    ],
)
def test_reliability(reliability: int, answered: tuple[str, ...], bad: bool, reason: str) -> None:
    p = policy(reliability=reliability, fall=1)
    health = PathHealth("primary", p)
    health.state = UP  # skip the first round, whose verdict is the same rule
    tr = health.round(1.0, results(1.0, answered))
    assert (tr is not None) is bad
    if tr is not None:
        assert tr.reason == f"1 failed round: {reason}"


def test_window_loss_fails_rounds_once_enough_samples() -> None:
    # one kind of three always silent: every round passes reliability 1, but the
    # window's loss is 33 % >= 20 %, judged from the 10th sample (4th round) on.
    health = PathHealth("primary", FAST)
    feed = Feeder(health)
    found = feed.rounds(6, ("icmp", "tcp"))
    assert [tr.new for tr in found] == [UP, DOWN]
    assert found[1].t == 6 * feed.step
    assert found[1].suspected_at == 4 * feed.step
    assert found[1].reason == "3 failed rounds: loss 33.3% >= 20% over 5s window"


def test_window_rtt_p50_fails_rounds() -> None:
    health, feed = up_path(policy(timeout=2.0), warm=4)
    found = feed.rounds(30, rtt=0.4)
    assert [tr.new for tr in found] == [DOWN]
    # p50 crosses once the slow samples are more than half the window
    assert found[0].reason == "3 failed rounds: rtt p50 400ms >= 300ms over 5s window"
    assert health.failed_rounds == 3


# --- DEGRADED ------------------------------------------------------------------------


def test_degraded_by_rtt_and_back() -> None:
    health = PathHealth("primary", FAST)
    feed = Feeder(health)
    found = feed.rounds(3, rtt=0.1)  # 9 samples: too few to judge the window
    assert [tr.new for tr in found] == [UP]
    found = feed.rounds(3, rtt=0.1)  # 4th, 5th, 6th round: window says degraded x3 (fall)
    assert found == [
        Transition(
            feed.t,
            "primary",
            UP,
            DEGRADED,
            "rtt p50 100ms >= 80ms over 5s window",
            4 * feed.step,
        )
    ]
    assert health.is_up
    assert health.up_since == feed.step
    assert health.interval() == FAST.interval  # not a failure: no fast probing
    # fast answers again: p50 drops once they are the majority, then `rise` rounds
    found = feed.rounds(12, rtt=0.01)
    assert [tr.new for tr in found] == [UP]
    assert found[0].reason == "loss 0% < 5% and rtt p50 10ms < 80ms over 5s window"
    assert health.up_since == feed.step  # no break: the hold-down clock keeps running


def test_degraded_by_loss() -> None:
    health = PathHealth("primary", FAST)
    feed = Feeder(health)
    # 40 clean rounds (120 samples), then 1 lost probe every round: loss climbs
    # past 5 % after several rounds and stays far below the 20 % failure line.
    feed.rounds(40)
    found = feed.rounds(12, ("icmp", "tcp"))
    assert [tr.new for tr in found] == [DEGRADED]
    assert found[0].reason.startswith("loss ")
    assert ">= 5% over 5s window" in found[0].reason


def test_degraded_needs_fall_rounds_and_clears_after_rise_rounds() -> None:
    # a 60 s window and a 10 % degraded line make the loss ratio easy to follow
    p = policy(window=60.0, degraded=FAST.degraded.model_copy(update={"loss": 0.10}))
    health = PathHealth("primary", p)
    feed = Feeder(health)
    feed.rounds(10)  # 0/30 lost
    plan = [("icmp",), ("icmp",), KINDS, KINDS]  # 2/33, 4/36 (11 %), 4/39 (10.3 %), 4/42
    assert [feed.round(answered) for answered in plan] == [None] * 4
    assert health.state is UP  # two rounds over the line are not `fall` (3) rounds
    feed.round(("icmp",))  # 6/45 = 13.3 %
    suspected = feed.t
    feed.round()  # 6/48 = 12.5 %
    tr = feed.round()  # 6/51 = 11.8 %: third round in a row
    assert tr is not None
    assert (tr.old, tr.new) == (UP, DEGRADED)
    assert tr.suspected_at == suspected
    assert tr.reason == "loss 11.8% >= 10% over 1m window"
    # 6/54, 6/57, 6/60 (exactly 10 %: still degraded), then below from 6/63 on
    assert feed.rounds(3) == []
    assert feed.rounds(4) == []  # four rounds below the line: `rise` is 5
    tr = feed.round()  # 6/75 = 8 %: fifth
    assert tr is not None
    assert (tr.old, tr.new) == (DEGRADED, UP)
    assert tr.suspected_at == feed.t - 4 * feed.step
    assert tr.reason == "loss 8% < 10% and rtt p50 10ms < 80ms over 1m window"


def test_bad_round_leaves_up_degraded_alone() -> None:
    # a hard cut raises window loss past the degraded line; the path still goes
    # straight UP -> DOWN, without a DEGRADED event on the way
    _health, feed = up_path(warm=40)
    found = feed.rounds(3, ())
    assert [(tr.old, tr.new) for tr in found] == [(UP, DOWN)]


# --- DOWN: rise ------------------------------------------------------------------------


def down_path(p: PolicyProfile = FAST) -> tuple[PathHealth, Feeder]:
    health = PathHealth("primary", p)
    feeder = Feeder(health)
    feeder.rounds(20)
    feeder.rounds(p.fall, ())
    assert health.state is DOWN
    return health, feeder


def test_rise_after_consecutive_good_rounds() -> None:
    health, feed = down_path()
    assert feed.rounds(4) == []
    assert health.good_rounds == 4
    assert health.interval() == FAST.suspect_interval
    feed.round(())  # a bad round resets the rise
    assert health.good_rounds == 0
    assert health.interval() == FAST.interval
    start = feed.t + feed.step
    found = feed.rounds(5)
    assert found == [Transition(feed.t, "primary", DOWN, UP, "5 good rounds", start)]
    assert health.up_since == feed.t
    assert health.interval() == FAST.interval
    # the window was cleared: the outage's losses do not fail the recovered path
    assert health.stats(feed.t).count == 0
    assert feed.rounds(20) == []


@pytest.mark.parametrize(
    ("rounds", "verdicts"),
    [
        # recover.loss 10 %, rise 5, 3 kinds: the streak's loss is what counts
        ([3, 3, 3, 2], [1, 2, 3, 4]),  # 1/12 = 8.3 % <= 10 %: still good
        ([3, 3, 3, 2, 2], [1, 2, 3, 4, 0]),  # 2/15 = 13.3 % > 10 %: reset
        ([2], [0]),  # 1/3 = 33 % > 10 %: a single lossy round is bad
        ([3, 2, 3], [1, 0, 1]),  # 1/6 = 16.7 %: reset, then a new streak starts clean
    ],
)
def test_recovery_loss_over_the_rising_streak(rounds: list[int], verdicts: list[int]) -> None:
    health, feed = down_path(policy(recover=FAST.recover.model_copy(update={"loss": 0.10})))
    got = []
    for answered in rounds:
        feed.round(KINDS[:answered])
        got.append(health.good_rounds)
    assert got == verdicts


def test_recovery_reason_for_loss() -> None:
    health, feed = down_path()
    feed.round(("icmp", "tcp"))
    assert health.verdict == "loss 33.3% > 5% over the last 1 round"
    feed.rounds(2)  # a new streak of two clean rounds...
    feed.round(("icmp", "tcp"))  # ...then one silent kind: 1 of 9 samples
    assert health.verdict == "loss 11.1% > 5% over the last 3 rounds"
    assert health.good_rounds == 0


def test_recovery_needs_every_rtt_under_recover_latency() -> None:
    health, feed = down_path(policy(timeout=1.0))
    feed.round(rtt=0.2)  # answered in time, but slower than recover.latency
    assert health.good_rounds == 0
    assert health.verdict == "rtt 200ms > 150ms"
    feed.round(rtt=0.150)  # recover.latency is inclusive
    assert health.good_rounds == 1


def test_recovery_needs_reliability() -> None:
    health, feed = down_path(policy(reliability=2))
    feed.round(("icmp",))
    assert health.good_rounds == 0
    assert health.verdict == "loss 66.7% (2/3 kinds silent), 2 must answer"


# --- link events ------------------------------------------------------------------------


def test_link_down_is_immediate() -> None:
    health, feed = up_path()
    feed.round(())  # a bad round in progress does not matter
    tr = health.link_down(12.5)
    assert tr == Transition(12.5, "primary", UP, DOWN, "link down: carrier lost", 12.5)
    assert tr.confirm_s == 0.0
    assert health.flaps == 1
    assert not health.carrier
    assert health.bad_rounds == 0
    assert health.link_down(12.6, "admin down") is None  # already DOWN


def test_link_down_blocks_rise_until_link_up() -> None:
    health, feed = up_path()
    health.link_down(feed.t, "interface lgwan0 down")
    feed.t = 20.0
    assert feed.rounds(10) == []  # answered probes (a stale route?) cannot raise it
    assert health.good_rounds == 0
    assert health.verdict == "link down"
    health.link_up(feed.t)
    assert health.carrier
    assert health.state is DOWN
    assert health.link_since == feed.t
    found = feed.rounds(5)
    assert [tr.new for tr in found] == [UP]


def test_link_down_from_unknown_and_then_first_round() -> None:
    health = PathHealth("primary", FAST)
    tr = health.link_down(1.0)
    assert tr is not None
    assert (tr.old, tr.new) == (UNKNOWN, DOWN)
    assert health.flaps == 0


def test_link_up_before_any_round_does_nothing() -> None:
    health = PathHealth("primary", FAST)
    health.link_up(1.0)
    assert health.state is UNKNOWN


def test_link_down_from_degraded() -> None:
    health = PathHealth("primary", FAST)
    feed = Feeder(health)
    feed.rounds(6, rtt=0.1)
    assert health.state is DEGRADED
    tr = health.link_down(feed.t)
    assert tr is not None
    assert (tr.old, tr.new) == (DEGRADED, DOWN)
    assert health.flaps == 1


# --- interval, damping, snapshot -------------------------------------------------------------


def test_interval_follows_suspicion() -> None:
    health = PathHealth("primary", FAST)
    feed = Feeder(health)
    seen = [health.interval()]
    for answered in [KINDS, (), (), (), KINDS, KINDS, KINDS, KINDS, KINDS, KINDS]:
        feed.round(answered)
        seen.append(health.interval())
    fast, slow = FAST.suspect_interval, FAST.interval
    # UNKNOWN, UP, bad 1, bad 2, DOWN, good 1..4, UP, UP
    assert seen == [slow, slow, fast, fast, slow, fast, fast, fast, fast, slow, slow]


def test_every_flap_penalizes() -> None:
    health, feed = up_path()
    for _ in range(3):
        feed.rounds(3, ())
        feed.rounds(5)
    assert health.flaps == 3
    assert health.damping.flaps == 3
    assert health.damped(feed.t)  # 3 flaps within a second: > 2000
    snap = health.snapshot(feed.t)
    assert snap.damped
    assert snap.penalty > 2000


def test_snapshot() -> None:
    health, feed = up_path(warm=12)
    feed.round(("icmp",))
    snap = health.snapshot(feed.t)
    assert snap.name == "primary"
    assert snap.state is UP
    assert snap.since == snap.up_since == feed.step
    assert snap.reason == "first round: 3/3 kinds answered"
    assert snap.verdict == "ok"
    assert snap.stats.count == 39
    assert snap.stats.lost == 2
    assert (snap.rounds, snap.bad_rounds, snap.good_rounds, snap.failed_rounds) == (13, 0, 0, 0)
    assert (snap.transitions, snap.flaps, snap.carrier, snap.damped) == (1, 0, True, False)
    assert snap.penalty == 0.0
    assert snap.interval == FAST.interval


def test_state_values_are_wire_friendly() -> None:
    assert [s.value for s in PathState] == ["unknown", "up", "degraded", "down"]
    assert f"{PathState.DOWN}" == "down"


# --- scenarios over simulated time ------------------------------------------------------------


def healthy(t: float, kind: str) -> float | None:
    return RTT[kind]


def cut_between(start: float, end: float = float("inf")) -> Prober:
    def prober(t: float, kind: str) -> float | None:
        return None if start <= t < end else RTT[kind]

    return prober


def simulate(
    profile: str, prober: Prober, until: float, schedule: Schedule = "cadence"
) -> Simulation:
    sim = Simulation(schedule=schedule)
    sim.add_path(PathHealth("primary", POLICY.profile(profile)), prober)
    sim.run(until)
    return sim


def first_start_after(sim: Simulation, t: float) -> float:
    return next(s for s in sim.log.round_starts["primary"] if s >= t)


def implied_cut_to_down(p: PolicyProfile, schedule: Schedule) -> float:
    """What the policy implies, from a cut at the start of a round (a probe sent
    after the cut is lost; the prober gives up after `timeout`)."""
    if schedule == "sequential":
        # each round lasts a timeout, then the (suspect) interval passes
        return p.fall * p.timeout + (p.fall - 1) * p.suspect_interval
    # cadence: rounds keep starting every `interval` until the first bad report
    # (one timeout after the cut), then every `suspect_interval` (but not before
    # an already planned start); DOWN when the fall-th of them reports.
    starts = [0.0]
    first_report = p.timeout
    while len(starts) < p.fall:
        last = starts[-1]
        if last + p.interval < first_report:
            starts.append(last + p.interval)
        elif last < first_report:
            starts.append(max(first_report, last + p.suspect_interval))
        else:
            starts.append(last + p.suspect_interval)
    return starts[-1] + p.timeout


@dataclass(frozen=True)
class CutFigure:
    profile: str
    schedule: Schedule
    expected: float  # seconds from a cut at a round start to DOWN
    rounds: int  # failed rounds in the DOWN reason
    kinds: int  # kinds in the decisive round


CUT_FIGURES = [
    # fast: the first lost echo waits its learned deadline (10 + 10 ms, + 10 ms
    # slack), then a round every 2 ms, each waiting twice as long after the
    # expiry; DOWN at the 14th silent round (random loss at the 35 % fail
    # line makes such a run in under 10^-6 of the rounds): sent at +54 ms,
    # judged at +114 (the silence has outlasted fail.latency by then).
    CutFigure("fast", "cadence", 0.114, 14, 1),
    # each round waits its deadline, backed off on every expiry: 30, 60, 120,
    # 240 ms, then the 250 ms timeout ten times, with 2 ms between rounds
    CutFigure("fast", "sequential", 2.976, 14, 1),
    CutFigure("mwan3-default", "cadence", 44.0, 5, 1),  # 5 rounds 10 s apart, + 4 s timeout
    CutFigure("mwan3-default", "sequential", 60.0, 5, 1),  # 5 x 4 s + 4 x 10 s
    CutFigure("pfsense-default", "cadence", 13.5, 24, 1),  # 24 rounds 0.5 s apart, + 2 s
    CutFigure("pfsense-default", "sequential", 59.5, 24, 1),  # 24 x 2 s + 23 x 0.5 s
]


@pytest.mark.parametrize("fig", CUT_FIGURES, ids=lambda f: f"{f.profile}-{f.schedule}")
def test_hard_cut_takes_what_the_policy_implies(fig: CutFigure) -> None:
    p = POLICY.profile(fig.profile)
    if p.min_timeout is None:  # a fixed timeout: the figure follows from the policy
        assert implied_cut_to_down(p, fig.schedule) == pytest.approx(fig.expected)
    # find a round start well after start-up, and cut exactly there
    probe = simulate(fig.profile, healthy, 200.0, fig.schedule)
    cut = first_start_after(probe, 100.0)
    sim = simulate(fig.profile, cut_between(cut), cut + 200.0, fig.schedule)
    down = sim.log.first("primary", DOWN)
    assert down is not None
    assert down.t - cut == pytest.approx(fig.expected, abs=0.002)
    assert down.reason == f"{fig.rounds} failed round{'s' if fig.rounds > 1 else ''}: " + (
        f"loss 100% ({fig.kinds}/{fig.kinds} kinds silent)"
    )
    # at any other phase, at most one interval later
    for offset in (0.3, 0.7):
        late_cut = cut + offset * (p.interval + max(RTT.values()))
        sim = simulate(fig.profile, cut_between(late_cut), late_cut + 200.0, fig.schedule)
        down = sim.log.first("primary", DOWN)
        assert down is not None
        assert fig.expected - 0.015 <= down.t - late_cut <= fig.expected + p.interval + 0.015


def test_first_round_decides_within_one_round() -> None:
    for profile in PROFILES:
        p = POLICY.profile(profile)
        sim = simulate(profile, healthy, 30.0)
        assert [tr.new for tr in sim.log.transitions] == [UP]
        assert sim.log.transitions[0].t == pytest.approx(max(RTT[k] for k in p.probes))
        sim = simulate(profile, cut_between(0.0), 30.0)
        assert sim.log.transitions[0].new is DOWN
        assert sim.log.transitions[0].t == pytest.approx(p.timeout)


def test_suspect_path_is_probed_faster() -> None:
    sim = simulate("fast", cut_between(10.0), 11.0)
    down = sim.log.first("primary", DOWN)
    assert down is not None
    starts = sim.log.round_starts["primary"]
    before = [b - a for a, b in itertools.pairwise(starts) if a > 1.0 and b < 9.9]
    assert before
    assert all(gap == pytest.approx(REAL_FAST.interval) for gap in before)
    # from the first bad round's report on (it was sent at suspected_at)
    suspect = [s for s in starts if down.suspected_at < s < down.t]
    gaps = [b - a for a, b in itertools.pairwise(suspect)]
    assert gaps
    assert all(gap == pytest.approx(REAL_FAST.suspect_interval) for gap in gaps)
    # once DOWN is confirmed and nothing rises, back to the normal interval
    after = [s for s in starts if s > down.t + 0.2]
    assert all(b - a == pytest.approx(REAL_FAST.interval) for a, b in itertools.pairwise(after))


def lossy(
    seed: int, loss: float, *, start: float = 0.0, jitter: float = 0.0, extra: float = 0.0
) -> Prober:
    rng = random.Random(seed)

    def prober(t: float, kind: str) -> float | None:
        if t < start:
            return RTT[kind]
        if rng.random() < loss:
            return None
        return RTT[kind] + extra + abs(rng.gauss(0.0, jitter))

    return prober


@pytest.mark.parametrize("seed", range(10))
def test_brownout_30_percent_fast_down_within_5s(seed: int) -> None:
    # 30 % loss each way loses half the probes: over fast's 35 % fail line
    sim = simulate("fast", lossy(seed, 0.51, start=30.0), 36.0)
    down = sim.log.first("primary", DOWN)
    assert down is not None
    assert down.t - 30.0 < 5.0
    assert "failed rounds: loss" in down.reason


@pytest.mark.parametrize("seed", range(3))
def test_brownout_30_percent_pfsense_down_once_its_minute_average_crosses(seed: int) -> None:
    # like dpinger, pfsense-default judges its 60 s averages (fall 24): 30 %
    # loss takes the average over 20 % after ~40 s, then 24 rounds confirm
    sim = simulate("pfsense-default", lossy(seed, 0.30, start=30.0), 120.0)
    down = sim.log.first("primary", DOWN)
    assert down is not None
    assert 40.0 < down.t - 30.0 < 60.0
    assert down.reason.startswith("24 failed rounds: ")


def test_brownout_30_percent_mwan3_cannot_be_down_within_5s() -> None:
    # mwan3 counts whole rounds only: 5 lost probes 10 s apart, at least 44 s
    assert implied_cut_to_down(MWAN3, "cadence") > 5.0
    sim = simulate("mwan3-default", lossy(0, 0.30, start=30.0), 35.0)
    assert sim.log.first("primary", DOWN) is None


@pytest.mark.parametrize("profile", ["fast", "mwan3-default", "pfsense-default"])
@pytest.mark.parametrize("seed", range(4))
def test_light_loss_and_jitter_never_fail(profile: str, seed: int) -> None:
    # 3 % random loss and 10 ms jitter for two minutes: no false failure
    sim = simulate(profile, lossy(seed, 0.03, jitter=0.010), 120.0)
    assert all(tr.new in (UP, DEGRADED) for tr in sim.log.transitions)
    if profile != "fast":  # under their degraded lines (100 % / 4 s, 10 % / 200 ms): plain UP
        assert [tr.new for tr in sim.log.transitions] == [UP]
    else:  # 3 % is above fast's 2 % degraded line: reported, but confirmed, not flickering
        assert len(sim.log.transitions) <= 1 + 40


def test_400ms_added_rtt_fast_down_within_5s() -> None:
    # 410 ms is past fast's 250 ms timeout and 90 ms fail latency: lost
    sim = simulate("fast", lossy(0, 0.0, start=30.0, extra=0.400), 40.0)
    down = sim.log.first("primary", DOWN)
    assert down is not None
    assert down.t - 30.0 < 0.5
    assert down.reason.endswith("failed rounds: loss 100% (1/1 kinds silent)")


def test_400ms_added_rtt_pfsense_degrades_but_stays_up() -> None:
    # 410 ms is under pfsense's 2 s timeout and 500 ms fail latency, over its
    # 200 ms degraded latency: once the slow samples are half the window (30 s),
    # 24 rounds (12 s) confirm DEGRADED
    sim = simulate("pfsense-default", lossy(0, 0.0, start=30.0, extra=0.400), 150.0)
    assert [tr.new for tr in sim.log.transitions] == [UP, DEGRADED]
    assert 41.0 < sim.log.transitions[1].t - 30.0 < 44.0


def test_600ms_added_rtt_pfsense_down_after_half_its_window() -> None:
    sim = simulate("pfsense-default", lossy(0, 0.0, start=30.0, extra=0.600), 150.0)
    down = sim.log.first("primary", DOWN)
    assert down is not None
    assert 41.0 < down.t - 30.0 < 44.0  # half the window, then 24 rounds
    assert down.reason.startswith("24 failed rounds: rtt p50 6")


def test_400ms_added_rtt_mwan3_stays_up() -> None:
    sim = simulate("mwan3-default", lossy(0, 0.0, start=30.0, extra=0.400), 200.0)
    assert [tr.new for tr in sim.log.transitions] == [UP]


@pytest.mark.parametrize("profile", PROFILES)
def test_recovery_needs_rise_good_rounds(profile: str) -> None:
    p = POLICY.profile(profile)
    restore = 300.0
    sim = simulate(profile, cut_between(100.0, restore), restore + 200.0)
    up = sim.log.first("primary", UP, after=restore)
    assert up is not None
    assert up.reason == f"{p.rise} good round{'s' if p.rise > 1 else ''}"
    # the first good round is the first started after the restore; then `rise`
    # rounds at least `suspect_interval` apart
    first_good = first_start_after(sim, restore)
    assert up.suspected_at >= first_good
    assert up.t >= first_good + (p.rise - 1) * p.suspect_interval
    assert up.t - restore <= p.timeout + p.interval + (p.rise - 1) * p.suspect_interval + 0.1
    assert [tr.new for tr in sim.log.of("primary")] == [UP, DOWN, UP]


# --- telling a cut from noise and from latency (fast's false_alarm) ------------------


def real_fast_up() -> tuple[PathHealth, float]:
    health = PathHealth("primary", REAL_FAST, ["icmp"])
    t = 0.0
    for _ in range(100):
        t += 0.05
        health.round(t, {"icmp": Sample(t, True, 0.012)}, done=t + 0.012)
    assert health.state is UP
    return health, t


def test_silent_rounds_needed_come_from_the_fail_line() -> None:
    # 0.35^13 ~ 1.2e-6 > 10^-6 >= 0.35^14 ~ 4.1e-7
    assert REAL_FAST.fail.loss == 0.35
    assert silent_rounds_needed(REAL_FAST) == 14
    assert PathHealth("p", REAL_FAST).silent_rounds_needed == 14
    lenient = policy(REAL_FAST, false_alarm=0.5)
    assert silent_rounds_needed(lenient) == REAL_FAST.fall  # never fewer than fall
    assert silent_rounds_needed(MWAN3) == MWAN3.fall  # no false_alarm: a plain fall


def test_a_clean_window_does_not_lower_the_bar() -> None:
    """Loss that has just begun is not in the window yet: a short silent run
    on a path that was clean a moment ago is still no cut."""
    health, t = real_fast_up()  # a full window of answered echoes
    start = t + 0.05
    for i in range(13):  # 13 silent rounds, 20 ms apart: long past fail.latency
        sent = start + 0.02 * i
        assert health.round(sent, {"icmp": Sample(sent, False)}, done=sent + 0.04) is None
    assert health.state is UP
    sent = start + 0.02 * 13
    tr = health.round(sent, {"icmp": Sample(sent, False)}, done=sent + 0.04)
    assert tr is not None
    assert tr.new is DOWN
    assert tr.reason.startswith("14 failed rounds")


@pytest.mark.parametrize("seed", range(100))
def test_random_loss_that_begins_is_no_cut(seed: int) -> None:
    # 10 % each way (19 % of the probes) begins after a clean window, as on a
    # line starting to degrade: the window still says ~0 % when it begins.
    onset = 5.0 + random.Random(seed).random()
    sim = simulate("fast", lossy(seed, 0.19, start=onset), onset + 4.0)
    assert sim.log.first("primary", DOWN) is None


def test_a_silence_shorter_than_fail_latency_is_not_a_cut() -> None:
    health, t = real_fast_up()
    start = t + 0.05
    for i in range(25):  # more silent rounds than needed, 2 ms apart, judged 30 ms after sending
        sent = start + 0.002 * i
        assert sent + 0.03 - start < REAL_FAST.fail.latency
        assert health.round(sent, {"icmp": Sample(sent, False)}, done=sent + 0.03) is None
    assert health.bad_rounds == 25 > health.silent_rounds_needed
    # one more, judged past fail.latency after the first: now it is a cut
    sent = start + 0.06
    tr = health.round(sent, {"icmp": Sample(sent, False)}, done=start + REAL_FAST.fail.latency)
    assert tr is not None
    assert tr.new is DOWN
    assert tr.suspected_at == start


def test_a_late_answer_ends_a_silent_run() -> None:
    health, t = real_fast_up()
    start = t + 0.05
    for i in range(4):
        sent = start + 0.005 * i
        assert health.round(sent, {"icmp": Sample(sent, False)}, done=sent + 0.03) is None
    health.late_answer(start, "icmp", 0.072)  # the first lost echo came back at 72 ms
    assert health.bad_rounds == 0
    assert "late answer" in health.verdict
    for i in range(4, 30):  # the silent run starts again from here: not a cut yet
        sent = start + 0.005 * i
        health.round(sent, {"icmp": Sample(sent, True, 0.072)}, done=sent + 0.072)
    assert health.state is UP


def test_a_late_answer_slower_than_fail_latency_does_not_save_the_path() -> None:
    health, t = real_fast_up()
    start = t + 0.05
    for i in range(4):
        sent = start + 0.005 * i
        health.round(sent, {"icmp": Sample(sent, False)}, done=sent + 0.03)
    health.late_answer(start, "icmp", 0.2)
    assert health.bad_rounds == 4


def test_a_late_answer_without_a_silent_run_changes_nothing() -> None:
    health, _ = real_fast_up()
    health.late_answer(1.0, "icmp", 0.05)
    assert health.state is UP
    assert health.verdict == "ok"


@pytest.mark.parametrize("seed", range(3))
def test_fast_19_percent_loss_for_two_minutes_is_no_cut(seed: int) -> None:
    # 10 % loss each way, both directions: 19 % of the probes are lost,
    # under fast's 35 % fail line: DEGRADED at most, never DOWN
    sim = simulate("fast", lossy(seed, 0.19), 120.0)
    assert all(tr.new is not DOWN for tr in sim.log.transitions)


def test_fast_latency_step_to_72ms_is_latency_not_loss() -> None:
    # 12 ms -> 72 ms: under degraded (80 ms) and fail (90 ms) latency
    sim = simulate("fast", lossy(0, 0.0, start=30.0, extra=0.062), 90.0)
    assert [tr.new for tr in sim.log.transitions] == [UP]


def test_fast_slow_kinds_are_probed_once_a_second() -> None:
    sent: list[tuple[float, str]] = []

    def counting(t: float, kind: str) -> float | None:
        sent.append((t, kind))
        return RTT[kind]

    sim = simulate("fast", counting, 10.0)
    assert sim.planners["primary"].in_flight <= 2
    per_kind = {k: sum(1 for t, kind in sent if kind == k and t >= 5.0) for k in KINDS}
    assert 4 <= per_kind["tcp"] <= 6
    assert 4 <= per_kind["http"] <= 6
    assert 95 <= per_kind["icmp"] <= 101


def test_two_lost_probes_in_a_small_window_are_not_degraded() -> None:
    # a standby path probed every 500 ms holds ~20 samples: two losses are
    # over fast's 5 % degraded line, but not beyond chance (the Wilson bound)
    health = PathHealth("backup", REAL_FAST, ["icmp"])
    t = 0.0
    for i in range(40):
        t += 0.25
        ok = i not in (30, 35)
        health.round(t, {"icmp": Sample(t, ok, 0.032 if ok else None)}, done=t)
    assert health.state is UP
    assert health.stats(t).loss_ratio >= REAL_FAST.degraded.loss
