"""Parsers for the units topology.yaml writes: durations, rates, percentages.

Each parser takes what YAML produced and returns a number in base units
(seconds, bits per second, a ratio 0..1), or raises ValueError with a
message that says what was expected.  Bare numbers are refused on purpose:
"100" could be milliseconds or seconds, and a wrong guess here moves a
failover threshold by a factor of a thousand.
"""

from __future__ import annotations

import re

_DURATION_UNITS = {"us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_RATE_UNITS = {
    "bit": 1,
    "kbit": 1_000,
    "mbit": 1_000_000,
    "gbit": 1_000_000_000,
    "bps": 1,
    "kbps": 1_000,
    "mbps": 1_000_000,
    "gbps": 1_000_000_000,
}
_NUMBER_UNIT = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([a-zµ%]*)\s*$", re.IGNORECASE)


def _split(value: object, kind: str, example: str) -> tuple[float, str]:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValueError(f"expected a {kind} like {example!r}, got {value!r}")
    match = _NUMBER_UNIT.match(str(value))
    if not match or not match.group(2):
        raise ValueError(f"expected a {kind} with a unit, like {example!r}, got {value!r}")
    return float(match.group(1)), match.group(2)


def parse_duration(value: object) -> float:
    """'150ms' -> 0.15; '2s' -> 2.0; '5m' -> 300.0."""
    number, unit = _split(value, "duration", "150ms")
    factor = _DURATION_UNITS.get(unit.lower() if unit != "µs" else unit)
    if factor is None:
        raise ValueError(
            f"unknown duration unit {unit!r} in {value!r} (expected one of us, ms, s, m, h)"
        )
    return number * factor


def parse_rate(value: object) -> int:
    """'47mbit' -> 47_000_000 bits per second."""
    number, unit = _split(value, "rate", "47mbit")
    factor = _RATE_UNITS.get(unit.lower())
    if factor is None:
        raise ValueError(
            f"unknown rate unit {unit!r} in {value!r} (expected one of kbit, mbit, gbit)"
        )
    bps = round(number * factor)
    if bps <= 0:
        raise ValueError(f"a rate must be above zero, got {value!r}")
    return bps


def parse_percentage(value: object) -> float:
    """'2%' -> 0.02.  Must lie within 0 % .. 100 %."""
    number, unit = _split(value, "percentage", "2%")
    if unit != "%":
        raise ValueError(f"expected a percentage like '2%', got {value!r}")
    if number > 100:
        raise ValueError(f"a percentage must be at most 100%, got {value!r}")
    return number / 100.0


def format_duration(seconds: float) -> str:
    if seconds == 0:
        return "0s"
    if seconds >= 60 and seconds % 60 == 0:
        return f"{seconds / 60:g}m"
    if seconds >= 1:
        return f"{seconds:g}s"
    return f"{seconds * 1000:g}ms"


def format_rate(bps: int) -> str:
    for unit, factor in (("gbit", 1_000_000_000), ("mbit", 1_000_000), ("kbit", 1_000)):
        if bps >= factor:
            return f"{bps / factor:g}{unit}"
    return f"{bps}bit"


def format_percentage(ratio: float) -> str:
    return f"{ratio * 100:g}%"
