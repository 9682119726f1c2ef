"""Pure tests of the link shaper: made-up timestamps, no sockets, no clock."""

from __future__ import annotations

import itertools
import random
import statistics

import pytest

from netwatch.emulator.profile import Profile
from netwatch.emulator.shaper import Drop, Shaper

MTU = 1500


def shaper(seed: int = 1, **fields: object) -> Shaper:
    return Shaper(Profile.from_json(fields), rng=random.Random(seed))


def test_default_profile_passes_at_once() -> None:
    s = shaper()
    assert [s.offer(t, 100) for t in (0.0, 0.5, 0.5, 2.0)] == [0.0, 0.5, 0.5, 2.0]
    c = s.counters
    assert (c.dropped_cut, c.dropped_loss, c.dropped_queue) == (0, 0, 0)


def test_fixed_delay_is_added() -> None:
    s = shaper(delay_s=0.02)
    assert s.offer(10.0, 100) == pytest.approx(10.02)
    assert s.offer(10.5, 1500) == pytest.approx(10.52)


def test_drop_verdicts_are_negative_and_distinct() -> None:
    assert {float(d) for d in Drop} == {-1.0, -2.0, -3.0}
    assert all(d < 0 for d in Drop)


# -- rate ------------------------------------------------------------------


def test_rate_serializes_back_to_back_packets() -> None:
    s = shaper(rate_bps=12_000_000)  # 1500 bytes = 1 ms on the wire
    releases = [s.offer(0.0, MTU) for _ in range(4)]
    assert releases == pytest.approx([0.001, 0.002, 0.003, 0.004])


def test_rate_counts_the_packet_length() -> None:
    s = shaper(rate_bps=8_000)  # 1 byte per millisecond
    assert s.offer(0.0, 100) == pytest.approx(0.1)
    assert s.offer(0.0, 40) == pytest.approx(0.14)


def test_rate_idle_link_starts_fresh() -> None:
    s = shaper(rate_bps=12_000_000)
    s.offer(0.0, MTU)
    # Arrives after the serializer went idle: no leftover backlog.
    assert s.offer(1.0, MTU) == pytest.approx(1.001)


def test_rate_then_delay() -> None:
    s = shaper(rate_bps=12_000_000, delay_s=0.05)
    assert s.offer(0.0, MTU) == pytest.approx(0.051)
    assert s.offer(0.0, MTU) == pytest.approx(0.052)


def test_long_run_rate_never_exceeds_configured() -> None:
    rate = 47_000_000
    s = shaper(rate_bps=rate, queue_packets=100)
    sizes = [40, 576, 1500, 1500, 1500, 52]
    now, last, sent = 0.0, 0.0, 0
    for i in range(20_000):  # offered at about 2x the rate
        size = sizes[i % len(sizes)]
        verdict = s.offer(now, size)
        if verdict >= 0:
            sent += size
            last = verdict
        now += size * 8 / (2 * rate)
    assert sent * 8 / last <= rate * 1.0001
    assert sent * 8 / last >= rate * 0.99  # and the link stays busy


# -- queue -----------------------------------------------------------------


def test_queue_overflow_is_drop_tail() -> None:
    s = shaper(rate_bps=12_000_000, queue_packets=3)
    verdicts = [s.offer(0.0, MTU) for _ in range(10)]
    # One on the wire at once, three waiting, the rest dropped at the tail.
    assert verdicts[:4] == pytest.approx([0.001, 0.002, 0.003, 0.004])
    assert verdicts[4:] == [Drop.QUEUE] * 6
    assert s.counters.dropped_queue == 6
    assert s.waiting(0.0) == 3


def test_queue_drains_and_accepts_again() -> None:
    s = shaper(rate_bps=12_000_000, queue_packets=2)
    for _ in range(3):
        s.offer(0.0, MTU)
    assert s.offer(0.0, MTU) is Drop.QUEUE
    # At 1.5 ms the second packet is on the wire, one is still waiting.
    assert s.waiting(0.0015) == 1
    assert s.offer(0.0015, MTU) == pytest.approx(0.004)
    assert s.offer(0.0015, MTU) is Drop.QUEUE


def test_queue_zero_accepts_only_an_idle_link() -> None:
    s = shaper(rate_bps=12_000_000, queue_packets=0)
    assert s.offer(0.0, MTU) == pytest.approx(0.001)
    assert s.offer(0.0005, MTU) is Drop.QUEUE
    assert s.offer(0.001, MTU) == pytest.approx(0.002)


def test_auto_queue_is_about_one_bandwidth_delay_product() -> None:
    # 47 Mbit/s, 10 ms each way: 50 ms floor -> 196 full-size packets.
    assert Profile(rate_bps=47_000_000, delay_s=0.01).queue_limit() == 196
    # Long delay: one guessed round trip (2 x 100 ms) of packets.
    assert Profile(rate_bps=12_000_000, delay_s=0.1).queue_limit() == 200
    assert Profile(rate_bps=64_000).queue_limit() == 16  # floor
    assert Profile(rate_bps=10**11).queue_limit() == 10_000  # ceiling
    assert Profile(rate_bps=10**6, queue_packets=7).queue_limit() == 7


# -- loss ------------------------------------------------------------------


