"""The operations center's Grafana dashboards, built from topology.yaml
with grafana-foundation-sdk (a development dependency: the committed JSON
under dashboards/ is the product).

Three dashboards, each with a fixed uid, a Prometheus datasource variable
every panel uses, and a `town` variable listing the towns in cutover
order with their Japanese names:

- the fleet overview: one row per town (repeated over `town`) and the
  state timelines of every town's status and active path;
- one town in detail: each path's state, RTT, loss, jitter and probe
  outcomes, whether a maintenance hold keeps it on one path, failovers as
  annotations;
- drills and acceptance: the town's failover drills (last result, outages,
  last success, next, running), loadprobe's live metrics and verdicts.

Panels read the operations center's fleet endpoint (`netwatch_fleet_*`)
and loadprobe (`loadprobe_*`): never a town's agent, which sits behind the
WAN being watched.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from grafana_foundation_sdk.builders import prometheus as prom
from grafana_foundation_sdk.builders import stat, statetimeline, timeseries
from grafana_foundation_sdk.builders.common import ReduceDataOptions
from grafana_foundation_sdk.builders.dashboard import (
    AnnotationQuery,
    CustomVariable,
    Dashboard,
    DashboardLink,
    DatasourceVariable,
    Row,
    ThresholdsConfig,
)
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import dashboard as model
from grafana_foundation_sdk.models.common import BigValueColorMode, BigValueTextMode, VisibilityMode

from netwatch.monitoring import DATASOURCE_UID, DRILLS_UID, FLEET_UID, TOWN_UID
from netwatch.monitoring import promql as q
from netwatch.monitoring.alerts import prom_duration
from netwatch.monitoring.files import PRODUCTION
from netwatch.topology import Topology

GRAFANA_VERSION = "11.6"  # what grafana-foundation-sdk's pinned release targets
DATASOURCE = model.DataSourceRef(type_val="prometheus", uid="${datasource}")
ANNOTATION = "Failovers and failbacks"
# The counters' own, slower scrape (/metrics/counters): their panels' least
# step, so that `$__rate_interval` holds enough of their samples.
COUNTERS_STEP = prom_duration(PRODUCTION.counters_interval_s)
TAGS = ["netwatch"]


def _target(
    expr: str, legend: str = "", *, ref: str = "A", instant: bool = False
) -> prom.Dataquery:
    t = prom.Dataquery().expr(expr).ref_id(ref).datasource(DATASOURCE)
    if legend:
        t = t.legend_format(legend)
    return t.instant() if instant else t.range()


def _mappings(codes: Mapping[str, tuple[int, str]]) -> list[model.ValueMapping]:
    return [
        model.ValueMap(
            options={
                str(code): model.ValueMappingResult(text=text, color=colour, index=i)
                for i, (text, (code, colour)) in enumerate(codes.items())
            }
        )
    ]


PATH_STATE_MAPPINGS = _mappings(
    {s.wire: code for s, code in q.PATH_STATE_CODES.items()}  # UP, DEGRADED, DOWN
)
STATUS_MAPPINGS = _mappings({s.value: code for s, code in q.STATUS_CODES.items()})
ONLINE_MAPPINGS = _mappings({"offline": (0, "red"), "online": (1, "green")})
VERDICT_MAPPINGS = _mappings({"FAIL": (0, "red"), "PASS": (1, "green")})
DRILL_STATUS_MAPPINGS = _mappings({s.value: code for s, code in q.DRILL_STATUS_CODES.items()})
RUNNING_MAPPINGS = _mappings({"idle": (0, q.GREY), "running": (1, "blue")})
HELD_MAPPINGS = _mappings({"not held": (0, "green"), "held": (1, "orange")})


def _path_mappings(topo: Topology) -> list[model.ValueMapping]:
    codes = q.path_codes(topo)
    colours = q.PATH_COLOURS
    return _mappings({n: (c, colours[min(c - 1, len(colours) - 1)]) for n, c in codes.items()})


def _steps(*steps: tuple[float | None, str]) -> ThresholdsConfig:
    return (
        ThresholdsConfig()
        .mode(model.ThresholdsMode.ABSOLUTE)
        .steps([model.Threshold(value=v, color=c) for v, c in steps])
    )


def _stat(
    title: str,
    description: str,
    unit: str,
    *targets: prom.Dataquery,
    width: int,
    height: int = 4,
    mappings: list[model.ValueMapping] | None = None,
    thresholds: ThresholdsConfig | None = None,
    text_mode: BigValueTextMode = BigValueTextMode.AUTO,
    no_value: str | None = None,
) -> stat.Panel:
    panel = (
        stat.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .unit(unit)
        .span(width)
        .height(height)
        .text_mode(text_mode)
        .color_mode(BigValueColorMode.BACKGROUND if mappings else BigValueColorMode.VALUE)
        .reduce_options(ReduceDataOptions().calcs(["lastNotNull"]))
        .targets(list(targets))
    )
    if no_value is not None:
        panel = panel.no_value(no_value)
    if mappings:
        panel = panel.mappings(mappings)
    if thresholds is not None:
        panel = panel.thresholds(thresholds)
    return panel


def _timeline(
    title: str,
    description: str,
    target: prom.Dataquery,
    mappings: list[model.ValueMapping],
    *,
    height: int,
) -> statetimeline.Panel:
    return (
        statetimeline.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .unit("none")
        .span(24)
        .height(height)
        .mappings(mappings)
        .show_value(VisibilityMode.AUTO)
        .merge_values(True)
        .with_target(target)
    )


def _series(
    title: str,
    description: str,
    unit: str,
    *targets: prom.Dataquery,
    width: int = 12,
    height: int = 8,
    minimum: float | None = 0,
) -> timeseries.Panel:
    panel = (
        timeseries.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .unit(unit)
        .span(width)
        .height(height)
        .targets(list(targets))
    )
    return panel.min(minimum) if minimum is not None else panel


def _variables(topo: Topology, *, multi: bool) -> list[Any]:
    towns = sorted(topo.towns, key=lambda t: t.cutover_week)
    options = [model.VariableOption(text=f"{t.name} {t.id}", value=t.id) for t in towns]
    town = (
        CustomVariable("town")
        .label("Town")
        .description("towns in cutover order (topology.yaml)")
        .values(",".join(f"{o.text} : {o.value}" for o in options))
        .options(options)
        .multi(multi)
        .include_all(multi)
    )
    if multi:
        town = town.current(
            model.VariableOption(text="All", value="$__all", selected=True)
        ).all_value(".*")  # a regex, as the panels' town=~"$town" expects
    else:
        first = options[0]
        town = town.current(model.VariableOption(text=first.text, value=first.value, selected=True))
    datasource = (
        DatasourceVariable("datasource")
        .label("Prometheus")
        .description("the operations center's Prometheus")
        .type("prometheus")
        .current(model.VariableOption(text="netwatch", value=DATASOURCE_UID, selected=True))
    )
    return [datasource, town]


def _dashboard(uid: str, title: str, description: str, topo: Topology, *, multi: bool) -> Dashboard:
    d = (
        Dashboard(title)
        .uid(uid)
        .description(description)
        .tags(TAGS)
        .readonly()  # provisioned, no UI updates: change the generator, not the dashboard
        .refresh("10s")
        .time("now-3h", "now")
        .timezone("browser")
        .tooltip(model.DashboardCursorSync.CROSSHAIR)
        .link(
            DashboardLink("netwatch")
            .type(model.DashboardLinkType.DASHBOARDS)
            .tags(TAGS)
            .as_dropdown(True)
            .include_vars(True)
            .keep_time(True)
        )
    )
    for variable in _variables(topo, multi=multi):
        d = d.with_variable(variable)
    return d


# -- the fleet overview --------------------------------------------------------


def fleet_overview(topo: Topology) -> Dashboard:
    t = "=~$town"  # a regex: the variable allows several towns and All
    d = _dashboard(
        FLEET_UID,
        "netwatch / Fleet overview",
        "Every town at a glance, in cutover order: is it online, which path carries "
        "its traffic, how its paths are, how long it has been on its backup.",
        topo,
        multi=True,
    )
    d = d.with_row(Row("Every town"))
    d = d.with_panel(
        _timeline(
            "Town status",
            "ok, degraded, backup (off its primary), all_down, unknown (silent longer than "
            "the operations center's stale age) or offline (its agent's Last Will)",
            _target(q.town_status("town", town=t), "{{town}}"),
            STATUS_MAPPINGS,
            height=2 + 2 * len(topo.towns),
        )
    )
    d = d.with_panel(
        _timeline(
            "Active path",
            "the path carrying each town's traffic; empty while the town is unknown or offline",
            _target(q.active_path(topo, "town", town=t), "{{town}}"),
            _path_mappings(topo),
            height=2 + 2 * len(topo.towns),
        )
    )
    d = d.with_row(Row("${town:text}").repeat("town"))
    one = "=~$town"  # inside the repeated row $town is one town
    paths = q.path_names(topo)
    path_width = max(1, 4 // len(paths))
    d = d.with_panel(
        _stat(
            "Online",
            "1 while the town's agent is connected to the broker and fresh",
            "none",
            _target(q.selector("netwatch_fleet_town_online", town=one), instant=True),
            width=2,
            mappings=ONLINE_MAPPINGS,
        )
    )
    d = d.with_panel(_status_stat(one, width=3))
    d = d.with_panel(_path_in_use_stat(topo, one, width=3))
    for name in paths:
        d = d.with_panel(
            _stat(
                name.capitalize(),
                f"the {name} path's health state, as its agent measures it",
                "none",
                _target(q.path_state("town", town=one, path=name), instant=True),
                width=path_width,
                mappings=PATH_STATE_MAPPINGS,
            )
        )
    d = d.with_panel(
        _stat(
            "Loss",
            "probe loss over the agent's window, per path",
            "percentunit",
            _target(
                q.selector("netwatch_fleet_path_loss_ratio", town=one), "{{path}}", instant=True
            ),
            width=3,
            thresholds=_loss_steps(topo),
        )
    )
    d = d.with_panel(
        _stat(
            "RTT p50",
            "median probe round trip over the agent's window, per path",
            "s",
            _target(
                q.selector("netwatch_fleet_path_rtt_p50_seconds", town=one),
                "{{path}}",
                instant=True,
            ),
            width=3,
            thresholds=_latency_steps(topo),
        )
    )
    d = d.with_panel(_on_backup_stat(one, width=3))
    d = d.with_panel(
        _failovers_stat(one, width=24 - 2 - 3 - 3 - path_width * len(paths) - 3 - 3 - 3)
    )
    return d


# -- panels both the overview and the town's dashboard show --------------------


def _status_stat(town: str, *, width: int) -> stat.Panel:
    return _stat(
        "Status",
        "the town's status as the operations center derives it",
        "none",
        _target(q.town_status("town", town=town), instant=True),
        width=width,
        mappings=STATUS_MAPPINGS,
    )


def _path_in_use_stat(topo: Topology, town: str, *, width: int) -> stat.Panel:
    return _stat(
        "Path in use",
        "the path carrying the town's traffic (No data: unknown or offline)",
        "none",
        _target(q.active_path(topo, "town", town=town), instant=True),
        width=width,
        mappings=_path_mappings(topo),
    )


def _on_backup_stat(town: str, *, width: int) -> stat.Panel:
    return _stat(
        "Time on backup",
        "how long the town has been off its primary path (0 on the primary)",
        "dtdurations",
        _target(q.selector("netwatch_fleet_on_backup_seconds", town=town), instant=True),
        width=width,
        thresholds=_steps((None, "green"), (1, "orange")),
    )


def _failovers_stat(town: str, *, width: int) -> stat.Panel:
    # The counters start at 0 (netwatch.opscenter.fleet): the first counts.
    moves = q.selector("netwatch_fleet_failovers_total", town=town, reason="failover")
    return _stat(
        "Failovers",
        "moves off the primary in the dashboard's time range",
        "short",
        _target(f"sum(increase({moves}[$__range]))", instant=True),
        width=width,
        thresholds=_steps((None, "green"), (1, "orange")),
    )


def _outage_steps() -> ThresholdsConfig:
    """A failover's outage, in a failover or a drill: sub-second is the aim."""
    return _steps((None, "green"), (1, "orange"), (5, "red"))


