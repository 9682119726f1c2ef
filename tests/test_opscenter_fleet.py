"""The fleet's state: pure, driven by messages and a clock."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest
from opscenter_data import T0, drill, event, hold, later, metrics, online, state

from netwatch.health.state import PathState
from netwatch.messages import DrillStatus, EventType, Message, outcomes_json
from netwatch.opscenter.drills import LOCK_STALE_AFTER_S, DrillPhase, NextDrills
from netwatch.opscenter.fleet import Fleet, Status
from netwatch.topology import Topology, load

ROOT = Path(__file__).resolve().parent.parent
TOPO = load(ROOT / "topology.yaml")
NOW = 1_000_000.0


@pytest.fixture
def fleet() -> Fleet:
    return Fleet(TOPO, stale_after=20.0)


def status(fleet: Fleet, town: str = "nishiki", now: float = NOW) -> Status:
    return fleet.towns[town].status(now, fleet.stale_after)


def test_towns_are_in_cutover_order(fleet: Fleet) -> None:
    assert [v.id for v in fleet] == ["nishiki", "takaharu", "tsuno", "kawaminami"]


def test_a_town_never_heard_from_is_unknown(fleet: Fleet) -> None:
    assert status(fleet) is Status.UNKNOWN


def test_a_state_on_the_primary_is_ok_and_on_the_backup_is_backup(fleet: Fleet) -> None:
    fleet.apply(state(), NOW)
    assert status(fleet) is Status.OK
    fleet.apply(state(active="backup", at=later(1), primary=PathState.DOWN), NOW + 1)
    assert status(fleet, now=NOW + 1) is Status.BACKUP


def test_a_degraded_primary_in_use_is_degraded(fleet: Fleet) -> None:
    fleet.apply(state(primary=PathState.DEGRADED), NOW)
    assert status(fleet) is Status.DEGRADED


def test_all_down_beats_backup(fleet: Fleet) -> None:
    fleet.apply(state(active="backup", all_down=True), NOW)
    assert status(fleet) is Status.ALL_DOWN


def test_silence_longer_than_stale_after_is_unknown_not_the_last_good_state(fleet: Fleet) -> None:
    fleet.apply(state(), NOW)
    assert status(fleet, now=NOW + 20.0) is Status.OK
    assert status(fleet, now=NOW + 20.1) is Status.UNKNOWN
    fleet.apply(metrics(at=later(25)), NOW + 25)  # any message counts as heard
    assert status(fleet, now=NOW + 25) is Status.OK


def test_a_retained_message_is_as_old_as_its_timestamp(fleet: Fleet) -> None:
    old = state(at=T0)
    fleet.apply(old, T0.timestamp() + 3600, retained=True)  # delivered an hour later
    assert status(fleet, now=T0.timestamp() + 3600) is Status.UNKNOWN
    fleet.apply(metrics(at=later(3600)), T0.timestamp() + 3600)
    assert status(fleet, now=T0.timestamp() + 3600) is Status.OK


def test_the_last_will_makes_a_town_offline_then_unknown_until_it_is_back(fleet: Fleet) -> None:
    fleet.apply(online(), NOW)
    fleet.apply(state(), NOW)
    fleet.apply(online(up=False, at=later(1)), NOW + 1)
    assert status(fleet, now=NOW + 1) is Status.OFFLINE
    assert status(fleet, now=NOW + 21.5) is Status.UNKNOWN  # and then silence
    fleet.apply(online(at=later(2)), NOW + 2)
    assert status(fleet, now=NOW + 2) is Status.OK


def test_a_redelivered_event_counts_once(fleet: Fleet) -> None:
    e = event()
    assert fleet.apply(e, NOW)
    assert not fleet.apply(e, NOW + 1)
    assert fleet.towns["nishiki"].failovers[("primary", "backup", "failover")] == 1


def test_a_towns_moves_and_route_events_are_counted_from_zero(fleet: Fleet) -> None:
    view = fleet.towns["takaharu"]
    assert view.failovers == {
        ("primary", "backup", "failover"): 0,
        ("backup", "primary", "failback"): 0,
    }
    assert view.route_events == {"route_reinstalled": 0, "route_error": 0}


def test_failovers_are_counted_by_from_to_and_kind(fleet: Fleet) -> None:
    fleet.apply(event(), NOW)
    fleet.apply(event(EventType.FAILBACK, to="primary", frm="backup", details_kind="failback"), NOW)
    fleet.apply(event(at=later(9)), NOW)
    assert fleet.towns["nishiki"].failovers == {
        ("primary", "backup", "failover"): 2,
        ("backup", "primary", "failback"): 1,
    }


def test_the_last_failover_takes_its_outage_from_routes_applied(fleet: Fleet) -> None:
    fleet.apply(event(duration=0.1), NOW)
    assert fleet.towns["nishiki"].last_failover.outage_s is None  # type: ignore[union-attr]
    fleet.apply(event(EventType.ROUTES_APPLIED, at=later(0.03), duration=0.131), NOW)
    last = fleet.towns["nishiki"].last_failover
    assert last is not None
    assert (last.from_path, last.to_path, last.kind, last.outage_s) == (
        "primary",
        "backup",
        "failover",
        0.131,
    )


def test_time_on_backup_runs_from_the_failover_and_stops_on_the_primary(fleet: Fleet) -> None:
    fleet.apply(state(), NOW)
    fleet.apply(event(at=later(10)), NOW + 10)
    fleet.apply(state(active="backup", at=later(11)), NOW + 11)
    view = fleet.towns["nishiki"]
    assert view.backup_since == later(10)
    assert view.on_backup_s(later(70)) == pytest.approx(60.0)
    fleet.apply(state(active="primary", at=later(80)), NOW + 80)
    assert view.on_backup_s(later(90)) is None


def test_a_new_episode_on_the_backup_does_not_count_from_an_old_failback(fleet: Fleet) -> None:
    fleet.apply(event(at=later(10)), NOW)
    fleet.apply(event(EventType.FAILBACK, at=later(50), frm="backup", to="primary"), NOW)
    fleet.apply(state(active="primary", at=later(51)), NOW + 51)
    # The state of a new failover arrives before its event.
    fleet.apply(state(active="backup", at=later(90)), NOW + 90)
    assert fleet.towns["nishiki"].backup_since == later(90)  # the backup path's `since`


def test_an_older_retained_state_does_not_undo_a_newer_one(fleet: Fleet) -> None:
    fleet.apply(state(active="backup", at=later(5)), NOW)
    assert not fleet.apply(state(active="primary", at=T0), NOW + 1)
    assert fleet.towns["nishiki"].active_path == "backup"


def test_metrics_update_the_figures_and_keep_the_state_messages_since(fleet: Fleet) -> None:
    fleet.apply(state(), NOW)
    fleet.apply(metrics(rtt=0.05, at=later(5)), NOW + 5)
    primary = fleet.towns["nishiki"].paths["primary"]
    assert primary.rtt_p50_s == 0.05
    assert primary.since == T0


def test_metrics_carry_the_agents_probe_outcomes(fleet: Fleet) -> None:
    counts = {("primary", "icmp", "ok"): 40, ("primary", "icmp", "timeout"): 2}
    fleet.apply(metrics(probes={"rounds": 42, "outcomes": outcomes_json(counts)}), NOW)
    assert fleet.towns["nishiki"].probe_results() == {k: float(n) for k, n in counts.items()}


def test_route_events_are_counted_and_a_conflict_is_held_until_cleared(fleet: Fleet) -> None:
    view = fleet.towns["nishiki"]
    assert view.route_conflict is None  # never reported: no series
    fleet.apply(event(EventType.ROUTE_REINSTALLED, to="primary"), NOW)
    fleet.apply(event(EventType.ROUTE_REINSTALLED, to="primary", at=later(1)), NOW)
    fleet.apply(event(EventType.ROUTE_CONFLICT, to="primary", at=later(2)), NOW)
    assert view.route_events == {"route_reinstalled": 2, "route_conflict": 1, "route_error": 0}
    assert view.route_conflict is True
    fleet.apply(event(EventType.ROUTE_CONFLICT_CLEARED, to="primary", at=later(3)), NOW)
    assert view.route_conflict is False
    assert sum(view.failovers.values()) == 0  # none of them moved the traffic


def test_an_acceptance_result_is_kept_and_a_drills_event_is_left_to_its_message(
    fleet: Fleet,
) -> None:
    acceptance = event(EventType.DRILL_RESULT, details_kind="acceptance", at=later(1))
    fleet.apply(event(EventType.DRILL_RESULT, details_kind="drill"), NOW)
    fleet.apply(acceptance, NOW)
    view = fleet.towns["nishiki"]
    assert view.acceptance == acceptance
    assert view.drill is None  # a drill's result is its retained drill message


def test_the_last_drill_is_kept_and_an_older_one_arriving_late_is_ignored(fleet: Fleet) -> None:
    view = fleet.towns["nishiki"]
    running = drill(DrillStatus.RUNNING, started=later(3600))
    assert fleet.apply(running, NOW)
    assert view.drill == running
    assert view.drill_phase(later(3660)) is DrillPhase.RUNNING
    passed = drill(started=later(3600), drill_id=running.drill_id)
    assert fleet.apply(passed, NOW + 600)
    assert view.drill == view.finished_drill == passed
    assert view.drill_passed_at == passed.ended
    # Yesterday's failed drill, redelivered late, changes nothing.
    assert not fleet.apply(drill(DrillStatus.FAILED, started=T0), NOW + 601)
    assert not fleet.apply(passed, NOW + 602)
    assert view.drill == passed
    assert view.drill_phase(later(7200)) is DrillPhase.PASSED


def test_a_running_drill_keeps_the_last_result_and_a_failure_keeps_the_last_pass(
    fleet: Fleet,
) -> None:
    view = fleet.towns["nishiki"]
    first = drill(started=T0)
    fleet.apply(first, NOW)
    fleet.apply(drill(DrillStatus.RUNNING, started=later(86400)), NOW)
    assert view.finished_drill == first
    failed = drill(DrillStatus.FAILED, started=later(86400))
    fleet.apply(failed, NOW)
    assert view.finished_drill == failed
    assert view.drill_passed_at == first.ended


def test_a_running_drill_too_old_to_believe_is_a_stale_lock(fleet: Fleet) -> None:
    fleet.apply(drill(DrillStatus.RUNNING, started=T0), NOW)
    view = fleet.towns["nishiki"]
    assert view.drill_phase(later(LOCK_STALE_AFTER_S)) is DrillPhase.RUNNING
    assert view.drill_phase(later(LOCK_STALE_AFTER_S + 1)) is DrillPhase.STALE_LOCK


def test_a_drill_message_is_not_word_from_the_agent(fleet: Fleet) -> None:
    fleet.apply(drill(at=later(5)), NOW, retained=True)
    fleet.apply(event(EventType.DRILL_STARTED, at=later(6)), NOW)
    assert fleet.towns["nishiki"].last_heard is None
    assert status(fleet) is Status.UNKNOWN


def test_the_hold_comes_with_the_state_and_goes_with_it(fleet: Fleet) -> None:
    held = hold()
    fleet.apply(state(active="backup", hold=held), NOW)
    assert fleet.towns["nishiki"].hold == held
    fleet.apply(state(at=later(60)), NOW + 60)
    assert fleet.towns["nishiki"].hold is None


def test_the_next_drill_is_read_at_most_once_a_minute_and_kept_until_it_comes() -> None:
    calls: list[tuple[str, datetime]] = []
    scheduled = {"nishiki": later(3600), "tsuno": None}

    def compute(topo: Topology, town: str, after: datetime) -> datetime | None:
        calls.append((town, after))
        return scheduled[town]

    nexts = NextDrills(TOPO, compute=compute)
    for s in (0, 59, 1800, 3599):
        assert nexts.of("nishiki", later(s)) == later(3600)
    assert nexts.of("tsuno", T0) is None
    assert nexts.of("tsuno", later(59)) is None
    assert calls == [("nishiki", T0), ("tsuno", T0)]
    nexts.of("tsuno", later(60))  # "none" is asked again after a minute
    nexts.of("nishiki", later(3600))  # the drill came: the one after it
    assert calls[2:] == [("tsuno", later(60)), ("nishiki", later(3600))]


def test_a_change_bumps_the_towns_version(fleet: Fleet) -> None:
    fleet.apply(state(), NOW)
    first = fleet.towns["nishiki"].version
    fleet.apply(state(town="tsuno"), NOW)
    assert fleet.towns["tsuno"].version > first
    assert fleet.towns["nishiki"].version == first


def test_replay_rebuilds_counts_and_state_but_not_freshness(fleet: Fleet) -> None:
    failover = event()
    last = drill(started=later(-3600))
    held = hold(at=later(1))
    history: list[Message] = [
        failover,
        state(active="backup", at=later(1), hold=held),
        online(),
        last,
    ]
    fleet.replay(history)
    view = fleet.towns["nishiki"]
    assert view.active_path == "backup"
    assert (view.hold, view.drill, view.finished_drill) == (held, last, last)
    assert view.failovers == {
        ("primary", "backup", "failover"): 1,
        ("backup", "primary", "failback"): 0,
    }
    assert status(fleet) is Status.UNKNOWN  # until the town speaks again
    assert not fleet.apply(event(event_id=failover.id), NOW)


def test_alarming_statuses_are_the_ones_worth_a_banner() -> None:
    assert {s for s in Status if s.alarming} == {
        Status.OFFLINE,
        Status.UNKNOWN,
        Status.ALL_DOWN,
        Status.BACKUP,
    }
