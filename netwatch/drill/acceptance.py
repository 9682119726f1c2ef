"""`netwatch acceptance`: the pre-cutover campaign the towns ran by hand.

Town by town in cutover order (topology.yaml: cutover_week), a load test on
the primary, then the same on the backup with the primary's run as its
baseline (degradation factors); the backup is held through the town's
agent (`loadprobe run --path backup` asks the agent for a hold).  One
summary report across the towns; a town that fails does not stop the
others unless --stop-on-fail; --resume REPORT skips the towns that already
passed in an earlier campaign's report.
"""

from __future__ import annotations

import argparse
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

from loadprobe import __version__
from netwatch.drill.edges import LoadRun, loadprobe_argv
from netwatch.drill.record import AcceptanceRecord, LoadSummary, TownAcceptance
from netwatch.drill.report import read_acceptance_report, write_acceptance_report
from netwatch.errors import UserError
from netwatch.messages import DrillStatus
from netwatch.topology import DEFAULT_PATH, Topology, load_for_command
from netwatch.topology.units import parse_duration

DESCRIPTION = """\
The pre-cutover acceptance campaign: for each town, in cutover order, the
10-terminal load test on the primary, then on the backup (held through the
town's agent), with SLA verdicts and the backup's degradation factors against
the primary. One summary report across the towns (acceptance.html,
acceptance.json, junit.xml) and each run's own report beside it.

A town that fails does not stop the others unless --stop-on-fail;
--resume REPORT runs only the towns that did not pass in REPORT.

Exit: 0 every town passed, 1 any failed, 2 bad input, 3 a run could not be
carried out (target unreachable, interrupted).

The terminals' password comes from the environment variable (or file) that
topology.yaml's loadtest.credentials names, as for loadprobe: never from the
command line, never in a report.
"""


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "acceptance",
        help="run the pre-cutover acceptance campaign across towns",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--towns", metavar="ID,ID", help="these towns only (still in cutover order); default all"
    )
    parser.add_argument(
        "--duration", metavar="TIME", help="each load test's length (default: loadtest.duration)"
    )
    parser.add_argument(
        "--terminals", type=int, metavar="N", help="terminals (default: loadtest.terminals)"
    )
    parser.add_argument("--stop-on-fail", action="store_true", help="stop at the first failure")
    parser.add_argument(
        "--resume", metavar="REPORT", help="an earlier acceptance.json: skip its passed towns"
    )
    parser.add_argument("--topology", default=DEFAULT_PATH, help=f"default: {DEFAULT_PATH}")
    parser.add_argument(
        "--report-dir",
        metavar="DIR",
        help="where the reports go (default: acceptance-reports/UTCTIME in this directory)",
    )
    parser.add_argument("--lab-run-dir", metavar="DIR", help="the lab's run directory")
    parser.set_defaults(run=run)


def _towns(topo: Topology, given: str | None) -> list[str]:
    ordered = [t.id for t in sorted(topo.towns, key=lambda t: (t.cutover_week, t.id))]
    if not given:
        return ordered
    wanted = [w.strip() for w in given.split(",") if w.strip()]
    unknown = [w for w in wanted if w not in ordered]
    if unknown:
        raise UserError(f"--towns: unknown town {unknown[0]!r} (towns: {', '.join(ordered)})")
    return [t for t in ordered if t in wanted]


