"""`loadprobe run`: the 10-terminal acceptance test of one town, with a verdict.

Importing this module stays cheap (it is imported for every `loadprobe`
invocation): the work is imported when the command runs.
"""

from __future__ import annotations

import argparse
import contextlib
import json
from pathlib import Path
from typing import Any

from loadprobe import CliError, pipeline

HELP = "run the acceptance load test of one town and judge it"
DESCRIPTION = """\
Run the degraded-mode acceptance test of one town: N terminals (default 10)
each running the workflow application start, logon, ledger inquiry,
certificate issuance, batch processing, with think times, against the shared
system (default: topology.yaml's loadtest.base_url). Locust runs headless in
its own process(es); --workers N runs a master and N workers on this machine.

In the lab (namespace nw-TOWN exists) the load runs inside the town's
namespace, and --path pins the town's data-center routes to that path for the
run and puts the old routes back afterwards. Everywhere, the report records
the path the traffic really took (route lookups before, during and after).

Verdict: every SLA threshold of topology.yaml (loadtest.sla) over exact
percentiles of the raw samples: p95, p99, error ratio, and with --baseline the
degradation factor (p95 / baseline p95). Reports in --report-dir: report.json,
report.html, junit.xml. Live metrics on a Prometheus endpoint (port 9472).

Exit: 0 every threshold held, 1 any failed, 2 bad input (bad options,
unreachable target, bad credentials), 130 interrupted. The password comes
from the environment variable (or file) in loadtest.credentials, never from
the command line, and never appears in a report.
"""


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = pipeline.add_command(
        subparsers, "run", help=HELP, description=DESCRIPTION, handler=handle
    )
    parser.add_argument(
        "--path",
        metavar="NAME",
        help="the town path to run on (primary, backup): pinned in the lab, checked elsewhere",
    )
    parser.add_argument(
        "--baseline",
        metavar="REPORT",
        help="a previous report.json (or its directory) to compute degradation factors against "
        "(its primary run, or its only run)",
    )


def load_baseline(text: str) -> tuple[dict[str, Any], str]:
    """The transactions of a baseline report and a description of where they come from."""
    path = Path(text)
    if path.is_dir():
        path = path / "report.json"
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
        runs = report["runs"]
        run = next((r for r in runs if r.get("label") == "primary"), None) or runs[0]
        transactions = dict(run["transactions"])
    except (OSError, ValueError, KeyError, IndexError, TypeError) as exc:
        raise CliError(f"--baseline {text}: not a loadprobe report.json ({exc})") from None
    return transactions, f"{path} (run {run.get('label')}, {run.get('started_at')})"


def handle(args: argparse.Namespace) -> int:
    from loadprobe import report as report_mod
    from loadprobe import verdict

    baseline = None
    baseline_source = None
    if args.baseline:
        data, baseline_source = load_baseline(args.baseline)
        baseline = {name: report_mod.stats_from_dict(d) for name, d in data.items()}
    ctx = pipeline.prepare(args, "run")
    path = ctx.town.path(args.path) if args.path else None
    label = args.path or "run"
    try:
        with pipeline.on_path(ctx, path):
            pre = pipeline.preflight(ctx)
            result = pipeline.execute(ctx, pipeline.plan(ctx, label, args.path))
    except CliError:
        with contextlib.suppress(OSError):
            ctx.report_dir.rmdir()  # only if nothing was written
        raise
    stats = report_mod.run_stats(result, list(ctx.scenario.sla))
    checks = pipeline.judge(result, stats, baseline)
    factors = {}
    degradation = None
    if baseline is not None:
        factors = {
            n: verdict.degradation_factor(s, baseline[n]) for n, s in stats.items() if n in baseline
        }
        degradation = report_mod.degradation_section(stats, baseline, ctx.scenario.sla)
    report = report_mod.build(
        kind="run",
        town=pipeline.town_dict(ctx),
        runs=[report_mod.run_section(result, stats, pre)],
        checks=checks,
        limits=ctx.scenario.sla,
        degradation=degradation,
        baseline_source=baseline_source,
        environment=pipeline.environment(ctx, [pre]),
    )
    return pipeline.conclude(ctx, report, checks, [result], factors)