def _loss_steps(topo: Topology) -> ThresholdsConfig:
    """The default policy's lines: DEGRADED beyond `degraded`, failing beyond `fail`."""
    policy = topo.policy.profiles[topo.policy.default]
    return _steps((None, "green"), (policy.degraded.loss, "yellow"), (policy.fail.loss, "red"))


def _latency_steps(topo: Topology) -> ThresholdsConfig:
    policy = topo.policy.profiles[topo.policy.default]
    return _steps(
        (None, "green"), (policy.degraded.latency, "yellow"), (policy.fail.latency, "red")
    )


# -- one town ----------------------------------------------------------------


def town_detail(topo: Topology) -> Dashboard:
    one = "$town"
    d = _dashboard(
        TOWN_UID,
        "netwatch / Town detail",
        "One town's paths as its agent measures them: state, round trip, loss, jitter, "
        "probe outcomes; failovers as annotations.",
        topo,
        multi=False,
    )
    d = d.annotation(
        AnnotationQuery()
        .name(ANNOTATION)
        .datasource(DATASOURCE)
        .enable(True)
        .icon_color("red")
        .expr(_failover_annotation(one))
    )
    d = d.with_row(Row("Now"))
    d = d.with_panel(_status_stat(one, width=4))
    d = d.with_panel(_path_in_use_stat(topo, one, width=4))
    d = d.with_panel(_on_backup_stat(one, width=3))
    d = d.with_panel(
        _stat(
            "Hold",
            "held: an operator's maintenance hold keeps the town on one path (no failover "
            "or failback) until it expires or is released; the status page shows which "
            "and why (No data: unknown or offline)",
            "none",
            _target(q.selector("netwatch_fleet_held", town=one), instant=True),
            width=3,
            mappings=HELD_MAPPINGS,
        )
    )
    d = d.with_panel(
        _stat(
            "Last failover outage",
            "the last failover: from the fault suspected to the routes applied",
            "s",
            # 0 (no failover known) reads "none": a real outage is never 0.
            _target(
                q.selector("netwatch_fleet_last_failover_duration_seconds", town=one)
                + " or vector(0)",
                instant=True,
            ),
            width=4,
            mappings=_mappings({"none": (0, q.GREY)}),
            thresholds=_outage_steps(),
        )
    )
    d = d.with_panel(_failovers_stat(one, width=3))
    d = d.with_panel(
        _stat(
            "Last message",
            "seconds since the town's last message reached the operations center",
            "s",
            _target(q.selector("netwatch_fleet_last_message_age_seconds", town=one), instant=True),
            width=3,
            thresholds=_steps((None, "green"), (10, "orange"), (60, "red")),
        )
    )
    d = d.with_row(Row("Paths"))
    d = d.with_panel(
        _timeline(
            "Path state",
            "each path's health: UP, DEGRADED (UP beyond the degraded lines), DOWN",
            _target(q.path_state("path", town=one), "{{path}}"),
            PATH_STATE_MAPPINGS,
            height=2 + 2 * len(q.path_names(topo)),
        )
    )
    d = d.with_panel(
        _timeline(
            "Active path",
            "the path carrying the town's traffic",
            _target(q.active_path(topo, "town", town=one), "in use"),
            _path_mappings(topo),
            height=3,
        )
    )
    d = d.with_row(Row("Measurements"))
    d = d.with_panel(
        _series(
            "RTT p50 and p95",
            "probe round trip over the agent's window, per path",
            "s",
            _target(q.selector("netwatch_fleet_path_rtt_p50_seconds", town=one), "{{path}} p50"),
            _target(
                q.selector("netwatch_fleet_path_rtt_p95_seconds", town=one), "{{path}} p95", ref="B"
            ),
        )
    )
    d = d.with_panel(
        _series(
            "Loss",
            "probe loss over the agent's window, per path (round trips: 10 % each way is 19 %)",
            "percentunit",
            _target(q.selector("netwatch_fleet_path_loss_ratio", town=one), "{{path}}"),
        )
    )
    d = d.with_panel(
        _series(
            "Jitter",
            "variation of the probe round trip over the agent's window, per path",
            "s",
            _target(q.selector("netwatch_fleet_path_jitter_seconds", town=one), "{{path}}"),
        )
    )
    d = d.with_panel(
        _series(
            "Probe outcomes by kind",
            "probes a second per path, kind (icmp, tcp, http) and outcome, "
            "from the agent's metrics summaries",
            "ops",
            _target(
                "sum by (path, kind, outcome) (rate("
                + q.selector("netwatch_fleet_probe_results_total", town=one)
                + "[$__rate_interval]))",
                "{{path}} {{kind}} {{outcome}}",
            ).interval(COUNTERS_STEP),  # their own, slower scrape
        )
    )
    return d


