"""When scheduled drills run (netwatch.drill.schedule): cron in a timezone,
windows (also across midnight), blackouts inclusive of their last day, the
catch-up limit, two schedules on one town, and the drill log.  Fixed
datetimes throughout: nothing here reads a clock or sleeps."""

from __future__ import annotations

import json
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from netwatch.drill.schedule import (
    CATCH_UP,
    DEFAULT_DRILL_LOG,
    DrillLog,
    DrillLogError,
    DueCheck,
    due_drills,
    next_drill,
)
from netwatch.errors import UserError
from netwatch.topology import TimeWindow, Topology, load, loads

ROOT = Path(__file__).resolve().parent.parent
GOOD = (ROOT / "topology.yaml").read_text(encoding="utf-8")
JST = ZoneInfo("Asia/Tokyo")
ALL = ("nishiki", "takaharu", "tsuno", "kawaminami")


def with_drills(section: str) -> Topology:
    """The real topology with its `drills:` section replaced by `section`
    (top-level YAML, or "" for none)."""
    lines = GOOD.splitlines(keepends=True)
    start = lines.index("drills:\n")
    end = start + 1
    while end < len(lines) and (lines[end].startswith((" ", "\n"))):
        end += 1
    return loads("".join([*lines[:start], section, *lines[end:]]), "t.yaml")


def schedule(body: str, *more: str) -> Topology:
    """A topology whose schedules are `body` and `more` (YAML mappings)."""
    items = "".join(f"    - {text}\n" for text in (body, *more))
    return with_drills(f"drills:\n  schedules:\n{items}")


def jst(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=JST)


def checks_of(
    topo: Topology, now: datetime, last: dict[str, datetime] | None = None
) -> dict[tuple[int, str], DueCheck]:
    return {(c.schedule.index, c.town): c for c in due_drills(topo, now, last or {})}


WEEKLY = '{towns: [nishiki], cron: "0 2 * * 2", timezone: Asia/Tokyo, fault: lab}'
WEEKLY_IN_WINDOW = (
    '{towns: [nishiki], cron: "0 2 * * 2", timezone: Asia/Tokyo, '
    'windows: ["01:00-05:00"], fault: lab}'
)


# --- the real file -------------------------------------------------------------


def test_the_real_schedules_drill_one_town_a_week_in_cutover_order() -> None:
    topo = load(ROOT / "topology.yaml")
    after = datetime(2026, 12, 1, 22, 52, tzinfo=UTC)  # Wed 07:52 JST
    nexts = {town: next_drill(topo, town, after) for town in ALL}
    # December's first Tuesday has passed; January's (the 5th) follows the
    # New Year holiday blackout, which ends on the 4th.
    assert nexts == {
        "nishiki": jst(2027, 1, 5, 2, 0),
        "takaharu": jst(2026, 12, 8, 2, 0),
        "tsuno": jst(2026, 12, 15, 2, 0),
        "kawaminami": jst(2026, 12, 22, 2, 0),
    }
    assert all(n is not None and n.tzinfo == JST for n in nexts.values())
    # The third Tuesdays of February to June 2027 all fall in a busy season
    # (June 15th is the resident-tax blackout's last day, which it includes).
    assert next_drill(topo, "tsuno", jst(2027, 2, 1)) == jst(2027, 7, 20, 2, 0)


def test_a_topology_without_drills_has_builtin_defaults_and_no_schedules() -> None:
    topo = with_drills("")
    assert topo.drills.schedules == ()
    assert topo.drills.defaults.degraded == 300.0
    assert topo.drills.defaults.thresholds.load_test_must_pass is True
    assert next_drill(topo, "nishiki", jst(2026, 12, 1)) is None
    assert due_drills(topo, jst(2026, 12, 1), {}) == []


def test_next_drill_refuses_an_unknown_town_and_a_naive_time() -> None:
    topo = schedule(WEEKLY)
    with pytest.raises(KeyError, match="unknown town 'nowhere'"):
        next_drill(topo, "nowhere", jst(2026, 12, 1))
    with pytest.raises(ValueError, match="timezone-aware"):
        next_drill(topo, "nishiki", datetime(2026, 12, 1))
    with pytest.raises(ValueError, match="timezone-aware"):
        due_drills(topo, datetime(2026, 12, 1), {})


