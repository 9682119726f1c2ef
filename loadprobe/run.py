"""`loadprobe run`: the 10-terminal acceptance test of one town, with a verdict.

Importing this module stays cheap (it is imported for every `loadprobe`
invocation): the work is imported when the command runs.
"""

from __future__ import annotations

import argparse
import contextlib
from typing import TYPE_CHECKING

from loadprobe import pipeline
from netwatch.errors import UserError

if TYPE_CHECKING:
    from loadprobe.report.schema import Baseline

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


def load_baseline(text: str) -> Baseline:
    """The figures of the baseline report `text` (a report.json or its directory)."""
    from loadprobe.report.schema import read_baseline

    try:
        return read_baseline(text)
    except ValueError as exc:
        raise UserError(f"--baseline {exc}") from None


def handle(args: argparse.Namespace) -> int:
    from loadprobe import report as report_mod
    from loadprobe import verdict

    loaded = load_baseline(args.baseline) if args.baseline else None
    baseline = loaded.stats if loaded else None
    ctx = pipeline.prepare(args, "run")
    path = ctx.town.path(args.path) if args.path else None
    label = args.path or "run"
    try:
        with pipeline.on_path(ctx, path):
            pre = pipeline.preflight(ctx)
            result = pipeline.execute(ctx, pipeline.plan(ctx, label, args.path))
    except UserError:
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
        baseline_source=loaded.source if loaded else None,
        environment=pipeline.environment(ctx, [pre]),
    )
    return pipeline.conclude(ctx, report, checks, [result], factors)
