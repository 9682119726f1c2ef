"""The `drills:` section, resolved: what a failover drill does and when.

topology.yaml's shape (aliases, "all", partial overrides) is checked by the
`*Spec` models in `model.py`; these frozen values are what the drill runner,
the schedule logic and the operations center read.  Times of day, dates and
cron fields are local to a schedule's timezone.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

# cronsim rather than croniter: it is typed (py.typed), small, evaluates an
# expression in the timezone of the datetime it is given (Debian cron's
# handling of DST gaps and repeats), and names the field it refuses.
from cronsim import CronSim, CronSimError

CRON_FIELDS = ("minute", "hour", "day-of-month", "month", "day-of-week")


@dataclass(frozen=True)
class TimeWindow:
    """Local times of day a drill may start in: [start, end), crossing
    midnight when end is before start (22:00-04:00)."""

    start: time
    end: time

    def contains(self, moment: time) -> bool:
        moment = moment.replace(tzinfo=None)
        if self.start < self.end:
            return self.start <= moment < self.end
        return moment >= self.start or moment < self.end

    def opened(self, local: datetime) -> datetime | None:
        """When the instance of this window that holds `local` (a datetime
        in the schedule's timezone) opened, or None when it does not hold it."""
        if local.tzinfo is None:
            raise ValueError("expected a timezone-aware datetime")
        if not self.contains(local.time()):
            return None
        day = local.date()
        if self.end < self.start and local.time() < self.end:
            day -= timedelta(days=1)  # after midnight: the window opened yesterday
        return local_datetime(day, self.start, local.tzinfo)

    def __str__(self) -> str:
        return f"{self.start:%H:%M}-{self.end:%H:%M}"


@dataclass(frozen=True)
class Blackout:
    """No drill on these local dates, both ends included."""

    start: date
    end: date
    reason: str

    def contains(self, day: date) -> bool:
        return self.start <= day <= self.end


@dataclass(frozen=True)
class FaultCommand:
    """How a drill cuts the primary outside the lab, and how it puts it back."""

    command: tuple[str, ...]
    restore: tuple[str, ...]


@dataclass(frozen=True)
class DrillThresholds:
    max_outage: float  # seconds: the data plane's longest gap at the failover
    max_failback_outage: float  # ... and at the failback
    load_test_must_pass: bool  # the degraded-mode verdict decides the drill


@dataclass(frozen=True)
class DrillSettings:
    baseline: float  # seconds of load test on the primary before the fault
    degraded: float  # seconds of load test on the backup after the failover
    terminals: int
    settle: float  # the observer runs this long before the fault
    failback_timeout: float  # restore -> traffic on the primary, beyond the hold-down
    thresholds: DrillThresholds


Fault = Literal["lab"] | FaultCommand


@dataclass(frozen=True)
class DrillSchedule:
    index: int  # its position under drills.schedules
    towns: tuple[str, ...]  # "all" resolved: every town, in cutover order
    cron: str
    timezone: str
    windows: tuple[TimeWindow, ...]  # empty: any time of day
    blackouts: tuple[Blackout, ...]
    fault: Fault
    settings: DrillSettings  # the defaults with this schedule's overrides

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def allows_time(self, moment: datetime) -> bool:
        """Whether `moment` falls inside a window (always, with no windows)."""
        local = moment.astimezone(self.zone).time()
        return not self.windows or any(w.contains(local) for w in self.windows)

    def window_opened(self, moment: datetime) -> datetime | None:
        """When the window holding `moment` opened (local time); None outside
        every window, or when the schedule has none."""
        local = moment.astimezone(self.zone)
        opened = [w.opened(local) for w in self.windows]
        return min((o for o in opened if o is not None), default=None)

    def blackout(self, moment: datetime) -> Blackout | None:
        """The blackout covering `moment`'s local date, if any."""
        day = moment.astimezone(self.zone).date()
        return next((b for b in self.blackouts if b.contains(day)), None)

    def describe_windows(self) -> str:
        return ", ".join(map(str, self.windows)) or "any time"


@dataclass(frozen=True)
class Drills:
    defaults: DrillSettings
    schedules: tuple[DrillSchedule, ...]

    def schedules_of(self, town: str) -> tuple[DrillSchedule, ...]:
        return tuple(s for s in self.schedules if town in s.towns)


def local_datetime(day: date, moment: time, zone: tzinfo) -> datetime:
    """`day` at `moment` in `zone`, normalised through UTC so that a time in a
    DST gap lands on a real instant."""
    return datetime.combine(day, moment, tzinfo=zone).astimezone(UTC).astimezone(zone)


# --- parsers for the model's validators ----------------------------------------

_WINDOW = re.compile(r"^\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*$")


def parse_window(value: object) -> object:
    """'01:00-05:00' -> TimeWindow(01:00, 05:00)."""
    if isinstance(value, TimeWindow):
        return value
    match = _WINDOW.match(value) if isinstance(value, str) else None
    if match is None:
        raise ValueError(f"expected a window of local times like '01:00-05:00', got {value!r}")
    h1, m1, h2, m2 = map(int, match.groups())
    if h1 > 23 or h2 > 23 or m1 > 59 or m2 > 59:
        raise ValueError(f"times of day run from 00:00 to 23:59, got {value!r}")
    window = TimeWindow(time(h1, m1), time(h2, m2))
    if window.start == window.end:
        raise ValueError(f"window {value!r} is empty; leave out `windows` to allow any time")
    return window


def check_cron(value: str) -> str:
    """A five-field cron expression that cronsim accepts."""
    fields = value.split()
    if len(fields) != len(CRON_FIELDS):
        raise ValueError(
            f"expected 5 cron fields ({' '.join(CRON_FIELDS)}), got {len(fields)} in {value!r}"
        )
    try:
        CronSim(value, datetime(2000, 1, 1, tzinfo=UTC))
    except CronSimError as exc:
        # cronsim says "Bad hour" and the like: name the field and its text.
        reason = str(exc)
        for index, name in enumerate(CRON_FIELDS):
            if reason == f"Bad {name}":
                raise ValueError(f"bad {name} field {fields[index]!r} in cron {value!r}") from None
        raise ValueError(f"cron {value!r} does not parse: {reason}") from None
    return value


def check_timezone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"unknown timezone {value!r} (expected an IANA name like 'Asia/Tokyo')"
        ) from None
    return value
