"""PathSelector: which path carries the town's traffic.  Unit rules with
stand-in path views, then two-path scenarios over simulated time with the
real `fast` profile (hold-down 30 s, damping on)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

from netwatch.health import (
    Decision,
    HealthView,
    Hold,
    HoldRefused,
    PathHealth,
    PathSelector,
    PathState,
    Sample,
)
from netwatch.health.simulate import Prober, Simulation
from netwatch.topology import PolicyProfile, load

ROOT = Path(__file__).resolve().parent.parent
POLICY = load(ROOT / "topology.yaml").policy
FAST = POLICY.profile("fast")
UP, DOWN, DEGRADED, UNKNOWN = PathState.UP, PathState.DOWN, PathState.DEGRADED, PathState.UNKNOWN


@dataclass
class View:
    """A stand-in for PathHealth: only what the selector reads."""

    state: PathState = UNKNOWN
    up_since: float | None = None
    reason: str = "-"
    damped_until: float = float("-inf")
    since: float | None = None
    clean_since: float | None = None

    def damped(self, t: float) -> bool:
        return t < self.damped_until


def up(since: float = 0.0, **kw: float) -> View:
    return View(UP, since, "first round", **kw)


def down(reason: str = "3 failed rounds: loss 100% (3/3 kinds silent)") -> View:
    return View(DOWN, None, reason)


def test_pathhealth_is_a_healthview() -> None:
    view: HealthView = PathHealth("primary", FAST)
    assert view.state is UNKNOWN


@pytest.mark.parametrize(
    ("paths", "holddown", "message"),
    [([], 1.0, "at least one"), (["a", "a"], 1.0, "repeat"), (["a"], -1.0, "negative")],
)
def test_bad_arguments(paths: list[str], holddown: float, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        PathSelector(paths, holddown)


# --- the first choice ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("primary", "backup", "expected"),
    [
        (up(), up(), "primary"),
        (View(DEGRADED, 0.0), up(), "primary"),  # DEGRADED still carries traffic
        (down(), up(), "backup"),
        (up(), down(), "primary"),
        (up(), View(), "primary"),  # a less preferred UNKNOWN path is not waited for
        (up(damped_until=99.0), up(), "backup"),
        (up(damped_until=99.0), down(), "primary"),  # damped beats nothing
        (View(), up(), None),  # the primary is still UNKNOWN: wait one round
        (View(), View(), None),
        (down(), down(), None),
    ],
)
def test_initial_choice(primary: View, backup: View, expected: str | None) -> None:
    selector = PathSelector(["primary", "backup"], 30.0)
    decision = selector.decide(1.0, {"primary": primary, "backup": backup})
    if expected is None:
        assert decision is None
        assert selector.active is None
    else:
        assert decision is not None
        assert (decision.old, decision.new, decision.kind) == (None, expected, "initial")
        assert selector.active == expected


def test_initial_reasons() -> None:
    selector = PathSelector(["primary", "backup"], 30.0)
    decision = selector.decide(1.0, {"primary": up(damped_until=9.0), "backup": down()})
    assert decision == Decision(
        1.0,
        None,
        "primary",
        "primary is the best path up (damped, but no undamped path is up)",
        "initial",
    )


def test_start_up_is_not_an_alarm_but_all_down_is() -> None:
    selector = PathSelector(["primary", "backup"], 30.0)
    assert selector.decide(0.0, {"primary": View(), "backup": View()}) is None
    assert not selector.all_down
    assert selector.decide(0.2, {"primary": down(), "backup": View()}) is None
    assert not selector.all_down  # the backup, not probed yet, may work
    assert selector.decide(0.3, {"primary": down(), "backup": down()}) is None
    assert selector.all_down
    assert selector.all_down_since == 0.3
    assert selector.decide(0.4, {"primary": down(), "backup": down()}) is None
    assert selector.all_down_since == 0.3  # the alarm keeps its start
    decision = selector.decide(5.0, {"primary": down(), "backup": up(5.0)})
    assert decision is not None
    assert decision.new == "backup"
    assert not selector.all_down
    assert selector.all_down_since is None


# --- failover, failback, switch ------------------------------------------------------------


def started(
    active: str = "primary", paths: tuple[str, ...] = ("primary", "backup")
) -> PathSelector:
    selector = PathSelector(list(paths), 30.0)
    selector.active = active
    return selector


def test_failover_is_immediate() -> None:
    selector = started()
    decision = selector.decide(10.0, {"primary": down(), "backup": up(0.0)})
    assert decision == Decision(
        10.0,
        "primary",
        "backup",
        "primary is down: 3 failed rounds: loss 100% (3/3 kinds silent); backup is up",
        "failover",
    )


def test_failover_ignores_hold_down_even_towards_a_better_path() -> None:
    # on the backup, which dies, while the primary is back but not yet held
    selector = started("backup")
    decision = selector.decide(
        10.0, {"primary": up(9.0), "backup": down("link down: carrier lost")}
    )
    assert decision is not None
    assert (decision.new, decision.kind) == ("primary", "failover")


def test_failover_to_a_damped_path_rather_than_none() -> None:
    selector = started()
    decision = selector.decide(10.0, {"primary": down(), "backup": up(0.0, damped_until=50.0)})
    assert decision is not None
    assert decision.new == "backup"
    assert decision.reason.endswith("(damped, but no undamped path is up)")


def test_active_down_with_nothing_up_stays() -> None:
    selector = started()
    assert selector.decide(10.0, {"primary": down(), "backup": down()}) is None
    assert selector.active == "primary"
    assert selector.all_down


@pytest.mark.parametrize(
    ("t", "expected"),
    [(129.875, None), (130.0, "failback"), (500.0, "failback")],
)
def test_failback_waits_for_hold_down(t: float, expected: str | None) -> None:
    selector = started("backup")
    decision = selector.decide(t, {"primary": up(100.0), "backup": up(0.0)})
    if expected is None:
        assert decision is None
        assert selector.active == "backup"
    else:
        assert decision is not None
        assert decision.kind == expected
        assert decision.new == "primary"


def test_failback_reason() -> None:
    selector = started("backup")
    decision = selector.decide(130.5, {"primary": up(100.0), "backup": up(0.0)})
    assert decision is not None
    assert decision.reason == "primary up for 30.5s (hold-down 30s)"


def test_zero_hold_down_fails_back_at_once() -> None:
    selector = PathSelector(["primary", "backup"], 0.0)
    selector.active = "backup"
    decision = selector.decide(7.0, {"primary": up(7.0), "backup": up(0.0)})
    assert decision is not None
    assert decision.kind == "failback"


def test_no_failback_to_a_damped_path() -> None:
    selector = started("backup")
    views = {"primary": up(0.0, damped_until=400.0), "backup": up(0.0)}
    assert selector.decide(399.0, views) is None
    decision = selector.decide(400.0, views)
    assert decision is not None
    assert decision.kind == "failback"


def test_switch_off_a_damped_working_path() -> None:
    # on the primary, damped (taken because nothing else was up); the backup returns
    selector = started("primary")
    views = {"primary": up(0.0, damped_until=400.0), "backup": up(50.0)}
    decision = selector.decide(50.0, views)
    assert decision == Decision(
        50.0, "primary", "backup", "primary is damped (flapping); backup is up", "switch"
    )


def test_no_switch_to_a_better_path_before_its_hold_down() -> None:
    paths = ("primary", "second", "third")
    selector = started("second", paths)
    views = {"primary": up(100.0), "second": up(0.0, damped_until=999.0), "third": down()}
    assert selector.decide(110.0, views) is None  # primary not held, nothing worse up
    decision = selector.decide(130.0, views)
    assert decision is not None
    assert (decision.new, decision.kind) == ("primary", "failback")


def test_failback_to_the_best_held_path() -> None:
    paths = ("primary", "second", "third")
    selector = started("third", paths)
    views = {"primary": up(100.0), "second": up(50.0), "third": up(0.0)}
    decision = selector.decide(85.0, views)  # second held (35 s), primary not (-15 s)
    assert decision is not None
    assert (decision.new, decision.kind) == ("second", "failback")
    assert selector.decide(129.0, views) is None
    decision = selector.decide(130.0, views)
    assert decision is not None
    assert (decision.old, decision.new) == ("second", "primary")


def test_degraded_keeps_the_hold_down_clock() -> None:
    selector = started("backup")
    views = {"primary": View(DEGRADED, 100.0), "backup": up(0.0)}
    decision = selector.decide(130.0, views)
    assert decision is not None
    assert decision.new == "primary"


def test_stable_means_no_decision() -> None:
    selector = started()
    views: Mapping[str, View] = {"primary": up(), "backup": up()}
    assert all(selector.decide(float(t), views) is None for t in range(100))


# --- scenarios over simulated time (fast profile) ------------------------------------------------

RTT = {"icmp": 0.010, "tcp": 0.011, "http": 0.014}


def steady(extra: float = 0.0) -> Prober:
    def prober(t: float, kind: str) -> float | None:
        return RTT[kind] + extra

    return prober


def flapping(start: float, end: float, period: float) -> Prober:
    """Cut at `start`, restored `period` later, cut again... until `end`."""

    def prober(t: float, kind: str) -> float | None:
        if start <= t < end and int((t - start) // period) % 2 == 0:
            return None
        return RTT[kind]

    return prober


def outages(*spans: tuple[float, float]) -> Prober:
    def prober(t: float, kind: str) -> float | None:
        return None if any(a <= t < b for a, b in spans) else RTT[kind]

    return prober


def town(
    primary: Prober, backup: Prober, p: PolicyProfile = FAST
) -> tuple[Simulation, PathSelector]:
    selector = PathSelector(["primary", "backup"], p.failback_holddown)
    sim = Simulation(selector)
    sim.add_path(PathHealth("primary", p), primary)
    sim.add_path(PathHealth("backup", p), backup, start=0.05)
    return sim, selector


def kinds(decisions: list[Decision]) -> list[tuple[str, str]]:
    return [(d.kind, d.new) for d in decisions]


def test_hard_cut_fails_over_and_fails_back_after_hold_down() -> None:
    sim, _ = town(outages((20.0, 25.0)), steady(0.02))
    log = sim.run(120.0)
    assert kinds(log.decisions) == [
        ("initial", "primary"),
        ("failover", "backup"),
        ("failback", "primary"),
    ]
    failover, failback = log.decisions[1], log.decisions[2]
    down = log.first("primary", DOWN)
    back = log.first("primary", UP, after=25.0)
    assert down is not None
    assert back is not None
    assert failover.t == down.t
    assert failover.t - 20.0 < 0.5
    assert failback.t - back.t == pytest.approx(30.0, abs=FAST.interval + 0.02)


def test_flapping_primary_changes_the_active_path_at_most_twice() -> None:
    # primary cut and restored every 2 s for 60 s, then stable
    sim, _ = town(flapping(10.0, 70.0, 2.0), steady(0.02))
    health = sim.health["primary"]
    damped_at: list[float] = []
    for t in range(11, 500):
        sim.run(float(t))
        if health.damped(float(t)):
            damped_at.append(float(t))
    log = sim.log
    assert kinds(log.decisions) == [
        ("initial", "primary"),
        ("failover", "backup"),
        ("failback", "primary"),
    ]
    assert health.flaps == 15  # it did flap: 15 times UP -> DOWN
    assert len(log.of("primary")) == 31
    # damping caught it: suppressed from the third flap on, long after it stopped
    assert damped_at
    assert damped_at[0] < 20.0
    reuse = health.damping.reuse_at()
    assert reuse is not None
    assert reuse > 70.0 + FAST.failback_holddown
    last_up = health.up_since
    assert last_up is not None
    assert last_up < 70.0
    failback = log.decisions[2]
    # failback at the first round after the suppression ended (the later of the
    # two conditions), not after the hold-down alone
    assert reuse <= failback.t < reuse + FAST.interval + 0.02
    assert failback.reason.startswith("primary up for 2")  # ~229 s without a break
    assert failback.reason.endswith("s (hold-down 30s)")


def test_flapping_without_damping_relies_on_hold_down() -> None:
    no_damping = FAST.model_copy(update={"damping": FAST.damping.model_copy(update={"penalty": 0})})
    sim, _ = town(flapping(10.0, 70.0, 2.0), steady(0.02), no_damping)
    log = sim.run(200.0)
    assert kinds(log.decisions) == [
        ("initial", "primary"),
        ("failover", "backup"),
        ("failback", "primary"),
    ]
    last_up = sim.health["primary"].up_since
    assert last_up is not None
    assert log.decisions[2].t - last_up == pytest.approx(30.0, abs=FAST.interval + 0.02)


def test_hold_down_respected_to_the_round() -> None:
    # rounds fed by hand every 0.125 s (exact in binary): the failback comes at
    # the first round whose time is >= up_since + 30 s, not one round earlier
    p = FAST
    primary, backup = PathHealth("primary", p), PathHealth("backup", p)
    health = {"primary": primary, "backup": backup}
    selector = PathSelector(["primary", "backup"], p.failback_holddown)

    def feed(t: float, primary_ok: bool) -> Decision | None:
        kinds_ = p.probes
        primary.round(t, {k: Sample(t, primary_ok, 0.01 if primary_ok else None) for k in kinds_})
        backup.round(t, {k: Sample(t, True, 0.03) for k in kinds_})
        return selector.decide(t, health)

    decisions = []
    step = 0.125
    for i in range(1, 1000):
        t = i * step
        decision = feed(t, primary_ok=not (10.0 <= t < 12.0))
        if decision is not None:
            decisions.append(decision)
    assert kinds(decisions) == [
        ("initial", "primary"),
        ("failover", "backup"),
        ("failback", "primary"),
    ]
    since = primary.up_since
    assert since is not None
    assert decisions[2].t == since + 30.0  # exactly: 30 s is a whole number of rounds
    # replay: one round before the failback, the selector said no
    assert decisions[2].t - step - since < 30.0


def test_both_paths_down_stays_and_alarms_then_backup_first() -> None:
    # the backup dies first (no decision: the active primary works), then the primary
    sim, selector = town(outages((20.0, 60.0)), outages((15.0, 40.0)))
    sim.run(30.0)
    assert kinds(sim.log.decisions) == [("initial", "primary")]  # no churn towards a dead backup
    assert selector.active == "primary"
    assert selector.all_down
    assert selector.all_down_since is not None
    assert 20.0 < selector.all_down_since < 21.0
    sim.run(45.0)
    assert kinds(sim.log.decisions)[1:] == [("failover", "backup")]
    assert not selector.all_down
    assert 40.0 < sim.log.decisions[1].t < 41.0


def test_both_paths_down_then_primary_first_needs_no_decision() -> None:
    sim, selector = town(outages((20.0, 40.0)), outages((15.0, 60.0)))
    sim.run(30.0)
    assert selector.all_down
    sim.run(100.0)
    assert kinds(sim.log.decisions) == [("initial", "primary")]  # never left it
    assert not selector.all_down


def test_link_down_fails_over_at_the_event() -> None:
    sim, _ = town(steady(), steady(0.02))
    sim.link_down(20.0, "primary", "carrier lost")
    sim.link_up(30.0, "primary")
    log = sim.run(100.0)
    tr = log.first("primary", DOWN)
    assert tr is not None
    assert (tr.t, tr.suspected_at, tr.reason) == (20.0, 20.0, "link down: carrier lost")
    assert kinds(log.decisions) == [
        ("initial", "primary"),
        ("failover", "backup"),
        ("failback", "primary"),
    ]
    assert log.decisions[1].t == 20.0
    back = log.first("primary", UP, after=20.0)
    assert back is not None
    assert 30.0 < back.t < 30.5
    assert log.decisions[2].t == pytest.approx(back.t + 30.0, abs=FAST.interval + 0.02)


def test_restart_with_primary_down_starts_on_backup() -> None:
    sim, selector = town(outages((0.0, 1e9)), steady(0.02))
    log = sim.run(1.0)
    assert kinds(log.decisions) == [("initial", "backup")]
    # the decision waited for the primary's first round (its 150 ms timeout)
    assert log.decisions[0].t == pytest.approx(FAST.timeout)
    assert selector.active == "backup"


def test_adopted_active_path_is_not_left_before_its_first_round() -> None:
    # An agent restarting on the backup adopts the routes it finds; the
    # primary answering first must not pull traffic back without hold-down,
    # and an unprobed active path is unknown, not down.
    selector = PathSelector(["primary", "backup"], 30.0)
    selector.active = "backup"
    assert selector.decide(1.0, {"primary": up(1.0), "backup": View()}) is None
    assert selector.decide(1.1, {"primary": up(1.0), "backup": up(1.1)}) is None
    decision = selector.decide(31.0, {"primary": up(1.0), "backup": up(1.1)})
    assert decision is not None
    assert (decision.old, decision.new, decision.kind) == ("backup", "primary", "failback")
    # ...but an adopted path that turns out dead is left at once
    selector = PathSelector(["primary", "backup"], 30.0)
    selector.active = "backup"
    decision = selector.decide(1.0, {"primary": up(1.0), "backup": down()})
    assert decision is not None
    assert (decision.new, decision.kind) == ("primary", "failover")


# --- a degraded primary (degraded_after) ---------------------------------------------------


def degraded(since: float) -> View:
    return View(DEGRADED, 0.0, "loss 8% >= 5% over 5s window", since=since)


def clean(since: float) -> View:
    return View(UP, since, "first round", since=since, clean_since=since)


def test_a_degraded_primary_stays_active_without_degraded_after() -> None:
    sel = PathSelector(["primary", "backup"], 30.0)
    sel.active = "primary"
    assert sel.decide(1000.0, {"primary": degraded(0.0), "backup": clean(0.0)}) is None


def test_a_primary_degraded_too_long_moves_to_a_clean_backup() -> None:
    sel = PathSelector(["primary", "backup"], 30.0, degraded_after=120.0)
    sel.active = "primary"
    health = {"primary": degraded(100.0), "backup": clean(0.0)}
    assert sel.decide(219.0, health) is None
    decision = sel.decide(220.0, health)
    assert decision is not None
    assert (decision.new, decision.kind) == ("backup", "switch")
    assert "primary degraded for 2m" in decision.reason


def test_no_move_when_the_backup_is_degraded_too() -> None:
    sel = PathSelector(["primary", "backup"], 30.0, degraded_after=120.0)
    sel.active = "primary"
    assert sel.decide(500.0, {"primary": degraded(0.0), "backup": degraded(0.0)}) is None


def test_failback_after_a_degraded_move_needs_the_primary_clean_for_the_hold_down() -> None:
    sel = PathSelector(["primary", "backup"], 30.0, degraded_after=120.0)
    sel.active = "backup"
    # UP for long, but DEGRADED until 300: not clean, so no failback yet
    still = View(DEGRADED, 0.0, "-", since=0.0, clean_since=None)
    assert sel.decide(310.0, {"primary": still, "backup": clean(0.0)}) is None
    back = View(UP, 0.0, "-", since=300.0, clean_since=300.0)
    assert sel.decide(329.0, {"primary": back, "backup": clean(0.0)}) is None
    decision = sel.decide(330.0, {"primary": back, "backup": clean(0.0)})
    assert decision is not None
    assert (decision.new, decision.kind) == ("primary", "failback")


def test_pathhealth_tracks_clean_since() -> None:
    p = FAST.model_copy(update={"degraded_failover": 60.0})
    health = PathHealth("primary", p, ["icmp"])
    health.round(0.0, {"icmp": Sample(0.0, True, 0.01)})
    assert health.clean_since == 0.0
    penalty = health.damping.penalty(0.0)
    t = 0.0
    for _ in range(200):  # 85 ms: DEGRADED (80 ms), under fail (90 ms)
        t += 0.05
        health.round(t, {"icmp": Sample(t, True, 0.085)})
    assert health.state is DEGRADED
    assert health.clean_since is None
    assert health.damping.penalty(t) > penalty  # a degraded episode counts as a flap


# --- maintenance holds -------------------------------------------------------------------


def _held(until: float = 100.0, path: str = "backup") -> Hold:
    return Hold(path, since=0.0, until=until, reason="router work", by="test")


def test_a_hold_moves_the_traffic_at_once_and_stops_failback() -> None:
    s = PathSelector(["primary", "backup"], holddown_s=30.0)
    s.active = "primary"
    health = {"primary": up(), "backup": up()}
    s.place_hold(_held(), health)
    d = s.decide(1.0, health)
    assert d == Decision(1.0, "primary", "backup", "held on backup: router work", "hold")
    # The primary has been up far longer than the hold-down: no failback while held.
    assert s.decide(90.0, health) is None
    assert s.check_hold(90.0, health) is None


def test_a_hold_ends_when_its_time_is_up_and_the_rules_take_over() -> None:
    s = PathSelector(["primary", "backup"], holddown_s=30.0)
    s.active = "backup"
    health = {"primary": up(), "backup": up()}
    s.place_hold(_held(until=50.0), health)
    assert s.check_hold(49.9, health) is None
    ended = s.check_hold(50.0, health)
    assert ended is not None
    assert ended[1] == "expired after 50s"
    assert s.hold is None
    d = s.decide(50.0, health)
    assert d is not None
    assert (d.new, d.kind) == ("primary", "failback")


def test_a_hold_ends_when_its_path_fails_and_the_town_fails_over() -> None:
    s = PathSelector(["primary", "backup"], holddown_s=30.0)
    s.active = "backup"
    health: dict[str, View] = {"primary": up(), "backup": up()}
    s.place_hold(_held(), health)
    health["backup"] = down("link down")
    ended = s.check_hold(5.0, health)
    assert ended is not None
    assert ended[1] == "backup is down: link down"
    d = s.decide(5.0, health)
    assert d is not None
    assert (d.new, d.kind) == ("primary", "failover")


def test_a_hold_on_an_unknown_path_waits_rather_than_ending() -> None:
    s = PathSelector(["primary", "backup"], holddown_s=30.0)
    s.active = "primary"
    health = {"primary": up(), "backup": up()}
    s.place_hold(_held(), health)
    health["backup"] = View(UNKNOWN)
    assert s.check_hold(1.0, health) is None
    assert s.decide(1.0, health) is None  # held, but not moved onto an unjudged path


@pytest.mark.parametrize(
    ("hold", "message"),
    [
        (_held(path="satellite"), "no path 'satellite'"),
        (_held(path="primary"), "primary is down: a hold needs a working path"),
        (_held(until=0.0), "a hold needs a time"),
    ],
)
def test_a_hold_that_cannot_stand_is_refused(hold: Hold, message: str) -> None:
    s = PathSelector(["primary", "backup"], holddown_s=30.0)
    with pytest.raises(HoldRefused, match=message):
        s.place_hold(hold, {"primary": down(), "backup": up()})
    assert s.hold is None


def test_a_hold_of_a_damped_path_still_holds() -> None:
    s = PathSelector(["primary", "backup"], holddown_s=30.0)
    s.active = "primary"
    health = {"primary": up(), "backup": up(damped_until=1e9)}
    s.place_hold(_held(), health)
    d = s.decide(1.0, health)
    assert d is not None
    assert d.new == "backup"
    assert s.release_hold() is not None
    assert s.hold is None
