"""What the operations center makes of a town's failover drills: which of
two drill messages is the newer, when a running drill's lock has gone
stale, and when the town's next drill is scheduled (cached).

A drill publishes `running` on the retained drill topic when it starts and
its outcome when it ends; a drill whose process died leaves `running`
there for ever.  Past `LOCK_STALE_AFTER_S` (the message's own time) it is
shown as a *stale lock*, not as a drill running for days.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from enum import StrEnum

from netwatch.drill.schedule import next_drill
from netwatch.messages import DrillMessage, DrillStatus
from netwatch.topology import Topology

LOCK_STALE_AFTER_S = 6 * 3600.0  # far longer than any drill runs
NEXT_DRILL_EVERY_S = 60.0  # a town's schedule is read at most this often


class DrillPhase(StrEnum):
    """A drill message as shown: its status, or `stale_lock` for a running
    one too old to believe."""

    RUNNING = DrillStatus.RUNNING.value
    STALE_LOCK = "stale_lock"
    PASSED = DrillStatus.PASSED.value
    FAILED = DrillStatus.FAILED.value
    ABORTED = DrillStatus.ABORTED.value
    REFUSED = DrillStatus.REFUSED.value


def phase(drill: DrillMessage, now: datetime) -> DrillPhase:
    if drill.status is not DrillStatus.RUNNING:
        return DrillPhase(drill.status.value)
    if (now - drill.ts).total_seconds() > LOCK_STALE_AFTER_S:
        return DrillPhase.STALE_LOCK
    return DrillPhase.RUNNING


def newer(message: DrillMessage, than: DrillMessage | None) -> bool:
    """Whether `message` supersedes `than`: a later drill, or a later word
    on the same one.  A redelivered or late older message does not."""
    if than is None:
        return True
    return (message.started, message.ts) > (than.started, than.ts)


def ended_at(drill: DrillMessage) -> datetime:
    """When a finished drill ended (its message's time if it did not say)."""
    return drill.ended or drill.ts


class NextDrills:
    """`next_drill` per town, cached: a schedule costs about half a
    millisecond to read, and a scrape of a national fleet must not read
    1,741 of them.  The next drill after `now` stays the same until it
    comes (the topology does not change under a running service), so a
    known one is kept until then; "none" is asked again after `every_s`,
    and never for a town no schedule names."""

    def __init__(
        self,
        topo: Topology,
        *,
        every_s: float = NEXT_DRILL_EVERY_S,
        compute: Callable[[Topology, str, datetime], datetime | None] = next_drill,
    ) -> None:
        self._topo = topo
        self._every = timedelta(seconds=every_s)
        self._compute = compute
        self._scheduled = {t.id for t in topo.towns if topo.drills.schedules_of(t.id)}
        self._cache: dict[str, tuple[datetime, datetime | None]] = {}  # town: (asked, next)

    def of(self, town: str, now: datetime) -> datetime | None:
        if town not in self._scheduled:
            return None
        cached = self._cache.get(town)
        if cached is not None:
            asked, when = cached
            if asked <= now and (now - asked < self._every or (when is not None and now < when)):
                return when
        when = self._compute(self._topo, town, now)
        self._cache[town] = (now, when)
        return when