def _failover_annotation(town: str) -> str:
    # `$__rate_interval`: at least four scrapes (`$__interval` may hold one
    # sample, where `changes` sees nothing); the counters start at 0.
    moves = q.selector("netwatch_fleet_failovers_total", town=town)
    return f"changes({moves}[$__rate_interval]) > 0"


# -- drills and acceptance -----------------------------------------------------


def drills(topo: Topology) -> Dashboard:
    one = "$town"
    d = _dashboard(
        DRILLS_UID,
        "netwatch / Drills and acceptance",
        "The town's failover drills (netwatch drill): the last result, its outages, the "
        "last success, the next scheduled; and the 10-terminal acceptance test (loadprobe) "
        "while it runs, and its verdicts: transaction times, failures, terminals, "
        "degradation against the baseline.",
        topo,
        multi=False,
    )
    d = _drill_panels(topo, d.with_row(Row("Failover drills (netwatch drill)")), one)
    d = d.with_row(Row("Acceptance test (loadprobe)"))
    d = d.with_panel(
        _stat(
            "Last verdict",
            "the last loadprobe run's verdict in the time range: every SLA threshold held",
            "none",
            _target(
                f"last_over_time({q.selector('loadprobe_verdict_pass', town=one)}[$__range])",
                "{{path}}",
                instant=True,
            ),
            width=6,
            mappings=VERDICT_MAPPINGS,
        )
    )
    d = d.with_panel(
        _stat(
            "Degradation factor",
            "p95 on this run's path / p95 of the baseline run, per transaction (last run "
            "with a baseline in the time range); the SLA allows max_degradation",
            "suffix:×",
            _target(
                "last_over_time("
                + q.selector("loadprobe_degradation_factor", town=one)
                + "[$__range])",
                "{{transaction}}",
                instant=True,
            ),
            width=12,
            thresholds=_steps((None, "green"), (2, "orange"), (4, "red")),
        )
    )
    d = d.with_panel(
        _stat(
            "Thresholds failed",
            "SLA thresholds whose last verdict in the time range failed (no run: none judged)",
            "short",
            _target(_thresholds_failed(one), instant=True),
            width=6,
            thresholds=_steps((None, "green"), (1, "red")),
            no_value="no run",
        )
    )
    d = d.with_panel(
        _series(
            "Transaction p95",
            "95th percentile of the successful transactions' durations, per transaction",
            "s",
            _target(
                "histogram_quantile(0.95, sum by (le, transaction) (rate("
                + q.selector("loadprobe_transaction_duration_seconds_bucket", town=one)
                + "[$__rate_interval])))",
                "{{transaction}}",
            ),
        )
    )
    d = d.with_panel(
        _series(
            "Transaction failures",
            "failed transactions a second, per transaction",
            "ops",
            _target(
                _per_transaction_rate("loadprobe_transaction_failures_total", one),
                "{{transaction}}",
            ),
        )
    )
    d = d.with_panel(
        _series(
            "Active terminals",
            "simulated terminals running the workflow",
            "short",
            _target(q.selector("loadprobe_active_terminals", town=one), "{{path}}"),
        )
    )
    d = d.with_panel(
        _series(
            "Transactions",
            "completed transactions a second, per transaction",
            "ops",
            _target(
                _per_transaction_rate("loadprobe_transactions_total", one),
                "{{transaction}}",
            ),
        )
    )
    return d


