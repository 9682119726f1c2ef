"""RFC 2439 flap damping: decay, suppress/reuse hysteresis, the max_suppress
ceiling, and `penalty: 0` as "off"; with the `fast` profile's parameters."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from netwatch.health.damping import Damping
from netwatch.topology import load
from netwatch.topology.model import Damping as DampingParams

ROOT = Path(__file__).resolve().parent.parent
FAST = load(ROOT / "topology.yaml").policy.profile("fast").damping
# penalty 1000, half_life 60 s, suppress 2000, reuse 750, max_suppress 300 s


def params(**changes: float) -> DampingParams:
    return FAST.model_copy(update=changes)


def test_fast_profile_parameters() -> None:
    assert (FAST.penalty, FAST.half_life, FAST.suppress, FAST.reuse, FAST.max_suppress) == (
        1000,
        60.0,
        2000,
        750,
        300.0,
    )
    assert Damping(FAST).ceiling == pytest.approx(750 * 2**5)  # 24000


def test_fresh_damping() -> None:
    damping = Damping(FAST)
    assert damping.enabled
    assert damping.penalty(0.0) == 0.0
    assert not damping.suppressed(0.0)
    assert damping.reuse_at() is None
    assert damping.flaps == 0


@pytest.mark.parametrize(
    ("elapsed", "expected"),
    [
        (0.0, 1000.0),
        (60.0, 500.0),
        (120.0, 250.0),
        (30.0, 1000 / math.sqrt(2)),
        (600.0, 1000 / 1024),
    ],
)
def test_penalty_decays_with_half_life(elapsed: float, expected: float) -> None:
    damping = Damping(FAST)
    damping.penalize(10.0)
    assert damping.penalty(10.0 + elapsed) == pytest.approx(expected)


def test_penalty_before_last_flap_is_not_extrapolated() -> None:
    damping = Damping(FAST)
    damping.penalize(10.0)
    assert damping.penalty(5.0) == pytest.approx(1000.0)


def test_two_quick_flaps_stay_below_suppress() -> None:
    damping = Damping(FAST)
    damping.penalize(0.0)
    damping.penalize(0.0)
    assert damping.penalty(0.0) == pytest.approx(2000.0)
    assert not damping.suppressed(0.0)  # must *exceed* suppress


def test_suppression_starts_above_suppress_and_ends_below_reuse() -> None:
    damping = Damping(FAST)
    for t in (0.0, 1.0, 2.0):
        damping.penalize(t)
    figure = damping.penalty(2.0)
    assert figure > 2000
    assert damping.suppressed(2.0)
    end = damping.reuse_at()
    assert end is not None
    assert end == pytest.approx(2.0 + 60.0 * math.log2(figure / 750))
    assert damping.penalty(end) == pytest.approx(750.0)
    # hysteresis: below suppress but above reuse, still suppressed
    between = 2.0 + 60.0 * math.log2(figure / 1000)
    assert damping.penalty(between) == pytest.approx(1000.0)
    assert damping.suppressed(between)
    assert damping.suppressed(end - 1e-6)
    assert not damping.suppressed(end)
    assert not damping.suppressed(end + 100)


def test_no_hysteresis_without_a_suppression() -> None:
    # 1900 is above reuse but was never above suppress: not suppressed
    damping = Damping(params(penalty=1900))
    damping.penalize(0.0)
    assert damping.penalty(0.0) == pytest.approx(1900)
    assert not damping.suppressed(0.0)
    assert damping.reuse_at() is None


def test_a_flap_during_suppression_extends_it() -> None:
    damping = Damping(FAST)
    for t in (0.0, 1.0, 2.0):
        damping.penalize(t)
    first_end = damping.reuse_at()
    assert first_end is not None
    # late in the suppression the figure is below suppress; a flap adds 1000
    late = first_end - 1.0
    damping.penalize(late)
    assert damping.penalty(late) < 2000  # ~1760: not above suppress again...
    assert damping.suppressed(late)  # ...yet the running suppression carries on
    new_end = damping.reuse_at()
    assert new_end is not None
    assert new_end > first_end


def test_ceiling_bounds_suppression_by_max_suppress() -> None:
    damping = Damping(FAST)
    for i in range(100):  # a path flapping every second for 100 s
        damping.penalize(float(i))
    last = 99.0
    assert damping.penalty(last) == pytest.approx(damping.ceiling)
    assert damping.reuse_at() == pytest.approx(last + FAST.max_suppress)
    assert damping.suppressed(last + 299.0)
    assert not damping.suppressed(last + 300.0 + 1e-9)


@pytest.mark.parametrize(("max_suppress", "ceiling"), [(60.0, 1500.0), (120.0, 3000.0)])
def test_ceiling_formula(max_suppress: float, ceiling: float) -> None:
    damping = Damping(params(max_suppress=max_suppress))
    assert damping.ceiling == pytest.approx(ceiling)
    for _ in range(10):
        damping.penalize(0.0)
    assert damping.penalty(0.0) == pytest.approx(ceiling)


def test_ceiling_below_suppress_never_suppresses() -> None:
    damping = Damping(params(max_suppress=60.0))  # ceiling 1500 < suppress 2000
    for i in range(50):
        damping.penalize(float(i))
    assert not damping.suppressed(50.0)


def test_huge_max_suppress_means_no_ceiling() -> None:
    damping = Damping(params(max_suppress=1e9))
    assert damping.ceiling == math.inf
    for _ in range(5):
        damping.penalize(0.0)
    assert damping.penalty(0.0) == pytest.approx(5000)


def test_zero_penalty_disables_damping() -> None:
    damping = Damping(params(penalty=0))
    assert not damping.enabled
    for i in range(1000):
        damping.penalize(i * 0.01)
    assert damping.flaps == 1000
    assert damping.penalty(10.0) == 0.0
    assert not damping.suppressed(10.0)
    assert damping.reuse_at() is None
