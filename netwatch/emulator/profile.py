"""Link profile: what one direction of an emulated link does to packets.

A profile is an immutable value. The control protocol sends partial
updates; :meth:`Profile.merged` applies them after validating every field,
so a bad request never leaves a half-applied profile behind.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, replace
from typing import Any

#: Packet size the automatic queue limit is expressed in (a full Ethernet MTU).
NOMINAL_PACKET_BYTES = 1500
#: Automatic queue: this much serialization time, or one round trip if longer.
AUTO_QUEUE_SECONDS = 0.05
AUTO_QUEUE_MIN = 16
AUTO_QUEUE_MAX = 10_000

MAX_RATE_BPS = 100_000_000_000
MAX_DELAY_S = 60.0
MAX_QUEUE_PACKETS = 1_000_000

FIELDS = ("rate_bps", "delay_s", "jitter_s", "loss", "queue_packets", "cut")


class ProfileError(ValueError):
    """A profile field is unknown, of the wrong type or out of range."""


@dataclass(frozen=True, slots=True)
class Profile:
    """One direction's impairments, applied in order: cut, loss, rate, delay.

    ``queue_packets`` is the drop-tail limit of packets waiting for the rate
    limiter; ``None`` means automatic (see :meth:`queue_limit`).
    """

    rate_bps: int = 0
    delay_s: float = 0.0
    jitter_s: float = 0.0
    loss: float = 0.0
    queue_packets: int | None = None
    cut: bool = False

    @property
    def transparent(self) -> bool:
        """True when packets pass untouched (the engine's write-through path)."""
        return (
            not self.cut
            and self.rate_bps == 0
            and self.loss == 0.0
            and self.delay_s == 0.0
            and self.jitter_s == 0.0
        )

    def queue_limit(self) -> int:
        """Effective queue limit in packets.

        Automatic sizing follows the usual rule of thumb for a drop-tail
        bottleneck: about one bandwidth-delay product, so a single TCP flow
        can keep the link busy, but no more, so the queue does not add
        seconds of delay (bufferbloat). The round trip is guessed as twice
        this direction's delay, with a 50 ms floor for the far side's share.
        """
        if self.queue_packets is not None:
            return self.queue_packets
        if self.rate_bps == 0:
            return AUTO_QUEUE_MAX
        rtt = max(AUTO_QUEUE_SECONDS, 2.0 * self.delay_s)
        packets = math.ceil(self.rate_bps * rtt / (8 * NOMINAL_PACKET_BYTES))
        return min(AUTO_QUEUE_MAX, max(AUTO_QUEUE_MIN, packets))

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, obj: object) -> Profile:
        """A full profile from a JSON object; missing fields take defaults."""
        return cls().merged(obj)

    def merged(self, changes: object) -> Profile:
        """A copy with ``changes`` (a JSON object of some fields) applied."""
        if not isinstance(changes, Mapping):
            raise ProfileError("profile must be a JSON object")
        unknown = sorted(str(k) for k in changes if k not in FIELDS)
        if unknown:
            raise ProfileError(f"unknown profile field(s): {', '.join(unknown)}")
        values: dict[str, Any] = {}
        for key, raw in changes.items():
            values[key] = _VALIDATORS[key](key, raw)
        return replace(self, **values)


def _int(key: str, raw: object, upper: int) -> int:
    # bool is an int subclass in Python; reject it, it is always a mistake here.
    # Integral floats (47e6, or 1000.0 from a JSON encoder) are fine.
    if isinstance(raw, float) and raw.is_integer():
        raw = int(raw)
    if isinstance(raw, bool) or not isinstance(raw, int):
        raise ProfileError(f"{key} must be an integer, got {raw!r}")
    if not 0 <= raw <= upper:
        raise ProfileError(f"{key} must be in 0..{upper}, got {raw}")
    return raw


def _seconds(key: str, raw: object) -> float:
    if isinstance(raw, bool) or not isinstance(raw, int | float):
        raise ProfileError(f"{key} must be a number of seconds, got {raw!r}")
    value = float(raw)
    if not (math.isfinite(value) and 0.0 <= value <= MAX_DELAY_S):
        raise ProfileError(f"{key} must be in 0..{MAX_DELAY_S} seconds, got {raw}")
    return value


def _rate(key: str, raw: object) -> int:
    return _int(key, raw, MAX_RATE_BPS)


def _queue(key: str, raw: object) -> int | None:
    return None if raw is None else _int(key, raw, MAX_QUEUE_PACKETS)


def _loss(key: str, raw: object) -> float:
    if isinstance(raw, bool) or not isinstance(raw, int | float):
        raise ProfileError(f"{key} must be a number, got {raw!r}")
    value = float(raw)
    if not 0.0 <= value <= 1.0:  # also rejects NaN
        raise ProfileError(f"{key} must be in 0..1, got {raw}")
    return value


def _bool(key: str, raw: object) -> bool:
    if not isinstance(raw, bool):
        raise ProfileError(f"{key} must be true or false, got {raw!r}")
    return raw


_VALIDATORS: dict[str, Callable[[str, object], object]] = {
    "rate_bps": _rate,
    "delay_s": _seconds,
    "jitter_s": _seconds,
    "loss": _loss,
    "queue_packets": _queue,
    "cut": _bool,
}
