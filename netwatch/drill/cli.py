"""`netwatch drill`: one failover drill, or the scheduled ones that are due."""

from __future__ import annotations

import argparse
import dataclasses
import shlex
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from netwatch.agent import control
from netwatch.drill.edges import CommandFault, Fault, LabFault, ManualFault
from netwatch.drill.record import EXIT
from netwatch.drill.runner import Drill, DrillSetup
from netwatch.errors import UserError
from netwatch.messages import DrillStatus
from netwatch.mqtt import broker as mqtt_broker
from netwatch.mqtt.broker import Broker
from netwatch.topology import (
    DEFAULT_PATH,
    DrillSchedule,
    DrillSettings,
    FaultCommand,
    Topology,
    load_for_command,
)
from netwatch.topology.units import parse_duration

DEFAULT_LOCK_DIR = "/run/netwatch"

DESCRIPTION = """\
Run one scripted failover drill on a town, with a rollback that always runs:

  precheck   the agent is online and fresh, the primary active and UP, the
             backup UP and not damped, no hold, no other drill on the town,
             the system under test answers (nothing is touched if not)
  baseline   a short load test on the primary (loadprobe)
  fault      --lab: cut the primary in the lab; --fault-command: your own
             injector (with --restore-command); --manual: a person pulls the
             cable and presses Enter
  measure    an independent observer (ICMP and TCP to the service every 10 ms
             from the town side, started before the fault) measures the
             outage; the agent's own detection and route change come from its
             events
  degraded   the 10-terminal load test on the backup, judged against the SLA
             and the baseline
  restore    the fault is put back; then failback: traffic back on the primary
             after the agent's hold-down, and the failback's outage
  verdict    against the drill thresholds of topology.yaml (drills:)

The report (drill.html with a timeline chart, drill.json, junit.xml) goes to
--report-dir; the result is published on MQTT (events, and the retained
netwatch/v1/TOWN/drill topic the operations center shows).

Stop conditions abort at once, restore the fault, stop the load and write a
complete report: every path down, the load test unable to reach the system,
any step failing, Ctrl-C or SIGTERM.

--due runs the drills the schedules of topology.yaml say are due now (for the
systemd timer in deploy/systemd/), and says why each other one is not.

Exit: 0 passed, 1 failed, 2 bad input or precheck refused, 3 aborted.

Secrets: the load tests' terminal password comes from the environment
variable (or file) that topology.yaml's loadtest.credentials names; the MQTT
password, if the broker uses one, from --mqtt-password-file or
$NETWATCH_MQTT_PASSWORD. Neither from the command line nor a report.
"""


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "drill",
        help="run a failover drill on a town, or the scheduled drills that are due",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--town", metavar="ID", help="the town to drill, e.g. nishiki")
    which.add_argument("--due", action="store_true", help="run what the schedules say is due")
    fault = parser.add_mutually_exclusive_group()
    fault.add_argument("--lab", action="store_true", help="cut the primary in the lab")
    fault.add_argument(
        "--fault-command",
        metavar="COMMAND",
        help="a command line (no shell) that cuts the primary; needs --restore-command",
    )
    fault.add_argument(
        "--manual", action="store_true", help="a person pulls the cable when asked (a terminal)"
    )
    parser.add_argument(
        "--restore-command", metavar="COMMAND", help="a command line that puts the primary back"
    )
    parser.add_argument("--topology", default=DEFAULT_PATH, help=f"default: {DEFAULT_PATH}")
    parser.add_argument(
        "--report-dir",
        metavar="DIR",
        help="where the report goes (default: drill-reports/TOWN-UTCTIME in this directory)",
    )
    parser.add_argument("--agent-socket", metavar="PATH", help="the town agent's control socket")
    parser.add_argument(
        "--mqtt",
        help="broker URL for the result, or 'off' (default: the topology's); mqtts:// with "
        "the town's --ca/--cert/--key (in the lab: the lab's)",
    )
    parser.add_argument(
        "--lab-run-dir",
        metavar="DIR",
        help="the lab's run directory (default: topology.yaml's lab.run_dir)",
    )
    parser.add_argument(
        "--drill-log",
        metavar="FILE",
        help="when each town's last drill started, for --due (default: "
        "/var/lib/netwatch/drills.json; the lab's run directory in the lab)",
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="with --due: say what is due, run nothing"
    )
    parser.add_argument(
        "--baseline", metavar="TIME", help="the baseline load test's length (default: drills:)"
    )
    parser.add_argument(
        "--degraded", metavar="TIME", help="the degraded load test's length (default: drills:)"
    )
    mqtt_broker.add_arguments(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    topo = load_for_command(args.topology)
    if args.due:
        return _due(args, topo)
    try:
        town = topo.town(args.town)
    except KeyError as exc:
        raise UserError(str(exc.args[0])) from None
    lab = _in_lab(topo, town.id, args)
    fault = _fault(args, topo, town.id, lab)
    settings = _overridden(topo.drill_settings(town.id, lab=lab is not None), args)
    return _one(args, topo, town.id, fault, settings, lab)


def _overridden(settings: DrillSettings, args: argparse.Namespace) -> DrillSettings:
    changes: dict[str, float] = {}
    for key in ("baseline", "degraded"):
        text = getattr(args, key)
        if text is None:
            continue
        try:
            seconds = parse_duration(text)
        except ValueError as exc:
            raise UserError(f"--{key}: {exc}") from None
        if seconds <= 0:
            raise UserError(f"--{key}: must be positive")
        changes[key] = seconds
    return dataclasses.replace(
        settings,
        baseline=changes.get("baseline", settings.baseline),
        degraded=changes.get("degraded", settings.degraded),
    )


def _in_lab(topo: Topology, town: str, args: argparse.Namespace) -> str | None:
    """The lab's run directory when the town's lab namespace exists."""
    from netwatch.emulator.netns import netns_exists
    from netwatch.lab.plan import make_plan

    if netns_exists(make_plan(topo).nodes[town].netns):
        return str(args.lab_run_dir or topo.lab.run_dir)
    return None


def _fault(args: argparse.Namespace, topo: Topology, town: str, lab: str | None) -> Fault:
    if args.restore_command and not args.fault_command:
        raise UserError("--restore-command goes with --fault-command")
    if args.lab:
        if lab is None:
            raise UserError(f"--lab: no lab runs (no namespace for {town}); `netwatch lab up`")
        return LabFault(topo, lab, town)
    if args.fault_command:
        if not args.restore_command:
            raise UserError("--fault-command needs --restore-command: a drill always rolls back")
        return CommandFault(_argv(args.fault_command), _argv(args.restore_command))
    if args.manual:
        if not sys.stdin.isatty():
            raise UserError("--manual needs a terminal: a person presses Enter")
        return ManualFault(town)
    raise UserError("how is the primary cut? --lab, --fault-command CMD, or --manual")


def _argv(text: str) -> list[str]:
    try:
        argv = shlex.split(text)
    except ValueError as exc:
        raise UserError(f"cannot split {text!r}: {exc}") from None
    if not argv:
        raise UserError("an empty command")
    return argv


def _one(
    args: argparse.Namespace,
    topo: Topology,
    town_id: str,
    fault: Fault,
    settings: DrillSettings,
    lab: str | None,
) -> int:
    from netwatch.drill.record import DrillRecord
    from netwatch.lab.plan import make_plan
    from netwatch.lab.rundir import RunDir

    town = topo.town(town_id)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    report_dir = Path(args.report_dir or f"drill-reports/{town.id}-{stamp}").resolve()
    if report_dir.exists() and any(report_dir.iterdir()):
        raise UserError(f"--report-dir {report_dir}: not empty (a report is never overwritten)")
    plan = make_plan(topo)
    mqtt = _broker(args, topo, town.id, lab)
    lock_dir = RunDir.of(lab).root / "drills" if lab else Path(DEFAULT_LOCK_DIR)
    setup = DrillSetup(
        topo=topo,
        topology_path=str(Path(args.topology).resolve()),
        town=town,
        settings=settings,
        fault=fault,
        report_dir=report_dir,
        socket_path=control.find_socket(topo, town.id, args.agent_socket, lab_run_dir=lab),
        netns=plan.nodes[town.id].netns if lab else None,
        lock_path=lock_dir / f"drill-{town.id}.lock",
        mqtt=mqtt,
        mqtt_netns=plan.nodes["ops"].netns if lab else None,
        lab_run_dir=lab,
        progress=_progress,
    )
    record: DrillRecord = Drill(setup).run()
    return record.exit_code


def _broker(args: argparse.Namespace, topo: Topology, town: str, lab: str | None) -> Broker | None:
    """Where the result goes, as the town: a town may write only its own
    topics.  In the lab, the town's certificate from the lab's PKI unless
    --cert says otherwise."""
    url = args.mqtt if args.mqtt is not None else topo.opscenter.mqtt
    if url == "off":
        return None
    if lab and args.cert is None and args.mqtt is None:
        from netwatch.lab import mqtt as lab_mqtt
        from netwatch.lab.rundir import RunDir

        return lab_mqtt.client(topo, RunDir.of(lab), town)
    return mqtt_broker.from_arguments(url, args)


def _progress(text: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {text}", flush=True)


def _due(args: argparse.Namespace, topo: Topology) -> int:
    from netwatch.drill.schedule import DEFAULT_DRILL_LOG, DrillLog, due_drills

    if args.town or args.lab or args.fault_command or args.manual:
        raise UserError("--due takes its towns and faults from the schedules in topology.yaml")
    first = topo.towns[0].id if topo.towns else None
    lab = _in_lab(topo, first, args) if first else None
    default_log = Path(lab) / "drills.json" if lab else Path(DEFAULT_DRILL_LOG)
    log = DrillLog(args.drill_log or default_log)
    now = datetime.now(UTC)
    checks = due_drills(topo, now, log.load())
    if not checks:
        print("no drill is scheduled (topology.yaml has no drills.schedules)")
        return EXIT[DrillStatus.PASSED]
    due = [c for c in checks if c.due]
    for check in checks:
        print(f"{check.town} (schedule {check.schedule.index}): {check.why}")
    if args.dry_run or not due:
        return EXIT[DrillStatus.PASSED]
    worst = 0
    for check in due:
        fault = _scheduled_fault(check.schedule, topo, check.town, lab)
        settings = _overridden(
            topo.drill_settings(check.town, lab=lab is not None, schedule=check.schedule), args
        )
        log.record(check.town, now)  # before it runs: a crash must not re-run it every 15 min
        args.report_dir = None
        code = _one(args, topo, check.town, fault, settings, lab)
        worst = max(worst, code)
    return worst


def _scheduled_fault(schedule: DrillSchedule, topo: Topology, town: str, lab: str | None) -> Fault:
    if isinstance(schedule.fault, FaultCommand):
        return CommandFault(schedule.fault.command, schedule.fault.restore)
    if lab is None:
        raise UserError(
            f"schedule {schedule.index} cuts the primary in the lab, but no lab runs here"
        )
    return LabFault(topo, lab, town)
