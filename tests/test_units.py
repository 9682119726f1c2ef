from __future__ import annotations

import pytest

from netwatch.topology.units import (
    format_duration,
    format_percentage,
    format_rate,
    parse_duration,
    parse_percentage,
    parse_rate,
)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("150ms", 0.15),
        ("2s", 2.0),
        ("5m", 300.0),
        ("1h", 3600.0),
        ("500us", 0.0005),
        ("0.5ms", 0.0005),
        ("0s", 0.0),
        (" 3 s ", 3.0),
    ],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("bad", ["100", 100, "fast", "10 parsecs", "-1s", True, None, [1]])
def test_parse_duration_refuses(bad: object) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(bad)


@pytest.mark.parametrize(
    ("text", "bps"),
    [
        ("47mbit", 47_000_000),
        ("100Mbit", 100_000_000),
        ("1gbit", 10**9),
        ("512kbit", 512_000),
        ("1.5mbit", 1_500_000),
    ],
)
def test_parse_rate(text: str, bps: int) -> None:
    assert parse_rate(text) == bps


@pytest.mark.parametrize("bad", ["47", "0mbit", "fast", "47 furlongs", 47])
def test_parse_rate_refuses(bad: object) -> None:
    with pytest.raises(ValueError, match="rate"):
        parse_rate(bad)


@pytest.mark.parametrize(
    ("text", "ratio"), [("2%", 0.02), ("0%", 0.0), ("100%", 1.0), ("0.1%", 0.001)]
)
def test_parse_percentage(text: str, ratio: float) -> None:
    assert parse_percentage(text) == pytest.approx(ratio)


@pytest.mark.parametrize("bad", ["2", 0.02, "120%", "2 percent", "-1%"])
def test_parse_percentage_refuses(bad: object) -> None:
    with pytest.raises(ValueError, match="percentage"):
        parse_percentage(bad)


def test_formatting_round_trips() -> None:
    for text in ("150ms", "2s", "5m", "0s"):
        assert format_duration(parse_duration(text)) == text
    assert format_rate(parse_rate("47mbit")) == "47mbit"
    assert format_percentage(parse_percentage("0.1%")) == "0.1%"
