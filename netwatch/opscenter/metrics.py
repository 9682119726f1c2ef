"""The fleet's Prometheus endpoint: ``netwatch_fleet_*`` with a `town`
label (and `path` where it applies), read from the fleet at scrape time;
and the service's own ``netwatch_opscenter_*``.
The fleet's counters (failovers, route events, the agents' probe
outcomes) are served apart, at `/metrics/counters` (`_CounterCollector`).

A town that is stale or offline exports no path figures and no active
path: a dashboard must show it as unknown, not as its last good state.

`town_status`, `path_state`, `active_path` and `drill_last_status` carry
one series each, the current status, state or path with the value 1
(select with `== 1`): all six statuses, four states and both paths of
1,741 towns would be 26,000 series of zeros, and a scrape twice as slow.

Drills (`drill_*`): the last *finished* drill's result (kept while another
runs), whether one runs now (a stale lock does not count), and the next
scheduled one (`Fleet.next_drills`: each schedule read once a minute).
A town that never drilled adds no drill series but its next drill: at
1,741 towns every series costs the scrape about 13 µs.
A maintenance hold (`held`, `hold_expiry_timestamp_seconds`) is the
town's current state: like its active path, not exported while unknown.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from netwatch.health.state import PathState
from netwatch.messages import utc_now
from netwatch.opscenter import drills
from netwatch.opscenter.drills import DrillPhase
from netwatch.opscenter.fleet import Fleet, Status
from netwatch.opscenter.ingest import Reason


class _FleetCollector(Collector):
    def __init__(self, fleet: Fleet, clock: Callable[[], float]) -> None:
        self._fleet = fleet
        self._clock = clock

    def collect(self) -> Iterator[Metric]:
        fleet, now, wall = self._fleet, self._clock(), utc_now()
        g = GaugeMetricFamily
        town_l, path_l = ["town"], ["town", "path"]
        online = g(
            "netwatch_fleet_town_online", "1 while the town's agent is connected", labels=town_l
        )
        status = g(
            "netwatch_fleet_town_status",
            "1, labelled with the town's status (ok, degraded, backup, all_down, unknown, offline)",
            labels=[*town_l, "status"],
        )
        age = g(
            "netwatch_fleet_last_message_age_seconds",
            "seconds since the town's last message reached the operations center",
            labels=town_l,
        )
        active = g(
            "netwatch_fleet_active_path",
            "1, labelled with the path carrying the town's traffic (none: unknown or offline)",
            labels=path_l,
        )
        state = g(
            "netwatch_fleet_path_state",
            "1, labelled with the path's state",
            labels=[*path_l, "state"],
        )
        loss = g(
            "netwatch_fleet_path_loss_ratio",
            "probe loss over the agent's window (0..1)",
            labels=path_l,
        )
        p50 = g("netwatch_fleet_path_rtt_p50_seconds", "median probe RTT", labels=path_l)
        p95 = g("netwatch_fleet_path_rtt_p95_seconds", "95th percentile probe RTT", labels=path_l)
        jitter = g("netwatch_fleet_path_jitter_seconds", "probe RTT jitter", labels=path_l)
        last = g(
            "netwatch_fleet_last_failover_duration_seconds",
            "the last failover's outage: fault suspected to routes applied",
            labels=town_l,
        )
        backup = g(
            "netwatch_fleet_on_backup_seconds",
            "seconds the town has been off its primary",
            labels=town_l,
        )
        all_down = g(
            "netwatch_fleet_all_paths_down", "1 while no path of the town works", labels=town_l
        )
        conflict = g(
            "netwatch_fleet_route_conflict",
            "1 while another protocol's route sits on one of the town's prefixes "
            "(only for towns that ever reported one)",
            labels=town_l,
        )
        held = g(
            "netwatch_fleet_held",
            "1 while an operator's maintenance hold keeps the town on one path",
            labels=town_l,
        )
        hold_expiry = g(
            "netwatch_fleet_hold_expiry_timestamp_seconds",
            "when the town's maintenance hold expires (epoch seconds)",
            labels=town_l,
        )
        drill_ended = g(
            "netwatch_fleet_drill_last_timestamp_seconds",
            "when the town's last finished failover drill ended (epoch seconds)",
            labels=town_l,
        )
        drill_status = g(
            "netwatch_fleet_drill_last_status",
            "1, labelled with the last finished drill's status (passed, failed, aborted, refused)",
            labels=[*town_l, "status"],
        )
        drill_success = g(
            "netwatch_fleet_drill_last_success_timestamp_seconds",
            "when the town's last passing failover drill ended (epoch seconds)",
            labels=town_l,
        )
        drill_outage = g(
            "netwatch_fleet_drill_outage_seconds",
            "the last finished drill's outage on the data plane (failover)",
            labels=town_l,
        )
        drill_failback = g(
            "netwatch_fleet_drill_failback_outage_seconds",
            "the last finished drill's outage on the data plane at the failback",
            labels=town_l,
        )
        drill_running = g(
            "netwatch_fleet_drill_running",
            "1 while a failover drill runs on the town (a stale lock does not count)",
            labels=town_l,
        )
        drill_next = g(
            "netwatch_fleet_drill_next_timestamp_seconds",
            "when the town's next scheduled failover drill starts (epoch seconds)",
            labels=town_l,
        )
        towns = g("netwatch_fleet_towns", "towns by status", labels=["status"])
        counts = dict.fromkeys(Status, 0)
        for view in fleet:
            t = view.id
            current = view.status(now, fleet.stale_after)
            counts[current] += 1
            online.add_metric([t], 1.0 if view.online and current is not Status.UNKNOWN else 0.0)
            status.add_metric([t, current.value], 1.0)
            heard = view.age(now)
            if heard is not None:
                age.add_metric([t], heard)
            if view.last_failover is not None and view.last_failover.outage_s is not None:
                last.add_metric([t], view.last_failover.outage_s)
            if view.route_conflict is not None:
                conflict.add_metric([t], 1.0 if view.route_conflict else 0.0)
            known = current not in (Status.UNKNOWN, Status.OFFLINE)
            all_down.add_metric([t], 1.0 if known and view.all_down else 0.0)
            on_backup = view.on_backup_s(wall) if known else None
            backup.add_metric([t], on_backup or 0.0)
            if known:
                held.add_metric([t], 0.0 if view.hold is None else 1.0)
                if view.hold is not None:
                    hold_expiry.add_metric([t], view.hold.until.timestamp())
            done = view.finished_drill
            if done is not None:
                drill_ended.add_metric([t], drills.ended_at(done).timestamp())
                drill_status.add_metric([t, done.status.value], 1.0)
                if done.outage_s is not None:
                    drill_outage.add_metric([t], done.outage_s)
                if done.failback_outage_s is not None:
                    drill_failback.add_metric([t], done.failback_outage_s)
            if view.drill_passed_at is not None:
                drill_success.add_metric([t], view.drill_passed_at.timestamp())
            if view.drill is not None:  # a town that never drilled adds no series
                running = view.drill_phase(wall) is DrillPhase.RUNNING
                drill_running.add_metric([t], 1.0 if running else 0.0)
            next_drill = fleet.next_drills.of(t, wall)
            if next_drill is not None:
                drill_next.add_metric([t], next_drill.timestamp())
            for path in view.town.paths:
                name = path.name
                p = view.paths.get(name) if known else None
                if known and view.active_path == name:
                    active.add_metric([t, name], 1.0)
                shown = p.state if p is not None else PathState.UNKNOWN
                state.add_metric([t, name, shown.value], 1.0)
                if p is None:
                    continue
                for family, value in (
                    (loss, p.loss_ratio),
                    (p50, p.rtt_p50_s),
                    (p95, p.rtt_p95_s),
                    (jitter, p.jitter_s),
                ):
                    if value is not None:
                        family.add_metric([t, name], value)
        for s, n in counts.items():
            towns.add_metric([s.value], float(n))
        yield from (
            online,
            status,
            age,
            active,
            state,
            loss,
            p50,
            p95,
            jitter,
            last,
            backup,
            all_down,
            conflict,
            held,
            hold_expiry,
            drill_ended,
            drill_status,
            drill_success,
            drill_outage,
            drill_failback,
            drill_running,
            drill_next,
            towns,
        )


class _CounterCollector(Collector):
    """The fleet's counters, some sixteen series a town: failovers, route
    events, the agents' probe outcomes. Apart from the fleet's state
    (`/metrics/counters`): counters are read as increases over minutes, so
    Prometheus scrapes them half as often, and a scrape of either holds
    the event loop half as long."""

    def __init__(self, fleet: Fleet, clock: Callable[[], float]) -> None:
        self._fleet = fleet
        self._clock = clock

    def collect(self) -> Iterator[Metric]:
        fleet, now = self._fleet, self._clock()
        failovers = CounterMetricFamily(
            "netwatch_fleet_failovers",
            "moves of a town's traffic by from, to and reason (failover, failback, switch)",
            labels=["town", "from", "to", "reason"],
        )
        route_events = CounterMetricFamily(
            "netwatch_fleet_route_events",
            "the agent found the kernel's routes other than it left them: "
            "route_reinstalled, route_conflict, route_error",
            labels=["town", "event"],
        )
        probes = CounterMetricFamily(
            "netwatch_fleet_probe_results",
            "the agent's probes by path, kind and outcome, from its metrics summaries",
            labels=["town", "path", "kind", "outcome"],
        )
        for view in fleet:
            t = view.id
            for key, n in view.failovers.items():
                failovers.add_metric([t, *key], float(n))
            for event, times in view.route_events.items():
                route_events.add_metric([t, event], float(times))
            if view.status(now, fleet.stale_after) in (Status.UNKNOWN, Status.OFFLINE):
                continue  # as its path figures: not its last good counts
            for (path, kind, outcome), count in view.probe_results().items():
                probes.add_metric([t, path, kind, outcome], count)
        yield from (failovers, route_events, probes)


@dataclass
class ServiceMetrics:
    """What the service itself counts."""

    registry: CollectorRegistry
    counters_registry: CollectorRegistry  # /metrics/counters
    accepted: Counter
    rejected: Counter
    duplicates: Counter
    mqtt_connected: Gauge
    db_rows: Counter
    db_errors: Counter

    @classmethod
    def create(cls, fleet: Fleet, *, clock: Callable[[], float] = time.time) -> ServiceMetrics:
        registry = CollectorRegistry()
        registry.register(_FleetCollector(fleet, clock))
        rejected = Counter(
            "netwatch_opscenter_messages_rejected",
            "messages dropped, by reason",
            ["reason"],
            registry=registry,
        )
        for reason in Reason:
            rejected.labels(reason.value)  # every reason exported from the start, at 0
        counters = CollectorRegistry()
        counters.register(_CounterCollector(fleet, clock))
        return cls(
            registry=registry,
            counters_registry=counters,
            accepted=Counter(
                "netwatch_opscenter_messages",
                "messages accepted, by kind",
                ["kind"],
                registry=registry,
            ),
            rejected=rejected,
            duplicates=Counter(
                "netwatch_opscenter_duplicate_events",
                "events delivered again (stored once)",
                registry=registry,
            ),
            mqtt_connected=Gauge(
                "netwatch_opscenter_mqtt_connected",
                "1 while subscribed to the broker; 0: the fleet shown is the last known",
                registry=registry,
            ),
            db_rows=Counter(
                "netwatch_opscenter_db_rows_written",
                "rows written to the database",
                registry=registry,
            ),
            db_errors=Counter(
                "netwatch_opscenter_db_errors",
                "failed database flushes (retried)",
                registry=registry,
            ),
        )
