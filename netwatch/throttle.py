"""Say a thing once, not every probe: a log line per key at most once per
period, with a count of what was held back.

    throttle = LogThrottle(log, period_s=60)
    throttle.warning(("primary", "icmp", "no_source"), "source address ... not on this host")

The first occurrence is logged at once; repeats within the period are
counted and the next line after the period says how many there were.
The clock is passed in, so it can be tested without sleeping.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Hashable
from dataclasses import dataclass


@dataclass
class _Seen:
    last: float
    held: int = 0


class LogThrottle:
    def __init__(
        self, logger: logging.Logger, clock: Callable[[], float], *, period_s: float = 60.0
    ) -> None:
        self.logger = logger
        self.clock = clock
        self.period_s = period_s
        self._seen: dict[Hashable, _Seen] = {}

    def log(self, level: int, key: Hashable, message: str) -> bool:
        """Log `message` unless `key` was logged within the period; True if logged."""
        now = self.clock()
        seen = self._seen.get(key)
        if seen is not None and now - seen.last < self.period_s:
            seen.held += 1
            return False
        if seen is not None and seen.held:
            message = f"{message} ({seen.held} more like it in the last {now - seen.last:.0f} s)"
        self._seen[key] = _Seen(now)
        self.logger.log(level, "%s", message)
        return True

    def warning(self, key: Hashable, message: str) -> bool:
        return self.log(logging.WARNING, key, message)

    def error(self, key: Hashable, message: str) -> bool:
        return self.log(logging.ERROR, key, message)

    def forget(self, key: Hashable) -> None:
        """The condition is over: the next occurrence is news again."""
        self._seen.pop(key, None)