# --- cron in the schedule's timezone ----------------------------------------------


def test_cron_fields_are_local_to_the_schedules_timezone() -> None:
    topo = schedule(WEEKLY)
    # Tue 2026-12-01 09:00 JST is 00:00 UTC: the Tuesday 02:00 JST of that day
    # has passed (it was Mon 17:00 UTC), the next is a week later.
    upcoming = next_drill(topo, "nishiki", datetime(2026, 12, 1, 0, 0, tzinfo=UTC))
    assert upcoming == datetime(2026, 12, 7, 17, 0, tzinfo=UTC)
    assert upcoming is not None
    assert upcoming.utcoffset() == timedelta(hours=9)
    # Strictly after: the occurrence itself is not "next".
    assert next_drill(topo, "nishiki", jst(2026, 12, 8, 2, 0)) == jst(2026, 12, 15, 2, 0)
    assert next_drill(topo, "nishiki", jst(2026, 12, 8, 1, 59, 59)) == jst(2026, 12, 8, 2, 0)


def test_a_daily_cron_follows_daylight_saving_time() -> None:
    berlin = ZoneInfo("Europe/Berlin")
    topo = schedule('{towns: all, cron: "30 3 * * *", timezone: Europe/Berlin, fault: lab}')
    # Summer time begins on 2027-03-28 at 02:00 CET.
    before = next_drill(topo, "tsuno", datetime(2027, 3, 26, 4, 0, tzinfo=berlin))
    after = next_drill(topo, "tsuno", datetime(2027, 3, 27, 4, 0, tzinfo=berlin))
    assert before is not None
    assert after is not None
    assert (before.hour, before.minute, after.hour, after.minute) == (3, 30, 3, 30)
    # 03:30 local each day: a day of 23 hours between them in UTC.
    assert after - before == timedelta(hours=24)
    assert after.astimezone(UTC) - before.astimezone(UTC) == timedelta(hours=23)


# --- windows -------------------------------------------------------------------------

NIGHTLY = (
    '{towns: [nishiki], cron: "0 * * * *", timezone: Asia/Tokyo, '
    'windows: ["22:00-04:00"], fault: lab}'
)


@pytest.mark.parametrize(
    ("moment", "inside"),
    [
        (time(22, 0), True),
        (time(23, 59), True),
        (time(0, 0), True),
        (time(3, 59), True),
        (time(4, 0), False),  # the end is not inside
        (time(12, 0), False),
        (time(21, 59), False),
    ],
)
def test_a_window_across_midnight(moment: time, inside: bool) -> None:
    assert TimeWindow(time(22, 0), time(4, 0)).contains(moment) is inside


def test_a_window_within_a_day_excludes_its_end() -> None:
    window = TimeWindow(time(1, 0), time(5, 0))
    assert [window.contains(time(h)) for h in (0, 1, 4, 5)] == [False, True, True, False]
    assert str(window) == "01:00-05:00"


def test_next_drill_waits_for_a_window_that_crosses_midnight() -> None:
    topo = schedule(NIGHTLY)
    assert next_drill(topo, "nishiki", jst(2026, 12, 1, 12, 0)) == jst(2026, 12, 1, 22, 0)
    assert next_drill(topo, "nishiki", jst(2026, 12, 1, 23, 0)) == jst(2026, 12, 2, 0, 0)
    # 03:00 is the last hourly occurrence inside; 04:00 is outside.
    assert next_drill(topo, "nishiki", jst(2026, 12, 2, 3, 0)) == jst(2026, 12, 2, 22, 0)


