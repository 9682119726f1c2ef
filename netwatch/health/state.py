"""A path's health state: the one vocabulary of the core, the metrics and
the MQTT contract.

The value (``up``) is the core's and Prometheus's spelling (the ``state``
label of ``netwatch_path_state``); the MQTT contract spells a state by its
name (``UP``): `wire` and `from_wire` are the only conversion.
"""

from __future__ import annotations

import enum


class PathState(enum.StrEnum):
    UNKNOWN = "unknown"
    UP = "up"
    DEGRADED = "degraded"
    DOWN = "down"

    @property
    def carries_traffic(self) -> bool:
        return self in (PathState.UP, PathState.DEGRADED)

    @property
    def wire(self) -> str:
        return self.name

    @classmethod
    def wire_names(cls) -> list[str]:
        """The contract's spellings, the measured states first."""
        return [m.wire for m in sorted(cls, key=lambda m: m is cls.UNKNOWN)]

    @classmethod
    def from_wire(cls, text: str) -> PathState:
        """Raises ValueError for anything but a member's exact name."""
        try:
            return cls[text]
        except KeyError:
            raise ValueError(text) from None