def _drill_panels(topo: Topology, d: Dashboard, town: str) -> Dashboard:
    lines = topo.drills.defaults.thresholds  # a schedule may override them for its towns

    def last(metric: str) -> prom.Dataquery:
        return _target(q.selector(metric, town=town), instant=True)

    d = d.with_panel(
        _stat(
            "Last drill",
            "the last finished drill's result: passed, failed (a measurement or the load "
            "test missed its line), aborted (a stop condition; rolled back) or refused (the "
            "precheck said no, nothing touched)",
            "none",
            _target(q.drill_status("town", town=town), instant=True),
            width=4,
            mappings=DRILL_STATUS_MAPPINGS,
            no_value="no drill",
        )
    )
    d = d.with_panel(
        _stat(
            "Drill running",
            "running while a drill holds the town's lock (a lock older than the operations "
            "center believes shows on its status page as stale, not here)",
            "none",
            last("netwatch_fleet_drill_running"),
            width=3,
            mappings=RUNNING_MAPPINGS,
        )
    )
    for title, metric, what, line, key in (
        (
            "Drill outage",
            "netwatch_fleet_drill_outage_seconds",
            "the failover",
            lines.max_outage,
            "max_outage",
        ),
        (
            "Drill failback outage",
            "netwatch_fleet_drill_failback_outage_seconds",
            "the failback",
            lines.max_failback_outage,
            "max_failback_outage",
        ),
    ):
        d = d.with_panel(
            _stat(
                title,
                f"the last finished drill's longest gap of traffic on the data plane at {what}; "
                f"red beyond the drills' {key} ({line:g} s)",
                "s",
                last(metric),
                width=4,
                thresholds=_steps((None, "green"), (line, "red")),
                no_value="not measured",
            )
        )
    d = d.with_panel(
        _stat(
            "Since the last passing drill",
            "time since the last drill that passed ended; the NetwatchNoRecentDrill alert "
            f"fires past {topo.alerts.no_recent_drill_after / 86400:g} days",
            "dtdurations",
            _target(
                "time() - "
                + q.selector("netwatch_fleet_drill_last_success_timestamp_seconds", town=town),
                instant=True,
            ),
            width=5,
            thresholds=_steps(
                (None, "green"),
                (topo.alerts.no_recent_drill_after / 2, "orange"),
                (topo.alerts.no_recent_drill_after, "red"),
            ),
            no_value="never passed",
        )
    )
    return d.with_panel(
        _stat(
            "Next drill",
            "when the town's next drill is scheduled (topology.yaml's drills)",
            "dateTimeAsIso",
            _target(
                q.selector("netwatch_fleet_drill_next_timestamp_seconds", town=town) + " * 1000",
                instant=True,
            ),
            width=4,
            no_value="not scheduled",
        )
    )