def test_a_drill_is_due_after_midnight_in_a_window_that_opened_the_day_before() -> None:
    topo = schedule(
        '{towns: [nishiki], cron: "0 23 * * *", timezone: Asia/Tokyo, '
        'windows: ["22:00-04:00"], fault: lab}'
    )
    check = checks_of(topo, jst(2026, 12, 2, 3, 30))[(0, "nishiki")]
    assert check.due, check.why
    assert check.occurrence == jst(2026, 12, 1, 23, 0)
    late = checks_of(topo, jst(2026, 12, 2, 4, 10))[(0, "nishiki")]
    assert not late.due
    assert late.why == "skipped: outside the window 22:00-04:00"


def test_outside_the_window_the_drill_is_skipped() -> None:
    topo = schedule(WEEKLY_IN_WINDOW)
    check = checks_of(topo, jst(2026, 12, 8, 5, 10))[(0, "nishiki")]
    assert (check.due, check.why) == (False, "skipped: outside the window 01:00-05:00")
    assert check.occurrence == jst(2026, 12, 8, 2, 0)


def test_an_occurrence_whose_window_closed_is_not_caught_up_in_the_next_one() -> None:
    topo = schedule(
        '{towns: [nishiki], cron: "0 2 * * *", timezone: Asia/Tokyo, '
        'windows: ["01:00-02:30", "03:00-05:00"], fault: lab}'
    )
    check = checks_of(topo, jst(2026, 12, 8, 3, 10))[(0, "nishiki")]
    assert not check.due
    assert check.why == (
        "not due: 2026-12-08 02:00 JST fell outside this window; next 2026-12-09 02:00 JST"
    )
    assert checks_of(topo, jst(2026, 12, 8, 2, 20))[(0, "nishiki")].due


# --- blackouts -------------------------------------------------------------------------

DAILY_WITH_BLACKOUT = (
    '{towns: [nishiki], cron: "0 2 * * *", timezone: Asia/Tokyo, fault: lab, '
    "blackouts: [{from: 2027-03-15, to: 2027-04-15, reason: 年度末・年度初めの異動繁忙期}]}"
)


def test_a_blackout_includes_its_last_day() -> None:
    topo = schedule(DAILY_WITH_BLACKOUT)
    assert next_drill(topo, "nishiki", jst(2027, 3, 14, 3, 0)) == jst(2027, 4, 16, 2, 0)
    assert next_drill(topo, "nishiki", jst(2027, 3, 14, 1, 0)) == jst(2027, 3, 14, 2, 0)
    check = checks_of(topo, jst(2027, 4, 15, 2, 10))[(0, "nishiki")]
    assert not check.due
    assert check.why == "skipped: blackout 年度末・年度初めの異動繁忙期 until 2027-04-15"
    assert checks_of(topo, jst(2027, 4, 16, 2, 10))[(0, "nishiki")].due
    assert checks_of(topo, jst(2027, 3, 15, 2, 10))[(0, "nishiki")].why.startswith("skipped")


def test_blackout_dates_are_local_dates() -> None:
    topo = schedule(DAILY_WITH_BLACKOUT)
    # 2027-04-15 17:10 UTC is already the 16th, 02:10, in Tokyo.
    check = checks_of(topo, datetime(2027, 4, 15, 17, 10, tzinfo=UTC))[(0, "nishiki")]
    assert check.due, check.why


def test_next_drill_skips_blackouts_and_gives_up_beyond_its_horizon() -> None:
    weekly = (
        WEEKLY.removesuffix("}") + ", blackouts: [{from: 2026-12-01, to: 2026-12-31, reason: x}]}"
    )
    topo = schedule(weekly)
    assert next_drill(topo, "nishiki", jst(2026, 11, 30)) == jst(2027, 1, 5, 2, 0)
    forever = (
        WEEKLY.removesuffix("}") + ", blackouts: [{from: 2026-01-01, to: 2040-12-31, reason: x}]}"
    )
    topo = schedule(forever)
    assert next_drill(topo, "nishiki", jst(2026, 12, 1)) is None
    check = checks_of(topo, jst(2026, 12, 1, 10, 0), {"nishiki": jst(2026, 12, 1, 2, 0)})
    assert check[(0, "nishiki")].why == "not due: no allowed occurrence ahead"


