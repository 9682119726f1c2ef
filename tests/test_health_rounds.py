"""RoundPlanner: which kinds a round probes, their deadlines, and in-order
release of finished rounds, stamped with their send time."""

from __future__ import annotations

from pathlib import Path

import pytest

from netwatch.health.rounds import RoundPlanner
from netwatch.topology import load

ROOT = Path(__file__).resolve().parent.parent
FAST = load(ROOT / "topology.yaml").policy.profile("fast")
MWAN3 = load(ROOT / "topology.yaml").policy.profile("mwan3-default")
KINDS = ("icmp", "tcp", "http")


def test_slow_kinds_join_a_round_once_their_interval_has_passed() -> None:
    planner = RoundPlanner(FAST, KINDS)
    rounds = [planner.start(i * FAST.interval) for i in range(41)]
    with_tcp = [r.t for r in rounds if "tcp" in r.deadlines]
    assert with_tcp == pytest.approx([0.0, 1.0, 2.0])
    assert all("icmp" in r.deadlines for r in rounds)


def test_rounds_are_released_in_start_order_with_their_send_time() -> None:
    planner = RoundPlanner(FAST, KINDS)
    first = planner.start(1.0)
    second = planner.start(1.05, ["icmp"])
    assert planner.finish(second.seq, "icmp", True, 0.01, 1.06) == []  # waits for the first
    assert planner.finish(first.seq, "icmp", False, None, 1.2) == []
    assert planner.finish(first.seq, "tcp", True, 0.011, 1.011) == []
    done = planner.finish(first.seq, "http", True, 0.014, 1.014)
    assert [(d.seq, d.t) for d in done] == [(first.seq, 1.0), (second.seq, 1.05)]
    assert [d.done for d in done] == pytest.approx([1.2, 1.2])  # judged when the first is
    assert done[0].samples["icmp"].ok is False
    assert done[0].samples["tcp"].t == 1.0  # a sample is dated by its send time


def test_deadlines_are_learned_and_back_off_on_expiry() -> None:
    planner = RoundPlanner(FAST, ["icmp"])
    assert planner.start(0.0).deadlines["icmp"] == FAST.timeout  # nothing learned yet
    planner.finish(1, "icmp", True, 0.012, 0.012)
    learned = planner.start(0.05).deadlines["icmp"]
    assert learned == pytest.approx(0.012 + 4 * 0.006 + 0.010)  # rttvar starts at rtt / 2
    planner.finish(2, "icmp", False, None, 0.05 + learned)
    assert planner.start(0.1).deadlines["icmp"] == pytest.approx(2 * learned)
    planner.late("icmp", 0.072)  # the lost one came back: relearn from it
    assert planner.start(0.15).deadlines["icmp"] > 0.072


def test_without_min_timeout_every_probe_waits_the_whole_timeout() -> None:
    planner = RoundPlanner(MWAN3, ["icmp"])
    planner.finish(planner.start(0.0).seq, "icmp", True, 0.012, 0.012)
    assert planner.start(10.0).deadlines["icmp"] == MWAN3.timeout


def test_a_kind_reported_twice_or_for_an_unknown_round_is_ignored() -> None:
    planner = RoundPlanner(FAST, ["icmp"])
    r = planner.start(0.0)
    assert len(planner.finish(r.seq, "icmp", True, 0.01, 0.01)) == 1
    assert planner.finish(r.seq, "icmp", True, 0.01, 0.02) == []
    assert planner.finish(99, "icmp", True, 0.01, 0.02) == []


def test_rounds_sent_before_a_link_event_are_dropped() -> None:
    planner = RoundPlanner(FAST, ["icmp"])
    stale = planner.start(0.0)
    fresh = planner.start(0.05)
    assert planner.finish(fresh.seq, "icmp", True, 0.01, 0.06) == []
    released = planner.drop_before(0.02)
    assert [d.seq for d in released] == [fresh.seq]
    assert planner.finish(stale.seq, "icmp", False, None, 0.3) == []
    assert planner.in_flight == 0