def test_loss_ratio_follows_seeded_rng() -> None:
    s = shaper(seed=42, loss=0.1)
    verdicts = [s.offer(i * 1e-3, 100) for i in range(100_000)]
    lost = sum(v is Drop.LOSS for v in verdicts)
    assert lost == s.counters.dropped_loss
    assert 0.097 < lost / 100_000 < 0.103


def test_loss_is_reproducible_with_a_seed() -> None:
    def pattern(seed: int) -> list[bool]:
        s = shaper(seed=seed, loss=0.3)
        return [s.offer(i, 100) is Drop.LOSS for i in range(200)]

    assert pattern(7) == pattern(7)
    assert pattern(7) != pattern(8)


@pytest.mark.parametrize(("loss", "expected"), [(0.0, 0), (1.0, 1000)])
def test_loss_extremes(loss: float, expected: int) -> None:
    s = shaper(loss=loss)
    for i in range(1000):
        s.offer(float(i), 100)
    assert s.counters.dropped_loss == expected


# -- delay and jitter ------------------------------------------------------


def test_jitter_stays_within_bounds() -> None:
    s = shaper(delay_s=0.02, jitter_s=0.005)
    # Packets 1 s apart: no-reordering never kicks in, pure jitter shows.
    delays = [s.offer(float(i), 100) - i for i in range(20_000)]
    assert min(delays) >= 0.015 - 1e-9
    assert max(delays) <= 0.025 + 1e-9
    # The whole spread is used.
    assert min(delays) < 0.0152
    assert max(delays) > 0.0248
    assert statistics.median(delays) == pytest.approx(0.02, abs=2e-4)


def test_jitter_larger_than_delay_clamps_at_zero() -> None:
    s = shaper(delay_s=0.001, jitter_s=0.01)
    delays = [s.offer(float(i), 100) - i for i in range(5000)]
    assert min(delays) == 0.0
    assert max(delays) <= 0.011


def test_no_reordering_with_heavy_jitter() -> None:
    s = shaper(delay_s=0.02, jitter_s=0.01)
    releases = [s.offer(i * 1e-3, 100) for i in range(10_000)]
    assert all(b >= a for a, b in itertools.pairwise(releases))
    assert all(r >= i * 1e-3 + 0.01 for i, r in enumerate(releases))


# -- cut -------------------------------------------------------------------


def test_cut_drops_and_uncut_restores() -> None:
    s = shaper(delay_s=0.01)
    assert s.offer(0.0, 100) == pytest.approx(0.01)
    s.set_profile(s.profile.merged({"cut": True}))
    assert s.offer(0.001, 100) is Drop.CUT
    assert s.offer(0.002, 100) is Drop.CUT
    assert s.counters.dropped_cut == 2
    s.set_profile(s.profile.merged({"cut": False}))
    assert s.offer(0.003, 100) == pytest.approx(0.013)


def test_cut_forgets_queue_and_release_order() -> None:
    s = shaper(rate_bps=12_000_000, delay_s=1.0)
    for _ in range(100):
        s.offer(0.0, MTU)  # busy until 0.1 s, last release 1.1 s
    s.set_profile(s.profile.merged({"cut": True}))
    s.drop_held(100)  # the engine discards what it held
    assert s.counters.dropped_cut == 100
    s.set_profile(s.profile.merged({"cut": False}))
    # Neither the old backlog nor the old release times delay a new packet.
    assert s.waiting(0.01) == 0
    assert s.offer(0.01, MTU) == pytest.approx(1.011)


def test_cut_takes_precedence_over_loss() -> None:
    s = shaper(loss=1.0, cut=True)
    assert s.offer(0.0, 100) is Drop.CUT
    assert (s.counters.dropped_cut, s.counters.dropped_loss) == (1, 0)


# -- profile changes mid-stream ---------------------------------------------


def test_rate_change_applies_to_the_next_packet() -> None:
    s = shaper(rate_bps=12_000_000)
    assert s.offer(0.0, MTU) == pytest.approx(0.001)
    s.set_profile(s.profile.merged({"rate_bps": 6_000_000}))
    # Waits for the packet on the wire, then takes 2 ms at the new rate.
    assert s.offer(0.0, MTU) == pytest.approx(0.003)


def test_delay_decrease_does_not_reorder() -> None:
    s = shaper(delay_s=0.1)
    first = s.offer(0.0, 100)
    s.set_profile(s.profile.merged({"delay_s": 0.0}))
    assert s.offer(0.01, 100) == first  # held behind the earlier packet
    assert s.offer(0.2, 100) == 0.2


def test_rate_removed_clears_the_queue() -> None:
    s = shaper(rate_bps=12_000_000)
    for _ in range(5):
        s.offer(0.0, MTU)
    s.set_profile(s.profile.merged({"rate_bps": 0}))
    assert s.waiting(0.0) == 0
    assert s.offer(0.0, MTU) == pytest.approx(0.005)  # still no overtaking


def test_loss_change_mid_stream() -> None:
    s = shaper(seed=3)
    for i in range(100):
        s.offer(float(i), 100)
    s.set_profile(s.profile.merged({"loss": 1.0}))
    assert s.offer(100.0, 100) is Drop.LOSS
    assert s.counters.dropped_loss == 1