def test_next_drill_is_the_earliest_of_the_towns_schedules() -> None:
    topo = schedule(
        WEEKLY,
        '{towns: all, cron: "0 3 * * 4", timezone: Asia/Tokyo, fault: lab}',
    )
    assert next_drill(topo, "nishiki", jst(2026, 12, 2)) == jst(2026, 12, 3, 3, 0)
    assert next_drill(topo, "nishiki", jst(2026, 12, 4)) == jst(2026, 12, 8, 2, 0)
    assert next_drill(topo, "tsuno", jst(2026, 12, 4)) == jst(2026, 12, 10, 3, 0)
    assert topo.drills.schedules[1].towns == ALL


# --- due drills ------------------------------------------------------------------------------


def test_a_town_that_never_ran_a_drill_is_due_at_the_occurrence() -> None:
    topo = schedule(WEEKLY_IN_WINDOW)
    check = checks_of(topo, jst(2026, 12, 8, 2, 0))[(0, "nishiki")]
    assert check.due
    assert check.why == "due: Tue 02:00 JST occurrence not run yet (never run)"
    assert check.occurrence == jst(2026, 12, 8, 2, 0)
    assert check.schedule is topo.drills.schedules[0]


def test_a_drill_already_started_is_not_due_again() -> None:
    topo = schedule(WEEKLY_IN_WINDOW)
    started = {"nishiki": datetime(2026, 12, 7, 17, 1, tzinfo=UTC)}  # 02:01 JST
    check = checks_of(topo, jst(2026, 12, 8, 2, 15), started)[(0, "nishiki")]
    assert not check.due
    assert check.why == "not due: next 2026-12-15 02:00 JST"
    assert check.occurrence == jst(2026, 12, 15, 2, 0)
    # A run before this occurrence (last week's) does not count for it.
    last_week = {"nishiki": jst(2026, 12, 1, 2, 1)}
    check = checks_of(topo, jst(2026, 12, 8, 2, 15), last_week)[(0, "nishiki")]
    assert check.due
    assert check.why == "due: Tue 02:00 JST occurrence not run yet"


def test_before_the_occurrence_nothing_is_due() -> None:
    topo = schedule(WEEKLY_IN_WINDOW)
    ran = {"nishiki": jst(2026, 12, 1, 2, 0)}
    check = checks_of(topo, jst(2026, 12, 8, 1, 59), ran)[(0, "nishiki")]
    assert (check.due, check.why) == (False, "not due: next 2026-12-08 02:00 JST")


@pytest.mark.parametrize(
    ("late", "due"),
    [
        (timedelta(0), True),
        (timedelta(hours=5, minutes=59), True),
        (CATCH_UP, True),
        (CATCH_UP + timedelta(minutes=1), False),
        (timedelta(days=6, hours=10), False),  # a machine off for a week, at noon
    ],
)
def test_a_late_check_catches_up_for_six_hours_only(late: timedelta, due: bool) -> None:
    topo = schedule(WEEKLY)
    now = jst(2026, 12, 8, 2, 0) + late
    check = checks_of(topo, now)[(0, "nishiki")]
    assert check.due is due, check.why
    if not due:
        assert check.why == (
            "not due: missed 2026-12-08 02:00 JST (over 6 h ago); next 2026-12-15 02:00 JST"
        )


def test_two_schedules_on_one_town_run_one_drill_the_first_wins() -> None:
    topo = schedule(
        '{towns: [takaharu], cron: "0 2 * * *", timezone: Asia/Tokyo, fault: lab}',
        '{towns: all, cron: "0 2 * * 2", timezone: Asia/Tokyo, fault: lab}',
    )
    checks = checks_of(topo, jst(2026, 12, 8, 2, 5))
    assert [k for k, c in checks.items() if c.due] == [
        (0, "takaharu"),
        (1, "nishiki"),
        (1, "tsuno"),
        (1, "kawaminami"),
    ]
    second = checks[(1, "takaharu")]
    assert second.why == "skipped: schedule 0 runs takaharu's drill now"
    assert second.occurrence == jst(2026, 12, 8, 2, 0)
    # On a day only the second schedule fires, it runs the town itself.
    ran = {"takaharu": jst(2026, 12, 8, 2, 5)}
    checks = checks_of(topo, jst(2026, 12, 8, 3, 0), ran)
    assert not checks[(0, "takaharu")].due
    assert not checks[(1, "takaharu")].due


