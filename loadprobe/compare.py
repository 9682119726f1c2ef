"""`loadprobe compare`: the same load on the primary, then on the backup.

One report with both runs side by side and the degradation factor of each
transaction (backup p95 / primary p95): the seed's "some slowdown, but
workable", measured. Needs the lab, where it can pin the town's routes to
each path in turn; elsewhere use two `loadprobe run` with --baseline.
"""

from __future__ import annotations

import argparse
import contextlib

from loadprobe import pipeline
from netwatch.errors import UserError

HELP = "run the test on the primary and the backup path, side by side"
DESCRIPTION = """\
Run the acceptance test of one town on its primary path, then on its backup,
with the same load (options as for `loadprobe run`), and write one report with
both runs side by side: the backup's extra delay and the degradation factor
(backup p95 / primary p95) of each transaction against its limit
(loadtest.sla.*.max_degradation).

Both paths are checked (reachable, credentials accepted) before any load.
Needs the lab (namespace nw-TOWN), where the town's routes are pinned to each
path in turn and restored afterwards. Exit: 0 every threshold of both runs
held, 1 any failed, 2 bad input, 130 interrupted.
"""


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    pipeline.add_command(subparsers, "compare", help=HELP, description=DESCRIPTION, handler=handle)


def handle(args: argparse.Namespace) -> int:
    from loadprobe import report as report_mod
    from loadprobe import verdict

    ctx = pipeline.prepare(args, "compare")
    primary = ctx.town.primary
    if not ctx.town.backups:
        raise UserError(f"town {ctx.town.id} has no backup path to compare with")
    backup = ctx.town.backups[0]
    results = []
    pre = []
    try:
        for path in (primary, backup):  # both must work before any load
            with pipeline.on_path(ctx, path):
                pre.append(pipeline.preflight(ctx))
    except UserError:
        with contextlib.suppress(OSError):
            ctx.report_dir.rmdir()
        raise
    for path in (primary, backup):
        with pipeline.on_path(ctx, path):
            results.append(pipeline.execute(ctx, pipeline.plan(ctx, path.name, path.name)))
        if results[-1].interrupted:
            break
    names = list(ctx.scenario.sla)
    stats = [report_mod.run_stats(r, names) for r in results]
    checks = [c for c in pipeline.judge(results[0], stats[0], None) if c.metric != "degradation"]
    factors: dict[str, float | None] = {}
    degradation = None
    if len(results) == 2:
        checks += pipeline.judge(results[1], stats[1], stats[0])
        factors = {n: verdict.degradation_factor(stats[1][n], stats[0][n]) for n in names}
        degradation = report_mod.degradation_section(stats[1], stats[0], ctx.scenario.sla)
    report = report_mod.build(
        kind="compare",
        town=pipeline.town_dict(ctx),
        runs=[
            report_mod.run_section(r, s, p) for r, s, p in zip(results, stats, pre, strict=False)
        ],
        checks=checks,
        limits=ctx.scenario.sla,
        degradation=degradation,
        baseline_source=f"the {primary.name} run of this comparison" if degradation else None,
        environment=pipeline.environment(ctx, pre),
    )
    return pipeline.conclude(ctx, report, checks, results, factors)
