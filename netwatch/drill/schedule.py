"""When a scheduled drill runs: pure functions of the topology and `now`.

    next_drill(topo, town, after)        the next allowed occurrence, or None
    due_drills(topo, now, last_runs)     one DueCheck per (schedule, town)
    DrillLog(path)                       the last start of each town's drill

A cron occurrence is allowed when it falls inside one of its schedule's
windows and outside every blackout (local times and dates of the
schedule's timezone).  An allowed occurrence is due until the town's drill
starts, but only while its window is still open and for at most
`CATCH_UP`: a machine that was off for a week must not run last week's
drill at noon.  No clock is read here; the caller passes `now`.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from cronsim import CronSim

from netwatch.errors import UserError
from netwatch.topology import Topology
from netwatch.topology.drills import DrillSchedule, local_datetime

DEFAULT_DRILL_LOG = "/var/lib/netwatch/drills.json"
CATCH_UP = timedelta(hours=6)  # the oldest occurrence a late run still catches up
HORIZON = timedelta(days=2 * 366)  # how far next_drill looks ahead
_MAX_STEPS = 10_000  # occurrences examined per search, whatever the cron


@dataclass(frozen=True)
class DueCheck:
    town: str
    schedule: DrillSchedule
    due: bool
    why: str  # one short sentence for logs and `netwatch drill --due`
    # The occurrence this check is about: the one due (or missed, or
    # skipped), else the next allowed one; None when there is none.
    occurrence: datetime | None


def next_drill(topo: Topology, town: str, after: datetime) -> datetime | None:
    """The next time a scheduled drill of `town` would run, strictly after
    `after`: the earliest allowed occurrence of its schedules within
    `HORIZON`, in the timezone of its schedule; None if there is none."""
    topo.town(town)  # KeyError naming the known towns
    found = (next_allowed(s, after) for s in topo.drills.schedules_of(town))
    return min((f for f in found if f is not None), default=None)


def next_allowed(schedule: DrillSchedule, after: datetime) -> datetime | None:
    """The schedule's first allowed occurrence strictly after `after`."""
    _aware(after)
    horizon = after + HORIZON
    cursor = after
    for _ in range(_MAX_STEPS):
        occurrence = _first_after(schedule, cursor)
        if occurrence is None or occurrence > horizon:
            return None
        blackout = schedule.blackout(occurrence)
        if blackout is not None:
            # Jump past the blackout instead of stepping through it.
            day_after = blackout.end + timedelta(days=1)
            cursor = local_datetime(day_after, datetime.min.time(), schedule.zone)
            cursor -= timedelta(seconds=1)
            continue
        if not schedule.allows_time(occurrence):
            cursor = _next_window_start(schedule, occurrence) - timedelta(seconds=1)
            continue
        return occurrence
    return None


def due_drills(topo: Topology, now: datetime, last_runs: Mapping[str, datetime]) -> list[DueCheck]:
    """Whether each (schedule, town) pair has a drill to run at `now`.

    `last_runs[town]` is when the town's last drill started (absent: never).
    At most one check per town is due: when two schedules are due for one
    town, the first (in file order) wins and the other says so.
    """
    _aware(now)
    checks: list[DueCheck] = []
    running: dict[str, int] = {}  # town -> the schedule whose drill runs now
    for schedule in topo.drills.schedules:
        for town in schedule.towns:
            check = _check(schedule, town, now, last_runs.get(town))
            if check.due and town in running:
                check = DueCheck(
                    town,
                    schedule,
                    False,
                    f"skipped: schedule {running[town]} runs {town}'s drill now",
                    check.occurrence,
                )
            elif check.due:
                running[town] = schedule.index
            checks.append(check)
    return checks


def _check(schedule: DrillSchedule, town: str, now: datetime, last: datetime | None) -> DueCheck:
    def verdict(due: bool, why: str, occurrence: datetime | None) -> DueCheck:
        return DueCheck(town, schedule, due, why, occurrence)

    def not_due(reason: str = "") -> DueCheck:
        upcoming = next_allowed(schedule, now)
        ahead = f"next {_long(upcoming)}" if upcoming else "no allowed occurrence ahead"
        return verdict(
            False, f"not due: {reason}; {ahead}" if reason else f"not due: {ahead}", upcoming
        )

    latest = _latest_at_or_before(schedule, now)
    if latest is None or (last is not None and _aware(last) >= latest):
        return not_due()
    if now - latest > CATCH_UP:
        hours = CATCH_UP.total_seconds() / 3600
        return not_due(f"missed {_long(latest)} (over {hours:g} h ago)")
    for moment in (latest, now):
        blackout = schedule.blackout(moment)
        if blackout is not None:
            why = f"skipped: blackout {blackout.reason} until {blackout.end}"
            return verdict(False, why, latest)
    if not schedule.allows_time(now):
        why = f"skipped: outside the window {schedule.describe_windows()}"
        return verdict(False, why, latest)
    opened = schedule.window_opened(now)
    if opened is not None and latest < opened:
        # The occurrence fell before this window opened: outside a window,
        # or in an earlier one that closed before the drill could start.
        return not_due(f"{_long(latest)} fell outside this window")
    never = " (never run)" if last is None else ""
    return verdict(True, f"due: {_short(latest)} occurrence not run yet{never}", latest)