def _per_transaction_rate(counter: str, town: str) -> str:
    return f"sum by (transaction) (rate({q.selector(counter, town=town)}[$__rate_interval]))"


def _thresholds_failed(town: str) -> str:
    last = f"last_over_time({q.selector('loadprobe_threshold_pass', town=town)}[$__range])"
    return f"count({last} == 0) or count({last}) * 0"  # 0 only when some were judged


# -- output --------------------------------------------------------------------

BUILDERS = {
    "fleet-overview.json": fleet_overview,
    "town-detail.json": town_detail,
    "drills-acceptance.json": drills,
}


def render(topo: Topology) -> dict[str, str]:
    """File name -> dashboard JSON, byte-stable (sorted keys)."""
    out = {}
    for name, build in BUILDERS.items():
        built = build(topo).build()
        data = json.loads(JSONEncoder().encode(built))
        _number(data.get("panels", []))
        for annotation in data.get("annotations", {}).get("list", []):
            if annotation.get("name") == ANNOTATION:
                annotation.update(_annotation_display(annotation["expr"]))
        out[name] = json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    return out


def _annotation_display(expr: str) -> dict[str, Any]:
    # What the SDK's AnnotationQuery has no field for: how a marker reads,
    # and the query in the shape Grafana's Prometheus annotations also take.
    return {
        "titleFormat": "{{reason}}: {{from}} → {{to}}",
        "tagKeys": "reason",
        "useValueForTime": False,
        "step": COUNTERS_STEP,
        "target": {
            "expr": expr,
            "refId": "Anno",
            "interval": COUNTERS_STEP,
            "datasource": DATASOURCE.to_json(),
        },
    }


def _number(panels: Sequence[dict[str, Any]]) -> None:
    # Fixed ids in layout order (the builder leaves 0 or none): links to a
    # panel (?viewPanel=N) keep working across regenerations.
    for i, panel in enumerate(panels, start=1):
        panel["id"] = i
