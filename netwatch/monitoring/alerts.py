"""The operations center's Prometheus alert rules, from topology.yaml's
`alerts` (the thresholds live there, not only in the rules).

Conventions of the monitoring mixins: CamelCase names with one prefix
(`Netwatch`), a `severity` label (critical: someone acts now; warning:
someone looks today; info: worth knowing), a static `summary`, a
templated `description`, and a `dashboard_url` to the town's dashboard.
What to do when each fires is in the README ("Alerts").
"""

from __future__ import annotations

from typing import Any

from netwatch.monitoring import DRILLS_UID, FLEET_UID, TOWN_UID
from netwatch.monitoring import promql as q
from netwatch.topology import Alerts, Topology

OPSCENTER_JOB = "netwatch-opscenter"
LOADPROBE_JOB = "loadprobe"


def prom_duration(seconds: float) -> str:
    """Prometheus's duration syntax: whole units only (90s, 15m, 1500ms)."""
    ms = round(seconds * 1000)
    for unit, size in (("h", 3_600_000), ("m", 60_000), ("s", 1000)):
        if ms >= size and ms % size == 0:
            return f"{ms // size}{unit}"
    return f"{ms}ms" if ms else "0s"


def rules(topo: Topology, alerts: Alerts) -> dict[str, Any]:
    """The rule file, as YAML-ready data."""
    grafana = topo.opscenter.grafana.rstrip("/")
    town_url = f"{grafana}/d/{TOWN_UID}?var-town={{{{ $labels.town }}}}"
    fleet_url = f"{grafana}/d/{FLEET_UID}"
    drills_url = f"{grafana}/d/{DRILLS_UID}?var-town={{{{ $labels.town }}}}"
    route = prom_duration(alerts.route_event_window)

    def rule(
        name: str,
        expr: str,
        severity: str,
        summary: str,
        description: str,
        *,
        wait: float = 0.0,
        url: str = town_url,
    ) -> dict[str, Any]:
        out: dict[str, Any] = {"alert": f"Netwatch{name}", "expr": expr}
        if wait:
            out["for"] = prom_duration(wait)
        out["labels"] = {"severity": severity}
        out["annotations"] = {
            "summary": summary,
            "description": description,
            "dashboard_url": url,
        }
        return out

    town_rules = [
        rule(
            "PathDown",
            q.selector("netwatch_fleet_path_state", state="down") + " == 1",
            "warning",
            "A path of a town is down.",
            "{{ $labels.town }}: the {{ $labels.path }} path has been DOWN for more than "
            f"{prom_duration(alerts.path_down_for)}; the town runs without redundancy.",
            wait=alerts.path_down_for,
        ),
        rule(
            "TownOnBackup",
            f"netwatch_fleet_on_backup_seconds >= {alerts.on_backup_after:g}",
            "warning",
            "A town runs on its backup path.",
            "{{ $labels.town }} has been off its primary path for "
            "{{ $value | humanizeDuration }} (the line is "
            f"{prom_duration(alerts.on_backup_after)}).",
        ),
        rule(
            "AllPathsDown",
            "netwatch_fleet_all_paths_down == 1",
            "critical",
            "A town has lost every path to the data center.",
            "{{ $labels.town }}: no path to the data center works; its counters cannot reach "
            "the shared system.",
            wait=alerts.all_down_for,
        ),
        rule(
            "Flapping",
            "sum by (town) (increase("
            + q.selector("netwatch_fleet_failovers_total", reason="failover")
            + f"[1h])) >= {alerts.flapping_per_hour}",
            "warning",
            "A town fails over again and again.",
            '{{ $labels.town }} failed over {{ $value | printf "%.0f" }} times in the last '
            f"hour (the line is {alerts.flapping_per_hour}): a primary that keeps coming back "
            "and failing.",
        ),
        rule(
            "TownSilent",
            # One series per town: the status label changes from offline
            # (the Last Will) to unknown (stale), and `for` must not restart.
            "max by (town) ("
            + q.selector("netwatch_fleet_town_status", status="=~offline|unknown")
            + ") == 1",
            "warning",
            "A town's agent is offline or silent.",
            "{{ $labels.town }}: the agent has been offline (its Last Will) or silent beyond the "
            f"operations center's stale age for {prom_duration(alerts.stale_for)} or more; "
            "nobody sees that town's paths. "
            "A town cut off on every path looks like this too (its agent cannot reach the "
            "broker either).",
            wait=alerts.stale_for,
        ),
        rule(
            "RouteReinstalled",
            "increase("
            + q.selector("netwatch_fleet_route_events_total", event="route_reinstalled")
            + f"[{route}]) > 0",
            "info",
            "A town's agent put back a route that something removed.",
            "{{ $labels.town }}: a route netwatch manages was missing or wrong and was put "
            f"back within the last {route}; something else edits that router's tables.",
        ),
        rule(
            "RouteConflict",
            "netwatch_fleet_route_conflict == 1",
            "warning",
            "Another route sits on a prefix a town's agent manages.",
            "{{ $labels.town }}: a route of another protocol holds one of the data-center "
            "prefixes; the agent leaves it alone, so failover cannot move that prefix.",
        ),
        rule(
            "RouteChangeFailed",
            "increase("
            + q.selector("netwatch_fleet_route_events_total", event="route_error")
            + f"[{route}]) > 0",
            "warning",
            "A town's agent could not change its routes.",
            f"{{{{ $labels.town }}}}: a route change failed within the last {route} (the agent "
            "retries with back-off); the kernel may not carry the path the agent chose.",
        ),
        rule(
            "TownHeld",
            # The value is the hold's expiry, for the description.
            "netwatch_fleet_hold_expiry_timestamp_seconds and on (town) netwatch_fleet_held == 1",
            "info",
            "A town is held on one path by a maintenance hold.",
            "{{ $labels.town }} has been held on one path by an operator for more than "
            f"{prom_duration(alerts.held_for)}, until {{{{ $value | humanizeTimestamp }}}}; "
            "it does "
            "not fail over or back while held. Release the hold when the work is done.",
            wait=alerts.held_for,
        ),
        rule(
            "DrillFailed",
            q.selector("netwatch_fleet_drill_last_status", status="=~failed|aborted")
            + " == 1 and on (town) time() - netwatch_fleet_drill_last_timestamp_seconds < "
            + f"{alerts.drill_failed_window:.0f}",
            "warning",
            "A town's last failover drill failed.",
            "{{ $labels.town }}: the last failover drill {{ $labels.status }} within the last "
            f"{prom_duration(alerts.drill_failed_window)}; the failover it tested may not work. "
            "Read its report.",
            url=drills_url,
        ),
        rule(
            "NoRecentDrill",
            "time() - netwatch_fleet_drill_last_success_timestamp_seconds > "
            + f"{alerts.no_recent_drill_after:.0f}",
            "warning",
            "A town has had no passing failover drill for too long.",
            "{{ $labels.town }}: the last failover drill that passed ended "
            "{{ $value | humanizeDuration }} ago (the line is "
            f"{alerts.no_recent_drill_after / 86400:g} days); "
            "nobody knows its failover still works.",
            url=drills_url,
        ),
    ]
    service_rules = [
        rule(
            "OpscenterDown",
            f'up{{job=~"{OPSCENTER_JOB}(-counters)?"}} == 0',
            "critical",
            "Prometheus cannot scrape the operations center.",
            "The operations center's {{ $labels.job }} endpoint ({{ $labels.instance }}) does "
            "not answer: every town's dashboard and alert is blind (the town alerts resolve "
            "for want of data, not because the towns are well).",
            wait=alerts.opscenter_down_for,
            url=fleet_url,
        ),
        rule(
            "OpscenterBrokerDisconnected",
            "netwatch_opscenter_mqtt_connected == 0",
            "critical",
            "The operations center has lost the MQTT broker.",
            "The operations center is not subscribed to the broker; the fleet it shows is the "
            "last known and ages into unknown.",
            wait=alerts.opscenter_down_for,
            url=fleet_url,
        ),
        rule(
            "AcceptanceFailed",
            f"last_over_time(loadprobe_verdict_pass[{prom_duration(alerts.acceptance_window)}])"
            " == 0",
            "warning",
            "An acceptance load test failed its SLA.",
            "{{ $labels.town }}: the last loadprobe run (path {{ $labels.path }}) failed at "
            "least one SLA threshold; see its report before the cutover.",
            url=f"{grafana}/d/{DRILLS_UID}?var-town={{{{ $labels.town }}}}",
        ),
    ]
    return {
        "groups": [
            {"name": "netwatch-towns", "rules": town_rules},
            {"name": "netwatch-services", "rules": service_rules},
        ]
    }