# --- cron occurrences ------------------------------------------------------------


def _first_after(schedule: DrillSchedule, moment: datetime) -> datetime | None:
    # cronsim yields occurrences strictly after its start, in its timezone.
    return next(CronSim(schedule.cron, moment.astimezone(schedule.zone)), None)


def _latest_at_or_before(schedule: DrillSchedule, moment: datetime) -> datetime | None:
    # Going backwards cronsim starts strictly before its start; a second
    # later (whole seconds) makes `moment` itself a candidate.
    start = moment.astimezone(schedule.zone).replace(microsecond=0) + timedelta(seconds=1)
    return next(CronSim(schedule.cron, start, reverse=True), None)


def _next_window_start(schedule: DrillSchedule, moment: datetime) -> datetime:
    local = moment.astimezone(schedule.zone)
    starts: Iterator[datetime] = (
        local_datetime(local.date() + timedelta(days=d), w.start, schedule.zone)
        for d in (0, 1)
        for w in schedule.windows
    )
    return min(s for s in starts if s > local)


def _aware(moment: datetime) -> datetime:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"expected a timezone-aware datetime, got {moment!r}")
    return moment


def _short(moment: datetime) -> str:
    return f"{moment:%a %H:%M %Z}"


def _long(moment: datetime) -> str:
    return f"{moment:%Y-%m-%d %H:%M %Z}"


# --- the drill log -----------------------------------------------------------------


class DrillLogError(UserError):
    """The drill log cannot be read or written."""


class DrillLog:
    """When each town's last drill started: a small JSON file,
    ``{"schema": 1, "last_runs": {"nishiki": "2026-12-01T17:00:00+00:00"}}``,
    replaced atomically so that a crash never leaves half a file."""

    SCHEMA = 1

    def __init__(self, path: str | Path = DEFAULT_DRILL_LOG) -> None:
        self.path = Path(path)

    def load(self) -> dict[str, datetime]:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {}
        except (OSError, UnicodeDecodeError) as exc:
            raise DrillLogError(f"{self.path}: cannot read the drill log: {_reason(exc)}") from None
        try:
            return self._parse(json.loads(text))
        except ValueError as exc:
            raise DrillLogError(
                f"{self.path}: corrupt drill log ({exc}); fix or remove it"
            ) from None

    def record(self, town: str, started: datetime) -> None:
        """Remember that `town`'s drill started at `started` (timezone-aware)."""
        runs = self.load()
        runs[town] = _aware(started)
        payload = {
            "schema": self.SCHEMA,
            "last_runs": {t: at.isoformat() for t, at in sorted(runs.items())},
        }
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", dir=self.path.parent)
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as out:
                    json.dump(payload, out, ensure_ascii=False, indent=2)
                    out.write("\n")
                    out.flush()
                    os.fsync(out.fileno())
                os.replace(tmp, self.path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        except OSError as exc:
            raise DrillLogError(
                f"{self.path}: cannot write the drill log: {_reason(exc)}"
            ) from None

    def _parse(self, data: object) -> dict[str, datetime]:
        if not isinstance(data, dict) or data.get("schema") != self.SCHEMA:
            raise ValueError(f"expected a mapping with schema {self.SCHEMA}")
        runs = data.get("last_runs")
        if not isinstance(runs, dict):
            raise ValueError("expected last_runs: a mapping of town to start time")
        out: dict[str, datetime] = {}
        for town, text in runs.items():
            if not isinstance(text, str):
                raise ValueError(f"last_runs.{town}: expected an ISO 8601 time, got {text!r}")
            at = datetime.fromisoformat(text)  # ValueError names the bad text
            if at.tzinfo is None:
                raise ValueError(f"last_runs.{town}: {text!r} has no UTC offset")
            out[town] = at
        return out


def _reason(exc: Exception) -> str:
    return exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
