"""Profile parsing and validation (the control protocol's input)."""

from __future__ import annotations

import pytest

from netwatch.emulator.profile import Profile, ProfileError


def test_defaults_are_a_transparent_link() -> None:
    p = Profile.from_json({})
    assert p == Profile()
    assert p.transparent
    assert p.to_json() == {
        "rate_bps": 0,
        "delay_s": 0.0,
        "jitter_s": 0.0,
        "loss": 0.0,
        "queue_packets": None,
        "cut": False,
    }


def test_round_trip() -> None:
    p = Profile(rate_bps=47_000_000, delay_s=0.01, jitter_s=0.002, loss=0.02, queue_packets=50)
    assert Profile.from_json(p.to_json()) == p


def test_merged_keeps_fields_not_given() -> None:
    p = Profile(delay_s=0.02, loss=0.01).merged({"cut": True})
    assert (p.delay_s, p.loss, p.cut) == (0.02, 0.01, True)
    assert not p.transparent


def test_integers_are_accepted_for_seconds() -> None:
    assert Profile.from_json({"delay_s": 1}).delay_s == 1.0


def test_integral_floats_are_accepted_for_counts() -> None:
    p = Profile.from_json({"rate_bps": 47e6, "queue_packets": 100.0})
    assert (p.rate_bps, p.queue_packets) == (47_000_000, 100)
    assert isinstance(p.rate_bps, int)


def test_queue_packets_null_means_auto() -> None:
    p = Profile(queue_packets=5).merged({"queue_packets": None})
    assert p.queue_packets is None


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"delay": 0.1}, "unknown profile field"),
        ({"rate_bps": 1.5}, "rate_bps must be an integer"),
        ({"rate_bps": True}, "rate_bps must be an integer"),
        ({"rate_bps": -1}, "rate_bps must be in"),
        ({"delay_s": -0.1}, "delay_s must be in"),
        ({"delay_s": "1"}, "delay_s must be a number"),
        ({"jitter_s": float("inf")}, "jitter_s must be in"),
        ({"loss": 1.5}, "loss must be in 0..1"),
        ({"loss": float("nan")}, "loss must be in 0..1"),
        ({"queue_packets": -3}, "queue_packets must be in"),
        ({"cut": 1}, "cut must be true or false"),
    ],
)
def test_bad_fields_are_rejected(fields: dict[str, object], message: str) -> None:
    with pytest.raises(ProfileError, match=message):
        Profile().merged(fields)


def test_profile_must_be_an_object() -> None:
    with pytest.raises(ProfileError, match="JSON object"):
        Profile.from_json([1, 2])
