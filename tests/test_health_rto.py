"""ProbeTimer: RFC 6298-style waiting time for one probe, within bounds."""

from __future__ import annotations

import random

import pytest

from netwatch.health.rto import ProbeTimer


def test_cap_until_an_rtt_is_known() -> None:
    assert ProbeTimer(0.05, 0.15).timeout() == 0.15


def test_first_sample_sets_srtt_and_half_of_it_as_variance() -> None:
    timer = ProbeTimer(0.001, 1.0)
    timer.observe(0.040)
    assert timer.srtt == pytest.approx(0.040)
    assert timer.rttvar == pytest.approx(0.020)
    assert timer.timeout() == pytest.approx(0.040 + 0.080)


def test_steady_lgwan_echo_waits_the_floor() -> None:
    timer = ProbeTimer(0.05, 0.15)
    for _ in range(100):
        timer.observe(0.012)
    assert timer.timeout() == pytest.approx(0.05)


def test_http_over_adsl_waits_about_twice_its_rtt() -> None:
    timer = ProbeTimer(0.05, 0.15)
    rng = random.Random(1)
    for _ in range(200):
        timer.observe(rng.uniform(0.060, 0.070))
    assert 0.125 < timer.timeout() <= 0.15


def test_never_above_the_cap_even_for_slow_paths() -> None:
    timer = ProbeTimer(0.05, 0.15)
    for _ in range(50):
        timer.observe(0.4)
    assert timer.timeout() == 0.15


def test_jitter_widens_the_wait() -> None:
    calm, jittery = ProbeTimer(0.001, 1.0), ProbeTimer(0.001, 1.0)
    rng = random.Random(7)
    for _ in range(500):
        calm.observe(0.030)
        jittery.observe(0.030 + rng.uniform(-0.020, 0.020))
    assert jittery.timeout() > calm.timeout() == pytest.approx(0.060)
    # no sample within the jitter band exceeds the wait
    late = sum(0.030 + rng.uniform(-0.020, 0.020) > jittery.timeout() for _ in range(1000))
    assert late == 0


@pytest.mark.parametrize(("floor", "cap"), [(0.0, 1.0), (0.2, 0.1), (-1.0, 1.0)])
def test_bad_bounds(floor: float, cap: float) -> None:
    with pytest.raises(ValueError, match="floor"):
        ProbeTimer(floor, cap)


def test_negative_rtt_is_refused() -> None:
    with pytest.raises(ValueError, match="negative"):
        ProbeTimer(0.05, 0.15).observe(-0.001)


def test_slack_is_added_for_a_busy_machine() -> None:
    timer = ProbeTimer(0.001, 1.0, slack_s=0.02)
    for _ in range(100):
        timer.observe(0.035)
    assert timer.timeout() == pytest.approx(0.035 + 0.035 + 0.02)
    with pytest.raises(ValueError, match="slack"):
        ProbeTimer(0.05, 0.15, slack_s=-0.01)


def test_an_expiry_doubles_the_wait_up_to_the_cap() -> None:
    timer = ProbeTimer(0.02, 0.25)
    for _ in range(100):
        timer.observe(0.012)
    base = timer.timeout()
    assert base == pytest.approx(0.024)
    seen = []
    for _ in range(6):
        timer.expired()
        seen.append(timer.timeout())
    assert seen == pytest.approx([0.048, 0.096, 0.192, 0.25, 0.25, 0.25])


def test_the_next_answer_relearns_after_back_off() -> None:
    timer = ProbeTimer(0.02, 0.25)
    for _ in range(100):
        timer.observe(0.012)
    timer.expired()
    timer.expired()
    timer.observe(0.072)  # a latency step: the answer that finally fitted
    assert timer.backoff == 1
    # the estimate itself has moved: the next probe at 72 ms fits without back-off
    assert timer.timeout() > 0.072


def test_a_latency_step_below_the_cap_is_answered_within_two_expiries() -> None:
    """12 ms -> 72 ms: each probe waits what the timer says; count the probes
    lost before one fits, then check that none is lost afterwards."""
    timer = ProbeTimer(0.02, 0.25, slack_s=0.01)
    for _ in range(100):
        timer.observe(0.012)
    lost = 0
    for _ in range(50):
        if timer.timeout() >= 0.072:
            timer.observe(0.072)
        else:
            timer.expired()
            lost += 1
    assert lost <= 2
    assert timer.timeout() > 0.072


def test_back_off_stops_doubling_at_the_cap() -> None:
    timer = ProbeTimer(0.02, 0.25)
    timer.observe(0.2)
    for _ in range(64):
        timer.expired()
    assert timer.timeout() == 0.25
    assert timer.backoff <= 2