def test_every_pair_of_schedule_and_town_gets_a_check_in_order() -> None:
    topo = schedule(
        '{towns: [tsuno, nishiki], cron: "0 2 * * 2", timezone: Asia/Tokyo, fault: lab}',
        '{towns: all, cron: "0 2 * * 3", timezone: Asia/Tokyo, fault: lab}',
    )
    pairs = [(c.schedule.index, c.town) for c in due_drills(topo, jst(2026, 12, 8, 12), {})]
    assert pairs == [(0, "tsuno"), (0, "nishiki")] + [(1, t) for t in ALL]


# --- the drill log -------------------------------------------------------------------------


def test_the_drill_log_remembers_each_towns_last_start(tmp_path: Path) -> None:
    log = DrillLog(tmp_path / "state" / "drills.json")
    assert log.load() == {}
    log.record("nishiki", jst(2026, 12, 1, 2, 0))
    log.record("tsuno", datetime(2026, 12, 15, 17, 0, tzinfo=UTC))
    log.record("nishiki", jst(2027, 1, 5, 2, 0))
    assert log.load() == {"nishiki": jst(2027, 1, 5, 2, 0), "tsuno": jst(2026, 12, 16, 2, 0)}
    data = json.loads(log.path.read_text(encoding="utf-8"))
    assert data["schema"] == 1
    assert list(log.path.parent.iterdir()) == [log.path]  # no temp file left behind
    assert DEFAULT_DRILL_LOG == "/var/lib/netwatch/drills.json"


@pytest.mark.parametrize(
    "content",
    [
        "{not json",
        "[]",
        '{"schema": 2, "last_runs": {}}',
        '{"schema": 1, "last_runs": []}',
        '{"schema": 1, "last_runs": {"nishiki": "yesterday"}}',
        '{"schema": 1, "last_runs": {"nishiki": "2026-12-01T02:00:00"}}',
        '{"schema": 1, "last_runs": {"nishiki": 5}}',
    ],
)
def test_a_corrupt_drill_log_is_one_line_naming_it(tmp_path: Path, content: str) -> None:
    path = tmp_path / "drills.json"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(DrillLogError) as info:
        DrillLog(path).load()
    assert isinstance(info.value, UserError)
    message = str(info.value)
    assert message.startswith(f"{path}: corrupt drill log (")
    assert "\n" not in message
    with pytest.raises(DrillLogError):
        DrillLog(path).record("nishiki", jst(2026, 12, 1))  # never overwrites it blindly
    assert path.read_text(encoding="utf-8") == content


def test_the_drill_log_refuses_a_naive_time(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        DrillLog(tmp_path / "d.json").record("nishiki", datetime(2026, 12, 1))
    assert not (tmp_path / "d.json").exists()


def test_an_unreachable_drill_log_is_one_line(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("", encoding="utf-8")
    with pytest.raises(DrillLogError) as info:
        DrillLog(blocker / "drills.json").record("nishiki", jst(2026, 12, 1))
    assert (
        str(info.value) == f"{blocker / 'drills.json'}: cannot read the drill log: Not a directory"
    )


def test_a_failed_write_keeps_the_old_log_and_leaves_no_temp_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = DrillLog(tmp_path / "drills.json")
    log.record("nishiki", jst(2026, 12, 1, 2, 0))
    before = log.path.read_text(encoding="utf-8")

    def refuse(src: str, dst: Path) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("netwatch.drill.schedule.os.replace", refuse)
    with pytest.raises(DrillLogError) as info:
        log.record("tsuno", jst(2026, 12, 15, 2, 0))
    assert str(info.value) == f"{log.path}: cannot write the drill log: No space left on device"
    assert log.path.read_text(encoding="utf-8") == before
    assert list(tmp_path.iterdir()) == [log.path]