def run(args: argparse.Namespace) -> int:
    topo = load_for_command(args.topology)
    towns = _towns(topo, args.towns)
    seconds = topo.loadtest.duration if args.duration is None else _seconds(args.duration)
    terminals = args.terminals or topo.loadtest.terminals
    if terminals < 1:
        raise UserError("--terminals: at least 1")
    earlier = read_acceptance_report(Path(args.resume)) if args.resume else None
    passed_before = {
        t.town: t for t in (earlier.towns if earlier else []) if t.status is DrillStatus.PASSED
    }
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    root = Path(args.report_dir or f"acceptance-reports/{stamp}").resolve()
    if root.exists() and any(root.iterdir()):
        raise UserError(f"--report-dir {root}: not empty (a report is never overwritten)")
    record = AcceptanceRecord(
        campaign_id=str(uuid.uuid4()),
        started=time.time(),
        settings={
            "towns": towns,
            "duration_s": seconds,
            "terminals": terminals,
            "stop_on_fail": args.stop_on_fail,
            "topology": str(Path(args.topology).resolve()),
        },
        versions={"netwatch": __version__},
        resumed_from=str(Path(args.resume).resolve()) if args.resume else None,
        report_dir=str(root),
    )
    topology = str(Path(args.topology).resolve())
    try:
        for town_id in towns:
            town = topo.town(town_id)
            if town_id in passed_before:
                kept = passed_before[town_id]
                kept.skipped = True
                record.towns.append(kept)
                _say(f"{town_id}: passed in {args.resume}, skipped")
                continue
            result = TownAcceptance(town=town_id, town_name=town.name, started=time.time())
            record.towns.append(result)
            _campaign_town(result, topology, seconds, terminals, root / town_id, args.lab_run_dir)
            result.ended = time.time()
            _say(f"{town_id}: {result.status.value.upper()} {result.reason}".rstrip())
            if args.stop_on_fail and result.status is not DrillStatus.PASSED:
                _say("--stop-on-fail: the other towns are not run")
                break
    except KeyboardInterrupt:
        record.reason = "interrupted"
        current = record.towns[-1] if record.towns else None
        if current is not None and current.status is DrillStatus.RUNNING:
            current.status, current.reason = DrillStatus.ABORTED, "interrupted"
    record.ended = time.time()
    statuses = {t.status for t in record.towns}
    if record.reason == "interrupted" or DrillStatus.ABORTED in statuses:
        record.status = DrillStatus.ABORTED
    elif statuses <= {DrillStatus.PASSED} and len(record.towns) == len(towns):
        record.status = DrillStatus.PASSED
    else:
        record.status = DrillStatus.FAILED
    if not record.reason:
        failed = [t.town for t in record.towns if t.status is not DrillStatus.PASSED]
        record.reason = "" if not failed else "not passed: " + ", ".join(failed)
    paths = write_acceptance_report(record, root)
    html = next((p for p in paths if p.suffix == ".html"), root)
    _say(f"{record.status.value.upper()}: report {html}")
    return record.exit_code


def _campaign_town(
    result: TownAcceptance,
    topology: str,
    seconds: float,
    terminals: int,
    directory: Path,
    lab_run_dir: str | None,
) -> None:
    primary_dir, backup_dir = directory / "primary", directory / "backup"
    for label, out, base in (
        ("primary", primary_dir, None),
        ("backup", backup_dir, primary_dir / "report.json"),
    ):
        _say(f"{result.town}: {terminals} terminals on the {label} for {seconds:g} s")
        run = LoadRun(
            label,
            loadprobe_argv(
                town=result.town,
                topology=topology,
                seconds=seconds,
                terminals=terminals,
                report_dir=out,
                baseline=base,
                path=label,
                lab_run_dir=lab_run_dir,
            ),
            out,
            directory / f"{label}.log",
        )
        run.start()
        try:
            while run.poll() is None:
                time.sleep(0.25)
        except KeyboardInterrupt:
            run.stop()
            result.loads.append(run.summary())
            raise
        summary: LoadSummary = run.summary()
        result.loads.append(summary)
        if summary.exit_code not in (0, 1):
            result.status = DrillStatus.ABORTED
            result.reason = f"the {label} run could not be carried out: {run.tail(1)}"
            return
        if summary.path not in (None, label):
            result.status = DrillStatus.FAILED
            result.reason = f"the {label} run went over {summary.path}"
            return
    ok = all(load.passed for load in result.loads)
    result.status = DrillStatus.PASSED if ok else DrillStatus.FAILED
    if not ok:
        failed = [
            f"{load.label}: {', '.join(load.failed_checks) or 'fail'}"
            for load in result.loads
            if not load.passed
        ]
        result.reason = "; ".join(failed)


def _seconds(text: str) -> float:
    try:
        value = parse_duration(text)
    except ValueError as exc:
        raise UserError(f"--duration: {exc}") from None
    if value <= 0:
        raise UserError("--duration: must be positive")
    return value


def _say(text: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {text}", flush=True)
