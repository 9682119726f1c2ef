"""`netwatch check`: validate topology.yaml and summarise what it describes."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TextIO

from netwatch.drill.schedule import next_drill
from netwatch.errors import EXIT_FAIL, EXIT_OK
from netwatch.topology import DEFAULT_PATH, DrillSettings, Topology, TopologyError, load
from netwatch.topology.units import format_duration, format_percentage, format_rate


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "check",
        help="validate topology.yaml and print a summary",
        description=(
            "Validate a topology file. Prints a short summary and exits 0 when it is "
            "valid; prints every problem (file:line: key.path: what was expected) and "
            "exits 1 when it is not."
        ),
    )
    parser.add_argument(
        "file", nargs="?", default=DEFAULT_PATH, help=f"topology file (default: {DEFAULT_PATH})"
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    try:
        topo = load(args.file)
    except TopologyError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        count = len(exc.problems)
        print(f"{args.file}: {count} problem{'s' if count != 1 else ''}", file=sys.stderr)
        return EXIT_FAIL
    print_summary(args.file, topo, sys.stdout)
    return EXIT_OK


def print_summary(name: str, topo: Topology, out: TextIO, *, now: datetime | None = None) -> None:
    """`now` (default: the clock) dates each town's next drill."""
    residents = sum(t.population for t in topo.towns)
    terminals = sum(t.terminals for t in topo.towns)
    w = out.write
    w(f"{name}: valid\n")
    w(f"towns: {len(topo.towns)} ({residents:,} residents, {terminals} terminals)\n")
    for town in topo.towns:
        w(
            f"  {town.id:<11} {town.name} ({town.prefecture}) population {town.population:,}, "
            f"cutover week {town.cutover_week}, {town.terminals} terminals\n"
        )
        for path in town.paths_by_preference:
            w(
                f"    {path.role:<7} {path.name:<8} {path.network:<6} {path.interface:<7} "
                f"{path.address!s:<16} via {path.gateway!s:<13} "
                f"{format_rate(path.bandwidth):>7}  {path.access_point}\n"
            )
    dc, ops = topo.datacenter, topo.opscenter
    targets = dc.targets
    w(f"datacenter: {dc.name}, prefixes {', '.join(map(str, dc.prefixes))}\n")
    w(f"  targets: icmp {targets.icmp}, tcp {targets.tcp}, http {targets.http}\n")
    w(
        f"opscenter: {ops.name}, prefix {ops.prefix}, mqtt {ops.mqtt}, "
        f"prometheus {ops.prometheus}, grafana {ops.grafana}\n"
    )
    w(f"policy: default {topo.policy.default}\n")
    for pname, prof in topo.policy.profiles.items():
        interval, suspect = format_duration(prof.interval), format_duration(prof.suspect_interval)
        fail_loss, fail_latency = (
            format_percentage(prof.fail.loss),
            format_duration(prof.fail.latency),
        )
        w(
            f"  {pname:<16} interval {interval} (suspect {suspect}), "
            f"fall {prof.fall}, rise {prof.rise}, fail at {fail_loss} loss / {fail_latency}, "
            f"hold-down {format_duration(prof.failback_holddown)}\n"
        )
    lt = topo.loadtest
    duration = format_duration(lt.duration)
    w(f"loadtest: {lt.terminals} terminals for {duration} against {lt.base_url}\n")
    w(f"  {'transaction':<15} {'p95':>6} {'p99':>6} {'errors':>7} {'degr.':>6}\n")
    for tname, sla in lt.sla.items():
        w(
            f"  {tname:<15} {format_duration(sla.p95):>6} {format_duration(sla.p99):>6} "
            f"{format_percentage(sla.max_error_ratio):>7} {sla.max_degradation:>5g}x\n"
        )
    for label, alerts in (("alerts", topo.alerts), ("  in the lab", topo.lab_alerts)):
        d = format_duration
        w(
            f"{label}: path down {d(alerts.path_down_for)}, on backup {d(alerts.on_backup_after)}, "
            f"silent {d(alerts.stale_for)}, flapping at {alerts.flapping_per_hour} failovers/h\n"
        )
    _print_drills(topo, w, now or datetime.now(UTC))
    lab = topo.lab
    w(
        f"lab: {len(lab.nodes)} nodes + {len(topo.towns)} towns, {len(lab.links)} links, "
        f"{len(lab.profiles)} link profiles, run dir {lab.run_dir}\n"
    )


def _print_drills(topo: Topology, w: Callable[[str], object], now: datetime) -> None:
    drills = topo.drills
    for label, settings in (("drills", drills.defaults), ("  in the lab", topo.lab_drills)):
        w(f"{label}: {_drill_settings(settings)}\n")
    for schedule in drills.schedules:
        fault = "lab" if schedule.fault == "lab" else " ".join(schedule.fault.command)
        w(
            f"  schedule {schedule.index}: {', '.join(schedule.towns)}; cron {schedule.cron!r} "
            f"({schedule.timezone}), windows {schedule.describe_windows()}, "
            f"{len(schedule.blackouts)} blackouts, fault {fault}\n"
        )
        if schedule.settings != drills.defaults:
            w(f"    settings: {_drill_settings(schedule.settings)}\n")
    if drills.schedules:
        w(f"  next drills (after {now:%Y-%m-%d %H:%M %Z}):\n")
        for town in topo.towns:
            upcoming = next_drill(topo, town.id, now)
            when = f"{upcoming:%a %Y-%m-%d %H:%M %Z}" if upcoming else "none scheduled"
            w(f"    {town.id:<11} {when}\n")


def _drill_settings(s: DrillSettings) -> str:
    d, t = format_duration, s.thresholds
    verdict = "must pass" if t.load_test_must_pass else "ignored"
    return (
        f"baseline {d(s.baseline)}, degraded {d(s.degraded)}, {s.terminals} terminals, "
        f"settle {d(s.settle)}, failback timeout {d(s.failback_timeout)}; "
        f"max outage {d(t.max_outage)} (failback {d(t.max_failback_outage)}), load test {verdict}"
    )
